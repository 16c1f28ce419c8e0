package oauthtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	fositeoauth2 "github.com/ory/fosite/handler/oauth2"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// Endpoint paths served by the server.
const (
	PathAuthorize = "/authorize"
	PathToken     = "/token"
	PathRevoke    = "/revoke"
	PathUserinfo  = "/userinfo"
	PathMetadata  = "/.well-known/oauth-authorization-server"
)

// Server limits and timeouts.
const (
	// readHeaderTimeout bounds how long a client may take to send request
	// headers, so a stalled client cannot hold a connection.
	readHeaderTimeout = 5 * time.Second

	// readTimeout bounds reading a whole request; forms here are small.
	readTimeout = 30 * time.Second

	// idleTimeout closes keep-alive connections nobody uses.
	idleTimeout = 90 * time.Second

	// maxHeaderBytes is far above any legitimate OAuth request's headers.
	maxHeaderBytes = 64 << 10

	// maxFormBytes bounds request bodies: OAuth forms are a few hundred bytes.
	maxFormBytes = 64 << 10

	// globalSecretLen is the size of fosite's HMAC key for tokens and codes
	// (it requires at least 32 bytes).
	globalSecretLen = 32
)

// ErrUnknownClient is returned for a client id that is not registered.
var ErrUnknownClient = errors.New("unknown client")

// ErrUnknownToken is returned by ExpireAccessToken for a token the server
// does not hold (never issued, revoked or malformed).
var ErrUnknownToken = errors.New("unknown token")

// Stats counts what clients did at the server since it started. Requests made
// by the server's own helpers (IssueGrant) are not counted.
type Stats struct {
	// TokenRequests counts every request to the token endpoint, including
	// those answered by FailNext or SetInvalidClient and those dropped.
	TokenRequests int64
	// Refreshes counts refresh_token grants that rotated the token (also
	// when DropNextResponses then discarded the answer).
	Refreshes int64
	// AuthCodeExchanges counts successful authorization_code grants.
	AuthCodeExchanges int64
	// ReuseDetections counts used refresh tokens presented again at the token
	// endpoint; each one revoked its grant's whole token family. The tokens
	// of a revoked family are unknown from then on, so presenting one of them
	// later is refused (invalid_grant) without counting another detection.
	ReuseDetections int64
	// Revocations counts successful RFC 7009 revocation requests (answered
	// 200, which includes tokens that were already invalid, as the RFC says).
	Revocations int64
	// Registrations counts clients registered dynamically (RFC 7591).
	Registrations int64
	// FailedAuth counts token and revocation requests answered
	// invalid_client (wrong or missing client credentials, or
	// SetInvalidClient).
	FailedAuth int64
	// GraceReuses counts used refresh tokens accepted again within
	// Options.RefreshReuseGrace (each also counts in Refreshes).
	GraceReuses int64
}

// Server is a running OAuth 2.0 authorization server. Its methods are safe
// for concurrent use, also while it serves requests.
type Server struct {
	log        *zap.Logger
	cert       *serverCert
	certPool   *x509.CertPool
	url        string
	issuer     string
	accessTTL  time.Duration
	refreshTTL time.Duration
	users      map[string]string // nil: any well-formed user
	// registration enables dynamic client registration (nil: off).
	registration *Registration
	// resources are the accepted RFC 8707 resource indicators.
	resources []string

	store    *store
	strategy fositeoauth2.CoreStrategy
	provider fosite.OAuth2Provider

	// tokenMu serialises every operation that reads and then changes token
	// state (token endpoint, revocation, RevokeUser). fosite reads a refresh
	// token in one step and rotates it in a later one without a transaction
	// spanning both; without this lock two concurrent uses of one refresh
	// token could both succeed, which is exactly the reuse a rotating
	// provider must catch. Token processing takes microseconds, so the lock
	// costs nothing measurable at test scale.
	tokenMu sync.Mutex

	clientsMu sync.RWMutex
	clients   map[string]Client

	knobs knobs
	stats struct {
		tokenRequests, refreshes, authCodeExchanges atomic.Int64
		reuseDetections, revocations, failedAuth    atomic.Int64
		graceReuses                                 atomic.Int64
		registrations                               atomic.Int64
	}

	handler http.Handler // routes without the in-flight tracking
	httpSrv *http.Server
	client  *http.Client

	done      chan struct{} // closed by Close
	serveDone chan struct{} // closed when Serve returns
	closeOnce sync.Once

	inflightMu   sync.Mutex
	inflightCond *sync.Cond
	inflight     int
	closing      bool
}

