package policy

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DefaultAssertionHeader is the header that carries the acting user's signed
// assertion when InputArgs.AssertionHeader is empty (DESIGN.md section 2).
const DefaultAssertionHeader = "Onbehalf-Assertion"

// Input is the policy input document (DESIGN.md section 6). It is a superset
// of the opa-envoy-plugin input: attributes.request.http, parsed_path and
// parsed_query mean what they mean there, so Envoy policies carry over. It
// never holds credentials: NewInput drops them.
type Input struct {
	Attributes  Attributes          `json:"attributes"`
	ParsedPath  []string            `json:"parsed_path"`
	ParsedQuery map[string][]string `json:"parsed_query"`
	Subject     Subject             `json:"subject"`
	// Route is the matched route, or nil (JSON null) when none matched.
	Route *Route `json:"route"`
	// Time is the decision time in RFC 3339, UTC. Policies should use it
	// rather than time.now_ns() so that their tests can pin it.
	Time string `json:"time"`
}

// Attributes mirrors Envoy's CheckRequest attributes.
type Attributes struct {
	Request Request `json:"request"`
	Source  Source  `json:"source"`
}

// Request holds the HTTP request attributes.
type Request struct {
	HTTP HTTPRequest `json:"http"`
}

// HTTPRequest describes the request as the proxy received it.
type HTTPRequest struct {
	Method string `json:"method"`
	// Host is the destination host, lower case, without a trailing dot, with
	// the port only when it is not the scheme's default.
	Host string `json:"host"`
	// Path is the request target's path with its query, as sent (escaped).
	Path   string `json:"path"`
	Scheme string `json:"scheme"`
	// Headers maps lower-case header names to their values, several values
	// joined with ", " as Envoy does. Credential headers are absent.
	Headers map[string]string `json:"headers"`
}

// Source is the peer that sent the request.
type Source struct {
	Address string `json:"address"`
}

// Subject is the acting user as the verified assertion names them.
type Subject struct {
	User   string `json:"user"`
	Agent  string `json:"agent"`
	Issuer string `json:"issuer"`
	// Claims holds the assertion's narrowing claims (allowed providers, task
	// id, ...). It never holds the assertion itself.
	Claims map[string]any `json:"claims"`
}

// Route is the route the destination matched.
type Route struct {
	Provider string `json:"provider"`
	Host     string `json:"host"`
	Name     string `json:"name"`
}

// InputArgs carries what NewInput cannot read from the request itself.
type InputArgs struct {
	// Source is the client's address (host:port).
	Source string
	// Subject is the verified acting user.
	Subject Subject
	// Route is the matched route; nil when none matched.
	Route *Route
	// Scheme is "https" inside an intercepted tunnel; empty means the
	// request URL's scheme (or "https" when the request came over TLS).
	Scheme string
	// Host is the normalised destination host; empty means the request's.
	Host string
	// Now is the decision time; zero means time.Now().
	Now time.Time
	// AssertionHeader names the assertion header; empty means
	// DefaultAssertionHeader. Neither is ever copied into the input.
	AssertionHeader string
	// DropHeaders lists further headers to keep out of the input, such as
	// the route's credential header.
	DropHeaders []string
}

// NewInput builds the policy input for r. Headers that carry credentials never
// reach it: Authorization, Cookie, Set-Cookie, every Proxy-* header (they are
// addressed to the proxy and are never forwarded), the assertion header (and
// the default assertion header, whatever the configured name) and every
// header in a.DropHeaders.
func NewInput(r *http.Request, a InputArgs) *Input {
	u := r.URL
	if u == nil {
		u = &url.URL{Path: "/"}
	}
	scheme := a.Scheme
	if scheme == "" {
		scheme = strings.ToLower(u.Scheme)
	}
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	host := a.Host
	if host == "" {
		host = u.Host
		if host == "" {
			host = r.Host
		}
		host = normalizeHost(host, scheme)
	}
	now := a.Now
	if now.IsZero() {
		now = time.Now()
	}
	assertion := a.AssertionHeader
	if assertion == "" {
		assertion = DefaultAssertionHeader
	}

	headers := make(map[string]string, len(r.Header))
	for name, values := range r.Header {
		lower := strings.ToLower(name)
		if isCredentialHeader(lower) || strings.EqualFold(name, assertion) ||
			strings.EqualFold(name, DefaultAssertionHeader) || listed(a.DropHeaders, name) {
			continue
		}
		headers[lower] = strings.Join(values, ", ")
	}
	// Go's server moves Transfer-Encoding out of the header map (and a
	// client request may carry its length only in ContentLength). Put them
	// back, so that a policy can tell a request has a body, as it could
	// behind Envoy.
	if _, ok := headers["transfer-encoding"]; !ok && len(r.TransferEncoding) > 0 {
		headers["transfer-encoding"] = strings.Join(r.TransferEncoding, ", ")
	}
	if _, ok := headers["content-length"]; !ok && r.ContentLength > 0 {
		headers["content-length"] = strconv.FormatInt(r.ContentLength, 10)
	}

	query := u.Query()
	if query == nil {
		query = url.Values{}
	}
	claims := a.Subject.Claims
	if claims == nil {
		claims = map[string]any{}
	}

	return &Input{
		Attributes: Attributes{
			Request: Request{HTTP: HTTPRequest{
				Method:  r.Method,
				Host:    host,
				Path:    u.RequestURI(),
				Scheme:  scheme,
				Headers: headers,
			}},
			Source: Source{Address: a.Source},
		},
		ParsedPath:  parsePath(u.Path),
		ParsedQuery: query,
		Subject: Subject{
			User:   a.Subject.User,
			Agent:  a.Subject.Agent,
			Issuer: a.Subject.Issuer,
			Claims: claims,
		},
		Route: a.Route,
		Time:  now.UTC().Format(time.RFC3339),
	}
}

