package vault

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// validConfig returns a valid AppRole configuration.
func validConfig() Config {
	c := DefaultConfig()
	c.Address = "https://vault.example:8200"
	c.Auth.Method = AuthAppRole
	c.Auth.RoleID = "role"
	c.Auth.SecretIDFile = "/run/secrets/secret-id"
	return c
}

// problemPaths returns the paths of the FieldErrors in err, sorted.
func problemPaths(err error) []string {
	var out []string
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if errors.As(e, &fe) {
			out = append(out, fe.Path)
		} else {
			out = append(out, "!"+e.Error())
		}
	}
	slices.Sort(out)
	return out
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		want []string
	}{
		{"valid approle", func(c *Config) {}, nil},
		{"valid token on loopback http", func(c *Config) {
			c.Address = "http://127.0.0.1:8200"
			c.Auth = AuthConfig{Method: AuthToken, TokenFile: "/t"}
		}, nil},
		{"valid kubernetes defaults", func(c *Config) {
			c.Auth = DefaultConfig().Auth
			c.Auth.KubernetesRole = "sidecar"
		}, nil},
		{"http localhost and ipv6 loopback", func(c *Config) { c.Address = "http://[::1]:8200" }, nil},
		{"valid transit", func(c *Config) { c.Transit = TransitConfig{Enabled: true, Mount: "transit", Key: "k-1"} }, nil},
		{"missing address", func(c *Config) { c.Address = "" }, []string{"address"}},
		{"plain http to a remote host", func(c *Config) { c.Address = "http://vault.example:8200" }, []string{"address"}},
		{"not a url", func(c *Config) { c.Address = "vault.example:8200" }, []string{"address"}},
		{"address with path and credentials", func(c *Config) { c.Address = "https://u:p@vault.example/v1" }, []string{"address"}},
		{"everything wrong at once", func(c *Config) {
			c.Address = "ftp://x"
			c.Mount = "/secret/"
			c.Prefix = "a/../b"
			c.Timeout = 0
			c.Auth = AuthConfig{Method: AuthAppRole, AppRoleMount: ""}
			c.Transit = TransitConfig{Enabled: true, Mount: "", Key: "bad/key"}
		}, []string{"address", "auth.approle_mount", "auth.role_id", "auth.secret_id_file", "mount", "prefix", "timeout", "transit.key", "transit.mount"}},
		{"valid cluster addresses", func(c *Config) {
			c.Address = ""
			c.Addresses = []string{"https://vault-0.example:8200", "https://vault-1.example:8200", "http://127.0.0.1:8200"}
		}, nil},
		{"address and addresses", func(c *Config) { c.Addresses = []string{"https://vault-0.example:8200"} }, []string{"addresses"}},
		{"bad and duplicate cluster addresses", func(c *Config) {
			c.Address = ""
			c.Addresses = []string{"https://vault-0.example:8200", "http://vault-1.example:8200", "https://VAULT-0.example:8200/", ""}
		}, []string{"addresses[1]", "addresses[2]", "addresses[3]"}},
		{"too many cluster addresses", func(c *Config) {
			c.Address = ""
			for i := range 10 {
				c.Addresses = append(c.Addresses, fmt.Sprintf("https://vault-%d.example:8200", i))
			}
		}, []string{"addresses"}},
		{"token without file", func(c *Config) { c.Auth = AuthConfig{Method: AuthToken} }, []string{"auth.token_file"}},
		{"kubernetes without role or file", func(c *Config) {
			c.Auth = AuthConfig{Method: AuthKubernetes, KubernetesMount: "kubernetes"}
		}, []string{"auth.kubernetes_role", "auth.kubernetes_token_file"}},
		{"unknown method", func(c *Config) { c.Auth.Method = "userpass" }, []string{"auth.method"}},
		{"timeout too long", func(c *Config) { c.Timeout = 2 * time.Minute }, []string{"timeout"}},
		{"transit without key", func(c *Config) { c.Transit.Enabled = true }, []string{"transit.key"}},
		{"transit off ignores key", func(c *Config) { c.Transit = TransitConfig{Key: "bad/key"} }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(&c)
			got := problemPaths(c.Validate())
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate problem paths mismatch (-want +got):\n%s\nerror: %v", diff, c.Validate())
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
address: https://vault.internal:8200
ca_file: /etc/onbehalf/vault-ca.pem
mount: kv
prefix: teams/agents
timeout: 3s
auth:
  method: kubernetes
  kubernetes_role: onbehalf-sidecar
transit:
  enabled: true
  key: onbehalf-grants
`
	got := DefaultConfig()
	if err := config.Decode([]byte(doc), &got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := DefaultConfig()
	want.Address = "https://vault.internal:8200"
	want.CAFile = "/etc/onbehalf/vault-ca.pem"
	want.Mount = "kv"
	want.Prefix = "teams/agents"
	want.Timeout = 3 * time.Second
	want.Auth.KubernetesRole = "onbehalf-sidecar"
	want.Transit.Enabled = true
	want.Transit.Key = "onbehalf-grants"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// Unknown keys are reported with their path.
	err := config.Decode([]byte("auth:\n  methd: token\n"), &got)
	if paths := problemPaths(err); !slices.Contains(paths, "auth.methd") {
		t.Errorf("decode of an unknown key: problems %v; want auth.methd", paths)
	}
}
