package sidecar

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// TestExampleConfigIsValid keeps the documented example config loadable:
// it is what `make run` uses and what users copy.
func TestExampleConfigIsValid(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "onbehalf.yaml")
	cfg, err := Load(path, nil, nil)
	if err != nil {
		t.Fatalf("examples/onbehalf.yaml: %v", err)
	}
	if cfg.Proxy.Listen != "127.0.0.1:8080" || len(cfg.Routes) == 0 {
		t.Errorf("unexpected example config: %s", cfg)
	}
	if !filepath.IsAbs(cfg.CA.Cert) || !strings.HasSuffix(cfg.CA.Cert, filepath.Join(".onbehalf", "ca.pem")) {
		t.Errorf("ca.cert = %q; want it resolved against the file's directory", cfg.CA.Cert)
	}
}

// TestExampleConnectConfigIsValid keeps examples/connect.yaml loadable by
// the connect server, sharing the sidecar example's store, and its
// external URL the one the sidecar example sends people to.
func TestExampleConnectConfigIsValid(t *testing.T) {
	cfg, err := LoadConnect(filepath.Join("..", "..", "examples", "connect.yaml"), nil, nil)
	if err != nil {
		t.Fatalf("examples/connect.yaml: %v", err)
	}
	side, err := Load(filepath.Join("..", "..", "examples", "onbehalf.yaml"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Embedded.Path != side.Store.Embedded.Path || cfg.Store.Embedded.KeyFile != side.Store.Embedded.KeyFile {
		t.Errorf("connect store %s; want the sidecar example's %s", cfg.Store.Embedded.Path, side.Store.Embedded.Path)
	}
	if cfg.Audit.File.Path == side.Audit.File.Path {
		t.Errorf("connect audit file %s is the sidecar's: two processes cannot write one trail", cfg.Audit.File.Path)
	}
	if cfg.Connect.ExternalURL != side.Proxy.ConnectURL {
		t.Errorf("connect.external_url %s; want the sidecar example's proxy.connect_url %s", cfg.Connect.ExternalURL, side.Proxy.ConnectURL)
	}
	if cfg.Connect.Listen == side.Proxy.Listen || cfg.Connect.Listen == side.Admin.Listen {
		t.Errorf("connect.listen %s clashes with the sidecar's listeners", cfg.Connect.Listen)
	}
}

func TestLoadEnvAndOverride(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "examples", "onbehalf.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	policies, err := filepath.Abs(filepath.Join("..", "..", "examples", "policies", "default"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, []string{"ONBEHALF_PROXY_LISTEN=127.0.0.1:18080", "ONBEHALF_AUDIT_FAIL_CLOSED=false", "ONBEHALF_POLICY_PATHS=" + policies},
		func(c *Config) { c.Admin.Listen = "127.0.0.1:19090" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.Listen != "127.0.0.1:18080" || cfg.Audit.FailClosed || cfg.Admin.Listen != "127.0.0.1:19090" {
		t.Errorf("overrides not applied: proxy %s, fail_closed %v, admin %s", cfg.Proxy.Listen, cfg.Audit.FailClosed, cfg.Admin.Listen)
	}
	if cfg.Store.Embedded.Path != filepath.Join(filepath.Dir(dir), ".onbehalf", "grants.db") {
		t.Errorf("store path %q not resolved against the config's directory", cfg.Store.Embedded.Path)
	}
}

func TestValidateSameListeners(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Admin.Listen = cfg.Proxy.Listen
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "admin.listen: must differ from proxy.listen") {
		t.Errorf("got %v; want the listener clash reported", err)
	}
}

func TestValidateLeafNames(t *testing.T) {
	if got := DefaultConfig().CA.LeafNames; got != LeafNamesWildcard {
		t.Errorf("default ca.leaf_names %q; want %q", got, LeafNamesWildcard)
	}
	for _, v := range []string{LeafNamesWildcard, LeafNamesExact, "", "Exact", "per-host"} {
		cfg := DefaultConfig()
		cfg.CA.LeafNames = v
		err := cfg.Validate()
		bad := err != nil && strings.Contains(err.Error(), `ca.leaf_names: must be "wildcard" or "exact"`)
		if want := v != LeafNamesWildcard && v != LeafNamesExact; bad != want {
			t.Errorf("ca.leaf_names %q: got %v; want reported %v", v, err, want)
		}
	}
}

func TestPresetDefaultRoutes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Routes = []injector.RouteConfig{{Host: "api.example.com", Provider: "custom"}}
	cfg.Providers = map[string]oauth.ProviderConfig{
		"github": {Preset: "github"},
		"custom": {Preset: "github"}, // named by a route: its defaults are not added
	}
	routes := cfg.EffectiveRoutes()
	var hosts []string
	for _, r := range routes {
		hosts = append(hosts, r.Provider+"@"+r.Host)
	}
	got := strings.Join(hosts, " ")
	if !strings.Contains(got, "github@api.github.com") || strings.Contains(got, "custom@api.github.com") {
		t.Errorf("effective routes %q; want github's preset route added and custom's not", got)
	}
}

func TestJournalDefaults(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name             string
		yaml             string
		wantDir, wantKey string
	}{
		{"embedded store", "store: {embedded: {path: state/grants.db, key_file: state/grants.key}}\n",
			filepath.Join(dir, "state", "onbehalf-journal"), filepath.Join(dir, "state", "grants.key")},
		{"vault store", "store: {backend: vault}\n",
			filepath.Join(dir, "onbehalf-journal"), filepath.Join(dir, "onbehalf-journal.key")},
		{"explicit directory", "store: {backend: vault}\nrefresh: {journal: {dir: /var/lib/onbehalf/journal}}\n",
			"/var/lib/onbehalf/journal", "/var/lib/onbehalf/onbehalf-journal.key"},
		{"explicit both", "refresh: {journal: {dir: j, key_file: secrets/j.key}}\n",
			filepath.Join(dir, "j"), filepath.Join(dir, "secrets", "j.key")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := Load(write("c.yaml", tt.yaml), nil, nil) // other sections are incomplete
			if got := cfg.Refresh.Journal; got.Dir != tt.wantDir || got.KeyFile != tt.wantKey {
				t.Errorf("journal = %+v; want dir %s, key file %s", got, tt.wantDir, tt.wantKey)
			}
		})
	}
}

