package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is an underlying dialer that records the addresses it is asked
// for and never sends a packet.
type recorder struct {
	mu    sync.Mutex
	addrs []string
}

func (r *recorder) dial(_ context.Context, network, address string) (net.Conn, error) {
	r.mu.Lock()
	r.addrs = append(r.addrs, network+" "+address)
	r.mu.Unlock()
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func (r *recorder) dialled() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.addrs...)
}

func mustGuard(t testing.TB, cfg Config, opts ...Option) *Guard {
	t.Helper()
	g, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g
}

func TestCheck(t *testing.T) {
	g := mustGuard(t, Config{
		Allow:      []string{"127.0.0.1/32", "10.20.0.0/16", "fd00:1::/32"},
		AllowPorts: []int{443, 8443},
		Deny:       []string{"8.8.4.4", "2001:4860:4860::8844/128", "10.20.30.0/24"},
	})
	tests := []struct {
		ap     string
		reason string // "" means allowed
	}{
		{"8.8.8.8:443", ""},
		{"8.8.8.8:25", ""}, // AllowPorts does not restrict public addresses
		{"[2606:4700:4700::1111]:443", ""},
		{"127.0.0.1:443", ""},
		{"[::ffff:127.0.0.1]:443", ""},
		{"127.0.0.1:80", "loopback address"}, // allowed address, port not in allow_ports
		{"127.0.0.2:443", "loopback address"},
		{"[::ffff:127.0.0.2]:443", "loopback address"},
		{"[::1]:443", "loopback address"},
		{"10.20.1.1:8443", ""},
		{"10.21.1.1:8443", "private address"},
		{"10.20.30.1:443", "denied by configuration"}, // deny wins over allow
		{"8.8.4.4:443", "denied by configuration"},
		{"[::ffff:8.8.4.4]:443", "denied by configuration"},
		{"[2001:4860:4860::8844]:443", "denied by configuration"},
		{"[fd00:1::5]:443", ""},
		{"[fd00:2::5]:443", "unique-local address"},
		{"169.254.169.254:443", "link-local address"},
		{"[fe80::1%eth0]:443", "link-local address"},
		{"100.64.0.1:443", "carrier-grade NAT address"},
		{"0.0.0.0:443", "unspecified address"},
		{"[::]:443", "unspecified address"},
		{"224.0.0.1:443", "multicast address"},
		{"255.255.255.255:443", "broadcast address"},
		{"240.0.0.1:443", "reserved address"},
		{"[64:ff9b::7f00:1]:443", "loopback address"}, // an IPv4 allow entry does not cover NAT64
		{"[2002:a9fe:a9fe::]:443", "link-local address"},
		{"[fec0::1]:443", "site-local address"},
	}
	for _, tt := range tests {
		t.Run(tt.ap, func(t *testing.T) {
			err := g.Check(netip.MustParseAddrPort(tt.ap))
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v; want nil", tt.ap, err)
				}
				return
			}
			var fe *ForbiddenError
			if !errors.As(err, &fe) || !errors.Is(err, ErrForbidden) {
				t.Fatalf("Check(%s) = %v; want a *ForbiddenError", tt.ap, err)
			}
			if fe.Reason != tt.reason {
				t.Errorf("Check(%s) reason = %q; want %q", tt.ap, fe.Reason, tt.reason)
			}
			if want := "destination forbidden: " + tt.reason; err.Error() != want {
				t.Errorf("Check(%s) error = %q; want %q", tt.ap, err.Error(), want)
			}
		})
	}
	if err := g.Check(netip.AddrPort{}); !errors.Is(err, ErrForbidden) {
		t.Errorf("Check(zero) = %v; want ErrForbidden", err)
	}
}

func TestCheckDefaultRefusesEveryForbiddenClass(t *testing.T) {
	g := mustGuard(t, DefaultConfig())
	for _, s := range []string{
		"0.0.0.0", "0.1.2.3", "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254",
		"100.64.0.1", "192.0.0.1", "192.0.2.1", "198.18.0.1", "198.51.100.1", "203.0.113.1", "224.0.0.1",
		"240.0.0.1", "255.255.255.255", "::", "::1", "fe80::1", "fec0::1", "fc00::1", "fd00:ec2::254",
		"ff02::1", "2001:db8::1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::a9fe:a9fe",
		"64:ff9b:1::a00:1", "2002:a00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe",
	} {
		ap := netip.AddrPortFrom(netip.MustParseAddr(s), 443)
		if err := g.Check(ap); !errors.Is(err, ErrForbidden) {
			t.Errorf("Check(%s) = %v; want ErrForbidden", ap, err)
		}
	}
}

