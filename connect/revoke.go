package connect

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Revocation timing and limits.
const (
	// revokeLeaseTTL is the lifetime of the grant lease a revocation takes
	// while it reads and deletes the grant; both are single store calls.
	revokeLeaseTTL = 30 * time.Second
	// maxRevokeLeaseWait bounds the wait for a grant lease held by a
	// refresh in flight: longer than a refresh's own lease (30s), so a
	// lease left by a sidecar that died is taken over, after which the
	// revocation proceeds anyway.
	maxRevokeLeaseWait = 35 * time.Second
	// leasePollMin and leasePollMax bound the interval between two
	// attempts at a held lease (doubling).
	leasePollMin = 20 * time.Millisecond
	leasePollMax = 500 * time.Millisecond
	// providerRevokeTimeout bounds one revocation attempt at the provider
	// (the provider's own per-call timeout applies within it).
	providerRevokeTimeout = 30 * time.Second
	// releaseTimeout bounds the release of the grant lease.
	releaseTimeout = 5 * time.Second
	// maxRetryDelay caps the doubling wait between retries.
	maxRetryDelay = 15 * time.Minute
	// maxRetryQueue bounds the revocations waiting for a retry; beyond it a
	// transient failure is recorded as failed (and logged) at once.
	maxRetryQueue = 1000
	// queueStoreTimeout bounds one write or removal of a queued revocation
	// in the store.
	queueStoreTimeout = 10 * time.Second
	// retryClaimTTL is the lease a replica takes on a queued revocation
	// while it retries it, so that connect-server replicas resuming the same
	// queue do not revoke and audit it twice. It outlives one attempt.
	retryClaimTTL = providerRevokeTimeout + 30*time.Second
	// leaseRevocations names the leases of queued revocations; it carries
	// the reserved prefix, so no provider's grant lease collides with them.
	leaseRevocations = "onbehalf-connect-revocations"
)

// Outcomes of a revocation, in Result and in the revoke audit record.
const (
	// LocalDeleted: the grant was deleted from the store.
	LocalDeleted = "deleted"
	// LocalNotFound: there was no grant to delete.
	LocalNotFound = "not_found"
	// LocalFailed: the store could not be read or written.
	LocalFailed = "failed"

	// ProviderRevoked: the provider's revocation endpoint accepted every
	// token.
	ProviderRevoked = "revoked"
	// ProviderUnsupported: the provider has no revocation endpoint.
	ProviderUnsupported = "unsupported"
	// ProviderQueued: the provider failed transiently; the revocation is
	// retried in the background.
	ProviderQueued = "queued"
	// ProviderFailed: the provider refused the revocation or kept failing;
	// an operator should revoke the grant at the provider.
	ProviderFailed = "failed"
	// ProviderSkipped: nothing to revoke at the provider (no grant, tokens
	// unreadable, or the provider is not configured here).
	ProviderSkipped = "skipped"
)

// Audit extra keys of revoke records (besides audit.ExtraOutcome).
const (
	extraLocal    = "local"
	extraProvider = "provider_revocation"
	extraActor    = "actor"
	extraAttempt  = "attempt"
	extraAccount  = "provider_account"
)

// Auditor writes audit records; *audit.Auditor implements it.
type Auditor interface {
	Write(r *audit.Record) error
	Fingerprinter() *audit.Fingerprinter
}

var _ Auditor = (*audit.Auditor)(nil)

// Result says what one revocation did.
type Result struct {
	Provider string `json:"provider"`
	User     string `json:"user"`
	// Local is LocalDeleted, LocalNotFound or LocalFailed.
	Local string `json:"local"`
	// ProviderRevocation is one of the Provider* outcomes.
	ProviderRevocation string `json:"provider_revocation"`
	// GrantGeneration is the generation of the revoked grant.
	GrantGeneration int64 `json:"grant_generation,omitempty"`
}

