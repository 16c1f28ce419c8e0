package oauth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/journal"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
)

// The tests in this file cover the states of the durable refresh protocol
// (docs/design.md, "Refresh"): the journal write before use, the replay at
// start-up, the lease heartbeat, the takeover of a lease that ran out, and
// the provider that answers late.

// fastTiming keeps the protocol's clocks short for tests.
var fastTiming = RefreshConfig{LeaseTTL: time.Second, TakeoverAfter: time.Second, AnswerDeadline: 10 * time.Second}

// journalFiles returns the entry files in the journal directory name.
func (e *env) journalFiles(name string) []string {
	e.t.Helper()
	des, err := os.ReadDir(filepath.Join(e.dir, name))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), ".") { // the lock
			out = append(out, de.Name())
		}
	}
	return out
}

// orderedStore fails the test if a grant is written while the journal
// directory dir holds no entry: the journal must come first.
type orderedStore struct {
	store.Store
	dir     string
	checked atomic.Int64
	t       testing.TB
}

func (o *orderedStore) Put(ctx context.Context, g *store.Grant, cas store.Version) (store.Version, error) {
	if g.Generation > 1 {
		des, _ := os.ReadDir(o.dir)
		if len(des) == 0 {
			o.t.Errorf("grant generation %d written to the store before it was journalled", g.Generation)
		}
		o.checked.Add(1)
	}
	return o.Store.Put(ctx, g, cas)
}

// TestJournalWriteBeforeUse: the refreshed grant is journalled before the
// store write is attempted; when the store fails, its access token is used
// at once (it is durable) while the write is retried in the background
// with the lease kept alive, and peers do not present the spent token.
func TestJournalWriteBeforeUse(t *testing.T) {
	e := newEnv(t)
	old := e.seedExpired(testUser)
	flaky := &flakyStore{Store: &orderedStore{Store: e.st, dir: filepath.Join(e.dir, "journal-a"), t: t}}
	var evs events
	logger, logs := observedLogger()
	a := e.source(flaky, e.provider(nil), Options{Logger: logger, OnRefresh: evs.add, Journal: e.journal("journal-a"), Refresh: fastTiming})
	b := e.source(e.openStore(), e.provider(nil), Options{Logger: logger, OnRefresh: evs.add, Refresh: fastTiming})

	flaky.failPut.Store(true)
	got, err := token(t, a, testUser)
	if err != nil {
		t.Fatalf("Token with the store failing after the refresh: %v; want the journalled token", err)
	}
	if _, _, active := e.srv.Introspect(got); !active || got == old.AccessToken {
		t.Fatalf("got the old or an inactive token; want the new one")
	}
	if files := e.journalFiles("journal-a"); len(files) != 1 {
		t.Fatalf("journal holds %v; want one entry", files)
	}
	if again, err := token(t, a, testUser); err != nil || again != got {
		t.Errorf("second Token on the holder: same token %v, %v; want the journalled token", again == got, err)
	}
	// Across several lease lifetimes, the peer keeps off the spent token.
	deadline := time.Now().Add(3 * fastTiming.LeaseTTL)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := b.Token(ctx, testProvider, testUser)
		cancel()
		if !errors.Is(err, injector.ErrProviderUnavailable) {
			t.Fatalf("peer while the write waits: error %v; want ErrProviderUnavailable", err)
		}
	}
	if st := e.srv.Stats(); st.TokenRequests != 1 || st.ReuseDetections != 0 {
		t.Fatalf("provider stats = %+v; want 1 token request and no reuse", st)
	}

	flaky.failPut.Store(false)
	evs.wait(t, OutcomePersisted)
	if files := e.journalFiles("journal-a"); len(files) != 0 {
		t.Errorf("journal holds %v after the write landed; want nothing", files)
	}
	if g, _ := e.grant(testUser); g.AccessToken != got || g.Generation != 2 {
		t.Errorf("stored grant = %v; want the journalled tokens at generation 2", g)
	}
	if v, err := token(t, b, testUser); err != nil || v != got {
		t.Errorf("peer after the write: same token %v, %v; want the persisted token", v == got, err)
	}
	if got, want := evs.outcomes(), []Outcome{OutcomeDeferred, OutcomePersisted}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v; want %v", got, want)
	}
	g, _ := e.grant(testUser)
	checkNoSecrets(t, logs, evs.all(), nil, old.AccessToken, old.RefreshToken, got, g.RefreshToken)
}

