package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
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
	connect := func(key string) bool {
		t.Helper()
		uc, err := u.connect(context.Background(), addr, key)
		if err != nil {
			t.Fatal(err)
		}
		defer uc.conn.Close()
		exchangeOn(t, uc)
		return uc.conn.ConnectionState().DidResume
	}
	for _, tt := range []struct {
		key    string
		resume bool
	}{
		{addr, false}, // nothing to resume yet
		{addr, true},
		{addr + "\x00alice", false}, // another pool key's session is not resumed
		{addr + "\x00alice", true},
		{addr + "\x00bob", false},
		{addr, true},
	} {
		if got := connect(tt.key); got != tt.resume {
			t.Errorf("key %q: DidResume = %v; want %v", tt.key, got, tt.resume)
		}
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
	for _, resume := range []bool{false, true} {
		name := "full"
		if resume {
			name = "resumed"
		}
		b.Run(name, func(b *testing.B) {
			var d net.Dialer
			u := newUpstreamClient(DefaultConfig().Upstream, d.DialContext, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
			defer u.close()
			if !resume {
				u.sessions = noSessions{}
			}
			ctx := context.Background()
			resumed := 0
			b.ReportAllocs()
			for b.Loop() {
				uc, err := u.connect(ctx, addr, addr)
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
