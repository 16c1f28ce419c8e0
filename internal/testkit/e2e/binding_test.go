//go:build integration

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// loopbackOnly is the egress guard's underlying dialer in these tests: it
// dials 127.0.0.1 (the test upstream) and records, without sending a
// packet, any other address the guard lets through. A correct guard never
// lets one through; a broken one still cannot make the test leave
// loopback.
type loopbackOnly struct {
	mu    sync.Mutex
	other []string
}

func (l *loopbackOnly) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err == nil && ap.Addr() == netip.MustParseAddr("127.0.0.1") {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	l.mu.Lock()
	l.other = append(l.other, addr)
	l.mu.Unlock()
	return nil, errors.New("test dialer: refusing to leave 127.0.0.1")
}

func (l *loopbackOnly) dialled() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.other...)
}

// rawTunnel opens an intercepted tunnel to the API and returns a TLS
// connection to speak HTTP/1.1 on by hand.
func rawTunnel(t *testing.T, e *testenv.Env) *tls.Conn {
	t.Helper()
	target := fmt.Sprintf("%s:%d", testenv.APIHost, e.Upstream.Port())
	tc, resp, err := e.DialTLSThroughProxy(target, testenv.APIHost, "")
	if err != nil {
		t.Fatalf("tunnel: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT status %d", resp.StatusCode)
	}
	t.Cleanup(func() { tc.Close() })
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	return tc
}

func roundTripRaw(t *testing.T, c net.Conn, raw string) (*http.Response, errorBody) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp, readError(t, resp)
}

func TestTunnelBinding(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	assertion := e.Assert(t, testenv.User)
	hostport := fmt.Sprintf("%s:%d", testenv.APIHost, e.Upstream.Port())

	tests := []struct {
		name string
		raw  string
		want string
		code int
	}{
		{"Host header names another host", "GET /api/x HTTP/1.1\r\nHost: evil.test\r\nOnbehalf-Assertion: " + assertion + "\r\n\r\n", "bad_request", 400},
		{"Host header names another port", "GET /api/x HTTP/1.1\r\nHost: " + testenv.APIHost + ":1\r\nOnbehalf-Assertion: " + assertion + "\r\n\r\n", "bad_request", 400},
		{"absolute URL names another host", "GET https://evil.test/api/x HTTP/1.1\r\nHost: " + hostport + "\r\nOnbehalf-Assertion: " + assertion + "\r\n\r\n", "bad_request", 400},
		{"absolute URL over http", "GET http://" + hostport + "/api/x HTTP/1.1\r\nHost: " + hostport + "\r\nOnbehalf-Assertion: " + assertion + "\r\n\r\n", "bad_request", 400},
		{"no Host header", "GET /api/x HTTP/1.0\r\nOnbehalf-Assertion: " + assertion + "\r\n\r\n", "bad_request", 400},
		{"dot segments", "GET /api/../admin HTTP/1.1\r\nHost: " + hostport + "\r\nOnbehalf-Assertion: " + assertion + "\r\n\r\n", "bad_request", 400},
		{"encoded dot segments", "GET /api/%2e%2e/admin HTTP/1.1\r\nHost: " + hostport + "\r\nOnbehalf-Assertion: " + assertion + "\r\n\r\n", "bad_request", 400},
		{"CONNECT inside the tunnel", "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\nOnbehalf-Assertion: " + assertion + "\r\n\r\n", "bad_request", 400},
		{"Content-Length with Transfer-Encoding", "POST /api/x HTTP/1.1\r\nHost: " + hostport + "\r\nOnbehalf-Assertion: " + assertion + "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "bad_request", 400},
		{"two Content-Lengths", "POST /api/x HTTP/1.1\r\nHost: " + hostport + "\r\nOnbehalf-Assertion: " + assertion + "\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "bad_request", 400},
		{"obsolete line folding", "GET /api/x HTTP/1.1\r\nHost: " + hostport + "\r\nOnbehalf-Assertion: " + assertion + "\r\nX-A: 1\r\n folded\r\n\r\n", "bad_request", 400},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "bad_request", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.Upstream.Reset()
			resp, body := roundTripRaw(t, rawTunnel(t, e), tt.raw)
			if resp.StatusCode != tt.code || body.Error != tt.want {
				t.Errorf("got %d %s (%s); want %d %s", resp.StatusCode, body.Error, body.Message, tt.code, tt.want)
			}
			if n := len(e.Upstream.Requests()); n != 0 {
				t.Errorf("%d requests reached the upstream; want 0", n)
			}
		})
	}

	t.Run("SNI names another host", func(t *testing.T) {
		_, _, err := e.DialTLSThroughProxy(hostport, "evil.test", "")
		if err == nil {
			t.Fatal("TLS handshake with a foreign SNI succeeded; want it refused")
		}
	})
	t.Run("keep-alive requests stay bound", func(t *testing.T) {
		e.Upstream.Reset()
		c := rawTunnel(t, e)
		br := bufio.NewReader(c)
		for i, host := range []string{hostport, "evil.test"} {
			fmt.Fprintf(c, "GET /api/%d HTTP/1.1\r\nHost: %s\r\nOnbehalf-Assertion: %s\r\n\r\n", i, host, assertion)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			want := []int{200, 400}[i]
			if resp.StatusCode != want {
				t.Errorf("request %d: status %d; want %d", i, resp.StatusCode, want)
			}
		}
		if n := len(e.Upstream.Requests()); n != 1 {
			t.Errorf("%d requests upstream; want 1", n)
		}
	})
}

