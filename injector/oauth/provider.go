package oauth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// HTTP client limits for token endpoints.
const (
	// maxIdleConnsPerHost keeps a few connections warm for refresh bursts.
	maxIdleConnsPerHost = 8
	// maxErrorCodeLen bounds the provider error code quoted in errors and
	// logs; RFC 6749 codes are short ASCII words.
	maxErrorCodeLen = 64
)

// Errors of NewProvider and of token-endpoint calls.
var (
	// ErrProxyTransport means an HTTP client given to NewProvider would send
	// token requests through a proxy (or uses http.DefaultTransport, which
	// honours the proxy environment variables).
	ErrProxyTransport = errors.New("token endpoint client must not use a proxy")
	// ErrUnknownProvider means a token was asked for a provider that has no
	// configuration. It is always returned together with
	// injector.ErrProviderMisconfigured.
	ErrUnknownProvider = errors.New("provider not configured")
	// errInvalidGrant means the token endpoint answered invalid_grant: the
	// refresh token is dead (revoked, expired, or reused).
	errInvalidGrant = errors.New("refresh token refused (invalid_grant)")
)

// Provider is one OAuth provider as the sidecar sees it: its endpoints, the
// sidecar's client credentials and the HTTP client used for its token
// endpoint. It is immutable and safe for concurrent use.
type Provider struct {
	name string
	// cfg is the resolved configuration (see ProviderConfig.Resolve).
	cfg ProviderConfig
	// q are the quirks of cfg.Preset (zero for a custom provider).
	q quirks
	// refreshURL is where refresh_token grants go: the token URL, or the
	// preset's refresh path on its origin.
	refreshURL string
	oauth      oauth2.Config
	client     *http.Client
	// refreshClient is client without keep-alive: each refresh has a
	// connection of its own. On a pooled connection the provider may have
	// closed, a refresh request is written and then fails with nothing
	// read, and the Source cannot tell that from a provider that spent the
	// refresh token and crashed; a fresh connection costs one handshake
	// per refresh and removes the doubt.
	refreshClient *http.Client
	// resource is the RFC 8707 resource indicator of an MCP server's
	// provider (its canonical URL), sent in authorization and token
	// requests; "" for other providers.
	resource string
	// issuer is the authorization server's issuer of a provider resolved
	// from an MCP server's registration; "" otherwise.
	issuer string
	// mcp caches the provider resolved from an MCP server's registration
	// (nil for other providers and for resolved ones; see Resolve).
	mcp *mcpCache
}

// NewProvider validates name and cfg and returns the provider for the
// resolved cfg (see ProviderConfig.Resolve): a preset fills what cfg leaves
// empty and brings its provider's quirks. clientSecret is the resolved
// client secret (from ReadSecretFile or Vault). client is
// the HTTP client for the provider's endpoints; nil means NewHTTPClient(nil)
// (system roots). A client whose transport is nil or an *http.Transport with
// a Proxy function is refused (ErrProxyTransport); whatever client is given,
// the provider's copy of it never follows a redirect.
func NewProvider(name string, cfg ProviderConfig, clientSecret string, client *http.Client) (*Provider, error) {
	if err := store.ValidateProvider(name); err != nil {
		return nil, fmt.Errorf("new provider: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new provider %s: %w", name, err)
	}
	// An MCP server's client may be registered when someone connects it
	// (its secret is in the store) or be a public client.
	mcpNoSecret := cfg.IsMCP() && cfg.ClientSecretFile == "" && cfg.ClientSecretVault == ""
	if clientSecret == "" && !mcpNoSecret {
		return nil, fmt.Errorf("new provider %s: %w", name, ErrEmptySecret)
	}
	if client == nil {
		c, err := NewHTTPClient(nil)
		if err != nil {
			return nil, fmt.Errorf("new provider %s: %w", name, err)
		}
		client = c
	} else {
		switch t := client.Transport.(type) {
		case nil:
			return nil, fmt.Errorf("new provider %s: %w (nil transport means http.DefaultTransport)", name, ErrProxyTransport)
		case *http.Transport:
			if t.Proxy != nil {
				return nil, fmt.Errorf("new provider %s: %w", name, ErrProxyTransport)
			}
		}
		c := *client
		c.CheckRedirect = outbound.RefuseRedirect
		client = &c
	}
	cfg, err := cfg.Resolve()
	if err != nil {
		// Validate resolved cfg successfully above; this cannot happen.
		return nil, fmt.Errorf("new provider %s: %w", name, err)
	}
	var q quirks
	if e, ok := lookupEntry(cfg.Preset); ok {
		q = e.q.clone()
	}
	refreshURL := cfg.TokenURL
	if q.refreshPath != "" {
		u, err := url.Parse(cfg.TokenURL)
		if err != nil {
			return nil, fmt.Errorf("new provider %s: token_url: %w", name, err)
		}
		u.Path, u.RawPath, u.RawQuery = q.refreshPath, "", ""
		refreshURL = u.String()
	}
	p := &Provider{
		name:       name,
		cfg:        cfg,
		q:          q,
		refreshURL: refreshURL,
		oauth: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: clientSecret,
			Endpoint: oauth2.Endpoint{
				AuthURL:   cfg.AuthorizationURL,
				TokenURL:  cfg.TokenURL,
				AuthStyle: cfg.AuthStyle.oauth2Style(),
			},
			Scopes: slices.Clone(cfg.Scopes),
		},
		client:        client,
		refreshClient: withoutKeepAlive(client),
	}
	if cfg.IsMCP() {
		p.resource, _ = CanonicalResource(cfg.MCPServer) // validated above
		p.mcp = &mcpCache{}
		p.cfg.PKCE = ptr(true) // the MCP authorization specification requires it
		if cfg.ClientID != "" && mcpNoSecret {
			p.cfg.AuthStyle = authStyleNone // the operator's public client
		}
	}
	return p, nil
}

