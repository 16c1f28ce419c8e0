package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onbehalf-dev/onbehalf/policy"
)

// WebSocket on routed hosts (routes opt in with websocket: true).
//
// The upgrade request is one pass through the pipeline, like any request:
// bound, identified, routed, decided (input.request.upgrade is
// "websocket"), injected, and audited before the token leaves when audit
// is fail-closed. Only its hop-by-hop headers are treated differently: the
// sidecar sends exactly "Connection: Upgrade" and "Upgrade: websocket"
// upstream (whatever the agent wrote), passes Sec-WebSocket-Key, -Version
// and -Protocol untouched, and removes the assertion and the agent's
// credentials as always. It drops Sec-WebSocket-Extensions: a compressed
// frame (permessage-deflate) could carry an echoed token the sidecar
// cannot see.
//
// After the API answers 101 the sidecar relays bytes both ways. Frames
// from the agent pass untouched. Frames from the API are read (not
// reassembled: each byte is relayed once its frame's header is known) so
// that the secrets of the grant can be overwritten wherever the API echoes
// them — data and control payloads, across frame boundaries (see
// wsScrubber). The connection stays the user's and agent's who opened it:
// nothing on it is decided again, so it is closed after
// proxy.websocket.max_lifetime, after proxy.websocket.idle_timeout without
// a byte either way, and within token_cache.ttl plus
// proxy.websocket.revocation_check of the user's grant being revoked. The request's audit record is written when it closes, with the
// bytes each way and the duration.

// wsWatchMax is the longest a relay's watchdog sleeps: a shutting-down
// sidecar closes its WebSockets within it.
const wsWatchMax = 10 * time.Second

// errWSUnscrubbable ends a relay whose API frames the sidecar cannot read
// (masked, or using an extension it did not negotiate).
var errWSUnscrubbable = errors.New("websocket frame the sidecar cannot inspect")

// isWebSocketUpgrade reports whether req asks to open a WebSocket.
func isWebSocketUpgrade(req *http.Request) bool {
	return req.ProtoMajor == 1 && headerHasToken(req.Header, "Connection", "upgrade") &&
		headerHasToken(req.Header, "Upgrade", "websocket")
}

// headerHasToken reports whether a comma-separated header lists token
// (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(part), token) {
				return true
			}
		}
	}
	return false
}

// prepareWebSocket sets the upgrade headers on an outbound upgrade request
// whose headers have been sanitised.
func prepareWebSocket(h http.Header) {
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	h.Del("Sec-Websocket-Extensions")
}

// wsUpgraded checks an API's 101 answer to an upgrade request: it must
// switch to websocket and accept no extension (none was offered).
func wsUpgraded(resp *http.Response) error {
	refuse := func(msg string) error {
		return newError(CodeUpstreamUnreachable, "the upstream's WebSocket handshake answer cannot be relayed: "+msg, nil)
	}
	if !headerHasToken(resp.Header, "Upgrade", "websocket") {
		return refuse("it switched to a protocol other than websocket")
	}
	if resp.Header.Get("Sec-Websocket-Extensions") != "" {
		return refuse("it accepted a WebSocket extension the sidecar did not offer")
	}
	if _, ok := resp.Body.(io.ReadWriteCloser); !ok {
		return refuse("its connection cannot be taken over")
	}
	return nil
}

