package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// upstreamClient sends intercepted requests whose body is already in memory
// to their API over HTTP/1.1, on pooled, verified TLS connections, from the
// calling goroutine. net/http.Transport hands every request to two
// goroutines of its connection (one writes, one reads) and back; on the
// sidecar's hot path those hand-offs and their channels cost about as much
// CPU as parsing the response. Framing stays net/http's: requests are
// written as [http.Request.Write] writes them (writeRequest) and responses
// read with [http.ReadResponse].
//
// Streamed request bodies, Expect: 100-continue and HTTP/2 stay with
// net/http.Transport, which handles them. upstreamClient is safe for
// concurrent use; a connection is used by one request at a time.
type upstreamClient struct {
	dial                  func(ctx context.Context, network, addr string) (net.Conn, error)
	tls                   *tls.Config // roots and minimum version; ServerName is set per host
	handshakeTimeout      time.Duration
	responseHeaderTimeout time.Duration
	idleTimeout           time.Duration
	maxIdlePerHost        int
	maxIdle               int // over all keys
	maxHeaderBytes        int64
	// sessions holds TLS sessions to resume (see keyedSessions), so a
	// new connection to a host the sidecar has talked to, or to another
	// name its server's certificate covers, costs an abbreviated
	// handshake.
	sessions tls.ClientSessionCache

	mu      sync.Mutex
	idle    map[string][]*upConn // by pool key, most recently used last
	nIdle   int                  // connections in idle
	closed  bool
	janitor *time.Timer // closes connections idle longer than idleTimeout
	armed   bool
}