// Revoker revokes grants in one move: it deletes the grant from the store
// (under the grant's lease, so no refresh writes it back meanwhile), asks
// the provider's revocation endpoint (RFC 7009 or the provider's own, see
// oauth.Provider.RevokeGrant) to revoke the grant where the provider has
// one, and writes one revoke audit record with both outcomes. A provider failure never stops the local deletion.
// Sidecars stop injecting the grant once their token cache entry ends
// (token_cache.ttl, 10s by default), since their next store read finds
// nothing.
//
// Provider revocations that fail transiently are retried in the
// background with doubling, jittered waits, up to the configured number of
// attempts, and each final outcome is audited. The queue is kept in the
// grant store (store.Revocation, tokens sealed like a grant's): the tokens
// of a queued revocation exist nowhere else once the grant is deleted, and
// a restart must not leave them valid at the provider. Close leaves what is
// queued in the store; Resume, called when a connect server starts, takes
// it up again. A revocation the store could not take lives in memory only
// and is abandoned (logged and audited as failed) at Close. Replicas
// resuming the same queue claim each revocation with a lease before they
// retry it.
//
// Revoker is safe for concurrent use.
type Revoker struct {
	st        store.Store
	providers map[string]*oauth.Provider
	audit     Auditor
	log       *zap.Logger
	retry     RetryConfig
	holder    string

	mu      sync.Mutex
	queue   []*retryItem
	held    map[string]bool // ids of stored revocations queued or being retried here
	closed  bool
	wake    chan struct{}
	idle    *sync.Cond // signalled when the queue and in-flight work are empty
	running int
	done    chan struct{}
	stop    chan struct{}
}

// retryItem is a provider revocation waiting for another attempt. It
// holds the grant's tokens, in memory only.
type retryItem struct {
	id                   string // the store.Revocation's
	provider, user       string
	generation           int64
	fingerprint          string
	actor                string
	accessToken, refresh string
	attempt              int // retries made so far
	due                  time.Time
	queued               time.Time
	stored               bool         // the store holds it
	claim                *store.Lease // this replica's claim on it, once retried
}

// revocation returns it as the store keeps it.
func (it *retryItem) revocation() *store.Revocation {
	return &store.Revocation{
		ID: it.id, Provider: it.provider, User: it.user, Generation: it.generation,
		AccessToken: it.accessToken, RefreshToken: it.refresh, Actor: it.actor, Fingerprint: it.fingerprint,
		Attempt: it.attempt, Due: it.due, Queued: it.queued,
	}
}

