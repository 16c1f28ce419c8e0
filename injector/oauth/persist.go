package oauth

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/journal"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// pendingWrite is a refreshed grant the store has not taken yet. Until it
// is written (or the stored grant is found to have changed), no refresh of
// the grant is attempted: the provider considers the refresh token in the
// store spent.
type pendingWrite struct {
	grant *store.Grant
	base  store.Version // the compare-and-swap version of the write
	spent string        // the refresh token the provider consumed
	// durable reports that the journal holds grant: its access token may be
	// used before the store has it.
	durable bool
	since   time.Time
	// kp holds the refresh lease while the write waits (nil when a
	// recovered entry's lease could not be taken back); leaseID names the
	// lease the entry was written under.
	kp      *keeper
	leaseID string
	// done is closed when the write landed or was dropped; landed says
	// which.
	done   chan struct{}
	landed bool
}

// hold records ng, refreshed from the grant at version base whose refresh
// token spent the provider consumed, as pending for k: in the journal
// (fsync'd) when there is one, then in memory. A journal failure is
// logged; the tokens then wait in memory only, unused until the store
// takes them.
func (s *Source) hold(k grantKey, ng *store.Grant, base store.Version, spent string, kp *keeper) *pendingWrite {
	l := kp.current()
	pw := &pendingWrite{grant: ng, base: base, spent: spent, since: time.Now(), kp: kp, leaseID: l.ID, done: make(chan struct{})}
	if s.journal != nil {
		err := s.journal.Write(&journal.Entry{Grant: ng, Base: base, Spent: spent, LeaseID: l.ID, LeaseHolder: l.Holder, Written: pw.since.UTC()})
		if err != nil {
			s.log.Error("refreshed tokens not journalled; they are held in memory until the store takes them",
				zap.String("provider", k.provider), zap.String("user", k.user), zap.Error(err))
		} else {
			pw.durable = true
		}
	}
	s.mu.Lock()
	s.pending[k] = pw
	s.mu.Unlock()
	return pw
}

// Pending returns how many refreshed grants wait for the store.
func (s *Source) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// pendingFor returns the pending write of k, or nil.
func (s *Source) pendingFor(k grantKey) *pendingWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[k]
}

// settle ends pw, written to the store (landed) or dropped: its journal
// entries go (the store holds that generation, or something that replaced
// it), and it stops being pending.
func (s *Source) settle(k grantKey, pw *pendingWrite, landed bool) {
	if s.journal != nil {
		if err := s.journal.Remove(k.provider, k.user, pw.grant.Generation); err != nil {
			s.log.Warn("journal entry not removed; it is removed at the next start", zap.String("provider", k.provider),
				zap.String("user", k.user), zap.Error(err))
		}
	}
	s.mu.Lock()
	if s.pending[k] == pw {
		delete(s.pending, k)
	}
	s.mu.Unlock()
	pw.landed = landed
	close(pw.done)
}

func (s *Source) landed(k grantKey, pw *pendingWrite)  { s.settle(k, pw, true) }
func (s *Source) dropped(k grantKey, pw *pendingWrite) { s.settle(k, pw, false) }

// deferWrite writes pw in the background, retrying with backoff until the
// store takes it or turns out to hold something else, with the lease kept
// alive meanwhile; then it releases the lease and reports the outcome. It
// stops at Close, leaving the tokens to the journal and the lease to run
// out.
func (s *Source) deferWrite(k grantKey, pw *pendingWrite) {
	s.mu.Lock()
	s.busy++
	s.mu.Unlock()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer s.done()
		delay := persistRetryMin
		for {
			// Jitter in [delay/2, delay) keeps replicas that lost the store
			// together from writing together when it comes back.
			t := time.NewTimer(delay/2 + time.Duration(mrand.Int64N(int64(delay/2))))
			select {
			case <-s.stop:
				t.Stop()
				return
			case <-t.C:
			}
			delay = min(2*delay, persistRetryMax)
			if pw.kp == nil {
				pw.kp = s.adopt(k, pw)
			}
			ctx, cancel := context.WithTimeout(context.Background(), persistRetryMax+s.timing.LeaseTTL)
			_, err := s.persist(ctx, pw.grant, pw.base, pw.spent, 1)
			cancel()
			if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) &&
				!errors.Is(err, store.ErrInvalidName) && !errors.Is(err, store.ErrInvalidArgument) {
				continue
			}
			s.finishDeferred(k, pw, err)
			return
		}
	}()
}