func TestConnectAndPlainRefusals(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	assertion := e.Assert(t, testenv.User)

	t.Run("unrouted CONNECT", func(t *testing.T) {
		_, resp, err := e.Connect("unrouted.test:443", assertion)
		if err != nil {
			t.Fatal(err)
		}
		if got := readError(t, resp); resp.StatusCode != 403 || got.Error != "no_route" {
			t.Errorf("got %d %s; want 403 no_route", resp.StatusCode, got.Error)
		}
	})
	t.Run("CONNECT to another port of a routed host", func(t *testing.T) {
		_, resp, err := e.Connect(testenv.APIHost+":443", assertion)
		if err != nil {
			t.Fatal(err)
		}
		if got := readError(t, resp); resp.StatusCode != 403 || got.Error != "no_route" {
			t.Errorf("got %d %s; want 403 no_route", resp.StatusCode, got.Error)
		}
	})
	t.Run("plain HTTP to a routed host", func(t *testing.T) {
		e.Upstream.Reset()
		c := e.Client()
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s:%d/api/x", testenv.APIHost, e.Upstream.Port()), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := readError(t, resp); resp.StatusCode != 403 || got.Error != "no_route" {
			t.Errorf("got %d %s; want 403 no_route", resp.StatusCode, got.Error)
		}
		if n := len(e.Upstream.Requests()); n != 0 {
			t.Errorf("%d requests upstream; want 0", n)
		}
	})
	t.Run("origin-form request to the proxy port", func(t *testing.T) {
		resp, err := http.Get("http://" + e.Sidecar.ProxyAddr() + "/")
		if err != nil {
			t.Fatal(err)
		}
		if got := readError(t, resp); resp.StatusCode != 400 || got.Error != "bad_request" {
			t.Errorf("got %d %s; want 400 bad_request", resp.StatusCode, got.Error)
		}
	})
	t.Run("path outside the route's prefixes", func(t *testing.T) {
		e2 := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) { c.Routes[0].Paths = []string{"/api/"} }})
		req, _ := http.NewRequest(http.MethodGet, e2.APIURL("/admin/x"), nil)
		req.Header.Set(identity.DefaultHeader, e2.Assert(t, testenv.User))
		resp, err := e2.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := readError(t, resp); resp.StatusCode != 403 || got.Error != "no_route" {
			t.Errorf("got %d %s; want 403 no_route", resp.StatusCode, got.Error)
		}
		if n := len(e2.Upstream.Requests()); n != 0 {
			t.Errorf("%d requests upstream; want 0", n)
		}
	})
}

