package oauth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// fakeSecret is the client secret fake providers expect.
const fakeSecret = "fake-secret-0123456789"

// fakeProvider starts a TLS server with h and returns a Provider for preset
// whose endpoints mod points at the server (base is its URL).
func fakeProvider(t *testing.T, preset string, h http.HandlerFunc, mod func(c *ProviderConfig, base string)) *Provider {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c := presetConfig(preset)
	c.Timeout = 2 * time.Second
	mod(&c, srv.URL)
	p, err := NewProvider("fake", c, fakeSecret, testHTTPClient(t, pool))
	if err != nil {
		t.Fatalf("NewProvider: %v", err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return p
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	writeBody(w, status, "application/json", body)
}

// bearer returns the bearer token of r, or "".
func bearer(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if scheme != "Bearer" {
		return ""
	}
	return tok
}

// basicOK reports whether r carries the fake client's HTTP Basic
// credentials.
func basicOK(r *http.Request) bool {
	id, secret, ok := r.BasicAuth()
	return ok && id == "client-123" && secret == fakeSecret
}

// recorder keeps the last value seen by a handler.
type recorder struct {
	mu   sync.Mutex
	last string
}

func (r *recorder) set(s string) { r.mu.Lock(); r.last = s; r.mu.Unlock() }
func (r *recorder) get() string  { r.mu.Lock(); defer r.mu.Unlock(); return r.last }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v; want %v", what, err, want)
	}
}

func TestSlackQuirks(t *testing.T) {
	var revoked recorder
	p := fakeProvider(t, "slack", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/oauth.v2.access":
			if !basicOK(r) || r.ParseForm() != nil {
				writeJSON(w, 200, `{"ok":false,"error":"invalid_client_id"}`)
				return
			}
			switch f := r.PostForm; {
			case f.Get("code") == "good" && f.Get("code_verifier") == "v-1":
				writeJSON(w, 200, `{"ok":true,"app_id":"A1","access_token":"xoxb-bot","token_type":"bot","scope":"commands",
					"team":{"id":"T1","name":"Acme"},"authed_user":{"id":"U123","scope":"chat:write,channels:read",
					"access_token":"xoxp-user","token_type":"user","refresh_token":"xoxe-1","expires_in":43200}}`)
			case f.Get("code") == "used":
				writeJSON(w, 200, `{"ok":false,"error":"code_already_used"}`)
			case f.Get("refresh_token") == "rt-dead":
				writeJSON(w, 200, `{"ok":false,"error":"invalid_refresh_token"}`)
			case f.Get("refresh_token") == "rt-slow":
				writeJSON(w, 200, `{"ok":false,"error":"ratelimited"}`)
			case f.Get("refresh_token") == "rt-ok" && f.Get("grant_type") == "refresh_token":
				writeJSON(w, 200, `{"ok":true,"access_token":"xoxe.xoxp-2","token_type":"user","refresh_token":"xoxe-2",
					"expires_in":43200,"scope":"chat:write,channels:read"}`)
			default:
				writeJSON(w, 200, `{"ok":false,"error":"invalid_arguments"}`)
			}
		case "/api/auth.revoke":
			body, _ := io.ReadAll(r.Body)
			revoked.set(bearer(r))
			switch {
			case r.Method != http.MethodPost || len(body) != 0:
				writeJSON(w, 200, `{"ok":false,"error":"invalid_arguments"}`)
			case bearer(r) == "xoxp-live":
				writeJSON(w, 200, `{"ok":true,"revoked":true}`)
			case bearer(r) == "xoxp-gone":
				writeJSON(w, 200, `{"ok":false,"error":"token_revoked"}`)
			default:
				writeJSON(w, 200, `{"ok":false,"error":"not_allowed_token_type"}`)
			}
		case "/api/auth.test":
			if r.Method == http.MethodPost && bearer(r) == "xoxp-live" {
				writeJSON(w, 200, `{"ok":true,"url":"https://acme.slack.com/","team":"Acme","user":"ada","team_id":"T1","user_id":"U123"}`)
				return
			}
			writeJSON(w, 200, `{"ok":false,"error":"invalid_auth"}`)
		default:
			http.NotFound(w, r)
		}
	}, func(c *ProviderConfig, base string) {
		c.TokenURL = base + "/api/oauth.v2.access"
		c.RevocationURL = base + "/api/auth.revoke"
		c.UserinfoURL = base + "/api/auth.test"
	})
	ctx := ctxT(t)

	tok, err := p.Exchange(ctx, "good", "v-1", "https://connect.example/cb")
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.AccessToken != "xoxp-user" || tok.RefreshToken != "xoxe-1" || tok.TokenType != "user" {
		t.Errorf("token = %q/%q/%q; want the user token from authed_user", tok.AccessToken, tok.RefreshToken, tok.TokenType)
	}
	if d := time.Until(tok.Expiry); d < 11*time.Hour || d > 12*time.Hour {
		t.Errorf("expiry in %s; want about 12h", d)
	}
	if got := tok.Extra("scope"); got != "chat:write channels:read" {
		t.Errorf(`Extra("scope") = %v; want the user scopes space-separated`, got)
	}
	if team, _ := tok.Extra("team").(map[string]any); team["id"] != "T1" {
		t.Errorf(`Extra("team") = %v; want the top-level team kept`, tok.Extra("team"))
	}
	_, err = p.Exchange(ctx, "used", "v-1", "https://connect.example/cb")
	wantErr(t, "used code", err, ErrInvalidCode)

	_, err = p.refresh(ctx, "rt-dead")
	wantErr(t, "dead refresh token", err, errInvalidGrant)
	_, err = p.refresh(ctx, "rt-slow")
	wantErr(t, "rate limited refresh", err, injector.ErrProviderUnavailable)
	nt, err := p.refresh(ctx, "rt-ok")
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	g := merge(&store.Grant{RefreshToken: "rt-ok", Scopes: []string{"x"}}, nt)
	if g.AccessToken != "xoxe.xoxp-2" || g.RefreshToken != "xoxe-2" || strings.Join(g.Scopes, " ") != "chat:write channels:read" {
		t.Errorf("merged grant = %q/%q/%q; want the rotated tokens and the comma-separated scopes split", g.AccessToken, g.RefreshToken, g.Scopes)
	}

	if err := p.Revoke(ctx, "xoxp-live", "access_token"); err != nil {
		t.Errorf("Revoke live token: %v", err)
	}
	if err := p.Revoke(ctx, "xoxp-gone", ""); err != nil {
		t.Errorf("Revoke revoked token: %v; want success", err)
	}
	wantErr(t, "Revoke refused", p.Revoke(ctx, "xoxb-other", ""), ErrRevocationRefused)
	if err := p.RevokeGrant(ctx, "xoxp-live", "xoxe-1"); err != nil || revoked.get() != "xoxp-live" {
		t.Errorf("RevokeGrant: %v, presented %q; want the access token as bearer", err, revoked.get())
	}

	if acct, err := p.Account(ctx, "xoxp-live"); err != nil || acct != "U123" {
		t.Errorf("Account = %q, %v; want U123", acct, err)
	}
	_, err = p.Account(ctx, "xoxp-dead")
	wantErr(t, "Account with ok:false", err, injector.ErrProviderMisconfigured)
}