// TestJournalReplayAtStart: a sidecar that stopped (a crash: nothing
// drained, the lease left) with refreshed tokens the store never took finds
// them in its journal at the next start and writes them before serving;
// the provider is not asked again.
func TestJournalReplayAtStart(t *testing.T) {
	for _, storeUp := range []bool{true, false} {
		t.Run(fmt.Sprintf("store up at start=%v", storeUp), func(t *testing.T) {
			e := newEnv(t)
			e.seedExpired(testUser)
			flaky := &flakyStore{Store: e.st}
			flaky.failPut.Store(true)
			ja := e.journal("journal-a")
			a := NewSource(flaky, map[string]*Provider{testProvider: e.provider(nil)}, Options{Journal: ja, Refresh: fastTiming})
			got, err := token(t, a, testUser)
			if err != nil {
				t.Fatal(err)
			}
			a.Close() // the process dies: the write never happens
			ja.Close()

			flaky.failPut.Store(!storeUp)
			var evs events
			restarted := e.source(flaky, e.provider(nil), Options{OnRefresh: evs.add, Journal: e.journal("journal-a"), Refresh: fastTiming})
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			n, err := restarted.Recover(ctx)
			if n != 1 || err != nil {
				t.Fatalf("Recover = %d, %v; want 1 entry", n, err)
			}
			// The journalled token is served at once, whether or not the
			// store took it.
			if v, err := token(t, restarted, testUser); err != nil || v != got {
				t.Fatalf("Token after Recover: same token %v, %v; want the journalled token", v == got, err)
			}
			if !storeUp {
				peer := e.source(e.openStore(), e.provider(nil), Options{Refresh: fastTiming})
				ctx, cancel := context.WithTimeout(context.Background(), 2*fastTiming.LeaseTTL)
				_, err := peer.Token(ctx, testProvider, testUser)
				cancel()
				if !errors.Is(err, injector.ErrProviderUnavailable) {
					t.Errorf("peer while the recovered write waits: %v; want ErrProviderUnavailable (the lease was taken back)", err)
				}
				flaky.failPut.Store(false)
			}
			evs.wait(t, OutcomePersisted)
			if g, _ := e.grant(testUser); g.AccessToken != got || g.Generation != 2 {
				t.Errorf("stored grant = %v; want the journalled tokens at generation 2", g)
			}
			if files := e.journalFiles("journal-a"); len(files) != 0 {
				t.Errorf("journal holds %v; want nothing", files)
			}
			if st := e.srv.Stats(); st.TokenRequests != 1 || st.ReuseDetections != 0 {
				t.Errorf("provider stats = %+v; want the one refresh, no reuse", st)
			}
			// The stored refresh token is the rotated one.
			e.expireStored(testUser)
			if _, err := token(t, restarted, testUser); err != nil {
				t.Errorf("refresh after the replay: %v", err)
			}
			if st := e.srv.Stats(); st.Refreshes != 2 || st.ReuseDetections != 0 {
				t.Errorf("provider stats = %+v; want 2 refreshes, no reuse", st)
			}
		})
	}
}

