package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// authStyleNone is the client authentication of a public client (RFC 7591
// token_endpoint_auth_method "none"): client_id among the parameters and
// no secret. Only a provider resolved from an MCP server's registration has
// it; configuration cannot name it.
const authStyleNone AuthStyle = "none"

// registrationCacheTTL bounds how long a resolved MCP provider is reused
// before its registration is read from the store again. A registration the
// connect server replaced (a new client after the old one was refused) is
// picked up within this bound; refreshes are rare, so the store reads it
// saves are few, but token-cache misses would otherwise each read it.
const registrationCacheTTL = 30 * time.Second

// ErrNotRegistered means an MCP server has no registration in the store
// yet: nobody has connected it, so there is no grant to refresh either.
var ErrNotRegistered = errors.New("the MCP server has not been connected yet (no client registration stored)")

// mcpCache holds the provider last resolved from an MCP server's
// registration.
type mcpCache struct {
	mu  sync.Mutex
	p   *Provider
	ver store.Version
	at  time.Time
}

// IsMCP reports whether p is an MCP server known by its URL
// (ProviderConfig.MCPServer), whose endpoints and client come from the
// registration the connect server stores (see Resolve).
func (p *Provider) IsMCP() bool { return p.resource != "" }

// Resource returns the RFC 8707 resource indicator sent in p's
// authorization and token requests: an MCP server's canonical URL, or ""
// for other providers.
func (p *Provider) Resource() string { return p.resource }

// Issuer returns the issuer identifier of the authorization server an MCP
// server's registration names (RFC 8414), or "" for other providers and an
// unresolved MCP server.
func (p *Provider) Issuer() string { return p.issuer }

// Resolved reports whether p can talk to its authorization server: any
// provider but an MCP server's template, whose endpoints are only known
// from its registration.
func (p *Provider) Resolved() bool { return !p.IsMCP() || p.cfg.TokenURL != "" }

// WithRegistration returns p, an MCP server's provider, resolved with reg:
// the authorization, token and revocation endpoints reg discovered and the
// client it names (the registered client and its secret, or the client the
// operator configured, whose secret p already holds). reg must be for p's
// provider name and resource.
func (p *Provider) WithRegistration(reg *store.Registration) (*Provider, error) {
	if !p.IsMCP() {
		return nil, fmt.Errorf("provider %s: not an MCP server", p.name)
	}
	if reg.Provider != p.name || reg.Resource != p.resource {
		return nil, fmt.Errorf("provider %s: the registration is for %s at %s, not %s", p.name, reg.Provider, reg.Resource, p.resource)
	}
	q := *p
	q.mcp = nil
	q.issuer = reg.Issuer
	q.cfg = p.Config()
	q.cfg.AuthorizationURL = reg.AuthorizationEndpoint
	q.cfg.TokenURL = reg.TokenEndpoint
	q.cfg.RevocationURL = reg.RevocationEndpoint
	q.refreshURL = reg.TokenEndpoint
	if len(reg.Scopes) > 0 && len(q.cfg.Scopes) == 0 {
		q.cfg.Scopes = append([]string(nil), reg.Scopes...)
	}
	q.oauth.Endpoint.AuthURL = reg.AuthorizationEndpoint
	q.oauth.Endpoint.TokenURL = reg.TokenEndpoint
	q.oauth.Scopes = append([]string(nil), q.cfg.Scopes...)
	if reg.Dynamic {
		if p.cfg.ClientID != "" {
			return nil, fmt.Errorf("provider %s: the stored registration is a dynamic client but the configuration names client %s", p.name, p.cfg.ClientID)
		}
		q.cfg.ClientID = reg.ClientID
		q.oauth.ClientID = reg.ClientID
		q.oauth.ClientSecret = reg.ClientSecret
		switch reg.AuthMethod {
		case store.AuthMethodBasic:
			q.cfg.AuthStyle = AuthStyleHeader
		case store.AuthMethodPost:
			q.cfg.AuthStyle = AuthStyleParams
		case store.AuthMethodNone:
			q.cfg.AuthStyle = authStyleNone
		default:
			return nil, fmt.Errorf("provider %s: registration auth method %q", p.name, reg.AuthMethod)
		}
		if q.cfg.AuthStyle != authStyleNone && reg.ClientSecret == "" {
			return nil, fmt.Errorf("provider %s: the registered client has no secret for %s", p.name, reg.AuthMethod)
		}
	} else if reg.ClientID != p.cfg.ClientID || p.cfg.ClientID == "" {
		return nil, fmt.Errorf("provider %s: the stored registration names client %q, the configuration %q", p.name, reg.ClientID, p.cfg.ClientID)
	}
	q.oauth.Endpoint.AuthStyle = q.cfg.AuthStyle.oauth2Style()
	return &q, nil
}

