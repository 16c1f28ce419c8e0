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