// relayWebSocket finishes an upgraded exchange: it answers the agent with
// the API's 101 and relays both ways until either side closes, the
// connection idles out, reaches its lifetime, or its grant is revoked.
// clientR reads the agent's connection (it may hold bytes the agent sent
// after the upgrade request). The request record is written at the end.
func (s *Server) relayWebSocket(ctx context.Context, ex *exchange, conn *tls.Conn, clientR *bufio.Reader, w *bufio.Writer, resp *http.Response) {
	up := resp.Body.(io.ReadWriteCloser)
	defer up.Close()
	// Every secret of the grant, as the HTTP response path scrubs.
	secrets := []string{ex.token.Value}
	for _, sec := range ex.token.Secrets {
		if sec != "" {
			secrets = append(secrets, sec)
		}
	}

	// The 101 goes out as the API wrote it, less hop-by-hop headers (the
	// upgrade pair is set again) and any secret it echoes.
	sanitizeResponse(resp.Header)
	ex.scrubbed += scrubHeaderSecrets(resp.Header, secrets)
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", "websocket")
	resp.Header.Set(headerDecisionID, ex.rec.DecisionID)
	// The head is written by hand: net/http's Response.Write frames a
	// body and would say "Connection: close".
	w.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	err := resp.Header.Write(w)
	if err == nil {
		_, err = w.WriteString("\r\n")
	}
	if err != nil || w.Flush() != nil {
		s.finish(ex, http.StatusSwitchingProtocols, 0)
		return
	}
	_ = conn.SetDeadline(time.Time{})

	s.d.Metrics.WebSocketOpened()
	defer s.d.Metrics.WebSocketClosed()
	r := &wsRelay{
		client: conn, up: up,
		idle: s.cfg.WebSocket.IdleTimeout,
		sc:   newWSScrubber(secrets),
	}
	r.touch()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.fromClient(clientR) }()
	go func() { defer wg.Done(); r.fromUpstream() }()
	go func() { wg.Wait(); close(done) }()

	why := s.watchWebSocket(ctx, ex, r, done)
	r.closeAll()
	<-done
	if why != "" {
		ex.rec.Reason = why
	}
	ex.bytesIn.n += r.in.Load() // finish records it as bytes_in
	ex.scrubbed += r.sc.count
	s.finish(ex, http.StatusSwitchingProtocols, r.out.Load())
}

// Close codes the sidecar sends the agent when it ends a WebSocket itself
// (RFC 6455 section 7.4.1).
const (
	wsCloseGoingAway      = 1001
	wsClosePolicyViolated = 1008
)

// watchWebSocket waits for the relay to end, and ends it on idle,
// lifetime, revocation or shutdown. It returns why the sidecar ended it,
// or "" when a side closed.
func (s *Server) watchWebSocket(ctx context.Context, ex *exchange, r *wsRelay, done <-chan struct{}) string {
	lifetime := time.NewTimer(s.cfg.WebSocket.MaxLifetime)
	defer lifetime.Stop()
	tick := time.NewTicker(min(s.cfg.WebSocket.IdleTimeout/4, s.cfg.WebSocket.RevocationCheck, wsWatchMax))
	defer tick.Stop()
	lastCheck := time.Now()
	for {
		select {
		case <-done:
			return ""
		case <-ctx.Done():
			r.sendClose(wsCloseGoingAway, "onbehalf: the sidecar is shutting down")
			return "closed by the sidecar: shutting down"
		case <-lifetime.C:
			r.sendClose(wsCloseGoingAway, "onbehalf: maximum connection lifetime reached")
			return "closed by the sidecar: proxy.websocket.max_lifetime reached"
		case now := <-tick.C:
			if s.closing.Load() {
				r.sendClose(wsCloseGoingAway, "onbehalf: the sidecar is shutting down")
				return "closed by the sidecar: shutting down"
			}
			if now.Sub(r.lastActive()) >= s.cfg.WebSocket.IdleTimeout {
				r.sendClose(wsCloseGoingAway, "onbehalf: idle timeout")
				return "closed by the sidecar: proxy.websocket.idle_timeout reached"
			}
			if now.Sub(lastCheck) < s.cfg.WebSocket.RevocationCheck {
				continue
			}
			lastCheck = now
			if e := s.grantGone(ctx, ex); e != nil {
				r.sendClose(wsClosePolicyViolated, "onbehalf: "+string(e.Code))
				return "closed by the sidecar: " + string(e.Code)
			}
		}
	}
}

// grantGone returns the error when the grant a WebSocket was opened with
// has been revoked or needs reconnecting; transient failures (a store
// blip) keep the connection.
func (s *Server) grantGone(ctx context.Context, ex *exchange) *Error {
	_, err := s.d.Tokens.Token(ctx, tokenRequest(ex))
	if err == nil {
		return nil
	}
	if e := classify(err); e.Code == CodeGrantMissing || e.Code == CodeReconnectRequired {
		return e
	}
	return nil
}