func TestGitHubQuirks(t *testing.T) {
	var revoked recorder
	h := func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/login/oauth/access_token":
			if r.Header.Get("Accept") != "application/json" {
				// GitHub answers a form unless JSON is asked for; this fake
				// refuses, to prove the header is sent.
				http.Error(w, "want Accept: application/json", http.StatusNotAcceptable)
				return
			}
			r.ParseForm()
			f := r.PostForm
			switch {
			case f.Get("client_id") != "client-123" || f.Get("client_secret") != fakeSecret:
				writeJSON(w, 200, `{"error":"incorrect_client_credentials"}`)
			case f.Get("code") == "good":
				writeJSON(w, 200, `{"access_token":"ghu_1","expires_in":28800,"refresh_token":"ghr_1","refresh_token_expires_in":15897600,"scope":"","token_type":"bearer"}`)
			case f.Get("refresh_token") == "ghr_dead":
				writeJSON(w, 200, `{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}`)
			default:
				writeJSON(w, 200, `{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}`)
			}
		case "/applications/client-123/grant":
			var body struct {
				AccessToken string `json:"access_token"`
			}
			json.NewDecoder(r.Body).Decode(&body)
			revoked.set(body.AccessToken)
			switch {
			case r.Method != http.MethodDelete || !basicOK(r) || r.Header.Get("Content-Type") != "application/json":
				writeJSON(w, 404, `{"message":"Not Found"}`)
			case body.AccessToken == "ghu_1":
				w.WriteHeader(http.StatusNoContent)
			default:
				writeJSON(w, 422, `{"message":"Validation Failed"}`)
			}
		case "/user":
			if bearer(r) == "ghu_1" && r.Header.Get("User-Agent") != "" {
				writeJSON(w, 200, `{"login":"octocat","id":583231}`)
				return
			}
			writeJSON(w, 401, `{"message":"Requires authentication"}`)
		default:
			http.NotFound(w, r)
		}
	}
	mod := func(c *ProviderConfig, base string) {
		c.AuthorizationURL = base + "/login/oauth/authorize"
		c.TokenURL = base + "/login/oauth/access_token"
		c.RevocationURL = base + "/applications/{client_id}/grant"
		c.UserinfoURL = base + "/user"
	}
	p := fakeProvider(t, "github", h, mod)
	ctx := ctxT(t)

	tok, err := p.Exchange(ctx, "good", "", "")
	if err != nil || tok.AccessToken != "ghu_1" || tok.RefreshToken != "ghr_1" {
		t.Fatalf("Exchange = %+v, %v; want ghu_1/ghr_1", tok, err)
	}
	_, err = p.Exchange(ctx, "stale", "", "")
	wantErr(t, "bad_verification_code with status 200", err, ErrInvalidCode)
	_, err = p.refresh(ctx, "ghr_dead")
	wantErr(t, "bad_refresh_token with status 200", err, errInvalidGrant)

	c := p.Config()
	wrong, err := NewProvider("fake", c, "wrong-secret", p.HTTPClient())
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrong.Exchange(ctx, "good", "", "")
	wantErr(t, "incorrect_client_credentials", err, injector.ErrProviderMisconfigured)

	if err := p.RevokeGrant(ctx, "ghu_1", "ghr_1"); err != nil || revoked.get() != "ghu_1" {
		t.Errorf("RevokeGrant: %v, presented %q; want ghu_1 deleted", err, revoked.get())
	}
	wantErr(t, "Revoke unknown token", p.Revoke(ctx, "ghu_unknown", ""), ErrRevocationRefused)
	if acct, err := p.Account(ctx, "ghu_1"); err != nil || acct != "octocat" {
		t.Errorf("Account = %q, %v; want octocat", acct, err)
	}
	_, err = p.Account(ctx, "ghu_expired")
	wantErr(t, "Account with a 401", err, injector.ErrProviderMisconfigured)
}

