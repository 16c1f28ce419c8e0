package audit

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"go.yaml.in/yaml/v3"
)

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate(): %v", err)
	}
	if cfg.Sink != SinkStdout || !cfg.FailClosed || cfg.File.Durability != DurabilityWrite ||
		cfg.File.MaxSizeMB != 100 || cfg.File.MaxFiles != 10 {
		t.Errorf("got %+v; want stdout, fail-closed, write, 100 MB, 10 files", cfg)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		paths []string // paths of the expected problems, in order
	}{
		{"file sink", func(c *Config) { c.Sink, c.File.Path = SinkFile, "/var/log/audit.log" }, nil},
		{"both needs path", func(c *Config) { c.Sink = SinkBoth }, []string{"file.path"}},
		{"everything wrong", func(c *Config) {
			c.Sink = "syslog"
			c.File.MaxSizeMB = 0
			c.File.MaxFiles = -1
			c.File.Durability = "eventually"
		}, []string{"sink", "file.max_size_mb", "file.max_files", "file.durability"}},
		{"file without path and bad sizes", func(c *Config) {
			c.Sink = SinkFile
			c.File.MaxSizeMB = maxMaxSizeMB + 1
			c.File.MaxFiles = maxMaxFiles + 1
		}, []string{"file.path", "file.max_size_mb", "file.max_files"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.edit(&cfg)
			var got []string
			for _, e := range config.Flatten(cfg.Validate()) {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("got %T %v; want *config.FieldError", e, e)
				}
				got = append(got, fe.Path)
			}
			if d := cmp.Diff(tt.paths, got); d != "" {
				t.Errorf("problem paths (-want +got):\n%s", d)
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	doc := `
sink: both
file:
  path: /var/log/onbehalf/audit.log
  max_size_mb: 50
  max_files: 3
  durability: sync
fail_closed: false
fingerprint_key_file: /var/lib/onbehalf/fingerprint.key
`
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Sink: SinkBoth,
		File: FileConfig{
			Path: "/var/log/onbehalf/audit.log", MaxSizeMB: 50, MaxFiles: 3, Durability: DurabilitySync,
		},
		FailClosed:         false,
		FingerprintKeyFile: "/var/lib/onbehalf/fingerprint.key",
	}
	if d := cmp.Diff(want, cfg); d != "" {
		t.Errorf("decoded config (-want +got):\n%s", d)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// Keys left out keep their defaults.
	cfg = DefaultConfig()
	if err := yaml.Unmarshal([]byte("file:\n  path: /a.log\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if !cfg.FailClosed || cfg.File.MaxFiles != DefaultMaxFiles || cfg.File.Durability != DurabilityWrite {
		t.Errorf("got %+v; want defaults kept", cfg)
	}
}
