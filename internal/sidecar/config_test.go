package sidecar

import (
	"os"
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
