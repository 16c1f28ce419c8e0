//go:build integration

package e2e

import (
	"crypto/tls"
	"fmt"
	"testing"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
)

// TestKeyExchangePerHop: an agent that connects over loopback, from the
// sidecar's own network namespace, gets classical key exchange (X25519)
// and the leaf without the CA,
// while the sidecar's connection to the API keeps crypto/tls's hybrid
// post-quantum default (X25519MLKEM768).
func TestKeyExchangePerHop(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	tc := rawTunnel(t, e)
	if got := tc.ConnectionState().CurveID; got != tls.X25519 {
		t.Errorf("agent hop key exchange = %v; want %v", got, tls.X25519)
	}
	// The leaf comes alone: the agent holds the CA as its root.
	if n := len(tc.ConnectionState().PeerCertificates); n != 1 {
		t.Errorf("the sidecar presented %d certificates; want the leaf alone", n)
	}
	raw := fmt.Sprintf("GET /api/x HTTP/1.1\r\nHost: %s:%d\r\nOnbehalf-Assertion: %s\r\n\r\n",
		testenv.APIHost, e.Upstream.Port(), e.Assert(t, testenv.User))
	if resp, body := roundTripRaw(t, tc, raw); resp.StatusCode != 200 {
		t.Fatalf("got %d %s; want 200", resp.StatusCode, body.Error)
	}
	reqs := e.Upstream.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests reached the upstream; want 1", len(reqs))
	}
	if got := reqs[0].CurveID; got != tls.X25519MLKEM768 {
		t.Errorf("upstream hop key exchange = %v; want %v", got, tls.X25519MLKEM768)
	}
}
