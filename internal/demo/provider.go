package demo

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// authServer is the demo's OAuth 2.0 authorization server: just enough of one
// to tell the story truthfully, and small enough that the production binary
// links no test server (the project's test suites use a fosite-based one in
// internal/testkit/oauthtest).
//
// It serves one confidential client. /authorize issues a code for the user
// named in the request (the demo has no sign-in page: the person "approves"
// by the demo asking), bound to an S256 PKCE challenge; /token redeems a code
// once, and rotates refresh tokens on every use, revoking the whole grant when
// a spent refresh token comes back (reuse detection, as strict providers do);
// /revoke is RFC 7009. Access tokens live for an hour unless expired by hand.
//
// All methods are safe for concurrent use.
type authServer struct {
	clientID, clientSecret, redirectURI string

	srv *http.Server
	ln  net.Listener

	mu        sync.Mutex
	codes     map[string]pendingCode // code → what it was issued for
	grants    map[string]grantInfo   // grant id → whose it is
	access    map[string]accessToken // access token → its grant and expiry
	refresh   map[string]string      // live refresh token → grant id
	spent     map[string]string      // rotated-away refresh token → grant id
	refreshes int
}

type pendingCode struct {
	user, challenge string
	scopes          []string
	expires         time.Time
}

type grantInfo struct {
	user   string
	scopes []string
}

type accessToken struct {
	grant   string
	expires time.Time
}

// Demo provider endpoints and lifetimes.
const (
	pathAuthorize = "/authorize"
	pathToken     = "/token"
	pathRevoke    = "/revoke"
	// codeLifetime is short, as RFC 6749 section 4.1.2 recommends.
	codeLifetime = time.Minute
	// accessLifetime is what a typical provider gives.
	accessLifetime = time.Hour
)

// startProvider serves the provider over TLS on a loopback port with cert.
func startAuthServer(cert tls.Certificate, clientID, clientSecret, redirectURI string) (*authServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	p := &authServer{
		clientID: clientID, clientSecret: clientSecret, redirectURI: redirectURI,
		ln:      ln,
		codes:   map[string]pendingCode{},
		grants:  map[string]grantInfo{},
		access:  map[string]accessToken{},
		refresh: map[string]string{},
		spent:   map[string]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathAuthorize, p.authorize)
	mux.HandleFunc("POST "+pathToken, p.token)
	mux.HandleFunc("POST "+pathRevoke, p.revoke)
	p.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = p.srv.ServeTLS(ln, "", "") }()
	return p, nil
}

// URL is the provider's base URL.
func (p *authServer) URL() string {
	return fmt.Sprintf("https://localhost:%d", p.ln.Addr().(*net.TCPAddr).Port)
}

// TokenURL is the token endpoint.
func (p *authServer) TokenURL() string { return p.URL() + pathToken }

// Close stops the provider.
func (p *authServer) Close() error { return p.srv.Close() }

// Refreshes is how many refresh-token grants the provider has answered.
func (p *authServer) Refreshes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refreshes
}

// IssueGrant runs the authorization-code flow with PKCE for user, as the
// connect server would: it asks /authorize for a code (the demo user
// approves at once) and redeems it at /token with the verifier.
func (p *authServer) IssueGrant(ctx context.Context, client *http.Client, user string, scopes []string) (*oauth2.Token, error) {
	conf := p.oauthConfig(scopes)
	verifier := oauth2.GenerateVerifier()
	state := rand.Text()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("login_hint", user))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return nil, err
	}
	noRedirect := *client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noRedirect.Do(req)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		return nil, fmt.Errorf("authorize: status %d", resp.StatusCode)
	}
	if loc.Query().Get("state") != state {
		return nil, errors.New("authorize: state mismatch")
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	return conf.Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
}

func (p *authServer) oauthConfig(scopes []string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: p.clientID, ClientSecret: p.clientSecret, RedirectURL: p.redirectURI, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: p.URL() + pathAuthorize, TokenURL: p.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader},
	}
}

// Introspect says whose live access token tok is.
func (p *authServer) Introspect(tok string) (user string, active bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.access[tok]
	if !ok || time.Now().After(a.expires) {
		return "", false
	}
	return p.grants[a.grant].user, true
}

// ExpireAccessToken makes tok expired now, as a night would.
func (p *authServer) ExpireAccessToken(tok string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.access[tok]
	if !ok {
		return errors.New("expire access token: unknown token")
	}
	a.expires = time.Now().Add(-time.Second)
	p.access[tok] = a
	return nil
}

func (p *authServer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.clientID || q.Get("redirect_uri") != p.redirectURI || q.Get("response_type") != "code" {
		http.Error(w, "unknown client or redirect URI", http.StatusBadRequest)
		return
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("login_hint") == "" {
		http.Error(w, "PKCE S256 and a user are required", http.StatusBadRequest)
		return
	}
	code := rand.Text()
	p.mu.Lock()
	p.codes[code] = pendingCode{user: q.Get("login_hint"), challenge: q.Get("code_challenge"), scopes: strings.Fields(q.Get("scope")), expires: time.Now().Add(codeLifetime)}
	p.mu.Unlock()
	back, _ := url.Parse(p.redirectURI)
	back.RawQuery = url.Values{"code": {code}, "state": {q.Get("state")}}.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (p *authServer) token(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok || subtle.ConstantTimeCompare([]byte(id), []byte(p.clientID)) != 1 || subtle.ConstantTimeCompare([]byte(secret), []byte(p.clientSecret)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		c, ok := p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code")) // a code is redeemed at most once
		if !ok || time.Now().After(c.expires) || !pkceMatches(r.PostForm.Get("code_verifier"), c.challenge) {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		grant := rand.Text()
		p.grants[grant] = grantInfo{user: c.user, scopes: c.scopes}
		p.issueLocked(w, grant)
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		if grant, reused := p.spent[rt]; reused {
			// A spent refresh token came back: someone holds a copy. Revoke
			// the whole grant, as providers with reuse detection do.
			p.revokeGrantLocked(grant)
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		grant, ok := p.refresh[rt]
		if !ok {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		delete(p.refresh, rt)
		p.spent[rt] = grant
		p.refreshes++
		p.issueLocked(w, grant)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
	}
}

// issueLocked answers a token response for a new access and refresh token
// of grant.
func (p *authServer) issueLocked(w http.ResponseWriter, grant string) {
	at, rt := rand.Text(), rand.Text()
	p.access[at] = accessToken{grant: grant, expires: time.Now().Add(accessLifetime)}
	p.refresh[rt] = grant
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": at, "refresh_token": rt, "token_type": "Bearer",
		"expires_in": int(accessLifetime.Seconds()), "scope": strings.Join(p.grants[grant].scopes, " "),
	})
}

func (p *authServer) revokeGrantLocked(grant string) {
	delete(p.grants, grant)
	for tok, a := range p.access {
		if a.grant == grant {
			delete(p.access, tok)
		}
	}
	for tok, g := range p.refresh {
		if g == grant {
			delete(p.refresh, tok)
		}
	}
}

// revoke is RFC 7009: the token's whole grant ends; unknown tokens are not an
// error.
func (p *authServer) revoke(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok || id != p.clientID || subtle.ConstantTimeCompare([]byte(secret), []byte(p.clientSecret)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	tok := r.PostForm.Get("token")
	p.mu.Lock()
	if g, ok := p.refresh[tok]; ok {
		p.revokeGrantLocked(g)
	} else if a, ok := p.access[tok]; ok {
		p.revokeGrantLocked(a.grant)
	}
	p.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func pkceMatches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	return verifier != "" && subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}
