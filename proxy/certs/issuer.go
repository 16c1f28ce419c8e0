package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/net/publicsuffix"
	"golang.org/x/sync/singleflight"
)

const (
	// DefaultCapacity is the default number of leaves kept. A sidecar
	// intercepts only hosts that have a route, so a few dozen is typical;
	// 1024 leaves headroom at about 1.5 KB per entry.
	DefaultCapacity = 1024

	// DefaultLeafValidity is the default lifetime of a leaf. Short, so a
	// leaf key that leaks is useful for a day (plus leafKeyRotation, the
	// time one key is used) at most; long enough that a busy host costs
	// one signing a day.
	DefaultLeafValidity = 24 * time.Hour

	// leafBackdate moves a leaf's NotBefore into the past so an agent
	// whose clock runs behind the sidecar's still accepts it.
	leafBackdate = time.Hour

	// renewBefore is how long before expiry a cached leaf is replaced, so
	// no handshake is served a leaf that expires during the connection.
	renewBefore = time.Hour

	// maxCommonNameLen is RFC 5280's upper bound for a common name; longer
	// host names go in the SAN only.
	maxCommonNameLen = 64

	// maxHostLen is the longest DNS name (RFC 1035).
	maxHostLen = 253
)

// ErrInvalidHost is returned by Leaf for a host name or address that cannot
// go into a certificate.
var ErrInvalidHost = errors.New("invalid host for certificate")

// IssuerOptions are the settings of NewIssuer. The zero value is the
// default.
type IssuerOptions struct {
	// Capacity is the most leaves kept (DefaultCapacity if zero or
	// negative). The least recently used leaf is dropped first.
	Capacity int
	// Validity is a leaf's lifetime (DefaultLeafValidity if zero or
	// negative). A leaf is re-signed when within an hour of expiry, or
	// within half its validity if that is shorter.
	Validity time.Duration
	// ExactNames makes every leaf name its host alone. When false (the
	// default), a host's leaf is a wildcard that its siblings share where
	// clients accept one (see Leaf).
	ExactNames bool
	// Now replaces time.Now when set (tests).
	Now func() time.Time
}

// Issuer signs leaf certificates with a CA and caches them by host.
//
// The leaves it signs within leafKeyRotation of one another share a key, as
// mitmproxy's do, and they are encoded and signed by CA.signLeaf rather than
// x509.CreateCertificate; the package documentation says why.
type Issuer struct {
	ca          *CA
	cache       *lru.Cache[string, *leafEntry]
	flight      singleflight.Group
	validity    time.Duration
	renewMargin time.Duration
	exactNames  bool
	now         func() time.Time
	signings    atomic.Uint64

	// keyMu guards key, the current leaf key (nil until the first
	// signing).
	keyMu sync.Mutex
	key   *leafKey
}

// leafEntry is one cached leaf and when to replace it.
type leafEntry struct {
	cert    *tls.Certificate
	renewAt time.Time
}

