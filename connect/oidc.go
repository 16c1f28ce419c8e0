package connect

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// Identity provider timing.
const (
	// idpTimeout bounds one call to the identity provider (discovery,
	// token endpoint, keys).
	idpTimeout = 10 * time.Second
	// idpRetryInterval spaces discovery attempts after a failure, so that
	// an IdP outage does not turn every page view into a request to it.
	idpRetryInterval = 10 * time.Second
)

// errIDPUnavailable means the IdP's discovery document could not be read.
var errIDPUnavailable = errors.New("identity provider unavailable")

// idp signs people in with the company identity provider: OpenID Connect
// authorization code flow with PKCE (S256), state and nonce, the ID token
// verified by github.com/coreos/go-oidc/v3 (signature against the IdP's
// keys, iss, aud, exp). Discovery happens at the first sign-in and is
// retried after failures. It is safe for concurrent use.
type idp struct {
	cfg         OIDCConfig
	secret      string
	client      *http.Client
	redirectURI string
	now         func() time.Time
	log         *zap.Logger

	mu       sync.Mutex
	provider *oidc.Provider
	lastTry  time.Time
	lastErr  error
}

func newIDP(cfg OIDCConfig, secret string, client *http.Client, redirectURI string, now func() time.Time, log *zap.Logger) (*idp, error) {
	if client == nil {
		c, err := newIDPClient()
		if err != nil {
			return nil, err
		}
		client = c
	}
	return &idp{cfg: cfg, secret: secret, client: client, redirectURI: redirectURI, now: now, log: log.Named("oidc")}, nil
}

// newIDPClient returns the default HTTP client for the IdP (see package
// outbound): system roots, no proxy from the environment, bounded dial and
// handshake, each call bounded by idpTimeout, and redirects followed as
// net/http does (discovery documents may move). The issuer is the
// operator's, so the egress guard is not applied.
func newIDPClient() (*http.Client, error) {
	o := outbound.DefaultOptions()
	o.IdleConnTimeout = idleTimeout
	o.Timeout = idpTimeout
	o.CheckRedirect = outbound.FollowRedirects(outbound.DefaultMaxRedirects)
	c, err := outbound.Client(o)
	if err != nil {
		return nil, fmt.Errorf("oidc client: %w", err)
	}
	return c, nil
}

// discover returns the IdP, fetching its discovery document if needed.
func (i *idp) discover(ctx context.Context) (*oidc.Provider, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.provider != nil {
		return i.provider, nil
	}
	if !i.lastTry.IsZero() && time.Since(i.lastTry) < idpRetryInterval {
		return nil, i.lastErr
	}
	i.lastTry = time.Now()
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, i.client), idpTimeout)
	defer cancel()
	p, err := oidc.NewProvider(ctx, i.cfg.Issuer)
	if err != nil {
		i.lastErr = fmt.Errorf("%w: discovery: %w", errIDPUnavailable, err)
		i.log.Error("identity provider discovery failed", zap.Error(err))
		return nil, i.lastErr
	}
	i.provider = p
	return p, nil
}

// oauth2Config returns the client configuration at p.
func (i *idp) oauth2Config(p *oidc.Provider) *oauth2.Config {
	scopes := slices.Clone(i.cfg.Scopes)
	if !slices.Contains(scopes, oidc.ScopeOpenID) {
		scopes = append([]string{oidc.ScopeOpenID}, scopes...)
	}
	ep := p.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader // client_secret_basic, the OIDC default
	return &oauth2.Config{
		ClientID:     i.cfg.ClientID,
		ClientSecret: i.secret,
		Endpoint:     ep,
		RedirectURL:  i.redirectURI,
		Scopes:       scopes,
	}
}

// authURL starts a sign-in: the IdP's authorization URL for state, nonce
// and the PKCE verifier.
func (i *idp) authURL(ctx context.Context, state, nonce, verifier string) (string, error) {
	p, err := i.discover(ctx)
	if err != nil {
		return "", err
	}
	return i.oauth2Config(p).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// errSignIn means a sign-in callback could not establish who the person is.
var errSignIn = errors.New("sign-in refused")

// finish exchanges the code, verifies the ID token and its nonce, and
// returns the user id from the configured claim.
func (i *idp) finish(ctx context.Context, code, verifier, nonce string) (string, error) {
	p, err := i.discover(ctx)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, i.client), idpTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, i.client)
	tok, err := i.oauth2Config(p).Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			if re.Response.StatusCode >= 500 || re.Response.StatusCode == http.StatusTooManyRequests {
				return "", fmt.Errorf("%w: token endpoint answered %d", errIDPUnavailable, re.Response.StatusCode)
			}
			return "", fmt.Errorf("%w: token endpoint answered %d %s", errSignIn, re.Response.StatusCode, sanitizeCode(re.ErrorCode))
		}
		return "", fmt.Errorf("%w: token endpoint: %w", errIDPUnavailable, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", fmt.Errorf("%w: no id_token in the token response", errSignIn)
	}
	v := p.Verifier(&oidc.Config{ClientID: i.cfg.ClientID, Now: i.now})
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("%w: id token: %w", errSignIn, err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return "", fmt.Errorf("%w: id token nonce mismatch", errSignIn)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return "", fmt.Errorf("%w: id token claims: %w", errSignIn, err)
	}
	user, _ := claims[i.cfg.UserClaim].(string)
	if user == "" {
		return "", fmt.Errorf("%w: id token has no string claim %q", errSignIn, i.cfg.UserClaim)
	}
	if i.cfg.UserClaim == "email" {
		if ev, ok := claims["email_verified"]; ok && ev != true {
			return "", fmt.Errorf("%w: email not verified by the identity provider", errSignIn)
		}
	}
	if err := store.ValidateUser(user); err != nil {
		return "", fmt.Errorf("%w: claim %q: %w", errSignIn, i.cfg.UserClaim, err)
	}
	return user, nil
}

