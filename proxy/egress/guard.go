// Package egress is the sidecar's dial guard: it decides which network
// addresses the proxy may connect to on the agent's behalf, and dials only
// those.
//
// A prompt-injected agent can ask the proxy for any host. The guard resolves
// the name itself, classifies every resulting address (Classify), refuses
// loopback, private, link-local (including the cloud metadata service),
// carrier-grade NAT, unique-local, multicast, reserved and IPv6-embedded
// forms of them unless the configuration allows the address, refuses the
// sidecar's own listeners always, and then dials the checked address literal,
// so a DNS answer that changes between check and dial (rebinding) cannot
// redirect the connection. The default dialer checks again, at the socket,
// through net.Dialer.Control.
//
// A Guard is safe for concurrent use. DenyListener and DenyAddrPort may be
// called at any time, also while dials are in flight.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// DialTimeout bounds one DialContext call, from name resolution to a
	// connected socket, over all of the name's addresses. A healthy
	// upstream API connects in well under a second; 10 s covers two SYN
	// retransmissions (1 s, 3 s) on a lossy path and still fails well
	// before the agent's own request deadline, so a blackholed address
	// surfaces as upstream_unreachable rather than a hung request.
	DialTimeout = 10 * time.Second

	// minAttemptTimeout is the least time one address of a multi-address
	// name gets before the next is tried, the same floor as net.Dialer
	// uses: less would fail connects on ordinary slow paths.
	minAttemptTimeout = 2 * time.Second

	// keepAlive is the TCP keep-alive period of dialled connections; it is
	// net.Dialer's default and detects dead upstreams in pooled
	// connections within a few minutes.
	keepAlive = 30 * time.Second

	// localAddrsTTL is how long the list of this host's interface
	// addresses (used to refuse a wildcard listener's port on every local
	// address) is cached. Pod addresses rarely change, and re-reading them
	// on each dial would cost a netlink round trip.
	localAddrsTTL = 30 * time.Second
)

// ErrForbidden is the sentinel for a refused destination; the proxy maps it
// to destination_forbidden. Every refusal is a *ForbiddenError, which
// unwraps to ErrForbidden.
var ErrForbidden = errors.New("destination forbidden")

// ForbiddenError says that the guard refused a destination, and why. Its
// message names the reason but never the resolved address, so it is safe to
// return to the agent: it contains nothing beyond the host the agent asked
// for.
type ForbiddenError struct {
	// Host is the host:port the caller asked DialContext for, or empty
	// when the refusal came from Check or Control.
	Host string
	// Class is the class of the refused address (Invalid when the host
	// was refused before resolution). Suitable as a metric label.
	Class Class
	// Reason is a short lower-case phrase ("loopback address", "the
	// proxy's own listener", "denied by configuration").
	Reason string
}

// Reasons other than an address class.
const (
	reasonListener  = "the proxy's own listener"
	reasonDenied    = "denied by configuration"
	reasonAmbiguous = "ambiguous numeric host"
	reasonBadAddr   = "not a valid address"
)

func (e *ForbiddenError) Error() string {
	if e.Host != "" {
		return "dial " + e.Host + ": " + ErrForbidden.Error() + ": " + e.Reason
	}
	return ErrForbidden.Error() + ": " + e.Reason
}

// Unwrap returns ErrForbidden.
func (e *ForbiddenError) Unwrap() error { return ErrForbidden }

// DialFunc dials a network address, like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Option configures a Guard.
type Option func(*Guard)

// WithDialer sets the dial that runs after the guard's check, with a
// checked IP literal as the address ("203.0.113.7:443"). Tests use it to
// record addresses instead of dialling. The default is a net.Dialer with
// DialTimeout and Control set to the guard's Control. A nil dial is ignored.
func WithDialer(dial DialFunc) Option {
	return func(g *Guard) {
		if dial != nil {
			g.dial = dial
		}
	}
}

// WithResolver sets the resolver for host names. The default is Go's own
// resolver (PreferGo), which reads /etc/hosts and /etc/resolv.conf. A nil
// resolver is ignored.
func WithResolver(r *net.Resolver) Option {
	return func(g *Guard) {
		if r != nil {
			g.resolver = r
		}
	}
}

// Guard checks and dials destinations. Build it with New.
type Guard struct {
	allow      []netip.Prefix
	allowPorts []uint16
	deny       []netip.Prefix
	dial       DialFunc
	resolver   *net.Resolver

	// listeners is replaced as a whole (copy on write) under mu, so Check
	// reads it without locking.
	listeners atomic.Pointer[listenerSet]
	local     atomic.Pointer[localAddrs]
	mu        sync.Mutex

	// interfaceAddrs and now are replaced by tests.
	interfaceAddrs func() ([]net.Addr, error)
	now            func() time.Time
}

// listenerSet is an immutable snapshot of the sidecar's listeners.
type listenerSet struct {
	exact    map[netip.AddrPort]struct{}
	wildcard map[uint16]struct{} // ports of 0.0.0.0 and :: listeners
	ports    map[uint16]struct{} // ports of every listener
}