// TestJournalReplayOutgrown: an entry the store has outgrown (a newer
// generation was stored meanwhile, a reconnect for instance) is dropped.
func TestJournalReplayOutgrown(t *testing.T) {
	e := newEnv(t)
	e.seed(testUser, time.Now().Add(time.Hour))
	g, v := e.grant(testUser)
	j := e.journal("journal-a")
	stale := g.Clone()
	stale.AccessToken, stale.RefreshToken, stale.Generation = "stale-access", "stale-refresh", g.Generation+1
	if err := j.Write(&journal.Entry{Grant: stale, Base: v - 1, Spent: "x", Written: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var evs events
	s := e.source(e.st, e.provider(nil), Options{OnRefresh: evs.add, Journal: j})
	if n, err := s.Recover(context.Background()); n != 1 || err != nil {
		t.Fatalf("Recover = %d, %v", n, err)
	}
	if got, want := evs.outcomes(), []Outcome{OutcomeDropped}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v; want %v", got, want)
	}
	if now, _ := e.grant(testUser); now.AccessToken != g.AccessToken {
		t.Errorf("stored grant overwritten by an outgrown entry")
	}
	if files := e.journalFiles("journal-a"); len(files) != 0 {
		t.Errorf("journal holds %v; want the dropped entry removed", files)
	}
}

// failingJournal refuses every write.
type failingJournal struct{ Journal }

func (failingJournal) Write(*journal.Entry) error { return errors.New("disk full") }

// TestJournalWriteFails: tokens that could not be journalled are not used
// until the store takes them.
func TestJournalWriteFails(t *testing.T) {
	e := newEnv(t)
	e.seedExpired(testUser)
	flaky := &flakyStore{Store: e.st}
	flaky.failPut.Store(true)
	var evs events
	s := e.source(flaky, e.provider(nil), Options{OnRefresh: evs.add, Journal: failingJournal{e.journal("j")}, Refresh: fastTiming})
	if _, err := token(t, s, testUser); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Token: %v; want store.ErrUnavailable (the tokens are not durable)", err)
	}
	flaky.failPut.Store(false)
	evs.wait(t, OutcomePersisted)
	if _, err := token(t, s, testUser); err != nil {
		t.Errorf("Token after the write: %v", err)
	}
	if got, want := evs.outcomes(), []Outcome{OutcomePersistFailed, OutcomePersisted}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v; want %v", got, want)
	}
}

// TestHeartbeatKeepsLease: while the provider takes several lease lifetimes
// to answer, the holder's heartbeat keeps the lease, so a peer never
// presents the refresh token; the late answer is persisted.
func TestHeartbeatKeepsLease(t *testing.T) {
	e := newEnv(t)
	e.seedExpired(testUser)
	var evs events
	fast := func(c *ProviderConfig, _ *string) { c.Timeout = 200 * time.Millisecond }
	a := e.source(e.st, e.provider(fast), Options{OnRefresh: evs.add, Refresh: fastTiming})
	b := e.source(e.openStore(), e.provider(fast), Options{OnRefresh: evs.add, Refresh: fastTiming})
	e.srv.Stall()
	start := time.Now()
	if _, err := token(t, a, testUser); !errors.Is(err, injector.ErrProviderUnavailable) {
		t.Fatalf("Token with the provider stalled: %v; want ErrProviderUnavailable once the timeout passed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the caller waited %s; want about the provider timeout", d)
	}
	waitStalled(t, e, 1)
	for end := time.Now().Add(4 * fastTiming.LeaseTTL); time.Now().Before(end); {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := b.Token(ctx, testProvider, testUser)
		cancel()
		if !errors.Is(err, injector.ErrProviderUnavailable) {
			t.Fatalf("peer during the stall: %v; want ErrProviderUnavailable", err)
		}
	}
	if n := e.srv.Stats().TokenRequests; n != 1 {
		t.Fatalf("token requests during the stall = %d; want only the holder's", n)
	}
	_, err := e.st.AcquireLease(context.Background(), testProvider, testUser, store.LeaseRequest{Holder: "probe", TTL: time.Second})
	var held *store.LeaseHeldError
	if !errors.As(err, &held) || held.Lease.Holder != a.Holder() || !held.Lease.Expiry.After(time.Now()) {
		t.Fatalf("lease after %s of stall: %v; want it held and renewed by the holder", 4*fastTiming.LeaseTTL, err)
	}
	e.srv.Resume()
	evs.wait(t, OutcomeRefreshed)
	ga, err := token(t, a, testUser)
	if err != nil {
		t.Fatal(err)
	}
	if gb, err := token(t, b, testUser); err != nil || gb != ga {
		t.Errorf("peer after the answer: same token %v, %v", gb == ga, err)
	}
	if st := e.srv.Stats(); st.TokenRequests != 1 || st.Refreshes != 1 || st.ReuseDetections != 0 {
		t.Errorf("provider stats = %+v; want 1 request, 1 refresh, no reuse", st)
	}
}