// knobs are the failure-injection settings, guarded by their own mutex.
type knobs struct {
	mu            sync.Mutex
	latency       time.Duration
	failLeft      int
	failStatus    int
	dropLeft      int
	invalidClient bool
	// resume is non-nil while the token endpoint is stalled; Resume
	// closes it.
	resume chan struct{}
	// held counts token requests held by a stall since it began; changed
	// is closed and replaced whenever held changes.
	held    int
	changed chan struct{}
	// onRotate is called after each refresh that rotated a token.
	onRotate func(user string)
}

// Start validates o, then starts a server on a loopback port with TLS from
// a fresh in-memory CA (see CACertPEM). Close releases it.
func Start(o Options) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("start oauth server: invalid options: %w", err)
	}
	cert, err := newServerCert()
	if err != nil {
		return nil, fmt.Errorf("start oauth server: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cert.caPEM)

	addr := o.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("start oauth server: listen: %w", err)
	}

	s := &Server{
		log:        o.Logger,
		cert:       cert,
		certPool:   pool,
		url:        "https://" + ln.Addr().String(),
		accessTTL:  o.AccessTokenTTL,
		refreshTTL: o.RefreshTokenTTL,
		store:      newStore(),
		clients:    make(map[string]Client),
		done:       make(chan struct{}),
		serveDone:  make(chan struct{}),
	}
	s.inflightCond = sync.NewCond(&s.inflightMu)
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.accessTTL == 0 {
		s.accessTTL = DefaultAccessTokenTTL
	}
	s.issuer = o.Issuer
	if s.issuer == "" {
		s.issuer = s.url
	}
	if o.Users != nil {
		s.users = make(map[string]string, len(o.Users))
		for k, v := range o.Users {
			s.users[k] = v
		}
	}
	s.store.revokeAccessOnRotate = o.RevokeAccessTokenOnRefresh
	s.store.reuseGrace = o.RefreshReuseGrace
	s.knobs.changed = make(chan struct{})
	s.registration = o.Registration
	s.resources = slices.Clone(o.Resources)
	if err := s.buildProvider(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("start oauth server: %w", err)
	}
	for _, c := range o.Clients {
		s.registerClient(c)
	}

	mux := http.NewServeMux()
	mux.HandleFunc(PathAuthorize, s.handleAuthorize)
	mux.HandleFunc(PathToken, s.handleToken)
	mux.HandleFunc(PathRevoke, s.handleRevoke)
	mux.HandleFunc(PathUserinfo, s.handleUserinfo)
	mux.HandleFunc(PathMetadata, s.handleMetadata)
	if s.registration != nil {
		mux.HandleFunc(PathRegister, s.handleRegister)
	}
	s.handler = mux

	var protocols http.Protocols
	// HTTP/1.1 only: DropNextResponses closes the connection, which has that
	// simple meaning only without HTTP/2 multiplexing; OAuth clients do not
	// need HTTP/2.
	protocols.SetHTTP1(true)
	s.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(s.serveTracked),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		Protocols:         &protocols,
		ErrorLog:          s.stdLogger(),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert.leaf},
			NextProtos:   []string{"http/1.1"},
		},
	}
	s.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // never send the server's traffic through an environment proxy
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: readHeaderTimeout,
			ForceAttemptHTTP2:   false,
		},
		Timeout: readTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}

	go func() {
		defer close(s.serveDone)
		// ServeTLS returns ErrServerClosed after Close; any other error
		// means the listener died, which Close will also clean up.
		if err := s.httpSrv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("oauth server stopped", zap.Error(err))
		}
	}()
	s.log.Info("oauth server started", zap.String("url", s.url), zap.Int("clients", len(o.Clients)))
	return s, nil
}

