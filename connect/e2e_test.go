//go:build integration

package connect

import (
	"strings"
	"testing"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/chromium"
)

// TestBrowserConnectAndRevoke runs the connect flow in a real headless
// chromium: open a connect link, confirm, approve at the provider's consent
// page, land on the success page; the grant is stored and listed; revoke it
// from the page; the provider saw the revocation. Chromium enforces what
// Go's client does not: the CSP (form-action must allow the redirect to the
// provider), SameSite cookies across the provider's redirect back, and the
// Origin and Sec-Fetch-Site headers of real form posts.
func TestBrowserConnectAndRevoke(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := chromium.NewBrowser(t, chromium.Trust{URL: e.oauth.URL(), Roots: e.oauth.CertPool()})

	const user, account = "alice@example.com", "alice.acme"
	landed, err := b.Connect(e.linkURL(user), user, account)
	if err != nil {
		t.Fatalf("connect in the browser: %v", err)
	}
	status, err := b.Text("status")
	if err != nil {
		t.Fatal(err)
	}
	if landed != e.url+"/?connected=acme" || !strings.Contains(status, "is connected") {
		t.Errorf("landed on %s with status %q; want %s/?connected=acme saying it is connected", landed, status, e.url)
	}
	g := e.grant(user)
	if g == nil || g.ProviderAccount != account || g.Generation != 1 {
		t.Fatalf("stored grant %v; want generation 1 for account %s", g, account)
	}
	if _, _, active := e.oauth.Introspect(g.AccessToken); !active {
		t.Error("the stored access token is not active at the provider")
	}
	row, err := b.Text("app-acme")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(row, account) || !strings.Contains(row, "chat:write") {
		t.Errorf("apps page row %q; want the account and scopes", row)
	}

	landed, err = b.Revoke(e.url+"/", testProvider)
	if err != nil {
		t.Fatalf("revoke in the browser: %v", err)
	}
	status, err = b.Text("status")
	if err != nil {
		t.Fatal(err)
	}
	if landed != e.url+"/?revoked=acme" || !strings.Contains(status, "no longer connected") {
		t.Errorf("after revoking: at %s with status %q", landed, status)
	}
	if none, err := b.Text("none"); err != nil || none == "" {
		t.Errorf("apps page after revoking does not say that no app is connected: %v", err)
	}
	if e.grant(user) != nil {
		t.Error("grant still stored after revoking")
	}
	if got := e.oauth.Stats().Revocations; got != 1 {
		t.Errorf("provider revocations: %d; want 1", got)
	}
	if _, _, active := e.oauth.Introspect(g.AccessToken); active {
		t.Error("the access token is still active at the provider")
	}
	e.assertNoSecret(nil, g.AccessToken, g.RefreshToken, testClientSecret)
}

// TestBrowserLinkReused checks in the browser that a used connect link is
// refused.
func TestBrowserLinkReused(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := chromium.NewBrowser(t, chromium.Trust{URL: e.oauth.URL(), Roots: e.oauth.CertPool()})
	link := e.linkURL("alice")
	if _, err := b.Connect(link, "alice", "alice"); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if err := b.Open(link, "title"); err != nil {
		t.Fatal(err)
	}
	title, err := b.Text("title")
	if err != nil {
		t.Fatal(err)
	}
	if title != "This connect link was already used" {
		t.Errorf("reopened link: page %q; want the already-used refusal", title)
	}
}
