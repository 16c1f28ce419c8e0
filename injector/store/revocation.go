package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Revocation is a provider revocation waiting for another attempt: the
// provider failed transiently after the grant was already deleted, so the
// grant's tokens exist nowhere else. It is kept in the store (tokens sealed
// like a grant's) so that a restart of the revoking process does not
// abandon it; it is deleted once the provider revoked the grant or the
// attempts ran out.
//
// Every human-facing rendering redacts the tokens, as Grant's do.
type Revocation struct {
	// ID names the entry: 32 lower-case hex digits (NewRevocationID).
	ID         string
	Provider   string
	User       string
	Generation int64
	// AccessToken and RefreshToken are the deleted grant's tokens.
	AccessToken  string
	RefreshToken string
	// Actor says who asked for the revocation ("user", "admin", "cli").
	Actor string
	// Fingerprint is the audit fingerprint of the access token.
	Fingerprint string
	// Attempt counts the retries made so far; Due is when the next one is.
	Attempt int
	Due     time.Time
	// Queued is when the revocation was first queued.
	Queued time.Time
}

// NewRevocationID returns a random revocation ID.
func NewRevocationID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("revocation id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// ValidateRevocationID checks that id is what NewRevocationID returns; a
// store builds keys and paths from it.
func ValidateRevocationID(id string) error {
	if len(id) != 32 {
		return fmt.Errorf("%w: revocation id must be 32 hex digits", ErrInvalidName)
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: revocation id must be 32 lower-case hex digits", ErrInvalidName)
		}
	}
	return nil
}

// ValidateRevocation checks what every store checks before writing r.
func ValidateRevocation(r *Revocation) error {
	if r == nil {
		return fmt.Errorf("%w: nil revocation", ErrInvalidArgument)
	}
	if err := ValidateRevocationID(r.ID); err != nil {
		return err
	}
	return validateNames(r.Provider, r.User)
}

// Clone returns a copy of r (nil for nil).
func (r *Revocation) Clone() *Revocation {
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// String describes r with tokens redacted.
func (r Revocation) String() string {
	return fmt.Sprintf("Revocation{%s %s/%s generation=%d attempt=%d access_token=%s refresh_token=%s}",
		r.ID, r.Provider, r.User, r.Generation, r.Attempt, redact(r.AccessToken), redact(r.RefreshToken))
}

// Format implements fmt.Formatter so that every verb goes through String.
func (r Revocation) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte(r.String()))
}
