package connect

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// TestNextSteps: message pages offer links, never a dead end that can be
// avoided: trying again where this browser can start the connection, the
// message's own link, the apps page to a signed-in person, sign-in where
// there is an identity provider.
func TestNextSteps(t *testing.T) {
	links := newEnv(t, envOptions{})
	oidc := newEnv(t, envOptions{idp: newTestIDP(t), noLinks: true})
	signedIn := func(via string) *session {
		s := newSession(time.Now(), time.Hour)
		s.User, s.Via = "alice", via
		return s
	}
	for _, tc := range []struct {
		name     string
		e        *testEnv
		sess     *session
		m        message
		provider string
		want     []action
	}{
		{"used link, signed in by a link", links.e(), signedIn(viaLink), msgLinkUsed, "", []action{{"/", "Your connected apps"}}},
		{"used link, not signed in", links.e(), nil, msgLinkUsed, "", nil},
		{"used link, not signed in, identity provider", oidc.e(), nil, msgLinkUsed, "", []action{{"/login", "Sign in"}}},
		{"apps link to nobody who could see the apps", links.e(), newSession(time.Now(), time.Hour), msgStateInvalid, "", nil},
		{"failed connection, links only", links.e(), signedIn(viaLink), msgCodeRefused, testProvider, []action{{"/", "Your connected apps"}}},
		{"failed connection, signed in with the IdP", oidc.e(), signedIn(viaOIDC), msgCodeRefused, testProvider,
			[]action{{"/connect/acme", "Try again"}, {"/", "Your connected apps"}}},
		{"unknown provider is never retried", oidc.e(), signedIn(viaOIDC), msgProviderDown, "nope", []action{{"/", "Your connected apps"}}},
		{"sign-in failed", oidc.e(), nil, msgSignInFailed, "", []action{{"/login", "Sign in again"}}},
		{"own link first", links.e(), signedIn(viaLink), msgLinksDisabled, "", []action{{"/login", "Sign in"}, {"/", "Your connected apps"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.e.srv.nextSteps(tc.sess, tc.m, tc.provider)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("next steps (-want +got):\n%s", diff)
			}
		})
	}
}

// e returns the environment itself, so that table rows read alike.
func (e *testEnv) e() *testEnv { return e }

// TestMessagePagesLookLikeWhatTheyAre: refusals are error pages (status,
// document title, style), neutral outcomes are notices, and the first next
// step is a link.
func TestMessagePagesLookLikeWhatTheyAre(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	b.connect(e, e.linkURL("alice"), "alice")
	for _, tc := range []struct {
		path, title string
		status      int
		kind        string
	}{
		{"/callback?state=nope", "This connection cannot be completed", http.StatusBadRequest, kindError},
		{"/nothing", "Page not found", http.StatusNotFound, kindError},
		{"/connect/acme/cancel", "Nothing was connected", http.StatusOK, kindNotice},
	} {
		r := b.get(e.url + tc.path)
		wantTitle := tc.title + " · Connected apps"
		if tc.kind == kindError {
			wantTitle = "Error: " + wantTitle
		}
		if r.status != tc.status || !strings.Contains(r.body, "<title>"+wantTitle+"</title>") ||
			!strings.Contains(r.body, `class="card message `+tc.kind+`"`) || !strings.Contains(r.body, `<a href="/" id="next"`) {
			t.Errorf("%s: status %d; want %d, title %q, a %s page with a link to the apps page\n%s", tc.path, r.status, tc.status, wantTitle, tc.kind, r.body)
		}
	}
}