// TestPrivateDestinations routes hosts whose names resolve to forbidden
// addresses. The guard must refuse each before dialling.
func TestPrivateDestinations(t *testing.T) {
	dialer := &loopbackOnly{}
	hosts := map[string]string{
		"internal.test":    "10.1.2.3",
		"metadata.test":    "169.254.169.254",
		"cgnat.test":       "100.64.0.1",
		"loopback2.test":   "127.0.0.2",
		"mapped.test":      "::ffff:127.0.0.2",
		"ula.test":         "fd00::1",
		"nat64.test":       "64:ff9b::a9fe:a9fe",
		"linklocal6.test":  "fe80::1",
		"private-172.test": "172.16.5.4",
	}
	dns := map[string][]netip.Addr{}
	var names []string
	for name, ip := range hosts {
		dns[name] = []netip.Addr{netip.MustParseAddr(ip)}
		names = append(names, name)
	}

	e := testenv.New(t, testenv.Options{
		DNS:  dns,
		Dial: dialer.dial,
		Config: func(c *sidecar.Config) {
			for _, n := range names {
				c.Routes = append(c.Routes, injector.RouteConfig{Host: n, Port: 443, Provider: testenv.Provider})
			}
		},
	})
	assertion := e.Assert(t, testenv.User)
	client := e.Client()
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "https://"+name+"/api/x", nil)
			req.Header.Set(identity.DefaultHeader, assertion)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := readError(t, resp); resp.StatusCode != 403 || got.Error != "destination_forbidden" {
				t.Errorf("got %d %s (%s); want 403 destination_forbidden", resp.StatusCode, got.Error, got.Message)
			}
		})
	}
	// Numeric spellings of 127.0.0.2 (loopback, but not allowed) are
	// refused at CONNECT: they mean an address to some resolvers and a
	// name to others.
	for _, target := range []string{"2130706434:443", "0x7f000002:443", "127.2:443", "0177.0.0.2:443", "[::ffff:7f00:2]:443"} {
		t.Run(target, func(t *testing.T) {
			_, resp, err := e.Connect(target, assertion)
			if err != nil {
				t.Fatal(err)
			}
			got := readError(t, resp)
			if resp.StatusCode != 400 && resp.StatusCode != 403 {
				t.Errorf("got %d %s; want it refused", resp.StatusCode, got.Error)
			}
		})
	}
	if d := dialer.dialled(); len(d) != 0 {
		t.Errorf("the guard let through %v", d)
	}
}

// TestRedirectNotFollowed: a redirect to another host is handed to the
// agent, and following it is a new request that needs its own route.
func TestRedirectNotFollowed(t *testing.T) {
	e := testenv.New(t, testenv.Options{Upstream: upstreamtest.Options{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.test/steal", http.StatusFound)
	})}})
	c := e.Client()
	var hops []string
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		hops = append(hops, req.URL.Host)
		return nil
	}
	req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/x"), nil)
	req.Header.Set(identity.DefaultHeader, e.Assert(t, testenv.User))
	_, err := c.Do(req)
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("following the redirect: got %v; want the CONNECT refused", err)
	}
	if len(e.Upstream.Requests()) != 1 || len(hops) != 1 || hops[0] != "elsewhere.test" {
		t.Errorf("upstream saw %d requests, client hops %v", len(e.Upstream.Requests()), hops)
	}
}