// parsePath splits a decoded URL path the way opa-envoy-plugin does: leading
// slashes trimmed, then split on "/" (so "/" gives [""] and a trailing slash
// gives a trailing "").
func parsePath(p string) []string {
	return strings.Split(strings.TrimLeft(p, "/"), "/")
}

// isCredentialHeader reports whether the lower-case header name carries a
// credential, or is addressed to the proxy.
func isCredentialHeader(lower string) bool {
	switch lower {
	case "authorization", "cookie", "set-cookie":
		return true
	}
	return strings.HasPrefix(lower, "proxy-")
}

func listed(names []string, name string) bool {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// normalizeHost lower-cases host, removes a trailing dot and the scheme's
// default port.
func normalizeHost(host, scheme string) string {
	host = strings.ToLower(host)
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return strings.TrimSuffix(host, ".")
	}
	h = strings.TrimSuffix(h, ".")
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return net.JoinHostPort(h, port)
}

// Key terms of the input document, built once. OPA never mutates the terms
// of an input value (it interns and shares terms itself), so every request's
// input can share them.
var (
	keyAttributes  = ast.StringTerm("attributes")
	keyRequest     = ast.StringTerm("request")
	keyHTTP        = ast.StringTerm("http")
	keyMethod      = ast.StringTerm("method")
	keyHost        = ast.StringTerm("host")
	keyPath        = ast.StringTerm("path")
	keyScheme      = ast.StringTerm("scheme")
	keyHeaders     = ast.StringTerm("headers")
	keySource      = ast.StringTerm("source")
	keyAddress     = ast.StringTerm("address")
	keyParsedPath  = ast.StringTerm("parsed_path")
	keyParsedQuery = ast.StringTerm("parsed_query")
	keySubject     = ast.StringTerm("subject")
	keyUser        = ast.StringTerm("user")
	keyAgent       = ast.StringTerm("agent")
	keyIssuer      = ast.StringTerm("issuer")
	keyClaims      = ast.StringTerm("claims")
	keyRoute       = ast.StringTerm("route")
	keyProvider    = ast.StringTerm("provider")
	keyName        = ast.StringTerm("name")
	keyTime        = ast.StringTerm("time")
)

// Value returns the input as an OPA AST value, built field by field rather
// than through a JSON round trip: about 2.5 times faster with half the
// allocations (BenchmarkInputValue). Claims go through ast.InterfaceToValue,
// which converts JSON-shaped Go values directly.
func (in *Input) Value() (ast.Value, error) {
	h := &in.Attributes.Request.HTTP
	headers := make([][2]*ast.Term, 0, len(h.Headers))
	for k, v := range h.Headers {
		headers = append(headers, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
	}
	path := make([]*ast.Term, len(in.ParsedPath))
	for i, s := range in.ParsedPath {
		path[i] = ast.StringTerm(s)
	}
	query := make([][2]*ast.Term, 0, len(in.ParsedQuery))
	for k, vs := range in.ParsedQuery {
		arr := make([]*ast.Term, len(vs))
		for i, v := range vs {
			arr[i] = ast.StringTerm(v)
		}
		query = append(query, ast.Item(ast.StringTerm(k), ast.ArrayTerm(arr...)))
	}
	claims := ast.Value(ast.NewObject())
	if len(in.Subject.Claims) > 0 {
		var err error
		if claims, err = ast.InterfaceToValue(in.Subject.Claims); err != nil {
			return nil, err
		}
	}
	route := ast.NullTerm()
	if r := in.Route; r != nil {
		route = ast.ObjectTerm(
			ast.Item(keyProvider, ast.StringTerm(r.Provider)),
			ast.Item(keyHost, ast.StringTerm(r.Host)),
			ast.Item(keyName, ast.StringTerm(r.Name)),
		)
	}

	return ast.NewObject(
		ast.Item(keyAttributes, ast.ObjectTerm(
			ast.Item(keyRequest, ast.ObjectTerm(
				ast.Item(keyHTTP, ast.ObjectTerm(
					ast.Item(keyMethod, ast.StringTerm(h.Method)),
					ast.Item(keyHost, ast.StringTerm(h.Host)),
					ast.Item(keyPath, ast.StringTerm(h.Path)),
					ast.Item(keyScheme, ast.StringTerm(h.Scheme)),
					ast.Item(keyHeaders, ast.ObjectTerm(headers...)),
				)),
			)),
			ast.Item(keySource, ast.ObjectTerm(
				ast.Item(keyAddress, ast.StringTerm(in.Attributes.Source.Address)),
			)),
		)),
		ast.Item(keyParsedPath, ast.ArrayTerm(path...)),
		ast.Item(keyParsedQuery, ast.ObjectTerm(query...)),
		ast.Item(keySubject, ast.ObjectTerm(
			ast.Item(keyUser, ast.StringTerm(in.Subject.User)),
			ast.Item(keyAgent, ast.StringTerm(in.Subject.Agent)),
			ast.Item(keyIssuer, ast.StringTerm(in.Subject.Issuer)),
			ast.Item(keyClaims, ast.NewTerm(claims)),
		)),
		ast.Item(keyRoute, route),
		ast.Item(keyTime, ast.StringTerm(in.Time)),
	), nil
}