// upConn is one pooled upstream connection.
type upConn struct {
	addr      string // host:port dialled
	key       string // pool key (poolKey)
	conn      *tls.Conn
	peek      *socketPeek // the TCP connection's, for the liveness check; nil when it is no socket
	rec       *recordConn // between the TCP connection and conn: TLS reads no further than a record
	lim       headLimit   // between conn and br: bounds a response head
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// maxIdleFactor sets the bound on idle connections over all pool keys, as a
// multiple of the per-key bound: an agent talks to few hosts, but with
// pool per_user each user of each host has a key.
const maxIdleFactor = 16

// upstreamSessionCacheSize bounds the TLS sessions kept for resumption:
// the most recent per pool key (host, or host and user with pool
// per_user) and per server address (keyedSessions); an agent talks to a
// few hosts, for at most thousands of users, and a session is a few
// hundred bytes.
const upstreamSessionCacheSize = 4096

// upstreamBufferSize sizes each connection's read and write buffers: a
// request or response head fits, as do the small bodies of most API calls.
const upstreamBufferSize = 4 << 10

func newUpstreamClient(c UpstreamConfig, dial func(ctx context.Context, network, addr string) (net.Conn, error), tlsConf *tls.Config) *upstreamClient {
	conf := tlsConf.Clone()
	conf.NextProtos = []string{"http/1.1"}
	u := &upstreamClient{
		dial:                  dial,
		tls:                   conf,
		handshakeTimeout:      c.TLSHandshakeTimeout,
		responseHeaderTimeout: c.ResponseHeaderTimeout,
		idleTimeout:           c.IdleConnTimeout,
		maxIdlePerHost:        c.MaxIdleConnsPerHost,
		maxIdle:               c.MaxIdleConnsPerHost * maxIdleFactor,
		maxHeaderBytes:        int64(c.MaxResponseHeaderBytes),
		idle:                  map[string][]*upConn{},
		sessions:              conf.ClientSessionCache,
	}
	if u.sessions == nil {
		u.sessions = tls.NewLRUClientSessionCache(upstreamSessionCacheSize)
	}
	u.janitor = time.AfterFunc(time.Hour, u.closeExpired)
	u.janitor.Stop()
	return u
}

// roundTrip sends req, whose body is body (nil for none), to addr
// (host:port) over HTTPS and returns the response. Connections are pooled
// by addr, and by user too unless user is empty: with pool per_user, no
// connection or TLS session is shared between users. The response body
// must be closed; the
// connection goes back to the pool when the body was read to its end and
// nothing arrived after it.
// A request that fails on a reused connection before any of the response
// arrived is sent once more on a new connection when its method is
// idempotent, as net/http does.
//
// The call ends early when ctx ends, or, when w is not nil, when w ends: a
// caller that makes one call at a time on a long-lived context (an
// HTTP/1.1 tunnel) keeps one callWatch for all of them.
func (u *upstreamClient) roundTrip(ctx context.Context, w *callWatch, addr, user string, req *http.Request, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		uc, reused, err := u.get(ctx, addr, user)
		if err != nil {
			return nil, err
		}
		resp, err := u.send(ctx, w, uc, req, body)
		if err == nil {
			return resp, nil
		}
		uc.conn.Close()
		if !reused || attempt > 0 || !retryable(req, err) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// retryable reports whether err, from a reused connection, means the
// server closed it before answering, and req may be sent again.
func retryable(req *http.Request, err error) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		if req.Header.Get("Idempotency-Key") == "" && req.Header.Get("X-Idempotency-Key") == "" {
			return false
		}
	}
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// send writes req on uc and reads the response head.
func (u *upstreamClient) send(ctx context.Context, w *callWatch, uc *upConn, req *http.Request, body []byte) (*http.Response, error) {
	// A cancelled request (the agent went away, the sidecar is shutting
	// down) unblocks whatever read or write is in progress.
	b := &upBody{u: u, uc: uc, w: w}
	if w == nil {
		b.stop = context.AfterFunc(ctx, uc.cut)
	} else if !w.hold(uc) {
		return nil, fmt.Errorf("write request to %s: %w", uc.addr, net.ErrClosed)
	}
	// writeRequest leaves uc.bw unflushed: head and small body go out in
	// one write(2) at Flush.
	err := writeRequest(uc.bw, req, body)
	if err == nil {
		err = uc.bw.Flush()
	}
	if err != nil {
		b.unwatch()
		return nil, fmt.Errorf("write request to %s: %w", uc.addr, err)
	}
	if u.responseHeaderTimeout > 0 {
		uc.conn.SetReadDeadline(time.Now().Add(u.responseHeaderTimeout))
	}
	resp, err := u.readResponse(uc, req)
	if err != nil {
		b.unwatch()
		return nil, fmt.Errorf("read response from %s: %w", uc.addr, err)
	}
	if u.responseHeaderTimeout > 0 {
		uc.conn.SetReadDeadline(time.Time{})
	}
	b.r, b.reuse = resp.Body, !resp.Close && !req.Close
	resp.Body = b
	return resp, nil
}

// cut makes whatever read or write is in progress on uc fail at once.
func (uc *upConn) cut() { uc.conn.SetDeadline(time.Unix(1, 0)) }

// callWatch ends the upstream call in flight, if any, when its owner ends
// (end): one watch serves all the calls an HTTP/1.1 tunnel makes one after
// another, where a context.AfterFunc per call would take and release a
// registration on the tunnel's context every time.
type callWatch struct {
	mu    sync.Mutex
	uc    *upConn // the call in flight; nil between calls
	ended bool
}

// hold makes uc the call in flight; it reports false, and holds nothing,
// once the watch has ended.
func (w *callWatch) hold(uc *upConn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return false
	}
	w.uc = uc
	return true
}

// release ends the hold on the call in flight. It reports false when the
// watch ended during the call: the connection may have been cut short.
func (w *callWatch) release() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.uc = nil
	return !w.ended
}

// end cuts the call in flight, and refuses every later one.
func (w *callWatch) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
	if w.uc != nil {
		w.uc.cut()
	}
}

// max1xxResponses bounds the informational responses skipped before the
// final one, as net/http does: a server that sends them without end would
// otherwise hold the request until the response-header timeout.
const max1xxResponses = 5

