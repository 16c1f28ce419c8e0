package connect

import (
	"context"
	"errors"
	"net/url"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// DefaultLinkTTL is the lifetime of a minted connect link when LinkOptions
// leaves it zero: enough to click it from a chat message, below
// DefaultLinkMaxLifetime.
const DefaultLinkTTL = 3 * time.Minute

// NewLinkVerifier returns the verifier of connect links configured by c,
// for Deps.LinkVerifier. With a JWKS URL it fetches the key set (bounded
// by ctx) and refreshes it until Close.
func NewLinkVerifier(ctx context.Context, c LinksConfig, opts ...identity.Option) (*identity.Verifier, error) {
	return identity.New(ctx, c.IdentityConfig(), opts...)
}

// LinkOptions describe a connect link to mint.
type LinkOptions struct {
	// Issuer is the link's iss (one of links.issuers). Required.
	Issuer string
	// Audience is the link's aud; empty means DefaultLinkAudience.
	Audience string
	// User is the person the link is for (sub): the user id the grant is
	// stored under. Required.
	User string
	// Provider names the app to connect. Required.
	Provider string
	// Agent, when set, names the agent or workflow that asks for the
	// connection (the act.sub claim); the confirmation page shows it.
	Agent string
	// Algorithm is the signing algorithm; empty means the natural one for
	// the key (see identity.MintOptions).
	Algorithm string
	// KeyID, when set, becomes the kid header.
	KeyID string
	// TTL is the link's lifetime; zero means DefaultLinkTTL.
	TTL time.Duration
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// MintLink signs a connect link with key (see identity.Mint for the key
// types): sub is the user, "provider" the app, act.sub the agent that asks,
// with a random jti that makes it single-use. Orchestrators without a JWT
// library can run `onbehalf connect link`, which prints the whole URL.
func MintLink(key any, o LinkOptions) (string, error) {
	if err := store.ValidateUser(o.User); err != nil {
		return "", errors.New("mint connect link: " + err.Error())
	}
	if err := store.ValidateProvider(o.Provider); err != nil {
		return "", errors.New("mint connect link: " + err.Error())
	}
	aud := o.Audience
	if aud == "" {
		aud = DefaultLinkAudience
	}
	ttl := o.TTL
	if ttl == 0 {
		ttl = DefaultLinkTTL
	}
	return identity.Mint(key, identity.MintOptions{
		Issuer:    o.Issuer,
		Audience:  aud,
		Subject:   o.User,
		Agent:     o.Agent,
		Algorithm: o.Algorithm,
		KeyID:     o.KeyID,
		TTL:       ttl,
		Claims:    map[string]any{linkClaimProvider: o.Provider},
		Now:       o.Now,
	})
}

// LinkURL returns the URL a person opens to connect provider with link:
// externalURL/connect/PROVIDER?link=LINK.
func LinkURL(externalURL, provider, link string) string {
	u, err := url.Parse(externalURL)
	if err != nil {
		return ""
	}
	u = u.JoinPath("connect", provider)
	u.RawQuery = url.Values{"link": {link}}.Encode()
	return u.String()
}
