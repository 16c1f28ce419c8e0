package oauth

import (
	"fmt"
	"slices"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Fallbacks: what a provider with token exchange does when the exchange
// does not produce a token.
const (
	// FallbackRefuse answers exchange_denied (or, when the IdP or the
	// app's authorization server is failing, provider_unavailable or
	// provider_misconfigured): the IdP is the only way to the app.
	FallbackRefuse = "refuse"
	// FallbackGrant uses the user's stored grant instead, as for a
	// provider without exchange. An IdP's refusal is then not final: a
	// user with a stored grant keeps access.
	FallbackGrant = "grant"
)

// ExchangeConfig makes a provider's access tokens come from token exchange
// instead of a stored grant (draft-ietf-oauth-identity-assertion-authz-grant):
// the IdP token the request presented is exchanged at the IdP for an
// Identity Assertion JWT Authorization Grant (RFC 8693), which the app's
// authorization server trades for an access token (RFC 7523 JWT bearer
// grant, with the provider's client_id and secret and at its token_url).
// The zero value is not usable; the config decoder starts from SetDefaults.
type ExchangeConfig struct {
	// Issuer is the IdP whose tokens are exchanged: the issuer of one of
	// the identity section's idps. Requests whose identity came from
	// anywhere else take the fallback. Required.
	Issuer string `yaml:"issuer"`
	// TokenURL is the IdP's token endpoint. Empty means the token_endpoint
	// of the IdP's discovery document.
	TokenURL string `yaml:"token_url"`
	// ClientID is the sidecar's client at the IdP: the client the
	// presented ID tokens were issued to (their aud). Required.
	ClientID string `yaml:"client_id"`
	// ClientSecretFile and ClientSecretVault give the client secret at the
	// IdP, exactly one of them, as for the provider's own secret.
	ClientSecretFile  string `yaml:"client_secret_file"`
	ClientSecretVault string `yaml:"client_secret_vault"`
	// AuthStyle is how the client authenticates at the IdP: "header" or
	// "params". Required.
	AuthStyle AuthStyle `yaml:"auth_style"`
	// Audience is the app's authorization server as the IdP knows it (its
	// issuer identifier): the audience of the ID-JAG. Required.
	Audience string `yaml:"audience"`
	// Resource is the app's resource (RFC 8707), when its authorization
	// server serves several.
	Resource string `yaml:"resource"`
	// Scopes are requested from the IdP and the app's authorization
	// server. Empty means the provider's scopes.
	Scopes []string `yaml:"scopes"`
	// Fallback is FallbackRefuse (the default) or FallbackGrant.
	Fallback string `yaml:"fallback"`
	// Timeout bounds each of the two token calls. Zero means the
	// provider's timeout.
	Timeout time.Duration `yaml:"timeout"`
}

// DefaultExchangeConfig returns an ExchangeConfig with the defaults filled
// in.
func DefaultExchangeConfig() ExchangeConfig {
	return ExchangeConfig{Fallback: FallbackRefuse}
}

// SetDefaults resets c to DefaultExchangeConfig; the config decoder calls
// it when a provider's exchange section appears.
func (c *ExchangeConfig) SetDefaults() { *c = DefaultExchangeConfig() }

// Validate reports every problem with c, with paths relative to the
// exchange section. Whether Issuer names a configured IdP is checked where
// both sections are known (the sidecar's configuration).
func (c ExchangeConfig) Validate() error {
	var p config.Problems
	if c.Issuer == "" {
		p.Addf("issuer", "required: the issuer of the identity provider whose tokens are exchanged")
	}
	if c.TokenURL != "" {
		if msg := checkEndpoint(c.TokenURL); msg != "" {
			p.Addf("token_url", "%s", msg)
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
	switch c.AuthStyle {
	case AuthStyleHeader, AuthStyleParams:
	case "":
		p.Addf("auth_style", "required: %q (client_secret_basic) or %q (client_secret_post)", AuthStyleHeader, AuthStyleParams)
	default:
		p.Addf("auth_style", "must be %q or %q", AuthStyleHeader, AuthStyleParams)
	}
	if c.Audience == "" {
		p.Addf("audience", "required: the app's authorization server (its issuer identifier)")
	}
	if c.Resource != "" {
		if msg := checkEndpoint(c.Resource); msg != "" {
			p.Addf("resource", "%s", msg)
		}
	}
	for i, s := range c.Scopes {
		if !validScope(s) {
			p.Addf(fmt.Sprintf("scopes[%d]", i), "must be a non-empty RFC 6749 scope token")
		} else if slices.Index(c.Scopes, s) < i {
			p.Addf(fmt.Sprintf("scopes[%d]", i), "duplicate scope %q", s)
		}
	}
	switch c.Fallback {
	case FallbackRefuse, FallbackGrant:
	default:
		p.Addf("fallback", "must be %q or %q", FallbackRefuse, FallbackGrant)
	}
	if c.Timeout < 0 || c.Timeout > maxTimeout {
		p.Addf("timeout", "must be between 0 (the provider's timeout) and %s", maxTimeout)
	}
	return p.Err()
}

// clone returns a copy of c sharing nothing with it.
func (c *ExchangeConfig) clone() *ExchangeConfig {
	if c == nil {
		return nil
	}
	r := *c
	r.Scopes = slices.Clone(c.Scopes)
	return &r
}
