package oauthtest

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestRefreshRotationAndReuse(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	first := issue(t, s, confID, "alice")

	second, err := refresh(s, cfg, first.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh did not rotate the refresh token")
	}
	if second.AccessToken == first.AccessToken {
		t.Fatalf("refresh returned the same access token")
	}
	for name, tok := range map[string]string{"old": first.AccessToken, "new": second.AccessToken} {
		if user, _, active := s.Introspect(tok); !active || user != "alice" {
			t.Errorf("%s access token after refresh: active %v, user %q; want active alice", name, active, user)
		}
	}
	if got := s.Stats(); got.Refreshes != 1 || got.ReuseDetections != 0 {
		t.Fatalf("Stats = %+v; want 1 refresh, no reuse", got)
	}

	// Presenting the used refresh token again is reuse: refused, and the
	// whole family goes.
	_, err = refresh(s, cfg, first.RefreshToken)
	if got := errorCode(err); got != "invalid_grant" {
		t.Fatalf("reused refresh token: error %v (code %q); want invalid_grant", err, got)
	}
	if got := s.Stats().ReuseDetections; got != 1 {
		t.Errorf("ReuseDetections = %d; want 1", got)
	}
	_, err = refresh(s, cfg, second.RefreshToken)
	if got := errorCode(err); got != "invalid_grant" {
		t.Errorf("newest refresh token after reuse: error %v (code %q); want invalid_grant (family revoked)", err, got)
	}
	for name, tok := range map[string]string{"old": first.AccessToken, "new": second.AccessToken} {
		if _, _, active := s.Introspect(tok); active {
			t.Errorf("%s access token active after reuse; want revoked", name)
		}
	}
	if got := s.Stats(); got.ReuseDetections != 1 || got.Refreshes != 1 {
		t.Errorf("Stats = %+v; want still 1 reuse detection and 1 refresh (a revoked token is not a reuse)", got)
	}

	// Another grant of the same user is a different family and survives.
	other := issue(t, s, confID, "alice")
	if _, err := refresh(s, cfg, other.RefreshToken); err != nil {
		t.Errorf("refresh of an unrelated grant: %v", err)
	}
}

func TestReuseOfOlderGeneration(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, publicID, oauth2.AuthStyleInParams)
	gen := []*oauth2.Token{issue(t, s, publicID, "alice")}
	for range 3 {
		next, err := refresh(s, cfg, gen[len(gen)-1].RefreshToken)
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		gen = append(gen, next)
	}
	// Replay generation 1 (of 0..3): every token of every generation dies.
	if _, err := refresh(s, cfg, gen[1].RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("replay: error %v; want invalid_grant", err)
	}
	for i, tok := range gen {
		if _, _, active := s.Introspect(tok.AccessToken); active {
			t.Errorf("generation %d access token active after reuse; want revoked", i)
		}
	}
	if _, err := refresh(s, cfg, gen[3].RefreshToken); errorCode(err) != "invalid_grant" {
		t.Errorf("newest refresh token after reuse: error %v; want invalid_grant", err)
	}
}

func TestConcurrentRefreshOfOneToken(t *testing.T) {
	const n = 8
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")

	var wg sync.WaitGroup
	results := make([]*oauth2.Token, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = refresh(s, cfg, tok.RefreshToken)
		}()
	}
	wg.Wait()

	var winners []*oauth2.Token
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, results[i])
		case errorCode(err) != "invalid_grant":
			t.Errorf("refresh %d: error %v; want success or invalid_grant", i, err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d refreshes succeeded; want exactly 1", len(winners))
	}
	// The first loser's reuse revokes the family; the others then present
	// a token of a revoked grant, which is unknown rather than reused.
	if got := s.Stats(); got.Refreshes != 1 || got.ReuseDetections != 1 {
		t.Errorf("Stats = %+v; want 1 refresh, 1 reuse detection", got)
	}
	// The reuse revoked the family, including what the winner got.
	if _, _, active := s.Introspect(winners[0].AccessToken); active {
		t.Errorf("winner's access token active after concurrent reuse; want revoked")
	}
}

