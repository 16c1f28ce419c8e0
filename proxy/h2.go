package proxy

//lint:file-ignore SA1019 x/net/http2's Server is deprecated in favour of net/http's own HTTP/2, but net/http has no way to serve one connection that is already accepted and handshaken (an intercepted tunnel); x/net's ServeConn does, and from Go 1.27 it runs net/http's implementation underneath.

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/policy"
)

// HTTP/2 from the agent inside an intercepted tunnel. The client picks h2
// by ALPN (offered when proxy.http2.enabled); golang.org/x/net/http2 then
// serves the connection, and every stream is one pass through the same
// pipeline as an HTTP/1.1 request (interceptedResponse): bound to the
// CONNECT target (:authority = Host = SNI), identified by its own
// assertion (or the one given on CONNECT), routed, decided, injected and
// audited on its own. Streams of one connection may act for different
// users; each record names its own.
//
// What the library already bounds, in the pinned version: concurrent
// streams (SETTINGS_MAX_CONCURRENT_STREAMS), the header list
// (SETTINGS_MAX_HEADER_LIST_SIZE, from limits.max_header_bytes, and the
// CONTINUATION flood of CVE-2023-45288), queued control frames (SETTINGS
// and PING floods), and handler goroutines: at most one per allowed stream,
// with streams beyond that queued (at most four times as many) and
// dropped without a handler when reset while queued — its fix for the
// rapid-reset attack (CVE-2023-44487). What it does not bound is the work
// a client makes the sidecar do by opening a stream, letting its handler
// start a pipeline pass (assertion, policy, token, upstream dial) and
// resetting it at once, over and over. The sidecar counts streams reset by
// the client before their response finished and closes a connection that
// resets more than proxy.http2.max_resets within resetWindow. It also
// bounds the header field count (limits.max_header_count), which HTTP/2's
// byte limit does not.

// resetWindow is the period over which a connection's client-reset
// streams are counted. Ten seconds spans the bursts of a client that
// cancels a batch of calls, and is short enough that an attack is cut off
// after at most max_resets wasted pipeline passes.
const resetWindow = 10 * time.Second

// h2Conn is one agent HTTP/2 connection's state.
type h2Conn struct {
	s    *Server
	t    *tunnel
	conn *tls.Conn
	st   *connState

	active atomic.Int32 // streams whose handler is running

	mu          sync.Mutex
	resets      int
	windowStart time.Time
	closed      bool
}

// serveH2 serves an intercepted tunnel on which the client negotiated h2,
// until the client leaves, idles out or abuses it.
func (s *Server) serveH2(ctx context.Context, t *tunnel, conn *tls.Conn, st *connState) {
	c := &h2Conn{s: s, t: t, conn: conn, st: st}
	st.idle.Store(true)
	s.h2.srv.ServeConn(conn, &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: s.h2.base,
		Handler:    http.HandlerFunc(c.serveStream),
	})
}

// h2Server is the HTTP/2 server configuration every agent connection is
// served with (http2.Server is safe for concurrent ServeConn calls).
type h2Server struct {
	srv  *http2.Server
	base *http.Server
}

func (s *Server) newH2Server() h2Server {
	return h2Server{
		srv: &http2.Server{
			MaxConcurrentStreams: uint32(s.cfg.HTTP2.MaxConcurrentStreams),
			IdleTimeout:          s.cfg.Limits.IdleTimeout,
			// A client that stops reading its responses is cut off
			// rather than holding the connection's buffers.
			WriteByteTimeout: s.cfg.Limits.IdleTimeout,
			CountError: func(errType string) {
				if ce := s.log.Check(zap.DebugLevel, "http/2 protocol error"); ce != nil {
					ce.Write(zap.String("type", errType))
				}
			},
		},
		base: &http.Server{
			// The HTTP/2 server advertises this as
			// SETTINGS_MAX_HEADER_LIST_SIZE and refuses larger header
			// lists.
			MaxHeaderBytes: s.cfg.Limits.MaxHeaderBytes,
			ErrorLog:       zap.NewStdLog(s.log.Named("http2")),
		},
	}
}