// deadHolder leaves a refresh lease on the grant's current generation that
// nobody renews, as a sidecar that died while refreshing does; spent makes
// the dead holder have presented the refresh token first.
func deadHolder(t *testing.T, e *env, ttl time.Duration, generationDelta int64, refresh, spent bool) {
	t.Helper()
	g, _ := e.grant(testUser)
	if spent {
		if _, err := e.provider(nil).refresh(context.Background(), g.RefreshToken); err != nil {
			t.Fatalf("the dead holder's refresh: %v", err)
		}
	}
	if _, err := e.st.AcquireLease(context.Background(), testProvider, testUser, store.LeaseRequest{
		Holder: "dead-holder", TTL: ttl, Refresh: refresh, Generation: g.Generation + generationDelta,
	}); err != nil {
		t.Fatal(err)
	}
}

// TestStaleHolderTakeover covers the takeover rules for a lease that ran
// out (see Source.takeOver).
func TestStaleHolderTakeover(t *testing.T) {
	const ttl = 500 * time.Millisecond
	tests := []struct {
		name       string
		grace      time.Duration // provider's and configuration's
		takeover   time.Duration
		delta      int64 // lease generation minus the grant's
		refresh    bool
		spent      bool
		minWait    time.Duration // before a peer may present
		maxWait    time.Duration
		outcome    Outcome
		wantActive bool
	}{
		{name: "holder died before presenting", takeover: time.Second, refresh: true,
			minWait: ttl + time.Second, maxWait: 10 * time.Second, outcome: OutcomeRefreshed, wantActive: true},
		{name: "holder presented and died", takeover: time.Second, refresh: true, spent: true,
			minWait: ttl + time.Second, maxWait: 10 * time.Second, outcome: OutcomeRefreshLost},
		{name: "within the reuse grace", grace: 30 * time.Second, takeover: time.Minute, refresh: true, spent: true,
			minWait: ttl, maxWait: 10 * time.Second, outcome: OutcomeRefreshed, wantActive: true},
		{name: "lease of an older generation", takeover: time.Minute, delta: -1, refresh: true,
			minWait: ttl, maxWait: 10 * time.Second, outcome: OutcomeRefreshed, wantActive: true},
		{name: "lease that presents nothing", takeover: time.Minute,
			minWait: ttl, maxWait: 10 * time.Second, outcome: OutcomeRefreshed, wantActive: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvWith(t, oauthtest.Options{RefreshReuseGrace: tt.grace})
			e.seedExpired(testUser)
			start := time.Now()
			deadHolder(t, e, ttl, tt.delta, tt.refresh, tt.spent)
			var evs events
			var presented time.Time
			var once sync.Once
			s := e.source(e.st, e.provider(func(c *ProviderConfig, _ *string) { c.RefreshReuseGrace = tt.grace }),
				Options{OnRefresh: func(ev RefreshEvent) {
					once.Do(func() { presented = time.Now().Add(-ev.Duration) })
					evs.add(ev)
				}, Refresh: RefreshConfig{LeaseTTL: time.Second, TakeoverAfter: tt.takeover}})
			var err error
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				_, err = s.Token(ctx, testProvider, testUser)
				cancel()
				if !errors.Is(err, injector.ErrProviderUnavailable) {
					break
				}
				if time.Since(start) > tt.maxWait {
					t.Fatalf("no takeover within %s", tt.maxWait)
				}
			}
			drain(t, s)
			if waited := presented.Sub(start); waited < tt.minWait {
				t.Errorf("presented the refresh token %s after the holder stopped; want at least %s", waited, tt.minWait)
			}
			if got := evs.outcomes(); !slices.Equal(got, []Outcome{tt.outcome}) {
				t.Errorf("outcomes = %v; want [%s]", got, tt.outcome)
			}
			g, _ := e.grant(testUser)
			if tt.wantActive {
				if err != nil || g.Status != store.StatusActive || g.Generation != 2 {
					t.Errorf("after the takeover: %v, grant %v; want a refreshed, active grant", err, g)
				}
				if st := e.srv.Stats(); st.ReuseDetections != 0 {
					t.Errorf("provider stats = %+v; want no reuse detection", st)
				}
			} else if !errors.Is(err, injector.ErrReconnectRequired) || g.Status != store.StatusReconnectRequired {
				t.Errorf("after the takeover: %v, grant %v; want reconnect_required", err, g)
			}
		})
	}
}

