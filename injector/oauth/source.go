package oauth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/maphash"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Refresh timing. The values keep this order: token-endpoint timeout
// (maxTimeout at most) < leaseTTL < maxLeaseWait < flightTimeout.
const (
	// leaseTTL is the lifetime of the store lease taken for one refresh. It
	// outlives the longest token-endpoint call (maxTimeout) plus the store
	// write, so the lease never runs out under a healthy holder, and it is
	// short enough that a holder dying mid-refresh blocks its peers only
	// briefly.
	leaseTTL = 30 * time.Second
	// maxLeaseWait bounds how long a refresh waits for a peer's lease: long
	// enough to take over the lease of a peer that died holding it.
	maxLeaseWait = leaseTTL + 5*time.Second
	// leasePollMin and leasePollMax bound the interval between two looks at
	// a lease held by a peer (doubling, with jitter): a peer's refresh takes
	// one provider round trip, usually tens of milliseconds, and one look
	// costs a store read plus a lease attempt per waiting replica.
	leasePollMin = 20 * time.Millisecond
	leasePollMax = 100 * time.Millisecond
	// flightTimeout bounds one refresh flight from start to end (waiting
	// for the lease, the token-endpoint call, the write and its retries), so
	// a flight detached from its callers always ends.
	flightTimeout = maxLeaseWait + maxTimeout + 10*time.Second
	// useMargin is the least remaining lifetime of an access token that is
	// handed out while its refresh failed or is in a peer's hands: a token
	// expiring while the request is in flight fails upstream with a
	// confusing 401. It matches the injector's token cache margin.
	useMargin = 30 * time.Second
	// persistAttempts and persistBackoff bound the immediate retries of the
	// write of refreshed tokens; after that the tokens wait in memory and
	// the next call for the grant retries the write.
	persistAttempts = 3
	persistBackoff  = 100 * time.Millisecond
	// markAttempts bounds the compare-and-swap loop that marks a grant
	// reconnect_required while other writers change it.
	markAttempts = 3
	// releaseTimeout bounds the release of a lease; a lease that could not
	// be released expires by itself after leaseTTL.
	releaseTimeout = 5 * time.Second
)

// Outcome says how one token-endpoint call ended.
type Outcome string

// Outcomes of a token-endpoint call, as reported in RefreshEvent.
const (
	// OutcomeRefreshed: new tokens were issued and persisted.
	OutcomeRefreshed Outcome = "refreshed"
	// OutcomeReusedPeerResult: the provider answered invalid_grant, but the
	// re-read grant showed that someone else had refreshed (or reconnected)
	// it meanwhile; their result was used and nothing was marked.
	OutcomeReusedPeerResult Outcome = "reused_peer_result"
	// OutcomeInvalidGrant: the provider answered invalid_grant and the grant
	// was marked reconnect_required.
	OutcomeInvalidGrant Outcome = "invalid_grant"
	// OutcomeTransientError: timeout, connection failure, 429 or 5xx; the
	// grant is untouched.
	OutcomeTransientError Outcome = "transient_error"
	// OutcomeMisconfigured: the provider refused the client (invalid_client
	// and similar); the grant is untouched.
	OutcomeMisconfigured Outcome = "misconfigured"
	// OutcomePersistFailed: new tokens were issued but could not be written
	// to the store (they wait in memory), or the grant changed under the
	// lease and the new tokens were dropped.
	OutcomePersistFailed Outcome = "persist_failed"
)

// RefreshEvent describes one token-endpoint call, for the audit trail. It
// holds no secret.
type RefreshEvent struct {
	Provider string
	User     string
	Outcome  Outcome
	// Rotated reports whether the provider issued a new refresh token.
	Rotated bool
	// Generation is the grant generation after the call: the new one when
	// the tokens were persisted, otherwise the stored one.
	Generation int64
	// Duration is how long the token-endpoint call took.
	Duration time.Duration
	// Err is the error of the call or of what followed it (nil for
	// OutcomeRefreshed and OutcomeReusedPeerResult). Its text holds no
	// secret and no provider response body.
	Err error
}

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
	// goroutine that made it, after the outcome is settled. It must not
	// block for long: callers of Token for that grant wait meanwhile.
	OnRefresh func(RefreshEvent)
}

