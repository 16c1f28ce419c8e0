package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingServer is a TLS httptest server that counts the connections it
// accepted and closed.
type countingServer struct {
	*httptest.Server
	mu     sync.Mutex
	opened int
	closed int
	change chan struct{} // receives after every connection state change
}

func newCountingServer(t *testing.T, h http.Handler, configure func(*http.Server)) *countingServer {
	t.Helper()
	cs := &countingServer{change: make(chan struct{}, 1000)}
	cs.Server = httptest.NewUnstartedServer(h)
	cs.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		cs.mu.Lock()
		switch st {
		case http.StateNew:
			cs.opened++
		case http.StateClosed, http.StateHijacked:
			cs.closed++
		}
		cs.mu.Unlock()
		select {
		case cs.change <- struct{}{}:
		default:
		}
	}
	if configure != nil {
		configure(cs.Config)
	}
	cs.StartTLS()
	t.Cleanup(cs.Close)
	return cs
}

func (cs *countingServer) counts() (opened, closed int) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.opened, cs.closed
}

// waitClosed waits until the server has seen n connections closed.
func (cs *countingServer) waitClosed(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if _, closed := cs.counts(); closed >= n {
			return
		}
		select {
		case <-cs.change:
		case <-deadline:
			_, closed := cs.counts()
			t.Fatalf("server saw %d connections closed after 10s; want %d", closed, n)
		}
	}
}

func (cs *countingServer) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(cs.Certificate())
	return p
}

func newTestUpstreamClient(t *testing.T, roots *x509.CertPool, mod func(*UpstreamConfig)) *upstreamClient {
	t.Helper()
	c := DefaultConfig().Upstream
	if mod != nil {
		mod(&c)
	}
	var d net.Dialer
	u := newUpstreamClient(c, d.DialContext, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	t.Cleanup(u.close)
	return u
}

func upstreamRequest(t *testing.T, method, rawURL string, h http.Header) *http.Request {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	req := &http.Request{Method: method, URL: u, Host: u.Host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	return req
}

// do sends one request and reads the whole answer.
func do(t *testing.T, u *upstreamClient, req *http.Request, body []byte) (*http.Response, string) {
	t.Helper()
	resp, err := u.roundTrip(context.Background(), nil, req.URL.Host, "", req, body)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if err := resp.Body.Close(); err != nil {
		t.Fatalf("close body: %v", err)
	}
	return resp, string(b)
}

func TestUpstreamReusesConnection(t *testing.T) {
	cs := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+string(b))
	}), nil)
	u := newTestUpstreamClient(t, cs.roots(), nil)
	for i := range 20 {
		method, body, want := http.MethodGet, []byte(nil), "GET /a?b=1 Bearer t "
		if i%2 == 1 {
			method, body, want = http.MethodPost, []byte(`{"n":1}`), `POST /a?b=1 Bearer t {"n":1}`
		}
		req := upstreamRequest(t, method, cs.URL+"/a?b=1", http.Header{"Authorization": {"Bearer t"}})
		resp, got := do(t, u, req, body)
		if resp.StatusCode != http.StatusOK || got != want {
			t.Fatalf("request %d: got %d %q; want 200 %q", i, resp.StatusCode, got, want)
		}
	}
	if opened, _ := cs.counts(); opened != 1 {
		t.Errorf("server saw %d connections for 20 sequential requests; want 1", opened)
	}
}

// TestUpstreamServerClosedIdle: a connection the server closed while it sat
// in the pool is noticed before use, so even a POST (never retried)
// succeeds on a new connection.
func TestUpstreamServerClosedIdle(t *testing.T) {
	cs := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), func(s *http.Server) { s.IdleTimeout = 20 * time.Millisecond })
	u := newTestUpstreamClient(t, cs.roots(), nil)
	do(t, u, upstreamRequest(t, http.MethodPost, cs.URL+"/", nil), []byte("x"))
	cs.waitClosed(t, 1)
	resp, got := do(t, u, upstreamRequest(t, http.MethodPost, cs.URL+"/", nil), []byte("y"))
	if resp.StatusCode != http.StatusOK || got != "ok" {
		t.Fatalf("got %d %q; want 200 ok", resp.StatusCode, got)
	}
	if opened, _ := cs.counts(); opened != 2 {
		t.Errorf("server saw %d connections; want 2", opened)
	}
}

