package connect

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Defaults and bounds of Config.
const (
	// DefaultListen is the address the server listens on when the
	// configuration names none: loopback, so that a fresh install is not
	// reachable from the network until someone decides it should be.
	// Its port is not the sidecar's (8080 proxy, 9090 admin), so both can
	// run from one configuration file on one machine.
	DefaultListen = "127.0.0.1:7080"
	// DefaultSessionKeyFile holds the cookie key when the configuration
	// names no file. The sidecar's configuration loader puts it beside the
	// grant store's key file, with the other generated local state.
	DefaultSessionKeyFile = "onbehalf-connect-session.key"
	// DefaultSessionTTL is how long a browser stays signed in: long enough
	// to connect a few apps and look at the list, short enough that a
	// forgotten browser tab does not stay a credential for days.
	DefaultSessionTTL = time.Hour
	// DefaultStateTTL bounds the time between leaving for the provider and
	// coming back: RFC 6749 section 4.1.2 recommends that authorization
	// codes live at most ten minutes, and the state need not outlive them.
	DefaultStateTTL = 10 * time.Minute
	// DefaultLinkAudience is the aud a connect link must carry. It differs
	// from any sidecar audience, so an agent's assertion is never accepted
	// as a connect link.
	DefaultLinkAudience = "onbehalf-connect"
	// DefaultLinkMaxLifetime is the longest exp-iat of a connect link. A
	// link is minted when the person is about to click it. Four minutes is
	// the longest lifetime for which single use holds exactly across
	// replicas: a link verifies for at most its lifetime plus twice the
	// clock leeway after its first use, and the store lease that records
	// the use lasts store.MaxLeaseTTL (5 minutes); see onceSet.
	DefaultLinkMaxLifetime = store.MaxLeaseTTL - 2*linkLeeway
	// DefaultUserClaim is the ID-token claim that names the user.
	DefaultUserClaim = "sub"
	// DefaultRetryInterval is the first wait before a provider revocation
	// that failed transiently is tried again; later waits double.
	DefaultRetryInterval = 30 * time.Second
	// DefaultRetryMaxAttempts bounds the retries of one provider revocation:
	// with doubling from 30s and the cap below, ten attempts span about
	// an hour and a half, which outlasts a typical provider incident.
	DefaultRetryMaxAttempts = 10

	// minSessionTTL and maxSessionTTL bound session_ttl.
	minSessionTTL = time.Minute
	maxSessionTTL = 24 * time.Hour
	// minStateTTL and maxStateTTL bound state_ttl: a person needs a minute
	// or more at the provider's consent page (sign-in, MFA), and a state
	// older than half an hour is no longer part of a live flow.
	minStateTTL = time.Minute
	maxStateTTL = 30 * time.Minute
	// maxLinkMaxLifetime bounds links.max_lifetime: a link is a bearer
	// credential in a chat window.
	maxLinkMaxLifetime = 15 * time.Minute
	// linkLeeway is the clock-skew allowance for a link's exp, nbf and iat.
	linkLeeway = 30 * time.Second
	// minRetryInterval and maxRetryInterval bound revocation_retry.interval.
	minRetryInterval = time.Second
	maxRetryInterval = time.Hour
	// maxRetryAttempts bounds revocation_retry.max_attempts.
	maxRetryAttempts = 100
)

// Config configures the connect server: the `connect:` section of the
// configuration file. The providers, the grant store and the audit trail
// are configured in their own sections and passed to New as Deps. The zero
// value is not usable; start from DefaultConfig.
type Config struct {
	// Listen is the address the server listens on (host:port).
	Listen string `yaml:"listen"`
	// ExternalURL is the server's public base URL (scheme and host, no
	// path): https, or http on a loopback address for local use. Redirect
	// URIs are derived from it exactly: ExternalURL + "/callback" at the
	// providers, ExternalURL + "/login/callback" at the IdP.
	ExternalURL string `yaml:"external_url"`
	// SessionKeyFile holds the 32-byte key that seals cookies
	// (AES-256-GCM). It is created (mode 0600) when missing; replicas
	// behind one external URL must share it. Default: beside the grant
	// store's key file.
	SessionKeyFile string `yaml:"session_key_file"`
	// SessionTTL is how long a sign-in lasts.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// StateTTL is how long a started connection may take at the provider.
	StateTTL time.Duration `yaml:"state_ttl"`
	// Links accepts signed connect links minted by the orchestrator.
	// Enabled when it names an issuer.
	Links LinksConfig `yaml:"links"`
	// OIDC signs people in with the company identity provider. Enabled
	// when it names an issuer.
	OIDC OIDCConfig `yaml:"oidc"`
	// Admin configures the admin API.
	Admin AdminConfig `yaml:"admin"`
	// RevocationRetry configures the retries of provider revocations that
	// failed transiently.
	RevocationRetry RetryConfig `yaml:"revocation_retry"`
}

