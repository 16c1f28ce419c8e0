// Package injector is the credential side of the sidecar: it maps a
// destination to a route (which provider's grant is used and how the token
// is written into the request), fetches that grant's access token, and
// injects it, replacing whatever credential the agent sent.
//
// A Table is immutable after construction and safe for concurrent use.
package injector

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// DefaultPort is the port a route covers when none is configured: routes
// exist to inject credentials, which only ever travel over TLS.
const DefaultPort = 443

// tokenPlaceholder marks where the access token goes in a route's Format.
const tokenPlaceholder = "{token}"

// RouteConfig is one route in the YAML configuration.
type RouteConfig struct {
	// Name identifies the route in audit records and policy input; it
	// defaults to the provider name and host.
	Name string `yaml:"name"`
	// Host is an exact host name ("slack.com") or a wildcard suffix
	// ("*.atlassian.net", which matches one or more labels before the
	// suffix but not the bare suffix).
	Host string `yaml:"host"`
	// Port is the TLS port the route covers; 0 means 443.
	Port int `yaml:"port"`
	// Paths are optional path prefixes, matched on segment boundaries
	// ("/api" matches "/api" and "/api/x" but not "/apix"). Empty means
	// every path.
	Paths []string `yaml:"paths"`
	// Provider names the grant used for this route.
	Provider string `yaml:"provider"`
	// Header is the request header that carries the credential; it
	// defaults to Authorization.
	Header string `yaml:"header"`
	// Format is the header value with {token} where the token goes; it
	// defaults to "Bearer {token}".
	Format string `yaml:"format"`
	// StripHeaders are further headers removed from agent requests on this
	// route (for APIs that accept credentials in more than one header).
	StripHeaders []string `yaml:"strip_headers"`
	// ReportOnly makes policy denials on this route advisory: the request
	// proceeds and the audit record says would_deny.
	ReportOnly bool `yaml:"report_only"`
	// AllowEncodedSlashes accepts "%2F" inside a path segment, for APIs
	// such as GitLab's that put a path in one segment
	// (/projects/group%2Fproject). Without it such requests are refused,
	// since servers that decode "%2F" before routing see another path.
	AllowEncodedSlashes bool `yaml:"allow_encoded_slashes"`
	// MCP marks the route as a Model Context Protocol endpoint (Streamable
	// HTTP): the sidecar reads each POSTed JSON-RPC message before
	// deciding, gives policy input.mcp, refuses with JSON-RPC errors and
	// audits the method and tool (docs/design.md#mcp-routes).
	MCP bool `yaml:"mcp"`
	// WebSocket lets agents open WebSocket connections on this route (the
	// upgrade request goes through the pipeline; after 101 the sidecar
	// relays frames). Off by default: a relayed connection outlives the
	// one decision that opened it.
	WebSocket bool `yaml:"websocket"`
}

// Route is a compiled RouteConfig.
type Route struct {
	Name       string
	Provider   string
	Host       string // as configured, lower case
	Port       int
	ReportOnly bool
	// AllowEncodedSlashes is RouteConfig.AllowEncodedSlashes.
	AllowEncodedSlashes bool
	// MCP is RouteConfig.MCP.
	MCP bool
	// WebSocket is RouteConfig.WebSocket.
	WebSocket bool

	wildcard bool   // Host is "*.suffix"
	suffix   string // ".suffix" for wildcard routes
	paths    []string
	header   string // canonical header name
	prefix   string // Format before {token}
	postfix  string // Format after {token}
	strip    []string
	// creds is header followed by strip: every header that carries a
	// credential on this route.
	creds []string
}

// CredentialHeaders returns the canonical names of the headers that carry
// a credential on this route: its own header, then its strip headers. The
// slice is shared; do not modify it.
func (r *Route) CredentialHeaders() []string { return r.creds }

// Header returns the canonical name of the header the credential goes in.
func (r *Route) Header() string { return r.header }

// Table matches destinations to routes.
type Table struct {
	exact    map[string][]*Route // host → its routes (any port)
	wildcard []*Route            // longest suffix first
}

