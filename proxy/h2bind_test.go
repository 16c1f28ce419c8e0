package proxy

//lint:file-ignore SA1019 x/net/http2's Server is deprecated in favour of net/http's own HTTP/2, but net/http has no way to serve one connection that is already accepted and handshaken (an intercepted tunnel); x/net's ServeConn does, and from Go 1.27 it runs net/http's implementation underneath.

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// h2BindHarness is a real HTTP/2 server connection (x/net/http2 over TLS
// on an in-memory pipe) whose handler runs the stream binding of the
// sidecar (checkStream, then bindTunnelRequest) for the tunnel to
// api.example.com:443, and a client that writes raw HEADERS frames to it.
type h2BindHarness struct {
	conn    *tls.Conn
	fr      *http2.Framer
	buf     bytes.Buffer
	enc     *hpack.Encoder
	id      uint32
	results chan h2BindResult
}

type h2BindResult struct {
	req  *http.Request
	path string
	err  *Error
}

var h2BindTunnel = newTunnel("api.example.com", 443, "")

func newH2BindHarness(tb testing.TB) *h2BindHarness {
	tb.Helper()
	ca, err := testpki.NewCA("h2 bind CA")
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := ca.Leaf("api.example.com")
	if err != nil {
		tb.Fatal(err)
	}
	cl, sv := net.Pipe()
	h := &h2BindHarness{results: make(chan h2BindResult, 1)}
	srv := tls.Server(sv, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r := h2BindResult{req: req}
		if r.err = checkStream(h2BindTunnel, req, 100); r.err == nil {
			r.path, r.err = bindTunnelRequest(h2BindTunnel, req)
		}
		h.results <- r
		w.WriteHeader(http.StatusNoContent)
	})
	go func() {
		// ServeConn expects a finished handshake (and a pipe does not
		// buffer: both sides must run at once).
		if srv.Handshake() == nil {
			(&http2.Server{}).ServeConn(srv, &http2.ServeConnOpts{Handler: handler})
		}
		srv.Close()
	}()
	h.conn = tls.Client(cl, &tls.Config{RootCAs: ca.Pool(), ServerName: "api.example.com", NextProtos: []string{"h2"}})
	if err := h.conn.Handshake(); err != nil {
		tb.Fatal(err)
	}
	h.fr = http2.NewFramer(h.conn, h.conn)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(65536, nil)
	h.enc = hpack.NewEncoder(&h.buf)
	if _, err := io.WriteString(h.conn, http2.ClientPreface); err != nil {
		tb.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		tb.Fatal(err)
	}
	h.id = 1
	return h
}

// send sends one request with the given header fields (pairs) and returns
// what the handler decided, or ok=false when the HTTP/2 server refused the
// stream itself (or the connection) before any handler ran.
func (h *h2BindHarness) send(fields ...string) (r h2BindResult, handled, connOK bool) {
	id := h.id
	h.id += 2
	h.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	_ = h.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		return r, false, false
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return r, false, false
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = h.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			return r, false, false
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return r, false, true
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return <-h.results, true, true
			}
		}
	}
}

