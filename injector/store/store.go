// Package store defines the grant store: where each user's OAuth grant for
// each provider lives, read with a version and written by compare-and-swap,
// plus a short per-grant lease that serialises refreshes across replicas
// (docs/design.md#grant-store and docs/design.md#refresh).
//
// The Store interface is declared here rather than beside one consumer because
// the sidecar's token source, the connect server and the admin CLI all share
// it. Two implementations satisfy it: Embedded (this package; bbolt with
// AES-256-GCM sealed token fields) and the Vault KV v2 store (injector/vault).
// Both must pass the shared conformance suite in package storetest.
//
// Every method validates provider and user names (ValidateProvider,
// ValidateUser) before it touches any key or path, so nothing taken from a
// request reaches the storage layer unchecked.
//
// Concurrency: every Store implementation is safe for concurrent use by
// multiple goroutines, and the embedded store is also safe for several
// processes sharing one database file.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Version identifies one stored revision of a grant or lease. Versions of one
// key strictly increase with every successful Put; the zero Version means
// "no entry", and as a Put cas argument it means "create only".
//
// For the Vault store a Version is the KV v2 metadata version. The embedded
// store never reuses a Version for a key, even after Delete.
type Version uint64

// Store is a grant store. Implementations validate names first: a method
// called with an invalid provider or user returns an error wrapping
// ErrInvalidName before it does anything else (it does not even look at ctx).
//
// Errors that mean the backend could not be reached, opened or locked in time
// wrap ErrUnavailable, which the sidecar maps to store_unavailable.
type Store interface {
	// Get returns the grant of user at provider with its current Version, or
	// an error wrapping ErrNotFound when there is none. A grant whose sealed
	// token fields cannot be opened yields an error wrapping ErrDecrypt and is
	// left in place.
	Get(ctx context.Context, provider, user string) (*Grant, Version, error)

	// Put writes g under g.Provider and g.User if the stored Version equals
	// cas, and returns the new Version. A cas of 0 means the grant must not
	// exist yet. On mismatch (including a non-zero cas for a missing grant)
	// Put returns an error wrapping ErrConflict and changes nothing.
	Put(ctx context.Context, g *Grant, cas Version) (Version, error)

	// Delete removes the grant of user at provider with all its versions, so
	// that a later Put with cas 0 succeeds. It returns an error wrapping
	// ErrNotFound when there is no such grant. Leases are not affected.
	Delete(ctx context.Context, provider, user string) error

	// List returns the grants of provider (all providers when provider is
	// empty), sorted by provider then user, with AccessToken and RefreshToken
	// blanked. It never needs to open sealed values.
	List(ctx context.Context, provider string) ([]*Grant, error)

	// AcquireLease takes the refresh lease of user at provider as req
	// describes. While an unexpired lease exists, whoever holds it (the same
	// holder included: a lease is not re-entrant), AcquireLease returns an
	// error wrapping ErrLeaseHeld that is a *LeaseHeldError naming the
	// lease. An expired lease is taken over when req.TakeOver allows it (nil
	// allows every expired lease), else it is reported held the same way.
	// A takeover is atomic: of several concurrent callers exactly one
	// succeeds.
	AcquireLease(ctx context.Context, provider, user string, req LeaseRequest) (*Lease, error)

	// RenewLease extends l to ttl from now if l is still the stored lease
	// (same ID and version), even if it has expired in the meantime (nobody
	// took it over), and returns the renewed lease (a new Version; Acquired,
	// Refresh and Generation kept). If another acquisition replaced it or
	// it is gone, RenewLease changes nothing and returns an error wrapping
	// ErrLeaseLost.
	RenewLease(ctx context.Context, l *Lease, ttl time.Duration) (*Lease, error)

	// ReleaseLease removes l if it is still the stored lease (same ID), even
	// if it has expired in the meantime. If another acquisition replaced it
	// or it is gone, ReleaseLease changes nothing and returns an error
	// wrapping ErrLeaseLost.
	ReleaseLease(ctx context.Context, l *Lease) error

	// PutRevocation stores r, a provider revocation waiting for a retry,
	// replacing the one with the same ID. Its tokens are protected at rest
	// as a grant's are.
	PutRevocation(ctx context.Context, r *Revocation) error

	// ListRevocations returns the stored revocations, oldest (by Queued)
	// first.
	ListRevocations(ctx context.Context) ([]*Revocation, error)

	// DeleteRevocation removes the revocation id; a missing one is not an
	// error.
	DeleteRevocation(ctx context.Context, id string) error

	// Close releases the store's resources. It is safe to call more than
	// once; after Close, other methods return an error wrapping
	// ErrUnavailable (after name validation).
	Close() error
}

