package oauth

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// acquireLease takes the refresh lease of g's grant (step 2) and starts its
// heartbeat. While a peer holds the lease, it returns g at once if g's
// access token is still usable (the peer's result is picked up by a later
// call), else polls the grant until the peer's result appears (returned as
// the second value), the lease can be taken, or maxLeaseWait passes.
//
// A lease that ran out is taken over only as takeOver allows; maybeSpent
// reports a takeover of a refresh lease on g's generation, whose holder may
// have spent the refresh token this Source is about to present.
func (s *Source) acquireLease(ctx context.Context, p *Provider, g *store.Grant) (kp *keeper, other *store.Grant, maybeSpent bool, err error) {
	start := time.Now()
	deadline := start.Add(maxLeaseWait)
	delay := leasePollMin
	k := grantKey{g.Provider, g.User}
	for {
		var took *store.Lease
		req := store.LeaseRequest{
			Holder: s.holder, TTL: s.timing.LeaseTTL, Refresh: true, Generation: g.Generation,
			TakeOver: func(l *store.Lease) bool {
				ok := s.takeOver(p, l, g)
				if ok {
					c := *l
					took = &c
				}
				return ok
			},
		}
		asked := time.Now()
		l, err := s.st.AcquireLease(ctx, g.Provider, g.User, req)
		if err == nil {
			spent := took != nil && took.Refresh && took.Generation >= g.Generation
			if took != nil {
				s.log.Warn("took over a refresh lease that ran out", zap.String("provider", g.Provider), zap.String("user", g.User),
					zap.String("holder", took.Holder), zap.Time("expired", took.Expiry), zap.Bool("refresh_token_maybe_spent", spent))
			}
			return s.keep(l, asked), nil, spent, nil
		}
		var held *store.LeaseHeldError
		if !errors.As(err, &held) {
			return nil, nil, false, storeError(err)
		}
		if usable(g) {
			return nil, g, false, nil
		}
		if time.Now().After(deadline) {
			return nil, nil, false, fmt.Errorf("refresh lease held by %s for more than %s: %w", held.Lease.Holder, maxLeaseWait, injector.ErrProviderUnavailable)
		}
		// Full jitter in [delay/2, delay*3/2) spreads the replicas' polls.
		wait := delay/2 + time.Duration(mrand.Int64N(int64(delay)))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil, false, fmt.Errorf("waiting for a peer's refresh: %w: %w", injector.ErrProviderUnavailable, ctx.Err())
		}
		if time.Since(start) >= leasePollFastFor {
			delay = min(2*delay, leasePollMax)
		}
		cur, _, err := s.st.Get(ctx, g.Provider, g.User)
		if err != nil {
			return nil, nil, false, readError(k, err)
		}
		if cur.Status != store.StatusActive || (cur.Generation != g.Generation && usable(cur)) {
			return nil, cur, false, nil
		}
		g = cur
	}
}

// takeOver is the takeover rule for l, a lease that ran out, when this
// Source wants to refresh g. A lease that presents no refresh token (a
// revocation, or a lease written by an earlier version of onbehalf), or
// that refreshed an older generation than g's (its holder's token is not
// the one at stake), is taken over at once. A refresh lease on g's
// generation belongs to a holder that may have spent g's refresh token and
// may come back to store what the provider gave it: it is left to its
// holder for TakeoverAfter, unless the provider's reuse grace still covers
// the holder's presentation (which came after it took the lease).
func (s *Source) takeOver(p *Provider, l *store.Lease, g *store.Grant) bool {
	switch {
	case !l.Refresh || l.Generation < g.Generation:
		return true
	case !l.Acquired.IsZero() && withinGrace(p, l.Acquired):
		return true
	}
	return time.Since(l.Expiry) >= s.timing.TakeoverAfter
}

// keeper holds a refresh lease: it renews it every third of its TTL until
// stopped (the heartbeat that tells peers the holder is alive), and tells
// whether it is still held.
type keeper struct {
	s    *Source
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu         sync.Mutex
	lease      *store.Lease
	validUntil time.Time // by this process's clock; conservative
	lost       bool
}