// finishDeferred settles a deferred or recovered write after err (nil: it
// landed) and releases its lease.
func (s *Source) finishDeferred(k grantKey, pw *pendingWrite, err error) {
	ev := RefreshEvent{Provider: k.provider, User: k.user, Rotated: pw.grant.RefreshToken != pw.spent,
		Generation: pw.grant.Generation, Duration: time.Since(pw.since)}
	if err == nil {
		s.landed(k, pw)
		ev.Outcome = OutcomePersisted
		s.log.Info("refreshed tokens persisted after the store came back", zap.String("provider", k.provider),
			zap.String("user", k.user), zap.Int64("generation", pw.grant.Generation), zap.Duration("waited", ev.Duration))
	} else {
		s.dropped(k, pw)
		ev.Outcome, ev.Err = OutcomeDropped, err
		s.log.Warn("grant changed while refreshed tokens waited for the store; they are dropped",
			zap.String("provider", k.provider), zap.String("user", k.user), zap.Error(err))
	}
	if pw.kp != nil {
		pw.kp.release()
	}
	s.emit(ev)
}

// awaitPending is a flight for k while refreshed tokens wait for the store:
// nothing is presented until they are written. It waits up to the
// provider's timeout for the write, then refreshes from the store if the
// grant still needs it; else it hands out the waiting access token if it
// is journalled and usable.
func (s *Source) awaitPending(ctx context.Context, p *Provider, k grantKey, f *flight, pw *pendingWrite) (injector.Token, error) {
	t := time.NewTimer(p.cfg.Timeout)
	defer t.Stop()
	select {
	case <-pw.done:
		return s.refresh(p, k, f)
	case <-t.C:
	case <-ctx.Done():
	}
	if pw.durable && usable(pw.grant) {
		return tokenOf(pw.grant), nil
	}
	return injector.Token{}, fmt.Errorf("token %s/%s: refreshed tokens wait for the store: %w", k.provider, k.user, store.ErrUnavailable)
}

// persist writes ng with compare-and-swap on cas, making up to attempts
// tries while the store fails. A conflict whose stored grant holds exactly
// ng's tokens is a write of ours that committed although its answer was
// lost, and counts as success. Errors wrap store.ErrConflict (or
// store.ErrNotFound) when the stored grant was replaced or deleted: ng must
// not be written.
func (s *Source) persist(ctx context.Context, ng *store.Grant, cas store.Version, spent string, attempts int) (store.Version, error) {
	var err error
	for attempt := range attempts {
		if attempt > 0 {
			t := time.NewTimer(persistBackoff << (attempt - 1))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return 0, storeError(ctx.Err())
			}
		}
		var v store.Version
		if v, err = s.st.Put(ctx, ng, cas); err == nil {
			return v, nil
		}
		if errors.Is(err, store.ErrConflict) {
			cur, cv, gerr := s.st.Get(ctx, ng.Provider, ng.User)
			switch {
			case errors.Is(gerr, store.ErrNotFound):
				return 0, fmt.Errorf("%w (%w)", err, gerr) // revoked meanwhile
			case gerr != nil:
				err = storeError(gerr)
				continue
			case cur.Generation == ng.Generation && cur.AccessToken == ng.AccessToken && cur.RefreshToken == ng.RefreshToken:
				return cv, nil // our earlier write went through; its answer was lost
			case spent != "" && cur.RefreshToken == spent && cur.Status == store.StatusActive && cur.Generation < ng.Generation:
				// Someone changed other fields (an expiry or scope edit)
				// without refreshing: the stored refresh token is the one
				// the provider just consumed, so keeping it would get the
				// grant revoked at the next refresh. Our tokens are put on
				// top of the stored grant and written again.
				rebase(ng, cur)
				cas = cv
				err = nil
				continue
			}
			// A reconnect, a revocation or a peer's refresh: the stored
			// grant wins.
			return 0, err
		}
		if errors.Is(err, store.ErrInvalidName) || errors.Is(err, store.ErrInvalidArgument) {
			return 0, err
		}
	}
	if err == nil {
		// The last attempt rebased and had no try left.
		err = fmt.Errorf("%w: grant kept changing", store.ErrUnavailable)
	}
	return 0, storeError(err)
}