// NewRevoker returns a Revoker. aud may be nil only in tests that do not
// look at audit records; logger nil discards logs. A retry with a zero
// interval uses DefaultRetryInterval; MaxAttempts 0 disables retries.
func NewRevoker(st store.Store, providers map[string]*oauth.Provider, aud Auditor, logger *zap.Logger, retry RetryConfig) *Revoker {
	if logger == nil {
		logger = zap.NewNop()
	}
	if retry.Interval <= 0 {
		retry.Interval = DefaultRetryInterval
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	r := &Revoker{
		st:        st,
		providers: providers,
		audit:     aud,
		log:       logger.Named("revoke"),
		retry:     retry,
		holder:    "onbehalf-revoke/" + sanitizeHolder(host) + "/" + strconv.Itoa(os.Getpid()),
		wake:      make(chan struct{}, 1),
		held:      make(map[string]bool),
		done:      make(chan struct{}),
		stop:      make(chan struct{}),
	}
	r.idle = sync.NewCond(&r.mu)
	go r.loop()
	return r
}

// sanitizeHolder keeps the printable ASCII of s without spaces, as lease
// holders require.
func sanitizeHolder(s string) string {
	b := []byte(s)
	out := b[:0]
	for _, c := range b {
		if c > ' ' && c <= '~' {
			out = append(out, c)
		}
	}
	if len(out) > 128 {
		out = out[:128]
	}
	return string(out)
}

// Revoke revokes the grant of user at provider; actor names who asked
// ("user", "admin", "cli", …) for the audit record. The error is nil when
// the grant is gone from the store, whatever the provider said (see
// Result.ProviderRevocation); it wraps store.ErrNotFound when there was no
// grant, store.ErrInvalidName for bad names, and the store's error when
// the grant could not be read or deleted.
func (r *Revoker) Revoke(ctx context.Context, provider, user, actor string) (Result, error) {
	res := Result{Provider: provider, User: user, Local: LocalFailed, ProviderRevocation: ProviderSkipped}
	if err := store.ValidateProvider(provider); err != nil {
		return res, fmt.Errorf("revoke grant: %w", err)
	}
	if err := store.ValidateUser(user); err != nil {
		return res, fmt.Errorf("revoke grant: %w", err)
	}
	lease, err := r.acquireLease(ctx, provider, user)
	if err != nil {
		return res, fmt.Errorf("revoke grant %s/%s: %w", provider, user, err)
	}
	g, _, getErr := r.st.Get(ctx, provider, user)
	var localErr error
	switch {
	case getErr == nil, errors.Is(getErr, store.ErrDecrypt):
		// A grant whose tokens cannot be opened is deleted all the same;
		// there is just nothing to send to the provider.
		localErr = r.st.Delete(ctx, provider, user)
	default:
		localErr = getErr
	}
	r.releaseLease(lease)
	switch {
	case localErr == nil:
		res.Local = LocalDeleted
		r.noteRevoked(ctx, provider, user, actor)
	case errors.Is(localErr, store.ErrNotFound):
		res.Local = LocalNotFound
	}
	if g != nil {
		res.GrantGeneration = g.Generation
	}

	var fp string
	if g != nil {
		if r.audit != nil {
			fp = r.audit.Fingerprinter().Token(g.AccessToken)
		}
		item := &retryItem{
			provider: provider, user: user, generation: g.Generation, actor: actor, fingerprint: fp,
			accessToken: g.AccessToken, refresh: g.RefreshToken,
		}
		// Detached: a person closing the page does not abort a revocation
		// under way.
		res.ProviderRevocation = r.revokeAtProvider(context.WithoutCancel(ctx), item)
	}

	r.write(&audit.Record{
		Event:            audit.EventRevoke,
		User:             user,
		Provider:         provider,
		GrantGeneration:  res.GrantGeneration,
		TokenFingerprint: fp,
		ErrorCode:        storeErrorCode(localErr),
		Extra: []zap.Field{
			zap.String(audit.ExtraOutcome, revokeOutcome(res)),
			zap.String(extraLocal, res.Local),
			zap.String(extraProvider, res.ProviderRevocation),
			zap.String(extraActor, actor),
		},
	})
	r.log.Info("grant revoked", zap.String("provider", provider), zap.String("user", user),
		zap.String("actor", actor), zap.String("local", res.Local), zap.String("provider_revocation", res.ProviderRevocation))
	if localErr != nil {
		return res, fmt.Errorf("revoke grant %s/%s: %w", provider, user, localErr)
	}
	return res, nil
}

// revokeOutcome summarises a result for the audit record's outcome.
func revokeOutcome(res Result) string {
	switch {
	case res.Local == LocalFailed:
		return "failed"
	case res.Local == LocalNotFound && res.ProviderRevocation == ProviderSkipped:
		return "not_found"
	case res.ProviderRevocation == ProviderFailed:
		return "partial"
	}
	return "ok"
}

// storeErrorCode maps a store failure to the error code of the audit
// record.
func storeErrorCode(err error) string {
	switch {
	case err == nil, errors.Is(err, store.ErrNotFound):
		return ""
	case errors.Is(err, store.ErrUnavailable):
		return "store_unavailable"
	}
	return "store_error"
}

// acquireLease takes the grant's refresh lease, waiting for a refresh in
// flight. When the lease stays held beyond maxRevokeLeaseWait it returns a
// nil lease and no error: revocation must not be blocked by a stuck peer.
func (r *Revoker) acquireLease(ctx context.Context, provider, user string) (*store.Lease, error) {
	deadline := time.Now().Add(maxRevokeLeaseWait)
	delay := leasePollMin
	for {
		l, err := r.st.AcquireLease(ctx, provider, user, store.LeaseRequest{Holder: r.holder, TTL: revokeLeaseTTL})
		switch {
		case err == nil:
			return l, nil
		case !errors.Is(err, store.ErrLeaseHeld):
			return nil, err
		case time.Now().After(deadline):
			r.log.Warn("grant lease still held; revoking without it", zap.String("provider", provider), zap.String("user", user))
			return nil, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, leasePollMax)
	}
}

// releaseLease releases l (nil is ignored) on a context of its own.
func (r *Revoker) releaseLease(l *store.Lease) {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if err := r.st.ReleaseLease(ctx, l); err != nil {
		r.log.Warn("release grant lease", zap.String("provider", l.Provider), zap.String("user", l.User), zap.Error(err))
	}
}

// revokeAtProvider makes one attempt at the provider and returns the
// outcome; a transient failure queues the item for a retry.
func (r *Revoker) revokeAtProvider(ctx context.Context, item *retryItem) string {
	p := r.providers[item.provider]
	if p == nil || (item.accessToken == "" && item.refresh == "") {
		return ProviderSkipped
	}
	outcome := r.attempt(ctx, p, item)
	if outcome != ProviderQueued {
		return outcome
	}
	if r.enqueue(item) {
		return ProviderQueued
	}
	return ProviderFailed
}

// attempt asks p to revoke item's grant (oauth.Provider.RevokeGrant picks
// the token the provider's endpoint ends a grant with: the refresh token
// for RFC 7009 servers, which then also invalidate the access tokens issued
// from it). It returns ProviderRevoked, ProviderUnsupported, ProviderFailed
// for a refusal, or ProviderQueued for a transient failure (the caller
// decides whether to retry).
func (r *Revoker) attempt(ctx context.Context, p *oauth.Provider, item *retryItem) string {
	ctx, cancel := context.WithTimeout(ctx, providerRevokeTimeout)
	defer cancel()
	// An MCP server's revocation endpoint and client are its stored
	// registration's.
	regs, _ := r.st.(store.RegistrationStore)
	p, err := p.Resolve(ctx, regs)
	if err == nil {
		err = p.RevokeGrant(ctx, item.accessToken, item.refresh)
	} else if errors.Is(err, store.ErrUnavailable) {
		err = fmt.Errorf("%w: %w", injector.ErrProviderUnavailable, err)
	}
	switch {
	case err == nil:
		return ProviderRevoked
	case errors.Is(err, oauth.ErrNoRevocation):
		return ProviderUnsupported
	case errors.Is(err, injector.ErrProviderUnavailable):
		r.log.Warn("provider revocation failed transiently", zap.String("provider", item.provider),
			zap.String("user", item.user), zap.Error(err))
		return ProviderQueued
	}
	r.log.Error("provider refused the revocation; revoke the grant at the provider by hand",
		zap.String("provider", item.provider), zap.String("user", item.user), zap.Error(err))
	return ProviderFailed
}

// enqueue schedules item's next attempt and records it in the store, or
// reports false when retries are disabled, exhausted, the queue is full or
// the Revoker is closed.
func (r *Revoker) enqueue(item *retryItem) bool {
	r.mu.Lock()
	if r.closed || item.attempt >= r.retry.MaxAttempts || len(r.queue) >= maxRetryQueue {
		if len(r.queue) >= maxRetryQueue {
			r.log.Error("revocation retry queue full", zap.String("provider", item.provider), zap.String("user", item.user))
		}
		r.mu.Unlock()
		return false
	}
	item.due = time.Now().Add(r.backoff(item.attempt))
	r.mu.Unlock()
	r.store(item)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return item.stored // Close ran meanwhile: the store has it, or it is lost
	}
	r.schedule(item)
	return true
}