// grantKey identifies one grant.
type grantKey struct{ provider, user string }

func (k grantKey) String() string { return k.provider + "\x00" + k.user }

// pendingWrite holds refreshed tokens that the store refused to take. Until
// they are written (or the stored grant is found to have changed), no
// refresh of the grant is attempted: the provider considers the refresh
// token in the store spent.
type pendingWrite struct {
	grant *store.Grant
	cas   store.Version
	// spent is the refresh token the provider consumed to mint grant's.
	spent string
	// lease is still held when the provider rotated the refresh token: it
	// keeps peers from presenting the spent one until it expires.
	lease *store.Lease
}

// Source hands out access tokens from the grant store, refreshing them at
// the provider when they are about to expire (see the package
// documentation for the sequence). It implements injector.Source and is
// safe for concurrent use; one Source is one "replica" for the lease.
type Source struct {
	st        store.Store
	providers map[string]*Provider
	holder    string
	log       *zap.Logger
	onRefresh func(RefreshEvent)
	seed      maphash.Seed
	group     singleflight.Group

	mu       sync.Mutex
	pending  map[grantKey]*pendingWrite
	inflight int
	idle     chan struct{} // closed when inflight drops to zero; nil when nobody waits
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
	return &Source{
		st:        st,
		providers: ps,
		holder:    holder,
		log:       log,
		onRefresh: o.OnRefresh,
		seed:      maphash.MakeSeed(),
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
// A caller whose ctx ends while a refresh is in flight gets the current
// access token if it is still usable, else an error wrapping
// injector.ErrProviderUnavailable; the refresh itself goes on, detached, and
// its result is persisted for the next call.
//
// The token carries the grant's refresh token and the provider's client
// secret in Secrets, so that the proxy scrubs them from responses too.
func (s *Source) Token(ctx context.Context, provider, user string) (injector.Token, error) {
	tok, err := s.token(ctx, provider, user)
	if err != nil {
		return tok, err
	}
	if p := s.providers[provider]; p != nil && p.oauth.ClientSecret != "" {
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
	if !s.hasPending(k) {
		g, _, err := s.st.Get(ctx, provider, user)
		if err != nil {
			return injector.Token{}, readError(k, err)
		}
		if tok, done, err := s.decide(p, g); done {
			return tok, err
		}
		cur = g
	}
	// Every caller counts as in flight until its flight's result exists,
	// so Drain cannot miss a flight whose goroutine has not started yet.
	s.flightStarted()
	ch := s.group.DoChan(k.String(), func() (any, error) {
		// Detached: the token-endpoint call must not be cut off by the
		// caller that happened to start the flight, or a rotated refresh
		// token could be lost between the provider and the store.
		return s.refresh(context.WithoutCancel(ctx), p, k)
	})
	select {
	case r := <-ch:
		s.flightEnded()
		if r.Err != nil {
			return injector.Token{}, r.Err
		}
		return r.Val.(injector.Token), nil
	case <-ctx.Done():
		go func() {
			<-ch
			s.flightEnded()
		}()
		if cur != nil && usable(cur) {
			return tokenOf(cur), nil
		}
		return injector.Token{}, fmt.Errorf("token %s/%s: waiting for refresh: %w: %w", provider, user, injector.ErrProviderUnavailable, ctx.Err())
	}
}

// Drain waits until no refresh started by this Source is in flight, or ctx
// ends. Call it at shutdown, after the last Token call, so that tokens a
// provider already issued are persisted before the process exits.
func (s *Source) Drain(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.inflight == 0 {
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

// flightStarted and flightEnded count callers waiting for a refresh flight
// (or, once they gave up, the flight they left behind).
func (s *Source) flightStarted() {
	s.mu.Lock()
	s.inflight++
	s.mu.Unlock()
}

func (s *Source) flightEnded() {
	s.mu.Lock()
	s.inflight--
	if s.inflight == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
	s.mu.Unlock()
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

// needsRefresh reports whether g's access token is missing or expires
// within the provider's skew plus this Source's jitter for the grant. The
// jitter is fixed per Source and grant (a keyed hash), so each replica has
// its own refresh instant for a grant and a busy grant does not get
// refreshed at the earliest instant of any call.
func (s *Source) needsRefresh(p *Provider, g *store.Grant) bool {
	if g.AccessToken == "" {
		return true
	}
	if g.Expiry.IsZero() {
		return false
	}
	early := p.cfg.RefreshSkew
	if j := p.cfg.RefreshJitter; j > 0 {
		early += time.Duration(maphash.String(s.seed, g.Provider+"\x00"+g.User) % uint64(j))
	}
	return !time.Now().Add(early).Before(g.Expiry)
}

// usable reports whether g's access token can still be handed out: present
// and valid for at least useMargin.
func usable(g *store.Grant) bool {
	return g.AccessToken != "" && (g.Expiry.IsZero() || time.Now().Add(useMargin).Before(g.Expiry))
}

// tokenOf returns g's access token.
func tokenOf(g *store.Grant) injector.Token {
	tok := injector.Token{Value: g.AccessToken, Generation: g.Generation, Expiry: g.Expiry}
	if g.RefreshToken != "" {
		tok.Secrets = []string{g.RefreshToken}
	}
	return tok
}

// refresh runs one refresh flight for k (steps 2 to 6 of the sequence; the
// single-flight of step 1 is the caller's).
func (s *Source) refresh(ctx context.Context, p *Provider, k grantKey) (injector.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, flightTimeout)
	defer cancel()

	// Tokens issued earlier but not yet persisted come first: the stored
	// refresh token is spent.
	if pw := s.pendingFor(k); pw != nil {
		tok, ok, err := s.flushPending(ctx, k, pw)
		if err != nil || ok {
			return tok, err
		}
	}

	g, _, err := s.st.Get(ctx, k.provider, k.user)
	if err != nil {
		return injector.Token{}, readError(k, err)
	}
	if tok, done, err := s.decide(p, g); done {
		return tok, err // a previous flight finished in the meantime
	}

	// Step 2: the lease, or a peer's result.
	lease, other, err := s.acquireLease(ctx, g)
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
	keepLease := false
	defer func() {
		if !keepLease {
			s.releaseLease(lease)
		}
	}()

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

	// Step 4: the token endpoint.
	start := time.Now()
	nt, err := p.refresh(ctx, cur.RefreshToken)
	dur := time.Since(start)
	if err != nil {
		return s.refreshFailed(ctx, cur, err, dur)
	}

	// Step 5: persist first.
	ng := merge(cur, nt)
	rotated := ng.RefreshToken != cur.RefreshToken
	ev := RefreshEvent{Provider: k.provider, User: k.user, Rotated: rotated, Duration: dur}
	_, err = s.persist(ctx, ng, ver, cur.RefreshToken)
	switch {
	case err == nil:
		ev.Outcome, ev.Generation = OutcomeRefreshed, ng.Generation
		s.emit(ev)
		s.log.Debug("grant refreshed", zap.String("provider", k.provider), zap.String("user", k.user),
			zap.Int64("generation", ng.Generation), zap.Bool("rotated", rotated), zap.Duration("duration", dur))
		return tokenOf(ng), nil

	case errors.Is(err, store.ErrConflict):
		// The grant changed under our lease (the lease ran out, or the user
		// reconnected or revoked): the stored grant wins and the new tokens
		// are dropped.
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
		// The provider may have spent the stored refresh token: keep the
		// new tokens for the next call to persist, and when the token was
		// rotated keep the lease too, so that peers do not present the
		// spent one while it lasts. The access token is not handed out
		// until it is persisted.
		pw := &pendingWrite{grant: ng, cas: ver, spent: cur.RefreshToken}
		if rotated {
			pw.lease, keepLease = lease, true
		}
		s.setPending(k, pw)
		ev.Outcome, ev.Generation, ev.Err = OutcomePersistFailed, cur.Generation, err
		s.emit(ev)
		s.log.Error("refreshed tokens could not be persisted; they are kept in memory and the write is retried on the next use",
			zap.String("provider", k.provider), zap.String("user", k.user), zap.Bool("rotated", rotated), zap.Error(err))
		return injector.Token{}, fmt.Errorf("token %s/%s: persist refreshed tokens: %w", k.provider, k.user, unavailable(err))
	}
}

// acquireLease takes the refresh lease of g's grant (step 2). While a peer
// holds it, it returns g at once if g's access token is still usable (the
// peer's result is picked up by a later call), else polls the grant until
// the peer's result appears (returned as the second value), the lease can
// be taken, or maxLeaseWait passes.
func (s *Source) acquireLease(ctx context.Context, g *store.Grant) (*store.Lease, *store.Grant, error) {
	deadline := time.Now().Add(maxLeaseWait)
	delay := leasePollMin
	for {
		l, err := s.st.AcquireLease(ctx, g.Provider, g.User, s.holder, leaseTTL)
		if err == nil {
			return l, nil, nil
		}
		if !errors.Is(err, store.ErrLeaseHeld) {
			return nil, nil, storeError(err)
		}
		if usable(g) {
			return nil, g, nil
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("refresh lease held by a peer for more than %s: %w", maxLeaseWait, injector.ErrProviderUnavailable)
		}
		// Full jitter in [delay/2, delay*3/2) spreads the replicas' polls.
		wait := delay/2 + time.Duration(mrand.Int64N(int64(delay)))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("waiting for a peer's refresh: %w: %w", injector.ErrProviderUnavailable, ctx.Err())
		}
		delay = min(2*delay, leasePollMax)
		cur, _, err := s.st.Get(ctx, g.Provider, g.User)
		if err != nil {
			return nil, nil, readError(grantKey{g.Provider, g.User}, err)
		}
		if cur.Status != store.StatusActive || (cur.Generation != g.Generation && usable(cur)) {
			return nil, cur, nil
		}
	}
}

// releaseLease releases l (step 6). Failures are logged: the lease expires
// by itself.
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
			zap.String("provider", l.Provider), zap.String("user", l.User), zap.Duration("ttl", leaseTTL), zap.Error(err))
	}
}

// refreshFailed handles a failed token-endpoint call for used, the grant
// read under the lease.
func (s *Source) refreshFailed(ctx context.Context, used *store.Grant, err error, dur time.Duration) (injector.Token, error) {
	k := grantKey{used.Provider, used.User}
	ev := RefreshEvent{Provider: k.provider, User: k.user, Generation: used.Generation, Duration: dur, Err: err}
	fields := []zap.Field{zap.String("provider", k.provider), zap.String("user", k.user), zap.Error(err)}
	switch {
	case errors.Is(err, errInvalidGrant):
		return s.invalidGrant(ctx, used, ev)
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
// reconnect_required (by compare-and-swap, keeping the grant).
func (s *Source) invalidGrant(ctx context.Context, used *store.Grant, ev RefreshEvent) (injector.Token, error) {
	k := grantKey{used.Provider, used.User}
	fields := []zap.Field{zap.String("provider", k.provider), zap.String("user", k.user)}
	reconnect := fmt.Errorf("token %s/%s: refresh: %w: %w", k.provider, k.user, errInvalidGrant, injector.ErrReconnectRequired)
	var lastErr error
	for range markAttempts {
		cur, ver, err := s.st.Get(ctx, k.provider, k.user)
		if err != nil {
			lastErr = readError(k, err)
			break
		}
		if cur.Status != store.StatusActive {
			ev.Outcome, ev.Generation = OutcomeInvalidGrant, cur.Generation
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
		ev.Outcome, ev.Generation = OutcomeInvalidGrant, cur.Generation
		s.emit(ev)
		s.log.Warn("refresh token refused (invalid_grant); grant marked reconnect_required", fields...)
		return injector.Token{}, reconnect
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("token %s/%s: mark reconnect_required: grant kept changing: %w", k.provider, k.user, store.ErrConflict)
	}
	// Not marked: the next call presents the same refresh token and gets
	// invalid_grant again, which is harmless. The user must reconnect
	// either way.
	ev.Outcome, ev.Err = OutcomeInvalidGrant, lastErr
	s.emit(ev)
	s.log.Error("refresh token refused (invalid_grant), but the grant could not be marked", append(fields, zap.Error(lastErr))...)
	return injector.Token{}, fmt.Errorf("%w (%w)", reconnect, lastErr)
}

// merge returns the grant after a refresh of cur: the new access token, the
// new refresh token if the provider rotated it (x/oauth2 already keeps the
// presented one otherwise), the token type, expiry and scopes the provider
// reported, status active and the next generation.
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
	if sc, ok := nt.Extra("scope").(string); ok && strings.TrimSpace(sc) != "" {
		ng.Scopes = strings.Fields(sc)
	}
	ng.Status = store.StatusActive
	ng.Generation = cur.Generation + 1
	return ng
}

// persist writes ng with compare-and-swap on cas, retrying other failures
// a few times. A conflict whose stored grant holds exactly ng's tokens is
// a write of ours that committed although its answer was lost, and counts
// as success.
func (s *Source) persist(ctx context.Context, ng *store.Grant, cas store.Version, spent string) (store.Version, error) {
	var err error
	for attempt := range persistAttempts {
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
			case gerr != nil:
				return 0, err
			case cur.Generation == ng.Generation && cur.AccessToken == ng.AccessToken && cur.RefreshToken == ng.RefreshToken:
				return cv, nil // our earlier write went through; its answer was lost
			case spent != "" && cur.RefreshToken == spent && cur.Status == store.StatusActive:
				// Someone changed other fields (an expiry or scope edit)
				// without refreshing: the stored refresh token is the one
				// the provider just consumed, so keeping it would get the
				// grant revoked at the next refresh. Our tokens are put on
				// top of the stored grant and written again.
				rebase(ng, cur)
				cas = cv
				continue
			}
			// A reconnect, a revocation or a peer's refresh: the stored
			// grant wins.
			return 0, err
		}
		if errors.Is(err, store.ErrInvalidName) || errors.Is(err, store.ErrInvalidArgument) {
			break
		}
	}
	return 0, storeError(err)
}

// rebase puts ng's freshly minted tokens on top of cur, the grant now
// stored, leaving ng as the grant to write.
func rebase(ng, cur *store.Grant) {
	nb := cur.Clone()
	nb.AccessToken, nb.RefreshToken, nb.Expiry = ng.AccessToken, ng.RefreshToken, ng.Expiry
	if ng.TokenType != "" {
		nb.TokenType = ng.TokenType
	}
	if len(ng.Scopes) > 0 {
		nb.Scopes = ng.Scopes
	}
	nb.Generation = cur.Generation + 1
	*ng = *nb
}

// flushPending retries the write of tokens that a previous flight could not
// persist. ok reports that they are written now (tok is their access
// token). A conflict means the grant changed since (the user reconnected,
// or a peer acted after our lease ran out): the waiting tokens are dropped
// and the caller proceeds with the stored grant.
func (s *Source) flushPending(ctx context.Context, k grantKey, pw *pendingWrite) (tok injector.Token, ok bool, err error) {
	_, err = s.persist(ctx, pw.grant, pw.cas, pw.spent)
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return injector.Token{}, false, fmt.Errorf("token %s/%s: persist refreshed tokens: %w", k.provider, k.user, unavailable(err))
	}
	s.clearPending(k, pw)
	if pw.lease != nil {
		s.releaseLease(pw.lease)
	}
	if err != nil {
		s.log.Warn("grant changed while refreshed tokens waited to be persisted; they are dropped",
			zap.String("provider", k.provider), zap.String("user", k.user), zap.Error(err))
		return injector.Token{}, false, nil
	}
	s.log.Info("refreshed tokens persisted after an earlier store failure",
		zap.String("provider", k.provider), zap.String("user", k.user), zap.Int64("generation", pw.grant.Generation))
	return tokenOf(pw.grant), true, nil
}

func (s *Source) hasPending(k grantKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[k] != nil
}

func (s *Source) pendingFor(k grantKey) *pendingWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[k]
}

func (s *Source) setPending(k grantKey, pw *pendingWrite) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[k] = pw
}

// clearPending removes pw if it is still the pending write of k.
func (s *Source) clearPending(k grantKey, pw *pendingWrite) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[k] == pw {
		delete(s.pending, k)
	}
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
