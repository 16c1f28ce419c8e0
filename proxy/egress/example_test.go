package egress_test

import (
	"fmt"
	"net/netip"

	"github.com/onbehalf-dev/onbehalf/proxy/egress"
)

func ExampleClassify() {
	for _, s := range []string{"8.8.8.8", "169.254.169.254", "::ffff:127.0.0.2", "64:ff9b::a00:1", "fd00::1"} {
		fmt.Println(s, egress.Classify(netip.MustParseAddr(s)))
	}
	// Output:
	// 8.8.8.8 public
	// 169.254.169.254 link-local
	// ::ffff:127.0.0.2 loopback
	// 64:ff9b::a00:1 private
	// fd00::1 unique-local
}

func ExampleParseHost() {
	for _, h := range []string{"2130706434", "0x7f000002", "0177.0.0.1", "127.1", "[::1]", "example.com"} {
		ip, ok := egress.ParseHost(h)
		fmt.Println(h, ip, ok)
	}
	// Output:
	// 2130706434 127.0.0.2 true
	// 0x7f000002 127.0.0.2 true
	// 0177.0.0.1 127.0.0.1 true
	// 127.1 127.0.0.1 true
	// [::1] ::1 true
	// example.com invalid IP false
}

func ExampleGuard_Check() {
	g, err := egress.New(egress.Config{Allow: []string{"127.0.0.1/32"}})
	if err != nil {
		panic(err)
	}
	for _, s := range []string{"127.0.0.1:8080", "127.0.0.2:8080", "[64:ff9b::a9fe:a9fe]:80"} {
		fmt.Println(s, g.Check(netip.MustParseAddrPort(s)))
	}
	// Output:
	// 127.0.0.1:8080 <nil>
	// 127.0.0.2:8080 destination forbidden: loopback address
	// [64:ff9b::a9fe:a9fe]:80 destination forbidden: link-local address
}