// wsRelay is one upgraded connection being relayed.
type wsRelay struct {
	client *tls.Conn
	up     io.ReadWriteCloser
	idle   time.Duration
	sc     *wsScrubber

	in, out atomic.Int64 // bytes agent→API, API→agent
	active  atomic.Int64 // unix nanoseconds of the last byte either way

	wmu       sync.Mutex // serialises writes to the agent
	closeOnce sync.Once
}

func (r *wsRelay) touch()                { r.active.Store(time.Now().UnixNano()) }
func (r *wsRelay) lastActive() time.Time { return time.Unix(0, r.active.Load()) }

// closeAll ends both directions.
func (r *wsRelay) closeAll() {
	r.closeOnce.Do(func() {
		r.up.Close()
		_ = r.client.CloseWrite()
		r.client.Close()
	})
}

// fromClient relays the agent's bytes to the API untouched.
func (r *wsRelay) fromClient(src *bufio.Reader) {
	defer r.closeAll()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.touch()
			if _, werr := r.up.Write(buf[:n]); werr != nil {
				return
			}
			r.in.Add(int64(n))
		}
		if err != nil {
			return
		}
	}
}

// fromUpstream relays the API's frames to the agent, scrubbed.
func (r *wsRelay) fromUpstream() {
	defer r.closeAll()
	buf := make([]byte, 32<<10)
	var out []byte
	for {
		n, err := r.up.Read(buf)
		if n > 0 {
			r.touch()
			var ferr error
			r.wmu.Lock()
			out, ferr = r.sc.feed(out[:0], buf[:n])
			if len(out) > 0 {
				_ = r.client.SetWriteDeadline(time.Now().Add(r.idle))
				if _, werr := r.client.Write(out); werr != nil {
					ferr = werr
				}
				r.out.Add(int64(len(out)))
			}
			r.wmu.Unlock()
			if ferr != nil {
				if errors.Is(ferr, errWSUnscrubbable) {
					r.sendClose(wsClosePolicyViolated, "onbehalf: "+ferr.Error())
				}
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// sendClose sends the agent a close frame when the API's stream is
// between frames (a frame cannot be cut in two); otherwise the connection
// just closes.
func (r *wsRelay) sendClose(code int, reason string) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if !r.sc.atBoundary() {
		return
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	f := make([]byte, 0, 4+len(reason))
	f = append(f, 0x88, byte(2+len(reason)), byte(code>>8), byte(code))
	f = append(f, reason...)
	_ = r.client.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = r.client.Write(f)
}

// scrubHeaderSecrets overwrites every secret in header values and drops a
// header whose name holds one.
func scrubHeaderSecrets(h http.Header, secrets []string) int {
	n := 0
headers:
	for name, vs := range h {
		for _, sec := range secrets {
			if len(sec) >= minSecretLen && strings.Contains(name, sec) {
				delete(h, name)
				n++
				continue headers
			}
		}
		for i, v := range vs {
			for _, sec := range secrets {
				if len(sec) >= minSecretLen && strings.Contains(v, sec) {
					n += strings.Count(v, sec)
					v = strings.ReplaceAll(v, sec, replacement(len(sec)))
				}
			}
			vs[i] = v
		}
	}
	return n
}

// protocolTransport prepares an outbound request's headers for the
// protocol the agent speaks and returns the transport that carries it, or
// nil for the default ones: gRPC needs HTTP/2 upstream and keeps
// "te: trailers"; a WebSocket upgrade needs HTTP/1.1 and net/http's
// transport, which hands over the connection after 101.
func (s *Server) protocolTransport(ex *exchange, h http.Header) http.RoundTripper {
	switch ex.rec.Protocol {
	case policy.ProtocolGRPC:
		h.Set("Te", "trailers")
		return s.h2Transport
	case policy.ProtocolWebSocket:
		prepareWebSocket(h)
		return s.transport
	}
	return nil
}

// checkSwitch refuses a protocol switch the request did not ask for, and a
// WebSocket handshake answer the sidecar cannot relay.
func checkSwitch(ex *exchange, resp *http.Response) error {
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil
	}
	err := errors.New("unexpected 101 Switching Protocols")
	if ex.rec.Protocol == policy.ProtocolWebSocket {
		err = wsUpgraded(resp)
	}
	if err != nil {
		resp.Body.Close()
	}
	return err
}