func TestRevokeAccessTokenOnRefresh(t *testing.T) {
	o := testOptions()
	o.RevokeAccessTokenOnRefresh = true
	s := newServer(t, o)
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInParams)
	first := issue(t, s, confID, "alice")
	second, err := refresh(s, cfg, first.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if _, _, active := s.Introspect(first.AccessToken); active {
		t.Errorf("old access token active after refresh; want revoked")
	}
	if _, _, active := s.Introspect(second.AccessToken); !active {
		t.Errorf("new access token inactive; want active")
	}
}

func TestRevocation(t *testing.T) {
	tests := []struct {
		name     string
		client   string
		which    string // "access" or "refresh"
		hint     string
		basic    bool
		wantCode int
		revoked  bool
	}{
		{"refresh token, basic auth", confID, "refresh", "", true, 200, true},
		{"refresh token, post auth, hint", confID, "refresh", "refresh_token", false, 200, true},
		{"access token, hint", confID, "access", "access_token", true, 200, true},
		{"public client", publicID, "refresh", "", false, 200, true},
		{"other client's token", otherID, "refresh", "", true, 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, testOptions())
			owner := tt.client
			if tt.client == otherID {
				owner = confID
			}
			tok := issue(t, s, owner, "alice")
			form := url.Values{"token": {tok.RefreshToken}}
			if tt.which == "access" {
				form.Set("token", tok.AccessToken)
			}
			if tt.hint != "" {
				form.Set("token_type_hint", tt.hint)
			}
			secret := map[string]string{confID: confSecret, otherID: otherSecret}[tt.client]
			id := ""
			switch {
			case tt.client == publicID:
				form.Set("client_id", publicID)
			case tt.basic:
				id = tt.client
			default:
				form.Set("client_id", tt.client)
				form.Set("client_secret", secret)
			}
			status, body := postForm(t, s, PathRevoke, form, id, secret)
			if status != tt.wantCode {
				t.Fatalf("revoke: status %d (%s); want %d", status, body, tt.wantCode)
			}
			_, _, active := s.Introspect(tok.AccessToken)
			if active == tt.revoked {
				t.Errorf("access token active = %v after revocation; want %v", active, !tt.revoked)
			}
			_, err := refresh(s, oauthConfig(s, owner, oauth2.AuthStyleInParams), tok.RefreshToken)
			if tt.revoked && errorCode(err) != "invalid_grant" {
				t.Errorf("refresh after revocation: error %v; want invalid_grant", err)
			}
			if !tt.revoked && err != nil {
				t.Errorf("refresh after refused revocation: %v; want success", err)
			}
			wantRevocations := int64(0)
			if tt.wantCode == 200 {
				wantRevocations = 1
			}
			if got := s.Stats(); got.Revocations != wantRevocations || got.ReuseDetections != 0 {
				t.Errorf("Stats = %+v; want %d revocations, no reuse", got, wantRevocations)
			}
		})
	}
}

func TestRevocationOfUnknownToken(t *testing.T) {
	s := newServer(t, testOptions())
	// RFC 7009 section 2.2: an invalid token is answered 200.
	status, body := postForm(t, s, PathRevoke, url.Values{"token": {"ory_rt_nope.nope"}}, confID, confSecret)
	if status != http.StatusOK {
		t.Errorf("revoke unknown token: status %d (%s); want 200", status, body)
	}
	status, _ = postForm(t, s, PathRevoke, url.Values{"token": {"x"}}, confID, "wrong-secret")
	if status != http.StatusUnauthorized {
		t.Errorf("revoke with wrong secret: status %d; want 401", status)
	}
	if got := s.Stats(); got.Revocations != 1 || got.FailedAuth != 1 {
		t.Errorf("Stats = %+v; want 1 revocation, 1 failed auth", got)
	}
}