// LinksConfig configures connect links: signed, single-use, short-lived
// JWTs whose sub is the user and whose "provider" claim names the app to
// connect. They are verified like sidecar assertions (package identity),
// against their own audience and keys.
type LinksConfig struct {
	// Audience is the aud a link must carry.
	Audience string `yaml:"audience"`
	// Issuers lists the accepted iss values (the orchestrators).
	Issuers []string `yaml:"issuers"`
	// Keys are static verification keys.
	Keys []identity.KeyConfig `yaml:"keys"`
	// JWKSURL serves the issuers' keys.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSCAFile is an extra CA bundle for an https JWKSURL.
	JWKSCAFile string `yaml:"jwks_ca_file"`
	// MaxLifetime is the longest accepted exp-iat (default 4m, at most
	// 15m). Up to 4m a link is single-use exactly, across replicas too;
	// beyond, a replica that did not see the first use refuses a reuse only
	// in the first five minutes after it (see onceSet).
	MaxLifetime time.Duration `yaml:"max_lifetime"`
}

// Enabled reports whether links are configured.
func (c LinksConfig) Enabled() bool { return len(c.Issuers) > 0 }

// IdentityConfig returns the verifier configuration of links.
func (c LinksConfig) IdentityConfig() identity.Config {
	ic := identity.DefaultConfig()
	ic.Audience = c.Audience
	ic.Issuers = slices.Clone(c.Issuers)
	ic.Keys = slices.Clone(c.Keys)
	ic.JWKSURL = c.JWKSURL
	ic.JWKSCAFile = c.JWKSCAFile
	ic.MaxLifetime = c.MaxLifetime
	ic.Leeway = linkLeeway
	return ic
}

// OIDCConfig configures sign-in with the company identity provider
// (OpenID Connect, authorization code with PKCE).
type OIDCConfig struct {
	// Issuer is the IdP's issuer URL; its discovery document is read from
	// Issuer + "/.well-known/openid-configuration".
	Issuer string `yaml:"issuer"`
	// ClientID is this server's client at the IdP.
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret.
	ClientSecretFile string `yaml:"client_secret_file"`
	// Scopes are requested at sign-in; "openid" is always included.
	Scopes []string `yaml:"scopes"`
	// UserClaim is the ID-token claim whose value is the user id (the
	// same id the orchestrator puts in assertions' sub): "sub", or for
	// example "email". With "email", a token whose email_verified is false
	// is refused.
	UserClaim string `yaml:"user_claim"`
}

// Enabled reports whether OIDC sign-in is configured.
func (c OIDCConfig) Enabled() bool { return c.Issuer != "" }

// AdminConfig configures the admin API (/admin/api/...).
type AdminConfig struct {
	// TokenFile holds the bearer token of the admin API (at least 32
	// characters). Empty disables the admin API.
	TokenFile string `yaml:"token_file"`
}

// RetryConfig configures retries of provider revocations that failed
// transiently. Retries live in memory: see Revoker.
type RetryConfig struct {
	// Interval is the wait before the first retry; later waits double (up
	// to maxRetryDelay) with jitter.
	Interval time.Duration `yaml:"interval"`
	// MaxAttempts is the number of retries; 0 disables retrying.
	MaxAttempts int `yaml:"max_attempts"`
}

// DefaultConfig returns a Config with every default filled in.
// ExternalURL and links or OIDC must still be set.
func DefaultConfig() Config {
	return Config{
		Listen:         DefaultListen,
		SessionKeyFile: DefaultSessionKeyFile,
		SessionTTL:     DefaultSessionTTL,
		StateTTL:       DefaultStateTTL,
		Links: LinksConfig{
			Audience:    DefaultLinkAudience,
			MaxLifetime: DefaultLinkMaxLifetime,
		},
		OIDC: OIDCConfig{
			Scopes:    []string{"openid", "profile", "email"},
			UserClaim: DefaultUserClaim,
		},
		RevocationRetry: RetryConfig{
			Interval:    DefaultRetryInterval,
			MaxAttempts: DefaultRetryMaxAttempts,
		},
	}
}

// ResolvePaths makes every relative file path in c relative to dir.
func (c *Config) ResolvePaths(dir string) {
	if d, err := filepath.Abs(dir); err == nil {
		dir = d
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.SessionKeyFile)
	abs(&c.Links.JWKSCAFile)
	for i := range c.Links.Keys {
		abs(&c.Links.Keys[i].File)
	}
	abs(&c.OIDC.ClientSecretFile)
	abs(&c.Admin.TokenFile)
}