func TestNotionQuirks(t *testing.T) {
	p := fakeProvider(t, "notion", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		if r.Body != nil && r.Header.Get("Content-Type") == "application/json" {
			json.NewDecoder(r.Body).Decode(&body)
		}
		switch r.URL.Path {
		case "/v1/oauth/token":
			switch {
			case !basicOK(r) || body == nil || body["client_secret"] != "":
				writeJSON(w, 401, `{"error":"invalid_client"}`)
			case body["grant_type"] == "authorization_code" && body["code"] == "good" && body["redirect_uri"] == "https://connect.example/cb":
				writeJSON(w, 200, `{"access_token":"ntn_1","token_type":"bearer","refresh_token":"nrt_1","bot_id":"b-1",
					"workspace_name":"Acme","workspace_id":"w-1","owner":{"type":"user","user":{"id":"u-1"}}}`)
			case body["grant_type"] == "refresh_token" && body["refresh_token"] == "nrt_1":
				writeJSON(w, 200, `{"access_token":"ntn_2","token_type":"bearer","refresh_token":"nrt_2"}`)
			default:
				writeJSON(w, 400, `{"error":"invalid_grant","error_description":"Invalid code."}`)
			}
		case "/v1/oauth/revoke":
			if basicOK(r) && body["token"] == "ntn_2" && r.Header.Get("Notion-Version") != "" {
				writeJSON(w, 200, `{"request_id":"r-1"}`)
				return
			}
			writeJSON(w, 400, `{"object":"error","status":400,"code":"validation_error"}`)
		case "/v1/users/me":
			if bearer(r) == "ntn_2" && r.Header.Get("Notion-Version") != "" {
				writeJSON(w, 200, `{"object":"user","type":"bot","bot":{"owner":{"type":"user","user":{"object":"user","id":"u-1","person":{"email":"ada@example.com"}}}}}`)
				return
			}
			writeJSON(w, 400, `{"object":"error","status":400,"code":"missing_version"}`)
		default:
			http.NotFound(w, r)
		}
	}, func(c *ProviderConfig, base string) {
		c.TokenURL = base + "/v1/oauth/token"
		c.RevocationURL = base + "/v1/oauth/revoke"
		c.UserinfoURL = base + "/v1/users/me"
	})
	ctx := ctxT(t)
	tok, err := p.Exchange(ctx, "good", "", "https://connect.example/cb")
	if err != nil || tok.AccessToken != "ntn_1" || tok.Extra("workspace_name") != "Acme" {
		t.Fatalf("Exchange = %+v, %v; want ntn_1 with the workspace in Extra", tok, err)
	}
	_, err = p.Exchange(ctx, "bad", "", "https://connect.example/cb")
	wantErr(t, "bad code", err, ErrInvalidCode)
	nt, err := p.refresh(ctx, "nrt_1")
	if err != nil || nt.AccessToken != "ntn_2" || nt.RefreshToken != "nrt_2" {
		t.Fatalf("refresh = %+v, %v; want the rotated pair", nt, err)
	}
	if acct, err := p.Account(ctx, "ntn_2"); err != nil || acct != "u-1" {
		t.Errorf("Account = %q, %v; want u-1", acct, err)
	}
	if err := p.RevokeGrant(ctx, "ntn_2", "nrt_2"); err != nil {
		t.Errorf("RevokeGrant: %v", err)
	}
}