func TestValidateRefresh(t *testing.T) {
	tests := []struct {
		name string
		mod  func(c *Config)
		want []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"short test timing", func(c *Config) {
			c.Refresh.LeaseTTL, c.Refresh.TakeoverAfter, c.Refresh.AnswerDeadline = time.Second, 2*time.Second, 10*time.Second
		}, nil},
		{"lease too short", func(c *Config) { c.Refresh.LeaseTTL = 100 * time.Millisecond }, []string{"refresh.lease_ttl"}},
		{"lease too long", func(c *Config) { c.Refresh.LeaseTTL = time.Hour }, []string{"refresh.lease_ttl"}},
		{"takeover too long", func(c *Config) { c.Refresh.TakeoverAfter = 2 * time.Hour }, []string{"refresh.takeover_after"}},
		{"negative takeover", func(c *Config) { c.Refresh.TakeoverAfter = -time.Second }, []string{"refresh.takeover_after"}},
		{"answer deadline below a provider timeout", func(c *Config) {
			c.Refresh.AnswerDeadline = 5 * time.Second
			pc := c.Providers["chat"]
			pc.Timeout = 10 * time.Second
			c.Providers["chat"] = pc
		}, []string{"providers.chat.timeout"}},
		{"journal in the database file", func(c *Config) { c.Refresh.Journal.Dir = c.Store.Embedded.Path }, []string{"refresh.journal.dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			pc := oauth.DefaultProviderConfig()
			pc.TokenURL, pc.ClientID, pc.ClientSecretFile, pc.AuthStyle = "https://auth.example/token", "id", "secret", oauth.AuthStyleHeader
			c.Providers = map[string]oauth.ProviderConfig{"chat": pc}
			tt.mod(&c)
			var p config.Problems
			c.validateRefresh(&p)
			var got []string
			for _, e := range config.Flatten(p.Err()) {
				var fe *config.FieldError
				if errors.As(e, &fe) {
					got = append(got, fe.Path)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q (%v); want %q", got, p.Err(), tt.want)
			}
		})
	}
}