// Validate reports every problem with c at once, as an errors.Join of
// *config.FieldError with paths relative to the connect section. It reads
// no file.
func (c Config) Validate() error {
	var p config.Problems
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.Addf("listen", "must be host:port")
	}
	if c.ExternalURL == "" {
		p.Addf("external_url", "required: the public base URL people open, such as https://connect.example.com")
	} else if _, err := parseExternalURL(c.ExternalURL); err != nil {
		p.Addf("external_url", "%v", err)
	}
	if c.SessionKeyFile == "" {
		p.Addf("session_key_file", "required")
	}
	if c.SessionTTL < minSessionTTL || c.SessionTTL > maxSessionTTL {
		p.Addf("session_ttl", "must be between %s and %s", minSessionTTL, maxSessionTTL)
	}
	if c.StateTTL < minStateTTL || c.StateTTL > maxStateTTL {
		p.Addf("state_ttl", "must be between %s and %s", minStateTTL, maxStateTTL)
	}
	if !c.Links.Enabled() && !c.OIDC.Enabled() {
		p.Addf("", "links or oidc is required: people must arrive with a signed connect link or sign in with the identity provider")
	}
	if c.Links.Enabled() {
		p.Add("links", c.Links.validate())
	} else if len(c.Links.Keys) > 0 || c.Links.JWKSURL != "" {
		p.Addf("links.issuers", "required when links has keys or a jwks_url")
	}
	if c.OIDC.Enabled() {
		p.Add("oidc", c.OIDC.validate())
	} else if c.OIDC.ClientID != "" || c.OIDC.ClientSecretFile != "" {
		p.Addf("oidc.issuer", "required when oidc has a client")
	}
	if c.RevocationRetry.MaxAttempts < 0 || c.RevocationRetry.MaxAttempts > maxRetryAttempts {
		p.Addf("revocation_retry.max_attempts", "must be between 0 and %d", maxRetryAttempts)
	}
	if c.RevocationRetry.Interval < minRetryInterval || c.RevocationRetry.Interval > maxRetryInterval {
		p.Addf("revocation_retry.interval", "must be between %s and %s", minRetryInterval, maxRetryInterval)
	}
	return p.Err()
}

func (c LinksConfig) validate() error {
	var p config.Problems
	if c.MaxLifetime <= 0 || c.MaxLifetime > maxLinkMaxLifetime {
		p.Addf("max_lifetime", "must be more than 0s and at most %s: a connect link is a short-lived bearer credential", maxLinkMaxLifetime)
	}
	// Everything else is the identity verifier's own validation. Its
	// max_lifetime bound is wider than ours and already checked above.
	for _, e := range config.Flatten(c.IdentityConfig().Validate()) {
		if fe, ok := e.(*config.FieldError); ok && fe.Path == "max_lifetime" {
			continue
		}
		p.Add("", e)
	}
	return p.Err()
}

func (c OIDCConfig) validate() error {
	var p config.Problems
	if u, err := url.Parse(c.Issuer); err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		p.Addf("issuer", "must be an absolute URL without query or fragment")
	} else if !secureOrLoopback(u) {
		p.Addf("issuer", "must be https (http is allowed only on loopback addresses)")
	}
	if c.ClientID == "" {
		p.Addf("client_id", "required")
	}
	if c.ClientSecretFile == "" {
		p.Addf("client_secret_file", "required")
	}
	for i, s := range c.Scopes {
		if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r > '~' }) {
			p.Addf(fmt.Sprintf("scopes[%d]", i), "must be a non-empty scope token")
		}
	}
	if c.UserClaim == "" {
		p.Addf("user_claim", "required (for example sub or email)")
	}
	return p.Err()
}

// parseExternalURL checks an external URL and returns it without a
// trailing slash. It must be https, or http on a loopback address (browsers
// treat loopback as a secure context and tests run there); it has no path,
// query, fragment or user information, so that every derived URL and the
// cookie scope are exact.
func parseExternalURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("must be an absolute URL")
	}
	switch {
	case u.User != nil:
		return nil, fmt.Errorf("must not contain user information")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.ForceQuery:
		return nil, fmt.Errorf("must be scheme://host[:port] without path, query or fragment")
	case !secureOrLoopback(u):
		return nil, fmt.Errorf("must be https (http is allowed only on loopback addresses)")
	}
	return &url.URL{Scheme: u.Scheme, Host: strings.ToLower(u.Host)}, nil
}

// secureOrLoopback reports whether u is https, or http on a loopback host.
func secureOrLoopback(u *url.URL) bool {
	switch u.Scheme {
	case "https":
		return true
	case "http":
		return isLoopbackHost(u.Hostname())
	}
	return false
}

// isLoopbackHost reports whether host is a loopback IP address or
// "localhost".
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validProvider reports whether name is a valid provider name (see
// store.ValidateProvider); used for names taken from requests.
func validProvider(name string) bool { return store.ValidateProvider(name) == nil }