// LeaseRequest describes a lease to acquire.
type LeaseRequest struct {
	// Holder names the acquirer (see Lease.Holder); it must satisfy
	// ValidateHolder.
	Holder string
	// TTL is the lease's lifetime, in (0, MaxLeaseTTL]; RenewLease extends
	// it.
	TTL time.Duration
	// Refresh marks a lease taken to present the refresh token of grant
	// generation Generation; it is recorded so that a replica finding the
	// lease run out can tell whether its holder may have spent the refresh
	// token it would present itself.
	Refresh    bool
	Generation int64
	// TakeOver decides whether an expired lease held by another
	// acquisition (given as stored) is taken over. Nil takes over every
	// expired lease.
	TakeOver func(expired *Lease) bool
}

// Lease is one acquisition of the refresh lease of a grant.
type Lease struct {
	Provider string
	User     string
	// Holder names the process that acquired the lease (for example the pod
	// name and a process id); it is recorded for operators.
	Holder string
	// ID is random per acquisition; it distinguishes this acquisition from a
	// later one by the same holder after a takeover.
	ID string
	// Expiry is when the lease may be taken over by someone else.
	Expiry time.Time
	// Version is the store's version of the lease record.
	Version Version
	// Acquired is when this acquisition was made (renewals keep it); zero
	// for a lease written by a version of onbehalf that did not record it.
	Acquired time.Time
	// Refresh and Generation are LeaseRequest's: the holder may present the
	// refresh token of grant generation Generation.
	Refresh    bool
	Generation int64
}

// LeaseHeldError is the error of an AcquireLease that found the lease held.
// It wraps ErrLeaseHeld and carries the stored lease, so the caller can see
// who holds it, until when, and what for.
type LeaseHeldError struct {
	// Lease is the stored lease; Expiry may lie in the past when the
	// request's TakeOver declined it.
	Lease Lease
}

// Error says who holds the lease until when.
func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("%v by %s until %s", ErrLeaseHeld, e.Lease.Holder, e.Lease.Expiry.UTC().Format(time.RFC3339Nano))
}

// Unwrap returns ErrLeaseHeld.
func (e *LeaseHeldError) Unwrap() error { return ErrLeaseHeld }

// Sentinel errors. Implementations wrap them with %w and an operation prefix;
// callers classify with errors.Is.
var (
	// ErrNotFound means there is no grant for the provider and user.
	ErrNotFound = errors.New("grant not found")
	// ErrConflict means a Put's cas did not match the stored version.
	ErrConflict = errors.New("version conflict")
	// ErrLeaseHeld means another unexpired lease exists.
	ErrLeaseHeld = errors.New("lease held")
	// ErrLeaseLost means the lease being released is no longer the stored one.
	ErrLeaseLost = errors.New("lease lost")
	// ErrUnavailable means the store could not be reached, opened or locked
	// in time; it maps to the agent-facing code store_unavailable.
	ErrUnavailable = errors.New("store unavailable")
	// ErrInvalidName means a provider, user or lease holder name failed
	// validation.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidArgument means some other argument was unusable: a nil
	// grant or lease, an unknown status, a lease ttl out of range.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrDecrypt means a sealed token could not be opened: wrong key, or a
	// value that was tampered with or copied from another grant. The stored
	// entry is left untouched.
	ErrDecrypt = errors.New("sealed value cannot be opened")
)

// MaxLeaseTTL bounds a lease's lifetime. A refresh is one token-endpoint call
// (seconds at most); a longer lease only prolongs the outage when its holder
// dies while holding it.
const MaxLeaseTTL = 5 * time.Minute

// CheckLeaseArgs validates the holder and ttl of an AcquireLease call. Stores
// call it after validating provider and user. Holder must be 1 to 256
// printable ASCII characters without spaces; ttl must be in (0, MaxLeaseTTL].
func CheckLeaseArgs(holder string, ttl time.Duration) error {
	if err := ValidateHolder(holder); err != nil {
		return err
	}
	return CheckLeaseTTL(ttl)
}

// CheckLeaseTTL validates the ttl of an AcquireLease or RenewLease call: it
// must be in (0, MaxLeaseTTL].
func CheckLeaseTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > MaxLeaseTTL {
		return fmt.Errorf("%w: lease ttl %s: must be positive and at most %s", ErrInvalidArgument, ttl, MaxLeaseTTL)
	}
	return nil
}

// CheckLease validates a lease handle given to RenewLease or ReleaseLease.
func CheckLease(l *Lease) error {
	if l == nil {
		return fmt.Errorf("%w: nil lease", ErrInvalidArgument)
	}
	if err := ValidateProvider(l.Provider); err != nil {
		return err
	}
	return ValidateUser(l.User)
}