// stdLogger returns the log.Logger net/http writes connection errors to
// (TLS handshake failures of clients that do not trust the CA, mostly).
func (s *Server) stdLogger() *log.Logger {
	if l, err := zap.NewStdLogAt(s.log, zap.DebugLevel); err == nil {
		return l
	}
	return log.New(io.Discard, "", 0)
}

// buildProvider assembles fosite with exactly the handlers this server
// offers: authorization code (with PKCE), refresh token, introspection (used
// by Introspect and /userinfo) and RFC 7009 revocation.
func (s *Server) buildProvider() error {
	secret := make([]byte, globalSecretLen)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("generate token key: %w", err)
	}
	refreshTTL := s.refreshTTL
	if refreshTTL == 0 {
		refreshTTL = -1 // fosite: refresh tokens without expiry
	}
	cfg := &fosite.Config{
		AccessTokenLifespan:   s.accessTTL,
		RefreshTokenLifespan:  refreshTTL,
		AuthorizeCodeLifespan: authorizeCodeTTL,
		GlobalSecret:          secret,
		TokenURL:              s.url + PathToken,
		// Issue refresh tokens without requiring an "offline" scope, as the
		// providers onbehalf talks to do.
		RefreshTokenScopes: []string{},
		// PKCE: S256 only, mandatory for every client. (Enforcing it only
		// for public clients would let a confidential client redeem a code
		// without a verifier after one failed attempt: fosite deletes the
		// PKCE record before checking the verifier.)
		EnforcePKCE:                    true,
		EnforcePKCEForPublicClients:    true,
		EnablePKCEPlainChallengeMethod: false,
		// fosite's getters for these three fill in a default on first use,
		// writing the Config without a lock; setting them here keeps
		// concurrent requests race-free.
		ScopeStrategy:            fosite.ExactScopeStrategy,
		AudienceMatchingStrategy: fosite.DefaultAudienceMatchingStrategy,
		ClientSecretsHasher:      secretHasher{},
	}
	strategy := compose.NewOAuth2HMACStrategy(cfg)
	s.strategy = strategy
	s.provider = compose.Compose(cfg, s.store, strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
		compose.OAuth2PKCEFactory,
	)
	return nil
}

// AddClient registers c (replacing a client with the same id). It is safe
// to call while the server runs.
func (s *Server) AddClient(c Client) error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("add client %q: %w", c.ID, err)
	}
	s.registerClient(c)
	return nil
}

// registerClient stores a validated client in fosite's and the server's
// registries.
func (s *Server) registerClient(c Client) {
	c.RedirectURIs = slices.Clone(c.RedirectURIs)
	c.Scopes = slices.Clone(c.Scopes)
	fc := &fosite.DefaultClient{
		ID:            c.ID,
		RedirectURIs:  slices.Clone(c.RedirectURIs),
		GrantTypes:    []string{"authorization_code", "refresh_token"},
		ResponseTypes: []string{"code"},
		Scopes:        slices.Clone(c.Scopes),
		Public:        c.Public,
		// Every client may ask for every resource this server serves
		// (fosite checks a grant's audience against its client's).
		Audience: slices.Clone(s.resources),
	}
	if !c.Public {
		h, _ := secretHasher{}.Hash(context.Background(), []byte(c.Secret))
		fc.Secret = h
	}
	s.store.addClient(fc)
	s.clientsMu.Lock()
	s.clients[c.ID] = c
	s.clientsMu.Unlock()
}