// TestDialContextRecorded drives DialContext with a recording underlying
// dialer: refused destinations never reach it, and allowed ones reach it as
// the checked IP literal. Nothing here sends a packet.
func TestDialContextRecorded(t *testing.T) {
	tests := []struct {
		addr   string
		reason string // "" means allowed
		dialed string // what the underlying dialer saw
	}{
		{"8.8.8.8:443", "", "tcp 8.8.8.8:443"},
		{"[2606:4700:4700::1111]:443", "", "tcp [2606:4700:4700::1111]:443"},
		{"[::ffff:8.8.8.8]:443", "", "tcp 8.8.8.8:443"},
		{"134744072:443", "", "tcp 8.8.8.8:443"}, // 8.8.8.8 in inet_aton form
		{"169.254.169.254:80", "link-local address", ""},
		{"0xa9fea9fe:80", "link-local address", ""},
		{"169.16689662:80", "link-local address", ""},
		{"0251.0376.0251.0376:80", "link-local address", ""},
		{"[::ffff:169.254.169.254]:80", "link-local address", ""},
		{"[::169.254.169.254]:80", "link-local address", ""},
		{"[64:ff9b::a9fe:a9fe]:80", "link-local address", ""},
		{"[2002:a9fe:a9fe::1]:80", "link-local address", ""},
		{"[2001:0:4136:e378:8000:63bf:5601:5601]:80", "link-local address", ""},
		{"[fd00:ec2::254]:80", "unique-local address", ""},
		{"[fe80::1%eth0]:80", "link-local address", ""},
		{"10.0.0.1:443", "private address", ""},
		{"10.1:443", "private address", ""},
		{"192.168.1.1:443", "private address", ""},
		{"100.64.0.1:443", "carrier-grade NAT address", ""},
		{"0.0.0.0:443", "unspecified address", ""},
		{":443", "unspecified address", ""},
		{"[::]:443", "unspecified address", ""},
		{"1.2.3.4.5:443", "ambiguous numeric host", ""},
		{"256.1.1.1:443", "ambiguous numeric host", ""},
		{"[::ffff:0177.0.0.1]:443", "ambiguous numeric host", ""},
		{"203.0.113.7:443", "reserved address", ""},
		{"8.8.4.4:443", "denied by configuration", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			rec := &recorder{}
			g := mustGuard(t, Config{Deny: []string{"8.8.4.4/32"}}, WithDialer(rec.dial))
			conn, err := g.DialContext(context.Background(), "tcp", tt.addr)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("DialContext(%s) = %v; want a connection", tt.addr, err)
				}
				conn.Close()
				if diff := cmp.Diff([]string{tt.dialed}, rec.dialled()); diff != "" {
					t.Errorf("underlying dials (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				conn.Close()
				t.Fatalf("DialContext(%s) succeeded; want refusal", tt.addr)
			}
			var fe *ForbiddenError
			if !errors.As(err, &fe) || !errors.Is(err, ErrForbidden) {
				t.Fatalf("DialContext(%s) = %v; want a *ForbiddenError", tt.addr, err)
			}
			if want := "dial " + tt.addr + ": destination forbidden: " + tt.reason; err.Error() != want {
				t.Errorf("error = %q; want %q", err.Error(), want)
			}
			if got := rec.dialled(); len(got) != 0 {
				t.Errorf("underlying dials = %q; want none", got)
			}
		})
	}
}

