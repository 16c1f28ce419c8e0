package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/metrics"
	"github.com/onbehalf-dev/onbehalf/policy"
)

// maxBufferedBody is the largest request body read into memory before
// forwarding (see interceptedResponse); larger and chunked bodies stream.
const maxBufferedBody = 64 << 10

// maxDrain is how much of an unread request body the proxy reads away to
// keep a connection alive after answering early; beyond it the connection
// is closed instead.
const maxDrain = 256 << 10

// errSNIMismatch refuses a TLS handshake whose server name differs from the
// CONNECT target.
var errSNIMismatch = errors.New("TLS server name does not match the CONNECT target")

// serveTunnel intercepts an accepted CONNECT to a routed host:port: it
// answers 200, terminates TLS with a leaf for exactly that host, and serves
// HTTP/1.1 requests bound to it until the client leaves or idles out.
func (s *Server) serveTunnel(t *tunnel, raw net.Conn) {
	// A panic ends this tunnel only, as net/http's server does for the
	// handler it used to run in.
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic serving a tunnel", zap.String(logHost, t.host), zap.Any("panic", r), zap.Stack("stack"))
		}
	}()
	// One context per tunnel: a request's upstream call is ended by
	// closing its response body, and everything by the tunnel's end (or
	// by Shutdown and Close, through track).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := s.track(raw, cancel)
	if st == nil {
		raw.Close()
		return
	}
	defer s.untrack(raw)
	defer raw.Close()
	if _, err := io.WriteString(raw, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	conn := tls.Server(raw, s.tunnelTLSConfig(t, isLoopback(raw.RemoteAddr())))
	_ = raw.SetDeadline(time.Now().Add(s.cfg.Limits.HandshakeTimeout))
	if err := onOwnStack(&s.stacks, func() error { return conn.HandshakeContext(context.Background()) }); err != nil {
		if ce := s.log.Check(zap.DebugLevel, "tunnel handshake failed"); ce != nil {
			ce.Write(zap.String(logHost, t.host), zapErr(err))
		}
		return
	}
	_ = raw.SetDeadline(time.Time{})

	if conn.ConnectionState().NegotiatedProtocol == "h2" {
		s.serveH2(ctx, t, conn, st)
		return
	}
	idle := &idleReader{conn: conn, idle: s.cfg.Limits.IdleTimeout}
	hr := newHeadReader(idle, s.cfg.Limits.MaxHeaderBytes, s.cfg.Limits.MaxHeaderCount)
	bw := bufio.NewWriterSize(conn, connBufferSize)
	// The tunnel's end (Shutdown, Close) cuts the upstream call in flight.
	watch := new(callWatch)
	defer context.AfterFunc(ctx, watch.end)()
	for {
		// Wait for the next request's first byte under the idle timeout,
		// then for the whole head under the read-header timeout.
		idle.armed = false
		if s.closing.Load() {
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(s.cfg.Limits.IdleTimeout))
		st.idle.Store(true)
		_, err := hr.br.Peek(1)
		st.idle.Store(false)
		if err != nil {
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(s.cfg.Limits.ReadHeaderTimeout))
		req, err := hr.next()
		// From here every read of the body sets the idle deadline
		// first (idleReader), and whatever else reads the connection
		// (the WebSocket relay, watchClient, lingerClose) sets its own.
		idle.armed = true
		if err != nil {
			if !errors.Is(err, io.EOF) && s.refuseMalformed(t, bw, err) {
				lingerClose(conn)
			}
			return
		}
		if !onOwnStack(&s.stacks, func() bool { return s.serveIntercepted(ctx, t, watch, conn, idle, hr.br, req, bw) }) {
			return
		}
	}
}

// tunnelTLSConfig presents a leaf for the CONNECT host and refuses a
// ClientHello that names a different server: URL host, Host header and SNI
// must all be the CONNECT target. inPod says the agent connected over
// loopback, from the sidecar's own network namespace: its handshake then
// uses classical key exchange (podCurves).
func (s *Server) tunnelTLSConfig(t *tunnel, inPod bool) *tls.Config {
	var curves []tls.CurveID // nil: crypto/tls's defaults, hybrid post-quantum first
	if inPod {
		curves = podCurves
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		NextProtos:       s.tunnelProtos(),
		CurvePreferences: curves,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			sni := injector.NormalizeHost(hello.ServerName)
			// Clients send no SNI when the target is an IP address
			// (RFC 6066 section 3); a name must match exactly.
			if sni != t.host && !(sni == "" && isIPLiteral(t.host)) {
				return nil, errSNIMismatch
			}
			return s.d.Certs.Leaf(t.host)
		},
	}
}

