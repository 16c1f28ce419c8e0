package connect

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// TestLinkRefusals checks that bad connect links sign nobody in and store
// nothing.
func TestLinkRefusals(t *testing.T) {
	tests := []struct {
		name string
		// open returns the URL to open; it may open other links first.
		open       func(t *testing.T, e *testEnv) string
		wantStatus int
		wantText   string
	}{
		{
			name: "expired",
			open: func(t *testing.T, e *testEnv) string {
				raw, err := MintLink(e.linkKey, LinkOptions{Issuer: testIssuer, User: "alice", Provider: testProvider,
					TTL: 2 * time.Minute, Now: time.Now().Add(-10 * time.Minute)})
				if err != nil {
					t.Fatal(err)
				}
				return LinkURL(e.url, testProvider, raw)
			},
			wantStatus: http.StatusUnauthorized, wantText: "not valid",
		},
		{
			name: "reused",
			open: func(t *testing.T, e *testEnv) string {
				u := e.linkURL("mallory")
				if r := newBrowser(t, e.roots).useLink(e, u); r.status != http.StatusSeeOther {
					t.Fatalf("first use: status %d", r.status)
				}
				return u
			},
			wantStatus: http.StatusUnauthorized, wantText: "already used",
		},
		{
			name: "reused on another replica",
			open: func(t *testing.T, e *testEnv) string {
				replica := newEnv(t, envOptions{shared: e})
				raw := e.link("mallory", testProvider, 0)
				if r := newBrowser(t, e.roots).useLink(replica, LinkURL(replica.url, testProvider, raw)); r.status != http.StatusSeeOther {
					t.Fatalf("first use on the replica: status %d", r.status)
				}
				return LinkURL(e.url, testProvider, raw)
			},
			wantStatus: http.StatusUnauthorized, wantText: "already used",
		},
		{
			name: "for another app",
			open: func(t *testing.T, e *testEnv) string {
				return LinkURL(e.url, testProvider, e.link("alice", "other", 0))
			},
			wantStatus: http.StatusBadRequest, wantText: "another app",
		},
		{
			name: "wrong audience",
			open: func(t *testing.T, e *testEnv) string {
				raw, err := MintLink(e.linkKey, LinkOptions{Issuer: testIssuer, Audience: "agent-7", User: "alice", Provider: testProvider})
				if err != nil {
					t.Fatal(err)
				}
				return LinkURL(e.url, testProvider, raw)
			},
			wantStatus: http.StatusUnauthorized, wantText: "not valid",
		},
		{
			name: "signed by another key",
			open: func(t *testing.T, e *testEnv) string {
				other, _, err := identity.GenerateKeyPair("EdDSA")
				if err != nil {
					t.Fatal(err)
				}
				raw, err := MintLink(other, LinkOptions{Issuer: testIssuer, User: "alice", Provider: testProvider})
				if err != nil {
					t.Fatal(err)
				}
				return LinkURL(e.url, testProvider, raw)
			},
			wantStatus: http.StatusUnauthorized, wantText: "not valid",
		},
		{
			name: "lifetime above max_lifetime",
			open: func(t *testing.T, e *testEnv) string {
				return LinkURL(e.url, testProvider, e.link("alice", testProvider, time.Hour))
			},
			wantStatus: http.StatusUnauthorized, wantText: "not valid",
		},
		{
			name: "altered",
			open: func(t *testing.T, e *testEnv) string {
				raw := e.link("alice", testProvider, 0)
				parts := strings.Split(raw, ".")
				claims := strings.Replace(decodeSegment(t, parts[1]), `"alice"`, `"mallory"`, 1)
				parts[1] = encodeSegment(claims)
				return LinkURL(e.url, testProvider, strings.Join(parts, "."))
			},
			wantStatus: http.StatusUnauthorized, wantText: "not valid",
		},
		{
			name: "without jti",
			open: func(t *testing.T, e *testEnv) string {
				now := time.Now()
				tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
					"iss": testIssuer, "aud": DefaultLinkAudience, "sub": "alice", "provider": testProvider,
					"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
				})
				raw, err := tok.SignedString(e.linkKey.(ed25519.PrivateKey))
				if err != nil {
					t.Fatal(err)
				}
				return LinkURL(e.url, testProvider, raw)
			},
			wantStatus: http.StatusUnauthorized, wantText: "not valid",
		},
		{
			name: "user id unusable as a grant key",
			open: func(t *testing.T, e *testEnv) string {
				now := time.Now()
				tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
					"iss": testIssuer, "aud": DefaultLinkAudience, "sub": "../alice", "provider": testProvider,
					"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": rand.Text(),
				})
				raw, err := tok.SignedString(e.linkKey.(ed25519.PrivateKey))
				if err != nil {
					t.Fatal(err)
				}
				return LinkURL(e.url, testProvider, raw)
			},
			wantStatus: http.StatusUnauthorized, wantText: "not valid",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			u := tc.open(t, e)
			b := newBrowser(t, e.roots)
			r := b.useLink(e, u)
			if r.status != tc.wantStatus || !strings.Contains(r.body, tc.wantText) {
				t.Errorf("open link: status %d; want %d with %q\n%s", r.status, tc.wantStatus, tc.wantText, r.body)
			}
			// Nobody is signed in: the apps page asks for a link.
			if r := b.get(e.url + "/"); r.status != http.StatusUnauthorized {
				t.Errorf("apps page after a refused link: status %d; want 401", r.status)
			}
			if r := b.get(e.url + "/connect/" + testProvider); r.status != http.StatusUnauthorized {
				t.Errorf("connect page after a refused link: status %d; want 401", r.status)
			}
			for _, user := range []string{"alice", "mallory"} {
				if g := e.grant(user); g != nil {
					t.Errorf("grant of %s stored", user)
				}
			}
			if got := e.oauth.Stats().AuthCodeExchanges; got != 0 {
				t.Errorf("code exchanges: %d; want 0", got)
			}
			e.assertNoSecret(nil, u[strings.Index(u, "link=")+len("link="):])
		})
	}
}