// TestUpstreamNotReused: connections that cannot carry another request
// are closed, not pooled.
func TestUpstreamNotReused(t *testing.T) {
	cs := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		if r.URL.Path == "/stream" {
			for range 1000 {
				io.WriteString(w, strings.Repeat("s", 1000))
				w.(http.Flusher).Flush()
			}
			return
		}
		io.WriteString(w, "ok")
	}), nil)
	u := newTestUpstreamClient(t, cs.roots(), nil)

	do(t, u, upstreamRequest(t, http.MethodGet, cs.URL+"/close", nil), nil)
	cs.waitClosed(t, 1)

	// A body closed before its end leaves the rest of the response on the
	// connection: it is closed, and Close does not read the rest first.
	resp, err := u.roundTrip(context.Background(), nil, cs.Listener.Addr().String(), "", upstreamRequest(t, http.MethodGet, cs.URL+"/stream", nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cs.waitClosed(t, 2)

	// The agent asked for Connection: close.
	req := upstreamRequest(t, http.MethodGet, cs.URL+"/", nil)
	req.Close = true
	do(t, u, req, nil)
	cs.waitClosed(t, 3)

	do(t, u, upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil)
	do(t, u, upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil)
	if opened, closed := cs.counts(); opened != 4 || closed != 3 {
		t.Errorf("server saw %d connections opened, %d closed; want 4 and 3", opened, closed)
	}
}

// TestUpstreamAbort: abort, from another goroutine, ends a read in progress
// at once, and the connection is not pooled; after Close it does nothing,
// so a pooled connection never carries the deadline it would set.
func TestUpstreamAbort(t *testing.T) {
	cs := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quiet" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.(http.Flusher).Flush()
			<-r.Context().Done() // sends nothing until the client leaves
			return
		}
		io.WriteString(w, "ok")
	}), nil)
	u := newTestUpstreamClient(t, cs.roots(), nil)
	resp := get(t, u, nil, cs.URL+"/quiet")
	checkCutShort(t, resp.Body, resp.Body.(*upBody).abort)
	resp.Body.Close()
	cs.waitClosed(t, 1)

	// Aborted after its end: the connection is not reused either (the
	// deadline may already be set).
	resp = get(t, u, nil, cs.URL+"/")
	io.ReadAll(resp.Body)
	resp.Body.(*upBody).abort()
	resp.Body.Close()
	cs.waitClosed(t, 2)

	// Aborted after Close: nothing happens to the pooled connection, and
	// the next request uses it.
	resp = get(t, u, nil, cs.URL+"/")
	io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body.(*upBody).abort()
	if resp, got := do(t, u, upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil); resp.StatusCode != http.StatusOK || got != "ok" {
		t.Fatalf("after abort past Close: got %d %q; want 200 ok", resp.StatusCode, got)
	}
	if opened, closed := cs.counts(); opened != 3 || closed != 2 {
		t.Errorf("server saw %d connections opened, %d closed; want 3 and 2", opened, closed)
	}
}

// get sends a GET for rawURL through u, under w when not nil, and returns
// the response with its body unread.
func get(t *testing.T, u *upstreamClient, w *callWatch, rawURL string) *http.Response {
	t.Helper()
	req := upstreamRequest(t, http.MethodGet, rawURL, nil)
	resp, err := u.roundTrip(context.Background(), w, req.URL.Host, "", req, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	return resp
}

// checkCutShort reads body, on which nothing arrives, in another goroutine
// and calls cut: the read must fail at once.
func checkCutShort(t *testing.T, body io.Reader, cut func()) {
	t.Helper()
	read := make(chan error, 1)
	go func() {
		_, err := body.Read(make([]byte, 10))
		read <- err
	}()
	cut()
	select {
	case err := <-read:
		if err == nil {
			t.Error("a read cut short succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read cut short still blocked after 10s")
	}
}

// TestUpstreamCallWatch: a tunnel's calls share one watch; they reuse the
// connection as calls without one do, and the watch's end cuts the call in
// flight (its connection is not pooled) and refuses every later one.
func TestUpstreamCallWatch(t *testing.T) {
	cs := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quiet" {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		io.WriteString(w, "ok")
	}), nil)
	u := newTestUpstreamClient(t, cs.roots(), nil)
	addr := cs.Listener.Addr().String()
	w := new(callWatch)
	for i := range 3 {
		resp := get(t, u, w, cs.URL+"/")
		if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
			t.Fatalf("call %d: body %q; want ok", i, b)
		}
		resp.Body.Close()
	}

	resp := get(t, u, w, cs.URL+"/quiet")
	checkCutShort(t, resp.Body, w.end)
	resp.Body.Close()
	cs.waitClosed(t, 1)

	if _, err := u.roundTrip(context.Background(), w, addr, "", upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil); err == nil {
		t.Error("a call after the watch ended was made")
	}
	// Nothing is left open: the connection made for the refused call
	// was closed unused.
	opened, _ := cs.counts()
	cs.waitClosed(t, opened)
}

