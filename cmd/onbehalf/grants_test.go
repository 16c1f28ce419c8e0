package main

import (
	"bytes"
	"context"
	"encoding/json"
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

// cli runs the command line args with stdin and returns what it printed
// and the error it ended with.
func cli(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// grantsConfigFile writes a configuration whose routes use github and slack
// and whose embedded store lives in a temporary directory.
func grantsConfigFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "onbehalf.yaml")
	doc := `routes:
  - host: api.github.com
    provider: github
  - host: slack.com
    provider: slack
store:
  embedded:
    path: grants.db
    key_file: grants.key
audit:
  sink: file
  file:
    path: audit.log
  fingerprint_key_file: fingerprint.key
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGrantsPutRefusesUnknownProvider: a provider no route or providers
// entry uses is refused with the nearest name, and stored with --force.
func TestGrantsPutRefusesUnknownProvider(t *testing.T) {
	cfg := grantsConfigFile(t)
	put := func(provider string, extra ...string) error {
		args := append([]string{"grants", "put", "--config", cfg, "--provider", provider, "--user", "alice", "--access-token-file", "-"}, extra...)
		_, _, err := cli(t, "tok-canary\n", args...)
		return err
	}
	err := put("githbu")
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), `--provider "githbu": no route or provider in `+cfg+` uses it (did you mean "github"?); pass --force`) {
		t.Fatalf("put githbu: got %v; want a usage error suggesting github", err)
	}
	if err := put("zzzzzz"); err == nil || !strings.Contains(err.Error(), "(it uses github, slack)") {
		t.Errorf("put zzzzzz: got %v; want the names it uses", err)
	}
	if err := put("github"); err != nil {
		t.Errorf("put github: %v", err)
	}
	if err := put("githbu", "--force"); err != nil {
		t.Errorf("put githbu --force: %v", err)
	}
	out, _, err := cli(t, "", "grants", "list", "--config", cfg, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var page grantsPage
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	var got []string
	for _, g := range page.Grants {
		got = append(got, g.Provider+"/"+g.User)
	}
	if diff := cmp.Diff([]string{"githbu/alice", "github/alice"}, got); diff != "" {
		t.Errorf("stored grants (-want +got):\n%s", diff)
	}
}

// TestGrantsListPages: --limit and --after walk the grants a page at a
// time, in the table and in JSON, and the last page says nothing more.
func TestGrantsListPages(t *testing.T) {
	cfg := grantsConfigFile(t)
	var want []string
	for _, p := range []string{"github", "slack"} {
		for _, u := range []string{"alice", "bob", "carol"} {
			if _, _, err := cli(t, "tok\n", "grants", "put", "--config", cfg, "--provider", p, "--user", u, "--access-token-file", "-"); err != nil {
				t.Fatal(err)
			}
			want = append(want, p+"/"+u)
		}
	}
	var got []string
	after, pages := "", 0
	for {
		args := []string{"grants", "list", "--config", cfg, "--limit", "4", "-o", "json"}
		if after != "" {
			args = append(args, "--after", after)
		}
		out, _, err := cli(t, "", args...)
		if err != nil {
			t.Fatal(err)
		}
		var page grantsPage
		if err := json.Unmarshal([]byte(out), &page); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, g := range page.Grants {
			got = append(got, g.Provider+"/"+g.User)
		}
		pages++
		if page.NextAfter == "" || pages > 5 {
			break
		}
		after = page.NextAfter
	}
	if diff := cmp.Diff(want, got); diff != "" || pages != 2 {
		t.Errorf("paged through %d pages (-want +got):\n%s", pages, diff)
	}

	out, errOut, err := cli(t, "", "grants", "list", "--config", cfg, "--limit", "2", "--after", "github/alice")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], "github    bob") || !strings.HasPrefix(lines[2], "github    carol") {
		t.Errorf("table page:\n%s", out)
	}
	if strings.TrimSpace(errOut) != "more grants follow: add --after github/carol" {
		t.Errorf("stderr %q; want the next page's --after", errOut)
	}
	if _, errOut, _ := cli(t, "", "grants", "list", "--config", cfg, "--provider", "slack", "--limit", "0"); errOut != "" {
		t.Errorf("the whole list says %q on stderr; want nothing", errOut)
	}
}

func TestGrantsListFlags(t *testing.T) {
	for _, tc := range []struct {
		f    grantsListFlags
		want string
	}{
		{grantsListFlags{output: "yaml"}, `-o "yaml": want table or json`},
		{grantsListFlags{output: "table", limit: -1}, "--limit -1"},
		{grantsListFlags{output: "table", after: "alice"}, "want PROVIDER/USER"},
		{grantsListFlags{output: "table", after: "slack/al ice"}, "want PROVIDER/USER"},
		{grantsListFlags{output: "json", after: "slack/alice", provider: "github"}, "not a grant of --provider github"},
		{grantsListFlags{output: "json", after: "slack/alice", provider: "slack", limit: 5}, ""},
	} {
		err := tc.f.check()
		var ue usageError
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: got %v; want no error", tc.f, err)
			}
		} else if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v; want a usage error containing %q", tc.f, err, tc.want)
		}
	}
}

func TestPageGrants(t *testing.T) {
	var gs []*store.Grant
	for _, k := range []string{"a/x", "a/y", "b/x", "b/z"} {
		p, u, _ := strings.Cut(k, "/")
		gs = append(gs, &store.Grant{Provider: p, User: u})
	}
	names := func(gs []*store.Grant) string {
		var s []string
		for _, g := range gs {
			s = append(s, g.Provider+"/"+g.User)
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		after     string
		limit     int
		want, nxt string
	}{
		{"", 0, "a/x a/y b/x b/z", ""},
		{"", 2, "a/x a/y", "a/y"},
		{"a/y", 2, "b/x b/z", ""},
		{"a/z", 1, "b/x", "b/x"}, // a cursor that is gone starts at the next one
		{"b/z", 3, "", ""},
		{"", 4, "a/x a/y b/x b/z", ""},
	} {
		page, next := pageGrants(gs, tc.after, tc.limit)
		if got := names(page); got != tc.want || next != tc.nxt {
			t.Errorf("after %q limit %d: got %q next %q; want %q next %q", tc.after, tc.limit, got, next, tc.want, tc.nxt)
		}
	}
}