// Resolve returns p itself for every provider but an MCP server's, and for
// an MCP server p resolved with its stored registration (see
// WithRegistration), reusing the last one resolved for
// registrationCacheTTL. Without a registration the error wraps
// ErrNotRegistered and injector.ErrProviderMisconfigured; a store failure
// wraps its store error.
func (p *Provider) Resolve(ctx context.Context, regs store.RegistrationStore) (*Provider, error) {
	if p.Resolved() {
		return p, nil
	}
	c := p.mcp
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p != nil && time.Since(c.at) < registrationCacheTTL {
		return c.p, nil
	}
	if regs == nil {
		return nil, fmt.Errorf("provider %s: %w: the grant store keeps no client registrations", p.name, injector.ErrProviderMisconfigured)
	}
	reg, ver, err := regs.Registration(ctx, p.name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("provider %s: %w: %w", p.name, injector.ErrProviderMisconfigured, ErrNotRegistered)
	case err != nil:
		return nil, fmt.Errorf("provider %s: read client registration: %w", p.name, err)
	}
	if c.p != nil && ver == c.ver {
		c.at = time.Now()
		return c.p, nil
	}
	r, err := p.WithRegistration(reg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", injector.ErrProviderMisconfigured, err)
	}
	c.p, c.ver, c.at = r, ver, time.Now()
	return r, nil
}

// cached returns the provider last resolved from p's registration, or p
// when there is none yet.
func (p *Provider) cached() *Provider {
	if p.mcp == nil {
		return p
	}
	p.mcp.mu.Lock()
	defer p.mcp.mu.Unlock()
	if p.mcp.p != nil {
		return p.mcp.p
	}
	return p
}

// Forget drops the cached resolution of an MCP server's provider, so that
// the next Resolve reads the registration again (the connect server calls
// it after replacing one).
func (p *Provider) Forget() {
	if p.mcp == nil {
		return
	}
	p.mcp.mu.Lock()
	p.mcp.p = nil
	p.mcp.mu.Unlock()
}

// CanonicalResource returns the canonical form of an MCP server's URL, the
// RFC 8707 resource indicator its tokens are requested for: https only,
// scheme and host in lower case, the default port left out, the path as
// given; user information, a query and a fragment are refused.
func CanonicalResource(raw string) (string, error) {
	if len(raw) > maxResourceLen {
		return "", fmt.Errorf("must be at most %d characters", maxResourceLen)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return "", errors.New("must be an absolute https URL")
	}
	switch {
	case !strings.EqualFold(u.Scheme, "https"):
		return "", errors.New("must be an https URL")
	case u.User != nil:
		return "", errors.New("must not contain user information")
	case u.RawQuery != "" || u.ForceQuery:
		return "", errors.New("must not have a query")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", errors.New("must not have a fragment")
	case strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r > '~' }):
		return "", errors.New("must be printable ASCII without spaces")
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "443" {
		port = ""
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", errors.New("must have a port between 1 and 65535")
		}
	}
	hostport := host
	if strings.Contains(host, ":") {
		hostport = "[" + host + "]"
	}
	if port != "" {
		hostport += ":" + port
	}
	return "https://" + hostport + u.EscapedPath(), nil
}

// maxResourceLen bounds an MCP server's URL: it is sent in every
// authorization and token request and stored with each registration.
const maxResourceLen = 1024

// mcpRoute returns the route of an MCP server's URL: its host and port,
// its path as the one path prefix, marked as an MCP route.
func mcpRoute(resource, providerName string) []injector.RouteConfig {
	u, err := url.Parse(resource)
	if err != nil {
		return nil
	}
	r := injector.RouteConfig{Host: u.Hostname(), Provider: providerName, MCP: true}
	if p := u.Port(); p != "" {
		r.Port, _ = strconv.Atoi(p)
	}
	if u.Path != "" && u.Path != "/" {
		r.Paths = []string{u.Path}
	}
	return []injector.RouteConfig{r}
}
