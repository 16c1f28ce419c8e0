package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// MCP servers' client registrations live beside the grants:
//
//	<mount>/data/<prefix>/registrations/<provider>
//
// holding the discovered endpoints, the client id and the client secret
// (Transit ciphertext with the envelope on, derived for the provider and
// the field "registration_client_secret"). The connect server writes them;
// sidecars only read them. Like grants, they are deleted by a tombstone and
// the destruction of the older versions, never by deleting metadata.

var _ store.RegistrationStore = (*Store)(nil)

// registrationSecretField is the Transit field of a client secret; the
// derivation context has no user (grants always have one), so it cannot
// be confused with a token's.
const registrationSecretField = "registration_client_secret"

// registrationKey is the entry name of a registration; provider names are
// validated before it is built.
func registrationKey(provider string) string { return "registrations/" + provider }

// decodeRegistration decodes a present entry; ok is false for a tombstone.
// The error never quotes the data, which holds a secret.
func decodeRegistration(e kvEntry) (rec *store.RegistrationRecord, ok bool, err error) {
	if e.data == nil {
		return nil, false, nil
	}
	rec = new(store.RegistrationRecord)
	if err := json.Unmarshal(e.data, rec); err != nil {
		return nil, false, errors.New("decode registration: corrupt entry")
	}
	if rec.Deleted {
		return nil, false, nil
	}
	return rec, true, nil
}

// Registration implements store.RegistrationStore.
func (s *Store) Registration(ctx context.Context, provider string) (*store.Registration, store.Version, error) {
	if err := store.ValidateProvider(provider); err != nil {
		return nil, 0, fmt.Errorf("get registration: %w", err)
	}
	op := "get registration " + provider
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	e, err := c.readKV(ctx, s.kvPath("data", registrationKey(provider)))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	rec, ok, err := decodeRegistration(e)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	if !ok {
		return nil, 0, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	r := rec.RegistrationWithoutSecret()
	r.Provider = provider
	if s.transit == nil {
		if r.ClientSecret, err = decodePlainToken(rec.ClientSecret); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", op, err)
		}
		if strings.HasPrefix(r.ClientSecret, ciphertextPrefix) {
			return nil, 0, fmt.Errorf("%s: %w: the client secret is transit ciphertext but transit is disabled", op, store.ErrDecrypt)
		}
		return r, store.Version(e.version), nil
	}
	ct, err := decodeStringToken(rec.ClientSecret)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: client secret: %w", op, err)
	}
	plain, err := s.transit.decrypt(ctx, c, provider, "", []sealedField{{registrationSecretField, ct}})
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	r.ClientSecret = plain[0]
	return r, store.Version(e.version), nil
}

// PutRegistration implements store.RegistrationStore with the semantics of
// Put: a tombstone counts as missing, and the write is a KV CAS on the
// version read.
func (s *Store) PutRegistration(ctx context.Context, r *store.Registration, cas store.Version) (store.Version, error) {
	if err := store.ValidateRegistration(r); err != nil {
		return 0, fmt.Errorf("put registration: %w", err)
	}
	op := "put registration " + r.Provider
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	rec := store.NewRegistrationRecord(r)
	if s.transit == nil {
		rec.ClientSecret = encodePlainToken(r.ClientSecret)
	} else {
		ct, err := s.transit.encrypt(ctx, c, r.Provider, "", []sealedField{{registrationSecretField, r.ClientSecret}})
		if err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		rec.ClientSecret, _ = json.Marshal(ct[0])
	}
	return c.putCAS(ctx, op, s.kvPath("data", registrationKey(r.Provider)), "registration", cas, rec, func(e kvEntry) (bool, error) {
		_, live, err := decodeRegistration(e)
		return live, err
	})
}

// DeleteRegistration implements store.RegistrationStore as Delete does for
// grants: a tombstone by CAS, then the destruction of every older version,
// which hold the client secret.
func (s *Store) DeleteRegistration(ctx context.Context, provider string) error {
	if err := store.ValidateProvider(provider); err != nil {
		return fmt.Errorf("delete registration: %w", err)
	}
	return s.deleteEntry(ctx, "delete registration "+provider, registrationKey(provider), "registration", func(e kvEntry) (bool, error) {
		_, live, err := decodeRegistration(e)
		return live, err
	})
}
