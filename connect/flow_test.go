package connect

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// TestConnectFlow runs the whole flow from a connect link: confirmation
// page, consent at the provider, callback, stored grant, audit record, apps
// page and JSON API; then a reconnection replaces the grant.
func TestConnectFlow(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	linkURL := e.linkURL("alice@example.com")

	page, action, fields := b.openConfirm(e, linkURL)
	for _, want := range []string{`id="for-user">alice@example.com<`, `id="app">acme<`, "chat:write", "files:read"} {
		if !strings.Contains(page.body, want) {
			t.Errorf("confirmation page lacks %q", want)
		}
	}
	if fields.Get("csrf") == "" {
		t.Fatal("confirmation form has no CSRF token")
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' "+e.oauth.URL()) {
		t.Errorf("confirmation page CSP %q; want form-action 'self' and the provider's origin", csp)
	}

	r := b.post(resolve(t, e.url, action), fields)
	if r.status != http.StatusSeeOther {
		t.Fatalf("confirm: status %d; want 303", r.status)
	}
	authURL, err := url.Parse(r.location())
	if err != nil {
		t.Fatal(err)
	}
	q := authURL.Query()
	if got := authURL.Scheme + "://" + authURL.Host + authURL.Path; got != e.oauth.AuthURL() {
		t.Errorf("redirected to %s; want the provider's authorization endpoint %s", got, e.oauth.AuthURL())
	}
	for k, want := range map[string]string{
		"response_type":         "code",
		"client_id":             testClientID,
		"redirect_uri":          e.url + "/callback",
		"code_challenge_method": "S256",
		"scope":                 "chat:write files:read",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("authorization request %s = %q; want %q", k, got, want)
		}
	}
	if len(q.Get("state")) < 40 || len(q.Get("code_challenge")) != 43 {
		t.Errorf("authorization request state (%d chars) or code_challenge (%d chars) too short", len(q.Get("state")), len(q.Get("code_challenge")))
	}

	cb := b.consent(e, authURL.String(), "alice.acme")
	r = b.get(cb)
	if r.status != http.StatusSeeOther || r.location() != "/?connected=acme" {
		t.Fatalf("callback: status %d, location %q; want 303 to /?connected=acme\n%s", r.status, r.location(), r.body)
	}
	g := e.grant("alice@example.com")
	if g == nil {
		t.Fatal("no grant stored")
	}
	if g.AccessToken == "" || g.RefreshToken == "" {
		t.Error("stored grant lacks tokens")
	}
	want := store.Grant{
		Provider: testProvider, User: "alice@example.com", TokenType: "bearer",
		Scopes: testScopes, Status: store.StatusActive, ProviderAccount: "alice.acme", Generation: 1,
	}
	got := *g
	got.AccessToken, got.RefreshToken, got.Expiry, got.ConnectedAt, got.IssuedAt = "", "", time.Time{}, time.Time{}, time.Time{}
	got.TokenType = strings.ToLower(got.TokenType)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored grant (-want +got):\n%s", diff)
	}
	if time.Since(g.ConnectedAt) > time.Minute || time.Until(g.Expiry) < 50*time.Minute || !g.IssuedAt.Equal(g.ConnectedAt) {
		t.Errorf("connected_at %s, issued_at %s, expiry %s; want now, the same and in an hour", g.ConnectedAt, g.IssuedAt, g.Expiry)
	}
	if user, _, active := e.oauth.Introspect(g.AccessToken); !active || user != "alice.acme" {
		t.Errorf("provider: token active %v for %q; want active for alice.acme", active, user)
	}

	// The audit trail has the connect record with a fingerprint, not the
	// token.
	rec := lastAuditRecord(t, e, "connect")
	if rec["user"] != "alice@example.com" || rec["provider"] != testProvider || extra(rec, "outcome") != "ok" ||
		rec["token_fingerprint"] != e.audit.Fingerprinter().Token(g.AccessToken) || rec["grant_generation"] != 1.0 {
		t.Errorf("connect audit record %v; want user, provider, outcome ok, fingerprint and generation 1", rec)
	}

	apps := b.get(e.url + "/?connected=acme")
	if apps.status != http.StatusOK || !strings.Contains(apps.body, `id="app-acme"`) || !strings.Contains(apps.body, "alice.acme") ||
		!strings.Contains(apps.body, `id="status"`) {
		t.Errorf("apps page: status %d; want 200 listing acme with account alice.acme and a status line\n%s", apps.status, apps.body)
	}
	var api appsResponse
	r = b.get(e.url + "/api/apps")
	if r.status != http.StatusOK {
		t.Fatalf("GET /api/apps: status %d", r.status)
	}
	if err := json.Unmarshal([]byte(r.body), &api); err != nil {
		t.Fatal(err)
	}
	if api.User != "alice@example.com" || len(api.Apps) != 1 || api.Apps[0].Account != "alice.acme" || api.CSRFToken == "" ||
		!slices.Equal(api.Apps[0].Scopes, testScopes) || api.Apps[0].Generation != 1 {
		t.Errorf("GET /api/apps = %+v; want alice's acme grant and a CSRF token", api)
	}

	// Connecting again (a new link) replaces the grant: generation 2.
	r = b.connect(e, e.linkURL("alice@example.com"), "alice.acme2")
	if r.status != http.StatusSeeOther {
		t.Fatalf("reconnect: status %d", r.status)
	}
	g2 := e.grant("alice@example.com")
	if g2.Generation != 2 || g2.ProviderAccount != "alice.acme2" || g2.AccessToken == g.AccessToken {
		t.Errorf("after reconnecting: generation %d, account %q, new token %v; want 2, alice.acme2, true",
			g2.Generation, g2.ProviderAccount, g2.AccessToken != g.AccessToken)
	}
	e.assertNoSecret([]string{page.body, apps.body, r.body}, g.AccessToken, g.RefreshToken, g2.AccessToken, g2.RefreshToken,
		testClientSecret, q.Get("state"), codeOf(t, cb))
}

