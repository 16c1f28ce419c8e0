package egress

import (
	"net/netip"
	"strings"
)

// ParseHost returns the IP address that host denotes, if it is an address
// literal in any form that a C resolver (inet_aton), curl or a browser's URL
// parser would accept, and false if it is a name (or nothing valid).
//
// Besides the standard forms ("127.0.0.1", "::1", "[::1]", "fe80::1%eth0")
// it accepts the historical inet_aton forms: one to four dot-separated
// parts, each decimal, octal (leading 0) or hexadecimal (leading 0x), where
// the last part fills the remaining bytes ("2130706434", "0x7f000002",
// "0177.0.0.1", "127.1" = 127.0.0.1, "127.2" = 127.0.0.2), and a single
// trailing dot as the WHATWG URL parser does. Reading these forms here means
// the guard checks the address they mean whichever resolver would otherwise
// have interpreted them.
func ParseHost(host string) (netip.Addr, bool) {
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		ip, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !ip.Is6() {
			return netip.Addr{}, false
		}
		return ip, true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, true
	}
	if strings.ContainsRune(host, ':') {
		return netip.Addr{}, false
	}
	return parseInetAton(host)
}

// maxIPv4 is the largest value one inet_aton part may hold.
const maxIPv4 = 0xffffffff

// parseInetAton parses the inet_aton(3) forms of an IPv4 address.
func parseInetAton(s string) (netip.Addr, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return netip.Addr{}, false
	}
	var parts [4]uint64
	n := 0
	for {
		part, rest, more := strings.Cut(s, ".")
		if n == len(parts) {
			return netip.Addr{}, false
		}
		v, ok := parseInetAtonPart(part)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if !more {
			break
		}
		s = rest
	}
	// Every part but the last is one byte; the last fills the rest.
	var v uint64
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
		v |= parts[i] << (24 - 8*i)
	}
	lastBits := 32 - 8*(n-1)
	if parts[n-1] >= 1<<lastBits {
		return netip.Addr{}, false
	}
	v |= parts[n-1]
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseInetAtonPart parses one decimal, octal or hexadecimal part.
func parseInetAtonPart(p string) (uint64, bool) {
	if p == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(p) >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" is 0, as in the WHATWG URL parser
		}
	case len(p) >= 2 && p[0] == '0':
		base, p = 8, p[1:]
	}
	var v uint64
	for i := 0; i < len(p); i++ {
		var d uint64
		switch c := p[i]; {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > maxIPv4 {
			return 0, false
		}
	}
	return v, true
}

// looksNumeric reports whether host ends in a label that resolvers or URL
// parsers would read as a number ("1.2.3.4.5", "999.1", "0x1g"), or contains
// a colon. Such a host that ParseHost rejects is ambiguous: some resolver
// may read it as an address and another as a name, so the guard refuses it
// rather than hand it to DNS.
func looksNumeric(host string) bool {
	if strings.ContainsRune(host, ':') {
		return true
	}
	host = strings.TrimSuffix(host, ".")
	last := host
	if i := strings.LastIndexByte(host, '.'); i >= 0 {
		last = host[i+1:]
	}
	if last == "" {
		return false
	}
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		return true
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return true
}

// CanonicalHost reports whether host is spelled the one way every resolver
// agrees on: a DNS name, or an address literal in its standard form
// ("127.0.0.1", "::1"). A host that some resolver would read as an address
// and another as a name ("1.2.3.4.5"), or an address in a historical form
// ("2130706434", "0x7f000002", "127.1"), is not: the proxy refuses such
// targets rather than route, sign or dial them under a name that means two
// things.
func CanonicalHost(host string) bool {
	if ip, ok := ParseHost(host); ok {
		return ip.String() == host
	}
	return !looksNumeric(host)
}