// lookupClient returns the registered client with id.
func (s *Server) lookupClient(id string) (Client, bool) {
	s.clientsMu.RLock()
	defer s.clientsMu.RUnlock()
	c, ok := s.clients[id]
	return c, ok
}

// URL returns the base URL, https://127.0.0.1:PORT.
func (s *Server) URL() string { return s.url }

// Issuer returns the issuer identifier published in the metadata.
func (s *Server) Issuer() string { return s.issuer }

// AuthURL returns the authorization endpoint.
func (s *Server) AuthURL() string { return s.url + PathAuthorize }

// TokenURL returns the token endpoint.
func (s *Server) TokenURL() string { return s.url + PathToken }

// RevokeURL returns the RFC 7009 revocation endpoint.
func (s *Server) RevokeURL() string { return s.url + PathRevoke }

// UserinfoURL returns the identity endpoint.
func (s *Server) UserinfoURL() string { return s.url + PathUserinfo }

// Endpoint returns the server's endpoints for golang.org/x/oauth2. AuthStyle
// is left to auto-detection; both styles are accepted.
func (s *Server) Endpoint() oauth2.Endpoint {
	return oauth2.Endpoint{AuthURL: s.AuthURL(), TokenURL: s.TokenURL()}
}

// CACertPEM returns the PEM certificate of the CA that signed the server's
// certificate: what a client must trust.
func (s *Server) CACertPEM() []byte { return slices.Clone(s.cert.caPEM) }

// CertPool returns a new pool holding only the server's CA.
func (s *Server) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(s.cert.caPEM)
	return p
}

// Client returns an HTTP client that trusts the server's CA, uses no proxy
// and does not follow redirects. It is shared; Close closes its idle
// connections.
func (s *Server) Client() *http.Client { return s.client }

// Close stops the server: it closes the listener and all connections, then
// waits for running handlers to return. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.inflightMu.Lock()
		s.closing = true
		s.inflightMu.Unlock()
		_ = s.httpSrv.Close()
		<-s.serveDone
		s.inflightMu.Lock()
		for s.inflight > 0 {
			s.inflightCond.Wait()
		}
		s.inflightMu.Unlock()
		s.client.CloseIdleConnections()
		s.log.Info("oauth server stopped", zap.String("url", s.url))
	})
}

// serveTracked counts running handlers so that Close can wait for them.
func (s *Server) serveTracked(w http.ResponseWriter, r *http.Request) {
	s.inflightMu.Lock()
	if s.closing {
		s.inflightMu.Unlock()
		w.Header().Set("Connection", "close")
		writeJSONError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "The server is shutting down.")
		return
	}
	s.inflight++
	s.inflightMu.Unlock()
	defer func() {
		s.inflightMu.Lock()
		s.inflight--
		if s.inflight == 0 {
			s.inflightCond.Broadcast()
		}
		s.inflightMu.Unlock()
	}()
	s.handler.ServeHTTP(w, r)
}

// SetLatency makes the token, revocation and userinfo endpoints wait d
// before handling each request (zero turns it off). A request whose client
// gives up while waiting is not processed.
func (s *Server) SetLatency(d time.Duration) {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	s.knobs.latency = max(d, 0)
}

// FailNext makes the next n token requests fail with HTTP status and an
// OAuth JSON error body (temporarily_unavailable for 503, server_error for
// other 5xx, invalid_client for 401, invalid_request otherwise), without
// processing them. A status outside 400-599 becomes 500. It replaces any
// pending failures; n <= 0 clears them.
func (s *Server) FailNext(n int, status int) {
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	s.knobs.failLeft = max(n, 0)
	s.knobs.failStatus = status
}

// DropNextResponses makes the next n token requests be processed in full
// (a refresh rotates the token) and then answered by closing the connection
// without a response, as when a provider times out after committing. It
// replaces any pending count; n <= 0 clears it.
func (s *Server) DropNextResponses(n int) {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	s.knobs.dropLeft = max(n, 0)
}

