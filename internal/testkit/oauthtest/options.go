package oauthtest

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Defaults and limits of the server.
const (
	// DefaultAccessTokenTTL is the access-token lifetime when Options leaves it
	// zero: one hour, the common choice of public providers.
	DefaultAccessTokenTTL = time.Hour

	// DefaultAddr is where the server listens when Options leaves Addr empty:
	// a free port on the IPv4 loopback.
	DefaultAddr = "127.0.0.1:0"

	// authorizeCodeTTL bounds how long an authorization code may wait before
	// it is exchanged. RFC 6749 section 4.1.2 recommends at most ten minutes.
	authorizeCodeTTL = 10 * time.Minute

	// maxUserLen bounds user names accepted at the consent step; user ids in
	// onbehalf are short identifiers, not free text.
	maxUserLen = 128

	// minSecretLen is the shortest client secret accepted. Secrets are
	// compared through SHA-256 (see secretHasher), which is only sound for
	// secrets that are not guessable.
	minSecretLen = 8
)

// userPattern is the character set accepted for user names at the consent
// step. It is deliberately narrow (what onbehalf accepts as a user id plus
// e-mail punctuation) because the name ends up in tokens' subject.
var userPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]*$`)

// Client is one OAuth client registered with the server.
type Client struct {
	// ID is the client_id.
	ID string
	// Secret is the client secret of a confidential client. It must be empty
	// when Public is true.
	Secret string
	// RedirectURIs are the exact redirect URIs the client may use. As RFC 8252
	// section 7.3 asks, an http URI on a loopback IP address matches any port
	// (register http://127.0.0.1/callback and use http://127.0.0.1:PORT/callback).
	RedirectURIs []string
	// Scopes are the scopes the client may request; they are matched exactly.
	// Empty means the client may request no scope at all.
	Scopes []string
	// Public marks a client without a secret (a native or browser app). Public
	// clients must use PKCE with S256.
	Public bool
}

// Options configure Start. The zero value of every field selects its
// default; the zero Options is valid but has no clients.
type Options struct {
	// Clients are the registered clients. More can be added with AddClient.
	Clients []Client
	// AccessTokenTTL is the access-token lifetime. Zero means
	// DefaultAccessTokenTTL.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is the refresh-token lifetime. Zero means refresh tokens
	// do not expire (as with most public providers); they still rotate on
	// every use.
	RefreshTokenTTL time.Duration
	// RefreshReuseGrace is how long a rotated refresh token is still
	// accepted after its first use, as Okta's grace period and Auth0's
	// reuse interval allow: within it, presenting the token again issues
	// new tokens instead of revoking the family (counted in
	// Stats.GraceReuses). Zero means no grace: any reuse revokes.
	RefreshReuseGrace time.Duration
	// RevokeAccessTokenOnRefresh makes a refresh also revoke the access token
	// issued together with the refresh token that was used (fosite's and
	// Hydra's behaviour). By default that access token stays valid until it
	// expires, as with Google, Microsoft or Slack.
	RevokeAccessTokenOnRefresh bool
	// Users maps the user names that may approve a consent to their display
	// names (the `name` of /userinfo). Nil accepts any well-formed user name
	// and uses it as its own display name.
	Users map[string]string
	// Issuer is the issuer identifier published in the authorization server
	// metadata. Empty means the server's URL.
	Issuer string
	// Addr is the TCP address to listen on. Empty means DefaultAddr. It must
	// be a loopback address: anyone who reaches the consent page can approve
	// as any user, so this server must never face a network.
	Addr string
	// Logger receives operational logs (never a token, code or secret). Nil
	// discards them.
	Logger *zap.Logger
	// Registration, when set, enables RFC 7591 dynamic client registration
	// at PathRegister (and names it in the metadata).
	Registration *Registration
	// Resources are the resource servers (RFC 8707 resource indicators,
	// such as an MCP server's URL) this server issues tokens for. A
	// `resource` parameter at the authorization endpoint must name one of
	// them; the token is then issued for it (IntrospectToken's Audience),
	// and a `resource` at the token endpoint must name one the grant was
	// issued for.
	Resources []string
}

// Validate reports every problem with o at once, as an errors.Join of
// *config.FieldError.
func (o Options) Validate() error {
	var p config.Problems
	if o.AccessTokenTTL < 0 {
		p.Addf("access_token_ttl", "must not be negative")
	}
	if o.RefreshTokenTTL < 0 {
		p.Addf("refresh_token_ttl", "must not be negative")
	}
	if o.RefreshReuseGrace < 0 {
		p.Addf("refresh_reuse_grace", "must not be negative")
	}
	if o.Issuer != "" {
		if u, err := url.Parse(o.Issuer); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			p.Addf("issuer", "must be an https URL without query or fragment")
		}
	}
	if o.Addr != "" {
		if err := checkLoopbackAddr(o.Addr); err != nil {
			p.Addf("addr", "%v", err)
		}
	}
	for i, r := range o.Resources {
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" {
			p.Addf(fmt.Sprintf("resources[%d]", i), "must be an absolute URI without a fragment")
		}
	}
	for name := range o.Users {
		if err := checkUser(name); err != nil {
			p.Addf(fmt.Sprintf("users[%q]", name), "%v", err)
		}
	}
	seen := make(map[string]bool, len(o.Clients))
	for i, c := range o.Clients {
		prefix := fmt.Sprintf("clients[%d]", i)
		p.Add(prefix, c.validate())
		if c.ID != "" && seen[c.ID] {
			p.Addf(prefix+".id", "duplicate client id %q", c.ID)
		}
		seen[c.ID] = true
	}
	return p.Err()
}

// validate reports the problems of one client with paths relative to it.
func (c Client) validate() error {
	var p config.Problems
	if c.ID == "" {
		p.Addf("id", "must not be empty")
	}
	switch {
	case c.Public && c.Secret != "":
		p.Addf("secret", "must be empty for a public client")
	case !c.Public && len(c.Secret) < minSecretLen:
		p.Addf("secret", "must be at least %d characters for a confidential client", minSecretLen)
	}
	if len(c.RedirectURIs) == 0 {
		p.Addf("redirect_uris", "must list at least one URI")
	}
	for i, raw := range c.RedirectURIs {
		if err := checkRedirectURI(raw); err != nil {
			p.Addf(fmt.Sprintf("redirect_uris[%d]", i), "%v", err)
		}
	}
	for i, s := range c.Scopes {
		if s == "" || slices.ContainsFunc([]rune(s), func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r > '~' }) {
			p.Addf(fmt.Sprintf("scopes[%d]", i), "must be a non-empty RFC 6749 scope token")
		}
	}
	return p.Err()
}

// checkRedirectURI accepts absolute https URIs and http URIs on loopback
// hosts, without fragment (RFC 6749 section 3.1.2).
func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("must be an absolute URL")
	}
	if u.Fragment != "" {
		return fmt.Errorf("must not have a fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); (ip != nil && ip.IsLoopback()) || h == "localhost" {
			return nil
		}
		return fmt.Errorf("http is only allowed on loopback hosts")
	}
	return fmt.Errorf("scheme must be https or http")
}

// checkLoopbackAddr accepts host:port where host is a loopback IP address
// or "localhost".
func checkLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port")
	}
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return nil
	}
	return fmt.Errorf("must be a loopback address")
}

// checkUser validates a user name offered at the consent step.
func checkUser(name string) error {
	if name == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(name) > maxUserLen {
		return fmt.Errorf("must be at most %d characters", maxUserLen)
	}
	if !userPattern.MatchString(name) {
		return fmt.Errorf("may contain only letters, digits and . _ @ + -")
	}
	return nil
}