// schedule adds item to the in-memory queue and wakes the loop. Callers
// hold mu.
func (r *Revoker) schedule(item *retryItem) {
	if item.id != "" {
		r.held[item.id] = true
	}
	r.queue = append(r.queue, item)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// store records item in the grant store, so that a restart does not lose
// it. A failure is logged: the item then lives in memory only.
func (r *Revoker) store(item *retryItem) {
	if item.id == "" {
		id, err := store.NewRevocationID()
		if err != nil {
			r.log.Error("queued provider revocation not stored", zap.Error(err))
			return
		}
		item.id, item.queued = id, time.Now().UTC()
	}
	ctx, cancel := context.WithTimeout(context.Background(), queueStoreTimeout)
	defer cancel()
	if err := r.st.PutRevocation(ctx, item.revocation()); err != nil {
		r.log.Warn("queued provider revocation not stored; a restart would abandon it", zap.String("provider", item.provider),
			zap.String("user", item.user), zap.Error(err))
		return
	}
	item.stored = true
}

// unstore removes item from the grant store once its outcome is final.
func (r *Revoker) unstore(item *retryItem) {
	if !item.stored {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), queueStoreTimeout)
	defer cancel()
	if err := r.st.DeleteRevocation(ctx, item.id); err != nil {
		r.log.Warn("finished provider revocation not removed from the store; it is retried once more after a restart",
			zap.String("provider", item.provider), zap.String("user", item.user), zap.Error(err))
	}
}

