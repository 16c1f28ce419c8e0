package oauth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/journal"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Refresh timing that is not configurable.
const (
	// leasePollMin is the interval between two looks at a lease held by a
	// peer (with jitter) for the first leasePollFastFor of the wait, after
	// which it doubles up to leasePollMax. A peer's refresh takes one
	// provider round trip, usually tens of milliseconds: looking every
	// 10 ms during it lets a waiting replica answer within about 10 ms of
	// the peer's result (where a doubling schedule could leave it waiting
	// as long again as the refresh took), and one look costs a store read
	// plus a lease attempt per waiting replica. A refresh that outlasts
	// the fast phase is slow anyway; then looks thin out.
	leasePollMin     = 10 * time.Millisecond
	leasePollFastFor = 500 * time.Millisecond
	leasePollMax     = 100 * time.Millisecond
	// maxLeaseWait bounds how long one flight waits for a peer's lease
	// before it gives up (the next call starts a new flight): long enough
	// for a peer's refresh, short enough that a flight detached from its
	// callers does not poll the store for long.
	maxLeaseWait = 30 * time.Second
	// flightSlack is what a flight may take beyond waiting for the lease
	// and for the provider's answer: store reads and writes.
	flightSlack = 30 * time.Second
	// useMargin is the least remaining lifetime of an access token that is
	// handed out while its refresh failed or is in a peer's hands: a token
	// expiring while the request is in flight fails upstream with a
	// confusing 401. It matches the injector's token cache margin. For a
	// token whose lifetime is known it is at most an eighth of it.
	useMargin = 30 * time.Second
	// persistAttempts and persistBackoff bound the immediate retries of the
	// write of refreshed tokens; after that the write is retried in the
	// background (persistRetryMin doubling to persistRetryMax) until the
	// store takes it.
	persistAttempts = 3
	persistBackoff  = 100 * time.Millisecond
	persistRetryMin = 200 * time.Millisecond
	persistRetryMax = time.Second
	// markAttempts bounds the compare-and-swap loop that marks a grant
	// reconnect_required while other writers change it.
	markAttempts = 3
	// releaseTimeout bounds the release of a lease; a lease that could not
	// be released expires by itself after its TTL.
	releaseTimeout = 5 * time.Second
	// skewShare and jitterShare bound the skew and the jitter by the
	// token's lifetime (skew at most a quarter of it, jitter and use
	// margin an eighth), so short-lived tokens are refreshed once per
	// lifetime, each replica at its own instant.
	skewShare   = 4
	jitterShare = 8
)

// Outcome says how one token-endpoint call ended.
type Outcome string

// Outcomes of a token-endpoint call, as reported in RefreshEvent.
const (
	// OutcomeRefreshed: new tokens were issued and persisted.
	OutcomeRefreshed Outcome = "refreshed"
	// OutcomeDeferred: new tokens were issued and journalled, but the store
	// did not take them yet; the write is retried in the background, the
	// lease is kept meanwhile, and the new access token is used. An
	// OutcomePersisted or OutcomeDropped event follows.
	OutcomeDeferred Outcome = "deferred"
	// OutcomePersisted: tokens issued earlier (deferred, or found in the
	// journal at start-up) were written to the store. No token-endpoint
	// call.
	OutcomePersisted Outcome = "persisted"
	// OutcomeDropped: tokens issued earlier were not written because the
	// grant changed meanwhile (the user reconnected or revoked it, or a peer
	// took it over); the stored grant wins. No token-endpoint call.
	OutcomeDropped Outcome = "dropped"
	// OutcomeReusedPeerResult: the provider answered invalid_grant, but the
	// re-read grant showed that someone else had refreshed (or reconnected)
	// it meanwhile; their result was used and nothing was marked.
	OutcomeReusedPeerResult Outcome = "reused_peer_result"
	// OutcomeInvalidGrant: the provider answered invalid_grant and the grant
	// was marked reconnect_required.
	OutcomeInvalidGrant Outcome = "invalid_grant"
	// OutcomeRefreshLost: the provider answered invalid_grant to a refresh
	// token that an earlier attempt may have spent (a lease holder that
	// stopped answering, or a request whose answer never came), and the
	// grant was marked reconnect_required. It tells a grant lost to a fault
	// apart from one the user or the provider revoked.
	OutcomeRefreshLost Outcome = "refresh_lost"
	// OutcomeTransientError: timeout, connection failure, 429 or 5xx; the
	// grant is untouched.
	OutcomeTransientError Outcome = "transient_error"
	// OutcomeMisconfigured: the provider refused the client (invalid_client
	// and similar); the grant is untouched.
	OutcomeMisconfigured Outcome = "misconfigured"
	// OutcomePersistFailed: new tokens were issued but neither the journal
	// nor the store took them (they wait in memory, the access token unused,
	// and the write is retried in the background), or the grant changed
	// under the lease and the new tokens were dropped.
	OutcomePersistFailed Outcome = "persist_failed"
)

