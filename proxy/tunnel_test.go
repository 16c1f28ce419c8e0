package proxy

import (
	"crypto/tls"
	"net"
	"slices"
	"testing"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// TestTunnelKeyExchange: only an agent on loopback is offered classical key
// exchange alone; any other agent gets crypto/tls's default, hybrid
// post-quantum first.
func TestTunnelKeyExchange(t *testing.T) {
	tests := []struct {
		addr   net.Addr
		inPod  bool
		curves bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5000}, true, true},
		{&net.TCPAddr{IP: net.ParseIP("127.3.2.1"), Port: 5000}, true, true},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 5000}, true, true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 5000}, true, true},
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5000}, false, false},
		{&net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 5000}, false, false},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, false, false},
	}
	s := &Server{}
	for _, tt := range tests {
		inPod := isLoopback(tt.addr)
		if inPod != tt.inPod {
			t.Errorf("isLoopback(%v) = %v; want %v", tt.addr, inPod, tt.inPod)
		}
		got := s.tunnelTLSConfig(&tunnel{host: "api.example.com"}, inPod).CurvePreferences
		if want := podCurves; tt.curves && !slices.Equal(got, want) {
			t.Errorf("%v: curves %v; want %v", tt.addr, got, want)
		}
		if !tt.curves && got != nil {
			t.Errorf("%v: curves %v; want crypto/tls's defaults (nil)", tt.addr, got)
		}
	}
}

// BenchmarkTunnelHandshake measures one TLS 1.3 handshake between a Go
// client with crypto/tls's defaults (as most agents) and an intercepting
// server, both in this process, over a pipe: "hybrid" is the server with
// crypto/tls's defaults (X25519MLKEM768), "pod" with podCurves, as an agent
// on loopback gets.
func BenchmarkTunnelHandshake(b *testing.B) {
	ca, err := testpki.NewCA("handshake bench CA")
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := ca.Leaf("api.example.com")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		curves []tls.CurveID
	}{{"hybrid", nil}, {"pod", podCurves}} {
		b.Run(bc.name, func(b *testing.B) {
			sconf := &tls.Config{Certificates: []tls.Certificate{leaf}, CurvePreferences: bc.curves, SessionTicketsDisabled: true}
			cconf := &tls.Config{RootCAs: ca.Pool(), ServerName: "api.example.com"}
			var curve tls.CurveID
			b.ReportAllocs()
			for b.Loop() {
				cl, sv := net.Pipe()
				srv := tls.Server(sv, sconf)
				done := make(chan error, 1)
				go func() { done <- srv.Handshake() }()
				c := tls.Client(cl, cconf)
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				curve = c.ConnectionState().CurveID
				// Closing the TLS connections would send close_notify
				// into a pipe nobody reads.
				cl.Close()
				sv.Close()
			}
			b.ReportMetric(float64(curve), "curve")
		})
	}
}
