package oauth

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Defaults and bounds of ProviderConfig.
const (
	// DefaultRefreshSkew is how long before its expiry an access token is
	// refreshed. Two minutes covers the request that is about to use the
	// token, clock differences with the provider and one slow refresh.
	DefaultRefreshSkew = 2 * time.Minute
	// DefaultRefreshJitter is the largest extra earliness added to the skew,
	// chosen per replica and grant, so that replicas do not all decide to
	// refresh the same grant at the same instant.
	DefaultRefreshJitter = 30 * time.Second
	// DefaultTimeout bounds one token-endpoint call. Providers answer in well
	// under a second; ten seconds rides out a slow one and stays below the
	// proxy's request deadline.
	DefaultTimeout = 10 * time.Second

	// minRefreshSkew is the least refresh_skew: below a second the refresh
	// could not finish before the token expires.
	minRefreshSkew = time.Second
	// maxRefreshSkew caps refresh_skew: providers issue access tokens for an
	// hour or more, and a skew close to the lifetime refreshes on every use.
	// (Whatever the setting, a token is never refreshed earlier than a
	// quarter of its lifetime before expiry; see skewFor.)
	maxRefreshSkew = 30 * time.Minute
	// maxRefreshJitter caps refresh_jitter for the same reason.
	maxRefreshJitter = 10 * time.Minute
	// maxTimeout caps timeout: it is how long an agent's request waits for
	// a refresh, which must stay below the proxy's request deadline. (A
	// refresh that was sent waits longer for its answer, in the
	// background, up to RefreshConfig.AnswerDeadline.)
	maxTimeout = 20 * time.Second
	// maxReuseGrace caps refresh_reuse_grace: providers' grace periods are
	// seconds to minutes (Okta allows up to 60 s, Auth0's reuse interval
	// defaults to 0 and is usually set to seconds).
	maxReuseGrace = 10 * time.Minute
	// maxScopeDescription bounds a scope description: one line on a
	// phone's screen or two.
	maxScopeDescription = 120
	// maxSecretFileSize bounds a client secret file; secrets are a few
	// dozen bytes, and the bound stops a wrong path from being slurped.
	maxSecretFileSize = 64 << 10
)

// AuthStyle is how the client authenticates at the token endpoint. It is
// always configured explicitly: x/oauth2's auto-detection sends the secret
// both ways on a failure, which doubles failed refreshes and hides a
// misconfiguration.
type AuthStyle string

// Client authentication styles (RFC 6749 section 2.3.1).
const (
	// AuthStyleHeader sends client_id and client_secret in an HTTP Basic
	// Authorization header (client_secret_basic).
	AuthStyleHeader AuthStyle = "header"
	// AuthStyleParams sends them as form parameters (client_secret_post).
	AuthStyleParams AuthStyle = "params"
)