// RefreshEvent describes one token-endpoint call, or the later fate of
// tokens a call could not persist at once, for the audit trail. It holds no
// secret.
type RefreshEvent struct {
	Provider string
	User     string
	Outcome  Outcome
	// Rotated reports whether the provider issued a new refresh token.
	Rotated bool
	// Generation is the grant generation after the call: the new one when
	// the tokens were persisted (or deferred), otherwise the stored one.
	Generation int64
	// Duration is how long the token-endpoint call took (for
	// OutcomePersisted and OutcomeDropped: how long the tokens waited).
	Duration time.Duration
	// Err is the error of the call or of what followed it (nil for the
	// successful outcomes). Its text holds no secret and no provider
	// response body.
	Err error
}

// Journal keeps refreshed grants durable until the store holds them;
// *journal.Journal implements it.
type Journal interface {
	Write(e *journal.Entry) error
	Remove(provider, user string, upTo int64) error
	Load() ([]*journal.Entry, error)
}

var _ Journal = (*journal.Journal)(nil)

// Options configure a Source. The zero value is usable.
type Options struct {
	// Holder names this Source in store leases; it must be unique per Source
	// instance across all replicas sharing the store and satisfy
	// store.ValidateHolder. Empty means a generated one: the host name, the
	// process id and a random suffix.
	Holder string
	// Logger receives operational logs (never a token or secret). Nil
	// discards them.
	Logger *zap.Logger
	// OnRefresh, when set, is called once per token-endpoint call, from the
	// goroutine that made it, after the outcome is settled, and once more
	// when tokens whose write was deferred are written or dropped. It must
	// not block for long.
	OnRefresh func(RefreshEvent)
	// Journal, when set, makes refreshed tokens durable locally before they
	// are used or written to the store (see Recover). Without it, tokens the
	// store does not take at once wait in memory only, unused, and a
	// restart loses them.
	Journal Journal
	// Refresh sets the lease, takeover and answer timing; zero fields take
	// the defaults.
	Refresh RefreshConfig
}

// grantKey identifies one grant.
type grantKey struct{ provider, user string }

// flight is one refresh of a grant in progress; callers of Token wait for
// it.
type flight struct {
	done chan struct{} // closed when tok and err are set
	slow chan struct{} // closed when the provider outlasts its timeout
	once sync.Once
	tok  injector.Token
	err  error
}

func (f *flight) markSlow() { f.once.Do(func() { close(f.slow) }) }

// Source hands out access tokens from the grant store, refreshing them at
// the provider when they are about to expire (see the package
// documentation for the sequence). It implements injector.Source and is
// safe for concurrent use; one Source is one "replica" for the lease.
type Source struct {
	st        store.Store
	regs      store.RegistrationStore // nil when st keeps no MCP registrations
	providers map[string]*Provider
	holder    string
	log       *zap.Logger
	onRefresh func(RefreshEvent)
	journal   Journal
	timing    RefreshConfig
	seed      maphash.Seed

	// stop ends background work (heartbeats and deferred writes) at Close.
	stop     chan struct{}
	stopOnce sync.Once
	bg       sync.WaitGroup

	mu      sync.Mutex
	flights map[grantKey]*flight
	pending map[grantKey]*pendingWrite
	busy    int           // flights plus deferred writes
	idle    chan struct{} // closed when busy drops to zero; nil when nobody waits
}