func TestWrongClientCredentials(t *testing.T) {
	tests := []struct {
		name   string
		id     string
		secret string
		style  oauth2.AuthStyle
	}{
		{"wrong secret, basic", confID, "not-the-secret", oauth2.AuthStyleInHeader},
		{"wrong secret, post", confID, "not-the-secret", oauth2.AuthStyleInParams},
		{"other client's secret", confID, otherSecret, oauth2.AuthStyleInHeader},
		{"missing secret", confID, "", oauth2.AuthStyleInParams},
		{"unknown client", "nobody", "whatever-secret", oauth2.AuthStyleInHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, testOptions())
			tok := issue(t, s, confID, "alice")
			cfg := oauthConfig(s, confID, tt.style)
			cfg.ClientID, cfg.ClientSecret = tt.id, tt.secret
			_, err := refresh(s, cfg, tok.RefreshToken)
			if got := errorCode(err); got != "invalid_client" {
				t.Errorf("refresh: error %v (code %q); want invalid_client", err, got)
			}
			var re *oauth2.RetrieveError
			if errors.As(err, &re) && re.Response.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d; want 401", re.Response.StatusCode)
			}
			if got := s.Stats(); got.FailedAuth != 1 || got.Refreshes != 0 {
				t.Errorf("Stats = %+v; want 1 failed auth, no refresh", got)
			}
			// The grant is untouched.
			if _, err := refresh(s, oauthConfig(s, confID, oauth2.AuthStyleInHeader), tok.RefreshToken); err != nil {
				t.Errorf("refresh with the right secret afterwards: %v", err)
			}
		})
	}
}

func TestRefreshTokenOfAnotherClient(t *testing.T) {
	s := newServer(t, testOptions())
	tok := issue(t, s, confID, "alice")
	_, err := refresh(s, oauthConfig(s, otherID, oauth2.AuthStyleInHeader), tok.RefreshToken)
	if got := errorCode(err); got != "invalid_grant" {
		t.Errorf("refresh with another client: error %v (code %q); want invalid_grant", err, got)
	}
	if _, err := refresh(s, oauthConfig(s, confID, oauth2.AuthStyleInHeader), tok.RefreshToken); err != nil {
		t.Errorf("refresh by the owner afterwards: %v", err)
	}
}

func TestExpireAccessToken(t *testing.T) {
	s := newServer(t, testOptions())
	tok := issue(t, s, confID, "alice")
	if err := s.ExpireAccessToken(tok.AccessToken); err != nil {
		t.Fatalf("ExpireAccessToken: %v", err)
	}
	if _, _, active := s.Introspect(tok.AccessToken); active {
		t.Errorf("expired access token is active")
	}
	next, err := refresh(s, oauthConfig(s, confID, oauth2.AuthStyleInHeader), tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh after expiry: %v", err)
	}
	if _, _, active := s.Introspect(next.AccessToken); !active {
		t.Errorf("refreshed access token is inactive")
	}
	for _, bad := range []string{"", "garbage", tok.RefreshToken} {
		if err := s.ExpireAccessToken(bad); !errors.Is(err, ErrUnknownToken) {
			t.Errorf("ExpireAccessToken(%.8q…) = %v; want ErrUnknownToken", bad, err)
		}
	}
}

func TestTokenLifetimes(t *testing.T) {
	o := testOptions()
	o.AccessTokenTTL = 90 * time.Second
	o.RefreshTokenTTL = time.Hour
	s := newServer(t, o)
	tok := issue(t, s, confID, "alice")
	if tok.ExpiresIn < 85 || tok.ExpiresIn > 90 {
		t.Errorf("expires_in = %d; want about 90", tok.ExpiresIn)
	}
	s2 := newServer(t, testOptions())
	if tok := issue(t, s2, confID, "alice"); tok.ExpiresIn < 3590 || tok.ExpiresIn > 3600 {
		t.Errorf("default expires_in = %d; want about 3600", tok.ExpiresIn)
	}
}

