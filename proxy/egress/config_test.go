package egress

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v; want nil", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantPaths []string
	}{
		{"empty", Config{}, nil},
		{"good", Config{
			Allow:      []string{"127.0.0.1/32", "10.20.0.0/16", "::1", "fd00::/8", "192.168.1.7"},
			AllowPorts: []int{80, 443, 65535, 1},
			Deny:       []string{"8.8.8.8", "2001:4860::/32"},
		}, nil},
		{"everything wrong", Config{
			Allow:      []string{"127.0.0.1/32", "127.1", "10.1.2.3/8", "fe80::1%eth0", "::ffff:10.0.0.0/104", "", "10.0.0.0/33"},
			AllowPorts: []int{443, 0, 65536, -1},
			Deny:       []string{"nonsense", "1.2.3.4/24"},
		}, []string{
			"allow[1]", "allow[2]", "allow[3]", "allow[4]", "allow[5]", "allow[6]",
			"allow_ports[1]", "allow_ports[2]", "allow_ports[3]",
			"deny[0]", "deny[1]",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var got []string
			for _, e := range config.Flatten(err) {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("problem %v is %T; want *config.FieldError", e, e)
				}
				got = append(got, fe.Path)
			}
			if diff := cmp.Diff(tt.wantPaths, got); diff != "" {
				t.Errorf("Validate() problem paths (-want +got):\n%s\nerror: %v", diff, err)
			}
			if _, nerr := New(tt.cfg); (nerr != nil) != (err != nil) {
				t.Errorf("New error = %v; want an error exactly when Validate fails (%v)", nerr, err)
			}
		})
	}
}

func TestConfigValidateMessages(t *testing.T) {
	err := Config{Allow: []string{"10.1.2.3/8"}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "did you mean 10.0.0.0/8") {
		t.Errorf("Validate() = %v; want a hint naming 10.0.0.0/8", err)
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
allow: ["127.0.0.1/32", "::1"]
allow_ports: [8443]
deny: ["203.0.113.0/24"]
`
	var got Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := Config{Allow: []string{"127.0.0.1/32", "::1"}, AllowPorts: []int{8443}, Deny: []string{"203.0.113.0/24"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config (-want +got):\n%s", diff)
	}
}