// codeOf returns the code of a callback URL.
func codeOf(t *testing.T, cb string) string {
	t.Helper()
	u, err := url.Parse(cb)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("code")
}

// lastAuditRecord returns the last audit record of event.
func lastAuditRecord(t *testing.T, e *testEnv, event string) map[string]any {
	t.Helper()
	var last map[string]any
	for _, line := range strings.Split(strings.TrimSpace(e.auditText()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if m["event"] == event {
			last = m
		}
	}
	if last == nil {
		t.Fatalf("no %s audit record in:\n%s", event, e.auditText())
	}
	return last
}

// auditRecords returns the number of audit records of event.
func auditRecords(t *testing.T, e *testEnv, event string) int {
	t.Helper()
	n := 0
	text := strings.TrimSpace(e.auditText())
	if text == "" {
		return 0
	}
	for _, line := range strings.Split(text, "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if m["event"] == event {
			n++
		}
	}
	return n
}

// extra returns a field of a record's extra object.
func extra(rec map[string]any, key string) any {
	m, _ := rec["extra"].(map[string]any)
	return m[key]
}

// TestCallbackRefusals checks that the callback refuses a missing,
// unknown, replayed, expired or foreign state, and a code for a flow whose
// browser user changed; in each case nothing is stored and no code is
// exchanged.
func TestCallbackRefusals(t *testing.T) {
	tests := []struct {
		name string
		// attack runs the attack and returns the response of the refused
		// callback. It may complete other flows first; it returns the
		// number of code exchanges those made.
		attack     func(t *testing.T, e *testEnv) (r response, exchanges int64)
		wantStatus int
		// wantGrant is the generation stored at the end (0: none).
		wantGrant int64
	}{
		{
			name: "missing state",
			attack: func(t *testing.T, e *testEnv) (response, int64) {
				b := newBrowser(t, e.roots)
				cb := b.consent(e, b.startFlow(e, e.linkURL("alice")), "alice")
				u, _ := url.Parse(cb)
				q := u.Query()
				q.Del("state")
				u.RawQuery = q.Encode()
				return b.get(u.String()), 0
			},
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "unknown state",
			attack: func(t *testing.T, e *testEnv) (response, int64) {
				b := newBrowser(t, e.roots)
				cb := b.consent(e, b.startFlow(e, e.linkURL("alice")), "alice")
				u, _ := url.Parse(cb)
				q := u.Query()
				q.Set("state", "made-up-state-0123456789abcdefghijklmnopqrstuvwxyz")
				u.RawQuery = q.Encode()
				return b.get(u.String()), 0
			},
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "replayed state with the old session cookie",
			attack: func(t *testing.T, e *testEnv) (response, int64) {
				b := newBrowser(t, e.roots)
				cb := b.consent(e, b.startFlow(e, e.linkURL("alice")), "alice")
				before := b.cookies(e.url) // the session still holding the flow
				if r := b.get(cb); r.status != http.StatusSeeOther {
					t.Fatalf("first callback: status %d", r.status)
				}
				b.setCookies(e.url, before)
				return b.get(cb), 1
			},
			wantStatus: http.StatusBadRequest,
			wantGrant:  1,
		},
		{
			name: "replayed state on another replica",
			attack: func(t *testing.T, e *testEnv) (response, int64) {
				replica := newEnv(t, envOptions{shared: e})
				b := newBrowser(t, e.roots)
				cb := b.consent(e, b.startFlow(e, e.linkURL("alice")), "alice")
				before := b.cookies(e.url)
				if r := b.get(cb); r.status != http.StatusSeeOther {
					t.Fatalf("first callback: status %d", r.status)
				}
				b.setCookies(replica.url, before)
				return b.get(strings.Replace(cb, e.url, replica.url, 1)), 1
			},
			wantStatus: http.StatusBadRequest,
			wantGrant:  1,
		},
		{
			name: "expired state",
			attack: func(t *testing.T, e *testEnv) (response, int64) {
				b := newBrowser(t, e.roots)
				cb := b.consent(e, b.startFlow(e, e.linkURL("alice")), "alice")
				e.clock.advance(e.cfg.StateTTL + time.Second)
				return b.get(cb), 0
			},
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "another session's state",
			attack: func(t *testing.T, e *testEnv) (response, int64) {
				victim := newBrowser(t, e.roots)
				cb := victim.consent(e, victim.startFlow(e, e.linkURL("alice")), "alice")
				// The attacker, signed in as mallory, lands on alice's
				// callback URL (or makes alice land on theirs).
				attacker := newBrowser(t, e.roots)
				attacker.startFlow(e, e.linkURL("mallory"))
				return attacker.get(cb), 0
			},
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "state without any session",
			attack: func(t *testing.T, e *testEnv) (response, int64) {
				victim := newBrowser(t, e.roots)
				cb := victim.consent(e, victim.startFlow(e, e.linkURL("alice")), "alice")
				return newBrowser(t, e.roots).get(cb), 0
			},
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "browser user changed since the flow started",
			attack: func(t *testing.T, e *testEnv) (response, int64) {
				b := newBrowser(t, e.roots)
				cb := b.consent(e, b.startFlow(e, e.linkURL("alice")), "alice")
				// Rewrite the session as if bob had signed in while
				// alice's flow was kept: only the server's key can do it.
				sess := readSession(t, e, b)
				sess.User = "bob"
				writeSession(t, e, b, sess)
				return b.get(cb), 0
			},
			wantStatus: http.StatusForbidden,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			r, wantExchanges := tc.attack(t, e)
			if r.status != tc.wantStatus {
				t.Errorf("callback: status %d; want %d\n%s", r.status, tc.wantStatus, r.body)
			}
			// Every token request counts, failed ones too: a refused
			// callback must not even try the code.
			if got := e.oauth.Stats().TokenRequests; got != wantExchanges {
				t.Errorf("token requests at the provider: %d; want %d", got, wantExchanges)
			}
			for _, user := range []string{"alice", "bob", "mallory"} {
				g := e.grant(user)
				switch {
				case user == "alice" && tc.wantGrant != 0:
					if g == nil || g.Generation != tc.wantGrant {
						t.Errorf("grant of alice: %v; want generation %d", g, tc.wantGrant)
					}
				case g != nil:
					t.Errorf("grant of %s stored: %v; want none", user, g)
				}
			}
		})
	}
}