func TestH2StreamBinding(t *testing.T) {
	h := newH2BindHarness(t)
	tests := []struct {
		name   string
		fields []string
		ok     bool
	}{
		{"good", []string{":method", "GET", ":scheme", "https", ":authority", "api.example.com", ":path", "/v1/x"}, true},
		{"explicit port", []string{":method", "GET", ":scheme", "https", ":authority", "api.example.com:443", ":path", "/v1/x"}, true},
		{"case and dot", []string{":method", "GET", ":scheme", "https", ":authority", "API.Example.com.", ":path", "/v1/x"}, true},
		{"host instead of authority", []string{":method", "GET", ":scheme", "https", ":path", "/v1/x", "host", "api.example.com"}, true},
		{"other host", []string{":method", "GET", ":scheme", "https", ":authority", "evil.example.com", ":path", "/v1/x"}, false},
		{"other port", []string{":method", "GET", ":scheme", "https", ":authority", "api.example.com:8443", ":path", "/v1/x"}, false},
		{"userinfo", []string{":method", "GET", ":scheme", "https", ":authority", "evil@api.example.com", ":path", "/v1/x"}, false},
		{"scheme http", []string{":method", "GET", ":scheme", "http", ":authority", "api.example.com", ":path", "/v1/x"}, false},
		{"dot segments", []string{":method", "GET", ":scheme", "https", ":authority", "api.example.com", ":path", "/v1/%2e%2e/admin"}, false},
		{"absolute path form", []string{":method", "GET", ":scheme", "https", ":authority", "api.example.com", ":path", "https://evil.example.com/x"}, false},
		{"asterisk", []string{":method", "OPTIONS", ":scheme", "https", ":authority", "api.example.com", ":path", "*"}, false},
	}
	for _, tt := range tests {
		r, handled, connOK := h.send(tt.fields...)
		if !connOK {
			t.Fatalf("%s: the connection failed", tt.name)
		}
		if ok := handled && r.err == nil; ok != tt.ok {
			t.Errorf("%s: accepted=%v (handled %v, error %v); want %v", tt.name, ok, handled, r.err, tt.ok)
		}
	}
}

// FuzzH2StreamBinding sends HTTP/2 requests with arbitrary pseudo-headers
// and Host through a real HTTP/2 server: a stream the binding accepts
// targets exactly the tunnel's host and port over https, with the
// authority the client sent, and a clean path.
func FuzzH2StreamBinding(f *testing.F) {
	f.Add("GET", "https", "api.example.com", "/v1/x", "")
	f.Add("GET", "https", "", "/v1/x", "api.example.com")
	f.Add("POST", "https", "API.EXAMPLE.COM.:443", "/v1/x?y=1", "")
	f.Add("GET", "https", "api.example.com", "/v1/x", "evil.example.com")
	f.Add("GET", "http", "api.example.com", "/a/../b", "")
	f.Add("CONNECT", "", "api.example.com:443", "", "")
	f.Add("GET", "https", "[::1]:443", "//evil/x", "")
	var (
		once sync.Once
		h    *h2BindHarness
		mu   sync.Mutex
	)
	f.Fuzz(func(t *testing.T, method, scheme, authority, path, host string) {
		mu.Lock()
		defer mu.Unlock()
		once.Do(func() { h = newH2BindHarness(t) })
		fields := []string{":method", method}
		if scheme != "" {
			fields = append(fields, ":scheme", scheme)
		}
		if authority != "" {
			fields = append(fields, ":authority", authority)
		}
		if path != "" {
			fields = append(fields, ":path", path)
		}
		if host != "" {
			fields = append(fields, "host", host)
		}
		r, handled, connOK := h.send(fields...)
		if !connOK {
			h = newH2BindHarness(t)
			return
		}
		if !handled || r.err != nil {
			return
		}
		sent := authority
		if sent == "" {
			sent = host
		}
		hh, port, err := injector.SplitHostPort(sent, injector.DefaultPort)
		if err != nil || hh != "api.example.com" || port != 443 {
			t.Fatalf("accepted a stream for authority %q (host %q)", authority, host)
		}
		if host != "" && injector.NormalizeHost(strings.TrimSuffix(host, ":443")) != "api.example.com" {
			t.Fatalf("accepted a Host header %q beside :authority %q", host, authority)
		}
		if scheme != "https" || method == http.MethodConnect {
			t.Fatalf("accepted :scheme %q, :method %q", scheme, method)
		}
		// bindTunnelRequest returns the canonical path: it must be its own
		// canonical form.
		if cp, err := injector.CanonicalPath(r.path); !strings.HasPrefix(r.path, "/") || err != nil || cp.Escaped != r.path {
			t.Fatalf("accepted path %q", r.path)
		}
		out := outboundRequest(new(exchange), r.req, h2BindTunnel)
		if out.URL.Host != "api.example.com" || out.Host != "api.example.com" || out.URL.EscapedPath() != r.path {
			t.Fatalf("accepted stream goes to %s (Host %s) path %s", out.URL.Host, out.Host, out.URL.EscapedPath())
		}
	})
}
