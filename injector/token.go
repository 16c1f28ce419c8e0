package injector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/scrub"
)

var (
	// ErrGrantMissing means the user has not connected the provider.
	ErrGrantMissing = errors.New("no grant stored for this user and provider")
	// ErrReconnectRequired means the grant exists but can no longer produce
	// a token: it was marked reconnect_required, or it expired and cannot be
	// refreshed. The human must connect the provider again.
	ErrReconnectRequired = errors.New("grant must be reconnected")
	// ErrProviderUnavailable means the provider's token endpoint could not
	// be reached or failed transiently while a refresh was needed. The grant
	// is untouched.
	ErrProviderUnavailable = errors.New("provider token endpoint unavailable")
	// ErrProviderMisconfigured means the provider refused the sidecar's own
	// client credentials (invalid_client): an operator must act. User grants
	// are untouched.
	ErrProviderMisconfigured = errors.New("provider refused the client credentials")
	// ErrExchangeDenied means a token exchange was refused: the IdP would
	// not issue an identity assertion grant for this user and app, or the
	// app's authorization server would not accept it.
	ErrExchangeDenied = errors.New("token exchange refused")
	// ErrNoSubjectToken means a provider's tokens come from token exchange,
	// but the request's identity is not a token of the IdP that exchanges
	// them (an orchestrator assertion, or another IdP's token). It wraps
	// ErrExchangeDenied.
	ErrNoSubjectToken = fmt.Errorf("no token of the exchanging identity provider: %w", ErrExchangeDenied)
)

// Token sources, as Token.Source and the audit record's token_source say
// them.
const (
	// SourceGrant is a token from the user's stored grant (as stored, or
	// refreshed).
	SourceGrant = "grant"
	// SourceExchange is a token obtained by token exchange: an ID-JAG from
	// the IdP (RFC 8693), traded at the app's authorization server (RFC
	// 7523).
	SourceExchange = "exchange"
)

// expirySkew is how long before its expiry an access token stops being
// injected: a token that expires while the request is in flight would fail
// upstream with a confusing 401.
const expirySkew = 30 * time.Second

// Token is an access token ready to inject, with what the audit record
// needs to say about it. Its String method never prints the value.
type Token struct {
	Value      string
	Generation int64
	Expiry     time.Time
	// Source is SourceGrant or SourceExchange; "" means SourceGrant.
	Source string
	// Secrets are the grant's other secrets the sidecar holds (its
	// refresh token, the provider's client secret): never sent upstream,
	// but scrubbed from responses all the same.
	Secrets []string

	// derived, when set, keeps what every request that injects the token
	// would otherwise compute again from it. CachedSource sets it on the
	// tokens it holds, so it lives and goes with the cache entry (a
	// revoked token's scrub set and fingerprint go with it); copies of
	// one cached Token share it. Nil: computed on each call.
	derived *derived
}

// derived is what is computed from one token for each request, made once.
type derived struct {
	scrubOnce sync.Once
	scrub     *scrub.Set
	fpOnce    sync.Once
	fp        string
}

// ScrubSet returns the set of t's secrets (its value and Secrets) for
// scrubbing responses. A cached token's set is built once and shared (a
// scrub.Set is immutable).
func (t Token) ScrubSet() *scrub.Set {
	if t.derived == nil {
		return t.newScrubSet()
	}
	t.derived.scrubOnce.Do(func() { t.derived.scrub = t.newScrubSet() })
	return t.derived.scrub
}

func (t Token) newScrubSet() *scrub.Set {
	secrets := make([]string, 0, 1+len(t.Secrets))
	return scrub.New(append(append(secrets, t.Value), t.Secrets...)...)
}

// Fingerprint returns fingerprint(t.Value), the tag the audit record
// names the token by. A cached token's is computed once, by the first
// call: fingerprint must be the same keyed function at every call, as the
// sidecar's one audit fingerprint key is.
func (t Token) Fingerprint(fingerprint func(token string) string) string {
	if t.derived == nil {
		return fingerprint(t.Value)
	}
	t.derived.fpOnce.Do(func() { t.derived.fp = fingerprint(t.Value) })
	return t.derived.fp
}

// String returns a description without the token.
func (t Token) String() string {
	return fmt.Sprintf("Token{source: %s, generation: %d, expiry: %s, value: REDACTED}", t.Source, t.Generation, t.Expiry.Format(time.RFC3339))
}

// GoString is String, so %#v leaks nothing either.
func (t Token) GoString() string { return t.String() }

// StoreSource hands out the access token stored in a grant as is. It does
// not refresh: an expired token yields ErrReconnectRequired.
type StoreSource struct {
	store store.Store
	now   func() time.Time
}

// NewStoreSource returns a StoreSource reading from s.
func NewStoreSource(s store.Store) *StoreSource {
	return &StoreSource{store: s, now: time.Now}
}

// Token returns user's access token for provider.
func (s *StoreSource) Token(ctx context.Context, provider, user string) (Token, error) {
	g, _, err := s.store.Get(ctx, provider, user)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Token{}, fmt.Errorf("token %s/%s: %w", provider, user, ErrGrantMissing)
		}
		return Token{}, fmt.Errorf("token %s/%s: %w", provider, user, err)
	}
	if g.Status != store.StatusActive || g.AccessToken == "" {
		return Token{}, fmt.Errorf("token %s/%s: grant is %s: %w", provider, user, g.Status, ErrReconnectRequired)
	}
	if !g.Expiry.IsZero() && !s.now().Add(expirySkew).Before(g.Expiry) {
		return Token{}, fmt.Errorf("token %s/%s: access token expired: %w", provider, user, ErrReconnectRequired)
	}
	return Token{Value: g.AccessToken, Generation: g.Generation, Expiry: g.Expiry, Secrets: grantSecrets(g)}, nil
}

// grantSecrets returns the secrets of g other than its access token.
func grantSecrets(g *store.Grant) []string {
	if g.RefreshToken == "" {
		return nil
	}
	return []string{g.RefreshToken}
}