// TestDialContextNames resolves names through a DNS server on loopback: a
// name that resolves to a forbidden address is refused without naming the
// address, and a name with mixed answers dials only the allowed ones.
func TestDialContextNames(t *testing.T) {
	dns := newFakeDNS(t, func(name string, n int) []netip.Addr {
		switch name {
		case "internal.test":
			return []netip.Addr{netip.MustParseAddr("10.1.2.3")}
		case "metadata.test":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}
		case "metadata6.test":
			return []netip.Addr{netip.MustParseAddr("fd00:ec2::254")}
		case "mapped.test":
			return []netip.Addr{netip.MustParseAddr("::ffff:10.1.2.3")}
		case "mixed.test":
			return []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("8.8.4.4")}
		case "public.test":
			return []netip.Addr{netip.MustParseAddr("8.8.8.8")}
		case "rebind.test":
			// Public for the first lookup, private afterwards.
			if n == 0 {
				return []netip.Addr{netip.MustParseAddr("8.8.8.8")}
			}
			return []netip.Addr{netip.MustParseAddr("10.1.2.3")}
		}
		return nil
	})
	tests := []struct {
		addr   string
		reason string
		dialed []string
	}{
		{"internal.test:443", "private address", nil},
		{"INTERNAL.test.:443", "private address", nil},
		{"metadata.test:80", "link-local address", nil},
		{"metadata6.test:80", "unique-local address", nil},
		{"mapped.test:443", "private address", nil},
		{"mixed.test:443", "", []string{"tcp 8.8.4.4:443"}},
		{"public.test:443", "", []string{"tcp 8.8.8.8:443"}},
		{"rebind.test:443", "", []string{"tcp 8.8.8.8:443"}},
		{"rebind.test:443", "private address", nil},
	}
	for i, tt := range tests {
		t.Run(strconv.Itoa(i)+"/"+tt.addr, func(t *testing.T) {
			rec := &recorder{}
			g := mustGuard(t, DefaultConfig(), WithDialer(rec.dial), WithResolver(dns.resolver()))
			conn, err := g.DialContext(context.Background(), "tcp", tt.addr)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("DialContext(%s) = %v; want a connection", tt.addr, err)
				}
				conn.Close()
			} else {
				if !errors.Is(err, ErrForbidden) {
					t.Fatalf("DialContext(%s) = %v; want ErrForbidden", tt.addr, err)
				}
				if want := "dial " + tt.addr + ": destination forbidden: " + tt.reason; err.Error() != want {
					t.Errorf("error = %q; want %q", err.Error(), want)
				}
			}
			if diff := cmp.Diff(tt.dialed, rec.dialled()); diff != "" {
				t.Errorf("underlying dials (-want +got):\n%s", diff)
			}
		})
	}
	if n := dns.aQueries("rebind.test"); n != 2 {
		t.Errorf("A queries for rebind.test = %d; want 2 (one per dial)", n)
	}

	t.Run("unknown name", func(t *testing.T) {
		rec := &recorder{}
		g := mustGuard(t, DefaultConfig(), WithDialer(rec.dial), WithResolver(dns.resolver()))
		_, err := g.DialContext(context.Background(), "tcp", "nowhere.test:443")
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || errors.Is(err, ErrForbidden) {
			t.Errorf("DialContext(nowhere.test) = %v; want a *net.DNSError", err)
		}
		if got := rec.dialled(); len(got) != 0 {
			t.Errorf("underlying dials = %q; want none", got)
		}
	})
}

func TestDialContextNetworks(t *testing.T) {
	rec := &recorder{}
	g := mustGuard(t, DefaultConfig(), WithDialer(rec.dial))
	tests := []struct {
		network, addr string
		wantErr       bool
	}{
		{"tcp4", "8.8.8.8:443", false},
		{"tcp6", "[2606:4700:4700::1111]:443", false},
		{"tcp4", "[2606:4700:4700::1111]:443", true},
		{"tcp6", "8.8.8.8:443", true},
		{"udp", "8.8.8.8:53", true},
		{"tcp", "8.8.8.8", true},
		{"tcp", "8.8.8.8:0", true},
		{"tcp", "8.8.8.8:https", true},
		{"tcp", "8.8.8.8:70000", true},
	}
	for _, tt := range tests {
		conn, err := g.DialContext(context.Background(), tt.network, tt.addr)
		if conn != nil {
			conn.Close()
		}
		if (err != nil) != tt.wantErr {
			t.Errorf("DialContext(%s, %s) = %v; want error %v", tt.network, tt.addr, err, tt.wantErr)
		}
	}
	want := []string{"tcp4 8.8.8.8:443", "tcp6 [2606:4700:4700::1111]:443"}
	if diff := cmp.Diff(want, rec.dialled()); diff != "" {
		t.Errorf("underlying dials (-want +got):\n%s", diff)
	}
}