// readSession opens the browser's session cookie with the server's key.
func readSession(t *testing.T, e *testEnv, b *browser) *session {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url, nil)
	for _, c := range b.cookies(e.url) {
		req.AddCookie(c)
	}
	s := e.srv.cookies.read(req, e.clock.now())
	if s == nil {
		t.Fatal("browser has no session")
	}
	return s
}

// writeSession seals sess into the browser's session cookie.
func writeSession(t *testing.T, e *testEnv, b *browser, sess *session) {
	t.Helper()
	v, err := e.srv.cookies.sealer.seal(e.srv.cookies.name, sess)
	if err != nil {
		t.Fatal(err)
	}
	b.setCookies(e.url, []*http.Cookie{{Name: e.srv.cookies.name, Value: v, Path: "/"}})
}

// TestPKCE checks that an authorization code obtained by the flow cannot
// be redeemed without the PKCE verifier kept in the browser's session, nor
// with another verifier: someone who intercepts the code gets nothing. Each
// attempt uses a fresh code (see the report on fosite's handling of a
// second attempt).
func TestPKCE(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	redirect := e.url + "/callback"
	tests := []struct {
		name     string
		exchange func(code string) error
	}{
		{"no verifier", func(code string) error {
			_, err := e.provider.Exchange(ctx, code, "", redirect)
			return err
		}},
		{"another verifier", func(code string) error {
			_, err := e.provider.Exchange(ctx, code, oauth2.GenerateVerifier(), redirect)
			return err
		}},
		{"plain x/oauth2 without PKCE", func(code string) error {
			oc := e.provider.OAuth2Config()
			oc.RedirectURL = redirect
			_, err := oc.Exchange(e.provider.WithHTTPClient(ctx), code)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBrowser(t, e.roots)
			cb := b.consent(e, b.startFlow(e, e.linkURL("alice")), "alice")
			err := tc.exchange(codeOf(t, cb))
			if err == nil {
				t.Error("code redeemed without the flow's PKCE verifier")
			}
			var re *oauth2.RetrieveError
			if !errors.Is(err, oauth.ErrInvalidCode) && (!errors.As(err, &re) || re.ErrorCode != "invalid_grant") {
				t.Errorf("exchange: %v; want invalid_grant", err)
			}
			if e.grant("alice") != nil {
				t.Error("grant stored")
			}
		})
	}
	if got := e.oauth.Stats().AuthCodeExchanges; got != 0 {
		t.Errorf("code exchanges: %d; want 0", got)
	}
}