func TestDropboxAndLinearQuirks(t *testing.T) {
	var revoked recorder
	dropbox := fakeProvider(t, "dropbox", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method != http.MethodPost || len(body) != 0:
			writeJSON(w, 400, `{"error_summary":"bad request"}`)
		case r.URL.Path == "/2/auth/token/revoke":
			revoked.set(bearer(r))
			writeJSON(w, 200, `null`)
		case r.URL.Path == "/2/users/get_current_account" && bearer(r) == "sl.live":
			writeJSON(w, 200, `{"account_id":"dbid:1","email":"ada@example.com","name":{"display_name":"Ada"}}`)
		default:
			writeJSON(w, 401, `{"error_summary":"invalid_access_token/"}`)
		}
	}, func(c *ProviderConfig, base string) {
		c.TokenURL = base + "/oauth2/token"
		c.RevocationURL = base + "/2/auth/token/revoke"
		c.UserinfoURL = base + "/2/users/get_current_account"
	})
	ctx := ctxT(t)
	if err := dropbox.RevokeGrant(ctx, "sl.live", "refresh-1"); err != nil || revoked.get() != "sl.live" {
		t.Errorf("Dropbox RevokeGrant: %v, presented %q; want the access token as bearer", err, revoked.get())
	}
	if acct, err := dropbox.Account(ctx, "sl.live"); err != nil || acct != "ada@example.com" {
		t.Errorf("Dropbox Account = %q, %v", acct, err)
	}

	linear := fakeProvider(t, "linear", func(w http.ResponseWriter, r *http.Request) {
		var q struct{ Query string }
		json.NewDecoder(r.Body).Decode(&q)
		switch {
		case r.URL.Path != "/graphql" || r.Method != http.MethodPost || q.Query != "{ viewer { email } }":
			writeJSON(w, 400, `{"errors":[{"message":"bad query"}]}`)
		case bearer(r) == "lin_oauth_1":
			writeJSON(w, 200, `{"data":{"viewer":{"email":"ada@example.com"}}}`)
		default:
			writeJSON(w, 200, `{"errors":[{"message":"Authentication required"}],"data":null}`)
		}
	}, func(c *ProviderConfig, base string) {
		c.TokenURL = base + "/oauth/token"
		c.UserinfoURL = base + "/graphql"
	})
	if acct, err := linear.Account(ctx, "lin_oauth_1"); err != nil || acct != "ada@example.com" {
		t.Errorf("Linear Account = %q, %v", acct, err)
	}
	_, err := linear.Account(ctx, "lin_other")
	wantErr(t, "Linear Account with GraphQL errors", err, ErrNoAccount)
}