// serveStream runs one stream through the pipeline and writes its answer.
func (c *h2Conn) serveStream(w http.ResponseWriter, req *http.Request) {
	s, t := c.s, c.t
	if c.active.Add(1) == 1 {
		c.st.idle.Store(false)
	}
	defer func() {
		if c.active.Add(-1) == 0 {
			c.st.idle.Store(true)
		}
	}()
	protocol := policy.ProtocolH2
	if isGRPC(req) {
		protocol = policy.ProtocolGRPC
	}
	ex := s.newExchange(req.Method, "https", t.target, "")
	ex.rec.Protocol = protocol
	ex.countBody(req)
	ctx, endSpan := s.startRequestSpan(req.Context(), ex)
	defer endSpan()
	defer ex.endCall()

	var resp *http.Response
	if e := checkStream(t, req, s.cfg.Limits.MaxHeaderCount); e != nil {
		ex.rec.Path = redactedPath(req.URL)
		ex.fail(e)
		resp = e.response(req, ex.rec.DecisionID, false)
	} else {
		resp = s.interceptedResponse(ctx, t, ex, req)
	}
	var n int64
	if protocol == policy.ProtocolGRPC && ex.err != nil {
		// A refusal the client can read: a gRPC status, not a page.
		resp.Body.Close()
		writeGRPCStatus(w, ex.err, ex.rec.DecisionID)
		resp.StatusCode = http.StatusOK
	} else {
		n, _ = writeH2Response(w, resp, ex.rec.DecisionID)
	}
	if req.Context().Err() != nil {
		c.clientReset()
	}
	s.finish(ex, resp.StatusCode, n)
}

// clientReset counts a stream the client reset (or abandoned with the
// connection) before its answer was complete, and closes the connection
// when there have been more than max_resets within resetWindow.
func (c *h2Conn) clientReset() {
	now := c.s.d.Now()
	c.mu.Lock()
	if now.Sub(c.windowStart) > resetWindow {
		c.windowStart, c.resets = now, 0
	}
	c.resets++
	over := c.resets > c.s.cfg.HTTP2.MaxResets && !c.closed
	if over {
		c.closed = true
	}
	c.mu.Unlock()
	if over {
		c.s.d.Metrics.H2Closed("rapid_reset")
		c.s.log.Warn("closing an HTTP/2 connection that resets too many streams",
			zap.String(logHost, c.t.host), zap.Int("max_resets", c.s.cfg.HTTP2.MaxResets))
		c.conn.Close()
	}
}

// checkStream refuses what the HTTP/2 server lets through but the tunnel
// must not: a stream over plain http (:scheme http), a Host header that
// differs from :authority, and more header fields than
// limits.max_header_count. The :authority itself (req.Host) and the path
// are checked by bindTunnelRequest, as for HTTP/1.1.
func checkStream(t *tunnel, req *http.Request, maxCount int) *Error {
	if req.TLS == nil {
		return newError(CodeBadRequest, "HTTP/2 requests inside the tunnel must use :scheme https", nil)
	}
	for _, v := range req.Header.Values("Host") {
		if injector.NormalizeHost(v) != injector.NormalizeHost(req.Host) {
			return newError(CodeBadRequest, "the Host header differs from :authority", nil)
		}
	}
	n := 0
	for _, vs := range req.Header {
		n += len(vs)
	}
	if n > maxCount {
		return newError(CodeHeaderTooLarge, "the request head is too large: "+errTooManyHeaders.Error(), errTooManyHeaders)
	}
	return nil
}

// h2CopyBufs are the buffers streams copy response bodies through (one
// per stream would cost an allocation of its size per request).
var h2CopyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// writeH2Response writes resp on an HTTP/2 stream and returns the body
// bytes sent. Like writeResponse it flushes a streamed body as it arrives;
// trailers (gRPC's status among them) follow the body.
func writeH2Response(w http.ResponseWriter, resp *http.Response, decisionID string) (int64, error) {
	defer resp.Body.Close()
	sanitizeResponse(resp.Header)
	delete(resp.Header, "Transfer-Encoding")
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	h.Set(headerDecisionID, decisionID)
	if resp.ContentLength >= 0 && h.Get("Content-Length") == "" && resp.Request != nil && resp.Request.Method != http.MethodHead {
		h.Set("Content-Length", itoa64(resp.ContentLength))
	}
	w.WriteHeader(resp.StatusCode)
	flush := resp.ContentLength < 0 || resp.ContentLength > streamThreshold
	rc := http.NewResponseController(w)
	var n int64
	var err error
	bp := h2CopyBufs.Get().(*[]byte)
	defer h2CopyBufs.Put(bp)
	buf := *bp
	for {
		k, rerr := resp.Body.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				err = werr
				break
			}
			n += int64(k)
			if flush {
				if ferr := rc.Flush(); ferr != nil {
					err = ferr
					break
				}
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	if err == nil {
		for k, vs := range resp.Trailer {
			for _, v := range vs {
				h.Add(http.TrailerPrefix+k, v)
			}
		}
	}
	return n, err
}