var _ injector.Source = (*Source)(nil)

// NewSource returns a Source reading grants from st and refreshing them at
// providers (keyed by provider name, as in the store). It panics if
// o.Holder is set but invalid: holders come from code, not from users.
func NewSource(st store.Store, providers map[string]*Provider, o Options) *Source {
	holder := o.Holder
	if holder == "" {
		holder = generateHolder()
	}
	if err := store.ValidateHolder(holder); err != nil {
		panic(fmt.Sprintf("oauth.NewSource: Options.Holder: %v", err))
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ps := make(map[string]*Provider, len(providers))
	for name, p := range providers {
		if p != nil {
			ps[name] = p
		}
	}
	regs, _ := st.(store.RegistrationStore)
	return &Source{
		st:        st,
		regs:      regs,
		providers: ps,
		holder:    holder,
		log:       log,
		onRefresh: o.OnRefresh,
		journal:   o.Journal,
		timing:    o.Refresh.withDefaults(),
		seed:      maphash.MakeSeed(),
		stop:      make(chan struct{}),
		flights:   make(map[grantKey]*flight),
		pending:   make(map[grantKey]*pendingWrite),
	}
}

// generateHolder returns "host/pid/random", with the host name reduced to
// what store.ValidateHolder accepts.
func generateHolder() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' {
			return '_'
		}
		return r
	}, host)
	if len(host) > 200 {
		host = host[:200]
	}
	if host == "" {
		host = "onbehalf"
	}
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.Text()[:12])
}

// Holder returns the lease holder name of this Source.
func (s *Source) Holder() string { return s.holder }

// Token returns user's access token for provider, refreshing the grant when
// its access token expires within the provider's refresh skew (plus this
// Source's jitter for the grant).
//
// A caller whose ctx ends, or who has waited the provider's timeout for a
// token endpoint that does not answer, gets the current access token if it
// is still usable, else an error wrapping injector.ErrProviderUnavailable;
// the refresh itself goes on, detached, and its result is persisted for the
// next call.
//
// The token carries the grant's refresh token and the provider's client
// secret in Secrets, so that the proxy scrubs them from responses too.
func (s *Source) Token(ctx context.Context, provider, user string) (injector.Token, error) {
	tok, err := s.token(ctx, provider, user)
	if err != nil {
		return tok, err
	}
	p := s.providers[provider]
	if p != nil && p.IsMCP() {
		p = p.cached() // the registered client's secret, once resolved
	}
	if p != nil && p.oauth.ClientSecret != "" {
		// A full slice expression: the append never writes into an
		// array another copy of the token shares.
		tok.Secrets = append(tok.Secrets[:len(tok.Secrets):len(tok.Secrets)], p.oauth.ClientSecret)
	}
	return tok, nil
}

