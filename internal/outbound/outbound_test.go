package outbound_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/outbound"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
)

const (
	// shortTimeout is the timeout under test in the timeout cases: long
	// enough for a loopback round trip on a loaded machine, short enough
	// to keep the test quick.
	shortTimeout = 300 * time.Millisecond
	// timeoutBound is how long a timeout case may take in all: far above
	// shortTimeout, far below the default timeouts (5 s and more), so a
	// timeout that is not applied fails the case.
	timeoutBound = 3 * time.Second
	// caseDeadline bounds every request, so that a broken case fails
	// instead of hanging the test.
	caseDeadline = 10 * time.Second
	// testHost is a name that is neither "localhost" nor an IP literal:
	// net/http's environment proxy function never proxies those, so a
	// test on them could not tell whether HTTPS_PROXY is ignored. The
	// cases that use it dial it through a hook that maps it to 127.0.0.1.
	testHost = "upstream.test"
)

// world is the loopback servers and files the cases run against.
type world struct {
	caFile    string         // PEM of the CA that signed trusted's certificate
	caPool    *x509.CertPool // the same CA
	trusted   *httptest.Server
	untrusted *httptest.Server // certificate from a CA nobody configures
	tls11     *httptest.Server // trusted certificate, TLS 1.1 at most
	plain     *httptest.Server // plain HTTP
	silent    string           // accepts TCP connections and never answers
	blackhole string           // never completes a TCP connect (Linux)
	proxied   *atomic.Int64    // connections to the HTTPS_PROXY listener
	// trustedHits counts requests trusted answered.
	trustedHits *atomic.Int64
	// closed receives the remote address of every connection trusted
	// closes.
	closed *closedConns
}

// closedConns records the remote addresses of closed server connections.
type closedConns struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (c *closedConns) add(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[addr] = true
}

func (c *closedConns) has(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[addr]
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ca, err := testpki.NewCA("outbound test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("unknown CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Leaf("127.0.0.1", testHost)
	if err != nil {
		t.Fatal(err)
	}
	otherLeaf, err := other.Leaf("127.0.0.1", testHost)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{
		caFile:      filepath.Join(t.TempDir(), "ca.pem"),
		caPool:      ca.Pool(),
		proxied:     new(atomic.Int64),
		trustedHits: new(atomic.Int64),
		closed:      &closedConns{seen: map[string]bool{}},
	}
	if err := os.WriteFile(w.caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	// Handlers that hang wait for the client to give up, or for the end of
	// the test (done is closed before the servers, cleanups run last in
	// first out).
	done := make(chan struct{})
	hang := func(r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		w.trustedHits.Add(1)
		fmt.Fprintf(rw, "%s %s", r.Proto, r.RemoteAddr)
	})
	mux.HandleFunc("/no-headers", func(rw http.ResponseWriter, r *http.Request) { hang(r) })
	mux.HandleFunc("/slow-body", func(rw http.ResponseWriter, r *http.Request) {
		rw.WriteHeader(http.StatusOK)
		rw.(http.Flusher).Flush()
		hang(r)
	})
	mux.HandleFunc("/redirect", func(rw http.ResponseWriter, r *http.Request) {
		http.Redirect(rw, r, "/", http.StatusFound)
	})

	start := func(cert tls.Certificate, h http.Handler, mod func(*tls.Config)) *httptest.Server {
		s := httptest.NewUnstartedServer(h)
		s.EnableHTTP2 = true
		s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
		if mod != nil {
			mod(s.TLS)
		}
		s.StartTLS()
		t.Cleanup(s.Close)
		return s
	}
	w.trusted = httptest.NewUnstartedServer(mux)
	w.trusted.EnableHTTP2 = true
	w.trusted.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"h2", "http/1.1"}}
	w.trusted.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			w.closed.add(c.RemoteAddr().String())
		}
	}
	w.trusted.StartTLS()
	t.Cleanup(w.trusted.Close)
	w.untrusted = start(otherLeaf, mux, nil)
	w.tls11 = start(leaf, mux, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 })
	w.tls11.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	w.plain = httptest.NewServer(mux)
	t.Cleanup(w.plain.Close)
	w.silent = silentListener(t)
	w.blackhole = blackholeAddr(t)

	// Every case runs with proxy variables pointing at a listener that
	// counts connections: none may reach it.
	proxyAddr := countingListener(t, w.proxied)
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		t.Setenv(k, "http://"+proxyAddr)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	t.Cleanup(func() { close(done) })
	return w
}