func decodeSegment(t *testing.T, s string) string {
	t.Helper()
	b, err := jwt.NewParser().DecodeSegment(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func encodeSegment(s string) string {
	return strings.TrimRight(base64.RawURLEncoding.EncodeToString([]byte(s)), "=")
}

// TestLinkUsedAtConfirmation checks that a link is used up when its
// person confirms, not when it is fetched: a chat app's link preview does
// not spend it, and of two browsers holding the confirmation page only the
// first to confirm proceeds.
func TestLinkUsedAtConfirmation(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := e.linkURL("alice")
	// The preview fetcher keeps no cookies and follows no form.
	for range 2 {
		if r := newBrowser(t, e.roots).get(u); r.status != http.StatusSeeOther {
			t.Fatalf("preview fetch: status %d; want 303", r.status)
		}
	}
	first, second := newBrowser(t, e.roots), newBrowser(t, e.roots)
	_, action1, fields1 := first.openConfirm(e, u)
	_, action2, fields2 := second.openConfirm(e, u)
	if r := first.post(resolve(t, e.url, action1), fields1); r.status != http.StatusSeeOther {
		t.Fatalf("first confirmation: status %d; want 303 to the provider\n%s", r.status, r.body)
	}
	r := second.post(resolve(t, e.url, action2), fields2)
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "already used") {
		t.Errorf("second confirmation: status %d; want 401 already used\n%s", r.status, r.body)
	}
	if r := second.get(e.url + "/"); r.status != http.StatusUnauthorized {
		t.Errorf("apps page of the second browser: status %d; want 401", r.status)
	}
}

// useLink opens linkURL and confirms; it returns the first response that
// is not the redirect to the confirmation page: the confirmation's answer
// (303 to the provider) or a refusal.
func (b *browser) useLink(e *testEnv, linkURL string) response {
	b.t.Helper()
	r := b.get(linkURL)
	if r.status != http.StatusSeeOther {
		return r
	}
	r = b.get(resolve(b.t, e.url, r.location()))
	if r.status != http.StatusOK {
		return r
	}
	action, fields := formFields(b.t, r.body, "confirm-form")
	return b.post(resolve(b.t, e.url, action), fields)
}

// TestLinkSessionScope checks that a browser signed in by a link may
// connect only the app the link named, and only until it has done so.
func TestLinkSessionScope(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	if r := b.connect(e, e.linkURL("alice"), "alice"); r.status != http.StatusSeeOther {
		t.Fatalf("connect: status %d", r.status)
	}
	// The apps page works for the rest of the session.
	if r := b.get(e.url + "/"); r.status != http.StatusOK {
		t.Errorf("apps page: status %d; want 200", r.status)
	}
	// Connecting again needs a new link.
	if r := b.get(e.url + "/connect/" + testProvider); r.status != http.StatusUnauthorized {
		t.Errorf("connect without a new link: status %d; want 401", r.status)
	}
	for _, tc := range []struct {
		name string
		sess session
	}{
		{"link for another app", session{User: "alice", Via: viaLink, Link: &linkGrant{User: "alice", Provider: "other"}}},
		{"no link", session{User: "alice", Via: viaLink}},
	} {
		if _, _, ok := e.srv.connectUser(&tc.sess, testProvider); ok {
			t.Errorf("%s: may connect; want refused", tc.name)
		}
	}
}

// TestConnectUser checks the one decision of whom a connection is for,
// with links only and with OIDC sign-in: the signed-in user must be the
// user of a link pending for the app, and a link for another app plays no
// part.
func TestConnectUser(t *testing.T) {
	linksOnly := newEnv(t, envOptions{})
	withIDP := newEnv(t, envOptions{idp: newTestIDP(t)})
	link := func(user, provider string) *linkGrant { return &linkGrant{User: user, Provider: provider, ID: "j"} }
	for _, tc := range []struct {
		name      string
		e         *testEnv
		sess      session
		signIn    bool
		wantUser  string
		wantPage  message
		wantAudit bool
	}{
		{"links: pending link", linksOnly, session{Link: link("alice", testProvider)}, false, "alice", message{}, false},
		{"links: link of another signed-in user", linksOnly, session{User: "bob", Via: viaLink, Link: link("alice", testProvider)}, false, "", msgUserMismatch, true},
		{"links: no link", linksOnly, session{User: "alice", Via: viaLink}, false, "", msgNeedLink, false},
		{"links: link for another app", linksOnly, session{Link: link("alice", "other")}, false, "", msgNeedLink, false},
		{"oidc: not signed in", withIDP, session{Link: link("alice", testProvider)}, true, "", msgNoSession, false},
		{"oidc: signed in by a link", withIDP, session{User: "alice", Via: viaLink}, true, "", msgNoSession, false},
		{"oidc: signed in", withIDP, session{User: "alice", Via: viaOIDC}, false, "alice", message{}, false},
		{"oidc: link of the signed-in user", withIDP, session{User: "alice", Via: viaOIDC, Link: link("alice", testProvider)}, false, "alice", message{}, false},
		{"oidc: link of someone else", withIDP, session{User: "bob", Via: viaOIDC, Link: link("alice", testProvider)}, false, "", msgUserMismatch, true},
		{"oidc: someone else's link for another app", withIDP, session{User: "bob", Via: viaOIDC, Link: link("alice", "other")}, false, "bob", message{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.e.srv.needsSignIn(&tc.sess); got != tc.signIn {
				t.Errorf("needsSignIn: got %v; want %v", got, tc.signIn)
			}
			before := auditRecords(t, tc.e, "connect")
			user, m, ok := tc.e.srv.connectUser(&tc.sess, testProvider)
			if user != tc.wantUser || m.title != tc.wantPage.title || ok != (tc.wantPage == message{}) {
				t.Errorf("connectUser: got %q, %q, %v; want %q, %q", user, m.title, ok, tc.wantUser, tc.wantPage.title)
			}
			if audited := auditRecords(t, tc.e, "connect") > before; audited != tc.wantAudit {
				t.Errorf("audited: got %v; want %v", audited, tc.wantAudit)
			}
		})
	}
	if (*session)(nil).pendingLink(testProvider) != nil {
		t.Errorf("a nil session has a pending link")
	}
}

// TestLinkForAnotherUserWhileSignedIn: with links only, a browser signed
// in as alice (by her own link) opens bob's link. It stops on a page that
// names both and says to sign out first; nothing is stored (no grant for
// bob, the session still alice's, the link not used up), and once signed
// out the same link works for bob.
func TestLinkForAnotherUserWhileSignedIn(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	if r := b.connect(e, e.linkURL("alice"), "alice-account"); r.status != http.StatusOK && r.status != http.StatusSeeOther {
		t.Fatalf("alice connects: status %d\n%s", r.status, r.body)
	}
	bobLink := e.linkURL("bob")
	r, _ := b.follow(bobLink)
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "This link is for bob; you are signed in as alice") || !strings.Contains(r.body, "sign out first") {
		t.Fatalf("bob's link in alice's browser: status %d; want 403 naming both\n%s", r.status, r.body)
	}
	if strings.Contains(r.body, "confirm-form") {
		t.Error("the refusal page offers to confirm")
	}
	if g := e.grant("bob"); g != nil {
		t.Errorf("a grant was stored for bob: %v", g)
	}
	if r, _ := b.follow(e.url + "/"); !strings.Contains(r.body, `id="user">alice<`) {
		t.Errorf("the session changed user:\n%s", r.body)
	}
	if !strings.Contains(e.auditText(), `"link_user":"bob"`) {
		t.Error("the refusal is not audited")
	}
	// Signed out, the same link (not used up) works for bob.
	if r, _ := b.follow(e.url + "/"); r.status == http.StatusOK {
		action, fields := formFields(t, r.body, "") // the first form: sign out, in the header
		b.post(resolve(t, e.url, action), fields)
	}
	if r := b.connect(e, bobLink, "bob-account"); r.status != http.StatusOK && r.status != http.StatusSeeOther {
		t.Fatalf("bob's link after signing out: status %d\n%s", r.status, r.body)
	}
	if e.grant("bob") == nil {
		t.Error("bob's link did not connect after signing out")
	}
}

