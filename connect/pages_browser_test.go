//go:build integration

package connect

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp/kb"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/chromium"
)

// reviewWidths are the widths every page state is checked and
// photographed at.
var reviewWidths = []int{chromium.DesktopWidth, chromium.PhoneWidth, chromium.NarrowWidth}

// TestBrowserPagesReview walks a person through every page and state of
// the connect server in a real chromium and reviews each one at desktop and
// phone widths (chromium.Review): axe-core finds no serious or critical
// violation, nothing sticks out sideways, and a screenshot is saved
// (chromium.ScreenshotDir: $ONBEHALF_SCREENSHOTS or .cache/screenshots).
// Along the way it checks what the pages say: plain-language permissions,
// the agent that asked, last use, statuses, local times, errors that look
// like errors and next steps that are links.
func TestBrowserPagesReview(t *testing.T) {
	e := newEnv(t, envOptions{presets: []string{"slack"}})
	b := chromium.NewBrowser(t, chromium.Trust{URL: e.oauth.URL(), Roots: e.oauth.CertPool()})
	t.Logf("screenshots go to %s", chromium.ScreenshotDir())
	if err := b.SetTimeZone("Asia/Tokyo"); err != nil {
		t.Fatal(err)
	}
	const user = "alice@example.com"
	ctx := context.Background()

	// Slack is connected already, used five minutes ago by agent-7.
	connected := time.Now().Add(-48 * time.Hour).UTC().Truncate(time.Second)
	if _, err := e.store.Put(ctx, &store.Grant{Provider: "slack", User: user, AccessToken: "slack-canary-0123456789", TokenType: "Bearer",
		Scopes: []string{"chat:write", "channels:read", "admin.teams:write"}, Status: store.StatusActive, ConnectedAt: connected,
		ProviderAccount: "alice@acme.slack.com", Generation: 1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.store.RecordActivity(ctx, "slack", user, store.Activity{LastUsedAt: time.Now().Add(-5 * time.Minute), LastUsedBy: "agent-7"}); err != nil {
		t.Fatal(err)
	}

	// The confirmation page names the person, the agent that asked and
	// what the app will allow.
	link := e.agentLinkURL(user, "weekly-report")
	if err := b.Open(link, "confirm"); err != nil {
		t.Fatal(err)
	}
	wantText(t, b, "agent", "weekly-report is asking to use acme on your behalf.")
	wantText(t, b, "for-user", user)
	b.Review(t, "confirm", reviewWidths...)

	// Connected: the apps page lists both apps.
	if err := b.SetWidth(chromium.DesktopWidth); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Connect(link, user, "alice.acme"); err != nil {
		t.Fatal(err)
	}
	wantText(t, b, "status", "acme is connected.")
	slack, err := b.Text("app-slack")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Slack", "alice@acme.slack.com", "Active", "Send messages as you chat:write",
		"See the public channels in your workspace channels:read", "admin.teams:write", "5 minutes ago by agent-7"} {
		if !strings.Contains(slack, want) {
			t.Errorf("Slack's entry %q lacks %q", slack, want)
		}
	}
	// Times are the browser's (Tokyo, UTC+9), with UTC on hover.
	times, err := b.Query("#app-slack .connected time")
	if err != nil || len(times) != 1 {
		t.Fatalf("connected time: %v, %v", times, err)
	}
	if utc := displayTime(connected); times[0] == utc || strings.Contains(times[0], "UTC") {
		t.Errorf("connected time %q is not shown in the browser's time zone", times[0])
	}
	// Chromium's locale here is en-US; ICU puts a narrow no-break space
	// before AM and PM.
	local := strings.NewReplacer("\u202f", " ", "\u00a0", " ").Replace(times[0])
	if want := connected.In(time.FixedZone("JST", 9*3600)).Format("Jan 2, 2006, 3:04 PM"); local != want {
		t.Errorf("connected time %q; want Tokyo's %q", local, want)
	}
	if title, _ := b.Query("#app-slack .connected time[title$='UTC']"); len(title) != 1 {
		t.Error("the connected time's title does not give the time in UTC")
	}
	b.Review(t, "apps-connected", reviewWidths...)
	for _, w := range []int{chromium.PhoneWidth, chromium.NarrowWidth} {
		if err := b.SetWidth(w); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"revoke-acme", "revoke-slack", "signout"} {
			if ok, err := b.Visible(id); err != nil || !ok {
				t.Errorf("at %d px #%s is not wholly on screen (%v)", w, id, err)
			}
		}
	}

	// Connecting acme again says what it replaces; cancelling says that
	// nothing happened.
	if err := b.SetWidth(chromium.DesktopWidth); err != nil {
		t.Fatal(err)
	}
	if err := b.Open(e.linkURL(user), "existing"); err != nil {
		t.Fatal(err)
	}
	b.Review(t, "confirm-reconnect", reviewWidths...)
	if err := b.Click("cancel", "message"); err != nil {
		t.Fatal(err)
	}
	wantNotice(t, b, "Nothing was connected")
	b.Review(t, "cancelled", reviewWidths...)

	// The used link, reopened by a signed-in person: an error with a way to
	// the apps page.
	if err := b.Open(link, "message"); err != nil {
		t.Fatal(err)
	}
	wantError(t, b, "This connect link was already used")
	if href, err := b.Attr("next", "href"); err != nil || href != "/" {
		t.Errorf("next step from a used link: %q, %v; want the apps page", href, err)
	}
	b.Review(t, "link-used", reviewWidths...)

	// A grant the provider refused: reconnect needed.
	g, ver, err := e.store.Get(ctx, "slack", user)
	if err != nil {
		t.Fatal(err)
	}
	g.Status = store.StatusReconnectRequired
	if _, err := e.store.Put(ctx, g, ver); err != nil {
		t.Fatal(err)
	}
	if err := b.Open(e.url+"/", "app-slack"); err != nil {
		t.Fatal(err)
	}
	if s, _ := b.Text("app-slack"); !strings.Contains(s, "Reconnect needed") || !strings.Contains(s, "Ask for a new connect link") {
		t.Errorf("Slack's entry %q; want reconnect needed and how", s)
	}
	b.Review(t, "apps-reconnect-needed", reviewWidths...)

	// Revoked: the status line, and the app under "Recently revoked".
	if err := b.SetWidth(chromium.DesktopWidth); err != nil {
		t.Fatal(err)
	}
	if err := b.Click("revoke-acme", "status"); err != nil {
		t.Fatal(err)
	}
	wantText(t, b, "status", "acme is no longer connected.")
	if s, _ := b.Text("revoked-acme"); !strings.Contains(s, "Revoked") || !strings.Contains(s, "by you") {
		t.Errorf("revoked entry %q; want it revoked by you", s)
	}
	b.Review(t, "apps-revoked", reviewWidths...)

	// Errors look like errors; neutral pages do not.
	for _, c := range []struct{ name, path, title string }{
		{"state-invalid", "/callback?state=bogus", "This connection cannot be completed"},
		{"not-found", "/no/such/page", "Page not found"},
		{"callback-alone", "/callback", "Nothing to complete"},
	} {
		if err := b.Open(e.url+c.path, "message"); err != nil {
			t.Fatal(err)
		}
		wantError(t, b, c.title)
		b.Review(t, c.name, reviewWidths...)
	}
	if err := b.Open(e.url+"/", "signout"); err != nil {
		t.Fatal(err)
	}
	if err := b.Click("signout", "message"); err != nil {
		t.Fatal(err)
	}
	wantNotice(t, b, "Signed out")
	b.Review(t, "signed-out", reviewWidths...)

	// Not signed in: a broken link and the apps page say what to do.
	if err := b.Open(e.url+"/connect/acme?link=not-a-link", "message"); err != nil {
		t.Fatal(err)
	}
	wantError(t, b, "This connect link is not valid")
	b.Review(t, "link-invalid", reviewWidths...)
	if err := b.Open(e.url+"/", "message"); err != nil {
		t.Fatal(err)
	}
	wantError(t, b, "Open your connect link")
	b.Review(t, "need-link", reviewWidths...)
}

