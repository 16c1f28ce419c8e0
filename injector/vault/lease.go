package vault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// leaseRecord is the stored form of a refresh lease. A released lease is a
// placeholder with an empty ID and a zero expiry: it is never deleted, so the
// entry's versions keep increasing and a stale lease handle can never match a
// later acquisition's version.
// The fields after Expiry were added later; a record without them reads
// as a lease acquired at an unknown time for no refresh.
type leaseRecord struct {
	Holder     string    `json:"holder"`
	ID         string    `json:"id"`
	Expiry     time.Time `json:"expiry"`
	Acquired   time.Time `json:"acquired,omitzero"`
	Refresh    bool      `json:"refresh,omitempty"`
	Generation int64     `json:"generation,omitempty"`
}

// lease returns the lease r stores for provider and user at version.
func (r *leaseRecord) lease(provider, user string, version uint64) *store.Lease {
	return &store.Lease{
		Provider: provider, User: user, Holder: r.Holder, ID: r.ID, Expiry: r.Expiry, Version: store.Version(version),
		Acquired: r.Acquired, Refresh: r.Refresh, Generation: r.Generation,
	}
}

// decodeLease decodes a lease entry; nil for none (missing, deleted by an
// operator, or a released placeholder). The error never quotes the data.
func decodeLease(e kvEntry) (*leaseRecord, error) {
	if e.data == nil {
		return nil, nil
	}
	var r leaseRecord
	if err := json.Unmarshal(e.data, &r); err != nil {
		return nil, errors.New("decode lease: corrupt entry")
	}
	if r.ID == "" {
		return nil, nil
	}
	return &r, nil
}

// AcquireLease implements store.Store. The lease entry is created with
// cas 0, or, when the stored lease has expired (and req.TakeOver allows) or
// was released, written by CAS on its version: of several concurrent
// acquirers exactly one wins. A loser re-reads to report who holds the
// lease. Expiry comes from this process's clock just before the write;
// replicas' clocks must agree to well within a lease's TTL.
func (s *Store) AcquireLease(ctx context.Context, provider, user string, req store.LeaseRequest) (*store.Lease, error) {
	if err := validateNames(provider, user); err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	op := "acquire lease " + provider + "/" + user
	if err := store.CheckLeaseArgs(req.Holder, req.TTL); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	id, err := newLeaseID()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	path := s.kvPath("data", leaseKey(provider, user))
	for range maxCASAttempts {
		e, err := c.readKV(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		cur, err := decodeLease(e)
		if err != nil {
			// A corrupt lease is treated as expired and free: it would
			// otherwise block refreshes of this grant forever.
			cur = nil
		}
		if cur != nil {
			held := cur.lease(provider, user, e.version)
			if time.Now().Before(cur.Expiry) || (req.TakeOver != nil && !req.TakeOver(held)) {
				return nil, fmt.Errorf("%s: %w", op, &store.LeaseHeldError{Lease: *held})
			}
		}
		now := time.Now()
		rec := leaseRecord{Holder: req.Holder, ID: id, Expiry: now.Add(req.TTL), Acquired: now, Refresh: req.Refresh, Generation: req.Generation}
		v, err := c.writeKV(ctx, path, e.version, rec)
		if errors.Is(err, errCASMismatch) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		return rec.lease(provider, user, v), nil
	}
	return nil, fmt.Errorf("%s: %w: lease contended", op, store.ErrLeaseHeld)
}

// RenewLease implements store.Store: it checks that the stored lease is l
// and writes it with the new expiry by CAS on l's version, so a takeover
// between the check and the write makes the renewal fail.
func (s *Store) RenewLease(ctx context.Context, l *store.Lease, ttl time.Duration) (*store.Lease, error) {
	if err := store.CheckLease(l); err != nil {
		return nil, fmt.Errorf("renew lease: %w", err)
	}
	op := "renew lease " + l.Provider + "/" + l.User
	if err := store.CheckLeaseTTL(ttl); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	path := s.kvPath("data", leaseKey(l.Provider, l.User))
	e, err := c.readKV(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	cur, err := decodeLease(e)
	if err != nil || cur == nil {
		return nil, fmt.Errorf("%s: %w", op, store.ErrLeaseLost)
	}
	if cur.ID != l.ID || e.version != uint64(l.Version) {
		return nil, fmt.Errorf("%s: %w: now held by %s", op, store.ErrLeaseLost, cur.Holder)
	}
	cur.Expiry = time.Now().Add(ttl)
	v, err := c.writeKV(ctx, path, uint64(l.Version), cur)
	if errors.Is(err, errCASMismatch) {
		return nil, fmt.Errorf("%s: %w: taken over concurrently", op, store.ErrLeaseLost)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return cur.lease(l.Provider, l.User, v), nil
}

// ReleaseLease implements store.Store. It checks that the stored lease is
// l (same ID and version) and writes an expired placeholder by CAS on l's
// version, so a takeover between the check and the write makes the release
// fail rather than remove the new holder's lease.
func (s *Store) ReleaseLease(ctx context.Context, l *store.Lease) error {
	if err := store.CheckLease(l); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	op := "release lease " + l.Provider + "/" + l.User
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	path := s.kvPath("data", leaseKey(l.Provider, l.User))
	e, err := c.readKV(ctx, path)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	cur, err := decodeLease(e)
	if err != nil || cur == nil {
		return fmt.Errorf("%s: %w", op, store.ErrLeaseLost)
	}
	if cur.ID != l.ID || e.version != uint64(l.Version) {
		return fmt.Errorf("%s: %w: now held by %s", op, store.ErrLeaseLost, cur.Holder)
	}
	_, err = c.writeKV(ctx, path, uint64(l.Version), leaseRecord{})
	if errors.Is(err, errCASMismatch) {
		return fmt.Errorf("%s: %w: taken over concurrently", op, store.ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// newLeaseID returns 128 random bits in hex.
func newLeaseID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lease id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