// TestLinkSentToSomeoneElse checks, with links and OIDC sign-in both
// configured, that a connect link opened by a person signed in as someone
// else is refused and nothing is stored: whether they sign in after
// opening it or were signed in before.
func TestLinkSentToSomeoneElse(t *testing.T) {
	idp := newTestIDP(t)
	e := newEnv(t, envOptions{idp: idp})
	idp.setUser("bob", "bob@example.com", true)

	// Not signed in yet: the link sends the browser to the IdP, where bob
	// is signed in.
	b := newBrowser(t, e.roots)
	r, at := b.follow(e.linkURL("alice"))
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "for someone else") {
		t.Errorf("after sign-in as bob: status %d at %s; want 403 refusing alice's link\n%s", r.status, at, r.body)
	}
	if !strings.Contains(r.body, `id="user">bob<`) {
		t.Errorf("refusal page does not show who is signed in")
	}
	// The refused link is forgotten: bob may still connect for himself.
	if r, _ := b.follow(e.url + "/connect/" + testProvider); r.status != http.StatusOK {
		t.Errorf("bob's own connect page: status %d; want 200 (bob may connect for himself)", r.status)
	}

	// Already signed in as bob, then opening alice's link.
	r, _ = b.follow(e.linkURL("alice"))
	if r.status != http.StatusForbidden {
		t.Errorf("alice's link opened by signed-in bob: status %d; want 403", r.status)
	}
	for _, user := range []string{"alice", "bob"} {
		if g := e.grant(user); g != nil {
			t.Errorf("grant of %s stored", user)
		}
	}
	rec := lastAuditRecord(t, e, "connect")
	if rec["user"] != "bob" || extra(rec, "outcome") != "refused" || extra(rec, "link_user") != "alice" {
		t.Errorf("connect audit record %v; want bob refused for alice's link", rec)
	}
}