// keep starts the heartbeat of l, acquired by a request sent at asked.
func (s *Source) keep(l *store.Lease, asked time.Time) *keeper {
	kp := &keeper{s: s, lease: l, validUntil: asked.Add(s.timing.LeaseTTL), stop: make(chan struct{}), done: make(chan struct{})}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		kp.beat()
	}()
	return kp
}

// beat renews the lease every third of its TTL until stopped, the Source
// closes, or the lease is lost. A failed renewal (the store unreachable) is
// retried at the next beat: the lease record in the store keeps its expiry
// meanwhile, and peers that cannot reach the store cannot take it either.
func (kp *keeper) beat() {
	defer close(kp.done)
	interval := kp.s.timing.LeaseTTL / 3
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-kp.stop:
			return
		case <-kp.s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		err := kp.renew(ctx)
		cancel()
		if errors.Is(err, store.ErrLeaseLost) {
			return
		}
	}
}

// renew renews the lease once.
func (kp *keeper) renew(ctx context.Context) error {
	kp.mu.Lock()
	l, lost := kp.lease, kp.lost
	kp.mu.Unlock()
	if lost {
		return store.ErrLeaseLost
	}
	asked := time.Now()
	nl, err := kp.s.st.RenewLease(ctx, l, kp.s.timing.LeaseTTL)
	kp.mu.Lock()
	defer kp.mu.Unlock()
	switch {
	case err == nil:
		kp.lease, kp.validUntil = nl, asked.Add(kp.s.timing.LeaseTTL)
	case errors.Is(err, store.ErrLeaseLost):
		kp.lost = true
		kp.s.log.Warn("refresh lease lost to a peer", zap.String("provider", l.Provider), zap.String("user", l.User), zap.Error(err))
	default:
		kp.s.log.Debug("refresh lease not renewed; retrying", zap.String("provider", l.Provider), zap.String("user", l.User), zap.Error(err))
	}
	return err
}

// ensure makes sure the lease is held for at least a third of its TTL more
// before a refresh token is presented under it, renewing it now if needed.
// It returns an error wrapping store.ErrLeaseLost when a peer took it.
func (kp *keeper) ensure(ctx context.Context) error {
	kp.mu.Lock()
	lost, left := kp.lost, time.Until(kp.validUntil)
	kp.mu.Unlock()
	if lost {
		return store.ErrLeaseLost
	}
	if left >= kp.s.timing.LeaseTTL/3 {
		return nil
	}
	return kp.renew(ctx)
}

// current returns the lease as last renewed.
func (kp *keeper) current() *store.Lease {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	return kp.lease
}

// halt stops the heartbeat and waits for it.
func (kp *keeper) halt() {
	kp.once.Do(func() { close(kp.stop) })
	<-kp.done
}

// release stops the heartbeat and releases the lease (step 6). Failures are
// logged: the lease expires by itself.
func (kp *keeper) release() {
	kp.halt()
	kp.mu.Lock()
	l, lost := kp.lease, kp.lost
	kp.mu.Unlock()
	if !lost {
		kp.s.releaseLease(l)
	}
}

// abandon stops the heartbeat and leaves the lease to run out: the holder
// presented the refresh token and does not know whether the provider spent
// it, so peers must apply the takeover rules.
func (kp *keeper) abandon() {
	kp.halt()
	l := kp.current()
	kp.s.log.Warn("refresh token presented without an answer; the refresh lease is left to run out",
		zap.String("provider", l.Provider), zap.String("user", l.User), zap.Duration("takeover_after", kp.s.timing.TakeoverAfter))
}

// releaseLease releases l. Failures are logged: the lease expires by
// itself.
func (s *Source) releaseLease(l *store.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	err := s.st.ReleaseLease(ctx, l)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrLeaseLost):
		s.log.Warn("refresh lease ran out before it was released; a peer may have taken it over",
			zap.String("provider", l.Provider), zap.String("user", l.User), zap.Error(err))
	default:
		s.log.Warn("refresh lease not released; it expires by itself",
			zap.String("provider", l.Provider), zap.String("user", l.User), zap.Duration("ttl", s.timing.LeaseTTL), zap.Error(err))
	}
}
