package oauth

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/html"
	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
)

// flowRedirect is the redirect URI registered for the flow tests; oauthtest
// matches loopback http redirect URIs on any port.
const flowRedirect = "http://127.0.0.1/callback"

// browserApprove plays the user's browser: it opens authURL, reads the
// consent form, approves it as user and returns the query of the redirect
// back to the client (code and state).
func browserApprove(t *testing.T, srv *oauthtest.Server, authURL, user string) url.Values {
	t.Helper()
	client := srv.Client() // trusts the server's CA, follows no redirect
	resp, err := client.Get(authURL)
	if err != nil {
		t.Fatalf("GET consent page: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET consent page: status %d; want 200", resp.StatusCode)
	}
	doc, err := html.Parse(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse consent page: %v", err)
	}
	action, form := "", url.Values{}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			attrs := map[string]string{}
			for _, a := range n.Attr {
				attrs[a.Key] = a.Val
			}
			switch n.Data {
			case "form":
				action = attrs["action"]
			case "input":
				if attrs["name"] != "" {
					form.Add(attrs["name"], attrs["value"])
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if action == "" {
		t.Fatalf("consent page has no form")
	}
	form.Set("user", user)
	form.Del("deny")
	form.Set("approve", "yes")
	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	target = target.ResolveReference(&url.URL{Path: action})
	resp, err = client.PostForm(target.String(), form)
	if err != nil {
		t.Fatalf("POST consent: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST consent: status %d; want 303", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != flowRedirect {
		t.Fatalf("consent redirected to %q; want %s", resp.Header.Get("Location"), flowRedirect)
	}
	return loc.Query()
}

// TestFlowEndToEnd runs the whole connect-side life of a grant against the
// real OAuth server over TLS, once per client authentication style: presets
// of each style (Asana: client_secret_post; Zoom: client_secret_basic) with
// their endpoints pointed at the test server, and a custom provider. It
// builds the authorization URL with a PKCE challenge, approves the consent
// form as a browser would, exchanges the code with the verifier, looks up
// the account, refreshes, revokes, and checks at the server that the grant
// is dead; a code exchanged without its verifier is refused.
func TestFlowEndToEnd(t *testing.T) {
	tests := []struct {
		name   string
		preset string
		style  AuthStyle
	}{
		{"asana preset, client_secret_post", "asana", AuthStyleParams},
		{"zoom preset, client_secret_basic", "zoom", AuthStyleHeader},
		{"custom provider, client_secret_basic", "", AuthStyleHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.preset != "" {
				pre, _ := LookupPreset(tt.preset)
				if pre.AuthStyle != tt.style || !pre.PKCE {
					t.Fatalf("preset %s has style %q, PKCE %v; the test needs %q with PKCE", tt.preset, pre.AuthStyle, pre.PKCE, tt.style)
				}
			}
			e := newEnv(t)
			c := DefaultProviderConfig()
			c.Preset = tt.preset
			c.TokenURL = e.srv.TokenURL()
			c.AuthorizationURL = e.srv.AuthURL()
			c.RevocationURL = e.srv.RevokeURL()
			c.UserinfoURL = e.srv.UserinfoURL()
			c.ClientID = testClientID
			c.ClientSecretFile = "/run/secrets/acme"
			c.Scopes = testScopes
			c.AccountField = "preferred_username" // what the test server's /userinfo offers
			if tt.preset == "" {
				c.AuthStyle = tt.style
			}
			p, err := NewProvider(testProvider, c, testSecret, testHTTPClient(t, e.srv.CertPool()))
			if err != nil {
				t.Fatalf("NewProvider: %v", err)
			}
			t.Cleanup(p.CloseIdleConnections)
			if p.Config().AuthStyle != tt.style {
				t.Fatalf("resolved auth style %q; want %q", p.Config().AuthStyle, tt.style)
			}
			ctx := ctxT(t)

			verifier := oauth2.GenerateVerifier()
			authURL := p.AuthCodeURL("state-0123456789", oauth2.S256ChallengeFromVerifier(verifier), flowRedirect, nil,
				map[string]string{"login_hint": testUser})
			if !strings.Contains(authURL, "code_challenge_method=S256") {
				t.Fatalf("authorization URL %q carries no S256 challenge", authURL)
			}
			q := browserApprove(t, e.srv, authURL, testUser)
			if q.Get("state") != "state-0123456789" || q.Get("code") == "" {
				t.Fatalf("redirect query %v; want the state and a code", q)
			}

			tok, err := p.Exchange(ctx, q.Get("code"), verifier, flowRedirect)
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if tok.AccessToken == "" || tok.RefreshToken == "" || tok.Expiry.IsZero() {
				t.Fatalf("Exchange returned access %t, refresh %t, expiry %v; want all", tok.AccessToken != "", tok.RefreshToken != "", tok.Expiry)
			}
			if got := tok.Extra("scope"); got != "read write" {
				t.Errorf(`Extra("scope") = %v; want "read write"`, got)
			}
			if user, scopes, active := e.srv.Introspect(tok.AccessToken); !active || user != testUser || strings.Join(scopes, " ") != "read write" {
				t.Fatalf("Introspect = %q %v %v; want alice's active token for read write", user, scopes, active)
			}

			acct, err := p.Account(ctx, tok.AccessToken)
			if err != nil || acct != testUser {
				t.Fatalf("Account = %q, %v; want %q", acct, err, testUser)
			}

			// The refresh path uses the same client authentication; the
			// server rotates the refresh token.
			nt, err := p.refresh(ctx, tok.RefreshToken)
			if err != nil || nt.RefreshToken == tok.RefreshToken {
				t.Fatalf("refresh = %v, rotated %v; want a rotated refresh token", err, nt != nil && nt.RefreshToken != tok.RefreshToken)
			}

			if err := p.RevokeGrant(ctx, nt.AccessToken, nt.RefreshToken); err != nil {
				t.Fatalf("RevokeGrant: %v", err)
			}
			if _, _, active := e.srv.Introspect(nt.AccessToken); active {
				t.Errorf("access token still active after revocation; want the grant revoked")
			}
			if err := p.Revoke(ctx, nt.RefreshToken, "refresh_token"); err != nil {
				t.Errorf("Revoke of an already revoked token: %v; want success", err)
			}
			if st := e.srv.Stats(); st.AuthCodeExchanges != 1 || st.Refreshes != 1 || st.Revocations < 1 || st.FailedAuth != 0 {
				t.Errorf("server stats %+v; want 1 exchange, 1 refresh, a revocation and no failed client authentication", st)
			}

			// A code redeemed without its PKCE verifier is refused.
			verifier2 := oauth2.GenerateVerifier()
			q = browserApprove(t, e.srv, p.AuthCodeURL("state-9876543210", oauth2.S256ChallengeFromVerifier(verifier2), flowRedirect, nil, nil), testUser)
			_, err = p.Exchange(ctx, q.Get("code"), "", flowRedirect)
			wantErr(t, "Exchange without the verifier", err, ErrInvalidCode)
			_, err = p.Exchange(ctx, q.Get("code"), oauth2.GenerateVerifier(), flowRedirect)
			wantErr(t, "Exchange with another verifier", err, ErrInvalidCode)
		})
	}
}

// TestFlowProviderDown checks that every connect-side call against a
// provider that went away is transient (injector.ErrProviderUnavailable),
// never a refusal that would make a caller give up on a grant.
func TestFlowProviderDown(t *testing.T) {
	e := newEnv(t)
	p := e.provider(nil)
	e.srv.Close()
	ctx := ctxT(t)
	wantErr(t, "Revoke", p.Revoke(ctx, "rt-1", "refresh_token"), injector.ErrProviderUnavailable)
	_, err := p.Exchange(ctx, "code-1", "verifier", flowRedirect)
	wantErr(t, "Exchange", err, injector.ErrProviderUnavailable)
	_, err = p.Account(ctx, "at-1")
	wantErr(t, "Account", err, injector.ErrProviderUnavailable)
}