// TestLinkAndMatchingSignIn checks the accepted path with links and OIDC:
// the link's user signs in and connects.
func TestLinkAndMatchingSignIn(t *testing.T) {
	idp := newTestIDP(t)
	e := newEnv(t, envOptions{idp: idp})
	idp.setUser("alice", "alice@example.com", true)
	b := newBrowser(t, e.roots)
	r, at := b.follow(e.linkURL("alice"))
	if r.status != http.StatusOK || !strings.Contains(at, "/connect/"+testProvider) {
		t.Fatalf("after sign-in: status %d at %s; want the confirmation page\n%s", r.status, at, r.body)
	}
	action, fields := formFields(t, r.body, "confirm-form")
	r = b.post(resolve(t, e.url, action), fields)
	cb := b.consent(e, r.location(), "alice-at-acme")
	if r := b.get(cb); r.status != http.StatusSeeOther {
		t.Fatalf("callback: status %d\n%s", r.status, r.body)
	}
	if g := e.grant("alice"); g == nil || g.ProviderAccount != "alice-at-acme" {
		t.Errorf("grant of alice: %v; want one for account alice-at-acme", g)
	}
}

// TestOIDCOnly checks sign-in without links: the sidecar's connect_url
// leads through the IdP to the confirmation page, and links are refused.
func TestOIDCOnly(t *testing.T) {
	idp := newTestIDP(t)
	e := newEnv(t, envOptions{idp: idp, noLinks: true})
	idp.setUser("carol", "carol@example.com", true)
	b := newBrowser(t, e.roots)

	r := b.get(e.url + "/connect/" + testProvider)
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.location(), idp.issuer()+"/authorize?") {
		t.Fatalf("connect without session: status %d to %q; want 303 to the IdP", r.status, r.location())
	}
	r, at := b.follow(r.location())
	if r.status != http.StatusOK || !strings.Contains(r.body, `id="for-user">carol<`) {
		t.Fatalf("after sign-in: status %d at %s; want carol's confirmation page\n%s", r.status, at, r.body)
	}
	if r := b.get(e.url + "/"); r.status != http.StatusOK || !strings.Contains(r.body, `href="/connect/acme"`) {
		t.Errorf("apps page: status %d; want 200 offering acme", r.status)
	}
	if r := b.get(e.linkURL("carol")); r.status != http.StatusBadRequest {
		t.Errorf("link without links configured: status %d; want 400", r.status)
	}
}

