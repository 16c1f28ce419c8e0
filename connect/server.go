package connect

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Server timeouts and limits.
const (
	// readHeaderTimeout bounds a client sending its request headers.
	readHeaderTimeout = 5 * time.Second
	// readTimeout bounds reading a whole request; forms here are tiny.
	readTimeout = 30 * time.Second
	// writeTimeout bounds a response, which for /callback includes the
	// provider's token and identity endpoints and the store write.
	writeTimeout = 60 * time.Second
	// idleTimeout closes keep-alive connections nobody uses.
	idleTimeout = 90 * time.Second
	// maxHeaderBytes is far above what a browser sends with our one cookie.
	maxHeaderBytes = 32 << 10
	// maxBodyBytes bounds request bodies: the largest is a form with a
	// CSRF token and a return path.
	maxBodyBytes = 16 << 10
	// flowTimeout bounds the work of one callback (code exchange, identity
	// endpoint, store write) on a context detached from the browser's: the
	// code is spent at the first exchange, so a browser that gives up must
	// not abort the storing of the grant.
	flowTimeout = 45 * time.Second
	// minAdminTokenLen is the shortest admin token accepted: it is a
	// bearer credential compared without rate limiting.
	minAdminTokenLen = 32
	// maxSecretFileSize bounds the admin token and OIDC secret files.
	maxSecretFileSize = 64 << 10
)

// Route paths.
const (
	pathCallback      = "/callback"
	pathLoginCallback = "/login/callback"
)

// LinkVerifier verifies connect links; *identity.Verifier implements it.
type LinkVerifier interface {
	Verify(ctx context.Context, raw string) (*identity.Subject, error)
}

var _ LinkVerifier = (*identity.Verifier)(nil)

// Deps are the components the Server uses. Store and Providers are
// required, LinkVerifier when links are configured.
type Deps struct {
	// Store holds the grants (shared with the sidecars).
	Store store.Store
	// Providers are the apps people can connect, by provider name.
	Providers map[string]*oauth.Provider
	// Audit receives connect and revoke records. Nil writes none (tests
	// only).
	Audit Auditor
	// Logger is the operational logger; nil discards.
	Logger *zap.Logger
	// LinkVerifier verifies connect links (see NewLinkVerifier).
	LinkVerifier LinkVerifier
	// OIDCClient is the HTTP client for the identity provider (discovery,
	// keys, token endpoint). Nil means a client with the system roots and
	// no proxy.
	OIDCClient *http.Client
	// Revoker revokes grants; nil makes New build one from the store,
	// providers, audit and the retry configuration (closed by Shutdown).
	Revoker *Revoker
	// MCPClient is the HTTP client for MCP servers connected by their URL
	// and the authorization servers their metadata names (discovery and
	// dynamic registration). Its dials must pass the egress guard (see
	// NewMCPClient); nil means NewMCPClient with the default guard (no
	// private address) and the system roots.
	MCPClient *http.Client
	// Now is the clock of sessions and flows; nil means time.Now.
	Now func() time.Time
}

// Server is the connect server. It is safe for concurrent use.
type Server struct {
	cfg         Config
	base        string // external URL without trailing slash
	redirectURI string
	st          store.Store
	providers   map[string]*oauth.Provider
	names       []string // sorted provider names
	audit       Auditor
	log         *zap.Logger
	links       LinkVerifier
	idp         *idp
	cookies     *cookies
	once        *onceSet
	revoker     *Revoker
	ownRevoker  bool
	adminHash   *[sha256.Size]byte // nil: admin API disabled
	now         func() time.Time
	handler     http.Handler
	mcpClient   *http.Client
	mcpFlight   singleflight.Group // discoveries in progress, by provider

	mu       sync.Mutex
	httpSrvs []*http.Server
	closed   bool
}

