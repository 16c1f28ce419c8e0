package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// TestGrantsPutFlags: `grants put` checks its flags and reads its tokens
// before it opens a store, and every mistake is a usage error (exit 2).
func TestGrantsPutFlags(t *testing.T) {
	dir := t.TempDir()
	refreshFile := filepath.Join(dir, "refresh")
	if err := os.WriteFile(refreshFile, []byte("refresh-canary\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	base := grantsPutFlags{provider: "github", user: "alice", accessFile: "-", tokenType: "Bearer"}

	good := base
	good.refreshFile, good.expiry, good.scopes, good.account = refreshFile, "1h", "repo,read:org", "alice-gh"
	g, err := good.grant(strings.NewReader("access-canary\n"), now)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	want := &store.Grant{
		Provider: "github", User: "alice", AccessToken: "access-canary", RefreshToken: "refresh-canary",
		TokenType: "Bearer", Expiry: now.Add(time.Hour).UTC(), Scopes: []string{"repo", "read:org"},
		Status: store.StatusActive, ConnectedAt: now.UTC(), ProviderAccount: "alice-gh",
	}
	if diff := cmp.Diff(want, g); diff != "" {
		t.Errorf("grant (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name  string
		edit  func(*grantsPutFlags)
		stdin string
		want  string
	}{
		{"no provider", func(f *grantsPutFlags) { f.provider = "" }, "tok", "are required"},
		{"no user", func(f *grantsPutFlags) { f.user = "" }, "tok", "are required"},
		{"no access token", func(f *grantsPutFlags) { f.accessFile = "" }, "tok", "are required"},
		{"empty access token", nil, "  \n", "access token: empty"},
		{"two tokens on stdin", func(f *grantsPutFlags) { f.refreshFile = "-" }, "tok", "only one token"},
		{"missing refresh file", func(f *grantsPutFlags) { f.refreshFile = filepath.Join(dir, "none") }, "tok", "refresh token:"},
		{"bad expiry", func(f *grantsPutFlags) { f.expiry = "tomorrow" }, "tok", `--expiry "tomorrow"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := base
			if tc.edit != nil {
				tc.edit(&f)
			}
			g, err := f.grant(strings.NewReader(tc.stdin), now)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, %v; want a usage error containing %q", g, err, tc.want)
			}
		})
	}
}