// close releases idle connections.
func (i *idp) close() { i.client.CloseIdleConnections() }

// startLogin sends the browser to the IdP, remembering the sign-in in the
// session; returnTo is where to go afterwards (a path on this server).
func (s *Server) startLogin(w http.ResponseWriter, r *http.Request, sess *session, returnTo string) {
	now := s.now()
	if sess == nil {
		sess = newSession(now, s.cfg.SessionTTL)
	}
	state, nonce, verifier := rand.Text()+rand.Text(), rand.Text(), oauth2.GenerateVerifier()
	target, err := s.idp.authURL(r.Context(), state, nonce, verifier)
	if err != nil {
		s.pageAs(w, sess, msgSignInDown)
		return
	}
	sess.Login = &loginFlow{
		StateHash: hashState(state),
		Verifier:  verifier,
		Nonce:     nonce,
		ReturnTo:  safeReturnTo(returnTo),
		Expiry:    now.Add(s.cfg.StateTTL),
	}
	if err := s.cookies.write(w, sess, now); err != nil {
		s.log.Error("write session", zap.Error(err))
		s.pageAs(w, sess, msgBusy)
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// handleLogin is GET /login?return_to=…: sign in with the IdP.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if s.idp == nil {
		s.page(w, msgNeedLink)
		return
	}
	sess := s.cookies.read(r, s.now())
	returnTo := safeReturnTo(r.URL.Query().Get("return_to"))
	if returnTo == "" {
		returnTo = "/"
	}
	s.startLogin(w, r, sess, returnTo)
}

// handleLoginCallback is GET /login/callback from the IdP.
func (s *Server) handleLoginCallback(w http.ResponseWriter, r *http.Request) {
	if s.idp == nil {
		s.page(w, msgNotFound)
		return
	}
	now := s.now()
	q := r.URL.Query()
	state := q.Get("state")
	sess := s.cookies.read(r, now)
	switch {
	case state == "":
		s.log.Info("sign-in callback refused: no state")
		s.pageAs(w, sess, msgStateMissing)
		return
	case sess == nil:
		s.log.Info("sign-in callback refused: no session")
		s.page(w, msgNoSession)
		return
	}
	lf := sess.Login
	h := hashState(state)
	if lf == nil || subtle.ConstantTimeCompare([]byte(lf.StateHash), []byte(h)) != 1 {
		s.log.Warn("sign-in callback refused: state unknown to this session (foreign, replayed or expired)")
		s.pageAs(w, sess, msgStateInvalid)
		return
	}
	sess.Login = nil
	if err := s.cookies.write(w, sess, now); err != nil {
		s.log.Error("write session", zap.Error(err))
	}
	if !now.Before(lf.Expiry) {
		s.pageAs(w, sess, msgStateInvalid)
		return
	}
	if err := s.once.use(r.Context(), leaseStates, h, lf.Expiry); err != nil {
		s.onceFailed(w, sess, err, "sign-in state", "", "")
		return
	}
	if e := q.Get("error"); e != "" {
		s.log.Info("identity provider refused the sign-in", zap.String("error", sanitizeCode(e)))
		s.pageAs(w, sess, msgSignInFailed)
		return
	}
	code := q.Get("code")
	if code == "" {
		s.pageAs(w, sess, msgSignInFailed)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), flowTimeout)
	defer cancel()
	user, err := s.idp.finish(ctx, code, lf.Verifier, lf.Nonce)
	if err != nil {
		if errors.Is(err, errIDPUnavailable) {
			s.log.Warn("sign-in failed: identity provider unavailable", zap.Error(err))
			s.pageAs(w, sess, msgSignInDown)
			return
		}
		s.log.Warn("sign-in refused", zap.Error(err))
		s.pageAs(w, sess, msgSignInFailed)
		return
	}
	next := sess.signedIn(user, viaOIDC, now, s.cfg.SessionTTL)
	s.log.Info("signed in", zap.String("user", user))
	dest := lf.ReturnTo
	if dest == "" {
		dest = "/"
	}
	s.redirect(w, r, next, dest)
}

// handleLogout is POST /logout: forget the session in this browser.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	sess := s.cookies.read(r, s.now())
	if sess != nil && !sess.checkCSRF(r.PostFormValue("csrf")) {
		s.pageAs(w, sess, msgCSRF)
		return
	}
	s.cookies.clear(w)
	s.page(w, msgSignedOut)
}