// TestIdentityExamplesAreValid keeps examples/identity loadable: each file
// is a complete configuration users start from.
func TestIdentityExamplesAreValid(t *testing.T) {
	for _, tt := range []struct {
		file      string
		idps      int
		exchanges int
	}{
		{"orchestrator.yaml", 0, 0},
		{"oidc.yaml", 1, 0},
		{"id-jag.yaml", 1, 1},
	} {
		t.Run(tt.file, func(t *testing.T) {
			cfg, err := Load(filepath.Join("..", "..", "examples", "identity", tt.file), nil, nil)
			if err != nil {
				t.Fatalf("%v", err)
			}
			exchanges := 0
			for _, pc := range cfg.Providers {
				if pc.Exchange != nil {
					exchanges++
					if !filepath.IsAbs(pc.Exchange.ClientSecretFile) {
						t.Errorf("exchange.client_secret_file %q not resolved", pc.Exchange.ClientSecretFile)
					}
				}
			}
			if len(cfg.Identity.IdPs) != tt.idps || exchanges != tt.exchanges {
				t.Errorf("got %d idps and %d exchanges; want %d and %d", len(cfg.Identity.IdPs), exchanges, tt.idps, tt.exchanges)
			}
		})
	}
}

// TestValidateExchanges checks what a provider's exchange needs from the
// identity section.
func TestValidateExchanges(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "..", "examples", "identity", "id-jag.yaml"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	notes := cfg.Providers["notes"]
	x := *notes.Exchange
	x.Issuer = "https://other-idp.example.com"
	notes.Exchange = &x
	cfg.Providers["notes"] = notes
	cfg.Identity.IdPs[0].JWKSURL = "https://acme.okta.com/oauth2/v1/keys"
	other := cfg.Identity.IdPs[0]
	other.Issuer = "https://keys-only.example.com"
	cfg.Identity.IdPs = append(cfg.Identity.IdPs, other)
	github := cfg.Providers["github"]
	y := oauth.DefaultExchangeConfig()
	y.Issuer, y.ClientID, y.ClientSecretFile, y.AuthStyle, y.Audience = other.Issuer, "c", "/s", oauth.AuthStyleHeader, "https://github.com"
	github.Exchange = &y
	cfg.Providers["github"] = github
	err = cfg.Validate()
	for _, want := range []string{
		`providers.notes.exchange.issuer: "https://other-idp.example.com" is not one of identity.idps`,
		"providers.github.exchange.token_url: required: the IdP's keys are configured by jwks_url",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v; want a problem %q", err, want)
		}
	}
}

func TestValidateRateLimits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Routes = []injector.RouteConfig{{Name: "slack", Host: "slack.com", Provider: "slack"}}
	cfg.RateLimits.Rules = []ratelimit.RuleConfig{
		{Name: "ok", Rate: "60/m", Routes: []string{"slack"}, Providers: []string{"slack"}},
		{Name: "typo", Rate: "60/m", Routes: []string{"slak"}, Providers: []string{"github"}},
		{Name: "bad", Rate: "sixty"},
	}
	err := cfg.Validate()
	for _, want := range []string{
		`rate_limits.rules[1].routes[0]: no route is named "slak" (routes: slack) (did you mean "slack"?)`,
		`rate_limits.rules[1].providers[0]: no route has provider "github"`,
		`rate_limits.rules[2].rate: must be COUNT/PERIOD`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v\nwant it to contain %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "rules[0]") {
		t.Errorf("Validate() = %v; rules[0] is valid", err)
	}
}