// TestSignInRefusals checks the sign-in callback's refusals.
func TestSignInRefusals(t *testing.T) {
	idp := newTestIDP(t)
	tests := []struct {
		name      string
		userClaim string
		user      string
		email     string
		verified  bool
		// tamper returns the browser that opens the callback, and the URL.
		tamper func(t *testing.T, e *testEnv, b *browser, cb string) (*browser, string)
		want   int
	}{
		{name: "unverified email", userClaim: "email", user: "dave", email: "dave@example.com", want: http.StatusUnauthorized},
		{name: "user id unusable", userClaim: "sub", user: "dave/../x", verified: true, want: http.StatusUnauthorized},
		{name: "replayed state", userClaim: "sub", user: "dave", verified: true, want: http.StatusBadRequest,
			tamper: func(t *testing.T, e *testEnv, b *browser, cb string) (*browser, string) {
				before := b.cookies(e.url)
				if r, _ := b.follow(cb); r.status != http.StatusOK {
					t.Fatalf("first sign-in: status %d", r.status)
				}
				b.setCookies(e.url, before)
				return b, cb
			}},
		{name: "foreign state", userClaim: "sub", user: "dave", verified: true, want: http.StatusBadRequest,
			tamper: func(t *testing.T, e *testEnv, _ *browser, cb string) (*browser, string) {
				other := newBrowser(t, e.roots)
				other.get(e.url + "/login") // a sign-in of its own in flight
				return other, cb
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{idp: idp, noLinks: true, configure: func(c *Config) { c.OIDC.UserClaim = tc.userClaim }})
			idp.setUser(tc.user, tc.email, tc.verified)
			b := newBrowser(t, e.roots)
			r := b.get(e.url + "/login")
			if r.status != http.StatusSeeOther {
				t.Fatalf("login: status %d", r.status)
			}
			r = b.get(r.location()) // the IdP answers with the callback
			cb := r.location()
			if !strings.HasPrefix(cb, e.url+"/login/callback?") {
				t.Fatalf("IdP redirected to %q; want the login callback", cb)
			}
			target := b
			if tc.tamper != nil {
				target, cb = tc.tamper(t, e, b, cb)
			}
			r = target.get(cb)
			if r.status != tc.want {
				t.Errorf("login callback: status %d; want %d\n%s", r.status, tc.want, r.body)
			}
			if tc.tamper == nil {
				if r := target.get(e.url + "/api/apps"); r.status != http.StatusUnauthorized {
					t.Errorf("after a refused sign-in /api/apps: status %d; want 401", r.status)
				}
			}
		})
	}
}

// TestSignInUnavailable checks the page shown when the IdP cannot be
// reached.
func TestSignInUnavailable(t *testing.T) {
	idp := newTestIDP(t)
	e := newEnv(t, envOptions{idp: idp, noLinks: true})
	idp.srv.Close()
	b := newBrowser(t, e.roots)
	for _, path := range []string{"/login", "/connect/acme", "/"} {
		if r := b.get(e.url + path); r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "Sign-in is not available") {
			t.Errorf("GET %s with the IdP down: status %d; want 503\n%s", path, r.status, r.body)
		}
	}
}
