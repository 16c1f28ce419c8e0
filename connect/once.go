package connect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Lease names of the single-use records in the grant store. They pass
// store.ValidateProvider; New refuses providers whose names start with
// reservedPrefix, so a real grant's lease never collides with them.
const (
	reservedPrefix = "onbehalf-connect"
	leaseLinks     = "onbehalf-connect-links"
	leaseStates    = "onbehalf-connect-states"
)

// maxTrackedOnceIDs bounds the ids remembered in memory: at 100 bytes each,
// 10 MB, far above the links and states a connect server sees within their
// lifetimes of minutes; beyond it, new links and states are refused rather
// than old ones forgotten.
const maxTrackedOnceIDs = 100_000

// Errors of onceSet.use.
var (
	// errReplayed means a link or state was used before.
	errReplayed = errors.New("already used")
	// errOnceFull means too many ids are being tracked; the request is
	// refused rather than the oldest forgotten.
	errOnceFull = errors.New("too many links and states in flight")
)

// onceSet makes connect links and states single-use, within this process
// and across replicas that share the grant store.
//
// In this process, a used id is remembered until the moment it would
// expire anyway, so it is refused for its whole life. Across replicas, the
// first use takes a store lease named after the id's hash, which another
// replica's AcquireLease then finds held: the lease lives until the id
// expires, but at most store.MaxLeaseTTL (5 minutes). A link verifies for
// at most links.max_lifetime plus twice the leeway after its first use,
// which the default of 4m keeps within the lease. A state lives state_ttl
// (default 10m); for the part beyond five minutes, a replay on another
// replica would also need the browser's HttpOnly session cookie (the state
// is bound to it) and an authorization code the provider has not seen
// redeemed, since the first use already exchanged its code. Lease records
// are not released (that would end the single use) and stay in the store
// as small expired entries, one per link and per connection started.
//
// onceSet is safe for concurrent use.
type onceSet struct {
	st     store.Store
	holder string
	now    func() time.Time

	mu   sync.Mutex
	used map[string]time.Time // hash → expiry
}

func newOnceSet(st store.Store, holder string, now func() time.Time) *onceSet {
	return &onceSet{st: st, holder: holder, now: now, used: make(map[string]time.Time)}
}

// seen reports whether this process has recorded id of kind as used and
// not yet expired. It is a cheap early answer; only use is authoritative.
func (o *onceSet) seen(kind, id string) bool {
	h := onceHash(kind, id)
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	exp, ok := o.used[h]
	return ok && now.Before(exp)
}

// onceHash names id of kind in the set and in the store lease.
func onceHash(kind, id string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + id))
	return hex.EncodeToString(sum[:])
}

// use records id (of kind leaseLinks or leaseStates) as used until expiry.
// It returns errReplayed when the id was used before, here or on another
// replica. A store failure is returned wrapped (it wraps
// store.ErrUnavailable) and the id is not burnt here, so the person can try
// again.
func (o *onceSet) use(ctx context.Context, kind, id string, expiry time.Time) error {
	h := onceHash(kind, id)
	now := o.now()
	ttl := expiry.Sub(now)
	if ttl <= 0 {
		return errReplayed // expired ids are refused by the callers first
	}
	o.mu.Lock()
	if exp, ok := o.used[h]; ok && now.Before(exp) {
		o.mu.Unlock()
		return errReplayed
	}
	if len(o.used) >= maxTrackedOnceIDs {
		for k, exp := range o.used {
			if !now.Before(exp) {
				delete(o.used, k)
			}
		}
		if len(o.used) >= maxTrackedOnceIDs {
			o.mu.Unlock()
			return errOnceFull
		}
	}
	o.used[h] = expiry
	o.mu.Unlock()

	_, err := o.st.AcquireLease(ctx, kind, h, store.LeaseRequest{Holder: o.holder, TTL: min(ttl, store.MaxLeaseTTL)})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrLeaseHeld):
		return errReplayed
	}
	o.mu.Lock()
	delete(o.used, h)
	o.mu.Unlock()
	return fmt.Errorf("record single use: %w", err)
}
