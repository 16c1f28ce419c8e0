package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/metrics"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// Verifier checks an assertion and names the acting user.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*identity.Subject, error)
}

// Decider evaluates policy. Decide never allows on error.
type Decider interface {
	Decide(ctx context.Context, in *policy.Input) policy.Decision
	Revision() string
}

// TokenSource hands out the access token of one request: the provider of
// its route, for its user, from a stored grant or, when the identity came
// from an IdP, perhaps by token exchange (req.Identity).
type TokenSource interface {
	Token(ctx context.Context, req injector.TokenRequest) (injector.Token, error)
}

// Auditor writes audit records. Write returns once a sink accepted the
// record, and fails when none did; Submit queues a record nobody waits for
// (see [audit.Auditor.Submit]).
type Auditor interface {
	Write(r *audit.Record) error
	Submit(r *audit.Record) error
}

// UseRecorder notes that a grant was used (injector.UseRecorder). Used
// must return at once: it runs on every injected request.
type UseRecorder interface {
	Used(provider, user, agent string, at time.Time)
}

// LeafIssuer signs (or returns cached) interception certificates.
type LeafIssuer interface {
	Leaf(host string) (*tls.Certificate, error)
}

// Dialer opens upstream connections; in production it is the egress guard.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Deps are the components the pipeline drives.
type Deps struct {
	Logger          *zap.Logger
	Identity        Verifier
	AssertionHeader string
	Routes          *injector.Table
	Policy          Decider
	Tokens          TokenSource
	Audit           Auditor
	// AuditFailClosed refuses injecting requests whose inject record could
	// not be written (503 audit_unavailable) before the token leaves.
	AuditFailClosed bool
	// Fingerprint returns a keyed, non-reversible tag for a token.
	Fingerprint func(token string) string
	Dialer      Dialer
	Certs       LeafIssuer
	// RootCAs, when set, replaces the system roots for upstream TLS (tests).
	// Upstream.CAFile is added to whichever pool is used.
	RootCAs *x509.CertPool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Metrics records request and stage metrics; nil records nothing.
	Metrics *metrics.Metrics
	// Tracer, when set, traces each intercepted request and its stages.
	// Nil costs nothing on the request path.
	Tracer trace.Tracer
	// Uses, when set, is told of every injected request (which grant, for
	// which agent), so that people can see when each grant was last used.
	Uses UseRecorder
	// Limiter, when set, applies rate limits (configured and policy's)
	// after the decision and remembers the back-offs providers ask for;
	// nil limits nothing.
	Limiter *ratelimit.Limiter
}

// Server is the sidecar's proxy listener.
type Server struct {
	// exchanges keeps the exchanges of finished HTTP/1.1 requests for the
	// next ones (getExchange).
	exchanges sync.Pool
	cfg       Config
	d         Deps
	log       *zap.Logger
	gp        *goproxy.ProxyHttpServer
	srv       *http.Server
	transport *http.Transport
	// streamTransport forwards intercepted requests with streamed bodies
	// (all of them with upstream HTTP/2): transport itself, or with pool
	// per_user a copy that keeps no connection after its request.
	streamTransport *http.Transport
	// h2Transport speaks only HTTP/2 upstream, for gRPC calls.
	h2Transport *http.Transport
	// h2 serves agents' HTTP/2 connections inside tunnels.
	h2 h2Server
	// upstream sends requests whose body is in memory over HTTP/1.1;
	// nil when upstream HTTP/2 is on, and everything takes transport.
	upstream *upstreamClient
	ids      *subjectCache
	// policyRoutes maps each *injector.Route to its *policyRoute.
	policyRoutes sync.Map
	// listCache holds per-item decisions of MCP list filtering.
	listCache *listCache
	// stacks runs tunnels' handshakes and requests off the tunnels' own
	// goroutines.
	stacks stacks

	mu      sync.Mutex
	conns   map[net.Conn]*connState // hijacked tunnel connections
	closing atomic.Bool
	wg      sync.WaitGroup // tunnel goroutines
}