// TestReturnTo checks that return_to is honoured for paths on this server
// and ignored for anything else.
func TestReturnTo(t *testing.T) {
	tests := []struct{ returnTo, want string }{
		{"/?from=chat", "/?from=chat"},
		{"https://evil.example/", "/?connected=acme"},
		{"//evil.example/x", "/?connected=acme"},
		{"/\\evil.example", "/?connected=acme"},
		{"javascript:alert(1)", "/?connected=acme"},
		{"/callback?state=x", "/?connected=acme"},
	}
	e := newEnv(t, envOptions{})
	for _, tc := range tests {
		t.Run(tc.returnTo, func(t *testing.T) {
			b := newBrowser(t, e.roots)
			link := e.linkURL("alice") + "&return_to=" + url.QueryEscape(tc.returnTo)
			r := b.connect(e, link, "alice")
			if r.status != http.StatusSeeOther || r.location() != tc.want {
				t.Errorf("callback: status %d, location %q; want 303 to %q", r.status, r.location(), tc.want)
			}
		})
	}
}

func TestSafeReturnTo(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"/apps?x=1#top", "/apps?x=1#top"},
		{"", ""},
		{"apps", ""},
		{"//evil.example", ""},
		{"/\\evil.example", ""},
		{"/a\\b", ""},
		{"https://evil.example", ""},
		{"/a\nb", ""},
		{"/a\x00b", ""},
		{"/callback", ""},
		{"/login/callback?code=x", ""},
		{"/" + strings.Repeat("a", maxReturnToLen), ""},
	}
	for _, tc := range tests {
		if got := safeReturnTo(tc.in); got != tc.want {
			t.Errorf("safeReturnTo(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzSafeReturnTo checks that whatever safeReturnTo accepts is a path on
// this server.
func FuzzSafeReturnTo(f *testing.F) {
	for _, s := range []string{"/", "//x", "/\\x", "/%2F%2Fx", "https://x", "/a?b=//c", "/\t/x", "/.//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := safeReturnTo(in)
		if out == "" {
			return
		}
		base, _ := url.Parse("https://connect.example")
		u, err := base.Parse(out)
		if err != nil {
			t.Fatalf("safeReturnTo(%q) = %q, which does not parse: %v", in, out, err)
		}
		if u.Host != "connect.example" || u.Scheme != "https" {
			t.Fatalf("safeReturnTo(%q) = %q leads to %s://%s", in, out, u.Scheme, u.Host)
		}
	})
}

// TestCallbackFailures checks what the person sees, what is audited and
// that nothing is stored when the provider denies, fails or refuses, or the
// store is down.
func TestCallbackFailures(t *testing.T) {
	tests := []struct {
		name        string
		before      func(e *testEnv)
		deny        bool
		wantStatus  int
		wantText    string
		wantOutcome string
		wantCode    string
	}{
		{name: "consent denied", deny: true, wantStatus: http.StatusOK, wantText: "Nothing was connected",
			wantOutcome: "denied", wantCode: "access_denied"},
		{name: "token endpoint down", before: func(e *testEnv) { e.oauth.FailNext(1, http.StatusServiceUnavailable) },
			wantStatus: http.StatusServiceUnavailable, wantText: "not answering", wantOutcome: "failed", wantCode: "provider_unavailable"},
		{name: "client refused", before: func(e *testEnv) { e.oauth.SetInvalidClient(true) },
			wantStatus: http.StatusBadGateway, wantText: "misconfigured", wantOutcome: "failed", wantCode: "provider_misconfigured"},
		{name: "store down", before: func(e *testEnv) { e.store.Close() },
			wantStatus: http.StatusServiceUnavailable, wantText: "cannot be saved"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			b := newBrowser(t, e.roots)
			authURL := b.startFlow(e, e.linkURL("alice"))
			var cb string
			if tc.deny {
				r := b.get(authURL)
				action, fields := formFields(t, r.body, "consent")
				fields.Set("deny", "yes")
				cb = b.post(resolve(t, authURL, action), fields).location()
			} else {
				cb = b.consent(e, authURL, "alice")
			}
			if tc.before != nil {
				tc.before(e)
			}
			r := b.get(cb)
			if r.status != tc.wantStatus || !strings.Contains(r.body, tc.wantText) {
				t.Errorf("callback: status %d; want %d with %q\n%s", r.status, tc.wantStatus, tc.wantText, r.body)
			}
			if tc.name != "store down" && e.grant("alice") != nil {
				t.Error("grant stored")
			}
			if tc.wantOutcome != "" {
				rec := lastAuditRecord(t, e, "connect")
				if extra(rec, "outcome") != tc.wantOutcome || rec["error_code"] != tc.wantCode || rec["token_fingerprint"] != nil {
					t.Errorf("connect audit record %v; want outcome %s, error_code %s, no fingerprint", rec, tc.wantOutcome, tc.wantCode)
				}
			}
			e.assertNoSecret([]string{r.body}, codeOf(t, cb), testClientSecret)
		})
	}
}