// oauth2Style returns the x/oauth2 equivalent of a, which is never
// AuthStyleAutoDetect for a validated configuration.
func (a AuthStyle) oauth2Style() oauth2.AuthStyle {
	switch a {
	case AuthStyleHeader:
		return oauth2.AuthStyleInHeader
	case AuthStyleParams:
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleAutoDetect
}

// ProviderConfig configures one OAuth provider. The zero value is not
// usable; start from DefaultProviderConfig.
type ProviderConfig struct {
	// TokenURL is the token endpoint (required). It must be https, or http
	// on a loopback address for local tests.
	TokenURL string `yaml:"token_url"`
	// AuthorizationURL is the authorization endpoint, used by the connect
	// server.
	AuthorizationURL string `yaml:"authorization_url"`
	// RevocationURL is the RFC 7009 revocation endpoint, used when a grant
	// is revoked; empty when the provider has none.
	RevocationURL string `yaml:"revocation_url"`
	// UserinfoURL is where the connect server learns the provider account
	// of a new grant.
	UserinfoURL string `yaml:"userinfo_url"`
	// ClientID is the sidecar's client_id at the provider (required).
	ClientID string `yaml:"client_id"`
	// ClientSecretFile is a file holding the client secret, read once at
	// start (surrounding white space is ignored). Exactly one of
	// ClientSecretFile and ClientSecretVault must be set.
	ClientSecretFile string `yaml:"client_secret_file"`
	// ClientSecretVault names the client secret in Vault as "path#field";
	// the caller resolves it and passes the secret to NewProvider.
	ClientSecretVault string `yaml:"client_secret_vault"`
	// Scopes are requested by the connect flow. Refreshes request no scope,
	// which keeps the scopes of the grant.
	Scopes []string `yaml:"scopes"`
	// AuthStyle is "header" (client_secret_basic) or "params"
	// (client_secret_post); required, never auto-detected.
	AuthStyle AuthStyle `yaml:"auth_style"`
	// RefreshSkew is how long before its expiry an access token is
	// refreshed, at most: for a token whose lifetime is known the skew is
	// also at most a quarter of that lifetime, so short-lived tokens (a
	// minute, say) are refreshed once per lifetime rather than on every
	// use.
	RefreshSkew time.Duration `yaml:"refresh_skew"`
	// RefreshJitter is the largest random extra earliness, fixed per replica
	// and grant, added to the skew; for a token whose lifetime is known it
	// is also at most an eighth of that lifetime.
	RefreshJitter time.Duration `yaml:"refresh_jitter"`
	// Timeout bounds connecting to the token endpoint and sending a
	// request, and how long an agent's request waits for the answer. A
	// refresh that was sent goes on waiting for its answer in the
	// background (RefreshConfig.AnswerDeadline): the provider may have
	// spent the refresh token.
	Timeout time.Duration `yaml:"timeout"`
	// RefreshReuseGrace is the provider's grace period for a rotated
	// refresh token, if it has one (Okta's refresh token grace period,
	// Auth0's reuse interval): within it the provider accepts the old token
	// again instead of revoking the grant. Zero (the default) means the
	// provider has none: a refresh token whose fate is unknown is then
	// presented again only once its lease holder is presumed dead (see
	// RefreshConfig.TakeoverAfter). Set it no longer than the provider's
	// own setting.
	RefreshReuseGrace time.Duration `yaml:"refresh_reuse_grace"`

	// Preset names a built-in provider description (see Presets and
	// docs/providers.md). Every field below left empty is taken from it:
	// endpoints, scopes, auth style, authorization parameters, scope
	// separator, account field and PKCE (see Resolve). Empty means a custom
	// provider, described by these fields alone.
	Preset string `yaml:"preset"`
	// Tenant fills the {tenant}, {domain} and {instance} placeholders of
	// the endpoint URLs: Microsoft's tenant ("organizations", a tenant id
	// or a domain). It is a host label or domain name.
	Tenant string `yaml:"tenant"`
	// AuthParams are extra authorization-request parameters, merged over
	// the preset's (a key set here wins; an empty value removes the
	// preset's parameter). Parameters the flow sets itself (client_id,
	// redirect_uri, state, scope, response_type, code_challenge…) cannot
	// be set here.
	AuthParams map[string]string `yaml:"auth_params"`
	// ScopeSeparator joins scopes in the authorization request: " " (RFC
	// 6749, the default) or ",".
	ScopeSeparator string `yaml:"scope_separator"`
	// AccountField is the JSON field of the identity (userinfo) response
	// that names the provider account; a dotted path ("data.email")
	// reaches into objects. Empty means the preset's, or "sub" (OpenID
	// Connect) for a custom provider.
	AccountField string `yaml:"account_field"`
	// PKCE says whether the authorization flow uses PKCE with S256. Nil
	// means the preset's choice, or true for a custom provider (RFC 9700
	// recommends PKCE for every client).
	PKCE *bool `yaml:"pkce"`
	// ScopeDescriptions say in plain words what scopes let an agent do, by
	// scope ("api.read": "See your tickets"), for the connect server's
	// pages; merged over the preset's. A scope with none is shown as it
	// is.
	ScopeDescriptions map[string]string `yaml:"scope_descriptions"`

	// Exchange, when set, makes the provider's tokens come from token
	// exchange with the identity provider instead of (or, with fallback
	// grant, before) the stored grant (see ExchangeConfig).
	Exchange *ExchangeConfig `yaml:"exchange"`

	// MCPServer makes the provider a remote MCP server known by its URL
	// alone (https, no query or fragment): its authorization server and
	// endpoints are discovered when a person first connects it (RFC 9728,
	// then RFC 8414 or OpenID Connect discovery), and without ClientID a
	// client is registered there (RFC 7591); tokens are requested for the
	// URL as RFC 8707 resource. The endpoint fields, Preset, Tenant,
	// AccountField and Exchange must then be empty; ClientID (with a
	// secret and AuthStyle, or alone for a public client) names a client
	// the operator registered instead. Discovery requires PKCE S256. See
	// docs/design.md#connecting-an-mcp-server-by-its-url.
	MCPServer string `yaml:"mcp_server"`
	// RateLimitHeaders name the response headers through which the
	// provider's API says a user's quota is spent; nil means the preset's
	// (GitHub's x-ratelimit-remaining and x-ratelimit-reset, for one).
	// The sidecar then refuses that user's further requests to the
	// provider until the reset (rate_limits.upstream). Retry-After on a
	// 429 or 503 is read whatever this says.
	RateLimitHeaders *RateLimitHeaders `yaml:"rate_limit_headers"`
}

// RateLimitHeaders are a provider's rate-limit response headers: when
// Remaining is "0", the quota refills at the time Reset says, written in
// ResetFormat.
type RateLimitHeaders struct {
	Remaining string `yaml:"remaining"`
	Reset     string `yaml:"reset"`
	// ResetFormat is epoch_seconds (Unix seconds, GitHub's), epoch_millis,
	// delta_seconds (seconds from now) or http_date.
	ResetFormat string `yaml:"reset_format"`
}

// ResetFormats are the values of RateLimitHeaders.ResetFormat.
var ResetFormats = []string{"epoch_seconds", "epoch_millis", "delta_seconds", "http_date"}

// Validate reports what keeps h from being read.
func (h RateLimitHeaders) Validate() error {
	var p config.Problems
	if h.Remaining == "" || !httpguts.ValidHeaderFieldName(h.Remaining) {
		p.Addf("remaining", "must be a header name, got %q", h.Remaining)
	}
	if h.Reset == "" || !httpguts.ValidHeaderFieldName(h.Reset) {
		p.Addf("reset", "must be a header name, got %q", h.Reset)
	}
	if !slices.Contains(ResetFormats, h.ResetFormat) {
		p.Addf("reset_format", "must be one of %s, got %q", strings.Join(ResetFormats, ", "), h.ResetFormat)
	}
	return p.Err()
}

// IsMCP reports whether c describes an MCP server known by its URL.
func (c ProviderConfig) IsMCP() bool { return c.MCPServer != "" }

// DefaultProviderConfig returns a ProviderConfig with the refresh defaults
// filled in. TokenURL, ClientID, AuthStyle and a client secret source must
// still be set.
func DefaultProviderConfig() ProviderConfig {
	return ProviderConfig{
		RefreshSkew:   DefaultRefreshSkew,
		RefreshJitter: DefaultRefreshJitter,
		Timeout:       DefaultTimeout,
	}
}

// SetDefaults resets c to DefaultProviderConfig; the config decoder calls
// it for each new entry of the providers map.
func (c *ProviderConfig) SetDefaults() { *c = DefaultProviderConfig() }

// Validate reports every problem with c at once, as an errors.Join of
// *config.FieldError with paths relative to this provider's section. It
// reads no file.
//
// It validates the resolved configuration (see Resolve), so a provider
// based on a preset need not repeat the preset's endpoints; an unknown
// preset and a placeholder without a tenant are reported too.
func (c ProviderConfig) Validate() error {
	if c.IsMCP() {
		return c.validateMCP()
	}
	var p config.Problems
	raw := c
	c, rerr := c.Resolve()
	p.Add("", rerr)
	presetKnown := raw.Preset == ""
	if !presetKnown {
		_, presetKnown = lookupEntry(raw.Preset)
	}
	switch {
	case c.TokenURL == "":
		if presetKnown {
			p.Addf("token_url", "required")
		}
	case hasPlaceholder(c.TokenURL):
		// Reported by Resolve (no tenant) or below (unknown placeholder).
	default:
		if msg := checkEndpoint(c.TokenURL); msg != "" {
			p.Addf("token_url", "%s", msg)
		}
	}
	for _, e := range []struct{ key, val string }{
		{"token_url", c.TokenURL},
		{"authorization_url", c.AuthorizationURL},
		{"revocation_url", c.RevocationURL},
		{"userinfo_url", c.UserinfoURL},
	} {
		if e.val == "" {
			continue
		}
		if hasPlaceholder(e.val) {
			if name := unknownPlaceholder(e.val); name != "" {
				p.Addf(e.key, "unknown placeholder %s (known: {tenant}, {domain}, {instance}, {client_id})", name)
			}
			continue
		}
		if e.key == "token_url" {
			continue // checked above
		}
		if msg := checkEndpoint(e.val); msg != "" {
			p.Addf(e.key, "%s", msg)
		}
	}
	if c.ClientID == "" {
		p.Addf("client_id", "required")
	}
	switch {
	case c.ClientSecretFile == "" && c.ClientSecretVault == "":
		p.Addf("", "client_secret_file or client_secret_vault is required")
	case c.ClientSecretFile != "" && c.ClientSecretVault != "":
		p.Addf("client_secret_vault", "must not be set together with client_secret_file")
	case c.ClientSecretVault != "":
		if msg := checkVaultRef(c.ClientSecretVault); msg != "" {
			p.Addf("client_secret_vault", "%s", msg)
		}
	}
	c.validateShared(&p, raw)
	if c.AccountField != "" && !validAccountField(c.AccountField) {
		p.Addf("account_field", `must be a field name or a dotted path of field names ("data.email")`)
	}
	switch c.AuthStyle {
	case AuthStyleHeader, AuthStyleParams:
	case "":
		if presetKnown { // an unknown preset was reported; its style is unknown
			p.Addf("auth_style", "required: %q (client_secret_basic) or %q (client_secret_post)", AuthStyleHeader, AuthStyleParams)
		}
	default:
		p.Addf("auth_style", "must be %q or %q", AuthStyleHeader, AuthStyleParams)
	}
	if c.Exchange != nil {
		p.Add("exchange", c.Exchange.Validate())
	}
	return p.Err()
}

// validateShared reports the problems of the fields every provider has:
// scopes and their separator and descriptions, authorization parameters
// and the refresh timing. raw is c before Resolve.
func (c ProviderConfig) validateShared(p *config.Problems, raw ProviderConfig) {
	for i, s := range c.Scopes {
		if !validScope(s) {
			p.Addf(fmt.Sprintf("scopes[%d]", i), "must be a non-empty RFC 6749 scope token")
		} else if c.ScopeSeparator == "," && strings.Contains(s, ",") {
			p.Addf(fmt.Sprintf("scopes[%d]", i), "must not contain a comma: the scope separator is a comma")
		}
	}
	switch c.ScopeSeparator {
	case " ", ",":
	default:
		p.Addf("scope_separator", `must be " " or ","`)
	}
	if c.RateLimitHeaders != nil {
		p.Add("rate_limit_headers", c.RateLimitHeaders.Validate())
	}
	for _, k := range slices.Sorted(maps.Keys(c.AuthParams)) {
		path := config.JoinPath("auth_params", k)
		switch {
		case !validParamName(k):
			p.Addf(path, "not a valid parameter name")
		case reservedAuthParams[k]:
			p.Addf(path, "is set by the authorization flow and cannot be configured")
		case strings.ContainsFunc(c.AuthParams[k], unicode.IsControl):
			p.Addf(path, "must not contain control characters")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(raw.ScopeDescriptions)) {
		path := config.JoinPath("scope_descriptions", k)
		d := raw.ScopeDescriptions[k]
		switch {
		case k == "" || strings.ContainsFunc(k, unicode.IsSpace):
			p.Addf(path, "must be a scope (no spaces)")
		case strings.TrimSpace(d) == "" || len(d) > maxScopeDescription || strings.ContainsFunc(d, unicode.IsControl):
			p.Addf(path, "must be a description of 1 to %d characters on one line", maxScopeDescription)
		}
	}
	if c.RefreshSkew < minRefreshSkew || c.RefreshSkew > maxRefreshSkew {
		p.Addf("refresh_skew", "must be between %s and %s", minRefreshSkew, maxRefreshSkew)
	}
	if c.RefreshJitter < 0 || c.RefreshJitter > maxRefreshJitter {
		p.Addf("refresh_jitter", "must be between 0 and %s", maxRefreshJitter)
	}
	if c.Timeout <= 0 || c.Timeout > maxTimeout {
		p.Addf("timeout", "must be positive and at most %s", maxTimeout)
	}
	if c.RefreshReuseGrace < 0 || c.RefreshReuseGrace > maxReuseGrace {
		p.Addf("refresh_reuse_grace", "must be between 0 (the provider has no grace period) and %s", maxReuseGrace)
	}
}

// checkEndpoint returns what is wrong with an endpoint URL, or "". An
// endpoint is https, or http on a loopback address; it carries no user
// information (credentials belong in the client secret) and no fragment.
func checkEndpoint(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return "must be an absolute URL"
	}
	if u.User != nil {
		return "must not contain user information"
	}
	if u.Fragment != "" {
		return "must not have a fragment"
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); (ip != nil && ip.IsLoopback()) || h == "localhost" {
			return ""
		}
		return "must be https (http is allowed only on loopback addresses)"
	}
	return "must be an https URL"
}