// New builds a Server. It does not listen; call Serve.
func New(cfg Config, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Identity == nil || d.Routes == nil || d.Policy == nil || d.Tokens == nil || d.Audit == nil || d.Dialer == nil || d.Certs == nil {
		return nil, errors.New("proxy: missing dependency")
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.AssertionHeader == "" {
		d.AssertionHeader = identity.DefaultHeader
	}
	if d.Fingerprint == nil {
		return nil, errors.New("proxy: missing token fingerprinter")
	}
	tr, err := newTransport(cfg.Upstream, d.Dialer, d.RootCAs)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:             cfg,
		d:               d,
		log:             d.Logger.Named("proxy"),
		listCache:       newListCache(),
		transport:       tr,
		streamTransport: tr,
		ids:             newSubjectCache(d.Identity, d.Now),
		conns:           map[net.Conn]*connState{},
		h2Transport:     newH2Transport(tr),
	}
	if !cfg.Upstream.HTTP2 {
		s.upstream = newUpstreamClient(cfg.Upstream, tr.DialContext, tr.TLSClientConfig)
	}
	if cfg.Upstream.Pool == PoolPerUser {
		// net/http pools by host only; streamed uploads are rare enough
		// to take a connection each.
		s.streamTransport = tr.Clone()
		s.streamTransport.DisableKeepAlives = true
	}
	s.h2 = s.newH2Server()
	s.gp = s.newGoproxy()
	s.srv = &http.Server{
		Handler:           s.gp,
		ReadHeaderTimeout: cfg.Limits.ReadHeaderTimeout,
		IdleTimeout:       cfg.Limits.IdleTimeout,
		MaxHeaderBytes:    cfg.Limits.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
		// HTTP/2 to the proxy itself is not offered: CONNECT over h2 would
		// bypass the hijack path.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	return s, nil
}

// newTransport builds the transport to upstream APIs with the shared
// outbound constructor. goproxy's default transport skips certificate
// verification and honours proxy variables from the environment; this one
// does neither. Every connection goes through dialer (the egress guard),
// since the agent chooses the destination; the pool is sized for an agent
// that talks to few hosts, often in bursts.
func newTransport(c UpstreamConfig, dialer Dialer, roots *x509.CertPool) (*http.Transport, error) {
	o := outbound.DefaultOptions()
	o.Roots = roots
	o.CAFile, o.CAFileKey = c.CAFile, "upstream.ca_file"
	o.Dial = dialer.DialContext
	o.DialTimeout = c.DialTimeout
	o.TLSHandshakeTimeout = c.TLSHandshakeTimeout
	o.ResponseHeaderTimeout = c.ResponseHeaderTimeout
	o.IdleConnTimeout = c.IdleConnTimeout
	o.MaxIdleConns = c.MaxIdleConnsPerHost * 16
	o.MaxIdleConnsPerHost = c.MaxIdleConnsPerHost
	o.HTTP2 = c.HTTP2
	// The transport neither asks for compression itself nor decodes:
	// the agent's Accept-Encoding goes upstream (narrowed to what the
	// sidecar can decode when scrubbing, proxy/scrub.go) and scrubbing
	// decodes what comes back.
	o.DisableCompression = true
	tr, err := outbound.Transport(o)
	if err != nil {
		return nil, err
	}
	// The same limit as the proxy's own client (see classify for how its
	// error is recognised).
	tr.MaxResponseHeaderBytes = int64(c.MaxResponseHeaderBytes)
	return tr, nil
}

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	ln = newLimitListener(ln, s.cfg.Limits.MaxConns)
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets in-flight plain requests finish, and closes
// tunnels when ctx ends (tunnels can live for hours; they are not waited
// for beyond ctx).
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	err := s.srv.Shutdown(ctx)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(shutdownPoll)
	defer tick.Stop()
	for {
		// Tunnels waiting between requests close at once; those in the
		// middle of one finish it first (the loop exits after it).
		s.closeIdleTunnels()
		select {
		case <-done:
			s.closeUpstream()
			return err
		case <-ctx.Done():
			s.closeTunnels()
			<-done
			s.closeUpstream()
			return err
		case <-tick.C:
		}
	}
}

// shutdownPoll is how often Shutdown looks for tunnels that became idle.
const shutdownPoll = 50 * time.Millisecond

// connState is what Shutdown needs to know about a tunnel.
type connState struct {
	// idle is set while a tunnel waits for its next request.
	idle atomic.Bool
	// cancel ends the tunnel's requests (an intercepted tunnel's context):
	// closing the client's connection does not stop a response that is
	// waiting for the upstream, such as a quiet event stream.
	cancel context.CancelFunc
}

// CloseIdleConnections closes pooled upstream connections that are not in
// use (they would otherwise live until upstream.idle_conn_timeout).
func (s *Server) CloseIdleConnections() {
	s.stacks.closeIdle()
	s.transport.CloseIdleConnections()
	s.h2Transport.CloseIdleConnections()
	if s.upstream != nil {
		s.upstream.closeIdle()
	}
}

// closeUpstream closes every upstream connection not in use once the
// server is done with them.
func (s *Server) closeUpstream() {
	s.stacks.close()
	s.transport.CloseIdleConnections()
	s.h2Transport.CloseIdleConnections()
	if s.upstream != nil {
		s.upstream.close()
	}
}

// Close closes everything at once.
func (s *Server) Close() error {
	s.closing.Store(true)
	err := s.srv.Close()
	s.closeTunnels()
	s.wg.Wait()
	s.closeUpstream()
	return err
}

// track registers a client connection; cancel (nil for none) ends its
// requests when Shutdown gives up waiting or Close is called.
func (s *Server) track(c net.Conn, cancel context.CancelFunc) *connState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	st := &connState{cancel: cancel}
	s.conns[c] = st
	s.wg.Add(1)
	s.d.Metrics.TunnelOpened()
	return st
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.d.Metrics.TunnelClosed()
	s.wg.Done()
}

func (s *Server) closeTunnels() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, st := range s.conns {
		c.Close()
		if st.cancel != nil {
			st.cancel()
		}
	}
}

func (s *Server) closeIdleTunnels() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, st := range s.conns {
		if st.idle.Load() {
			c.Close()
		}
	}
}

// limitListener bounds concurrent connections: Accept blocks while max
// connections are open, leaving further clients in the kernel backlog.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, max int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, max), done: make(chan struct{})}
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite and CloseRead let goproxy half-close blind tunnels.
func (c *limitConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}
