package store

import (
	"encoding/json"
	"slices"
	"time"
)

// Record is the serialised form of a grant, shared by the embedded store
// and the Vault store: the grant's fields (the names of docs/design.md's
// store layout) with the two tokens in the store's own encoding.
//
// The embedded store fills the header (Format, Version, Provider, User)
// and stores each token as a JSON string of base64 sealed bytes; the Vault
// store leaves the header empty, stores a token as a JSON string (plain or
// Transit ciphertext) or {"base64": …}, and marks a deleted grant with
// Deleted. Every header field and Deleted are omitted when empty, so both
// stores write exactly the bytes they wrote before the type was shared and
// every stored grant still reads (TestRecordWireFormat holds records
// written by the earlier code).
//
// A Record holds tokens (sealed or not): it is never logged or quoted in
// errors.
type Record struct {
	// Format is the embedded store's layout number.
	Format int `json:"format,omitempty"`
	// Version is the embedded store's version of the entry (Vault keeps
	// versions in its metadata instead).
	Version  Version `json:"version,omitempty"`
	Provider string  `json:"provider,omitempty"`
	User     string  `json:"user,omitempty"`
	// AccessToken and RefreshToken are the tokens in the store's encoding.
	AccessToken     json.RawMessage `json:"access_token"`
	RefreshToken    json.RawMessage `json:"refresh_token"`
	TokenType       string          `json:"token_type"`
	Expiry          time.Time       `json:"expiry"`
	Scopes          []string        `json:"scopes"`
	Status          Status          `json:"status"`
	ConnectedAt     time.Time       `json:"connected_at"`
	ProviderAccount string          `json:"provider_account"`
	Generation      int64           `json:"generation"`
	// IssuedAt was added later; it is omitted when zero, so a grant that
	// does not know it is written as before.
	IssuedAt time.Time `json:"issued_at,omitzero"`
	// Deleted marks the Vault store's tombstone of a deleted grant.
	Deleted bool `json:"deleted,omitempty"`
}

// NewRecord returns the record of g without tokens and without header: the
// caller encodes the tokens and, for the embedded store, fills the header.
func NewRecord(g *Grant) *Record {
	return &Record{
		TokenType:       g.TokenType,
		Expiry:          g.Expiry,
		Scopes:          slices.Clone(g.Scopes),
		Status:          g.Status,
		ConnectedAt:     g.ConnectedAt,
		ProviderAccount: g.ProviderAccount,
		Generation:      g.Generation,
		IssuedAt:        g.IssuedAt,
	}
}

// GrantWithoutTokens returns the record's grant of user at provider with
// blank tokens (the caller decodes them).
func (r *Record) GrantWithoutTokens(provider, user string) *Grant {
	return &Grant{
		Provider:        provider,
		User:            user,
		TokenType:       r.TokenType,
		Expiry:          r.Expiry,
		Scopes:          r.Scopes,
		Status:          r.Status,
		ConnectedAt:     r.ConnectedAt,
		ProviderAccount: r.ProviderAccount,
		Generation:      r.Generation,
		IssuedAt:        r.IssuedAt,
	}
}