// claim takes or renews this replica's lease on the stored revocation it,
// reporting false when another replica holds it. When the store cannot be
// reached the retry goes ahead: a revocation made twice is harmless.
func (r *Revoker) claim(it *retryItem) bool {
	ctx, cancel := context.WithTimeout(context.Background(), queueStoreTimeout)
	defer cancel()
	var l *store.Lease
	var err error
	if it.claim != nil {
		l, err = r.st.RenewLease(ctx, it.claim, retryClaimTTL)
	} else {
		l, err = r.st.AcquireLease(ctx, leaseRevocations, it.id, store.LeaseRequest{Holder: r.holder, TTL: retryClaimTTL})
	}
	switch {
	case err == nil:
		it.claim = l
	case errors.Is(err, store.ErrLeaseHeld), errors.Is(err, store.ErrLeaseLost):
		return false
	}
	return true
}

// Resume takes up the provider revocations queued in the store (by this
// process before a restart, by another replica, or by the CLI) that this
// Revoker does not hold yet. A connect server calls it when it starts. It
// returns how many it took up.
func (r *Revoker) Resume(ctx context.Context) (int, error) {
	list, err := r.st.ListRevocations(ctx)
	if err != nil {
		return 0, fmt.Errorf("resume provider revocations: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, nil
	}
	n := 0
	for _, rv := range list {
		if r.held[rv.ID] || len(r.queue) >= maxRetryQueue {
			continue
		}
		r.schedule(&retryItem{
			id: rv.ID, provider: rv.Provider, user: rv.User, generation: rv.Generation, fingerprint: rv.Fingerprint,
			actor: rv.Actor, accessToken: rv.AccessToken, refresh: rv.RefreshToken, attempt: rv.Attempt,
			due: rv.Due, queued: rv.Queued, stored: true,
		})
		n++
	}
	if n > 0 {
		r.log.Info("queued provider revocations resumed", zap.Int("count", n))
	}
	return n, nil
}

// backoff returns the wait before retry number attempt+1: the interval
// doubled per earlier retry, capped, with ±20% jitter so that a provider
// coming back is not hit by every queued revocation at once.
func (r *Revoker) backoff(attempt int) time.Duration {
	d := r.retry.Interval
	for i := 0; i < attempt && d < maxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, maxRetryDelay)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// loop runs due retries until Close.
func (r *Revoker) loop() {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.mu.Lock()
		var next time.Time
		var due []*retryItem
		now := time.Now()
		kept := r.queue[:0]
		for _, it := range r.queue {
			if !now.Before(it.due) {
				due = append(due, it)
				continue
			}
			kept = append(kept, it)
			if next.IsZero() || it.due.Before(next) {
				next = it.due
			}
		}
		clear(r.queue[len(kept):])
		r.queue = kept
		r.running = len(due)
		if len(r.queue) == 0 && r.running == 0 {
			r.idle.Broadcast()
		}
		r.mu.Unlock()

		for _, it := range due {
			r.retryOne(it)
		}
		if len(due) > 0 {
			r.mu.Lock()
			r.running = 0
			r.mu.Unlock()
			continue // look again: retries may have been queued meanwhile
		}

		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-r.stop:
			return
		case <-r.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
	}
}