// New checks cfg and d, reads the session key (creating it when missing),
// the admin token and the OIDC client secret, and returns the server. It
// contacts nobody: the identity provider's discovery document is fetched
// at the first sign-in.
func New(cfg Config, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("connect config: %w", err)
	}
	if d.Store == nil {
		return nil, errors.New("new connect server: a grant store is required")
	}
	if cfg.Links.Enabled() && d.LinkVerifier == nil {
		return nil, errors.New("new connect server: links are configured but no link verifier was given")
	}
	for name, p := range d.Providers {
		if p == nil || p.Name() != name {
			return nil, fmt.Errorf("new connect server: provider %q: nil or named differently", name)
		}
		if strings.HasPrefix(name, reservedPrefix) {
			return nil, fmt.Errorf("new connect server: provider %q: names starting with %q are reserved", name, reservedPrefix)
		}
	}
	ext, _ := parseExternalURL(cfg.ExternalURL) // validated above
	base := ext.String()
	key, err := LoadOrCreateSessionKey(cfg.SessionKeyFile)
	if err != nil {
		return nil, fmt.Errorf("new connect server: %w", err)
	}
	sl, err := newSealer(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("new connect server: %w", err)
	}
	logger := d.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	logger = logger.Named("connect")
	now := d.Now
	if now == nil {
		now = time.Now
	}
	s := &Server{
		cfg:         cfg,
		base:        base,
		redirectURI: base + pathCallback,
		st:          d.Store,
		providers:   d.Providers,
		audit:       d.Audit,
		log:         logger,
		links:       d.LinkVerifier,
		cookies:     newCookies(ext.Scheme == "https", sl),
		once:        newOnceSet(d.Store, holderName(), now),
		revoker:     d.Revoker,
		now:         now,
	}
	for name := range d.Providers {
		s.names = append(s.names, name)
	}
	if s.mcpClient = d.MCPClient; s.mcpClient == nil {
		if s.mcpClient, err = NewMCPClient(egress.DefaultConfig(), nil); err != nil {
			return nil, fmt.Errorf("new connect server: %w", err)
		}
	}
	slices.Sort(s.names)
	if cfg.Admin.TokenFile != "" {
		tok, err := readSecretFile(cfg.Admin.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("new connect server: admin token: %w", err)
		}
		if len(tok) < minAdminTokenLen {
			return nil, fmt.Errorf("new connect server: admin token in %s: shorter than %d characters", cfg.Admin.TokenFile, minAdminTokenLen)
		}
		h := sha256.Sum256([]byte(tok))
		s.adminHash = &h
	}
	if cfg.OIDC.Enabled() {
		secret, err := readSecretFile(cfg.OIDC.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("new connect server: oidc client secret: %w", err)
		}
		if s.idp, err = newIDP(cfg.OIDC, secret, d.OIDCClient, base+pathLoginCallback, now, logger); err != nil {
			return nil, fmt.Errorf("new connect server: %w", err)
		}
	}
	if s.revoker == nil {
		s.revoker = NewRevoker(d.Store, d.Providers, d.Audit, logger, cfg.RevocationRetry)
		s.ownRevoker = true
	}
	s.handler = s.routes()
	return s, nil
}

// stdLogger returns the log.Logger net/http reports connection errors to
// (TLS handshakes of scanners, mostly), at debug level.
func stdLogger(l *zap.Logger) *log.Logger {
	if sl, err := zap.NewStdLogAt(l, zap.DebugLevel); err == nil {
		return sl
	}
	return log.New(io.Discard, "", 0)
}

// holderName names this process in store leases.
func holderName() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return "onbehalf-connect/" + sanitizeHolder(host) + "/" + strconv.Itoa(os.Getpid())
}

// readSecretFile reads a small secret file, trimming surrounding white
// space. Errors name the path, never the content.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	defer clear(data)
	if len(data) > maxSecretFileSize {
		return "", fmt.Errorf("read %s: larger than %d bytes", path, maxSecretFileSize)
	}
	secret := strings.TrimSpace(string(data))
	if secret == "" {
		return "", fmt.Errorf("read %s: empty", path)
	}
	return secret, nil
}

// RedirectURI returns the exact redirect URI to register at every provider:
// the external URL followed by /callback.
func (s *Server) RedirectURI() string { return s.redirectURI }

// LoginRedirectURI returns the exact redirect URI to register at the
// identity provider: the external URL followed by /login/callback.
func (s *Server) LoginRedirectURI() string { return s.base + pathLoginCallback }

// Revoker returns the server's revoker.
func (s *Server) Revoker() *Revoker { return s.revoker }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves HTTP on ln until Shutdown. TLS, when the server faces
// browsers directly, is the listener's business (tls.NewListener); behind
// an ingress that terminates TLS, plain HTTP is served. It returns
// http.ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          stdLogger(s.log),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.httpSrvs = append(s.httpSrvs, srv)
	s.mu.Unlock()
	return srv.Serve(ln)
}

// ListenAndServe listens on the configured address (Config.Listen) and
// serves plain HTTP until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("connect server: listen: %w", err)
	}
	return s.Serve(ln)
}