// checkVaultRef returns what is wrong with a "path#field" reference, or "".
func checkVaultRef(ref string) string {
	path, field, ok := strings.Cut(ref, "#")
	switch {
	case !ok:
		return `must be "path#field"`
	case path == "" || field == "":
		return `must be "path#field" with both parts non-empty`
	case strings.Contains(field, "#"):
		return `must contain one "#"`
	case strings.ContainsFunc(ref, func(r rune) bool { return r <= ' ' || r > '~' }):
		return "must be printable ASCII without spaces"
	}
	return ""
}

// ErrEmptySecret means a client secret file holds nothing but white space.
var ErrEmptySecret = errors.New("client secret is empty")

// ReadSecretFile reads a client secret from path, ignoring surrounding white
// space (a trailing newline, mostly). Errors name the path, never the
// content.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read client secret: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", fmt.Errorf("read client secret %s: %w", path, err)
	}
	if len(data) > maxSecretFileSize {
		return "", fmt.Errorf("read client secret %s: larger than %d bytes", path, maxSecretFileSize)
	}
	secret := strings.TrimSpace(string(data))
	clear(data)
	if secret == "" {
		return "", fmt.Errorf("read client secret %s: %w", path, ErrEmptySecret)
	}
	return secret, nil
}

// validateMCP reports every problem of an MCP server's configuration: its
// URL, what discovery fills in (and so must not be configured), and an
// operator's client when one is named.
func (c ProviderConfig) validateMCP() error {
	var p config.Problems
	if _, err := CanonicalResource(c.MCPServer); err != nil {
		p.Addf("mcp_server", "%v", err)
	}
	for _, f := range []struct{ key, val string }{
		{"token_url", c.TokenURL}, {"authorization_url", c.AuthorizationURL},
		{"revocation_url", c.RevocationURL}, {"userinfo_url", c.UserinfoURL},
		{"preset", c.Preset}, {"tenant", c.Tenant}, {"account_field", c.AccountField},
	} {
		if f.val != "" {
			p.Addf(f.key, "must not be set with mcp_server: the MCP server's authorization server is discovered")
		}
	}
	if c.Exchange != nil {
		p.Addf("exchange", "must not be set with mcp_server")
	}
	if c.PKCE != nil && !*c.PKCE {
		p.Addf("pkce", "must not be false with mcp_server: the MCP authorization specification requires PKCE")
	}
	secret := c.ClientSecretFile != "" || c.ClientSecretVault != ""
	switch {
	case c.ClientID == "" && (secret || c.AuthStyle != ""):
		p.Addf("client_id", "required with a client secret or auth_style (without all three, a client is registered dynamically)")
	case c.ClientSecretFile != "" && c.ClientSecretVault != "":
		p.Addf("client_secret_vault", "must not be set together with client_secret_file")
	case c.ClientSecretVault != "":
		if msg := checkVaultRef(c.ClientSecretVault); msg != "" {
			p.Addf("client_secret_vault", "%s", msg)
		}
	}
	switch {
	case !secret && c.AuthStyle != "" && c.ClientID != "":
		p.Addf("auth_style", "must be empty for a client without a secret (a public client)")
	case secret && c.AuthStyle == "":
		p.Addf("auth_style", "required: %q (client_secret_basic) or %q (client_secret_post)", AuthStyleHeader, AuthStyleParams)
	case secret && c.AuthStyle != AuthStyleHeader && c.AuthStyle != AuthStyleParams:
		p.Addf("auth_style", "must be %q or %q", AuthStyleHeader, AuthStyleParams)
	}
	r, _ := c.Resolve() // without a preset or placeholders nothing can fail
	r.validateShared(&p, c)
	return p.Err()
}
