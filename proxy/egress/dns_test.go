package egress

import (
	"net"
	"net/netip"
	"testing"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/dnstest"
)

// fakeDNS wraps dnstest.Server with the names these tests used first.
type fakeDNS struct{ s *dnstest.Server }

// newFakeDNS starts a loopback DNS server answering from answer; it stops
// when the test ends.
func newFakeDNS(t *testing.T, answer func(name string, aQueries int) []netip.Addr) *fakeDNS {
	t.Helper()
	s, err := dnstest.Start(answer)
	if err != nil {
		t.Fatalf("start DNS: %v", err)
	}
	t.Cleanup(s.Close)
	return &fakeDNS{s: s}
}

func (f *fakeDNS) resolver() *net.Resolver  { return f.s.Resolver() }
func (f *fakeDNS) aQueries(name string) int { return f.s.AQueries(name) }