// TestUpstreamBodilessResponses: HEAD, 204 and 304 answers have no body to
// read, and the connection is reused after them.
func TestUpstreamBodilessResponses(t *testing.T) {
	cs := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		case "/early-hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "final")
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	}), nil)
	u := newTestUpstreamClient(t, cs.roots(), nil)
	tests := []struct {
		method, path string
		status       int
		body         string
	}{
		{http.MethodHead, "/", 200, ""},
		{http.MethodGet, "/204", 204, ""},
		{http.MethodGet, "/304", 304, ""},
		{http.MethodGet, "/early-hints", 200, "final"},
		{http.MethodGet, "/", 200, "hello"},
	}
	for _, tt := range tests {
		resp, got := do(t, u, upstreamRequest(t, tt.method, cs.URL+tt.path, nil), nil)
		if resp.StatusCode != tt.status || got != tt.body {
			t.Errorf("%s %s: got %d %q; want %d %q", tt.method, tt.path, resp.StatusCode, got, tt.status, tt.body)
		}
	}
	if opened, _ := cs.counts(); opened != 1 {
		t.Errorf("server saw %d connections; want 1", opened)
	}
}

// TestUpstreamUnsolicitedBytes: a server that sends more than the response
// leaves the connection in an unknown state: it is not reused.
func TestUpstreamUnsolicitedBytes(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS() // for its certificate and TLS config only
	srv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.TLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	accepted := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
				}
			}()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	u := newTestUpstreamClient(t, roots, nil)
	for range 3 {
		resp, got := do(t, u, upstreamRequest(t, http.MethodGet, "https://"+ln.Addr().String()+"/", nil), nil)
		if resp.StatusCode != 200 || got != "ok" {
			t.Fatalf("got %d %q; want 200 ok", resp.StatusCode, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if accepted != 3 {
		t.Errorf("server accepted %d connections for 3 requests; want 3 (none reused)", accepted)
	}
}

func TestUpstreamFailures(t *testing.T) {
	release := make(chan struct{})
	cs := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), nil)
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for handlers

	t.Run("unknown certificate authority", func(t *testing.T) {
		u := newTestUpstreamClient(t, x509.NewCertPool(), nil)
		_, err := u.roundTrip(context.Background(), nil, cs.Listener.Addr().String(), "", upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil)
		if e := classify(err); e == nil || e.Code != CodeUpstreamTLS {
			t.Errorf("got %v (%v); want %s", e, err, CodeUpstreamTLS)
		}
	})
	t.Run("response header timeout", func(t *testing.T) {
		u := newTestUpstreamClient(t, cs.roots(), func(c *UpstreamConfig) { c.ResponseHeaderTimeout = 50 * time.Millisecond })
		_, err := u.roundTrip(context.Background(), nil, cs.Listener.Addr().String(), "", upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("got %v; want a timeout", err)
		}
		if e := classify(err); e == nil || e.Code != CodeUpstreamUnreachable {
			t.Errorf("got %v; want %s", e, CodeUpstreamUnreachable)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		u := newTestUpstreamClient(t, cs.roots(), nil)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := u.roundTrip(ctx, nil, cs.Listener.Addr().String(), "", upstreamRequest(t, http.MethodPost, cs.URL+"/", nil), []byte("x"))
		if err == nil {
			t.Fatal("got a response after the context was cancelled; want an error")
		}
	})
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		u := newTestUpstreamClient(t, cs.roots(), nil)
		_, err = u.roundTrip(context.Background(), nil, addr, "", upstreamRequest(t, http.MethodGet, "https://"+addr+"/", nil), nil)
		if e := classify(err); e == nil || e.Code != CodeUpstreamUnreachable {
			t.Errorf("got %v (%v); want %s", e, err, CodeUpstreamUnreachable)
		}
	})
}

