package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Client authentication methods of a Registration (RFC 7591 section 2,
// token_endpoint_auth_method).
const (
	AuthMethodBasic = "client_secret_basic"
	AuthMethodPost  = "client_secret_post"
	AuthMethodNone  = "none"
)

// Registration is what the connect server learnt and registered to connect
// people to one MCP server by its URL (docs/design.md#connecting-an-mcp-server-by-its-url):
// the authorization server it found by discovery (RFC 9728, then RFC 8414
// or OpenID Connect discovery) and the OAuth client it uses there, either
// registered dynamically (RFC 7591) or configured by the operator. There is
// one per MCP server, keyed by its provider name; the sidecars read it to
// refresh that server's grants.
//
// ClientSecret is protected at rest as grant tokens are (sealed by the
// embedded store, Transit ciphertext in Vault with the envelope on), and
// every human-facing rendering redacts it.
type Registration struct {
	// Provider is the provider name the operator gave the MCP server.
	Provider string
	// Resource is the MCP server's canonical URL, the RFC 8707 resource
	// indicator its tokens are requested for.
	Resource string
	// Issuer is the authorization server's issuer identifier, as its
	// metadata names it.
	Issuer string
	// AuthorizationEndpoint, TokenEndpoint, RevocationEndpoint (empty when
	// the server has none) and RegistrationEndpoint (empty when it offers
	// no dynamic registration) are from the authorization server's
	// metadata.
	AuthorizationEndpoint string
	TokenEndpoint         string
	RevocationEndpoint    string
	RegistrationEndpoint  string
	// Scopes are requested when a person connects (empty: no scope
	// parameter).
	Scopes []string
	// ClientID is the client's id at the authorization server.
	ClientID string
	// ClientSecret is the client's secret; empty for a public client
	// (AuthMethod "none") and for a client the operator configured, whose
	// secret stays in the configuration.
	ClientSecret string
	// AuthMethod is how the client authenticates at the token endpoint:
	// AuthMethodBasic, AuthMethodPost or AuthMethodNone.
	AuthMethod string
	// SecretExpiresAt is when ClientSecret expires; zero when it does not.
	SecretExpiresAt time.Time
	// RedirectURI is the redirect URI the client was registered with.
	RedirectURI string
	// Dynamic reports a client registered by onbehalf (RFC 7591) rather
	// than configured by the operator.
	Dynamic bool
	// RegisteredAt is when the client was registered (zero for a client
	// the operator configured) and DiscoveredAt when the metadata above was
	// last read.
	RegisteredAt time.Time
	DiscoveredAt time.Time
}

// RegistrationStore keeps one Registration per MCP server. Both stores
// implement it; the connect server writes registrations and the sidecars
// read them. Names are validated first, as for Store methods.
type RegistrationStore interface {
	// Registration returns the registration of provider with its Version,
	// or an error wrapping ErrNotFound when there is none. A registration
	// whose sealed secret cannot be opened yields an error wrapping
	// ErrDecrypt and is left in place.
	Registration(ctx context.Context, provider string) (*Registration, Version, error)
	// PutRegistration writes r if the stored Version equals cas (0: r must
	// not exist yet) and returns the new Version; on a mismatch it returns
	// an error wrapping ErrConflict and changes nothing.
	PutRegistration(ctx context.Context, r *Registration, cas Version) (Version, error)
	// DeleteRegistration removes the registration of provider, so that a
	// later PutRegistration with cas 0 succeeds, or returns an error
	// wrapping ErrNotFound when there is none.
	DeleteRegistration(ctx context.Context, provider string) error
}

// maxRegistrationField bounds each URL, id and secret of a registration:
// they come from another server's answers, and a store entry must stay
// small.
const maxRegistrationField = 2048

// ValidateRegistration checks what every store checks before writing r:
// a valid provider name, a known authentication method, bounded printable
// fields and scopes.
func ValidateRegistration(r *Registration) error {
	if r == nil {
		return fmt.Errorf("%w: nil registration", ErrInvalidArgument)
	}
	if err := ValidateProvider(r.Provider); err != nil {
		return err
	}
	switch r.AuthMethod {
	case AuthMethodBasic, AuthMethodPost, AuthMethodNone:
	default:
		return fmt.Errorf("%w: registration auth method must be %s, %s or %s", ErrInvalidArgument, AuthMethodBasic, AuthMethodPost, AuthMethodNone)
	}
	for _, f := range []struct{ name, v string }{
		{"resource", r.Resource}, {"issuer", r.Issuer}, {"token endpoint", r.TokenEndpoint},
		{"authorization endpoint", r.AuthorizationEndpoint}, {"client id", r.ClientID},
	} {
		if f.v == "" {
			return fmt.Errorf("%w: registration %s is required", ErrInvalidArgument, f.name)
		}
	}
	fields := []string{r.Resource, r.Issuer, r.AuthorizationEndpoint, r.TokenEndpoint, r.RevocationEndpoint,
		r.RegistrationEndpoint, r.ClientID, r.ClientSecret, r.RedirectURI}
	fields = append(fields, r.Scopes...)
	for _, v := range fields {
		if len(v) > maxRegistrationField || strings.ContainsFunc(v, func(c rune) bool { return c < ' ' || c == 0x7f }) {
			return fmt.Errorf("%w: registration fields must be at most %d characters without control characters", ErrInvalidArgument, maxRegistrationField)
		}
	}
	for _, s := range r.Scopes {
		if s == "" || strings.ContainsRune(s, ' ') {
			return fmt.Errorf("%w: registration scopes must be non-empty scope tokens", ErrInvalidArgument)
		}
	}
	return nil
}

// Clone returns a deep copy of r (nil for nil).
func (r *Registration) Clone() *Registration {
	if r == nil {
		return nil
	}
	c := *r
	c.Scopes = slices.Clone(r.Scopes)
	return &c
}

// String describes r with the client secret redacted.
func (r Registration) String() string {
	return fmt.Sprintf("Registration{%s resource=%s issuer=%s client_id=%s client_secret=%s auth_method=%s dynamic=%t}",
		r.Provider, r.Resource, r.Issuer, r.ClientID, redact(r.ClientSecret), r.AuthMethod, r.Dynamic)
}

// Format implements fmt.Formatter so that every verb goes through String.
func (r Registration) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte(r.String()))
}