// podCurves are the key exchanges offered to an agent that connects over
// loopback. crypto/tls prefers hybrid post-quantum key exchange
// (X25519MLKEM768), which protects recorded traffic against a future
// quantum computer and costs the sidecar an ML-KEM encapsulation per
// handshake, and the agent a decapsulation: about 100 µs each here, a third
// of a handshake. Traffic over loopback never leaves the pod's network
// namespace, so nobody outside the pod can record it, and the CONNECT line
// before the handshake (and an assertion in Proxy-Authorization) crosses
// the same hop in clear anyway. Agents that reach the sidecar over a
// network keep the hybrid default. Upstream connections always do.
var podCurves = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}

// isLoopback reports whether addr is a TCP address on loopback.
func isLoopback(addr net.Addr) bool {
	a, ok := addr.(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// tunnelProtos are the protocols offered by ALPN inside intercepted
// tunnels.
func (s *Server) tunnelProtos() []string {
	if s.cfg.HTTP2.Enabled {
		return []string{"h2", "http/1.1"}
	}
	return []string{"http/1.1"}
}

func isIPLiteral(host string) bool { return net.ParseIP(strings.Trim(host, "[]")) != nil }

// Lingering close: after refusing a request the client may still be
// sending it; closing at once would reset the connection and could destroy
// the answer before the client reads it (as net/http's server also avoids).
const (
	lingerTimeout = 500 * time.Millisecond
	lingerBytes   = 2 << 20
)

// lingerClose half-closes conn and reads away what the client is still
// sending, within bounds, so the error response is delivered.
func lingerClose(conn *tls.Conn) {
	_ = conn.CloseWrite()
	_ = conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, conn, lingerBytes)
}

// refuseMalformed answers a request that could not be read safely and
// audits it; the connection is closed afterwards. It reports whether an
// answer was written.
func (s *Server) refuseMalformed(t *tunnel, w *bufio.Writer, err error) bool {
	ex := s.newExchange("", "https", t.target, "")
	if t.subject != nil {
		ex.setSubject(t.subject)
	}
	code, msg := CodeBadRequest, "the request could not be parsed safely: "
	switch {
	case errors.Is(err, errHeadTooLarge), errors.Is(err, errTooManyHeaders):
		code, msg = CodeHeaderTooLarge, "the request head is too large: "
	case errors.Is(err, errFraming), errors.Is(err, errMalformed), errors.Is(err, errHTTP2Preface):
	default:
		// Timeouts and resets: nobody is listening for an answer.
		if ce := s.log.Check(zap.DebugLevel, "tunnel read failed"); ce != nil {
			ce.Write(zap.String(logHost, t.host), zapErr(err))
		}
		return false
	}
	e := ex.fail(newError(code, msg+reason(err), err))
	resp := e.response(nil, ex.rec.DecisionID, false)
	resp.Close = true
	_ = resp.Write(w)
	_ = w.Flush()
	s.finish(ex, resp.StatusCode, resp.ContentLength)
	return true
}

// reason returns the first line of err's text, bounded: read errors name the
// framing problem, never data from the request.
func reason(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 160 {
		msg = msg[:160]
	}
	return msg
}

// serveIntercepted runs one request from an intercepted tunnel through the
// pipeline and writes the answer. It reports whether the connection may
// carry another request. watch is the tunnel's watch on its upstream
// calls. br reads the connection (a WebSocket relay takes it over).
func (s *Server) serveIntercepted(ctx context.Context, t *tunnel, watch *callWatch, conn net.Conn, idle *idleReader, br *bufio.Reader, req *http.Request, w *bufio.Writer) bool {
	ex := s.getExchange()
	reusable := false // set once nothing can hold ex any more
	defer s.releaseExchange(ex, &reusable)
	s.startExchange(ex, req.Method, "https", t.target, "")
	ex.watch = watch
	if isWebSocketUpgrade(req) {
		ex.rec.Protocol = policy.ProtocolWebSocket
	}
	ex.countBody(req)
	cont := expectContinue(req, w)
	body := &ownedBody{r: req.Body, closed: make(chan struct{}), eof: req.Body == http.NoBody}
	req.Body = body
	ctx, endSpan := s.startRequestSpan(ctx, ex)

	resp := s.interceptedResponse(ctx, t, ex, req)
	if cont != nil {
		// No 100 Continue may follow the final response.
		cont.stop()
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Only an allowed WebSocket upgrade gets here: the connection
		// is relayed until it closes, and never carries HTTP again. The
		// relay keeps its own idle clock, for both directions.
		idle.armed = false
		s.relayWebSocket(ctx, ex, conn.(*tls.Conn), br, w, resp)
		endSpan()
		return false
	}
	keep := !req.Close && !resp.Close
	// A body the client was never told to send is not waited for.
	if cont != nil && !cont.wasSent() && !ex.forwarded {
		keep = false
	}
	if !keep {
		resp.Close = true
	}
	// An event stream can be quiet for a long time: notice the client
	// leaving and end the upstream call, rather than waiting for the next
	// event to fail to write. Only when the request body is already the
	// tunnel's again, so nothing else reads the connection.
	var stopWatch func()
	if isEventStream(resp) && !ex.forwarded {
		idle.armed = false
		stopWatch = watchClient(conn, br, ex.abortCall)
	}
	n, err := writeResponse(w, resp, ex.rec.DecisionID)
	if stopWatch != nil {
		stopWatch()
	}

	// The transport may still be reading the request body after the
	// response arrived (an upstream may answer before reading it all). The
	// connection is reused only once the body is ours again and consumed;
	// the record (with the bytes read) is written after that.
	linger := false
	reusable = true
	if ex.forwarded && !body.waitClosed(bodyReleaseWait) {
		_ = conn.SetReadDeadline(time.Now()) // unblock a read in progress
		body.Close()
		keep = false
		reusable = false // the transport may still count the body's bytes in ex
	} else if !body.done() && (!keep || !drain(body.r, maxDrain)) {
		// The client may still be sending a body nobody read (a refused
		// request): close without resetting, so it reads the answer.
		keep, linger = false, true
	}
	s.finish(ex, resp.StatusCode, n)
	endSpan()
	if linger && err == nil {
		if tc, ok := conn.(*tls.Conn); ok {
			lingerClose(tc)
		}
	}
	return keep && err == nil
}

// isEventStream reports whether resp is a server-sent event stream.
func isEventStream(resp *http.Response) bool {
	ct := resp.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// watchClient reads ahead on the client's connection while a response
// streams, and calls gone when the client closes it (or the connection
// fails); bytes of a next, pipelined request stay buffered in br. The
// returned stop ends the watch and must be called before the tunnel reads
// br again. The caller disarms the idle reader first, so that no read
// deadline but stop's own is set meanwhile.
func watchClient(conn net.Conn, br *bufio.Reader, gone func()) (stop func()) {
	_ = conn.SetReadDeadline(time.Time{}) // the stream may be quiet for long
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := br.Peek(1)
		if err != nil && !stopping.Load() {
			gone()
		}
	}()
	return func() {
		stopping.Store(true)
		_ = conn.SetReadDeadline(time.Now()) // unblock the Peek
		<-done
	}
}

// bodyReleaseWait bounds how long the tunnel waits, after answering, for
// the transport to finish with a request body before giving up on the
// connection. Transports close a fully sent body at once.
const bodyReleaseWait = 100 * time.Millisecond

// ownedBody is a request body handed to the transport. Close waits for a
// read in progress and makes later reads fail, so once closed the tunnel
// can read the connection again without racing the transport.
type ownedBody struct {
	mu     sync.Mutex
	r      io.ReadCloser
	eof    bool
	once   sync.Once
	closed chan struct{}
}

var errBodyReleased = errors.New("request body released")

func (b *ownedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.closed:
		return 0, errBodyReleased
	default:
	}
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

func (b *ownedBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.once.Do(func() { close(b.closed) })
	return nil
}

func (b *ownedBody) done() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

func (b *ownedBody) waitClosed(d time.Duration) bool {
	select {
	case <-b.closed:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.closed:
		return true
	case <-t.C:
		return false
	}
}

// interceptedResponse is the pipeline for one intercepted request: bind,
// identify, route, decide, fetch the token, inject, audit, forward. Any
// failure becomes the agent-facing error response.
func (s *Server) interceptedResponse(ctx context.Context, t *tunnel, ex *exchange, req *http.Request) *http.Response {
	fail := func(e *Error) *http.Response {
		if ex.err == nil {
			ex.fail(e)
		}
		if ex.mcp != nil {
			return s.mcpRefusal(req, ex, e)
		}
		return e.response(req, ex.rec.DecisionID, false)
	}

	// 1. Bind the request to the tunnel target, and put its path in its
	// one canonical form: routes, policy, the audit record and the
	// upstream all see that form (docs/security.md, "One canonical path").
	path, e := bindTunnelRequest(t, req)
	ex.rec.Path = redactedPath(req.URL)
	if e != nil {
		return fail(e)
	}
	_, route, err := s.d.Routes.Decide(t.host, t.port, path)
	if err != nil {
		return fail(refusePath(err))
	}
	// An MCP route's refusals (identity ones included) are JSON-RPC errors;
	// a missing route is reported after identity, as before.
	if route != nil && route.MCP {
		ex.mcp = &mcpExchange{}
	}

	// 2. Identify.
	sub, err := s.identify(ctx, req.Header, t.subject)
	if err != nil {
		return fail(classify(err))
	}
	ex.setSubject(sub)

	// 3. Route. On an MCP route, read the JSON-RPC message(s) policy
	// decides on; a malformed body is refused and nothing is forwarded.
	if route == nil {
		return fail(newError(CodeNoRoute, "no route covers this path on this host; nothing was sent", nil))
	}
	ex.setRoute(route)
	if target, ok := lookalikeHeader(req.Header, []string{s.d.AssertionHeader}, route.CredentialHeaders()); ok {
		return fail(refuseLookalike(target))
	}
	if ex.mcp != nil {
		if e := s.readMCP(req, ex); e != nil {
			return fail(e)
		}
	}
	if ex.rec.Protocol == policy.ProtocolWebSocket && !route.WebSocket {
		return fail(newError(CodeBadRequest, "this route does not allow WebSocket connections (a route opts in with websocket: true); nothing was sent", nil))
	}

	// 4. Decide, before any grant is read (on an MCP route, once per
	// message).
	in := s.policyInput(req, ex, "https", t.target, t.source)
	decide := s.decide
	if ex.mcp != nil {
		decide = s.decideMCP
	}
	if e := decide(ctx, ex, in, route.ReportOnly); e != nil {
		return fail(e)
	}
	// 4a. Rate limits: configured, the policy's, and the provider's own
	// back-offs; a refused request reads no grant and sends nothing.
	if e := s.limit(ctx, ex, req.Method, path); e != nil {
		return fail(e)
	}

	// 5. Fetch the grant's token.
	if e := s.fetchToken(ctx, ex); e != nil {
		return fail(e)
	}

	// 6. Inject: strip what must not travel, replace credentials.
	out := outboundRequest(ex, req, t)
	sanitizeRequest(out.Header, s.d.AssertionHeader)
	route.Inject(out.Header, ex.token.Value)
	if s.cfg.ScrubResponses {
		narrowAcceptEncoding(out.Header)
	}
	rt := s.protocolTransport(ex, out.Header)

	// 7. Audit before the token leaves (fail-closed), and note the use.
	if e := s.auditInject(ex); e != nil {
		return fail(e)
	}
	if s.d.Uses != nil {
		s.d.Uses.Used(route.Provider, ex.subject.User, ex.subject.Agent, ex.start)
	}

	// Small bodies (most API calls) are read before forwarding: head and
	// body then go upstream in one write, and the tunnel's connection is
	// never read by another goroutine.
	var body []byte
	if ex.mcp != nil && ex.mcp.body != nil {
		body = ex.mcp.body // read whole before deciding
	} else if n := req.ContentLength; n > 0 && n <= maxBufferedBody {
		body = make([]byte, n)
		if _, err := io.ReadFull(req.Body, body); err != nil {
			return fail(newError(CodeBadRequest, "the request body ended before its Content-Length", err))
		}
	}

	// 8. Forward over verified TLS. A request whose body is in memory
	// goes through the sidecar's own HTTP/1.1 client; a streamed body
	// (and HTTP/2, when configured) through net/http's transport.
	streamed := body == nil && (req.ContentLength < 0 || req.ContentLength > maxBufferedBody)
	ex.forwarded = streamed && out.Body != http.NoBody
	_, st := s.startStage(ctx, metrics.StageUpstream)
	var resp *http.Response
	if rt == nil && s.upstream != nil && !streamed {
		user := ""
		if s.cfg.Upstream.Pool == PoolPerUser {
			user = ex.subject.User
		}
		resp, err = s.upstream.roundTrip(ctx, ex.watch, t.addr, user, out, body)
		if err == nil {
			ex.up, _ = resp.Body.(*upBody)
		}
	} else {
		// net/http's transports end a call by its request's context:
		// one of its own, which abortCall and endCall cancel.
		cctx, cancel := context.WithCancel(ctx)
		ex.cancel = cancel
		out = out.WithContext(cctx)
		if body != nil {
			// Keep it a *bytes.Reader behind io.NopCloser: net/http
			// knows that type never blocks, and only then writes head
			// and body together.
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		if rt != nil {
			// gRPC and WebSocket upgrades take a transport of their own.
			resp, err = rt.RoundTrip(out)
		} else {
			resp, err = s.streamTransport.RoundTrip(out)
		}
	}
	st.end()
	if err == nil {
		s.observeUpstream(ex, resp)
		err = checkSwitch(ex, resp)
	}
	// 9. Scrub: no secret of the grant reaches the agent, whatever the API
	// echoes. A 101's connection is the WebSocket relay's, which scrubs the
	// head and the frames itself.
	if err == nil && s.cfg.ScrubResponses && resp.StatusCode != http.StatusSwitchingProtocols {
		err = scrubResponse(resp, ex.token.ScrubSet(), &ex.scrubbed, &ex.scrub)
	}
	// 10. On an MCP route, list responses lose what policy would refuse
	// this user and agent to call.
	if err == nil && ex.mcp != nil {
		if f := s.newListFilter(ex, in, route.ReportOnly); f != nil {
			err = f.apply(ctx, resp)
		}
	}
	if err != nil {
		e := classify(err)
		s.logFailure(ex, e)
		return fail(e)
	}
	return resp
}

// bindTunnelRequest checks that req targets exactly the tunnel's host:port
// (Host header, and the URL host when absolute-form) with a path
// injector.CanonicalPath accepts, puts that path in canonical form in
// req.URL and returns it.
func bindTunnelRequest(t *tunnel, req *http.Request) (string, *Error) {
	if req.Method == http.MethodConnect {
		return "", newError(CodeBadRequest, "CONNECT is not allowed inside a tunnel", nil)
	}
	host, port, err := injector.SplitHostPort(req.Host, injector.DefaultPort)
	if err != nil || req.Host == "" {
		return "", newError(CodeBadRequest, "the request needs a Host header naming the tunnel target", err)
	}
	if host != t.host || port != t.port {
		return "", newError(CodeBadRequest, fmt.Sprintf("the Host header does not match the tunnel target %s", t.target), nil)
	}
	if req.URL.IsAbs() || req.URL.Host != "" {
		uh, up, err := injector.SplitHostPort(req.URL.Host, injector.DefaultPort)
		if err != nil || req.URL.Scheme != "https" || uh != t.host || up != t.port {
			return "", newError(CodeBadRequest, "the request URL does not match the tunnel target", err)
		}
	}
	if req.URL.Opaque != "" {
		return "", refusePath(injector.ErrAmbiguousPath)
	}
	path, err := injector.CanonicalPath(requestPath(req))
	if err != nil {
		return "", refusePath(err)
	}
	setPath(req.URL, path.Escaped)
	return path.Escaped, nil
}

// requestPath returns the path of req's request target as the client sent
// it (net/http's URL.EscapedPath may re-escape it): the part of an
// origin-form target before "?", or the path of an absolute-form one ("/"
// when it has none).
func requestPath(req *http.Request) string {
	rt := req.RequestURI
	if i := strings.IndexByte(rt, '?'); i >= 0 {
		rt = rt[:i]
	}
	if req.URL.IsAbs() {
		if i := strings.Index(rt, "://"); i >= 0 {
			rt = rt[i+3:]
			if j := strings.IndexByte(rt, '/'); j >= 0 {
				return rt[j:]
			}
			return "/"
		}
	}
	return rt
}

// refusePath is the answer to a path Routes.Decide or CanonicalPath
// refused; err names the problem without quoting the path.
func refusePath(err error) *Error {
	return newError(CodeBadRequest, "nothing was sent: "+err.Error(), err)
}

// setPath makes u's path the canonical escaped path. RawPath is kept even
// without escapes: net/http would otherwise re-escape characters such as
// "!" or "*" on the way out, and the API would get a path other than the
// one policy decided on (RFC 3986 does not make "%21" and "!" equal).
func setPath(u *url.URL, escaped string) {
	dec, err := url.PathUnescape(escaped)
	if err != nil { // CanonicalPath only returns valid escapes
		dec = escaped
	}
	u.Path, u.RawPath = dec, escaped
}

// outboundRequest turns an intercepted request into the request sent
// upstream, in ex: same method, path, query, headers and body, addressed to
// the tunnel target. Its context is req's; a call through net/http's
// transports gives it one of its own.
func outboundRequest(ex *exchange, req *http.Request, t *tunnel) *http.Request {
	// A shallow copy: the agent's request is not used again, so its header
	// map is edited in place (sanitised, credential replaced) rather than
	// cloned.
	ex.out = *req
	out := &ex.out
	ex.outURL = url.URL{
		Scheme:   "https",
		Host:     t.target,
		Path:     req.URL.Path,
		RawPath:  req.URL.RawPath,
		RawQuery: req.URL.RawQuery,
	}
	out.URL = &ex.outURL
	out.Host = out.URL.Host
	out.RequestURI = ""
	out.Close = false
	if req.ContentLength == 0 {
		out.Body = http.NoBody
	}
	// The client's Expect is answered by the proxy (expectContinue).
	out.Header.Del("Expect")
	return out
}

// redactedPath is the path and query as audited: secret-looking query
// parameters are redacted.
func redactedPath(u *url.URL) string {
	if u.RawQuery == "" {
		return u.EscapedPath()
	}
	return u.EscapedPath() + "?" + audit.RedactQuery(u.RawQuery)
}

// idleReader refreshes the connection's read deadline on every read while
// armed (during a request body), so an upload that keeps moving is never
// cut off while a stalled one is. Between requests the tunnel loop sets
// deadlines itself.
type idleReader struct {
	conn  net.Conn
	idle  time.Duration
	armed bool
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.armed {
		_ = r.conn.SetReadDeadline(time.Now().Add(r.idle))
	}
	return r.conn.Read(p)
}

// continueWriter answers "Expect: 100-continue" the first time the body is
// read, so a client waiting for permission to send does not stall, and a
// request refused before its body is read never gets the 100. The mutex
// keeps the 100 from racing the final response onto the connection.
type continueWriter struct {
	body io.ReadCloser
	w    *bufio.Writer
	mu   sync.Mutex
	sent bool
	done bool
}

func expectContinue(req *http.Request, w *bufio.Writer) *continueWriter {
	if !strings.EqualFold(req.Header.Get("Expect"), "100-continue") || req.ContentLength == 0 {
		return nil
	}
	c := &continueWriter{body: req.Body, w: w}
	req.Body = c
	return c
}

func (c *continueWriter) Read(p []byte) (int, error) {
	c.mu.Lock()
	if !c.sent && !c.done {
		c.sent = true
		_, err := c.w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err == nil {
			err = c.w.Flush()
		}
		if err != nil {
			c.mu.Unlock()
			return 0, err
		}
	}
	c.mu.Unlock()
	return c.body.Read(p)
}

func (c *continueWriter) Close() error { return c.body.Close() }

func (c *continueWriter) stop() {
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
}

func (c *continueWriter) wasSent() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent
}

// writeResponse writes resp to the client and returns the body bytes sent.
// The head is buffered into one write; the body is flushed each time the
// upstream makes the proxy wait, so streamed responses (server-sent events,
// long polls) reach the agent as they arrive.
func writeResponse(w *bufio.Writer, resp *http.Response, decisionID string) (int64, error) {
	defer resp.Body.Close()
	sanitizeResponse(resp.Header)
	resp.Header.Set(headerDecisionID, decisionID)
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	if resp.ContentLength < 0 && resp.Request != nil && resp.Request.Method != http.MethodHead {
		resp.TransferEncoding = []string{"chunked"}
	}
	// A body of known, modest size goes out with the head in as few
	// writes as possible; anything else may be a stream.
	body := &flushingBody{r: resp.Body, w: w, flush: resp.ContentLength < 0 || resp.ContentLength > streamThreshold}
	resp.Body = body
	ok, err := writeResponseFast(w, resp)
	if !ok {
		err = resp.Write(w)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return body.n, err
}

// streamThreshold is the Content-Length above which a response body is
// flushed as it arrives rather than coalesced with the head.
const streamThreshold = 64 << 10

type flushingBody struct {
	r     io.ReadCloser
	w     *bufio.Writer
	n     int64
	flush bool
}

func (b *flushingBody) Read(p []byte) (int, error) {
	if b.flush && b.w.Buffered() > 0 {
		if err := b.w.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *flushingBody) Close() error { return b.r.Close() }