// NewTable compiles and validates routes, reporting every problem with its
// path (routes[1].host: ...).
func NewTable(cfgs []RouteConfig) (*Table, error) {
	t := &Table{exact: map[string][]*Route{}}
	var p config.Problems
	seen := map[string]int{}
	for i, c := range cfgs {
		r, err := compileRoute(c)
		if err != nil {
			p.Add(fmt.Sprintf("[%d]", i), err)
			continue
		}
		for _, path := range pathsOrRoot(r.paths) {
			key := r.Host + ":" + strconv.Itoa(r.Port) + path
			if j, dup := seen[key]; dup {
				p.Addf(fmt.Sprintf("[%d].host", i), "duplicates routes[%d] for %s:%d%s", j, r.Host, r.Port, path)
			}
			seen[key] = i
		}
		if r.wildcard {
			t.wildcard = append(t.wildcard, r)
		} else {
			t.exact[r.Host] = append(t.exact[r.Host], r)
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(t.wildcard, func(a, b int) bool { return len(t.wildcard[a].suffix) > len(t.wildcard[b].suffix) })
	return t, nil
}

func pathsOrRoot(p []string) []string {
	if len(p) == 0 {
		return []string{"/"}
	}
	return p
}

func compileRoute(c RouteConfig) (*Route, error) {
	var p config.Problems
	host := NormalizeHost(c.Host)
	r := &Route{Provider: c.Provider, Host: host, Port: c.Port, ReportOnly: c.ReportOnly, AllowEncodedSlashes: c.AllowEncodedSlashes, MCP: c.MCP, WebSocket: c.WebSocket}
	switch {
	case host == "":
		p.Addf("host", "required")
	case strings.HasPrefix(host, "*."):
		r.wildcard, r.suffix = true, host[1:]
		if !validHostName(host[2:]) || !strings.Contains(host[2:], ".") {
			p.Addf("host", "wildcard must be \"*.\" followed by a domain with at least two labels, got %q", c.Host)
		}
	case strings.Contains(host, "*"):
		p.Addf("host", "a wildcard is only allowed as a leading \"*.\", got %q", c.Host)
	default:
		if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			host = ip.String()
			r.Host = host
		} else if !validHostName(host) || allDigitsLastLabel(host) {
			p.Addf("host", "not a valid host name or IP address: %q", c.Host)
		}
	}
	if r.Port == 0 {
		r.Port = DefaultPort
	}
	if r.Port < 1 || r.Port > 65535 {
		p.Addf("port", "must be between 1 and 65535")
	}
	if err := store.ValidateProvider(c.Provider); err != nil {
		p.Addf("provider", "%v", err)
	}
	for i, path := range c.Paths {
		if err := checkRoutePath(path); errors.Is(err, errRoutePathForm) {
			canon, _ := CanonicalPath(path)
			p.Addf(fmt.Sprintf("paths[%d]", i), "must be written in canonical form, %q rather than %q", canon.Escaped, path)
		} else if err != nil {
			p.Addf(fmt.Sprintf("paths[%d]", i), "must be an absolute path without query or fragment that the sidecar accepts in requests, got %q: %v", path, err)
		}
		r.paths = append(r.paths, path)
	}
	sort.SliceStable(r.paths, func(a, b int) bool { return len(r.paths[a]) > len(r.paths[b]) })
	r.header = http.CanonicalHeaderKey(c.Header)
	if r.header == "" {
		r.header = "Authorization"
	}
	if !validHeaderName(r.header) {
		p.Addf("header", "not a valid header name: %q", c.Header)
	}
	format := c.Format
	if format == "" {
		format = "Bearer " + tokenPlaceholder
	}
	before, after, ok := strings.Cut(format, tokenPlaceholder)
	if !ok || strings.Contains(after, tokenPlaceholder) {
		p.Addf("format", "must contain %s exactly once, got %q", tokenPlaceholder, format)
	}
	if strings.ContainsAny(format, "\r\n\x00") {
		p.Addf("format", "must not contain control characters")
	}
	r.prefix, r.postfix = before, after
	for i, h := range c.StripHeaders {
		h = http.CanonicalHeaderKey(h)
		if !validHeaderName(h) {
			p.Addf(fmt.Sprintf("strip_headers[%d]", i), "not a valid header name: %q", h)
		}
		r.strip = append(r.strip, h)
	}
	r.creds = append([]string{r.header}, r.strip...)
	r.Name = c.Name
	if r.Name == "" {
		r.Name = c.Provider + ":" + host
		if r.Port != DefaultPort {
			r.Name += ":" + strconv.Itoa(r.Port)
		}
	}
	return r, p.Err()
}

// Names returns the names of the table's routes, sorted.
func (t *Table) Names() []string {
	var names []string
	for _, rs := range t.exact {
		for _, r := range rs {
			names = append(names, r.Name)
		}
	}
	for _, r := range t.wildcard {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// HostRouted reports whether any route covers host on any port. A routed
// host is only ever reached through interception: plain HTTP to it and
// CONNECT to one of its other ports are refused rather than passed on.
func (t *Table) HostRouted(host string) bool {
	if len(t.exact[host]) > 0 {
		return true
	}
	for _, r := range t.wildcard {
		if strings.HasSuffix(host, r.suffix) {
			return true
		}
	}
	return false
}

// Intercepts reports whether CONNECT host:port is to be intercepted: some
// route covers exactly that host and port. host must be normalised.
func (t *Table) Intercepts(host string, port int) bool {
	for _, r := range t.exact[host] {
		if r.Port == port {
			return true
		}
	}
	for _, r := range t.wildcard {
		if r.Port == port && strings.HasSuffix(host, r.suffix) {
			return true
		}
	}
	return false
}

// Decide routes a request to host:port whose escaped path, as the client
// sent it, is escaped: it returns the path in canonical form and the route
// that covers it, nil when none does (see Match). A path CanonicalPath
// refuses, or one with an encoded slash on a route that does not allow
// them, is an error wrapping ErrAmbiguousPath. This is the one route
// decision; the proxy and the fuzz test against a reference normaliser both
// go through it.
func (t *Table) Decide(host string, port int, escaped string) (Path, *Route, error) {
	p, err := CanonicalPath(escaped)
	if err != nil {
		return Path{}, nil, err
	}
	r := t.Match(host, port, p.Escaped)
	if r != nil && p.EncodedSlash && !r.AllowEncodedSlashes {
		return Path{}, nil, errEncodedSlash
	}
	return p, r, nil
}

// Match returns the route for a request to host:port with the given
// path (in canonical form; see Decide), or nil. Exact hosts win over
// wildcards, a longer wildcard suffix over a shorter one, and among routes
// for the same host the longest matching path prefix wins.
func (t *Table) Match(host string, port int, path string) *Route {
	var best *Route
	bestLen := -1
	for _, r := range t.exact[host] {
		if n := r.matchLen(path); r.Port == port && n > bestLen {
			best, bestLen = r, n
		}
	}
	if best != nil {
		return best
	}
	bestSuffix := 0
	for _, r := range t.wildcard { // longest suffix first
		if len(r.suffix) < bestSuffix {
			break
		}
		if r.Port != port || !strings.HasSuffix(host, r.suffix) {
			continue
		}
		if n := r.matchLen(path); n > bestLen {
			best, bestLen, bestSuffix = r, n, len(r.suffix)
		}
	}
	return best
}

// matchLen returns the length of the longest of r's path prefixes that
// path has (0 for a route without prefixes), or -1 when none matches.
func (r *Route) matchLen(path string) int {
	if len(r.paths) == 0 {
		return 0
	}
	for _, p := range r.paths { // longest first
		if PathHasPrefix(path, p) {
			return len(p)
		}
	}
	return -1
}

// PathHasPrefix reports whether path starts with prefix on a segment
// boundary.
func PathHasPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// Inject removes every credential the agent supplied for this route
// (Authorization, the route's header and its strip headers) and sets the
// route's header to the formatted token. The upstream never sees two
// credentials.
func (r *Route) Inject(h http.Header, token string) {
	h.Del("Authorization")
	for _, name := range r.strip {
		h.Del(name)
	}
	h[r.header] = []string{r.prefix + token + r.postfix}
}

// NormalizeHost lower-cases host and removes one trailing dot, so that
// "API.Slack.com." and "api.slack.com" name the same route.
func NormalizeHost(host string) string {
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// SplitHostPort splits "host:port" with a default port, normalising host.
func SplitHostPort(hostport string, defaultPort int) (string, int, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return NormalizeHost(strings.Trim(hostport, "[]")), defaultPort, nil
		}
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("invalid port %q", portStr)
	}
	return NormalizeHost(host), port, nil
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// allDigitsLastLabel reports whether host's last label is numeric, which
// resolvers may read as an IPv4 address ("2130706434", "10.1"); such route
// hosts are refused as ambiguous.
func allDigitsLastLabel(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	if strings.HasPrefix(last, "0x") {
		return true
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return last != ""
}