// withoutKeepAlive returns a copy of c whose transport opens a connection
// per request, or c itself when its transport is not an *http.Transport.
func withoutKeepAlive(c *http.Client) *http.Client {
	t, ok := c.Transport.(*http.Transport)
	if !ok {
		return c
	}
	t = t.Clone()
	t.DisableKeepAlives = true
	cc := *c
	cc.Transport = t
	return &cc
}

// NewHTTPClient returns an HTTP client for token, revocation and account
// endpoints (see package outbound): no proxy (never the environment's), TLS
// verified against roots (nil means the system roots) with TLS 1.2 at
// least, bounded dial and handshake, and no redirect followed (a 3xx answer
// is returned as is and treated as a misconfiguration). The whole exchange
// is bounded per call by ProviderConfig.Timeout, not by the client. The
// endpoints are the operator's configuration, not the agent's choice, so
// the egress guard is not applied: a token endpoint on a private network
// needs no allow-list entry.
func NewHTTPClient(roots *x509.CertPool) (*http.Client, error) {
	o := outbound.DefaultOptions()
	o.Roots = roots
	o.MaxIdleConnsPerHost = maxIdleConnsPerHost
	c, err := outbound.Client(o)
	if err != nil {
		return nil, fmt.Errorf("token endpoint client: %w", err)
	}
	return c, nil
}

// Name returns the provider's name (the key of its grants in the store).
func (p *Provider) Name() string { return p.name }

// Config returns the provider's resolved configuration: preset values
// filled in and placeholders substituted.
func (p *Provider) Config() ProviderConfig {
	c := p.cfg
	c.Scopes = slices.Clone(c.Scopes)
	c.AuthParams = maps.Clone(c.AuthParams)
	if c.PKCE != nil {
		c.PKCE = ptr(*c.PKCE)
	}
	c.Exchange = c.Exchange.clone()
	return c
}

// PKCE reports whether the provider's authorization flow uses PKCE (S256).
func (p *Provider) PKCE() bool { return p.cfg.PKCE != nil && *p.cfg.PKCE }

// OAuth2Config returns a copy of the x/oauth2 configuration (client
// credentials, endpoints, explicit auth style, scopes). Prefer AuthCodeURL
// and Exchange, which honour the preset's quirks (scope separator and
// parameter, authorization parameters, non-standard token responses);
// x/oauth2 knows none of them. Use it with WithHTTPClient.
func (p *Provider) OAuth2Config() *oauth2.Config {
	c := &oauth2.Config{
		ClientID:     p.oauth.ClientID,
		ClientSecret: p.oauth.ClientSecret,
		Endpoint:     p.oauth.Endpoint,
		Scopes:       slices.Clone(p.oauth.Scopes),
	}
	return c
}

// HTTPClient returns the provider's HTTP client.
func (p *Provider) HTTPClient() *http.Client { return p.client }

// WithHTTPClient returns ctx carrying the provider's HTTP client, the way
// x/oauth2 expects it (without it x/oauth2 uses http.DefaultClient, which
// honours proxy environment variables and follows redirects).
func (p *Provider) WithHTTPClient(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, p.client)
}

// CloseIdleConnections closes the idle connections of the provider's HTTP
// clients.
func (p *Provider) CloseIdleConnections() {
	p.client.CloseIdleConnections()
	p.refreshClient.CloseIdleConnections()
}

// transportError returns err reduced to what is safe to show: a timeout
// becomes a fixed text wrapping context.DeadlineExceeded; net/http errors
// (which name the endpoint URL, configuration rather than secret: onbehalf
// never puts a token in a URL) pass through.
func transportError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within the timeout: %w", context.DeadlineExceeded)
	}
	return err
}

// sanitizeCode bounds a provider error code and drops anything that is not
// printable ASCII, so a hostile provider cannot inject text into logs.
func sanitizeCode(code string) string {
	if len(code) > maxErrorCodeLen {
		code = code[:maxErrorCodeLen]
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, code)
}
