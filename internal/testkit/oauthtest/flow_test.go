package oauthtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
)

func TestAuthCodePKCEFlow(t *testing.T) {
	tests := []struct {
		name     string
		clientID string
		style    oauth2.AuthStyle
	}{
		{"confidential client_secret_basic", confID, oauth2.AuthStyleInHeader},
		{"confidential client_secret_post", confID, oauth2.AuthStyleInParams},
		{"public client", publicID, oauth2.AuthStyleInParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, testOptions())
			cfg := oauthConfig(s, tt.clientID, tt.style)
			verifier := oauth2.GenerateVerifier()
			state := "state-0123456789"
			authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("login_hint", "alice"))

			f := getConsent(t, s, authURL)
			if got := f.values.Get("user"); got != "alice" {
				t.Errorf("user field prefilled with %q; want %q", got, "alice")
			}
			for _, want := range []string{tt.clientID, "read", "chat:write", "Approve"} {
				if !strings.Contains(f.page, want) {
					t.Errorf("consent page does not mention %q", want)
				}
			}
			q := approve(t, s, authURL, "")
			if got := q.Get("state"); got != state {
				t.Fatalf("state %q; want %q", got, state)
			}
			code := q.Get("code")
			if code == "" {
				t.Fatalf("redirect without code: %v", q)
			}

			tok, err := cfg.Exchange(clientCtx(s), code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if tok.AccessToken == "" || tok.RefreshToken == "" {
				t.Fatalf("Exchange returned access %t, refresh %t; want both", tok.AccessToken != "", tok.RefreshToken != "")
			}
			if got, want := tok.Extra("scope"), "read chat:write"; got != want {
				t.Errorf("scope %v; want %q", got, want)
			}
			user, scopes, active := s.Introspect(tok.AccessToken)
			if !active || user != "alice" {
				t.Fatalf("Introspect = %q, %v; want alice, true", user, active)
			}
			if diff := cmp.Diff([]string{"read", "chat:write"}, scopes); diff != "" {
				t.Errorf("Introspect scopes (-want +got):\n%s", diff)
			}
			if got := s.Stats(); got.AuthCodeExchanges != 1 || got.TokenRequests != 1 {
				t.Errorf("Stats = %+v; want 1 exchange, 1 token request", got)
			}
			// The code is single-use; a second exchange fails and revokes
			// what the code minted (RFC 6749 section 4.1.2).
			_, err = cfg.Exchange(clientCtx(s), code, oauth2.VerifierOption(verifier))
			if got := errorCode(err); got != "invalid_grant" {
				t.Errorf("second Exchange error %v (code %q); want invalid_grant", err, got)
			}
			if _, _, active := s.Introspect(tok.AccessToken); active {
				t.Errorf("access token active after its code was replayed; want revoked")
			}
		})
	}
}