// silentListener returns the address of a listener that accepts TCP
// connections and never sends a byte (a TLS handshake never completes).
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// countingListener returns the address of a listener that counts and
// closes the connections it accepts.
func countingListener(t *testing.T, n *atomic.Int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// hostDialer dials testHost as 127.0.0.1 and every other address as given.
func hostDialer(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == testHost {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// hostURL returns s's URL with testHost in place of 127.0.0.1.
func hostURL(s *httptest.Server) string {
	return strings.Replace(s.URL, "127.0.0.1", testHost, 1)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func unknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ua)
}

// result is what one request produced.
type result struct {
	resp    *http.Response
	body    string
	err     error
	elapsed time.Duration
}

// TestClient runs requests through clients built by outbound.Client
// against loopback servers and checks what each option does. Proxy
// variables point at a counting listener throughout; no case may reach it.
func TestClient(t *testing.T) {
	w := newWorld(t)
	guard := func(allow ...string) outbound.DialFunc {
		g, err := egress.New(egress.Config{Allow: allow})
		if err != nil {
			t.Fatal(err)
		}
		return g.DialContext
	}
	tests := []struct {
		name string
		opts func(o *outbound.Options)
		url  string
		// ok, when set, is called after a request that must succeed with
		// status 200.
		ok func(t *testing.T, r result)
		// fail, when set, says whether r.err is the error the case wants.
		fail func(r result) bool
		// quick: the request must end within timeoutBound.
		quick bool
	}{
		{
			name: "CA file trusted",
			opts: func(o *outbound.Options) { o.CAFile = w.caFile },
			url:  w.trusted.URL,
		},
		{
			name: "roots trusted",
			opts: func(o *outbound.Options) { o.Roots = w.caPool },
			url:  w.trusted.URL,
		},
		{
			name: "CA file adds to the given roots",
			opts: func(o *outbound.Options) { o.Roots, o.CAFile = x509.NewCertPool(), w.caFile },
			url:  w.trusted.URL,
		},
		{
			name: "unknown CA refused",
			opts: func(o *outbound.Options) { o.CAFile = w.caFile },
			url:  w.untrusted.URL,
			fail: func(r result) bool { return unknownAuthority(r.err) },
		},
		{
			name: "system roots do not trust a private CA",
			url:  w.trusted.URL,
			fail: func(r result) bool { return unknownAuthority(r.err) },
		},
		{
			name: "TLS 1.1 refused",
			opts: func(o *outbound.Options) { o.CAFile = w.caFile },
			url:  w.tls11.URL,
			fail: func(r result) bool { return r.err != nil && strings.Contains(r.err.Error(), "protocol version") },
		},
		{
			name: "HTTPS_PROXY ignored",
			opts: func(o *outbound.Options) { o.CAFile, o.Dial = w.caFile, hostDialer },
			url:  hostURL(w.trusted),
		},
		{
			name: "HTTP_PROXY ignored",
			opts: func(o *outbound.Options) { o.Dial = hostDialer },
			url:  hostURL(w.plain),
		},
		{
			name: "dial guard refuses loopback",
			opts: func(o *outbound.Options) { o.CAFile, o.Dial = w.caFile, guard() },
			url:  w.trusted.URL,
			fail: func(r result) bool { return errors.Is(r.err, egress.ErrForbidden) },
		},
		{
			name: "dial guard allows what it is told to",
			opts: func(o *outbound.Options) { o.CAFile, o.Dial = w.caFile, guard("127.0.0.1/32") },
			url:  w.trusted.URL,
		},
		{
			name:  "dial timeout",
			opts:  func(o *outbound.Options) { o.DialTimeout = shortTimeout },
			url:   "https://" + w.blackhole,
			fail:  func(r result) bool { return isTimeout(r.err) && strings.Contains(r.err.Error(), "dial") },
			quick: true,
		},
		{
			name: "dial timeout bounds a dial hook",
			opts: func(o *outbound.Options) {
				o.DialTimeout = shortTimeout
				o.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
					<-ctx.Done()
					return nil, ctx.Err()
				}
			},
			url:   w.trusted.URL,
			fail:  func(r result) bool { return errors.Is(r.err, context.DeadlineExceeded) },
			quick: true,
		},
		{
			name: "TLS handshake timeout",
			opts: func(o *outbound.Options) { o.TLSHandshakeTimeout = shortTimeout },
			url:  "https://" + w.silent,
			fail: func(r result) bool {
				return isTimeout(r.err) && strings.Contains(r.err.Error(), "TLS handshake timeout")
			},
			quick: true,
		},
		{
			name: "response header timeout",
			opts: func(o *outbound.Options) { o.CAFile, o.ResponseHeaderTimeout = w.caFile, shortTimeout },
			url:  w.trusted.URL + "/no-headers",
			fail: func(r result) bool {
				return isTimeout(r.err) && strings.Contains(r.err.Error(), "awaiting response headers")
			},
			quick: true,
		},
		{
			name:  "client timeout bounds the body",
			opts:  func(o *outbound.Options) { o.CAFile, o.Timeout = w.caFile, shortTimeout },
			url:   w.trusted.URL + "/slow-body",
			fail:  func(r result) bool { return isTimeout(r.err) && strings.Contains(r.err.Error(), "Client.Timeout") },
			quick: true,
		},
		{
			name:  "idle connection closed after the idle timeout",
			opts:  func(o *outbound.Options) { o.CAFile, o.IdleConnTimeout = w.caFile, shortTimeout },
			url:   w.trusted.URL,
			quick: true,
			ok: func(t *testing.T, r result) {
				remote := strings.Fields(r.body)[1]
				deadline := time.Now().Add(timeoutBound)
				for !w.closed.has(remote) {
					if time.Now().After(deadline) {
						t.Fatalf("connection from %s still open %s after the request; want closed after %s", remote, timeoutBound, shortTimeout)
					}
					time.Sleep(20 * time.Millisecond)
				}
			},
		},
		{
			name: "HTTP/2 when allowed",
			opts: func(o *outbound.Options) { o.CAFile, o.HTTP2 = w.caFile, true },
			url:  w.trusted.URL,
			ok: func(t *testing.T, r result) {
				if r.resp.ProtoMajor != 2 {
					t.Errorf("protocol %s; want HTTP/2.0", r.resp.Proto)
				}
			},
		},
		{
			name: "HTTP/1.1 when HTTP/2 is off",
			opts: func(o *outbound.Options) { o.CAFile, o.HTTP2 = w.caFile, false },
			url:  w.trusted.URL,
			ok: func(t *testing.T, r result) {
				if r.resp.ProtoMajor != 1 {
					t.Errorf("protocol %s; want HTTP/1.1", r.resp.Proto)
				}
			},
		},
		{
			name: "redirect refused by default",
			opts: func(o *outbound.Options) { o.CAFile = w.caFile },
			url:  w.trusted.URL + "/redirect",
			fail: func(r result) bool { return r.err == nil && r.resp.StatusCode == http.StatusFound },
		},
		{
			name: "redirect followed when asked",
			opts: func(o *outbound.Options) {
				o.CAFile, o.CheckRedirect = w.caFile, outbound.FollowRedirects(outbound.DefaultMaxRedirects)
			},
			url: w.trusted.URL + "/redirect",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := outbound.DefaultOptions()
			if tt.opts != nil {
				tt.opts(&o)
			}
			c, err := outbound.Client(o)
			if err != nil {
				t.Fatalf("Client: %v", err)
			}
			defer c.CloseIdleConnections()
			r := get(t, c, tt.url)
			if tt.quick && r.elapsed > timeoutBound {
				t.Errorf("request took %s; want under %s", r.elapsed, timeoutBound)
			}
			if tt.fail != nil {
				if !tt.fail(r) {
					t.Fatalf("got error %v (status %s); want the case's failure", r.err, status(r))
				}
				return
			}
			if r.err != nil || r.resp.StatusCode != http.StatusOK {
				t.Fatalf("got error %v (status %s); want 200", r.err, status(r))
			}
			if tt.ok != nil {
				tt.ok(t, r)
			}
		})
	}
	if n := w.proxied.Load(); n != 0 {
		t.Errorf("proxy from the environment got %d connections; want 0", n)
	}
}