// readResponse reads the final response to req from uc, skipping
// informational (1xx) ones; a protocol switch is refused, since the tunnel
// relays HTTP only and the request never asked for one (hop-by-hop headers
// such as Upgrade are removed before forwarding). Each head is bounded by
// maxHeaderBytes: net/http's parser has no limit of its own, and would
// hold a header line of any length in memory.
func (u *upstreamClient) readResponse(uc *upConn, req *http.Request) (*http.Response, error) {
	for n := 0; ; n++ {
		uc.lim.arm(u.maxHeaderBytes)
		resp, err := http.ReadResponse(uc.br, req)
		exceeded := uc.lim.exceeded()
		uc.lim.disarm()
		switch {
		case exceeded:
			if resp != nil {
				resp.Body.Close()
			}
			return nil, fmt.Errorf("%w (over %d bytes)", errResponseHeaderTooLarge, u.maxHeaderBytes)
		case err != nil:
			return nil, err
		case resp.StatusCode == http.StatusSwitchingProtocols:
			resp.Body.Close()
			return nil, fmt.Errorf("%w: unexpected 101 Switching Protocols", errUpstreamInvalid)
		case resp.StatusCode >= 100 && resp.StatusCode < 200:
			resp.Body.Close()
			if n >= max1xxResponses {
				return nil, fmt.Errorf("%w: more than %d informational responses", errUpstreamInvalid, max1xxResponses)
			}
			continue
		}
		return resp, nil
	}
}

// headLimit bounds what is read from a connection while a response head is
// being parsed, the way net/http.Transport bounds its own: armed, it lets
// through at most n bytes and then fails every read; disarmed, it passes
// reads through. Bytes the buffered reader reads ahead into the body count
// against the head; the limit is far above a buffer's size.
type headLimit struct {
	r     io.Reader
	n     int64
	armed bool
	hit   bool // a read was refused since arm
	// filled says the last read returned as many bytes as asked: TLS may
	// hold more of that record (see upConn.idle).
	filled bool
}

// errHeadLimit ends a read that would take a response head past the limit.
var errHeadLimit = errors.New("response head over the limit")

func (l *headLimit) arm(n int64) { l.n, l.armed, l.hit = n, true, false }
func (l *headLimit) disarm()     { l.armed = false }

// exceeded reports whether a read was refused since arm: the head did not
// end within the limit.
func (l *headLimit) exceeded() bool { return l.hit }