// TestDNSRebinding routes a name whose DNS answer changes between two
// requests, the way a rebinding attack does. The guard must check the
// address it actually dials — the dialer is handed checked IP literals
// only, never the name to resolve again — so once the name answers with a
// loopback address outside the allow-list, the request is refused and
// nothing connects to it. Every connection here stays on loopback: the
// "public" address of the first answer is one the test dialer maps to the
// upstream on 127.0.0.1; the other variant uses the production dialer with
// 127.0.0.1 allowed and 127.0.0.2 not.
func TestDNSRebinding(t *testing.T) {
	const public = "93.184.216.34" // an ordinary public address, never dialled
	closeEach := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A new connection, and so a new dial, for every request.
		w.Header().Set("Connection", "close")
		io.WriteString(w, "ok")
	})

	t.Run("public answer, then loopback", func(t *testing.T) {
		var mu sync.Mutex
		var dialled []string
		var upstreamPort int
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialled = append(dialled, addr)
			mu.Unlock()
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, fmt.Errorf("test dialer: %q is not an IP literal", addr)
			}
			if ap.Addr() == netip.MustParseAddr(public) && int(ap.Port()) == upstreamPort {
				var d net.Dialer
				return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", upstreamPort))
			}
			return nil, errors.New("test dialer: refusing to leave 127.0.0.1")
		}
		e := testenv.New(t, testenv.Options{
			Upstream: upstreamtest.Options{Names: []string{"rebind.test"}, Handler: closeEach},
			Dial:     dial,
			Config: func(c *sidecar.Config) {
				c.Routes = append(c.Routes, injector.RouteConfig{Host: "rebind.test", Port: c.Routes[0].Port, Provider: testenv.Provider})
			},
		})
		upstreamPort = e.Upstream.Port()
		answers := []netip.Addr{netip.MustParseAddr(public), netip.MustParseAddr("127.0.0.2")}
		rebind := func(name string, n int) []netip.Addr { return answers[min(n, 1):][:1] }
		startDNS(t, e, "rebind.test", rebind)
		assertion := e.Assert(t, testenv.User)
		url := fmt.Sprintf("https://rebind.test:%d/api/x", upstreamPort)

		if code, _ := getWith(t, e, url, assertion); code != http.StatusOK {
			t.Fatalf("first request (public answer): %d; want 200", code)
		}
		code, body := getWith(t, e, url, assertion)
		if code != http.StatusForbidden || body.Error != "destination_forbidden" {
			t.Errorf("second request (rebound to 127.0.0.2): %d %s; want 403 destination_forbidden", code, body.Error)
		}
		mu.Lock()
		defer mu.Unlock()
		if want := []string{fmt.Sprintf("%s:%d", public, upstreamPort)}; !slices.Equal(dialled, want) {
			t.Errorf("dialer was handed %q; want only the checked public literal %q", dialled, want)
		}
		if n := e.DNS.AQueries("rebind.test"); n < 2 {
			t.Errorf("%d A queries; want one per dial (the name resolved again)", n)
		}
	})

	t.Run("loopback answer, then another loopback address", func(t *testing.T) {
		e := testenv.New(t, testenv.Options{
			Upstream: upstreamtest.Options{Names: []string{"rebind.test"}, Handler: closeEach},
			Config: func(c *sidecar.Config) {
				c.Routes = append(c.Routes, injector.RouteConfig{Host: "rebind.test", Port: c.Routes[0].Port, Provider: testenv.Provider})
			},
		})
		// What the rebinding aims at: a service on 127.0.0.2, same port.
		internal, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", e.Upstream.Port()))
		if err != nil {
			t.Fatalf("listen on 127.0.0.2: %v", err)
		}
		var reached atomic.Int32
		go func() {
			for {
				c, err := internal.Accept()
				if err != nil {
					return
				}
				reached.Add(1)
				c.Close()
			}
		}()
		t.Cleanup(func() { internal.Close() })
		answers := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
		startDNS(t, e, "rebind.test", func(name string, n int) []netip.Addr { return answers[min(n, 1):][:1] })
		assertion := e.Assert(t, testenv.User)
		url := fmt.Sprintf("https://rebind.test:%d/api/x", e.Upstream.Port())
		if code, _ := getWith(t, e, url, assertion); code != http.StatusOK {
			t.Fatalf("first request (127.0.0.1): %d; want 200", code)
		}
		code, body := getWith(t, e, url, assertion)
		if code != http.StatusForbidden || body.Error != "destination_forbidden" {
			t.Errorf("second request (rebound to 127.0.0.2): %d %s; want 403 destination_forbidden", code, body.Error)
		}
		if n := reached.Load(); n != 0 {
			t.Errorf("the service on 127.0.0.2 was reached %d times; want 0", n)
		}
	})
}

// startDNS makes name answer from answer in e's DNS server.
func startDNS(t *testing.T, e *testenv.Env, name string, answer func(string, int) []netip.Addr) {
	t.Helper()
	e.DNS.Set(name, answer)
}

// getWith sends GET url with the assertion and returns the status and, for
// a refusal, the error body.
func getWith(t *testing.T, e *testenv.Env, url, assertion string) (int, errorBody) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set(identity.DefaultHeader, assertion)
	resp, err := e.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, errorBody{}
	}
	return resp.StatusCode, readError(t, resp)
}