func TestHubSpotQuirks(t *testing.T) {
	p := fakeProvider(t, "hubspot", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		f := r.PostForm
		if r.Header.Get("Authorization") != "" || f.Get("client_id") != "client-123" || f.Get("client_secret") != fakeSecret {
			writeJSON(w, 401, `{"status":"BAD_CLIENT_ID","message":"bad client"}`)
			return
		}
		switch r.URL.Path {
		case "/oauth/v3/token":
			switch f.Get("refresh_token") {
			case "rt-ok":
				writeJSON(w, 200, `{"token_type":"bearer","refresh_token":"rt-ok","access_token":"at-2","expires_in":1800,"status":"ok"}`)
			default:
				writeJSON(w, 400, `{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token"}`)
			}
		case "/oauth/v3/token/introspect":
			if f.Get("token") == "at-2" && f.Get("token_type_hint") == "access_token" {
				writeJSON(w, 200, `{"active":true,"token_use":"access_token","user":"ada@example.com","hub_id":42}`)
				return
			}
			writeJSON(w, 400, `{"category":"VALIDATION_ERROR","message":"Token is invalid"}`)
		default:
			http.NotFound(w, r)
		}
	}, func(c *ProviderConfig, base string) {
		c.TokenURL = base + "/oauth/v3/token"
		c.RevocationURL = base + "/oauth/v3/token/revoke"
		c.UserinfoURL = base + "/oauth/v3/token/introspect"
	})
	ctx := ctxT(t)
	tok, err := p.refresh(ctx, "rt-ok")
	if err != nil || tok.AccessToken != "at-2" {
		t.Fatalf("refresh = %+v, %v; want at-2 (a \"status\" field of a success is no error)", tok, err)
	}
	_, err = p.refresh(ctx, "rt-dead")
	wantErr(t, "BAD_REFRESH_TOKEN", err, errInvalidGrant)
	if acct, err := p.Account(ctx, "at-2"); err != nil || acct != "ada@example.com" {
		t.Errorf("Account = %q, %v; want the introspected user", acct, err)
	}
	c := p.Config()
	c.AccountField = "hub_id"
	hub, err := NewProvider("fake", c, fakeSecret, p.HTTPClient())
	if err != nil {
		t.Fatal(err)
	}
	if acct, err := hub.Account(ctx, "at-2"); err != nil || acct != "42" {
		t.Errorf("Account(hub_id) = %q, %v; want 42", acct, err)
	}
}

func TestFigmaRefreshPath(t *testing.T) {
	var paths recorder
	p := fakeProvider(t, "figma", func(w http.ResponseWriter, r *http.Request) {
		paths.set(r.URL.Path)
		r.ParseForm()
		switch {
		case !basicOK(r):
			writeJSON(w, 401, `{"error":"invalid_client"}`)
		case r.URL.Path == "/v1/oauth/token" && r.PostForm.Get("grant_type") == "authorization_code":
			writeJSON(w, 200, `{"user_id":"1","access_token":"figu_1","refresh_token":"figr_1","expires_in":7776000}`)
		case r.URL.Path == "/v1/oauth/refresh" && r.PostForm.Get("refresh_token") == "figr_1":
			writeJSON(w, 200, `{"access_token":"figu_2","expires_in":7776000}`)
		default:
			writeJSON(w, 400, `{"error":"invalid_grant"}`)
		}
	}, func(c *ProviderConfig, base string) { c.TokenURL = base + "/v1/oauth/token" })
	ctx := ctxT(t)
	if _, err := p.Exchange(ctx, "code", "", ""); err != nil || paths.get() != "/v1/oauth/token" {
		t.Errorf("Exchange: %v at %q; want /v1/oauth/token", err, paths.get())
	}
	tok, err := p.refresh(ctx, "figr_1")
	if err != nil || paths.get() != "/v1/oauth/refresh" || tok.AccessToken != "figu_2" || tok.RefreshToken != "figr_1" {
		t.Errorf("refresh = %+v, %v at %q; want figu_2 from /v1/oauth/refresh with figr_1 kept", tok, err, paths.get())
	}
}