// localAddrs is a cached snapshot of this host's interface addresses.
type localAddrs struct {
	addrs   map[netip.Addr]struct{}
	expires time.Time
	failed  bool // the interfaces could not be read: refuse the port
}

// New returns a Guard for cfg. It returns cfg.Validate's error unchanged
// (a join of *config.FieldError), so the caller can prefix the paths.
func New(cfg Config, opts ...Option) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{
		resolver:       &net.Resolver{PreferGo: true},
		interfaceAddrs: net.InterfaceAddrs,
		now:            time.Now,
	}
	for _, s := range cfg.Allow {
		p, _ := parsePrefix(s) // validated above
		g.allow = append(g.allow, p)
	}
	for _, s := range cfg.Deny {
		p, _ := parsePrefix(s)
		g.deny = append(g.deny, p)
	}
	for _, port := range cfg.AllowPorts {
		g.allowPorts = append(g.allowPorts, uint16(port))
	}
	d := &net.Dialer{Timeout: DialTimeout, KeepAlive: keepAlive, Control: g.Control}
	g.dial = d.DialContext
	for _, o := range opts {
		o(g)
	}
	return g, nil
}

// Check decides whether ap may be dialled, without dialling. It returns nil
// or a *ForbiddenError (errors.Is(err, ErrForbidden)). The order is: the
// sidecar's own listeners are always refused; then Config.Deny; then public
// addresses pass; then forbidden classes pass only when Config.Allow (and
// AllowPorts, if set) cover the address. IPv4-mapped addresses are treated
// as IPv4 and zones are ignored. Check does not allocate when it allows.
func (g *Guard) Check(ap netip.AddrPort) error {
	ip := ap.Addr().Unmap().WithZone("")
	class := Classify(ip)
	if class == Invalid {
		return refusal(class)
	}
	port := ap.Port()
	if g.isListener(ip, port, class) {
		return &ForbiddenError{Class: class, Reason: reasonListener}
	}
	if containsAny(g.deny, ip) {
		return &ForbiddenError{Class: class, Reason: reasonDenied}
	}
	if class == Public {
		return nil
	}
	if containsAny(g.allow, ip) && g.portAllowed(port) {
		return nil
	}
	return refusal(class)
}

// classReasons holds "<class> address" for every class, so a refusal
// costs one allocation.
var classReasons = func() []string {
	out := make([]string, len(classNames))
	for i, n := range classNames {
		out[i] = n + " address"
	}
	return out
}()

// refusal returns the refusal for an address of class c.
func refusal(c Class) *ForbiddenError {
	if int(c) >= len(classReasons) {
		c = Invalid
	}
	return &ForbiddenError{Class: c, Reason: classReasons[c]}
}

// Control checks the address a socket is about to connect to; its signature
// fits net.Dialer.Control. Because it runs on the address actually being
// dialled, after any name resolution, a DNS answer cannot slip past it. Use
// it on every dialer that carries agent traffic.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &ForbiddenError{Class: Invalid, Reason: reasonBadAddr}
	}
	return g.Check(ap)
}

// DialContext resolves addr's host (an IP literal in any form ParseHost
// reads, or a name through the guard's resolver), checks every address,
// and dials the allowed ones in turn until one connects, passing the
// underlying dialer the checked IP literal. Only "tcp", "tcp4" and "tcp6"
// are supported. The whole call is bounded by DialTimeout.
//
// A refusal is a *ForbiddenError naming addr (as given) and the reason of
// the first refused address. Other errors come from the resolver or the
// underlying dialer unchanged and may name resolved or resolver addresses:
// log them, but do not show them to the agent.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("dial %s: unsupported network %q", addr, network)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("dial %s: invalid port %q", addr, portStr)
	}
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()

	ips, err := g.resolve(ctx, network, host)
	if err != nil {
		var fe *ForbiddenError
		if errors.As(err, &fe) {
			return nil, withHost(fe, addr)
		}
		return nil, err
	}

	var refused *ForbiddenError
	allowed := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip, uint16(port))
		if err := g.Check(ap); err != nil {
			if refused == nil {
				refused, _ = err.(*ForbiddenError)
			}
			continue
		}
		allowed = append(allowed, ap)
	}
	if len(allowed) == 0 {
		if refused == nil {
			refused = refusal(Invalid)
		}
		return nil, withHost(refused, addr)
	}

	var firstErr error
	for i, ap := range allowed {
		attemptCtx, attemptCancel := attemptContext(ctx, len(allowed)-i)
		conn, err := g.dial(attemptCtx, network, ap.String())
		attemptCancel()
		if err == nil {
			return conn, nil
		}
		var fe *ForbiddenError
		if errors.As(err, &fe) {
			// Refused by Control at the socket; drop the address that
			// net.OpError carries in its message.
			err = withHost(fe, addr)
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// resolve returns the addresses host stands for, unmapped, filtered by the
// network's address family.
func (g *Guard) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var ips []netip.Addr
	switch ip, ok := ParseHost(host); {
	case host == "":
		// An empty host dials the local system.
		return nil, refusal(Unspecified)
	case ok:
		ips = []netip.Addr{ip}
	case looksNumeric(host):
		return nil, &ForbiddenError{Class: Invalid, Reason: reasonAmbiguous}
	default:
		ipNet := "ip" + network[len("tcp"):]
		var err error
		ips, err = g.resolver.LookupNetIP(ctx, ipNet, host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
	}
	out := ips[:0:0]
	for _, ip := range ips {
		ip = ip.Unmap()
		if (network == "tcp4" && !ip.Is4()) || (network == "tcp6" && !ip.Is6()) {
			continue
		}
		out = append(out, ip)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("resolve %s: no %s address", host, network)
	}
	return out, nil
}

// attemptContext gives one of remaining addresses its share of ctx's
// deadline, at least minAttemptTimeout, as net.Dialer does.
func attemptContext(ctx context.Context, remaining int) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok || remaining <= 1 {
		return context.WithCancel(ctx)
	}
	left := time.Until(deadline)
	share := left / time.Duration(remaining)
	if share < minAttemptTimeout {
		share = min(minAttemptTimeout, left)
	}
	return context.WithTimeout(ctx, share)
}

// withHost returns a copy of fe that names host.
func withHost(fe *ForbiddenError, host string) *ForbiddenError {
	c := *fe
	c.Host = host
	return &c
}

// DenyListener registers one of the sidecar's own listeners, so that no
// dial reaches it, whatever the allow-list says. A listener on 0.0.0.0 or
// :: (or with no IP) makes its port refused on every local address. Only
// TCP and UDP addresses (or any net.Addr whose String is ip:port) count; a
// Unix socket cannot be dialled through the guard and is ignored.
func (g *Guard) DenyListener(addr net.Addr) {
	switch a := addr.(type) {
	case nil:
		return
	case *net.TCPAddr:
		if a != nil {
			g.DenyAddrPort(a.AddrPort())
		}
	case *net.UDPAddr:
		if a != nil {
			g.DenyAddrPort(a.AddrPort())
		}
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			g.DenyAddrPort(ap)
		}
	}
}