func (l *headLimit) Read(p []byte) (int, error) {
	if !l.armed {
		n, err := l.r.Read(p)
		l.filled = n == len(p)
		return n, err
	}
	if l.n <= 0 {
		l.hit = true
		return 0, errHeadLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	l.filled = n == len(p)
	return n, err
}

// poolKey is the key connections to addr are pooled under: the address,
// and the user when connections are not shared between users.
func poolKey(addr, user string) string {
	if user == "" {
		return addr
	}
	return addr + "\x00" + user
}

// get returns a live pooled connection to addr for user (see roundTrip),
// or dials a new one. A pooled connection is checked again here, right
// before the request is written on it: a late response may have arrived
// since it was put back.
func (u *upstreamClient) get(ctx context.Context, addr, user string) (uc *upConn, reused bool, err error) {
	key := poolKey(addr, user)
	now := time.Now()
	for {
		u.mu.Lock()
		conns := u.idle[key]
		if len(conns) == 0 {
			u.mu.Unlock()
			break
		}
		uc = conns[len(conns)-1]
		conns[len(conns)-1] = nil
		u.idle[key] = conns[:len(conns)-1]
		u.nIdle--
		u.mu.Unlock()
		if now.Sub(uc.idleSince) < u.idleTimeout && uc.idleStill() {
			return uc, true, nil
		}
		uc.conn.Close()
	}
	uc, err = u.connect(ctx, addr, user)
	return uc, false, err
}

// connect dials addr (through the egress guard) and completes a verified
// TLS handshake, resuming a session of the user's (see keyedSessions)
// when it holds one.
func (u *upstreamClient) connect(ctx context.Context, addr, user string) (*upConn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("upstream address %s: %w", addr, err)
	}
	raw, err := u.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conf := u.tls.Clone()
	conf.ServerName = host
	key := poolKey(addr, user)
	conf.ClientSessionCache = keyedSessions{
		cache: u.sessions,
		name:  key + "\x00",
		peer:  "\x01" + user + "\x00" + raw.RemoteAddr().String(),
	}
	rec := &recordConn{Conn: raw}
	conn := tls.Client(rec, conf)
	hctx, cancel := context.WithTimeout(ctx, u.handshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	uc := &upConn{
		addr: addr, key: key, conn: conn, rec: rec,
		peek: newSocketPeek(raw),
		bw:   bufio.NewWriterSize(conn, upstreamBufferSize),
	}
	uc.lim.r = conn
	uc.br = bufio.NewReaderSize(&uc.lim, upstreamBufferSize)
	return uc, nil
}

// idle reports whether none of uc's buffers holds anything the server sent
// after the last response ended; it is asked when the connection would go
// back to the pool. A server sends nothing unasked on an idle
// HTTP/1.1 connection but a TLS close_notify before closing it; anything
// else is a response nobody asked for, which must never be read as the
// answer to the next request (another user's, perhaps). Bytes can wait in
// four places, and each is looked at without blocking:
//
//   - the buffered reader;
//   - the TLS layer's decrypted record not yet read: empty when the last
//     read from TLS did not fill the buffer it was given (TLS returns one
//     record's data per read, all of it that fits), otherwise probed with
//     a read whose deadline has passed;
//   - the TLS layer's raw input: recordConn gives TLS no byte past the
//     record it is reading, and keeps what came after visible;
//   - the socket.
//
// idle looks at the first three, which only this connection's reads can
// fill. The socket is left to reuse: nothing reads a pooled connection, so
// whatever reached the socket, before the connection went back to the pool
// or while it sat there, is still in the socket when idleStill peeks at it
// right before the next request is written: one peek per request, not
// two.
func (uc *upConn) idle() bool {
	if uc.br.Buffered() > 0 || uc.rec.buffered() > 0 {
		return false
	}
	return !uc.lim.filled || uc.probeTLS()
}

// idleStill reports whether nothing has arrived on a pooled connection
// since its last response ended: idle said the buffers were clean, and
// only the socket can have changed since.
func (uc *upConn) idleStill() bool {
	return uc.br.Buffered() == 0 && uc.rec.buffered() == 0 && uc.socketEmpty()
}

// socketEmpty peeks at the socket without blocking: one system call.
func (uc *upConn) socketEmpty() bool {
	if uc.peek == nil {
		return true
	}
	return uc.peek.empty()
}

// socketPeek peeks at one socket without blocking. It is made with its
// connection, so that a peek, made before every reuse, allocates nothing
// (a RawConn and a closure each time otherwise). Only the goroutine that
// holds the connection uses it.
type socketPeek struct {
	rc   syscall.RawConn       // nil: the socket cannot be reached, never empty
	read func(fd uintptr) bool // p.peek, bound once
	b    [1]byte
	none bool // the last peek found nothing to read
}

// newSocketPeek returns a socketPeek for conn, or nil when conn is not a
// socket.
func newSocketPeek(conn net.Conn) *socketPeek {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	p := &socketPeek{}
	if rc, err := sc.SyscallConn(); err == nil {
		p.rc = rc
		p.read = p.peek
	}
	return p
}

func (p *socketPeek) empty() bool {
	if p.rc == nil {
		return false
	}
	p.none = false
	err := p.rc.Read(p.read)
	return err == nil && p.none
}

func (p *socketPeek) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	// Nothing to read yet is the only answer that means empty.
	p.none = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	return true
}

// probeTLS reports whether the TLS layer holds no decrypted data: it reads
// through it with a deadline already passed, which returns what TLS holds
// and otherwise fails at once, before any system call (a timeout leaves a
// crypto/tls connection usable; only other read errors are final).
func (uc *upConn) probeTLS() bool {
	if uc.conn.SetReadDeadline(time.Unix(1, 0)) != nil {
		return false
	}
	_, err := uc.br.Peek(1)
	var ne net.Error
	empty := errors.As(err, &ne) && ne.Timeout()
	return uc.conn.SetReadDeadline(time.Time{}) == nil && empty
}