func TestRevokeUser(t *testing.T) {
	s := newServer(t, testOptions())
	a1 := issue(t, s, confID, "alice")
	a2 := issue(t, s, publicID, "alice")
	b := issue(t, s, confID, "bob")
	if n := s.RevokeUser("alice"); n != 2 {
		t.Errorf("RevokeUser = %d; want 2", n)
	}
	for _, tok := range []*oauth2.Token{a1, a2} {
		if _, _, active := s.Introspect(tok.AccessToken); active {
			t.Errorf("alice's token active after RevokeUser")
		}
	}
	if _, err := refresh(s, oauthConfig(s, confID, oauth2.AuthStyleInHeader), a1.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Errorf("refresh after RevokeUser: %v; want invalid_grant", err)
	}
	if _, _, active := s.Introspect(b.AccessToken); !active {
		t.Errorf("bob's token inactive after RevokeUser(alice)")
	}
	if n := s.RevokeUser("alice"); n != 0 {
		t.Errorf("second RevokeUser = %d; want 0", n)
	}
}

func TestNoSecretInLogs(t *testing.T) {
	var logs syncBuffer
	o := testOptions()
	o.Logger = newTestLogger(&logs)
	s := newServer(t, o)
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")
	next, err := refresh(s, cfg, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = refresh(s, cfg, tok.RefreshToken) // reuse
	bad := *cfg
	bad.ClientSecret = "wrong-secret-canary"
	_, _ = refresh(s, &bad, next.RefreshToken)
	postForm(t, s, PathRevoke, url.Values{"token": {next.AccessToken}}, confID, confSecret)

	out := logs.String()
	if !strings.Contains(out, "refresh token reuse") {
		t.Errorf("logs do not report the reuse:\n%s", out)
	}
	for name, secret := range map[string]string{
		"access": tok.AccessToken, "refresh": tok.RefreshToken, "new access": next.AccessToken,
		"new refresh": next.RefreshToken, "client secret": confSecret, "wrong secret": "wrong-secret-canary",
	} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain the %s", name)
		}
	}
}

func TestTokenEndpointRefusals(t *testing.T) {
	s := newServer(t, testOptions())
	tests := []struct {
		name     string
		form     url.Values
		wantCode int
	}{
		{"client_credentials grant", url.Values{"grant_type": {"client_credentials"}}, http.StatusBadRequest},
		{"password grant", url.Values{"grant_type": {"password"}, "username": {"a"}, "password": {"b"}}, http.StatusBadRequest},
		{"no grant type", url.Values{"scope": {"read"}}, http.StatusBadRequest},
		{"unknown code", url.Values{"grant_type": {"authorization_code"}, "code": {"ory_ac_x.y"}, "redirect_uri": {redirectURI}}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := postForm(t, s, PathToken, tt.form, confID, confSecret)
			if status != tt.wantCode || strings.Contains(body, "access_token") {
				t.Errorf("status %d body %s; want %d without tokens", status, body, tt.wantCode)
			}
		})
	}
	resp, err := s.Client().Get(s.TokenURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET /token: status %d; want 400", resp.StatusCode)
	}
}

func TestIssuedTo(t *testing.T) {
	s := newServer(t, testOptions())
	tok := issue(t, s, confID, "alice")
	if user, ok := s.IssuedTo(tok.AccessToken); !ok || user != "alice" {
		t.Errorf("IssuedTo(live token) = %q, %v; want alice", user, ok)
	}
	if err := s.ExpireAccessToken(tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	if user, ok := s.IssuedTo(tok.AccessToken); !ok || user != "alice" {
		t.Errorf("IssuedTo(expired token) = %q, %v; want alice", user, ok)
	}
	for _, bad := range []string{"", "ory_at_forged.forged", tok.RefreshToken} {
		if _, ok := s.IssuedTo(bad); ok {
			t.Errorf("IssuedTo(%q) = ok; want not issued", bad)
		}
	}
	s.RevokeUser("alice")
	if _, ok := s.IssuedTo(tok.AccessToken); ok {
		t.Errorf("IssuedTo(revoked token) = ok; want not held")
	}
}