func (s *Source) token(ctx context.Context, provider, user string) (injector.Token, error) {
	if err := store.ValidateProvider(provider); err != nil {
		return injector.Token{}, fmt.Errorf("token: %w", err)
	}
	if err := store.ValidateUser(user); err != nil {
		return injector.Token{}, fmt.Errorf("token %s: %w", provider, err)
	}
	p := s.providers[provider]
	if p == nil {
		return injector.Token{}, fmt.Errorf("token %s/%s: %w: %w", provider, user, injector.ErrProviderMisconfigured, ErrUnknownProvider)
	}
	k := grantKey{provider, user}
	var cur *store.Grant
	switch pw := s.pendingFor(k); {
	case pw != nil && pw.durable:
		// Refreshed tokens the store has not taken yet, journalled: they
		// are the grant's newest.
		if tok, done, err := s.decide(p, pw.grant); done {
			return tok, err
		}
		cur = pw.grant
	case pw == nil:
		g, _, err := s.st.Get(ctx, provider, user)
		if err != nil {
			return injector.Token{}, readError(k, err)
		}
		if tok, done, err := s.decide(p, g); done {
			return tok, err
		}
		cur = g
	}
	f := s.join(p, k)
	select {
	case <-f.done:
		return f.tok, f.err
	case <-f.slow:
		if cur != nil && usable(cur) {
			return tokenOf(cur), nil
		}
		return injector.Token{}, fmt.Errorf("token %s/%s: the token endpoint has not answered within %s: %w", provider, user, p.cfg.Timeout, injector.ErrProviderUnavailable)
	case <-ctx.Done():
		if cur != nil && usable(cur) {
			return tokenOf(cur), nil
		}
		return injector.Token{}, fmt.Errorf("token %s/%s: waiting for refresh: %w: %w", provider, user, injector.ErrProviderUnavailable, ctx.Err())
	}
}

// join returns the flight of k, starting one when none is in progress. The
// flight runs detached from every caller: the token-endpoint call must not
// be cut off by the caller that happened to start it, or a rotated refresh
// token could be lost between the provider and the store.
func (s *Source) join(p *Provider, k grantKey) *flight {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.flights[k]; f != nil {
		return f
	}
	f := &flight{done: make(chan struct{}), slow: make(chan struct{})}
	s.flights[k] = f
	s.busy++
	go func() {
		tok, err := s.refresh(p, k, f)
		s.mu.Lock()
		f.tok, f.err = tok, err
		delete(s.flights, k)
		s.mu.Unlock()
		close(f.done)
		s.done()
	}()
	return f
}

// done marks the end of one flight or deferred write.
func (s *Source) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy--
	if s.busy == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// Drain waits until no refresh started by this Source is in flight and no
// refreshed tokens wait for the store, or ctx ends. Call it at shutdown,
// after the last Token call, so that tokens a provider already issued are
// persisted before the process exits; then call Close. Tokens still
// waiting when ctx ends stay in the journal for the next start.
func (s *Source) Drain(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.busy == 0 {
			s.mu.Unlock()
			return nil
		}
		if s.idle == nil {
			s.idle = make(chan struct{})
		}
		idle := s.idle
		s.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("drain refreshes: %w", ctx.Err())
		}
	}
}

// Close stops the background work of the Source: lease heartbeats and
// deferred store writes. Leases of tokens that still wait for the store are
// not released: they run out by themselves, and until then peers do not
// present the refresh token those tokens replaced. Call Drain first.
func (s *Source) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.bg.Wait()
}

// decide handles a grant that needs no refresh. It reports done=false when
// the grant must be refreshed.
//
// A grant without a refresh token whose access token is no longer usable
// yields ErrReconnectRequired without being marked: nothing at the provider
// says the grant is dead (it simply cannot be renewed), and the connect
// server overwrites it when the user reconnects.
func (s *Source) decide(p *Provider, g *store.Grant) (tok injector.Token, done bool, err error) {
	if g.Status != store.StatusActive {
		return injector.Token{}, true, fmt.Errorf("token %s/%s: grant is %s: %w", g.Provider, g.User, g.Status, injector.ErrReconnectRequired)
	}
	if g.AccessToken != "" && !s.needsRefresh(p, g) {
		return tokenOf(g), true, nil
	}
	if g.RefreshToken == "" {
		if usable(g) {
			return tokenOf(g), true, nil
		}
		return injector.Token{}, true, fmt.Errorf("token %s/%s: access token expired and the grant has no refresh token: %w", g.Provider, g.User, injector.ErrReconnectRequired)
	}
	return injector.Token{}, false, nil
}