func TestDialContextTriesNextAddress(t *testing.T) {
	dns := newFakeDNS(t, func(name string, _ int) []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("8.8.4.4")}
	})
	var mu sync.Mutex
	var seen []string
	failFirst := func(_ context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, address)
		if len(seen) == 1 {
			return nil, errors.New("connection refused")
		}
		c1, c2 := net.Pipe()
		c2.Close()
		return c1, nil
	}
	g := mustGuard(t, DefaultConfig(), WithDialer(failFirst), WithResolver(dns.resolver()))
	conn, err := g.DialContext(context.Background(), "tcp4", "many.test:443")
	if err != nil {
		t.Fatalf("DialContext = %v; want a connection", err)
	}
	conn.Close()
	// The resolver may reorder answers (RFC 6724), so check the set: two
	// attempts, both public, the private answer never dialled.
	slices.Sort(seen)
	if diff := cmp.Diff([]string{"8.8.4.4:443", "8.8.8.8:443"}, seen); diff != "" {
		t.Errorf("dialled (-want +got):\n%s", diff)
	}
}

// loopbackServer starts an HTTP server on 127.0.0.1 and returns it and its
// port.
func loopbackServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return srv, port
}

func client(t *testing.T, g *Guard) *http.Client {
	tr := &http.Transport{Proxy: nil, DialContext: g.DialContext, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// TestDialLoopback dials for real, only to loopback: 127.0.0.1 is allowed,
// and 127.0.0.2 in every spelling is refused.
func TestDialLoopback(t *testing.T) {
	_, port := loopbackServer(t)
	g := mustGuard(t, Config{Allow: []string{"127.0.0.1/32"}})
	c := client(t, g)

	resp, err := c.Get("http://127.0.0.1:" + port + "/")
	if err != nil {
		t.Fatalf("GET 127.0.0.1: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" {
		t.Errorf("body = %q; want %q", body, "hello")
	}

	for _, host := range []string{"127.0.0.2", "2130706434", "0x7f000002", "0177.0.0.2", "127.2", "127.0.2", "[::ffff:127.0.0.2]", "[::1]", "0.0.0.0"} {
		t.Run(host, func(t *testing.T) {
			conn, err := g.DialContext(context.Background(), "tcp", host+":"+port)
			if err == nil {
				conn.Close()
				t.Fatalf("DialContext(%s) succeeded; want refusal", host)
			}
			if !errors.Is(err, ErrForbidden) {
				t.Fatalf("DialContext(%s) = %v; want ErrForbidden", host, err)
			}
			_, err = c.Get("http://" + host + ":" + port + "/")
			if !errors.Is(err, ErrForbidden) {
				t.Fatalf("GET via %s = %v; want ErrForbidden", host, err)
			}
			if strings.Contains(err.Error(), "127.0.0.2") && !strings.Contains(host, "127.0.0.2") {
				t.Errorf("error %q names the resolved address", err)
			}
		})
	}
}

// TestDialLocalhostRefused dials a name that resolves to loopback (through
// /etc/hosts) with a guard that allows another loopback address only.
func TestDialLocalhostRefused(t *testing.T) {
	_, port := loopbackServer(t)
	g := mustGuard(t, Config{Allow: []string{"127.0.0.3/32"}})
	_, err := g.DialContext(context.Background(), "tcp", "localhost:"+port)
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("DialContext(localhost) = %v; want ErrForbidden", err)
	}
	want := "dial localhost:" + port + ": destination forbidden: loopback address"
	if err.Error() != want {
		t.Errorf("error = %q; want %q", err.Error(), want)
	}
	if _, err := client(t, g).Get("http://localhost:" + port + "/"); !errors.Is(err, ErrForbidden) {
		t.Errorf("GET localhost = %v; want ErrForbidden", err)
	}
}

// TestControlChecksDialledAddress shows that the check also runs at the
// socket, on the address net.Dialer resolved itself: a dialer that does its
// own resolution (of "localhost", or of a name a DNS server maps to
// 127.0.0.2) is refused by Control.
func TestControlChecksDialledAddress(t *testing.T) {
	_, port := loopbackServer(t)
	g := mustGuard(t, Config{Allow: []string{"127.0.0.1/32"}})
	dns := newFakeDNS(t, func(name string, _ int) []netip.Addr {
		if name == "rebound.test" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.2")}
		}
		return nil
	})
	d := &net.Dialer{Timeout: time.Second, Control: g.Control, Resolver: dns.resolver()}
	for _, addr := range []string{"127.0.0.2:" + port, "rebound.test:" + port, "[::1]:" + port} {
		conn, err := d.DialContext(context.Background(), "tcp", addr)
		if err == nil {
			conn.Close()
			t.Errorf("dial %s with Control succeeded; want refusal", addr)
			continue
		}
		if !errors.Is(err, ErrForbidden) {
			t.Errorf("dial %s with Control = %v; want ErrForbidden", addr, err)
		}
	}
	conn, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("dial 127.0.0.1 with Control = %v; want a connection", err)
	}
	conn.Close()

	// The guard's default underlying dialer carries the same Control, so
	// even an address that skipped the pre-check is refused at the socket.
	if conn, err := g.dial(context.Background(), "tcp", "127.0.0.2:"+port); err == nil {
		conn.Close()
		t.Errorf("default dialer reached 127.0.0.2; want refusal by Control")
	} else if !errors.Is(err, ErrForbidden) {
		t.Errorf("default dialer error = %v; want ErrForbidden", err)
	}
	if err := g.Control("tcp", "not an address", nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("Control(garbage) = %v; want ErrForbidden", err)
	}
}

func TestDenyListener(t *testing.T) {
	srv, port := loopbackServer(t)
	_, otherPort := loopbackServer(t)
	g := mustGuard(t, Config{Allow: []string{"127.0.0.0/8", "::1/128"}})
	g.DenyListener(srv.Listener.Addr())

	_, err := g.DialContext(context.Background(), "tcp", "127.0.0.1:"+port)
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("dial own listener = %v; want ErrForbidden", err)
	}
	if want := "dial 127.0.0.1:" + port + ": destination forbidden: the proxy's own listener"; err.Error() != want {
		t.Errorf("error = %q; want %q", err.Error(), want)
	}
	for _, addr := range []string{"[::ffff:127.0.0.1]:" + port, "2130706433:" + port, "0.0.0.0:" + port} {
		if _, err := g.DialContext(context.Background(), "tcp", addr); !errors.Is(err, ErrForbidden) {
			t.Errorf("dial %s = %v; want ErrForbidden", addr, err)
		}
	}
	conn, err := g.DialContext(context.Background(), "tcp", "127.0.0.1:"+otherPort)
	if err != nil {
		t.Fatalf("dial other loopback server = %v; want a connection", err)
	}
	conn.Close()
	// A specific-address listener does not block the port elsewhere.
	p, _ := strconv.Atoi(port)
	if err := g.Check(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(p))); err != nil {
		t.Errorf("Check(127.0.0.2:%d) = %v; want nil", p, err)
	}

	g.DenyListener(nil)
	g.DenyListener(&net.UnixAddr{Name: "/tmp/x.sock", Net: "unix"})
	g.DenyAddrPort(netip.MustParseAddrPort("127.0.0.1:0"))
}

