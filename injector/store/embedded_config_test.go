package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/config"
)

func TestEmbeddedConfigValidate(t *testing.T) {
	if err := store.DefaultEmbeddedConfig().Validate(); err != nil {
		t.Fatalf("DefaultEmbeddedConfig().Validate() = %v; want nil", err)
	}
	tests := []struct {
		name string
		cfg  store.EmbeddedConfig
		want []string
	}{
		{"all wrong", store.EmbeddedConfig{LockTimeout: -1}, []string{
			"path: must not be empty",
			"key_file: must not be empty",
			"lock_timeout: must be positive and at most 1m0s",
		}},
		{"same file", store.EmbeddedConfig{Path: "x/g.db", KeyFile: "x/./g.db", LockTimeout: time.Second}, []string{
			"key_file: must not be the database file",
		}},
		{"timeout too long", store.EmbeddedConfig{Path: "g.db", KeyFile: "g.key", LockTimeout: time.Hour}, []string{
			"lock_timeout: must be positive and at most 1m0s",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range config.Flatten(tt.cfg.Validate()) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEmbeddedConfigYAML(t *testing.T) {
	const doc = "path: /var/lib/onbehalf/grants.db\nkey_file: /etc/onbehalf/grants.key\nlock_timeout: 750ms\n"
	cfg := store.DefaultEmbeddedConfig()
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := store.EmbeddedConfig{
		Path:        "/var/lib/onbehalf/grants.db",
		KeyFile:     "/etc/onbehalf/grants.key",
		LockTimeout: 750 * time.Millisecond,
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("decoded config mismatch (-want +got):\n%s", diff)
	}

	dec = yaml.NewDecoder(strings.NewReader("path: x\nkeyfile: y\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil {
		t.Errorf("decoding an unknown key succeeded; want an error")
	}
}