// TestBrowserSignInPagesReview reviews the pages of a server where people
// sign in with the identity provider: the empty apps page offering apps to
// connect, and a connection the person declined, whose next step is to try
// again.
func TestBrowserSignInPagesReview(t *testing.T) {
	idp := newTestIDP(t)
	e := newEnv(t, envOptions{idp: idp, noLinks: true, presets: []string{"slack", "github"}})
	idp.setUser("carol", "carol@example.com", true)
	b := chromium.NewBrowser(t,
		chromium.Trust{URL: e.oauth.URL(), Roots: e.oauth.CertPool()},
		chromium.Trust{URL: idp.issuer(), Roots: e.roots})
	if err := b.Open(e.url+"/", "none"); err != nil {
		t.Fatal(err)
	}
	apps, err := b.Text("connectable")
	if err != nil || !strings.Contains(apps, "Slack") || !strings.Contains(apps, "GitHub") || !strings.Contains(apps, "acme") {
		t.Errorf("apps offered: %q, %v", apps, err)
	}
	b.Review(t, "apps-empty-signed-in", reviewWidths...)

	if err := b.SetWidth(chromium.DesktopWidth); err != nil {
		t.Fatal(err)
	}
	if err := b.Open(e.url+"/connect/acme", "confirm"); err != nil {
		t.Fatal(err)
	}
	if err := b.Click("confirm", "deny"); err != nil {
		t.Fatal(err)
	}
	if err := b.Click("deny", "message"); err != nil {
		t.Fatal(err)
	}
	wantNotice(t, b, "Nothing was connected")
	if href, err := b.Attr("next", "href"); err != nil || href != "/connect/acme" {
		t.Errorf("next step after declining: %q, %v; want to try again", href, err)
	}
	b.Review(t, "declined", reviewWidths...)
}