// retryOne makes one more attempt for it and audits a final outcome. A
// stored revocation is claimed first: when another replica holds it, this
// one lets it go.
func (r *Revoker) retryOne(it *retryItem) {
	if it.stored && !r.claim(it) {
		r.log.Debug("queued provider revocation retried by another replica", zap.String("provider", it.provider), zap.String("user", it.user))
		r.forget(it)
		return
	}
	it.attempt++
	p := r.providers[it.provider]
	outcome := ProviderSkipped
	if p != nil {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-r.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		outcome = r.attempt(ctx, p, it)
		cancel()
	}
	if outcome == ProviderQueued {
		if r.enqueue(it) {
			return
		}
		outcome = ProviderFailed
	}
	r.unstore(it)
	if it.claim != nil {
		r.releaseLease(it.claim)
	}
	r.forget(it)
	r.auditRetry(it, outcome)
}

// forget drops it from the ids this Revoker holds.
func (r *Revoker) forget(it *retryItem) {
	r.mu.Lock()
	delete(r.held, it.id)
	r.mu.Unlock()
}

// auditRetry writes the final outcome of a retried provider revocation.
func (r *Revoker) auditRetry(it *retryItem, outcome string) {
	result := "ok"
	if outcome != ProviderRevoked && outcome != ProviderUnsupported {
		result = "partial"
	}
	r.write(&audit.Record{
		Event:            audit.EventRevoke,
		User:             it.user,
		Provider:         it.provider,
		GrantGeneration:  it.generation,
		TokenFingerprint: it.fingerprint,
		Extra: []zap.Field{
			zap.String(audit.ExtraOutcome, result),
			zap.String(extraLocal, LocalDeleted),
			zap.String(extraProvider, outcome),
			zap.String(extraActor, it.actor),
			zap.Int(extraAttempt, it.attempt),
		},
	})
	r.log.Info("provider revocation retried", zap.String("provider", it.provider), zap.String("user", it.user),
		zap.Int("attempt", it.attempt), zap.String("provider_revocation", outcome))
}

// write writes an audit record, logging a failure: a revocation has
// happened whether or not its record could be written.
func (r *Revoker) write(rec *audit.Record) {
	if r.audit == nil {
		return
	}
	if err := r.audit.Write(rec); err != nil {
		r.log.Error("audit record not written", zap.String("event", rec.Event), zap.String("provider", rec.Provider),
			zap.String("user", rec.User), zap.Error(err))
	}
}

// Pending returns the number of provider revocations waiting for a retry
// or being retried.
func (r *Revoker) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue) + r.running
}

// Drain waits until no provider revocation is queued or running (each
// has succeeded or given up), or until ctx ends; then it returns ctx's
// error. The `grants revoke` command calls it before exiting, so a
// transient provider failure is retried while the command waits.
func (r *Revoker) Drain(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.idle.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.queue)+r.running > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.closed {
			return nil
		}
		r.idle.Wait()
	}
	return nil
}

// Close stops the retries and waits for an attempt in flight. Queued
// revocations the store holds stay there for Resume; those it could not
// take are abandoned, each logged and audited with the outcome failed.
// Close is idempotent.
func (r *Revoker) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	r.mu.Lock()
	left := r.queue
	r.queue = nil
	r.idle.Broadcast()
	r.mu.Unlock()
	for _, it := range left {
		if it.stored {
			r.log.Info("queued provider revocation left in the store for the next start",
				zap.String("provider", it.provider), zap.String("user", it.user))
			continue
		}
		r.log.Warn("provider revocation abandoned at shutdown; revoke it at the provider",
			zap.String("provider", it.provider), zap.String("user", it.user))
		r.auditRetry(it, ProviderFailed)
	}
	return nil
}

// noteRevoked records the revocation in the store's activity record, for
// the apps page. It is for display: a failure is logged, and the grant
// stays deleted.
func (r *Revoker) noteRevoked(ctx context.Context, provider, user, actor string) {
	as, ok := r.st.(store.ActivityStore)
	if !ok {
		return
	}
	if err := as.RecordActivity(ctx, provider, user, store.Activity{RevokedAt: time.Now(), RevokedBy: actor}); err != nil {
		r.log.Warn("revocation not noted in the activity record", zap.String("provider", provider), zap.String("user", user), zap.Error(err))
	}
}