// TestSlowProviderLateAnswer: the agent's request gives up after the
// provider's timeout; the refresh that was sent goes on and its late answer
// is persisted, so the rotated token is not lost.
func TestSlowProviderLateAnswer(t *testing.T) {
	e := newEnv(t)
	e.seedExpired(testUser)
	var evs events
	s := e.source(e.st, e.provider(func(c *ProviderConfig, _ *string) { c.Timeout = 200 * time.Millisecond }),
		Options{OnRefresh: evs.add, Refresh: fastTiming})
	e.srv.Stall()
	start := time.Now()
	_, err := token(t, s, testUser)
	if !errors.Is(err, injector.ErrProviderUnavailable) {
		t.Fatalf("Token with the provider stalled: %v; want ErrProviderUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Token returned after %s; want about the provider timeout", d)
	}
	// Past the provider timeout and two lease lifetimes, the provider
	// answers.
	time.Sleep(2 * fastTiming.LeaseTTL)
	e.srv.Resume()
	evs.wait(t, OutcomeRefreshed)
	got, err := token(t, s, testUser)
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := e.grant(testUser); g.AccessToken != got || g.Generation != 2 {
		t.Errorf("stored grant = %v; want the late answer's tokens", g)
	}
	if st := e.srv.Stats(); st.TokenRequests != 1 || st.ReuseDetections != 0 {
		t.Errorf("provider stats = %+v; want 1 request, no reuse", st)
	}
}

// TestAnswerDeadline: a sent refresh is abandoned only after the answer
// deadline; its lease is then left to run out rather than released.
func TestAnswerDeadline(t *testing.T) {
	e := newEnv(t)
	e.seedExpired(testUser)
	var evs events
	timing := RefreshConfig{LeaseTTL: time.Second, TakeoverAfter: time.Minute, AnswerDeadline: time.Second}
	s := e.source(e.st, e.provider(func(c *ProviderConfig, _ *string) { c.Timeout = 200 * time.Millisecond }),
		Options{OnRefresh: evs.add, Refresh: timing})
	e.srv.Stall()
	defer e.srv.Resume()
	if _, err := token(t, s, testUser); !errors.Is(err, injector.ErrProviderUnavailable) {
		t.Fatalf("Token: %v; want ErrProviderUnavailable", err)
	}
	ev := evs.wait(t, OutcomeTransientError)
	if ev.Duration < timing.AnswerDeadline {
		t.Errorf("the refresh gave up after %s; want the answer deadline %s", ev.Duration, timing.AnswerDeadline)
	}
	_, err := e.st.AcquireLease(context.Background(), testProvider, testUser, store.LeaseRequest{Holder: "probe", TTL: time.Second})
	var held *store.LeaseHeldError
	if !errors.As(err, &held) || held.Lease.Holder != s.Holder() || !held.Lease.Refresh {
		t.Errorf("lease after the abandoned refresh: %v; want the holder's refresh lease left in place", err)
	}
}