// DenyAddrPort registers a listening address of the sidecar (see
// DenyListener). An unspecified or invalid address with a port means every
// local address on that port. Port 0 is ignored.
func (g *Guard) DenyAddrPort(ap netip.AddrPort) {
	port := ap.Port()
	if port == 0 {
		return
	}
	ip := ap.Addr().Unmap().WithZone("")
	g.mu.Lock()
	defer g.mu.Unlock()
	next := &listenerSet{
		exact:    map[netip.AddrPort]struct{}{},
		wildcard: map[uint16]struct{}{},
		ports:    map[uint16]struct{}{port: {}},
	}
	if cur := g.listeners.Load(); cur != nil {
		for k := range cur.exact {
			next.exact[k] = struct{}{}
		}
		for k := range cur.wildcard {
			next.wildcard[k] = struct{}{}
		}
		for k := range cur.ports {
			next.ports[k] = struct{}{}
		}
	}
	if !ip.IsValid() || ip.IsUnspecified() {
		next.wildcard[port] = struct{}{}
	} else {
		next.exact[netip.AddrPortFrom(ip, port)] = struct{}{}
	}
	g.listeners.Store(next)
}

// isListener reports whether ip:port reaches one of the sidecar's listeners.
func (g *Guard) isListener(ip netip.Addr, port uint16, class Class) bool {
	ls := g.listeners.Load()
	if ls == nil {
		return false
	}
	if _, ok := ls.ports[port]; !ok {
		return false
	}
	if class == Unspecified {
		return true // connecting to 0.0.0.0 or :: reaches the local host
	}
	if _, ok := ls.exact[netip.AddrPortFrom(ip, port)]; ok {
		return true
	}
	if _, ok := ls.wildcard[port]; !ok {
		return false
	}
	return class == Loopback || g.isLocal(ip)
}

// isLocal reports whether ip is one of this host's interface addresses. If
// the interfaces cannot be read it reports true: refusing a port of our own
// is the safe mistake.
func (g *Guard) isLocal(ip netip.Addr) bool {
	la := g.local.Load()
	if la == nil || g.now().After(la.expires) {
		la = g.refreshLocal()
	}
	if la.failed {
		return true
	}
	_, ok := la.addrs[ip]
	return ok
}

func (g *Guard) refreshLocal() *localAddrs {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if la := g.local.Load(); la != nil && !now.After(la.expires) {
		return la
	}
	la := &localAddrs{addrs: map[netip.Addr]struct{}{}, expires: now.Add(localAddrsTTL)}
	addrs, err := g.interfaceAddrs()
	if err != nil {
		la.failed = true
	}
	for _, a := range addrs {
		var ip net.IP
		switch v := a.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		default:
			continue
		}
		if na, ok := netip.AddrFromSlice(ip); ok {
			la.addrs[na.Unmap()] = struct{}{}
		}
	}
	g.local.Store(la)
	return la
}

func (g *Guard) portAllowed(port uint16) bool {
	if len(g.allowPorts) == 0 {
		return true
	}
	for _, p := range g.allowPorts {
		if p == port {
			return true
		}
	}
	return false
}

func containsAny(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
