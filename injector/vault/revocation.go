package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// revocationKey is the entry name of a queued provider revocation; ids are
// validated (32 hex digits) before it is built.
func revocationKey(id string) string { return "revocations/" + id }

// revocationRecord is the stored form of a store.Revocation. Tokens are
// encoded as a grant's (Transit ciphertext with the envelope on, derived
// for the grant's provider and user and the field "revocation_…").
type revocationRecord struct {
	ID           string          `json:"id"`
	Provider     string          `json:"provider"`
	User         string          `json:"user"`
	Generation   int64           `json:"generation"`
	AccessToken  json.RawMessage `json:"access_token"`
	RefreshToken json.RawMessage `json:"refresh_token"`
	Actor        string          `json:"actor"`
	Fingerprint  string          `json:"fingerprint"`
	Attempt      int             `json:"attempt"`
	Due          time.Time       `json:"due"`
	Queued       time.Time       `json:"queued"`
}

// Transit fields of a revocation's tokens: distinct from a grant's, so a
// ciphertext cannot be moved between the two.
const (
	revocationAccessField  = "revocation_access_token"
	revocationRefreshField = "revocation_refresh_token"
)

// PutRevocation implements store.Store.
func (s *Store) PutRevocation(ctx context.Context, r *store.Revocation) error {
	if err := store.ValidateRevocation(r); err != nil {
		return fmt.Errorf("put revocation: %w", err)
	}
	op := "put revocation " + r.ID
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	rec := revocationRecord{
		ID: r.ID, Provider: r.Provider, User: r.User, Generation: r.Generation,
		Actor: r.Actor, Fingerprint: r.Fingerprint, Attempt: r.Attempt, Due: r.Due, Queued: r.Queued,
	}
	if s.transit == nil {
		rec.AccessToken, rec.RefreshToken = encodePlainToken(r.AccessToken), encodePlainToken(r.RefreshToken)
	} else {
		ct, err := s.transit.encrypt(ctx, c, r.Provider, r.User, []sealedField{{revocationAccessField, r.AccessToken}, {revocationRefreshField, r.RefreshToken}})
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		rec.AccessToken, _ = json.Marshal(ct[0])
		rec.RefreshToken, _ = json.Marshal(ct[1])
	}
	path := s.kvPath("data", revocationKey(r.ID))
	for range maxCASAttempts {
		cur, err := c.readKV(ctx, path)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		_, err = c.writeKV(ctx, path, cur.version, rec)
		if errors.Is(err, errCASMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	return fmt.Errorf("%s: %w: entry kept changing", op, store.ErrConflict)
}

// ListRevocations implements store.Store: one metadata LIST and one read
// (plus a Transit decrypt) per entry.
func (s *Store) ListRevocations(ctx context.Context) ([]*store.Revocation, error) {
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	defer cancel()
	keys, err := c.listKV(ctx, s.kvPath("metadata", "revocations/"))
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	var out []*store.Revocation
	for _, id := range keys {
		if store.ValidateRevocationID(id) != nil {
			continue // written by something else
		}
		e, err := c.readKV(ctx, s.kvPath("data", revocationKey(id)))
		if err != nil {
			return nil, fmt.Errorf("list revocations: %s: %w", id, err)
		}
		if e.data == nil {
			continue
		}
		var rec revocationRecord
		if err := json.Unmarshal(e.data, &rec); err != nil || rec.ID != id || store.ValidateProvider(rec.Provider) != nil || store.ValidateUser(rec.User) != nil {
			return nil, fmt.Errorf("list revocations: %s: corrupt entry", id)
		}
		r := &store.Revocation{
			ID: rec.ID, Provider: rec.Provider, User: rec.User, Generation: rec.Generation,
			Actor: rec.Actor, Fingerprint: rec.Fingerprint, Attempt: rec.Attempt, Due: rec.Due, Queued: rec.Queued,
		}
		if s.transit == nil {
			if r.AccessToken, err = decodePlainToken(rec.AccessToken); err == nil {
				r.RefreshToken, err = decodePlainToken(rec.RefreshToken)
			}
		} else {
			var at, rt string
			if at, err = decodeStringToken(rec.AccessToken); err == nil {
				if rt, err = decodeStringToken(rec.RefreshToken); err == nil {
					var plain []string
					plain, err = s.transit.decrypt(ctx, c, rec.Provider, rec.User, []sealedField{{revocationAccessField, at}, {revocationRefreshField, rt}})
					if err == nil {
						r.AccessToken, r.RefreshToken = plain[0], plain[1]
					}
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("list revocations: %s: %w", id, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *store.Revocation) int { return a.Queued.Compare(b.Queued) })
	return out, nil
}

// DeleteRevocation implements store.Store. It deletes the entry's metadata,
// versions and all: a revocation id is random and never reused, so the
// reuse that makes the grant Delete keep metadata cannot happen here.
func (s *Store) DeleteRevocation(ctx context.Context, id string) error {
	if err := store.ValidateRevocationID(id); err != nil {
		return fmt.Errorf("delete revocation: %w", err)
	}
	op := "delete revocation " + id
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	status, err := c.call(ctx, http.MethodDelete, s.kvPath("metadata", revocationKey(id)), nil, nil)
	if err != nil && status != http.StatusNotFound {
		return fmt.Errorf("%s: %w", op, unexpected(err))
	}
	return nil
}
