package oauthtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// IssueGrant mints a real access and refresh token pair for user at client,
// as if user had approved scopes on the consent page. It runs the full
// authorization-code flow with PKCE S256 through fosite (consent POST,
// redirect, code exchange with client authentication), in process: the
// requests do not touch the network, bypass the failure knobs (SetLatency,
// FailNext, DropNextResponses, SetInvalidClient) and are not counted in
// Stats. The code is sent to the client's first redirect URI.
func (s *Server) IssueGrant(clientID, user string, scopes []string) (*oauth2.Token, error) {
	c, ok := s.lookupClient(clientID)
	if !ok {
		return nil, fmt.Errorf("issue grant for client %q: %w", clientID, ErrUnknownClient)
	}
	ctx := context.WithValue(context.Background(), internalKey{}, true)
	verifier := oauth2.GenerateVerifier()
	state := rand.Text()
	redirectURI := c.RedirectURIs[0]

	rec := s.serveInternal(ctx, PathAuthorize, url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"scope":                 {strings.Join(scopes, " ")},
		"state":                 {state},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"},
		"user":                  {user},
		"approve":               {"yes"},
	}, nil)
	if rec.status != http.StatusSeeOther {
		return nil, fmt.Errorf("issue grant for client %q: authorize: status %d%s", clientID, rec.status, consentError(rec.body.String()))
	}
	loc, err := url.Parse(rec.header.Get("Location"))
	if err != nil {
		return nil, fmt.Errorf("issue grant for client %q: authorize: bad redirect: %w", clientID, err)
	}
	q := loc.Query()
	if e := q.Get("error"); e != "" {
		return nil, fmt.Errorf("issue grant for client %q: authorize: %s: %s", clientID, e, q.Get("error_description"))
	}
	if q.Get("state") != state || q.Get("code") == "" {
		return nil, fmt.Errorf("issue grant for client %q: authorize: redirect without code or with wrong state", clientID)
	}

	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {q.Get("code")},
		"redirect_uri":  {redirectURI},
		"code_verifier": {verifier},
	}
	var basic *url.Userinfo
	if c.Public {
		form.Set("client_id", clientID)
	} else {
		// RFC 6749 section 2.3.1: form-encode both parts before Basic.
		basic = url.UserPassword(url.QueryEscape(clientID), url.QueryEscape(c.Secret))
	}
	rec = s.serveInternal(ctx, PathToken, form, basic)
	if rec.status != http.StatusOK {
		return nil, fmt.Errorf("issue grant for client %q: token: status %d%s", clientID, rec.status, oauthError(rec.body.Bytes()))
	}
	return parseTokenResponse(rec.body.Bytes(), time.Now())
}

// tokenResponse is the JSON body of a successful token response.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
}

// parseTokenResponse turns a token response body into an oauth2.Token, with
// "scope" available through Token.Extra.
func parseTokenResponse(body []byte, now time.Time) (*oauth2.Token, error) {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return nil, fmt.Errorf("decode token response: %w", err)
	}
	if tr.AccessToken == "" {
		return nil, errors.New("decode token response: no access token")
	}
	tok := &oauth2.Token{
		AccessToken:  tr.AccessToken,
		TokenType:    tr.TokenType,
		RefreshToken: tr.RefreshToken,
		ExpiresIn:    tr.ExpiresIn,
	}
	if tr.ExpiresIn > 0 {
		tok.Expiry = now.Add(time.Duration(tr.ExpiresIn) * time.Second)
	}
	return tok.WithExtra(map[string]any{"scope": tr.Scope}), nil
}

// oauthError formats the error code and description of an OAuth JSON error
// body for an error message (never a token: error bodies carry none).
func oauthError(body []byte) string {
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		return ""
	}
	if e.Description == "" {
		return ": " + e.Error
	}
	return ": " + e.Error + ": " + e.Description
}

// consentError extracts the message a consent page shows, if any.
func consentError(page string) string {
	const start = `<p class="error" id="error">`
	_, rest, ok := strings.Cut(page, start)
	if !ok {
		return oauthError([]byte(page))
	}
	msg, _, _ := strings.Cut(rest, "</p>")
	return ": " + msg
}