// lifetime returns the lifetime of g's access token, or 0 when unknown.
func lifetime(g *store.Grant) time.Duration {
	if g.IssuedAt.IsZero() || g.Expiry.IsZero() || !g.Expiry.After(g.IssuedAt) {
		return 0
	}
	return g.Expiry.Sub(g.IssuedAt)
}

// shareOf returns d bounded by life/share when life is known.
func shareOf(d, life time.Duration, share int64) time.Duration {
	if life > 0 {
		return min(d, life/time.Duration(share))
	}
	return d
}

// needsRefresh reports whether g's access token is missing or expires
// within the skew plus this Source's jitter for the grant. Skew and jitter
// are the provider's, each bounded by a share of the token's lifetime when
// it is known. The jitter is fixed per Source and grant (a keyed hash), so
// each replica has its own refresh instant for a grant and a busy grant
// does not get refreshed at the earliest instant of any call.
func (s *Source) needsRefresh(p *Provider, g *store.Grant) bool {
	if g.AccessToken == "" {
		return true
	}
	if g.Expiry.IsZero() {
		return false
	}
	life := lifetime(g)
	early := shareOf(p.cfg.RefreshSkew, life, skewShare)
	if j := shareOf(p.cfg.RefreshJitter, life, jitterShare); j > 0 {
		early += time.Duration(maphash.String(s.seed, g.Provider+"\x00"+g.User) % uint64(j))
	}
	return !time.Now().Add(early).Before(g.Expiry)
}

// usable reports whether g's access token can still be handed out: present
// and valid for at least useMargin (or an eighth of its lifetime).
func usable(g *store.Grant) bool {
	return g.AccessToken != "" && (g.Expiry.IsZero() || time.Now().Add(shareOf(useMargin, lifetime(g), jitterShare)).Before(g.Expiry))
}

// tokenOf returns g's access token.
func tokenOf(g *store.Grant) injector.Token {
	tok := injector.Token{Value: g.AccessToken, Generation: g.Generation, Expiry: g.Expiry}
	if g.RefreshToken != "" {
		tok.Secrets = []string{g.RefreshToken}
	}
	return tok
}