// SetInvalidClient makes the token and revocation endpoints answer every
// request with 401 invalid_client while on, as when a provider no longer
// accepts the client's credentials.
func (s *Server) SetInvalidClient(on bool) {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	s.knobs.invalidClient = on
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		TokenRequests:     s.stats.tokenRequests.Load(),
		Refreshes:         s.stats.refreshes.Load(),
		AuthCodeExchanges: s.stats.authCodeExchanges.Load(),
		ReuseDetections:   s.stats.reuseDetections.Load(),
		Registrations:     s.stats.registrations.Load(),
		Revocations:       s.stats.revocations.Load(),
		FailedAuth:        s.stats.failedAuth.Load(),
		GraceReuses:       s.stats.graceReuses.Load(),
	}
}

// Stall makes the token endpoint hold every request that arrives from now
// on, before processing it, until Resume: a provider that stops answering.
// A held request is processed after Resume even if its client gave up
// meanwhile, as a provider that commits an abandoned request does (a
// refresh then rotates the token although nobody receives the answer);
// only Close discards held requests. Stall while stalled does nothing.
func (s *Server) Stall() {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	if s.knobs.resume == nil {
		s.knobs.resume = make(chan struct{})
		s.knobs.held = 0
	}
}

// Resume releases the requests held by Stall and stops holding new ones.
func (s *Server) Resume() {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	if s.knobs.resume != nil {
		close(s.knobs.resume)
		s.knobs.resume = nil
	}
}

// WaitStalled waits until the current stall holds at least n token
// requests (counting those already released by Resume), or ctx ends.
func (s *Server) WaitStalled(ctx context.Context, n int) error {
	for {
		s.knobs.mu.Lock()
		held, changed := s.knobs.held, s.knobs.changed
		s.knobs.mu.Unlock()
		if held >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d stalled token requests (%d so far): %w", n, held, ctx.Err())
		}
	}
}

// OnRotate sets f to be called, from the request's goroutine, after each
// refresh grant that rotated a refresh token and before its answer is
// written (nil removes it): the instant a fault test strikes when the
// provider has spent the old token and the client does not yet hold the new
// one. user is the grant's user. Tokens issued by IssueGrant do not call
// it.
func (s *Server) OnRotate(f func(user string)) {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	s.knobs.onRotate = f
}

// hold blocks while the token endpoint is stalled; it reports false when the
// server is closing.
func (s *Server) hold() bool {
	s.knobs.mu.Lock()
	resume := s.knobs.resume
	if resume != nil {
		s.knobs.held++
		close(s.knobs.changed)
		s.knobs.changed = make(chan struct{})
	}
	s.knobs.mu.Unlock()
	if resume == nil {
		return true
	}
	select {
	case <-resume:
		return true
	case <-s.done:
		return false
	}
}

// rotateHook returns the OnRotate function.
func (s *Server) rotateHook() func(string) {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	return s.knobs.onRotate
}

// latency returns the configured latency.
func (s *Server) latency() time.Duration {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	return s.knobs.latency
}

// wait sleeps the configured latency. It reports false if the request's
// client went away or the server is closing first.
func (s *Server) wait(ctx context.Context) bool {
	d := s.latency()
	if d == 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

// takeFailure consumes one injected failure, returning its status.
func (s *Server) takeFailure() (int, bool) {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	if s.knobs.failLeft == 0 {
		return 0, false
	}
	s.knobs.failLeft--
	return s.knobs.failStatus, true
}

// takeDrop consumes one pending dropped response.
func (s *Server) takeDrop() bool {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	if s.knobs.dropLeft == 0 {
		return false
	}
	s.knobs.dropLeft--
	return true
}

// invalidClient reports whether SetInvalidClient is on.
func (s *Server) invalidClient() bool {
	s.knobs.mu.Lock()
	defer s.knobs.mu.Unlock()
	return s.knobs.invalidClient
}