// serveInternal posts form to path through the server's handlers in process
// and returns the recorded response.
func (s *Server) serveInternal(ctx context.Context, path string, form url.Values, basic *url.Userinfo) *recorder {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		// Only a malformed URL fails here, and s.url is built by Start.
		panic(fmt.Sprintf("oauthtest: build internal request: %v", err))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic != nil {
		pw, _ := basic.Password()
		req.SetBasicAuth(basic.Username(), pw)
	}
	req.RemoteAddr = "127.0.0.1:0"
	rec := &recorder{header: make(http.Header)}
	s.handler.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec
}

// recorder is a minimal http.ResponseWriter that keeps the response. (The
// standard library's httptest.ResponseRecorder would do, but httptest has
// no place in the onbehalf binary.)
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

// Introspect reports whether accessToken is a live access token of this
// server (issued, not expired, not revoked), and if so for which user and
// scopes. Upstream fakes in tests use it to check an injected token. A
// refresh token is not an access token and is reported inactive.
func (s *Server) Introspect(accessToken string) (user string, scopes []string, active bool) {
	return s.introspect(context.Background(), accessToken)
}

// TokenInfo is what IntrospectToken reports about a live access token.
type TokenInfo struct {
	User   string
	Client string
	Scopes []string
	// Audience holds the resources (RFC 8707) the token was issued for;
	// empty when the client named none.
	Audience []string
	Expiry   time.Time
}

// IntrospectToken is Introspect with the token's client, audience and
// expiry, for resource servers that check them (an MCP server checks that
// a token was issued for it).
func (s *Server) IntrospectToken(accessToken string) (TokenInfo, bool) {
	use, ar, err := s.provider.IntrospectToken(context.Background(), accessToken, fosite.AccessToken, newSession(""))
	if err != nil || use != fosite.AccessToken {
		return TokenInfo{}, false
	}
	return TokenInfo{
		User:     sessionUser(ar.GetSession()),
		Client:   clientID(ar),
		Scopes:   slices.Clone([]string(ar.GetGrantedScopes())),
		Audience: slices.Clone([]string(ar.GetGrantedAudience())),
		Expiry:   ar.GetSession().GetExpiresAt(fosite.AccessToken),
	}, true
}

// introspect validates an access token through fosite's core validator.
func (s *Server) introspect(ctx context.Context, token string) (string, []string, bool) {
	use, ar, err := s.provider.IntrospectToken(ctx, token, fosite.AccessToken, newSession(""))
	if err != nil || use != fosite.AccessToken {
		return "", nil, false
	}
	return sessionUser(ar.GetSession()), slices.Clone([]string(ar.GetGrantedScopes())), true
}

// IssuedTo reports whether accessToken is an access token this server
// issued and still holds (expired or not, but not revoked), and for which
// user. Fault tests use it to check that every credential an upstream saw
// was one the provider issued, even after it expired.
func (s *Server) IssuedTo(accessToken string) (user string, ok bool) {
	sig := s.strategy.AccessTokenSignature(context.Background(), accessToken)
	if sig == "" {
		return "", false
	}
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	e, ok := s.store.access[sig]
	if !ok {
		return "", false
	}
	return sessionUser(e.req.GetSession()), true
}

// ExpireAccessToken makes accessToken expired now, as if its lifetime had
// run out, so that tests can force a refresh without waiting. The client's
// own idea of the expiry (expires_in) is of course unchanged.
func (s *Server) ExpireAccessToken(accessToken string) error {
	sig := s.strategy.AccessTokenSignature(context.Background(), accessToken)
	if sig == "" || !s.store.expireAccess(sig, time.Now().Add(-time.Second)) {
		return fmt.Errorf("expire access token: %w", ErrUnknownToken)
	}
	return nil
}

// RevokeUser revokes every grant of user (all their access and refresh
// tokens, at every client), as when the user disconnects the app at the
// provider. It returns how many grants it revoked.
func (s *Server) RevokeUser(user string) int {
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	n := s.store.revokeUser(user)
	s.log.Info("user's grants revoked", zap.String("user", user), zap.Int("grants", n))
	return n
}
