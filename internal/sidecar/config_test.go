package sidecar

import (
	"os"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"path/filepath"
	"strings"
	"testing"
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