// TestShortLivedTokensNoStorm: with one-minute-like tokens (here three
// seconds), the skew follows the lifetime, so each replica refreshes about
// once per lifetime instead of on every request.
func TestShortLivedTokensNoStorm(t *testing.T) {
	const ttl = 3 * time.Second
	e := newEnvWith(t, oauthtest.Options{AccessTokenTTL: ttl})
	tok, err := e.srv.IssueGrant(testClientID, testUser, testScopes)
	if err != nil {
		t.Fatal(err)
	}
	g := &store.Grant{Provider: testProvider, User: testUser, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		TokenType: "Bearer", Expiry: tok.Expiry, IssuedAt: time.Now(), Status: store.StatusActive, Generation: 1}
	if _, err := e.st.Put(context.Background(), g, 0); err != nil {
		t.Fatal(err)
	}
	var sources []*Source
	for i := range 3 {
		st := e.st
		if i > 0 {
			st = e.openStore()
		}
		sources = append(sources, e.source(st, e.provider(nil), Options{}))
	}
	const run = 7 * time.Second
	var wg sync.WaitGroup
	var calls, failures atomic.Int64
	for _, s := range sources {
		for range 3 {
			wg.Go(func() {
				for end := time.Now().Add(run); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
					calls.Add(1)
					if v, err := token(t, s, testUser); err != nil || v == "" {
						failures.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	st := e.srv.Stats()
	// About one refresh per lifetime: the grant is due a quarter of the
	// lifetime (plus up to an eighth of jitter) before expiry.
	if st.Refreshes < 2 || st.Refreshes > 5 || st.ReuseDetections != 0 {
		t.Errorf("%d calls over %s with %s tokens: provider stats %+v; want 2 to 5 refreshes and no reuse", calls.Load(), run, ttl, st)
	}
	if failures.Load() != 0 {
		t.Errorf("%d of %d calls failed", failures.Load(), calls.Load())
	}
}

func TestNeedsRefreshFollowsLifetime(t *testing.T) {
	p := &Provider{cfg: DefaultProviderConfig()}
	s := NewSource(nil, nil, Options{})
	now := time.Now()
	tests := []struct {
		name     string
		issued   time.Time
		left     time.Duration
		want     bool
		wantUsed bool // usable
	}{
		{"hour token, an hour left", now, time.Hour, false, true},
		{"hour token, within the skew", now.Add(-58 * time.Minute), 2*time.Minute - time.Second, true, true},
		{"minute token, 50s left", now.Add(-10 * time.Second), 50 * time.Second, false, true},
		{"minute token, 14s left", now.Add(-46 * time.Second), 14 * time.Second, true, true},
		{"minute token, 5s left", now.Add(-55 * time.Second), 5 * time.Second, true, false},
		{"unknown lifetime, 90s left", time.Time{}, 90 * time.Second, true, true},
		{"unknown lifetime, 20s left", time.Time{}, 20 * time.Second, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &store.Grant{Provider: testProvider, User: testUser, AccessToken: "x", IssuedAt: tt.issued, Expiry: now.Add(tt.left)}
			if got := s.needsRefresh(p, g); got != tt.want {
				t.Errorf("needsRefresh = %v; want %v", got, tt.want)
			}
			if got := usable(g); got != tt.wantUsed {
				t.Errorf("usable = %v; want %v", got, tt.wantUsed)
			}
		})
	}
}