func TestGoogleRevokeTokenOnly(t *testing.T) {
	var seen recorder
	p := fakeProvider(t, "google", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		seen.set(r.PostForm.Get("token"))
		switch {
		case r.Header.Get("Authorization") != "" || len(r.PostForm) != 1:
			writeJSON(w, 400, `{"error":"invalid_request"}`)
		case r.PostForm.Get("token") == "dead":
			writeJSON(w, 400, `{"error":"invalid_token","error_description":"Token expired or revoked"}`)
		case r.PostForm.Get("token") == "weird":
			writeJSON(w, 400, `{"error":"unsupported_token_type"}`)
		default:
			writeJSON(w, 200, `{}`)
		}
	}, func(c *ProviderConfig, base string) {
		c.TokenURL = base + "/token"
		c.RevocationURL = base + "/revoke"
	})
	ctx := ctxT(t)
	if err := p.RevokeGrant(ctx, "ya29.at", "1//rt"); err != nil || seen.get() != "1//rt" {
		t.Errorf("RevokeGrant: %v, presented %q; want the refresh token alone", err, seen.get())
	}
	if err := p.Revoke(ctx, "dead", "refresh_token"); err != nil {
		t.Errorf("Revoke of an invalid token: %v; want success (RFC 7009 section 2.2)", err)
	}
	wantErr(t, "unsupported_token_type", p.Revoke(ctx, "weird", ""), ErrRevocationRefused)
}

// customProvider returns a Provider without preset (RFC 7009 revocation
// with client_secret_basic, GET identity) for a fake server.
func customProvider(t *testing.T, h http.HandlerFunc, mod func(c *ProviderConfig)) *Provider {
	t.Helper()
	return fakeProvider(t, "", h, func(c *ProviderConfig, base string) {
		c.TokenURL = base + "/token"
		c.RevocationURL = base + "/revoke"
		c.UserinfoURL = base + "/userinfo"
		c.AuthStyle = AuthStyleHeader
		c.Timeout = 300 * time.Millisecond
		if mod != nil {
			mod(c)
		}
	})
}

func TestRevokeClassification(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    error // nil means success
	}{
		{"200", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }, nil},
		{"204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, nil},
		{"invalid_token", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 400, `{"error":"invalid_token"}`) }, nil},
		{"unsupported_token_type", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 400, `{"error":"unsupported_token_type"}`)
		}, ErrRevocationRefused},
		{"invalid_client", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 401, `{"error":"invalid_client"}`) }, ErrRevocationRefused},
		{"404 echoing the request", func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			writeBody(w, 404, "text/html", "no such page: "+r.PostForm.Encode())
		}, ErrRevocationRefused},
		{"redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/elsewhere", http.StatusFound) }, ErrRevocationRefused},
		{"503", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 503, `{"error":"temporarily_unavailable"}`) }, injector.ErrProviderUnavailable},
		{"429", func(w http.ResponseWriter, r *http.Request) { writeBody(w, 429, "", "") }, injector.ErrProviderUnavailable},
		{"500 html", func(w http.ResponseWriter, r *http.Request) { writeBody(w, 500, "text/html", "<p>oops</p>") }, injector.ErrProviderUnavailable},
		{"connection dropped", func(w http.ResponseWriter, r *http.Request) {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		}, injector.ErrProviderUnavailable},
		{"no answer within the timeout", func(w http.ResponseWriter, r *http.Request) {
			// Far beyond the provider's timeout, so that a loaded machine
			// cannot make the answer arrive in time.
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}, injector.ErrProviderUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var form url.Values
			var basic bool
			var mu sync.Mutex
			p := customProvider(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				r.ParseForm()
				form, basic = r.PostForm, basicOK(r)
				mu.Unlock()
				tt.handler(w, r)
			}, nil)
			err := p.Revoke(ctxT(t), echoedSecret, "refresh_token")
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Revoke = %v; want %v", err, tt.want)
			}
			if err != nil {
				if errors.Is(err, ErrRevocationRefused) == errors.Is(err, injector.ErrProviderUnavailable) {
					t.Errorf("error %v must be exactly one of refused and unavailable", err)
				}
				if strings.Contains(err.Error(), echoedSecret) || strings.Contains(err.Error(), fakeSecret) {
					t.Errorf("error text %q leaks a secret", err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if form.Get("token") != echoedSecret || form.Get("token_type_hint") != "refresh_token" || !basic {
				t.Errorf("request form %v, basic auth %v; want token, token_type_hint and client_secret_basic", form, basic)
			}
		})
	}

	p := customProvider(t, func(w http.ResponseWriter, r *http.Request) {}, func(c *ProviderConfig) { c.RevocationURL = "" })
	wantErr(t, "no revocation endpoint", p.Revoke(ctxT(t), "tok", ""), ErrNoRevocation)
	wantErr(t, "RevokeGrant without endpoint", p.RevokeGrant(ctxT(t), "at", "rt"), ErrNoRevocation)
}