// recordConn is the TCP connection under an upstream TLS connection. It
// hands crypto/tls no byte beyond the end of the TLS record being read:
// crypto/tls otherwise reads ahead whatever has arrived ("best effort", to
// spot a close_notify early) into a buffer no caller can inspect, and a
// late response read ahead with the end of the previous one would be
// invisible to idle. It still reads the socket in large pieces, into a
// pooled buffer held only while it has bytes TLS has not taken, and
// buffered reports those.
type recordConn struct {
	net.Conn
	buf  *[]byte // read-ahead from the socket, nil when empty
	r, w int     // (*buf)[r:w] is not yet handed to TLS
	err  error   // came from the socket with the last bytes; returned once buf is empty
	hdr  [tlsRecordHeader]byte
	nhdr int // header bytes of the current record handed over so far
	rem  int // body bytes of the current record still to hand over
}

// tlsRecordHeader is the size of a TLS record header (type, version,
// length).
const tlsRecordHeader = 5

// recordBufferSize is the read-ahead of a recordConn: the largest TLS
// record and its header, so one read usually brings in a whole record.
const recordBufferSize = 16<<10 + 256 + tlsRecordHeader

var recordBuffers = sync.Pool{New: func() any { b := make([]byte, recordBufferSize); return &b }}

// buffered is how many bytes arrived that TLS has not taken.
func (c *recordConn) buffered() int { return c.w - c.r }

func (c *recordConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.r == c.w {
		if err := c.err; err != nil {
			c.err = nil
			return 0, err
		}
		if c.buf == nil {
			c.buf = recordBuffers.Get().(*[]byte)
		}
		n, err := c.Conn.Read(*c.buf)
		if n == 0 {
			// Timeouts included: the connection stays usable.
			c.release()
			return 0, err
		}
		c.r, c.w, c.err = 0, n, err
	}
	inHeader := c.nhdr < tlsRecordHeader
	want := c.rem
	if inHeader {
		want = tlsRecordHeader - c.nhdr
	}
	n := copy(p[:min(len(p), want)], (*c.buf)[c.r:c.w])
	c.r += n
	if inHeader {
		copy(c.hdr[c.nhdr:], p[:n])
		c.nhdr += n
		if c.nhdr == tlsRecordHeader {
			c.rem = int(c.hdr[3])<<8 | int(c.hdr[4])
			if c.rem == 0 {
				c.nhdr = 0
			}
		}
	} else {
		c.rem -= n
		if c.rem == 0 {
			c.nhdr = 0
		}
	}
	if c.r == c.w {
		c.release()
	}
	return n, nil
}

// release returns the read-ahead buffer once it is empty.
func (c *recordConn) release() {
	if c.buf != nil {
		recordBuffers.Put(c.buf)
		c.buf = nil
	}
	c.r, c.w = 0, 0
}

// put returns uc to the pool, or closes it when the pool is full or closed.
func (u *upstreamClient) put(uc *upConn) {
	uc.idleSince = time.Now()
	u.mu.Lock()
	if u.closed || len(u.idle[uc.key]) >= u.maxIdlePerHost || u.nIdle >= u.maxIdle {
		u.mu.Unlock()
		uc.conn.Close()
		return
	}
	u.idle[uc.key] = append(u.idle[uc.key], uc)
	u.nIdle++
	if !u.armed {
		u.armed = true
		u.janitor.Reset(u.idleTimeout)
	}
	u.mu.Unlock()
}