// refresh runs one refresh flight for k: steps 2 to 6 of the sequence (the
// single flight of step 1 is join's). It runs detached from every caller,
// bounded by the longest it may legitimately take.
func (s *Source) refresh(p *Provider, k grantKey, f *flight) (injector.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), maxLeaseWait+s.timing.AnswerDeadline+flightSlack)
	defer cancel()

	// Refreshed tokens not yet in the store come first: the stored refresh
	// token is spent.
	if pw := s.pendingFor(k); pw != nil {
		return s.awaitPending(ctx, p, k, f, pw)
	}

	g, _, err := s.st.Get(ctx, k.provider, k.user)
	if err != nil {
		return injector.Token{}, readError(k, err)
	}
	if tok, done, err := s.decide(p, g); done {
		return tok, err // a previous flight finished in the meantime
	}
	// An MCP server's token endpoint and client are its stored
	// registration's (the connect server wrote it when someone connected
	// it); every other provider is resolved already.
	rp, err := p.Resolve(ctx, s.regs)
	if err != nil {
		if usable(g) {
			return tokenOf(g), nil
		}
		return injector.Token{}, fmt.Errorf("token %s/%s: %w", k.provider, k.user, storeError(err))
	}
	p = rp

	// Step 2: the lease (kept alive by a heartbeat), or a peer's result.
	kp, other, maybeSpent, err := s.acquireLease(ctx, p, g)
	if err != nil {
		if usable(g) {
			return tokenOf(g), nil
		}
		return injector.Token{}, fmt.Errorf("token %s/%s: %w", k.provider, k.user, err)
	}
	if other != nil {
		if other.Status != store.StatusActive {
			return injector.Token{}, fmt.Errorf("token %s/%s: grant is %s: %w", k.provider, k.user, other.Status, injector.ErrReconnectRequired)
		}
		return tokenOf(other), nil
	}
	// The lease is released when the flight ends, unless the deferred
	// write of step 5 takes it over or the fate of a presented refresh
	// token is unknown (then it runs out, and peers apply the takeover
	// rules).
	leaseDone := kp.release
	defer func() { leaseDone() }()

	// Step 3: re-read under the lease.
	cur, ver, err := s.st.Get(ctx, k.provider, k.user)
	if err != nil {
		return injector.Token{}, readError(k, err)
	}
	if cur.Generation != g.Generation && cur.Status == store.StatusActive && usable(cur) {
		return tokenOf(cur), nil // a peer refreshed between our read and the lease
	}
	if tok, done, err := s.decide(p, cur); done {
		return tok, err
	}
	if cur.Generation != g.Generation {
		maybeSpent = false // the stale holder's token is not the one we present
	}

	// Step 4: the token endpoint, with the lease known to be ours.
	var (
		nt     *oauth2.Token
		unsure bool
		start  time.Time
	)
	for attempt := 0; ; attempt++ {
		if err := kp.ensure(ctx); err != nil {
			if errors.Is(err, store.ErrLeaseLost) {
				return injector.Token{}, fmt.Errorf("token %s/%s: refresh lease lost before the refresh: %w", k.provider, k.user, injector.ErrProviderUnavailable)
			}
			if usable(cur) {
				return tokenOf(cur), nil
			}
			return injector.Token{}, fmt.Errorf("token %s/%s: renew refresh lease: %w", k.provider, k.user, storeError(err))
		}
		start = time.Now()
		nt, unsure, err = p.present(ctx, cur.RefreshToken, s.timing.AnswerDeadline, f.markSlow)
		if !unsure {
			break
		}
		// Sent, but no answer: the provider may have spent the token.
		maybeSpent = true
		if attempt > 0 || !withinGrace(p, start) {
			// Its fate stays unknown: keep the lease until it runs out, so
			// peers present the token only under the takeover rules.
			leaseDone = kp.abandon
			break
		}
		s.log.Info("refresh request sent but unanswered; presenting the refresh token again within the provider's reuse grace",
			zap.String("provider", k.provider), zap.String("user", k.user), zap.Error(err))
	}
	dur := time.Since(start)
	if err != nil {
		return s.refreshFailed(ctx, cur, err, dur, maybeSpent)
	}

	// Step 5: durable first, then the store.
	ng := merge(cur, nt)
	rotated := ng.RefreshToken != cur.RefreshToken
	ev := RefreshEvent{Provider: k.provider, User: k.user, Rotated: rotated, Duration: dur}
	pw := s.hold(k, ng, ver, cur.RefreshToken, kp)
	_, err = s.persist(ctx, ng, ver, cur.RefreshToken, persistAttempts)
	switch {
	case err == nil:
		s.landed(k, pw)
		ev.Outcome, ev.Generation = OutcomeRefreshed, ng.Generation
		s.emit(ev)
		s.log.Debug("grant refreshed", zap.String("provider", k.provider), zap.String("user", k.user),
			zap.Int64("generation", ng.Generation), zap.Bool("rotated", rotated), zap.Duration("duration", dur))
		return tokenOf(ng), nil

	case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
		// The grant changed under our lease (the user reconnected or
		// revoked, or a peer took the lease over): the stored grant wins
		// and the new tokens are dropped.
		s.dropped(k, pw)
		ev.Outcome, ev.Generation, ev.Err = OutcomePersistFailed, cur.Generation, err
		s.emit(ev)
		s.log.Warn("grant changed during its refresh; the new tokens are dropped",
			zap.String("provider", k.provider), zap.String("user", k.user), zap.Error(err))
		now, _, gerr := s.st.Get(ctx, k.provider, k.user)
		switch {
		case gerr != nil:
			return injector.Token{}, readError(k, gerr)
		case now.Status != store.StatusActive:
			return injector.Token{}, fmt.Errorf("token %s/%s: grant is %s: %w", k.provider, k.user, now.Status, injector.ErrReconnectRequired)
		case usable(now):
			return tokenOf(now), nil
		}
		return injector.Token{}, fmt.Errorf("token %s/%s: grant changed during refresh: %w", k.provider, k.user, injector.ErrProviderUnavailable)

	default:
		// The store does not take the tokens now: they are written in the
		// background, with the lease kept alive meanwhile.
		leaseDone = func() {}
		s.deferWrite(k, pw)
		ev.Generation, ev.Err = ng.Generation, err
		if pw.durable {
			ev.Outcome = OutcomeDeferred
			s.emit(ev)
			s.log.Warn("refreshed tokens journalled; the store write is retried in the background",
				zap.String("provider", k.provider), zap.String("user", k.user), zap.Bool("rotated", rotated), zap.Error(err))
			return tokenOf(ng), nil
		}
		ev.Outcome, ev.Generation = OutcomePersistFailed, cur.Generation
		s.emit(ev)
		s.log.Error("refreshed tokens could not be journalled or persisted; they wait in memory and the store write is retried in the background",
			zap.String("provider", k.provider), zap.String("user", k.user), zap.Bool("rotated", rotated), zap.Error(err))
		return injector.Token{}, fmt.Errorf("token %s/%s: persist refreshed tokens: %w", k.provider, k.user, unavailable(err))
	}
}