// Shutdown stops serving (waiting for requests in flight until ctx ends)
// and closes the revoker it built, abandoning queued provider revocations
// (see Revoker). The store, providers, audit and link verifier belong to
// the caller.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srvs := s.httpSrvs
	s.mu.Unlock()
	var err error
	for _, srv := range srvs {
		err = errors.Join(err, srv.Shutdown(ctx))
	}
	if s.ownRevoker {
		err = errors.Join(err, s.revoker.Close())
	}
	if s.idp != nil {
		s.idp.close()
	}
	return err
}

// formActionSources returns the CSP form-action sources of the
// confirmation page for provider p: 'self' and the origin of p's
// authorization endpoint. Browsers apply form-action to the redirect that
// follows a form's POST, and the confirmation form's answer is a redirect
// to the provider.
func formActionSources(p *oauth.Provider) string {
	src := "'self'"
	if u, err := url.Parse(p.Config().AuthorizationURL); err == nil && u.Host != "" {
		src += " " + u.Scheme + "://" + u.Host
	}
	return src
}

// securityHeaders sets the headers every response carries. Pages run one
// script, /app.js, and take styles from this origin only (nothing inline,
// nothing from elsewhere), cannot be framed, send no Referer (a connect link
// or state must not travel to another site) and are never cached.
func securityHeaders(h http.Header, formAction string) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action "+formAction+"; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// routes builds the handler.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleApps)
	mux.HandleFunc("GET /style.css", serveStyle)
	mux.HandleFunc("GET /app.js", serveScript)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /connect/{provider}", s.handleConnect)
	mux.HandleFunc("POST /connect/{provider}/confirm", s.handleConfirm)
	mux.HandleFunc("GET /connect/{provider}/cancel", s.handleCancel)
	mux.HandleFunc("GET "+pathCallback, s.handleCallback)
	mux.HandleFunc("GET /login", s.handleLogin)
	mux.HandleFunc("GET "+pathLoginCallback, s.handleLoginCallback)
	mux.HandleFunc("POST /logout", s.handleLogout)
	mux.HandleFunc("POST /apps/{provider}/revoke", s.handleRevokeForm)
	mux.HandleFunc("GET /api/apps", s.handleAPIApps)
	mux.HandleFunc("DELETE /api/apps/{provider}", s.handleAPIRevoke)
	mux.HandleFunc("GET /admin/api/grants", s.admin(s.handleAdminList))
	mux.HandleFunc("DELETE /admin/api/grants/{provider}/{user}", s.admin(s.handleAdminRevoke))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.pageAs(w, s.cookies.read(r, s.now()), msgNotFound)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header(), "'self'")
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !s.sameOrigin(r) {
			s.log.Info("cross-origin request refused", zap.String("method", r.Method), zap.String("path", r.URL.Path))
			if strings.HasPrefix(r.URL.Path, "/api/") || strings.HasPrefix(r.URL.Path, "/admin/") {
				writeJSONError(w, http.StatusForbidden, "cross_origin", "cross-origin requests are refused")
				return
			}
			s.page(w, msgCrossOrigin)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether a state-changing request may come from this
// origin. Browsers that send Sec-Fetch-Site (all current ones) are judged
// by it alone: same-origin, or none (typed or bookmarked). Otherwise an
// Origin header must be the external URL, except "null": with
// Referrer-Policy no-referrer, browsers send Origin: null on their own
// form posts. Requests with neither header (the admin CLI, curl) pass:
// they carry no ambient cookie an attacker could ride, and forms and the
// JSON API still require the CSRF token.
func (s *Server) sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	return o == "" || o == "null" || strings.EqualFold(o, s.base)
}

// admin wraps an admin API handler with bearer-token authentication. With
// no admin token configured the admin API does not exist (404).
func (s *Server) admin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.adminHash == nil {
			writeJSONError(w, http.StatusNotFound, "not_found", "the admin API is not enabled")
			return
		}
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			// Comparing hashes makes the comparison constant-time in the
			// token's length as well as its content.
			h := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if subtle.ConstantTimeCompare(h[:], s.adminHash[:]) == 1 {
				next(w, r)
				return
			}
		}
		s.log.Info("admin API request refused", zap.String("method", r.Method), zap.String("path", r.URL.Path))
		w.Header().Set("WWW-Authenticate", `Bearer realm="onbehalf-connect-admin"`)
		writeJSONError(w, http.StatusUnauthorized, "unauthenticated", "a valid admin bearer token is required")
	}
}