// TestUpstreamIdleConnectionsClosed: pooled connections are closed after
// the idle timeout, and by closeIdle.
func TestUpstreamIdleConnectionsClosed(t *testing.T) {
	cs := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), nil)
	u := newTestUpstreamClient(t, cs.roots(), func(c *UpstreamConfig) { c.IdleConnTimeout = 50 * time.Millisecond })
	do(t, u, upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil)
	cs.waitClosed(t, 1)

	u2 := newTestUpstreamClient(t, cs.roots(), nil)
	do(t, u2, upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil)
	u2.closeIdle()
	cs.waitClosed(t, 2)
	do(t, u2, upstreamRequest(t, http.MethodGet, cs.URL+"/", nil), nil) // still usable
	u2.close()
	cs.waitClosed(t, 3)
}

// TestResponseHeaderLimit: both upstream clients refuse a response head
// over max_response_header_bytes with an error classify maps to
// upstream_invalid, and a head just under it passes.
func TestResponseHeaderLimit(t *testing.T) {
	const limit = 16 << 10
	srv := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 0
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		w.Header().Set("X-Big", strings.Repeat("a", n))
	}), nil)
	mod := func(c *UpstreamConfig) { c.MaxResponseHeaderBytes = limit }
	u := newTestUpstreamClient(t, srv.roots(), mod)
	tr, err := newTransport(func() UpstreamConfig { c := DefaultConfig().Upstream; mod(&c); return c }(), &net.Dialer{}, srv.roots())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	for _, tt := range []struct {
		n    int
		want Code // "" for success
	}{
		{limit - 1024, ""},
		{limit, CodeUpstreamInvalid},
		{8 * limit, CodeUpstreamInvalid},
	} {
		target := fmt.Sprintf("%s/?n=%d", srv.URL, tt.n)
		req := upstreamRequest(t, "GET", target, nil)
		resp, err := u.roundTrip(context.Background(), nil, req.URL.Host, "", req, nil)
		checkLimit(t, "own client", tt.n, tt.want, resp, err)
		req = upstreamRequest(t, "GET", target, nil)
		resp, err = tr.RoundTrip(req)
		checkLimit(t, "net/http transport", tt.n, tt.want, resp, err)
	}
}

func checkLimit(t *testing.T, client string, n int, want Code, resp *http.Response, err error) {
	t.Helper()
	if err == nil {
		resp.Body.Close()
		if want != "" {
			t.Errorf("%s, header of %d bytes: got %d; want %s", client, n, resp.StatusCode, want)
		}
		return
	}
	if got := classify(err).Code; got != want {
		t.Errorf("%s, header of %d bytes: got %s (%v); want %q", client, n, got, err, want)
	}
}

// readerConn is a net.Conn that reads from r.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestRecordConnStopsAtRecordEnd: however much TLS asks for, recordConn
// returns no byte past the end of the current record, and what followed
// it on the socket stays visible (buffered) for the idle check.
func TestRecordConnStopsAtRecordEnd(t *testing.T) {
	rec := func(n int, fill byte) []byte {
		return append([]byte{23, 3, 3, byte(n >> 8), byte(n)}, bytes.Repeat([]byte{fill}, n)...)
	}
	first, empty, last := rec(300, 'a'), rec(0, 0), rec(20, 'b')
	src := bytes.NewReader(slices.Concat(first, empty, last))
	c := &recordConn{Conn: readerConn{r: src}}
	buf := make([]byte, 4096)
	for i, want := range []int{5, 300, 5, 5, 20} {
		n, err := c.Read(buf)
		if err != nil || n != want {
			t.Fatalf("read %d: got %d, %v; want %d bytes", i, n, err, want)
		}
		if i == 1 && c.buffered() != len(empty)+len(last) {
			t.Errorf("after the first record, %d bytes buffered; want %d", c.buffered(), len(empty)+len(last))
		}
	}
}