// get sends GET url with c and reads the whole body.
func get(t *testing.T, c *http.Client, url string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), caseDeadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := c.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	r := result{resp: resp, body: string(body), err: err, elapsed: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("request still running after %s: the case's timeout was not applied (error %v)", caseDeadline, err)
	}
	return r
}

func status(r result) string {
	if r.resp == nil {
		return "none"
	}
	return r.resp.Status
}

// TestDialGuardSeesEveryDial checks that a refused destination is never
// connected to: the guard runs before the socket connects.
func TestDialGuardSeesEveryDial(t *testing.T) {
	var hits atomic.Int64
	addr := countingListener(t, &hits)
	g, err := egress.New(egress.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	o := outbound.DefaultOptions()
	o.Dial = g.DialContext
	c, err := outbound.Client(o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	for _, u := range []string{"https://" + addr, "http://" + addr} {
		r := get(t, c, u)
		if !errors.Is(r.err, egress.ErrForbidden) {
			t.Errorf("GET %s: got %v; want egress.ErrForbidden", u, r.err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("listener got %d connections; want 0", n)
	}
}

func TestTransportSettings(t *testing.T) {
	o := outbound.DefaultOptions()
	o.MaxIdleConns, o.MaxIdleConnsPerHost, o.DisableCompression = 7, 3, true
	tr, err := outbound.Transport(o)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Proxy != nil {
		t.Error("Proxy is set; want nil (never the environment's)")
	}
	c := tr.TLSClientConfig
	if c == nil || c.InsecureSkipVerify || c.RootCAs == nil || c.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLS config %+v; want verified, explicit roots, TLS 1.2 minimum", c)
	}
	if tr.MaxIdleConns != 7 || tr.MaxIdleConnsPerHost != 3 || !tr.DisableCompression {
		t.Errorf("pool %d/%d, DisableCompression %v; want 7/3, true", tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.DisableCompression)
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(o *outbound.Options)
		want []string
	}{
		{"defaults", func(*outbound.Options) {}, nil},
		{"zero value", func(o *outbound.Options) { *o = outbound.Options{} }, []string{
			"DialTimeout: must be positive", "TLSHandshakeTimeout: must be positive", "IdleConnTimeout: must be positive",
		}},
		{"negative", func(o *outbound.Options) {
			o.ResponseHeaderTimeout, o.Timeout, o.ExpectContinueTimeout = -1, -1, -1
			o.MaxIdleConns, o.MaxIdleConnsPerHost = -1, -1
		}, []string{
			"ResponseHeaderTimeout: must not be negative", "ExpectContinueTimeout: must not be negative",
			"Timeout: must not be negative", "MaxIdleConns: must not be negative",
			"MaxIdleConnsPerHost: must not be negative",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := outbound.DefaultOptions()
			tt.mod(&o)
			err := o.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("Validate: got %q; want %q", got, tt.want)
			}
			if _, err := outbound.Client(o); (err != nil) != (tt.want != nil) {
				t.Errorf("Client: got error %v; want one: %v", err, tt.want != nil)
			}
		})
	}
}

func TestRoots(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("nothing here"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name, file, key string
		want            string
		is              error
	}{
		{name: "no such file", file: missing, key: "vault.ca_file", want: "read vault.ca_file: open " + missing, is: os.ErrNotExist},
		{name: "not PEM", file: notPEM, key: "bundle.ca_file", want: "bundle.ca_file " + notPEM + ": no PEM certificates found", is: outbound.ErrNoCertificates},
		{name: "no key", file: notPEM, want: "ca file " + notPEM + ":", is: outbound.ErrNoCertificates},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := outbound.Roots(nil, tt.file, tt.key)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.Is(err, tt.is) {
				t.Errorf("Roots: got %v; want %q… wrapping %v", err, tt.want, tt.is)
			}
		})
	}
	base := x509.NewCertPool()
	pool, err := outbound.Roots(base, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if pool == base {
		t.Error("Roots returned base itself; want a copy")
	}
}