// RegistrationRecord is the stored form of a Registration, shared by both
// stores: the fields by their RFC names, with the client secret in the
// store's own encoding (a JSON string of base64 sealed bytes in the
// embedded store; a plain string or Transit ciphertext in Vault). It holds
// a secret and is never logged.
type RegistrationRecord struct {
	// Format and Version are the embedded store's (Vault keeps versions
	// in its metadata).
	Format                int             `json:"format,omitempty"`
	Version               Version         `json:"version,omitempty"`
	Provider              string          `json:"provider"`
	Resource              string          `json:"resource"`
	Issuer                string          `json:"issuer"`
	AuthorizationEndpoint string          `json:"authorization_endpoint"`
	TokenEndpoint         string          `json:"token_endpoint"`
	RevocationEndpoint    string          `json:"revocation_endpoint,omitempty"`
	RegistrationEndpoint  string          `json:"registration_endpoint,omitempty"`
	Scopes                []string        `json:"scopes,omitempty"`
	ClientID              string          `json:"client_id"`
	ClientSecret          json.RawMessage `json:"client_secret,omitempty"`
	AuthMethod            string          `json:"token_endpoint_auth_method"`
	SecretExpiresAt       time.Time       `json:"client_secret_expires_at,omitzero"`
	RedirectURI           string          `json:"redirect_uri,omitempty"`
	Dynamic               bool            `json:"dynamic,omitempty"`
	RegisteredAt          time.Time       `json:"registered_at,omitzero"`
	DiscoveredAt          time.Time       `json:"discovered_at,omitzero"`
	// Deleted marks the Vault store's tombstone of a deleted registration.
	Deleted bool `json:"deleted,omitempty"`
}

// NewRegistrationRecord returns the record of r without the secret and
// without header: the caller encodes the secret and, for the embedded
// store, fills the header.
func NewRegistrationRecord(r *Registration) *RegistrationRecord {
	return &RegistrationRecord{
		Provider: r.Provider, Resource: r.Resource, Issuer: r.Issuer,
		AuthorizationEndpoint: r.AuthorizationEndpoint, TokenEndpoint: r.TokenEndpoint,
		RevocationEndpoint: r.RevocationEndpoint, RegistrationEndpoint: r.RegistrationEndpoint,
		Scopes: slices.Clone(r.Scopes), ClientID: r.ClientID, AuthMethod: r.AuthMethod,
		SecretExpiresAt: r.SecretExpiresAt.UTC(), RedirectURI: r.RedirectURI, Dynamic: r.Dynamic,
		RegisteredAt: r.RegisteredAt.UTC(), DiscoveredAt: r.DiscoveredAt.UTC(),
	}
}

// RegistrationWithoutSecret returns the record's registration with a blank
// secret (the caller decodes it).
func (rec *RegistrationRecord) RegistrationWithoutSecret() *Registration {
	return &Registration{
		Provider: rec.Provider, Resource: rec.Resource, Issuer: rec.Issuer,
		AuthorizationEndpoint: rec.AuthorizationEndpoint, TokenEndpoint: rec.TokenEndpoint,
		RevocationEndpoint: rec.RevocationEndpoint, RegistrationEndpoint: rec.RegistrationEndpoint,
		Scopes: slices.Clone(rec.Scopes), ClientID: rec.ClientID, AuthMethod: rec.AuthMethod,
		SecretExpiresAt: rec.SecretExpiresAt, RedirectURI: rec.RedirectURI, Dynamic: rec.Dynamic,
		RegisteredAt: rec.RegisteredAt, DiscoveredAt: rec.DiscoveredAt,
	}
}