// rebase puts ng's freshly minted tokens on top of cur, the grant now
// stored, leaving ng as the grant to write.
func rebase(ng, cur *store.Grant) {
	nb := cur.Clone()
	nb.AccessToken, nb.RefreshToken, nb.Expiry, nb.IssuedAt = ng.AccessToken, ng.RefreshToken, ng.Expiry, ng.IssuedAt
	if ng.TokenType != "" {
		nb.TokenType = ng.TokenType
	}
	if len(ng.Scopes) > 0 {
		nb.Scopes = ng.Scopes
	}
	nb.Generation = cur.Generation + 1
	*ng = *nb
}

// Recover writes the grants found in the journal to the store: tokens a
// provider issued that the previous run of this sidecar could not store
// before it stopped. Call it once at start-up, before the first Token
// call. Each grant's newest entry is written by compare-and-swap on the
// version it was refreshed from (an entry the store has outgrown is
// dropped); what the store does not take now waits in memory, usable,
// and is written in the background, under the refresh lease this Source
// takes back where it can. It returns how many entries it found.
func (s *Source) Recover(ctx context.Context) (int, error) {
	if s.journal == nil {
		return 0, nil
	}
	entries, lerr := s.journal.Load()
	if lerr != nil {
		s.log.Error("journal entries unreadable; they are left in place", zap.Error(lerr))
	}
	newest := map[grantKey]*journal.Entry{}
	var order []grantKey
	for _, e := range entries {
		k := grantKey{e.Grant.Provider, e.Grant.User}
		if _, ok := newest[k]; !ok {
			order = append(order, k)
		}
		newest[k] = e // Load sorts by generation
	}
	for _, k := range order {
		e := newest[k]
		pw := &pendingWrite{grant: e.Grant, base: e.Base, spent: e.Spent, durable: true, since: e.Written, leaseID: e.LeaseID, done: make(chan struct{})}
		s.mu.Lock()
		s.pending[k] = pw
		s.mu.Unlock()
		s.log.Info("refreshed tokens found in the journal", zap.String("provider", k.provider), zap.String("user", k.user),
			zap.Int64("generation", e.Grant.Generation), zap.Time("written", e.Written))
		pw.kp = s.adopt(k, pw)
		_, err := s.persist(ctx, pw.grant, pw.base, pw.spent, 1)
		if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			s.deferWrite(k, pw)
			continue
		}
		s.finishDeferred(k, pw, err)
	}
	return len(entries), lerr
}

// adopt takes back the refresh lease a journal entry was written under, or
// takes the lease if it is free, so that peers keep off the spent refresh
// token while the entry waits for the store. It returns nil when the lease
// is someone else's or the store cannot be reached; the write proceeds
// anyway (it is a compare-and-swap).
func (s *Source) adopt(k grantKey, pw *pendingWrite) *keeper {
	ctx, cancel := context.WithTimeout(context.Background(), s.timing.LeaseTTL)
	defer cancel()
	req := store.LeaseRequest{
		Holder: s.holder, TTL: s.timing.LeaseTTL, Refresh: true, Generation: pw.grant.Generation - 1,
		TakeOver: func(l *store.Lease) bool { return l.ID == pw.leaseID },
	}
	asked := time.Now()
	l, err := s.st.AcquireLease(ctx, k.provider, k.user, req)
	if err == nil {
		return s.keep(l, asked)
	}
	var held *store.LeaseHeldError
	if errors.As(err, &held) && held.Lease.ID == pw.leaseID {
		asked = time.Now()
		if l, err = s.st.RenewLease(ctx, &held.Lease, s.timing.LeaseTTL); err == nil {
			return s.keep(l, asked)
		}
	}
	s.log.Debug("refresh lease of journalled tokens not taken back", zap.String("provider", k.provider), zap.String("user", k.user), zap.Error(err))
	return nil
}