// withinGrace reports whether a refresh token first presented at sent may
// be presented again under p's reuse grace, with a margin for the
// provider's clock and the time the request takes to arrive.
func withinGrace(p *Provider, sent time.Time) bool {
	g := p.cfg.RefreshReuseGrace
	return g > 0 && time.Since(sent) < g/2
}

// refreshFailed handles a failed token-endpoint call for used, the grant
// read under the lease. maybeSpent reports that the presented refresh token
// may have been spent by an earlier presentation.
func (s *Source) refreshFailed(ctx context.Context, used *store.Grant, err error, dur time.Duration, maybeSpent bool) (injector.Token, error) {
	k := grantKey{used.Provider, used.User}
	ev := RefreshEvent{Provider: k.provider, User: k.user, Generation: used.Generation, Duration: dur, Err: err}
	fields := []zap.Field{zap.String("provider", k.provider), zap.String("user", k.user), zap.Error(err)}
	switch {
	case errors.Is(err, errInvalidGrant):
		return s.invalidGrant(ctx, used, ev, maybeSpent)
	case errors.Is(err, injector.ErrProviderMisconfigured):
		ev.Outcome = OutcomeMisconfigured
		s.emit(ev)
		s.log.Error("PROVIDER MISCONFIGURED: the token endpoint refused the sidecar's client; no grant of this provider can be refreshed until an operator fixes the client configuration", fields...)
	default:
		ev.Outcome = OutcomeTransientError
		s.emit(ev)
		s.log.Warn("token endpoint failed; the grant is kept", fields...)
	}
	if usable(used) {
		return tokenOf(used), nil
	}
	return injector.Token{}, fmt.Errorf("token %s/%s: refresh: %w", k.provider, k.user, err)
}