func TestDenyWildcardListener(t *testing.T) {
	ln, err := net.Listen("tcp", ":0") // a wildcard listener, as the sidecar may use
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)

	g := mustGuard(t, Config{Allow: []string{"0.0.0.0/0", "::/0"}})
	g.DenyListener(ln.Addr())

	local := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.9.9.9"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::"), netip.MustParseAddr("::ffff:127.0.0.1"),
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("InterfaceAddrs: %v", err)
	}
	for _, a := range ifAddrs {
		if n, ok := a.(*net.IPNet); ok {
			ip, _ := netip.AddrFromSlice(n.IP)
			local = append(local, ip)
		}
	}
	for _, ip := range local {
		ap := netip.AddrPortFrom(ip, port)
		err := g.Check(ap)
		var fe *ForbiddenError
		if !errors.As(err, &fe) || fe.Reason != reasonListener {
			t.Errorf("Check(%s) = %v; want refusal as own listener", ap, err)
		}
	}
	for _, ap := range []netip.AddrPort{
		netip.AddrPortFrom(netip.MustParseAddr("8.8.8.8"), port),
		netip.AddrPortFrom(netip.MustParseAddr("10.99.99.99"), port),
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port+1),
	} {
		if err := g.Check(ap); err != nil {
			t.Errorf("Check(%s) = %v; want nil", ap, err)
		}
	}
	// A real dial to the wildcard listener over loopback is refused.
	if _, err := g.DialContext(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", port)); !errors.Is(err, ErrForbidden) {
		t.Errorf("dial wildcard listener = %v; want ErrForbidden", err)
	}
}

