package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// exchangeOn sends one request on uc's TLS connection and reads the
// response, as the first request on a new connection does; in TLS 1.3 the
// server's session tickets arrive with it.
func exchangeOn(tb testing.TB, uc *upConn) {
	tb.Helper()
	if _, err := fmt.Fprintf(uc.conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", uc.addr); err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(uc.conn), nil)
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestUpstreamResumesSessions: a new connection to a host resumes the TLS
// session an earlier connection under the same pool key received, and
// never one received under another key (another user, with pool
// per_user).
func TestUpstreamResumesSessions(t *testing.T) {
	srv := newCountingServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), nil)
	u := newTestUpstreamClient(t, srv.roots(), nil)
	addr := srv.Listener.Addr().String()
	connect := func(user string) bool {
		t.Helper()
		uc, err := u.connect(context.Background(), addr, user)
		if err != nil {
			t.Fatal(err)
		}
		defer uc.conn.Close()
		exchangeOn(t, uc)
		return uc.conn.ConnectionState().DidResume
	}
	for _, tt := range []struct {
		user   string
		resume bool
	}{
		{"", false}, // nothing to resume yet
		{"", true},
		{"alice", false}, // another pool key's session is not resumed
		{"alice", true},
		{"bob", false},
		{"", true},
	} {
		if got := connect(tt.user); got != tt.resume {
			t.Errorf("user %q: DidResume = %v; want %v", tt.user, got, tt.resume)
		}
	}
}

// TestUpstreamResumesSiblingSessions: a host seen for the first time
// resumes the session of another name at the same server address when the
// certificate that session was made with is valid for it (a wildcard, as
// tenants of one SaaS share), and never otherwise: not for a name the
// certificate does not cover, not at another address, not another user's.
func TestUpstreamResumesSiblingSessions(t *testing.T) {
	ca, err := testpki.NewCA("sibling sessions CA")
	if err != nil {
		t.Fatal(err)
	}
	wildcard, err := ca.Leaf("*.tenant.test", "other.test")
	if err != nil {
		t.Fatal(err)
	}
	// Two servers with the same certificate: each is one address.
	start := func() string {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{wildcard}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	first, second := start(), start()
	// Names resolve to the server the test says: host names map to ports
	// on 127.0.0.1 through the dialer, as a resolver maps names to
	// addresses.
	at := map[string]string{}
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, at[addr])
	}
	u := newUpstreamClient(DefaultConfig().Upstream, dial, &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12})
	t.Cleanup(u.close)
	connect := func(host, server, user string) (resumed bool, err error) {
		t.Helper()
		addr := host + ":443"
		at[addr] = server
		uc, err := u.connect(context.Background(), addr, user)
		if err != nil {
			return false, err
		}
		defer uc.conn.Close()
		exchangeOn(t, uc)
		return uc.conn.ConnectionState().DidResume, nil
	}
	for _, tt := range []struct {
		host, server, user string
		resume             bool
	}{
		{"acme.tenant.test", first, "", false}, // nothing to resume yet
		{"globex.tenant.test", first, "", true},
		{"initech.tenant.test", second, "", false}, // another address
		{"hooli.tenant.test", first, "alice", false},
		{"umbrella.tenant.test", first, "alice", true},
		{"other.test", first, "", true},
	} {
		got, err := connect(tt.host, tt.server, tt.user)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.resume {
			t.Errorf("%s at %s, user %q: DidResume = %v; want %v", tt.host, tt.server, tt.user, got, tt.resume)
		}
	}
	// A name the certificate does not cover gets a full handshake, which
	// fails: a resumed one would skip the certificate.
	var verr *tls.CertificateVerificationError
	if _, err := connect("a.b.tenant.test", first, ""); !errors.As(err, &verr) {
		t.Errorf("a.b.tenant.test (not covered by *.tenant.test): err = %v; want a certificate verification error", err)
	}
}

// BenchmarkUpstreamConnect measures a new upstream connection: dial, a
// verified TLS 1.3 handshake (httptest's RSA 2048 certificate, client and
// server in this process) and one small exchange, which brings the
// session tickets. "resumed" is the client as the sidecar runs it; "full"
// has no session cache, which is what every new upstream connection cost
// before sessions were resumed.
func BenchmarkUpstreamConnect(b *testing.B) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	addr := srv.Listener.Addr().String()
	var d net.Dialer
	benchConnects(b, d.DialContext, roots, func(int) string { return addr })
}

// benchConnects runs the sub-benchmarks "full" (no session cache) and
// "resumed" (the sidecar's cache): each iteration connects to addr(i)
// through dial, completes one exchange and closes; resumed/op is the share
// of handshakes that resumed a session.
func benchConnects(b *testing.B, dial func(ctx context.Context, network, addr string) (net.Conn, error), roots *x509.CertPool, addr func(i int) string) {
	for _, resume := range []bool{false, true} {
		name := "full"
		if resume {
			name = "resumed"
		}
		b.Run(name, func(b *testing.B) {
			u := newUpstreamClient(DefaultConfig().Upstream, dial, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
			defer u.close()
			if !resume {
				u.sessions = noSessions{}
			}
			ctx := context.Background()
			resumed, i := 0, 0
			b.ReportAllocs()
			for b.Loop() {
				i++
				uc, err := u.connect(ctx, addr(i), "")
				if err != nil {
					b.Fatal(err)
				}
				exchangeOn(b, uc)
				if uc.conn.ConnectionState().DidResume {
					resumed++
				}
				uc.conn.Close()
			}
			b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
		})
	}
}

// noSessions is a session cache that keeps nothing.
type noSessions struct{}

func (noSessions) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (noSessions) Put(string, *tls.ClientSessionState)        {}

// BenchmarkUpstreamConnectNewName measures a new upstream connection to a
// name the client has never connected to, at a server whose wildcard
// certificate covers it (tenants of one SaaS, or the harness's first-seen
// hosts): "full" has no session cache, which is what every such connection
// cost before sessions were looked up by server address as well as name;
// "resumed" is the client as the sidecar runs it, resuming the session of
// the previous name at the same address.
func BenchmarkUpstreamConnectNewName(b *testing.B) {
	ca, err := testpki.NewCA("new name bench CA")
	if err != nil {
		b.Fatal(err)
	}
	wildcard, err := ca.Leaf("*.tenant.test")
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{wildcard}}
	srv.StartTLS()
	defer srv.Close()
	at := srv.Listener.Addr().String()
	var d net.Dialer
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) { return d.DialContext(ctx, network, at) }
	benchConnects(b, dial, ca.Pool(), func(i int) string { return fmt.Sprintf("t%d.tenant.test:443", i) })
}
