package main

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/connect"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
)

// linkConfig writes a connect configuration accepting links from one
// issuer with a fresh key pair, and returns it and the private key's path.
func linkConfig(t *testing.T, issuers string) (cfgPath, keyPath string) {
	t.Helper()
	dir := t.TempDir()
	keyPath = filepath.Join(dir, "orch.key")
	if _, _, err := cli(t, "", "assert", "keygen", "--private", keyPath, "--public", filepath.Join(dir, "orch.pub")); err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "onbehalf.yaml")
	doc := `connect:
  external_url: https://connect.example.com
  links:
    issuers: ` + issuers + `
    keys: [{file: orch.pub}]
providers:
  github: {preset: github, client_id: abc, client_secret_file: gh.secret}
  internal: {token_url: "https://sso.example.com/token", client_id: abc, client_secret_file: s, auth_style: header}
  issues-mcp: {mcp_server: "https://mcp.example.com/mcp"}
store: {embedded: {path: grants.db, key_file: grants.key}}
audit: {sink: file, file: {path: audit.log}, fingerprint_key_file: fp.key}
`
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, keyPath
}

// TestConnectLink: the printed URL opens the provider's connect page with a
// link the connect server's own verifier accepts, naming the user, the app
// and the agent.
func TestConnectLink(t *testing.T) {
	cfgPath, keyPath := linkConfig(t, "[https://orchestrator.example.com]")
	out, _, err := cli(t, "", "connect", "link", "--config", cfgPath, "--key", keyPath, "--user", "alice@example.com", "--provider", "github", "--agent", "weekly-report")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(strings.TrimSpace(out))
	if err != nil || u.Scheme != "https" || u.Host != "connect.example.com" || u.Path != "/connect/github" {
		t.Fatalf("printed %q; want https://connect.example.com/connect/github?link=…", out)
	}
	cfg, err := sidecar.LoadConnect(cfgPath, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := connect.NewLinkVerifier(context.Background(), cfg.Connect.Links)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	sub, err := v.Verify(context.Background(), u.Query().Get("link"))
	if err != nil {
		t.Fatalf("the connect server refuses the link: %v", err)
	}
	if sub.User != "alice@example.com" || sub.Agent != "weekly-report" || sub.Claims["provider"] != "github" || sub.ID == "" {
		t.Errorf("link names %+v; want alice@example.com, weekly-report, github and a jti", sub)
	}
	if life := time.Until(sub.Expiry); life <= 0 || life > connect.DefaultLinkTTL {
		t.Errorf("link lives %s more; want at most %s", life, connect.DefaultLinkTTL)
	}
}

// TestConnectLinkMCP: an MCP server known only by its URL has no
// authorization endpoint in the configuration, yet people can connect it
// (the connect server discovers it), so links are minted for it.
func TestConnectLinkMCP(t *testing.T) {
	cfgPath, keyPath := linkConfig(t, "[https://orchestrator.example.com]")
	out, _, err := cli(t, "", "connect", "link", "--config", cfgPath, "--key", keyPath, "--user", "alice", "--provider", "issues-mcp")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(strings.TrimSpace(out), "https://connect.example.com/connect/issues-mcp?link=") {
		t.Errorf("printed %q; want a link to /connect/issues-mcp", out)
	}
}

func TestConnectLinkRefusals(t *testing.T) {
	cfgPath, keyPath := linkConfig(t, "[https://a.example.com, https://b.example.com]")
	base := []string{"connect", "link", "--config", cfgPath, "--key", keyPath, "--iss", "https://a.example.com"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no user", []string{"--provider", "github"}, "are required"},
		{"bad user", []string{"--user", "alice smith", "--provider", "github"}, "--user:"},
		{"misspelt provider", []string{"--user", "alice", "--provider", "githbu"}, `(did you mean "github"?)`},
		{"unknown provider", []string{"--user", "alice", "--provider", "zzzzzz"}, "(it names github, internal, issues-mcp)"},
		{"provider without authorization", []string{"--user", "alice", "--provider", "internal"}, "no authorization_url"},
		{"issuer not accepted", []string{"--user", "alice", "--provider", "github", "--iss", "https://c.example.com"}, "not one of connect.links.issuers"},
		{"ttl too long", []string{"--user", "alice", "--provider", "github", "--ttl", "1h"}, "at most connect.links.max_lifetime (4m0s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cli(t, "", append(base, tc.args...)...)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v; want a usage error containing %q", err, tc.want)
			}
		})
	}
	_, _, err := cli(t, "", "connect", "link", "--config", cfgPath, "--key", keyPath, "--user", "alice", "--provider", "github")
	if err == nil || !strings.Contains(err.Error(), "--iss is required: connect.links.issuers has several") {
		t.Errorf("two issuers and no --iss: got %v", err)
	}
}