func TestDenyWildcardFailsClosed(t *testing.T) {
	g := mustGuard(t, Config{Allow: []string{"0.0.0.0/0"}})
	g.interfaceAddrs = func() ([]net.Addr, error) { return nil, errors.New("netlink unavailable") }
	g.DenyAddrPort(netip.MustParseAddrPort("0.0.0.0:9000"))
	if err := g.Check(netip.MustParseAddrPort("10.1.1.1:9000")); !errors.Is(err, ErrForbidden) {
		t.Errorf("Check(10.1.1.1:9000) with unreadable interfaces = %v; want ErrForbidden", err)
	}
	if err := g.Check(netip.MustParseAddrPort("10.1.1.1:9001")); err != nil {
		t.Errorf("Check(10.1.1.1:9001) = %v; want nil", err)
	}
}

func TestLocalAddrsRefresh(t *testing.T) {
	g := mustGuard(t, Config{Allow: []string{"0.0.0.0/0"}})
	now := time.Unix(1_000_000, 0)
	g.now = func() time.Time { return now }
	addr := "10.0.0.5"
	calls := 0
	g.interfaceAddrs = func() ([]net.Addr, error) {
		calls++
		return []net.Addr{&net.IPNet{IP: net.ParseIP(addr), Mask: net.CIDRMask(24, 32)}}, nil
	}
	g.DenyAddrPort(netip.MustParseAddrPort("[::]:9000"))
	check := func(ip string) error { return g.Check(netip.MustParseAddrPort(ip + ":9000")) }
	if err := check("10.0.0.5"); !errors.Is(err, ErrForbidden) {
		t.Errorf("Check(10.0.0.5) = %v; want ErrForbidden", err)
	}
	addr = "10.0.0.6" // the pod's address changes
	if err := check("10.0.0.6"); err != nil {
		t.Errorf("Check(10.0.0.6) before refresh = %v; want nil (cached)", err)
	}
	now = now.Add(localAddrsTTL + time.Second)
	if err := check("10.0.0.6"); !errors.Is(err, ErrForbidden) {
		t.Errorf("Check(10.0.0.6) after refresh = %v; want ErrForbidden", err)
	}
	if calls != 2 {
		t.Errorf("interface reads = %d; want 2", calls)
	}
}

func TestCheckConcurrentWithDenyListener(t *testing.T) {
	g := mustGuard(t, Config{Allow: []string{"127.0.0.0/8"}})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for p := range 200 {
				g.DenyAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(10000+i*1000+p)))
			}
		}()
		go func() {
			defer wg.Done()
			for p := range 200 {
				g.Check(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(10000+p)))
			}
		}()
	}
	wg.Wait()
	for i := range 4 {
		ap := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(10000+i*1000+199))
		if err := g.Check(ap); !errors.Is(err, ErrForbidden) {
			t.Errorf("Check(%s) = %v; want ErrForbidden", ap, err)
		}
	}
}

func TestCheckAllocs(t *testing.T) {
	g := mustGuard(t, Config{Allow: []string{"127.0.0.1/32"}, Deny: []string{"8.8.4.4"}})
	g.DenyAddrPort(netip.MustParseAddrPort("0.0.0.0:8080"))
	ap := netip.MustParseAddrPort("8.8.8.8:443")
	if n := testing.AllocsPerRun(100, func() { g.Check(ap) }); n != 0 {
		t.Errorf("Check allocations = %v; want 0", n)
	}
}

func BenchmarkCheck(b *testing.B) {
	g := mustGuard(b, Config{Allow: []string{"127.0.0.1/32", "10.20.0.0/16"}, Deny: []string{"8.8.4.4"}})
	g.DenyAddrPort(netip.MustParseAddrPort("0.0.0.0:8080"))
	cases := []struct {
		name string
		ap   netip.AddrPort
	}{
		{"public-v4", netip.MustParseAddrPort("93.184.216.34:443")},
		{"public-v6", netip.MustParseAddrPort("[2606:4700:4700::1111]:443")},
		{"allowed-loopback", netip.MustParseAddrPort("127.0.0.1:443")},
		{"refused-metadata", netip.MustParseAddrPort("169.254.169.254:80")},
		{"refused-nat64", netip.MustParseAddrPort("[64:ff9b::a9fe:a9fe]:80")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				g.Check(c.ap)
			}
		})
	}
}

func BenchmarkParseHost(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ParseHost("0x7f.0.0.1")
	}
}
