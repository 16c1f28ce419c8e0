package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// HTTP client limits for token endpoints.
const (
	// dialTimeout bounds the TCP connect; the per-call Timeout bounds the
	// whole exchange, this only makes an unroutable endpoint fail fast.
	dialTimeout = 5 * time.Second
	// tlsHandshakeTimeout bounds the handshake for the same reason.
	tlsHandshakeTimeout = 5 * time.Second
	// idleConnTimeout closes pooled connections to a token endpoint that
	// has not been used for a while (refreshes are minutes apart per grant).
	idleConnTimeout = 90 * time.Second
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
	name   string
	cfg    ProviderConfig
	oauth  oauth2.Config
	client *http.Client
}

// NewProvider validates name and cfg and returns the provider. clientSecret
// is the resolved client secret (from ReadSecretFile or Vault). client is
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
	if clientSecret == "" {
		return nil, fmt.Errorf("new provider %s: %w", name, ErrEmptySecret)
	}
	if client == nil {
		client = NewHTTPClient(nil)
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
		c.CheckRedirect = refuseRedirect
		client = &c
	}
	cfg.Scopes = slices.Clone(cfg.Scopes)
	return &Provider{
		name: name,
		cfg:  cfg,
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
		client: client,
	}, nil
}

// NewHTTPClient returns an HTTP client for token endpoints: no proxy (never
// the environment's), TLS verified against roots (nil means the system
// roots) with TLS 1.2 at least, bounded dial and handshake, and no redirect
// followed (a 3xx answer is returned as is and treated as a
// misconfiguration). The whole exchange is bounded per call by
// ProviderConfig.Timeout, not by the client.
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: dialTimeout}).DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   tlsHandshakeTimeout,
			IdleConnTimeout:       idleConnTimeout,
			MaxIdleConnsPerHost:   maxIdleConnsPerHost,
			ForceAttemptHTTP2:     true,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: refuseRedirect,
	}
}

// refuseRedirect makes a client return a redirect response instead of
// following it: a token request carries the client secret and a refresh
// token, and must reach exactly the configured endpoint.
func refuseRedirect(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}

// Name returns the provider's name (the key of its grants in the store).
func (p *Provider) Name() string { return p.name }

// Config returns the provider's configuration.
func (p *Provider) Config() ProviderConfig {
	c := p.cfg
	c.Scopes = slices.Clone(c.Scopes)
	return c
}

// OAuth2Config returns a copy of the x/oauth2 configuration (client
// credentials, endpoints, explicit auth style, scopes) for the connect
// flow, which sets its RedirectURL. Use it with WithHTTPClient.
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
// client.
func (p *Provider) CloseIdleConnections() { p.client.CloseIdleConnections() }

// refresh presents refreshToken at the token endpoint once, within the
// configured timeout. x/oauth2 does not retry, and net/http does not replay
// a POST whose request was written, so the refresh token is presented at
// most once per call. The returned token always has a refresh token:
// x/oauth2 fills in the presented one when the provider did not rotate it.
//
// Errors wrap exactly one of errInvalidGrant, injector.ErrProviderMisconfigured
// and injector.ErrProviderUnavailable. They quote at most the provider's
// error code and HTTP status, never a response body (a provider could echo
// the request, refresh token included).
func (p *Provider) refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(p.WithHTTPClient(ctx), p.cfg.Timeout)
	defer cancel()
	tok, err := p.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return nil, classifyTokenError(err)
	}
	return tok, nil
}

// classifyTokenError maps an error of a token-endpoint call to one sentinel.
//
// With an OAuth error code: invalid_grant kills the grant;
// temporarily_unavailable and server_error are transient; every other code
// (invalid_client, unauthorized_client, unsupported_grant_type,
// invalid_request, invalid_scope, and codes this code does not know) means
// the provider refuses what the sidecar sends, which only an operator can
// fix — unless the HTTP status says the server is failing (5xx, 429). Without
// a code, the status decides: 408, 429 and 5xx are transient, anything else
// (3xx redirects, 4xx) is a misconfiguration. Errors without a response at
// all (timeouts, refused or dropped connections, TLS failures, unparsable
// 2xx bodies) are transient: the grant is never judged on them.
func classifyTokenError(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("token endpoint: %w: %w", injector.ErrProviderUnavailable, transportError(err))
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	code := sanitizeCode(re.ErrorCode)
	serverFailing := status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
	switch {
	case code == "invalid_grant":
		return fmt.Errorf("token endpoint: status %d: %w", status, errInvalidGrant)
	case code == "temporarily_unavailable" || code == "server_error" || code == "slow_down":
		return fmt.Errorf("token endpoint: status %d, error %q: %w", status, code, injector.ErrProviderUnavailable)
	case serverFailing && code == "":
		return fmt.Errorf("token endpoint: status %d: %w", status, injector.ErrProviderUnavailable)
	case serverFailing:
		return fmt.Errorf("token endpoint: status %d, error %q: %w", status, code, injector.ErrProviderUnavailable)
	case code == "":
		return fmt.Errorf("token endpoint: status %d: %w", status, injector.ErrProviderMisconfigured)
	}
	return fmt.Errorf("token endpoint: status %d, error %q: %w", status, code, injector.ErrProviderMisconfigured)
}

// transportError returns err reduced to what is safe to show: x/oauth2's
// parse errors are replaced by a fixed text; net/http errors (which name the
// token URL, configuration rather than secret) pass through.
func transportError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within the timeout: %w", context.DeadlineExceeded)
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "oauth2: ") {
		// "cannot parse json", "cannot fetch token" (body cut off),
		// "server response missing access_token": these quote nothing
		// today; a fixed text keeps it that way if they ever change.
		return errors.New("unusable or incomplete token response")
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