// closeExpired closes connections idle for idleTimeout or longer, and sets
// the janitor again while any remain.
func (u *upstreamClient) closeExpired() {
	now := time.Now()
	var expired []*upConn
	u.mu.Lock()
	u.armed = false
	oldest := now
	for key, conns := range u.idle {
		keep := conns[:0]
		for _, uc := range conns {
			if now.Sub(uc.idleSince) >= u.idleTimeout {
				expired = append(expired, uc)
				u.nIdle--
				continue
			}
			keep = append(keep, uc)
			oldest = minTime(oldest, uc.idleSince)
		}
		clear(conns[len(keep):])
		if len(keep) == 0 {
			delete(u.idle, key)
		} else {
			u.idle[key] = keep
		}
	}
	if len(u.idle) > 0 && !u.closed {
		u.armed = true
		u.janitor.Reset(oldest.Add(u.idleTimeout).Sub(now))
	}
	u.mu.Unlock()
	for _, uc := range expired {
		uc.conn.Close()
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// closeIdle closes every pooled connection; the pool stays usable.
func (u *upstreamClient) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle = map[string][]*upConn{}
	u.nIdle = 0
	u.mu.Unlock()
	for _, conns := range idle {
		for _, uc := range conns {
			uc.conn.Close()
		}
	}
}

// close closes every pooled connection and keeps connections in use from
// returning to the pool.
func (u *upstreamClient) close() {
	u.mu.Lock()
	u.closed = true
	u.janitor.Stop()
	u.mu.Unlock()
	u.closeIdle()
}

// upBody is a response body on a pooled connection: read to its end and
// closed, the connection goes back to the pool; closed early or failed, the
// connection is closed, since the rest of the response is still on it.
type upBody struct {
	r     io.ReadCloser
	u     *upstreamClient
	uc    *upConn
	w     *callWatch  // the caller's watch, or nil: then stop
	stop  func() bool // ends the context watch
	reuse bool        // neither side asked to close the connection
	eof   bool
	done  bool
	// ended is set by the first of Close and abort, which may run in
	// different goroutines: a connection that abort cut short is never
	// reused.
	ended atomic.Bool
}

// abort ends the response early, from any goroutine: a read in progress
// fails at once. After Close it does nothing.
func (b *upBody) abort() {
	if b.ended.CompareAndSwap(false, true) {
		b.uc.cut()
	}
}

// unwatch ends the watch on the call; it reports false when the watch cut
// it meanwhile.
func (b *upBody) unwatch() bool {
	if b.w != nil {
		return b.w.release()
	}
	return b.stop()
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *upBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// unwatch reports false when the context or watch ended meanwhile,
	// and ended is already set when abort ran: the deadline either set
	// may have cut the connection short.
	watched := b.unwatch() && b.ended.CompareAndSwap(false, true)
	if !b.eof {
		// Closing a body net/http read reads the rest of it; closing
		// the connection first makes that fail at once instead of
		// relaying a stream nobody reads.
		b.uc.conn.Close()
		b.r.Close()
		return nil
	}
	err := b.r.Close()
	// Nothing may have come after the response: a second response would
	// be read as the answer to the next request on this connection.
	if b.reuse && watched && err == nil && b.uc.idle() {
		b.u.put(b.uc)
		return nil
	}
	b.uc.conn.Close()
	return err
}

// keyedSessions files a connection's TLS sessions twice: under its pool
// key and the server name crypto/tls keys them by, and under the address
// of the server it reached. With pool per_user both keys hold the user, so
// a session is resumed only by the user whose connection received it: the
// upstream cannot link two users' connections by their session tickets, as
// it cannot by a shared connection.
//
// A host seen for the first time resumes the session of another name at
// the same server address, when that session's certificate is valid for
// it: tenants of one SaaS (acme.atlassian.net, globex.atlassian.net) are
// one server behind one wildcard certificate, and a resumed handshake
// skips the certificate chain's verification on the sidecar and the
// signature on the server. RFC 8446 section 4.6.1 allows this ("Clients
// MUST only resume if the new SNI value is valid for the server
// certificate presented in the original session"); its advice to resume
// only with the same name is for different servers sharing a certificate,
// which one address is not. A server that does not take the ticket
// answers with a full handshake. crypto/tls checks every session it is
// given, from either key, as it checks its own: the certificate must not
// have expired, its chains must still verify against the configured roots,
// and it must be valid for the server name.
type keyedSessions struct {
	cache tls.ClientSessionCache
	name  string // prefix of the server name: the pool key
	peer  string // the user and the server's address
}

func (k keyedSessions) Get(sessionKey string) (*tls.ClientSessionState, bool) {
	if cs, ok := k.cache.Get(k.name + sessionKey); ok {
		return cs, true
	}
	return k.cache.Get(k.peer)
}

// Put files cs under both keys; a nil cs (crypto/tls dropping a session
// that failed its checks or its handshake) removes both.
func (k keyedSessions) Put(sessionKey string, cs *tls.ClientSessionState) {
	k.cache.Put(k.name+sessionKey, cs)
	k.cache.Put(k.peer, cs)
}