func TestPKCERequired(t *testing.T) {
	s := newServer(t, testOptions())
	verifier := oauth2.GenerateVerifier()
	state := "state-0123456789"

	t.Run("code without verifier", func(t *testing.T) {
		cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
		q := approve(t, s, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "alice")
		_, err := cfg.Exchange(clientCtx(s), q.Get("code"))
		if got := errorCode(err); got != "invalid_grant" {
			t.Errorf("Exchange without verifier: error %v (code %q); want invalid_grant", err, got)
		}
	})
	t.Run("code with wrong verifier", func(t *testing.T) {
		cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
		q := approve(t, s, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "alice")
		_, err := cfg.Exchange(clientCtx(s), q.Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
		if got := errorCode(err); got != "invalid_grant" {
			t.Errorf("Exchange with wrong verifier: error %v (code %q); want invalid_grant", err, got)
		}
	})
	t.Run("confidential client without PKCE", func(t *testing.T) {
		cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
		resp, err := s.Client().Get(cfg.AuthCodeURL(state))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			// fosite checks at the token endpoint: the code is refused.
			q := approve(t, s, cfg.AuthCodeURL(state), "alice")
			if _, err := cfg.Exchange(clientCtx(s), q.Get("code")); err == nil {
				t.Error("a code issued without PKCE was redeemed")
			}
		}
	})
	t.Run("no verifier after a failed attempt", func(t *testing.T) {
		// fosite drops the PKCE record before checking the verifier; the
		// server must still refuse a second try without one.
		cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
		q := approve(t, s, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "alice")
		_, _ = cfg.Exchange(clientCtx(s), q.Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
		if _, err := cfg.Exchange(clientCtx(s), q.Get("code")); err == nil {
			t.Error("the code was redeemed without a verifier after a failed attempt")
		}
	})

	refusals := []struct {
		name   string
		client string
		opts   []oauth2.AuthCodeOption
	}{
		{"public client without challenge", publicID, nil},
		{"plain method", confID, []oauth2.AuthCodeOption{
			oauth2.SetAuthURLParam("code_challenge", verifier),
			oauth2.SetAuthURLParam("code_challenge_method", "plain"),
		}},
		{"challenge without method", publicID, []oauth2.AuthCodeOption{
			oauth2.SetAuthURLParam("code_challenge", verifier),
		}},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			cfg := oauthConfig(s, tt.client, oauth2.AuthStyleInParams)
			resp, err := s.Client().Get(cfg.AuthCodeURL(state, tt.opts...))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("error") != "invalid_request" {
				t.Errorf("authorize: status %d, redirect %v; want 303 with error=invalid_request", resp.StatusCode, loc)
			}
		})
	}
}