// invalidGrant handles invalid_grant for used: it re-reads the grant and
// uses a peer's result if the grant changed, else marks it
// reconnect_required (by compare-and-swap, keeping the grant). The outcome
// is OutcomeRefreshLost when maybeSpent.
func (s *Source) invalidGrant(ctx context.Context, used *store.Grant, ev RefreshEvent, maybeSpent bool) (injector.Token, error) {
	k := grantKey{used.Provider, used.User}
	fields := []zap.Field{zap.String("provider", k.provider), zap.String("user", k.user)}
	outcome := OutcomeInvalidGrant
	if maybeSpent {
		outcome = OutcomeRefreshLost
	}
	reconnect := fmt.Errorf("token %s/%s: refresh: %w: %w", k.provider, k.user, errInvalidGrant, injector.ErrReconnectRequired)
	var lastErr error
	for range markAttempts {
		cur, ver, err := s.st.Get(ctx, k.provider, k.user)
		if err != nil {
			lastErr = readError(k, err)
			break
		}
		if cur.Status != store.StatusActive {
			ev.Outcome, ev.Generation = outcome, cur.Generation
			s.emit(ev)
			return injector.Token{}, reconnect
		}
		if cur.Generation != used.Generation || cur.RefreshToken != used.RefreshToken {
			// Someone else refreshed or reconnected the grant meanwhile: the
			// refusal concerned a token that is no longer ours to judge.
			ev.Outcome, ev.Generation, ev.Err = OutcomeReusedPeerResult, cur.Generation, nil
			s.emit(ev)
			s.log.Info("refresh token refused, but the grant was renewed meanwhile; using the renewed grant", fields...)
			if usable(cur) {
				return tokenOf(cur), nil
			}
			return injector.Token{}, fmt.Errorf("token %s/%s: grant changed during refresh: %w", k.provider, k.user, injector.ErrProviderUnavailable)
		}
		marked := cur.Clone()
		marked.Status = store.StatusReconnectRequired
		if _, err := s.st.Put(ctx, marked, ver); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			lastErr = fmt.Errorf("token %s/%s: mark reconnect_required: %w", k.provider, k.user, storeError(err))
			break
		}
		ev.Outcome, ev.Generation = outcome, cur.Generation
		s.emit(ev)
		if maybeSpent {
			s.log.Error("REFRESH LOST: the provider refused a refresh token that an earlier attempt may have spent; grant marked reconnect_required", fields...)
		} else {
			s.log.Warn("refresh token refused (invalid_grant); grant marked reconnect_required", fields...)
		}
		return injector.Token{}, reconnect
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("token %s/%s: mark reconnect_required: grant kept changing: %w", k.provider, k.user, store.ErrConflict)
	}
	// Not marked: the next call presents the same refresh token and gets
	// invalid_grant again, which is harmless. The user must reconnect
	// either way.
	ev.Outcome, ev.Err = outcome, lastErr
	s.emit(ev)
	s.log.Error("refresh token refused (invalid_grant), but the grant could not be marked", append(fields, zap.Error(lastErr))...)
	return injector.Token{}, fmt.Errorf("%w (%w)", reconnect, lastErr)
}

// merge returns the grant after a refresh of cur: the new access token, the
// new refresh token if the provider rotated it (x/oauth2 already keeps the
// presented one otherwise), the token type, expiry and scopes the provider
// reported, the issue time, status active and the next generation.
func merge(cur *store.Grant, nt *oauth2.Token) *store.Grant {
	ng := cur.Clone()
	ng.AccessToken = nt.AccessToken
	if nt.RefreshToken != "" {
		ng.RefreshToken = nt.RefreshToken
	}
	if nt.TokenType != "" {
		ng.TokenType = nt.TokenType
	}
	ng.Expiry = nt.Expiry
	ng.IssuedAt = time.Now().UTC()
	if sc, ok := nt.Extra("scope").(string); ok && strings.TrimSpace(sc) != "" {
		ng.Scopes = strings.Fields(sc)
	}
	ng.Status = store.StatusActive
	ng.Generation = cur.Generation + 1
	return ng
}

// emit reports ev to Options.OnRefresh.
func (s *Source) emit(ev RefreshEvent) {
	if s.onRefresh != nil {
		s.onRefresh(ev)
	}
}

// readError classifies an error from reading a grant.
func readError(k grantKey, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("token %s/%s: %w", k.provider, k.user, injector.ErrGrantMissing)
	}
	return fmt.Errorf("token %s/%s: %w", k.provider, k.user, storeError(err))
}

// storeError makes sure a store failure that is about reaching the store
// (including running out of time doing so) wraps store.ErrUnavailable,
// which the proxy maps to store_unavailable.
func storeError(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// unavailable returns err wrapping store.ErrUnavailable: a write of
// refreshed tokens that failed for any reason leaves the grant unusable
// until the store takes it, which the agent sees as store_unavailable.
func unavailable(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}
