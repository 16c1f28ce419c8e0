package connect

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// file is the shape of a configuration file holding a connect section.
type file struct {
	Connect Config `yaml:"connect"`
}

func TestConfigDecode(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "connect.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := file{Connect: DefaultConfig()}
	if err := config.Decode(data, &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := DefaultConfig()
	want.Listen = "0.0.0.0:8080"
	want.ExternalURL = "https://connect.example.com"
	want.SessionKeyFile = "/var/lib/onbehalf/connect-session.key"
	want.SessionTTL = 2 * time.Hour
	want.StateTTL = 5 * time.Minute
	want.Links.Issuers = []string{"https://orchestrator.example.com"}
	want.Links.JWKSURL = "https://orchestrator.example.com/.well-known/jwks.json"
	want.Links.MaxLifetime = 3 * time.Minute
	want.OIDC.Issuer = "https://login.example.com"
	want.OIDC.ClientID = "onbehalf-connect"
	want.OIDC.ClientSecretFile = "/run/secrets/oidc-client-secret"
	want.OIDC.UserClaim = "email"
	want.Admin.TokenFile = "/run/secrets/connect-admin-token"
	want.RevocationRetry = RetryConfig{Interval: time.Minute, MaxAttempts: 20}
	if diff := cmp.Diff(want, got.Connect); diff != "" {
		t.Errorf("decoded config (-want +got):\n%s", diff)
	}
	if err := got.Connect.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigUnknownKey(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "unknown_key.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := file{Connect: DefaultConfig()}
	err = config.Decode(data, &got)
	if err == nil || !strings.Contains(err.Error(), "connect.sesion_ttl: unknown key") {
		t.Errorf("Decode: %v; want connect.sesion_ttl: unknown key", err)
	}
}

// validConfig returns a configuration that passes Validate.
func validConfig() Config {
	c := DefaultConfig()
	c.ExternalURL = "https://connect.example.com"
	c.Links.Issuers = []string{"https://orchestrator.example.com"}
	c.Links.Keys = []identity.KeyConfig{{File: "/etc/onbehalf/link.pub"}}
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if err := DefaultConfig().Validate(); err == nil {
		t.Error("DefaultConfig validates; want external_url and links or oidc required")
	}
	tests := []struct {
		name   string
		change func(*Config)
		paths  []string
	}{
		{"no external url", func(c *Config) { c.ExternalURL = "" }, []string{"external_url"}},
		{"plain http off loopback", func(c *Config) { c.ExternalURL = "http://connect.example.com" }, []string{"external_url"}},
		{"external url with a path", func(c *Config) { c.ExternalURL = "https://example.com/connect" }, []string{"external_url"}},
		{"external url with credentials", func(c *Config) { c.ExternalURL = "https://u:p@example.com" }, []string{"external_url"}},
		{"loopback http is fine", func(c *Config) { c.ExternalURL = "http://127.0.0.1:8080" }, nil},
		{"bad listen", func(c *Config) { c.Listen = "8080" }, []string{"listen"}},
		{"no session key", func(c *Config) { c.SessionKeyFile = "" }, []string{"session_key_file"}},
		{"session ttl too long", func(c *Config) { c.SessionTTL = 48 * time.Hour }, []string{"session_ttl"}},
		{"state ttl too short", func(c *Config) { c.StateTTL = time.Second }, []string{"state_ttl"}},
		{"neither links nor oidc", func(c *Config) { c.Links = LinksConfig{} }, []string{""}},
		{"links without keys", func(c *Config) { c.Links.Keys = nil }, []string{"links"}},
		{"link lifetime too long", func(c *Config) { c.Links.MaxLifetime = time.Hour }, []string{"links.max_lifetime"}},
		{"link keys without issuers", func(c *Config) {
			c.Links.Issuers = nil
			c.OIDC = OIDCConfig{Issuer: "https://login.example.com", ClientID: "x", ClientSecretFile: "/s", UserClaim: "sub"}
		}, []string{"links.issuers"}},
		{"oidc incomplete", func(c *Config) { c.OIDC.Issuer = "http://login.example.com"; c.OIDC.UserClaim = "" },
			[]string{"oidc.issuer", "oidc.client_id", "oidc.client_secret_file", "oidc.user_claim"}},
		{"oidc client without issuer", func(c *Config) { c.OIDC.ClientID = "x" }, []string{"oidc.issuer"}},
		{"bad oidc scope", func(c *Config) {
			c.OIDC = OIDCConfig{Issuer: "https://login.example.com", ClientID: "x", ClientSecretFile: "/s", UserClaim: "sub", Scopes: []string{"open id"}}
		}, []string{"oidc.scopes[0]"}},
		{"retry out of range", func(c *Config) { c.RevocationRetry = RetryConfig{Interval: time.Millisecond, MaxAttempts: -1} },
			[]string{"revocation_retry.max_attempts", "revocation_retry.interval"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			var got []string
			for _, e := range config.Flatten(c.Validate()) {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("problem %v is not a FieldError", e)
				}
				got = append(got, fe.Path)
			}
			slices.Sort(got)
			got = slices.Compact(got)
			want := slices.Clone(tc.paths)
			slices.Sort(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("problem paths (-want +got):\n%s\n%v", diff, c.Validate())
			}
		})
	}
}

func TestResolvePaths(t *testing.T) {
	c := validConfig()
	c.SessionKeyFile = "session.key"
	c.Links.Keys[0].File = "keys/link.pub"
	c.Admin.TokenFile = "/abs/admin.token"
	c.ResolvePaths("/etc/onbehalf")
	if c.SessionKeyFile != "/etc/onbehalf/session.key" || c.Links.Keys[0].File != "/etc/onbehalf/keys/link.pub" ||
		c.Admin.TokenFile != "/abs/admin.token" {
		t.Errorf("ResolvePaths: %q, %q, %q", c.SessionKeyFile, c.Links.Keys[0].File, c.Admin.TokenFile)
	}
}

// TestNewRefuses checks what New refuses before serving.
func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	c := validConfig()
	c.SessionKeyFile = filepath.Join(dir, "session.key")
	st := newEnv(t, envOptions{}).store
	tests := []struct {
		name string
		cfg  func() Config
		deps Deps
		want string
	}{
		{"invalid config", func() Config { x := c; x.ExternalURL = ""; return x }, Deps{Store: st}, "external_url"},
		{"no store", func() Config { return c }, Deps{}, "grant store"},
		{"links without verifier", func() Config { return c }, Deps{Store: st}, "link verifier"},
		{"short admin token", func() Config {
			x := c
			x.Links = LinksConfig{}
			x.OIDC = OIDCConfig{Issuer: "https://login.example.com", ClientID: "x", ClientSecretFile: writeFile(t, dir, "oidc", "s3cret"), UserClaim: "sub"}
			x.Admin.TokenFile = writeFile(t, dir, "admin", "short")
			return x
		}, Deps{Store: st}, "shorter than"},
		{"missing oidc secret", func() Config {
			x := c
			x.Links = LinksConfig{}
			x.OIDC = OIDCConfig{Issuer: "https://login.example.com", ClientID: "x", ClientSecretFile: filepath.Join(dir, "none"), UserClaim: "sub"}
			return x
		}, Deps{Store: st}, "oidc client secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg(), tc.deps)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestListenAndServe checks that ListenAndServe serves on the configured
// address until Shutdown.
func TestListenAndServe(t *testing.T) {
	e := newEnv(t, envOptions{})
	cfg := e.cfg
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	ln.Close()
	srv, err := New(cfg, Deps{Store: e.store, Providers: e.srv.providers, LinkVerifier: e.srv.links})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	url := "http://" + cfg.Listen + "/healthz"
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /healthz: status %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not reachable: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("ListenAndServe: %v; want ErrServerClosed", err)
	}
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v; want ErrServerClosed", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("Serve after Shutdown left its listener open")
	}
}
