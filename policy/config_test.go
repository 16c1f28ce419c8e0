package policy

import (
	"errors"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

func TestConfigDecode(t *testing.T) {
	doc := `
paths: [examples/policies/default, /etc/onbehalf/extra.rego]
query: data.envoy.authz.allow
timeout: 50ms
run_tests_on_reload: false
watch: false
bundle:
  poll_min: 10s
  poll_max: 20s
  key_id: prod
  key_algorithm: ES256
`
	got := DefaultConfig()
	if err := config.Decode([]byte(doc), &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := Config{
		Paths:   []string{"examples/policies/default", "/etc/onbehalf/extra.rego"},
		Query:   "data.envoy.authz.allow",
		Timeout: 50 * time.Millisecond,
		Bundle: BundleConfig{
			PollMin: 10 * time.Second, PollMax: 20 * time.Second,
			KeyID: "prod", KeyAlgorithm: "ES256",
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config mismatch (-want +got):\n%s", diff)
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.Query != DefaultQuery || c.Timeout != DefaultTimeout || !c.RunTestsOnReload || !c.Watch {
		t.Errorf("DefaultConfig() = %+v; want the default query and timeout, tests on reload, watching", c)
	}
	c.Paths = []string{"testdata/decide"}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate(defaults + a path) = %v; want nil", err)
	}
}

func TestConfigValidate(t *testing.T) {
	key := filepath.Join("testdata", "decide", "policy.rego") // any readable file
	withPaths := func(f func(*Config)) Config {
		c := DefaultConfig()
		c.Paths = []string{"testdata/decide"}
		f(&c)
		return c
	}
	withBundle := func(f func(*BundleConfig)) Config {
		c := DefaultConfig()
		c.Bundle.URL = "https://bundles.example.com/authz.tar.gz"
		f(&c.Bundle)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // "path: message" of every problem, sorted
	}{
		{"paths ok", withPaths(func(*Config) {}), nil},
		{"bundle ok", withBundle(func(*BundleConfig) {}), nil},
		{"zero timeout and query take defaults", withPaths(func(c *Config) { c.Timeout, c.Query = 0, "" }), nil},
		{"http bundle on loopback", withBundle(func(b *BundleConfig) { b.URL = "http://127.0.0.1:8181/b.tar.gz" }), nil},
		{"signed bundle", withBundle(func(b *BundleConfig) { b.PublicKeyFile = key; b.KeyAlgorithm = "PS256" }), nil},
		{"no source", DefaultConfig(), []string{"one of paths or bundle.url is required"}},
		{"both sources", withPaths(func(c *Config) { c.Bundle.URL = "https://b.example/x.tar.gz" }), []string{"paths: cannot be combined with bundle.url"}},
		{"bad paths", withPaths(func(c *Config) { c.Paths = []string{"testdata/decide", "", "testdata/missing"} }), []string{
			"paths[1]: must not be empty",
			"paths[2]: cannot read testdata/missing: no such file or directory",
		}},
		{"bad query and timeout", withPaths(func(c *Config) { c.Query, c.Timeout = "data.x[", time.Minute }), []string{
			"query: not a valid Rego query: unexpected eof token at 1:7",
			"timeout: must be between 0 and 5s",
		}},
		{"negative timeout", withPaths(func(c *Config) { c.Timeout = -time.Second }), []string{"timeout: must be between 0 and 5s"}},
		{"plain http bundle", withBundle(func(b *BundleConfig) { b.URL = "http://bundles.example.com/b.tar.gz" }), []string{
			"bundle.url: must be an https URL (http is accepted only on loopback)",
		}},
		{"bundle url with credentials", withBundle(func(b *BundleConfig) { b.URL = "https://user:pw@bundles.example.com/b.tar.gz" }), []string{
			"bundle.url: must not carry credentials",
		}},
		{"relative bundle url", withBundle(func(b *BundleConfig) { b.URL = "/b.tar.gz" }), []string{"bundle.url: must be an absolute URL"}},
		{"bad polling", withBundle(func(b *BundleConfig) { b.PollMin, b.PollMax = 500*time.Millisecond, 100*time.Millisecond }), []string{
			"bundle.poll_max: must not be less than poll_min",
			"bundle.poll_min: must be at least 1s",
		}},
		{"bad key settings", withBundle(func(b *BundleConfig) {
			b.PublicKeyFile, b.KeyAlgorithm, b.CAFile = "testdata/nokey.pem", "HS256", "testdata/noca.pem"
		}), []string{
			"bundle.ca_file: cannot read testdata/noca.pem: no such file or directory",
			"bundle.key_algorithm: must be one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512",
			"bundle.public_key_file: cannot read testdata/nokey.pem: no such file or directory",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range config.Flatten(tt.cfg.Validate()) {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Errorf("problem %v is a %T; want *config.FieldError", e, e)
				}
				got = append(got, e.Error())
			}
			sort.Strings(got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