func TestAccountCases(t *testing.T) {
	tests := []struct {
		name    string
		field   string
		status  int
		body    string
		want    string
		wantErr error
	}{
		{"sub by default", "", 200, `{"sub":"248289761001","email":"ada@example.com"}`, "248289761001", nil},
		{"dotted path", "data.email", 200, `{"data":{"gid":"1","email":"ada@example.com"}}`, "ada@example.com", nil},
		{"number", "id", 200, `{"id":583231}`, "583231", nil},
		{"missing field", "email", 200, `{"sub":"1"}`, "", ErrNoAccount},
		{"object", "data", 200, `{"data":{"a":1}}`, "", ErrNoAccount},
		{"control characters", "email", 200, `{"email":"ada\u0000@example.com"}`, "", ErrNoAccount},
		{"too long", "email", 200, `{"email":"` + strings.Repeat("a", maxAccountLen+1) + `"}`, "", ErrNoAccount},
		{"not JSON", "email", 200, `<html>`, "", ErrNoAccount},
		{"401", "email", 401, `{"error":"invalid_token"}`, "", injector.ErrProviderMisconfigured},
		{"403 without code", "email", 403, `forbidden`, "", injector.ErrProviderMisconfigured},
		{"502", "email", 502, `bad gateway`, "", injector.ErrProviderUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := customProvider(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || bearer(r) != "at-1" {
					writeJSON(w, 400, `{"error":"invalid_request"}`)
					return
				}
				writeJSON(w, tt.status, tt.body)
			}, func(c *ProviderConfig) { c.AccountField = tt.field })
			got, err := p.Account(ctxT(t), "at-1")
			if got != tt.want || (tt.wantErr == nil) != (err == nil) || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Account = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "at-1") {
				t.Errorf("error %q quotes the access token", err)
			}
		})
	}
	p := customProvider(t, func(w http.ResponseWriter, r *http.Request) {}, func(c *ProviderConfig) { c.UserinfoURL = "" })
	if got, err := p.Account(ctxT(t), "at-1"); got != "" || err != nil {
		t.Errorf("Account without userinfo URL = %q, %v; want \"\", nil", got, err)
	}
}

func TestExchangeClassification(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    error
	}{
		{"invalid_grant", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 400, `{"error":"invalid_grant"}`) }, ErrInvalidCode},
		{"invalid_client", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 401, `{"error":"invalid_client"}`) }, injector.ErrProviderMisconfigured},
		{"redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/x", http.StatusTemporaryRedirect) }, injector.ErrProviderMisconfigured},
		{"503", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 503, `{"error":"overloaded"}`) }, injector.ErrProviderUnavailable},
		{"200 without access token", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"token_type":"bearer"}`) }, injector.ErrProviderUnavailable},
		{"200 oversized", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"access_token":"`+strings.Repeat("a", maxTokenResponse)+`"}`)
		}, injector.ErrProviderUnavailable},
		{"400 echoing the request", func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			writeBody(w, 400, "text/plain", "bad: "+r.PostForm.Encode())
		}, injector.ErrProviderMisconfigured},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := customProvider(t, tt.handler, nil)
			tok, err := p.Exchange(ctxT(t), echoedSecret, "verifier-0123456789", "https://connect.example/cb")
			if tok != nil || !errors.Is(err, tt.want) {
				t.Fatalf("Exchange = %v, %v; want %v", tok != nil, err, tt.want)
			}
			wantOneClass(t, err, []error{ErrInvalidCode, injector.ErrProviderMisconfigured, injector.ErrProviderUnavailable}, echoedSecret, fakeSecret)
		})
	}
	_, err := customProvider(t, func(w http.ResponseWriter, r *http.Request) {}, nil).Exchange(ctxT(t), "", "", "")
	wantErr(t, "empty code", err, ErrInvalidCode)
}

func TestExchangeSendsVerifierOnlyWithPKCE(t *testing.T) {
	for _, pkce := range []bool{true, false} {
		var got recorder
		p := customProvider(t, func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			got.set(r.PostForm.Get("code_verifier") + "|" + r.PostForm.Get("redirect_uri") + "|" + r.PostForm.Get("grant_type"))
			writeJSON(w, 200, `{"access_token":"at","token_type":"bearer","expires_in":"3600"}`)
		}, func(c *ProviderConfig) { c.PKCE = ptr(pkce) })
		tok, err := p.Exchange(ctxT(t), "code-1", "verifier-1", "https://connect.example/cb")
		if err != nil {
			t.Fatalf("pkce %v: Exchange: %v", pkce, err)
		}
		want := "|https://connect.example/cb|authorization_code"
		if pkce {
			want = "verifier-1" + want
		}
		if got.get() != want {
			t.Errorf("pkce %v: sent %q; want %q", pkce, got.get(), want)
		}
		if tok.ExpiresIn != 3600 {
			t.Errorf("expires_in as a string: ExpiresIn = %d; want 3600", tok.ExpiresIn)
		}
	}
}