func TestConsentPage(t *testing.T) {
	o := testOptions()
	o.Users = map[string]string{"alice": "Alice Liddell"}
	s := newServer(t, o)
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	authURL := cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))

	t.Run("headers", func(t *testing.T) {
		resp, err := s.Client().Get(authURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for k, want := range map[string]string{
			"X-Frame-Options": "DENY",
			"Cache-Control":   "no-store",
			"Content-Type":    "text/html; charset=utf-8",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s = %q; want %q", k, got, want)
			}
		}
		if got := resp.Header.Get("Content-Security-Policy"); !strings.Contains(got, "frame-ancestors 'none'") {
			t.Errorf("Content-Security-Policy = %q; want frame-ancestors 'none'", got)
		}
	})
	t.Run("deny", func(t *testing.T) {
		resp := getConsent(t, s, authURL).submit(t, s, "deny")
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("error") != "access_denied" {
			t.Errorf("deny: status %d, redirect %v; want 303 with error=access_denied", resp.StatusCode, loc)
		}
	})
	users := []struct {
		name, user string
	}{
		{"empty user", ""},
		{"unknown user", "mallory"},
		{"malformed user", "al ice<script>"},
	}
	for _, tt := range users {
		t.Run(tt.name, func(t *testing.T) {
			f := getConsent(t, s, authURL)
			f.values.Set("user", tt.user)
			resp := f.submit(t, s, "approve")
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `id="error"`) {
				t.Errorf("approve as %q: status %d; want 400 with an error message", tt.user, resp.StatusCode)
			}
			if strings.Contains(string(body), "<script>") {
				t.Errorf("consent page reflects the user name unescaped")
			}
		})
	}
	t.Run("unknown client", func(t *testing.T) {
		c := oauthConfig(s, "nobody", oauth2.AuthStyleInHeader)
		resp, err := s.Client().Get(c.AuthCodeURL("state-0123456789"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusSeeOther || resp.StatusCode == http.StatusOK {
			t.Errorf("authorize for unknown client: status %d; want an error page, no redirect", resp.StatusCode)
		}
	})
	t.Run("unregistered redirect", func(t *testing.T) {
		c := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
		c.RedirectURL = "https://evil.example/callback"
		resp, err := s.Client().Get(c.AuthCodeURL("state-0123456789"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); strings.Contains(loc, "evil.example") {
			t.Errorf("authorize redirected to an unregistered URI %q", loc)
		}
	})
	t.Run("loopback redirect on any port", func(t *testing.T) {
		c := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
		c.RedirectURL = "http://127.0.0.1:43210/callback"
		f := getConsent(t, s, c.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		f.values.Set("user", "alice")
		resp := f.submit(t, s, "approve")
		if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, c.RedirectURL+"?") {
			t.Errorf("redirect %q; want to %s", loc, c.RedirectURL)
		}
	})
}

func TestUserinfo(t *testing.T) {
	o := testOptions()
	o.Users = map[string]string{"alice": "Alice Liddell", "bob": ""}
	s := newServer(t, o)
	alice := issue(t, s, confID, "alice")
	bob := issue(t, s, publicID, "bob")

	tests := []struct {
		name       string
		auth       string
		wantStatus int
		want       map[string]any
	}{
		{"display name", "Bearer " + alice.AccessToken, 200, map[string]any{
			"sub": "alice", "name": "Alice Liddell", "preferred_username": "alice", "scope": "read chat:write"}},
		{"name defaults to user", "bearer " + bob.AccessToken, 200, map[string]any{
			"sub": "bob", "name": "bob", "preferred_username": "bob", "scope": "read chat:write"}},
		{"no token", "", 401, map[string]any{"error": "invalid_request", "error_description": "A bearer token is required."}},
		{"refresh token", "Bearer " + alice.RefreshToken, 401, map[string]any{
			"error": "invalid_token", "error_description": "The access token is invalid, expired or revoked."}},
		{"garbage", "Bearer ory_at_x.y", 401, map[string]any{
			"error": "invalid_token", "error_description": "The access token is invalid, expired or revoked."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, s.UserinfoURL(), nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := s.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			var got map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	s := newServer(t, testOptions())
	resp, err := s.Client().Get(s.URL() + PathMetadata)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var md struct {
		Issuer     string   `json:"issuer"`
		Token      string   `json:"token_endpoint"`
		Revocation string   `json:"revocation_endpoint"`
		Methods    []string `json:"code_challenge_methods_supported"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
		t.Fatal(err)
	}
	want := struct {
		Issuer     string   `json:"issuer"`
		Token      string   `json:"token_endpoint"`
		Revocation string   `json:"revocation_endpoint"`
		Methods    []string `json:"code_challenge_methods_supported"`
	}{s.URL(), s.TokenURL(), s.RevokeURL(), []string{"S256"}}
	if diff := cmp.Diff(want, md); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
}

func TestIssueGrant(t *testing.T) {
	s := newServer(t, testOptions())
	s.FailNext(5, http.StatusServiceUnavailable) // knobs do not apply to IssueGrant
	s.SetInvalidClient(true)
	for _, id := range []string{confID, publicID} {
		tok, err := s.IssueGrant(id, "carol", []string{"write"})
		if err != nil {
			t.Fatalf("IssueGrant(%s): %v", id, err)
		}
		if user, scopes, active := s.Introspect(tok.AccessToken); !active || user != "carol" || len(scopes) != 1 || scopes[0] != "write" {
			t.Errorf("Introspect = %q, %v, %v; want carol, [write], true", user, scopes, active)
		}
		if tok.RefreshToken == "" || tok.Expiry.IsZero() || tok.TokenType != "bearer" {
			t.Errorf("token: refresh %t, expiry %v, type %q; want refresh, expiry, bearer", tok.RefreshToken != "", tok.Expiry, tok.TokenType)
		}
	}
	if got := s.Stats(); got != (Stats{}) {
		t.Errorf("Stats after IssueGrant = %+v; want zero", got)
	}

	errs := []struct {
		name, client, user string
		scopes             []string
		want               string
	}{
		{"unknown client", "nobody", "carol", nil, "unknown client"},
		{"scope not allowed", confID, "carol", []string{"admin"}, "invalid_scope"},
		{"bad user", confID, "", nil, "must not be empty"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.IssueGrant(tt.client, tt.user, tt.scopes)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("IssueGrant error %v; want one mentioning %q", err, tt.want)
			}
		})
	}
}
