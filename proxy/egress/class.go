package egress

import "net/netip"

// Class is the kind of network an IP address belongs to, as far as the guard
// cares. Every class except Public is forbidden unless the configuration
// allows the address. The zero value is Invalid, so a forgotten
// classification fails closed.
type Class uint8

// The address classes. Reserved collects everything that has no business
// being an upstream API: IANA special-purpose ranges, documentation and
// benchmarking networks, and IPv6 space outside global unicast.
const (
	// Invalid is the zero netip.Addr.
	Invalid Class = iota
	// Public is a globally routable unicast address.
	Public
	// Unspecified is 0.0.0.0 or ::; dialling it reaches the local host.
	Unspecified
	// Loopback is 127.0.0.0/8 or ::1.
	Loopback
	// Private is RFC 1918 space: 10/8, 172.16/12, 192.168/16.
	Private
	// LinkLocal is 169.254.0.0/16 (which holds the cloud metadata
	// service 169.254.169.254) or fe80::/10.
	LinkLocal
	// SiteLocal is the deprecated IPv6 site-local fec0::/10.
	SiteLocal
	// UniqueLocal is IPv6 unique-local fc00::/7 (which holds AWS's IPv6
	// metadata address fd00:ec2::254).
	UniqueLocal
	// CGNAT is the shared address space 100.64.0.0/10 (RFC 6598).
	CGNAT
	// Multicast is 224.0.0.0/4 or ff00::/8.
	Multicast
	// Broadcast is 255.255.255.255.
	Broadcast
	// Reserved is any other special-purpose range (0/8, 192.0.0.0/24,
	// 198.18/15, 240/4, documentation ranges, 100::/64, ORCHID, IPv6
	// outside 2000::/3, and unknown layouts of the local-use NAT64 prefix).
	Reserved
)

var classNames = [...]string{
	Invalid:     "invalid",
	Public:      "public",
	Unspecified: "unspecified",
	Loopback:    "loopback",
	Private:     "private",
	LinkLocal:   "link-local",
	SiteLocal:   "site-local",
	UniqueLocal: "unique-local",
	CGNAT:       "carrier-grade NAT",
	Multicast:   "multicast",
	Broadcast:   "broadcast",
	Reserved:    "reserved",
}

// String returns the class name in lower case ("loopback"), suitable for
// error messages and metric labels.
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "invalid"
}

// Forbidden reports whether addresses of class c are refused unless allowed.
func (c Class) Forbidden() bool { return c != Public }

// classRange maps one prefix to a class. Tables are searched in order, so a
// more specific prefix must come before a prefix that contains it.
type classRange struct {
	prefix netip.Prefix
	class  Class
}

var v4Ranges = []classRange{
	{netip.MustParsePrefix("0.0.0.0/32"), Unspecified},
	{netip.MustParsePrefix("0.0.0.0/8"), Reserved}, // "this network"
	{netip.MustParsePrefix("10.0.0.0/8"), Private},
	{netip.MustParsePrefix("100.64.0.0/10"), CGNAT},
	{netip.MustParsePrefix("127.0.0.0/8"), Loopback},
	{netip.MustParsePrefix("169.254.0.0/16"), LinkLocal},
	{netip.MustParsePrefix("172.16.0.0/12"), Private},
	{netip.MustParsePrefix("192.0.0.0/24"), Reserved},   // IETF protocol assignments (DS-Lite, NAT64 discovery)
	{netip.MustParsePrefix("192.0.2.0/24"), Reserved},   // TEST-NET-1
	{netip.MustParsePrefix("192.88.99.0/24"), Reserved}, // deprecated 6to4 relay anycast
	{netip.MustParsePrefix("192.168.0.0/16"), Private},
	{netip.MustParsePrefix("198.18.0.0/15"), Reserved},   // benchmarking
	{netip.MustParsePrefix("198.51.100.0/24"), Reserved}, // TEST-NET-2
	{netip.MustParsePrefix("203.0.113.0/24"), Reserved},  // TEST-NET-3
	{netip.MustParsePrefix("224.0.0.0/4"), Multicast},
	{netip.MustParsePrefix("255.255.255.255/32"), Broadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), Reserved},
}

// v6Ranges holds the IPv6 ranges that carry no IPv4 address. The embedding
// prefixes are handled by classify6 before this table is consulted.
var v6Ranges = []classRange{
	{netip.MustParsePrefix("100::/64"), Reserved},      // discard-only
	{netip.MustParsePrefix("2001:2::/48"), Reserved},   // benchmarking
	{netip.MustParsePrefix("2001:10::/28"), Reserved},  // ORCHID (deprecated)
	{netip.MustParsePrefix("2001:20::/28"), Reserved},  // ORCHIDv2
	{netip.MustParsePrefix("2001:db8::/32"), Reserved}, // documentation
	{netip.MustParsePrefix("3fff::/20"), Reserved},     // documentation (RFC 9637)
	{netip.MustParsePrefix("fc00::/7"), UniqueLocal},
	{netip.MustParsePrefix("fe80::/10"), LinkLocal},
	{netip.MustParsePrefix("fec0::/10"), SiteLocal},
	{netip.MustParsePrefix("ff00::/8"), Multicast},
}

var (
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")
	nat64LocalUse  = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour      = netip.MustParsePrefix("2002::/16")
	teredo         = netip.MustParsePrefix("2001::/32")
	ipv4Compatible = netip.MustParsePrefix("::/96")
	ipv4Translated = netip.MustParsePrefix("::ffff:0:0:0/96") // SIIT (RFC 2765)
)

// Classify returns the class of ip. IPv6 addresses that embed an IPv4
// address are classified by the IPv4 address inside, because that is where
// a translator or tunnel delivers the packet: IPv4-mapped ::ffff:0:0/96,
// IPv4-translated ::ffff:0:0:0/96, IPv4-compatible ::/96, NAT64
// 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, and Teredo 2001::/32
// (whose client address is the last 32 bits inverted). So ::ffff:127.0.0.2
// and 64:ff9b::a9fe:a9fe are Loopback and LinkLocal. A zone is ignored.
func Classify(ip netip.Addr) Class {
	if !ip.IsValid() {
		return Invalid
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return classify4(ip)
	}
	return classify6(ip)
}

func classify4(ip netip.Addr) Class {
	for _, r := range v4Ranges {
		if r.prefix.Contains(ip) {
			return r.class
		}
	}
	return Public
}

func classify6(ip netip.Addr) Class {
	b := ip.As16()
	switch {
	case ip.IsUnspecified():
		return Unspecified
	case ip.IsLoopback():
		return Loopback
	case ipv4Compatible.Contains(ip), ipv4Translated.Contains(ip), nat64WellKnown.Contains(ip):
		return classify4(last32(b))
	case nat64LocalUse.Contains(ip):
		// RFC 8215 lets a network embed the IPv4 address at any RFC 6052
		// position under this prefix. Only the /96 layout (bits 48–95
		// zero) is unambiguous; any other layout is refused outright.
		for _, x := range b[6:12] {
			if x != 0 {
				return Reserved
			}
		}
		return classify4(last32(b))
	case sixToFour.Contains(ip):
		return classify4(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
	case teredo.Contains(ip):
		// The client's IPv4 address is stored inverted in the last 32 bits.
		return classify4(netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}))
	}
	for _, r := range v6Ranges {
		if r.prefix.Contains(ip) {
			return r.class
		}
	}
	if !globalUnicast6.Contains(ip) {
		return Reserved
	}
	return Public
}

func last32(b [16]byte) netip.Addr {
	return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
}