// TestSlackErrorClassification: Slack answers refresh failures with HTTP
// 200 and {"ok": false, "error": code}; each code is classified as a dead
// grant, a transient failure or a misconfiguration, never all alike.
func TestSlackErrorClassification(t *testing.T) {
	tests := []struct {
		code string
		want error
	}{
		{"invalid_refresh_token", errInvalidGrant},
		{"invalid_auth", errInvalidGrant},
		{"token_revoked", errInvalidGrant},
		{"token_expired", errInvalidGrant},
		{"account_inactive", errInvalidGrant},
		{"ratelimited", injector.ErrProviderUnavailable},
		{"request_timeout", injector.ErrProviderUnavailable},
		{"service_unavailable", injector.ErrProviderUnavailable},
		{"internal_error", injector.ErrProviderUnavailable},
		{"fatal_error", injector.ErrProviderUnavailable},
		{"invalid_client_id", injector.ErrProviderMisconfigured},
		{"bad_client_secret", injector.ErrProviderMisconfigured},
		{"invalid_grant_type", injector.ErrProviderMisconfigured},
		{"bad_redirect_uri", injector.ErrProviderMisconfigured},
		{"something_new", injector.ErrProviderMisconfigured}, // unknown: never kills a grant
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			p := fakeProvider(t, "slack", func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 200, `{"ok":false,"error":"`+tt.code+`"}`)
			}, func(c *ProviderConfig, base string) { c.TokenURL = base + "/api/oauth.v2.access" })
			_, err := p.refresh(ctxT(t), "xoxe-1")
			wantErr(t, tt.code, err, tt.want)
			for _, other := range []error{errInvalidGrant, injector.ErrProviderUnavailable, injector.ErrProviderMisconfigured} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("%s: error %v is also %v; want exactly one class", tt.code, err, other)
				}
			}
		})
	}
}

// TestPresentUnsure: after which failures the presented refresh token may
// have been spent (the provider may have rotated it) and after which the
// provider's answer says it issued nothing.
func TestPresentUnsure(t *testing.T) {
	drop := func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		unsure  bool
	}{
		{"503 with an OAuth error", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 503, `{"error":"temporarily_unavailable"}`)
		}, false},
		{"500", func(w http.ResponseWriter, r *http.Request) { writeBody(w, 500, "text/plain", "oops") }, false},
		{"429", func(w http.ResponseWriter, r *http.Request) { writeBody(w, 429, "", "") }, false},
		{"invalid_grant", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 400, `{"error":"invalid_grant"}`) }, false},
		{"502 from a gateway", func(w http.ResponseWriter, r *http.Request) { writeBody(w, 502, "text/html", "bad gateway") }, true},
		{"504 from a gateway", func(w http.ResponseWriter, r *http.Request) { writeBody(w, 504, "text/html", "timeout") }, true},
		{"connection dropped", drop, true},
		{"2xx without a token", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"token_type":"bearer"}`) }, true},
		{"no answer within the deadline", func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm() // with the body read, net/http notices the client leaving
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := customProvider(t, tt.handler, nil)
			_, unsure, err := p.present(ctxT(t), "rt-1", 600*time.Millisecond, nil)
			if err == nil || unsure != tt.unsure {
				t.Errorf("present = unsure %v, %v; want unsure %v and an error", unsure, err, tt.unsure)
			}
		})
	}
	t.Run("never sent", func(t *testing.T) {
		p := customProvider(t, func(http.ResponseWriter, *http.Request) {}, func(c *ProviderConfig) {
			c.TokenURL = "https://" + silentListener(t) + "/token"
		})
		_, unsure, err := p.present(ctxT(t), "rt-1", 5*time.Second, func() { t.Error("slow called for a request never sent") })
		if unsure || !errors.Is(err, errNotSent) {
			t.Errorf("present to a listener that never answers the handshake = unsure %v, %v; want errNotSent, not unsure", unsure, err)
		}
	})
}
