package egress

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Config is the egress guard's configuration. The zero value, like
// DefaultConfig, refuses every forbidden class and allows every public
// address on any port.
type Config struct {
	// Allow lists CIDRs or single addresses that may be dialled although
	// they are in a forbidden class (tests use 127.0.0.1/32; a private
	// deployment might allow 10.20.0.0/16). Matching is on the literal
	// address dialled (IPv4-mapped IPv6 counts as IPv4); an address
	// embedded in NAT64, 6to4 or Teredo space is not matched by an IPv4
	// entry.
	Allow []string `yaml:"allow"`
	// AllowPorts, when not empty, narrows Allow to these destination
	// ports. It does not restrict public addresses.
	AllowPorts []int `yaml:"allow_ports"`
	// Deny lists extra CIDRs or addresses that are always refused, even
	// when public or covered by Allow.
	Deny []string `yaml:"deny"`
}

// DefaultConfig returns the default configuration: nothing allowed beyond
// public addresses, nothing extra denied.
func DefaultConfig() Config {
	return Config{}
}

// Validate reports every problem in c, each as a *config.FieldError with a
// path relative to the component (`allow[1]: ...`), joined with errors.Join.
func (c Config) Validate() error {
	var p config.Problems
	for i, s := range c.Allow {
		if _, err := parsePrefix(s); err != nil {
			p.Addf(fmt.Sprintf("allow[%d]", i), "%v", err)
		}
	}
	for i, port := range c.AllowPorts {
		if port < 1 || port > 65535 {
			p.Addf(fmt.Sprintf("allow_ports[%d]", i), "port %d out of range 1-65535", port)
		}
	}
	for i, s := range c.Deny {
		if _, err := parsePrefix(s); err != nil {
			p.Addf(fmt.Sprintf("deny[%d]", i), "%v", err)
		}
	}
	return p.Err()
}

// parsePrefix parses a CIDR or a single address in standard notation. It
// rejects forms whose meaning an operator could misread: host bits set
// ("10.1.2.3/8"), zones, and IPv4-mapped IPv6 (write the IPv4 form).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty address")
	}
	var pfx netip.Prefix
	if strings.ContainsRune(s, '/') {
		var err error
		pfx, err = netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR in standard notation", s)
		}
		if m := pfx.Masked(); m != pfx {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, m)
		}
	} else {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR in standard notation", s)
		}
		if ip.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone; zones are not supported", s)
		}
		pfx = netip.PrefixFrom(ip, ip.BitLen())
	}
	if pfx.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is IPv4-mapped IPv6; write the IPv4 form", s)
	}
	return pfx, nil
}