// TestAppsPageShowsUseAndRevocation: the apps page and the JSON API show
// what an app may do in plain words, when it was last used and by which
// agent (not a use of an earlier grant), and a revoked app for 30 days.
func TestAppsPageShowsUseAndRevocation(t *testing.T) {
	e := newEnv(t, envOptions{presets: []string{"slack"}})
	ctx := context.Background()
	b := newBrowser(t, e.roots)
	b.connect(e, e.linkURL("alice"), "alice")
	connected := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	if _, err := e.store.Put(ctx, &store.Grant{Provider: "slack", User: "alice", AccessToken: "slack-token-canary", Status: store.StatusActive,
		Scopes: []string{"chat:write", "odd:scope"}, ConnectedAt: connected, Generation: 1}, 0); err != nil {
		t.Fatal(err)
	}
	// A use from before Slack was connected belongs to an earlier grant.
	if err := e.store.RecordActivity(ctx, "slack", "alice", store.Activity{LastUsedAt: connected.Add(-time.Minute), LastUsedBy: "old-agent"}); err != nil {
		t.Fatal(err)
	}
	page := b.get(e.url + "/")
	if !strings.Contains(page.body, "Send messages as you <code>chat:write</code>") || !strings.Contains(page.body, "<code>odd:scope</code>") ||
		strings.Contains(page.body, "old-agent") || strings.Count(page.body, "Not used yet") != 2 {
		t.Errorf("apps page before any use:\n%s", page.body)
	}
	used := time.Now().Add(-3 * time.Minute).UTC().Truncate(time.Second)
	if err := e.store.RecordActivity(ctx, "slack", "alice", store.Activity{LastUsedAt: used, LastUsedBy: "agent-7"}); err != nil {
		t.Fatal(err)
	}
	page = b.get(e.url + "/")
	if !strings.Contains(page.body, `<time class="ago" datetime="`+used.Format(time.RFC3339)+`" title="`+displayTime(used)+`">`) ||
		!strings.Contains(page.body, `by <span class="agent">agent-7</span>`) {
		t.Errorf("apps page after a use:\n%s", page.body)
	}

	var api appsResponse
	if err := json.Unmarshal([]byte(b.get(e.url+"/api/apps").body), &api); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(api.Apps, func(a appView) bool { return a.Provider == "slack" })
	if i < 0 {
		t.Fatalf("API apps %+v lack slack", api.Apps)
	}
	want := appView{Provider: "slack", DisplayName: "Slack", Scopes: []string{"chat:write", "odd:scope"},
		Permissions: []permission{{"chat:write", "Send messages as you"}, {Scope: "odd:scope"}},
		Status:      "active", ConnectedISO: connected.Format(time.RFC3339), LastUsedISO: used.Format(time.RFC3339), LastUsedBy: "agent-7", Generation: 1}
	got := api.Apps[i]
	got.ConnectedAt, got.LastUsedAt, got.StatusText, got.Mark, got.ReconnectHref = "", "", "", mark{}, ""
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("API view of slack (-want +got):\n%s", diff)
	}

	// Revoked: listed apart, by whom, and gone after 30 days.
	action, fields := formFields(t, page.body, "revoke-form-slack")
	if r := b.post(e.url+action, fields); r.status != http.StatusSeeOther {
		t.Fatalf("revoke slack: status %d", r.status)
	}
	page = b.get(e.url + "/?revoked=slack")
	if !strings.Contains(page.body, `id="revoked-slack"`) || strings.Contains(page.body, `id="app-slack"`) || !strings.Contains(page.body, "by you") {
		t.Errorf("apps page after revoking slack:\n%s", page.body)
	}
	if err := json.Unmarshal([]byte(b.get(e.url+"/api/apps").body), &api); err != nil {
		t.Fatal(err)
	}
	if len(api.Revoked) != 1 || api.Revoked[0].Provider != "slack" || api.Revoked[0].RevokedBy != "you" || api.Revoked[0].RevokedISO == "" {
		t.Errorf("API revoked %+v; want slack, revoked by you", api.Revoked)
	}
	e.clock.advance(revokedShown + time.Minute)
	apps, err := e.srv.userApps(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		if a.Provider == "slack" {
			t.Errorf("slack still listed (%s) %s after it was revoked", a.Status, revokedShown)
		}
	}
}

// TestConfirmNamesTheAgent: the confirmation page names the agent a link
// was made for (cut to a sane length), and the connect record does too.
func TestConfirmNamesTheAgent(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	page, action, fields := b.openConfirm(e, e.agentLinkURL("alice", "weekly-report"))
	if !strings.Contains(page.body, `<p id="agent" class="asker"><strong>weekly-report</strong> is asking to use acme on your behalf.</p>`) {
		t.Errorf("confirmation page does not name the agent:\n%s", page.body)
	}
	cb := b.consent(e, b.post(resolve(t, e.url, action), fields).location(), "alice")
	if r := b.get(cb); r.status != http.StatusSeeOther {
		t.Fatalf("callback: status %d", r.status)
	}
	if rec := lastAuditRecord(t, e, "connect"); rec["agent"] != "weekly-report" {
		t.Errorf("connect record %v; want agent weekly-report", rec)
	}
	page, _, _ = b.openConfirm(e, e.linkURL("alice"))
	if strings.Contains(page.body, `id="agent"`) {
		t.Error("a link naming no agent: the page names one")
	}
	long := strings.Repeat("ä", 100)
	page, _, _ = b.openConfirm(e, e.agentLinkURL("alice", long))
	if !strings.Contains(page.body, "<strong>"+strings.Repeat("ä", maxAgentLen/2)+"…</strong>") {
		t.Errorf("a 200-byte agent name is not cut to %d bytes:\n%s", maxAgentLen, page.body)
	}
}

// TestAppScript: the one script is served from this origin, as JavaScript.
func TestAppScript(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := newBrowser(t, e.roots).get(e.url + "/app.js")
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "text/javascript; charset=utf-8" || !strings.Contains(r.body, "Intl.DateTimeFormat") {
		t.Errorf("/app.js: status %d, type %q", r.status, r.header.Get("Content-Type"))
	}
}

func TestMarkFor(t *testing.T) {
	if m := markFor("slack", "Slack"); m.Letter != "S" || !strings.HasPrefix(m.Class, "mark-") {
		t.Errorf("markFor(slack) = %+v", m)
	}
	if m := markFor("x", "  émail"); m.Letter != "É" {
		t.Errorf("markFor(émail) = %+v; want É", m)
	}
	if m := markFor("x", "-"); m.Letter != "?" {
		t.Errorf("markFor(-) = %+v; want ?", m)
	}
	// Names spread over the colours.
	classes := map[string]bool{}
	for _, n := range []string{"acme", "slack", "github", "google", "microsoft", "notion", "linear", "zoom", "box", "figma"} {
		classes[markFor(n, n).Class] = true
	}
	if len(classes) < 5 {
		t.Errorf("ten names use %d colours; want them spread", len(classes))
	}
}