// NewIssuer returns an Issuer that signs with ca.
func NewIssuer(ca *CA, o IssuerOptions) *Issuer {
	if o.Capacity <= 0 {
		o.Capacity = DefaultCapacity
	}
	if o.Validity <= 0 {
		o.Validity = DefaultLeafValidity
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	cache, err := lru.New[string, *leafEntry](o.Capacity)
	if err != nil {
		panic(fmt.Sprintf("certs: lru.New(%d): %v", o.Capacity, err)) // unreachable: capacity > 0
	}
	return &Issuer{
		ca:          ca,
		cache:       cache,
		validity:    o.Validity,
		renewMargin: min(renewBefore, o.Validity/2),
		exactNames:  o.ExactNames,
		now:         o.Now,
	}
}

// Leaf returns a certificate for host, signed by the CA: from the cache if
// it holds one not yet due for renewal, otherwise newly signed, with only
// one signing per name at a time however many callers ask. The host is
// normalised (lower case, no trailing dot, no brackets); an IP address gets
// an IP SAN, a name a DNS SAN. The result carries the leaf alone, without
// the CA (see sign), and its Leaf field is set; it is shared, and callers
// must not modify it.
//
// Unless the Issuer was made with ExactNames, a name's leaf is the wildcard
// of its parent (acme.atlassian.net gets *.atlassian.net), so the first
// sight of each tenant of one service costs no signing: see wildcardParent
// for when a wildcard is used. A wildcard lets an agent's client use the
// leaf for a sibling, but a tunnel is bound to its CONNECT target whatever
// the certificate says (SNI, Host and URL host must all name it), and the
// leaf goes only to the agent, which trusts the CA for every name anyway.
func (i *Issuer) Leaf(host string) (*tls.Certificate, error) {
	name, ip, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	// The cache key is the name, or ".parent" for a wildcard: a part of
	// name, so that a cache hit allocates nothing.
	key := name
	if !ip.IsValid() && !i.exactNames {
		if parent, ok := wildcardParent(name); ok {
			key = parent
		}
	}
	if e, ok := i.cache.Get(key); ok && i.now().Before(e.renewAt) {
		return e.cert, nil
	}
	v, err, _ := i.flight.Do(key, func() (any, error) {
		// A flight that finished just before this one started may have
		// stored a fresh leaf.
		now := i.now()
		if e, ok := i.cache.Peek(key); ok && now.Before(e.renewAt) {
			return e, nil
		}
		if key[0] == '.' {
			name = "*" + key
		}
		e, err := i.sign(name, ip, now)
		if err != nil {
			return nil, err
		}
		i.cache.Add(key, e)
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*leafEntry).cert, nil
}

// Len returns the number of cached leaves.
func (i *Issuer) Len() int { return i.cache.Len() }

// Signings returns how many leaves the Issuer has signed.
func (i *Issuer) Signings() uint64 { return i.signings.Load() }

// sign creates a leaf for name (or ip, if valid) valid from now.
func (i *Issuer) sign(name string, ip netip.Addr, now time.Time) (*leafEntry, error) {
	ca := i.ca.cert
	if !now.Before(ca.NotAfter) {
		return nil, fmt.Errorf("sign leaf %s: %w: CA expired at %s", name, ErrInvalidCA, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := i.leafKey(now)
	if err != nil {
		return nil, fmt.Errorf("sign leaf %s: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("sign leaf %s: %w", name, err)
	}
	notAfter := now.Add(i.validity)
	capped := notAfter.After(ca.NotAfter)
	if capped {
		notAfter = ca.NotAfter
	}
	der, err := i.ca.signLeaf(leafFields{
		serial:    serial,
		notBefore: now.Add(-leafBackdate),
		notAfter:  notAfter,
		name:      name,
		ip:        ip,
	}, key.spki)
	if err != nil {
		return nil, fmt.Errorf("sign leaf %s: %w", name, err)
	}
	// crypto/tls reads the parsed leaf from tls.Certificate.Leaf.
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sign leaf %s: parse: %w", name, err)
	}
	i.signings.Add(1)
	renewAt := notAfter.Add(-i.renewMargin)
	if capped {
		// The CA ends before a full-length leaf would: re-signing cannot
		// extend the leaf, so use it until it (and the CA) expires.
		renewAt = notAfter
	}
	return &leafEntry{
		cert: &tls.Certificate{
			// The leaf alone: an agent trusts the CA as a root, so
			// the CA in the chain would tell it nothing, and Go's
			// verifier (crypto/x509 buildChains) then checks the
			// leaf's signature against each copy of the issuer it
			// finds, in its roots and in the chain: about twice the
			// work of verifying the leaf alone, on every handshake
			// (BenchmarkAgentVerifiesLeaf).
			Certificate: [][]byte{der},
			PrivateKey:  key.priv,
			Leaf:        leaf,
		},
		renewAt: renewAt,
	}, nil
}

// leafKey returns the key for a leaf signed at now: the current one if it
// was made less than leafKeyRotation before now, otherwise a new one. A key
// made after now (the clock stepped back) is replaced too.
func (i *Issuer) leafKey(now time.Time) (*leafKey, error) {
	i.keyMu.Lock()
	defer i.keyMu.Unlock()
	if k := i.key; k != nil {
		if age := now.Sub(k.created); age >= 0 && age < leafKeyRotation {
			return k, nil
		}
	}
	k, err := newLeafKey(now)
	if err != nil {
		return nil, err
	}
	i.key = k
	return k, nil
}

// normalizeHost returns the cache key for host and, for an address, the
// address. Names are lower-cased without a trailing dot and must be
// syntactically valid DNS names whose last label is not numeric (such a
// host is an address in some notation; the caller should pass its
// canonical form).
func normalizeHost(host string) (string, netip.Addr, error) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if mayBeIP(h) {
		if ip, err := netip.ParseAddr(h); err == nil {
			if ip.Zone() != "" {
				return "", netip.Addr{}, fmt.Errorf("%w: address with a zone", ErrInvalidHost)
			}
			ip = ip.Unmap()
			return ip.String(), ip, nil
		}
	}
	if h == "" || len(h) > maxHostLen {
		return "", netip.Addr{}, fmt.Errorf("%w: empty or longer than %d characters", ErrInvalidHost, maxHostLen)
	}
	var last string
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return "", netip.Addr{}, fmt.Errorf("%w: bad label length", ErrInvalidHost)
		}
		for j := 0; j < len(label); j++ {
			c := label[j]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", netip.Addr{}, fmt.Errorf("%w: character %q not allowed", ErrInvalidHost, c)
			}
		}
		last = label
	}
	if strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x") {
		return "", netip.Addr{}, fmt.Errorf("%w: numeric last label", ErrInvalidHost)
	}
	return h, netip.Addr{}, nil
}

// wildcardParent returns ".parent" for the normalised host name, the part
// of it that the wildcard covering it and its siblings (*.parent) is made
// of, and whether clients accept that wildcard for name:
//   - the parent must be longer than the name's public suffix (from the
//     Public Suffix List, its private part included), since browsers
//     refuse a wildcard directly under a suffix (*.co.uk, *.github.io),
//     and siblings there belong to different owners anyway;
//   - the first label must not be an IDN A-label (xn--), which some
//     clients will not match to a wildcard (RFC 6125 section 7.2).
func wildcardParent(name string) (string, bool) {
	dot := strings.IndexByte(name, '.')
	if dot < 0 || strings.HasPrefix(name, "xn--") {
		return "", false
	}
	if suffix, _ := publicsuffix.PublicSuffix(name); len(name)-dot-1 <= len(suffix) {
		return "", false
	}
	return name[dot:], true
}

// mayBeIP reports whether h could be an IP address: only those contain a
// colon or end in a digit. Asking first keeps the cache-hit path free of the
// allocation a failed netip.ParseAddr costs.
func mayBeIP(h string) bool {
	if h == "" {
		return false
	}
	last := h[len(h)-1]
	return strings.IndexByte(h, ':') >= 0 || '0' <= last && last <= '9'
}