// TestBrowserKeyboardOnly connects and revokes an app with the keyboard
// alone, at phone width: Tab to each control (every one shows where the
// focus is) and Enter.
func TestBrowserKeyboardOnly(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := chromium.NewBrowser(t, chromium.Trust{URL: e.oauth.URL(), Roots: e.oauth.CertPool()})
	if err := b.SetWidth(chromium.PhoneWidth); err != nil {
		t.Fatal(err)
	}
	const user = "dave"
	if err := b.Open(e.linkURL(user), "confirm"); err != nil {
		t.Fatal(err)
	}
	// The skip link comes first and shows its focus.
	if n, err := b.TabTo("confirm", true); err != nil {
		t.Fatalf("confirmation page: %v", err)
	} else {
		t.Logf("confirm button after %d presses of Tab", n)
	}
	if err := b.Press(kb.Enter); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor("user"); err != nil {
		t.Fatal(err)
	}
	// The provider's own consent page (the OAuth test server's) is not
	// ours to style: its focus is not checked.
	if _, err := b.TabTo("user", false); err != nil {
		t.Fatal(err)
	}
	if err := b.Press(user); err != nil {
		t.Fatal(err)
	}
	if _, err := b.TabTo("approve", false); err != nil {
		t.Fatal(err)
	}
	if err := b.Press(kb.Enter); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor("status"); err != nil {
		t.Fatal(err)
	}
	if e.grant(user) == nil {
		t.Fatal("no grant stored after connecting with the keyboard")
	}
	if _, err := b.TabTo("revoke-acme", true); err != nil {
		t.Fatalf("apps page: %v", err)
	}
	if err := b.Press(kb.Enter); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor("none"); err != nil {
		t.Fatal(err)
	}
	wantText(t, b, "status", "acme is no longer connected.")
	if e.grant(user) != nil {
		t.Error("grant still stored after revoking with the keyboard")
	}
}

func wantText(t *testing.T, b *chromium.Browser, id, want string) {
	t.Helper()
	if got, err := b.Text(id); err != nil || got != want {
		t.Errorf("#%s: %q (%v); want %q", id, got, err, want)
	}
}

// wantError checks that the page is an error page titled title: it says
// so to screen readers (the document title), and looks it (the error
// style).
func wantError(t *testing.T, b *chromium.Browser, title string) {
	t.Helper()
	wantText(t, b, "title", title)
	if doc, err := b.Title(); err != nil || !strings.HasPrefix(doc, "Error: "+title) {
		t.Errorf("document title %q (%v); want it to start %q", doc, err, "Error: "+title)
	}
	if n, err := b.Query(".message.error"); err != nil || len(n) != 1 {
		t.Errorf("%q is not styled as an error (%v)", title, err)
	}
}

// wantNotice checks that the page is a neutral message titled title.
func wantNotice(t *testing.T, b *chromium.Browser, title string) {
	t.Helper()
	wantText(t, b, "title", title)
	if doc, err := b.Title(); err != nil || strings.HasPrefix(doc, "Error") {
		t.Errorf("document title %q (%v); want no error", doc, err)
	}
	if n, err := b.Query(".message.notice"); err != nil || len(n) != 1 {
		t.Errorf("%q is not styled as a notice (%v)", title, err)
	}
}
