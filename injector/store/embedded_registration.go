package store

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketRegistrations holds the MCP servers' client registrations, keyed by
// provider name.
var bucketRegistrations = []byte("registrations")

var _ RegistrationStore = (*Embedded)(nil)

func (r *RegistrationRecord) format() int { return r.Format }

// registrationAD binds a sealed client secret to its field and provider,
// so a ciphertext copied to another server's entry (or a grant's) does not
// open.
func registrationAD(provider string) []byte {
	return []byte("onbehalf/registration/v1\x00client_secret\x00" + provider)
}

// Registration implements RegistrationStore.
func (e *Embedded) Registration(ctx context.Context, provider string) (*Registration, Version, error) {
	if err := ValidateProvider(provider); err != nil {
		return nil, 0, fmt.Errorf("get registration: %w", err)
	}
	var rec RegistrationRecord
	err := e.withDB(ctx, false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRegistrations)
		if b == nil {
			return ErrNotFound
		}
		v := b.Get([]byte(provider))
		if v == nil {
			return ErrNotFound
		}
		return decodeRecord(v, &rec)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("get registration %s: %w", provider, err)
	}
	r := rec.RegistrationWithoutSecret()
	r.Provider = provider
	if r.ClientSecret, err = e.openToken(rec.ClientSecret, registrationAD(provider)); err != nil {
		return nil, 0, fmt.Errorf("get registration %s: client secret: %w", provider, err)
	}
	return r, rec.Version, nil
}

// PutRegistration implements RegistrationStore.
func (e *Embedded) PutRegistration(ctx context.Context, r *Registration, cas Version) (Version, error) {
	if err := ValidateRegistration(r); err != nil {
		return 0, fmt.Errorf("put registration: %w", err)
	}
	rec := NewRegistrationRecord(r)
	rec.Format = recordFormat
	sealed, err := e.sealer.seal(r.ClientSecret, registrationAD(r.Provider))
	if err != nil {
		return 0, fmt.Errorf("put registration %s: seal client secret: %w", r.Provider, err)
	}
	rec.ClientSecret = sealedToken(sealed)
	err = e.withDB(ctx, true, func(tx *bolt.Tx) error {
		return casPut(tx, bucketRegistrations, []byte(r.Provider), cas, func(v Version) ([]byte, error) {
			rec.Version = v
			return json.Marshal(rec)
		})
	})
	if err != nil {
		return 0, fmt.Errorf("put registration %s: %w", r.Provider, err)
	}
	return rec.Version, nil
}

// DeleteRegistration implements RegistrationStore.
func (e *Embedded) DeleteRegistration(ctx context.Context, provider string) error {
	if err := ValidateProvider(provider); err != nil {
		return fmt.Errorf("delete registration: %w", err)
	}
	err := e.withDB(ctx, true, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRegistrations)
		if b == nil || b.Get([]byte(provider)) == nil {
			return ErrNotFound
		}
		if err := b.Delete([]byte(provider)); err != nil {
			return fmt.Errorf("%w: delete: %w", ErrUnavailable, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete registration %s: %w", provider, err)
	}
	return nil
}
