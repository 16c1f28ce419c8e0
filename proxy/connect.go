package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// tunnel is one accepted CONNECT: its target and the subject its
// Proxy-Authorization named, if any.
type tunnel struct {
	host    string // normalised
	port    int
	target  string // host and port as hostPort renders them for https
	addr    string // host:port to dial, the port always written
	source  string
	subject *identity.Subject
}

// newTunnel returns the tunnel to host:port (host normalised) opened from
// source.
func newTunnel(host string, port int, source string) *tunnel {
	return &tunnel{
		host: host, port: port, source: source,
		target: hostPort(host, port, "https"),
		addr:   net.JoinHostPort(host, strconv.Itoa(port)),
	}
}

func (s *Server) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = zap.NewStdLog(s.log.Named("goproxy"))
	gp.Verbose = false
	// Never goproxy's transport or dialer: both skip certificate checks and
	// honour proxy environment variables (docs/security.md, invariant 5).
	gp.Tr = s.transport
	gp.ConnectDial = nil
	gp.ConnectDialWithReq = func(req *http.Request, network, addr string) (net.Conn, error) {
		return nil, errors.New("proxy: goproxy must not dial for CONNECT")
	}
	gp.KeepAcceptEncoding = true
	gp.KeepDestinationHeaders = false
	gp.AllowHTTP2 = false
	gp.NonproxyHandler = http.HandlerFunc(s.serveNonProxy)
	gp.OnRequest().HandleConnectFunc(s.handleConnect)
	gp.OnRequest().DoFunc(s.handlePlain)
	gp.OnResponse().DoFunc(s.handlePlainResponse)
	return gp
}

// serveNonProxy answers origin-form requests sent to the proxy port.
func (s *Server) serveNonProxy(w http.ResponseWriter, r *http.Request) {
	e := newError(CodeBadRequest, "this is a forward proxy: send absolute-form requests (http://host/path) or CONNECT host:port", nil)
	writeErrorTo(w, e, "")
}

func writeErrorTo(w http.ResponseWriter, e *Error, decisionID string) {
	resp := e.response(nil, decisionID, false)
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// handleConnect decides what happens to a CONNECT: interception for routed
// host:ports, a blind tunnel for unrouted hosts when configured and
// allowed, refusal otherwise. goproxy's default (tunnel everything) is
// never reached.
func (s *Server) handleConnect(target string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	req := ctx.Req
	host, port, err := injector.SplitHostPort(target, injector.DefaultPort)
	ex := s.newExchange(http.MethodConnect, "", target, "")
	if err != nil || host == "" {
		return s.rejectConnect(ctx, ex, newError(CodeBadRequest, "CONNECT needs a target of the form host:port", err)), target
	}
	if !egress.CanonicalHost(host) {
		return s.rejectConnect(ctx, ex, newError(CodeBadRequest, "the CONNECT target must be a host name or an address in its standard form", nil)), target
	}
	t := newTunnel(host, port, req.RemoteAddr)
	ex.rec.Host = t.target

	// An assertion on CONNECT is optional for interception (requests inside
	// the tunnel may carry their own) but must be valid when present.
	raw, err := identity.FromProxyAuthorization(req.Header)
	switch {
	case err == nil:
		sub, verr := s.ids.verify(req.Context(), raw)
		if verr != nil {
			return s.rejectConnect(ctx, ex, classify(verr)), target
		}
		t.subject = sub
		ex.setSubject(sub)
	case !errors.Is(err, identity.ErrMissing):
		return s.rejectConnect(ctx, ex, classify(err)), target
	}

	if s.d.Routes.Intercepts(host, port) {
		return &goproxy.ConnectAction{
			Action: goproxy.ConnectHijack,
			// The tunnel gets a goroutine of its own, which starts with
			// a small stack: the one that parsed the CONNECT ends here
			// (see onOwnStack).
			Hijack: func(_ *http.Request, client net.Conn, _ *goproxy.ProxyCtx) { go s.serveTunnel(t, client) },
		}, target
	}
	if s.d.Routes.HostRouted(host) {
		return s.rejectConnect(ctx, ex, newError(CodeNoRoute, "this host is routed on another port only; the sidecar does not pass other traffic to it", nil)), target
	}
	if s.cfg.Unrouted != UnroutedTunnel {
		return s.rejectConnect(ctx, ex, newError(CodeNoRoute, "no route for this host; the sidecar only reaches hosts its routes name", nil)), target
	}
	if t.subject == nil {
		return s.rejectConnect(ctx, ex, newError(CodeIdentityRequired, "tunnels to unrouted hosts need an assertion in Proxy-Authorization: Bearer <assertion>", identity.ErrMissing)), target
	}
	in := s.policyInput(req, ex, "https", t.target, req.RemoteAddr)
	if e := s.decide(req.Context(), ex, in, false); e != nil {
		return s.rejectConnect(ctx, ex, e), target
	}
	return &goproxy.ConnectAction{
		Action: goproxy.ConnectHijack,
		Hijack: func(r *http.Request, client net.Conn, _ *goproxy.ProxyCtx) { s.serveBlindTunnel(ex, t, r, client) },
	}, target
}

func (s *Server) rejectConnect(ctx *goproxy.ProxyCtx, ex *exchange, e *Error) *goproxy.ConnectAction {
	ex.fail(e)
	s.logFailure(ex, e)
	resp := e.response(ctx.Req, ex.rec.DecisionID, true)
	resp.Close = true
	ctx.Resp = resp
	s.finish(ex, resp.StatusCode, resp.ContentLength)
	return &goproxy.ConnectAction{Action: goproxy.ConnectReject}
}

// serveBlindTunnel dials an unrouted, policy-approved target through the
// egress guard and relays bytes without looking at them.
func (s *Server) serveBlindTunnel(ex *exchange, t *tunnel, r *http.Request, client net.Conn) {
	if s.track(client, nil) == nil {
		client.Close()
		return
	}
	defer s.untrack(client)
	defer client.Close()
	upstream, err := s.transport.DialContext(r.Context(), "tcp", net.JoinHostPort(t.host, strconv.Itoa(t.port)))
	if err != nil {
		e := ex.fail(classify(err))
		s.logFailure(ex, e)
		resp := e.response(r, ex.rec.DecisionID, true)
		_ = resp.Write(client)
		s.finish(ex, resp.StatusCode, resp.ContentLength)
		return
	}
	defer upstream.Close()
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	in, out := splice(client, upstream, s.cfg.Limits.IdleTimeout)
	ex.rec.BytesIn = in
	s.finish(ex, http.StatusOK, out)
}

// splice copies both ways until either side closes or nothing moves for
// idle. It returns the byte counts client→upstream and upstream→client.
func splice(client, upstream net.Conn, idle time.Duration) (in, out int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	copyIdle := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			_ = src.SetReadDeadline(time.Now().Add(idle))
			k, err := src.Read(buf)
			if k > 0 {
				_ = dst.SetWriteDeadline(time.Now().Add(idle))
				if _, werr := dst.Write(buf[:k]); werr != nil {
					break
				}
				*n += int64(k)
			}
			if err != nil {
				break
			}
		}
		// Closing both ends unblocks the other direction at once.
		client.Close()
		upstream.Close()
	}
	go copyIdle(upstream, client, &in)
	go copyIdle(client, upstream, &out)
	wg.Wait()
	return in, out
}
