package egress

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		ip   string
		want Class
	}{
		// IPv4.
		{"8.8.8.8", Public},
		{"1.1.1.1", Public},
		{"0.0.0.0", Unspecified},
		{"0.1.2.3", Reserved},
		{"127.0.0.1", Loopback},
		{"127.0.0.2", Loopback},
		{"127.255.255.254", Loopback},
		{"10.0.0.1", Private},
		{"10.255.255.255", Private},
		{"172.16.0.1", Private},
		{"172.31.255.255", Private},
		{"172.32.0.1", Public},
		{"172.15.255.255", Public},
		{"192.168.1.1", Private},
		{"169.254.169.254", LinkLocal},
		{"169.254.0.1", LinkLocal},
		{"100.64.0.1", CGNAT},
		{"100.127.255.255", CGNAT},
		{"100.128.0.1", Public},
		{"100.63.255.255", Public},
		{"192.0.0.170", Reserved},
		{"192.0.2.1", Reserved},
		{"198.51.100.7", Reserved},
		{"203.0.113.9", Reserved},
		{"198.18.0.1", Reserved},
		{"198.19.255.255", Reserved},
		{"198.20.0.1", Public},
		{"192.88.99.1", Reserved},
		{"224.0.0.1", Multicast},
		{"239.255.255.250", Multicast},
		{"240.0.0.1", Reserved},
		{"255.255.255.254", Reserved},
		{"255.255.255.255", Broadcast},

		// IPv6 without an embedded IPv4 address.
		{"2606:4700:4700::1111", Public},
		{"::", Unspecified},
		{"::1", Loopback},
		{"fe80::1", LinkLocal},
		{"fe80::1%eth0", LinkLocal},
		{"febf::1", LinkLocal},
		{"fec0::1", SiteLocal},
		{"fc00::1", UniqueLocal},
		{"fd00:ec2::254", UniqueLocal},
		{"ff02::1", Multicast},
		{"ff0e::1", Multicast},
		{"2001:db8::1", Reserved},
		{"3fff::1", Reserved},
		{"100::1", Reserved},
		{"2001:2::1", Reserved},
		{"2001:10::1", Reserved},
		{"2001:20::1", Reserved},
		{"4000::1", Reserved},
		{"1::1", Reserved},
		{"64:ff9c::1", Reserved},

		// IPv4-mapped ::ffff:0:0/96.
		{"::ffff:127.0.0.2", Loopback},
		{"::ffff:7f00:2", Loopback},
		{"::ffff:169.254.169.254", LinkLocal},
		{"::ffff:10.0.0.1", Private},
		{"::ffff:8.8.8.8", Public},
		// IPv4-translated ::ffff:0:0:0/96.
		{"::ffff:0:127.0.0.1", Loopback},
		{"::ffff:0:8.8.8.8", Public},
		// IPv4-compatible ::/96.
		{"::127.0.0.1", Loopback},
		{"::10.0.0.1", Private},
		{"::169.254.169.254", LinkLocal},
		{"::8.8.8.8", Public},
		{"::2", Reserved}, // 0.0.0.2
		// NAT64 well-known prefix 64:ff9b::/96.
		{"64:ff9b::127.0.0.1", Loopback},
		{"64:ff9b::a9fe:a9fe", LinkLocal},
		{"64:ff9b::192.168.0.1", Private},
		{"64:ff9b::100.64.0.1", CGNAT},
		{"64:ff9b::8.8.8.8", Public},
		// NAT64 local-use prefix 64:ff9b:1::/48, /96 layout only.
		{"64:ff9b:1::127.0.0.1", Loopback},
		{"64:ff9b:1::8.8.8.8", Public},
		{"64:ff9b:1:7f00:0:100::", Reserved}, // 127.0.0.1 in the /48 layout
		{"64:ff9b:1:0:0:1:808:808", Reserved},
		// 6to4 2002::/16.
		{"2002:7f00:1::", Loopback},
		{"2002:a9fe:a9fe::1", LinkLocal},
		{"2002:c0a8:101::1", Private},
		{"2002:808:808::1", Public},
		// Teredo 2001::/32: client address is the last 32 bits inverted.
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", Loopback},    // ^80fffffe = 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:5601:5601", LinkLocal},   // ^56015601 = 169.254.169.254
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", Private},     // ^f5fffffe = 10.0.0.1
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", Public},      // ^f7f7f7f7 = 8.8.8.8
		{"2001:0:4136:e378:8000:63bf:ffff:ffff", Unspecified}, // 0.0.0.0
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			if got := Classify(ip); got != tt.want {
				t.Errorf("Classify(%s) = %v; want %v", tt.ip, got, tt.want)
			}
		})
	}
}

func TestClassifyInvalid(t *testing.T) {
	if got := Classify(netip.Addr{}); got != Invalid {
		t.Errorf("Classify(zero) = %v; want %v", got, Invalid)
	}
	var zero Class
	if zero != Invalid {
		t.Errorf("zero Class = %v; want %v", zero, Invalid)
	}
}

func TestClassString(t *testing.T) {
	for c := Invalid; c <= Reserved; c++ {
		if s := c.String(); s == "" || (s == "invalid" && c != Invalid) {
			t.Errorf("Class(%d).String() = %q; want a distinct name", c, s)
		}
		if got, want := c.Forbidden(), c != Public; got != want {
			t.Errorf("%v.Forbidden() = %v; want %v", c, got, want)
		}
	}
	if got := Class(200).String(); got != "invalid" {
		t.Errorf("Class(200).String() = %q; want %q", got, "invalid")
	}
	if got := Loopback.String(); got != "loopback" {
		t.Errorf("Loopback.String() = %q; want %q", got, "loopback")
	}
}
