package identity

import (
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Subject sources: where a verified identity came from (Subject.Source, the
// policy input's subject.source, the audit record's identity_source).
const (
	// SourceOrchestrator is an assertion minted by an orchestrator with a
	// key this sidecar is configured with (the keys, jwks_url and issuers
	// of the identity section).
	SourceOrchestrator = "orchestrator"
	// SourceIdP is a token issued by an OpenID Connect provider listed
	// under identity.idps: an ID token, an RFC 9068 access token or an
	// ID-JAG.
	SourceIdP = "idp"
)

// Token types (the JOSE typ header) an IdP token may declare. RFC 8725
// section 3.11 asks verifiers to check them, so that a token minted for one
// purpose cannot be replayed as another.
const (
	// TypeJWT is an OpenID Connect ID token's usual typ (or no typ at all).
	TypeJWT = "JWT"
	// TypeAccessToken is an RFC 9068 JWT access token.
	TypeAccessToken = "at+jwt"
	// TypeIDJAG is an Identity Assertion JWT Authorization Grant
	// (draft-ietf-oauth-identity-assertion-authz-grant).
	TypeIDJAG = "oauth-id-jag+jwt"
)

// knownTokenTypes are the typ values token_types may list.
var knownTokenTypes = []string{TypeJWT, TypeAccessToken, TypeIDJAG}

// discoveryPath is where an OpenID Connect issuer publishes its metadata
// (OpenID Connect Discovery 1.0, section 4).
const discoveryPath = "/.well-known/openid-configuration"

// Defaults and bounds of an IdP source.
const (
	// defaultIdPMaxLifetime is the longest exp-iat accepted from an IdP
	// when none is configured. IdPs choose the lifetime, not the sidecar:
	// ID tokens live an hour at Google, Okta and Entra ID, and Entra ID's
	// access tokens 60 to 90 minutes.
	defaultIdPMaxLifetime = 90 * time.Minute
	// maxIdPMaxLifetime caps max_lifetime for IdP tokens: a day covers the
	// longest lifetime IdPs let administrators set for access tokens.
	maxIdPMaxLifetime = 24 * time.Hour
	// maxClaimPath bounds a claim path's depth (act.sub is two).
	maxClaimPath = 4
)

// IdPConfig is one OpenID Connect issuer whose tokens name the acting user
// directly, side by side with the orchestrator's assertions. Its keys come
// from the issuer's discovery document (jwks_uri) or from JWKSURL. The zero
// value is not usable; the config decoder starts each entry from
// SetDefaults.
type IdPConfig struct {
	// Issuer is the exact iss of the tokens, and the base of the discovery
	// URL (Issuer + /.well-known/openid-configuration). Required.
	Issuer string `yaml:"issuer"`
	// DiscoveryURL replaces the discovery URL derived from Issuer. The
	// document's issuer must still equal Issuer.
	DiscoveryURL string `yaml:"discovery_url"`
	// JWKSURL names the key set directly; discovery is then not used.
	JWKSURL string `yaml:"jwks_url"`
	// CAFile is an extra PEM CA bundle trusted for the discovery and JWKS
	// URLs, in addition to the system roots.
	CAFile string `yaml:"ca_file"`
	// Audiences are the accepted aud values; a token's aud must contain
	// one. For ID tokens this is the client id the token was issued to,
	// for RFC 9068 access tokens the resource. Required.
	Audiences []string `yaml:"audiences"`
	// TokenTypes are the accepted typ headers: JWT (ID tokens; a token
	// without typ counts as JWT), at+jwt (RFC 9068 access tokens) and
	// oauth-id-jag+jwt (ID-JAGs). Compared case-insensitively, with or
	// without an "application/" prefix.
	TokenTypes []string `yaml:"token_types"`
	// Algorithms is the alg allow-list for this issuer (asymmetric only).
	Algorithms []string `yaml:"algorithms"`
	// UserClaim is the claim naming the user: sub (the default), email,
	// oid, preferred_username, upn, or a dotted path into an object claim.
	// Its value must be a non-empty string.
	UserClaim string `yaml:"user_claim"`
	// AgentClaim is the claim naming the agent: act.sub (RFC 8693 section
	// 4.1, the default), azp or client_id. Empty means no agent claim.
	AgentClaim string `yaml:"agent_claim"`
	// RequiredClaims must be present (not null) in every token.
	RequiredClaims []string `yaml:"required_claims"`
	// JWKSRefresh, JWKSUnknownKIDInterval, Leeway and MaxLifetime mean
	// what they mean for the orchestrator's assertions.
	JWKSRefresh            time.Duration `yaml:"jwks_refresh"`
	JWKSUnknownKIDInterval time.Duration `yaml:"jwks_unknown_kid_interval"`
	Leeway                 time.Duration `yaml:"leeway"`
	MaxLifetime            time.Duration `yaml:"max_lifetime"`
}

// DefaultIdPConfig returns an IdPConfig with every default filled in.
// Issuer and Audiences must still be set.
func DefaultIdPConfig() IdPConfig {
	return IdPConfig{
		TokenTypes:             []string{TypeJWT},
		Algorithms:             []string{"RS256", "ES256", "EdDSA"},
		UserClaim:              "sub",
		AgentClaim:             "act.sub",
		JWKSRefresh:            defaultJWKSRefresh,
		JWKSUnknownKIDInterval: defaultUnknownKIDInterval,
		Leeway:                 defaultLeeway,
		MaxLifetime:            defaultIdPMaxLifetime,
	}
}

// SetDefaults resets c to DefaultIdPConfig; the config decoder calls it for
// each entry of identity.idps.
func (c *IdPConfig) SetDefaults() { *c = DefaultIdPConfig() }

// discoveryURL returns where the issuer's metadata is read, or "" when the
// key set is configured directly.
func (c IdPConfig) discoveryURL() string {
	switch {
	case c.JWKSURL != "":
		return ""
	case c.DiscoveryURL != "":
		return c.DiscoveryURL
	}
	return strings.TrimSuffix(c.Issuer, "/") + discoveryPath
}

// Validate reports every problem with c, with paths relative to the entry.
func (c IdPConfig) Validate() error {
	var p config.Problems
	if c.Issuer == "" {
		p.Addf("issuer", "required")
	} else if msg := checkFetchURL(c.Issuer); msg != "" {
		p.Addf("issuer", "%s", msg)
	}
	if c.DiscoveryURL != "" {
		if msg := checkFetchURL(c.DiscoveryURL); msg != "" {
			p.Addf("discovery_url", "%s", msg)
		}
		if c.JWKSURL != "" {
			p.Addf("discovery_url", "set together with jwks_url; give one")
		}
	}
	if c.JWKSURL != "" {
		if msg := checkFetchURL(c.JWKSURL); msg != "" {
			p.Addf("jwks_url", "%s", msg)
		}
	}
	if len(c.Audiences) == 0 {
		p.Addf("audiences", "at least one audience is required")
	}
	for i, a := range c.Audiences {
		switch {
		case a == "":
			p.Addf(idx("audiences", i), "must not be empty")
		case slices.Index(c.Audiences, a) < i:
			p.Addf(idx("audiences", i), "duplicate audience %q", a)
		}
	}
	if len(c.TokenTypes) == 0 {
		p.Addf("token_types", "at least one token type is required")
	}
	for i, typ := range c.TokenTypes {
		switch n := normalizeType(typ); {
		case !slices.Contains(knownTokenTypes, n):
			p.Addf(idx("token_types", i), "unknown token type %q (want JWT, at+jwt or oauth-id-jag+jwt)", typ)
		case slices.IndexFunc(c.TokenTypes[:i], func(s string) bool { return normalizeType(s) == n }) >= 0:
			p.Addf(idx("token_types", i), "duplicate token type %s", typ)
		}
	}
	validateAlgorithms(&p, c.Algorithms, false)
	if c.UserClaim == "" {
		p.Addf("user_claim", "required")
	} else if !validClaimPath(c.UserClaim) {
		p.Addf("user_claim", "must be a claim name or a dotted path of claim names (act.sub)")
	}
	if c.AgentClaim != "" && !validClaimPath(c.AgentClaim) {
		p.Addf("agent_claim", "must be a claim name or a dotted path of claim names (act.sub)")
	}
	for i, name := range c.RequiredClaims {
		if !validClaimPath(name) {
			p.Addf(idx("required_claims", i), "must be a claim name or a dotted path of claim names")
		}
	}
	if c.JWKSRefresh < minJWKSInterval {
		p.Addf("jwks_refresh", "must be at least %s", minJWKSInterval)
	}
	if c.JWKSUnknownKIDInterval < minJWKSInterval {
		p.Addf("jwks_unknown_kid_interval", "must be at least %s", minJWKSInterval)
	}
	if c.Leeway < 0 || c.Leeway > maxLeeway {
		p.Addf("leeway", "must be between 0s and %s", maxLeeway)
	}
	if c.MaxLifetime <= 0 || c.MaxLifetime > maxIdPMaxLifetime {
		p.Addf("max_lifetime", "must be more than 0s and at most %s", maxIdPMaxLifetime)
	}
	if c.CAFile != "" {
		for _, u := range []string{c.Issuer, c.DiscoveryURL, c.JWKSURL} {
			if strings.HasPrefix(u, "http://") {
				p.Addf("ca_file", "only used with https URLs")
				break
			}
		}
	}
	return p.Err()
}

// checkFetchURL returns what is wrong with a URL the sidecar fetches keys
// or metadata from, or "". It is https, or http on a loopback address
// (local tests); it carries no credentials, query or fragment.
func checkFetchURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "":
		return "must be an absolute URL"
	case u.User != nil:
		return "must not carry credentials"
	case u.Fragment != "" || u.RawQuery != "":
		return "must not have a query or fragment"
	case u.Scheme == "https":
		return ""
	case u.Scheme == "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); (ip != nil && ip.IsLoopback()) || h == "localhost" {
			return ""
		}
		return "must be https (http is allowed only on loopback addresses)"
	}
	return "must be an https URL"
}

// validClaimPath reports whether s is a claim name or a dotted path of at
// most maxClaimPath non-empty names.
func validClaimPath(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) > maxClaimPath {
		return false
	}
	for _, part := range parts {
		if part == "" || strings.ContainsFunc(part, func(r rune) bool { return r <= ' ' || r > '~' }) {
			return false
		}
	}
	return true
}

// normalizeType returns a typ value as token_types compares it: without an
// "application/" prefix (RFC 7515 section 4.1.9 lets it be left out) and in
// lower case, except that the ID token's "JWT" keeps its usual spelling.
func normalizeType(typ string) string {
	t := strings.ToLower(typ)
	t = strings.TrimPrefix(t, "application/")
	if t == "jwt" {
		return TypeJWT
	}
	return t
}
