package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zapcore"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
)

// stormCallers is the number of concurrent Token calls in the storm tests,
// spread over several Sources (replicas) sharing one store; the end-to-end
// storm tests send 100 requests across three sidecars.
const stormCallers = 300

func TestRefreshStorm(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			e := newEnv(t)
			// Latency makes the storm overlap the refresh in flight.
			e.srv.SetLatency(50 * time.Millisecond)
			old := e.seedExpired(testUser)
			_, oldVersion := e.grant(testUser)
			logger, logs := observedLogger()
			var evs events

			sources := make([]*Source, replicas)
			for i := range sources {
				st := e.st
				if i > 0 {
					st = e.openStore()
				}
				sources[i] = e.source(st, e.provider(nil), Options{Logger: logger, OnRefresh: evs.add})
			}

			values := make([]string, stormCallers)
			errs := make([]error, stormCallers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range stormCallers {
				wg.Go(func() {
					<-start
					values[i], errs[i] = token(t, sources[i%replicas], testUser)
				})
			}
			close(start)
			wg.Wait()

			for i, err := range errs {
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			got := values[0]
			for i, v := range values {
				if v != got {
					t.Fatalf("call %d got a different token than call 0; want one token for all", i)
				}
			}
			if got == old.AccessToken {
				t.Fatalf("got the expired access token; want the refreshed one")
			}
			if user, _, active := e.srv.Introspect(got); !active || user != testUser {
				t.Errorf("Introspect(new token) = %q, active %v; want %q, active", user, active, testUser)
			}
			st := e.srv.Stats()
			if st.Refreshes != 1 || st.TokenRequests != 1 || st.ReuseDetections != 0 {
				t.Errorf("provider stats = %+v; want exactly 1 token request, 1 refresh, 0 reuse detections", st)
			}
			g, v := e.grant(testUser)
			if g.AccessToken != got || g.Generation != 2 || g.Status != store.StatusActive || v == oldVersion {
				t.Errorf("stored grant = %v (version %d); want the new token at generation 2, active, a new version", g, v)
			}
			if g.RefreshToken == old.RefreshToken {
				t.Errorf("stored refresh token is the spent one; want the rotated one")
			}
			all := evs.all()
			if len(all) != 1 || all[0].Outcome != OutcomeRefreshed || !all[0].Rotated || all[0].Generation != 2 || all[0].Err != nil {
				t.Errorf("events = %+v; want one refreshed event, rotated, generation 2", all)
			}
			checkNoSecrets(t, logs, all, errs, old.AccessToken, old.RefreshToken, got, g.RefreshToken, testSecret)
		})
	}
}

// TestRotatedTokensPersistFailure: without a journal, tokens the store does
// not take wait in memory, unused, while the lease is kept alive; the
// background write stores them once the store is back, and the spent
// refresh token is never presented again.
func TestRotatedTokensPersistFailure(t *testing.T) {
	e := newEnv(t)
	old := e.seedExpired(testUser)
	before, beforeVersion := e.grant(testUser)
	flaky := &flakyStore{Store: e.st}
	logger, logs := observedLogger()
	var evs events
	timing := RefreshConfig{LeaseTTL: time.Second}
	a := e.source(flaky, e.provider(nil), Options{Logger: logger, OnRefresh: evs.add, Refresh: timing})
	b := e.source(e.openStore(), e.provider(nil), Options{Logger: logger, OnRefresh: evs.add, Refresh: timing})

	flaky.failPut.Store(true)
	_, err := token(t, a, testUser)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Token with a failing store write: error %v; want store.ErrUnavailable", err)
	}
	if st := e.srv.Stats(); st.Refreshes != 1 || st.TokenRequests != 1 {
		t.Fatalf("provider stats = %+v; want the one refresh that rotated the token", st)
	}

	// While the write keeps failing (for several lease lifetimes), neither
	// this replica nor another one presents the spent refresh token again.
	if _, err := token(t, a, testUser); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("second Token while the store fails: error %v; want store.ErrUnavailable", err)
	}
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = b.Token(ctx, testProvider, testUser)
		cancel()
		if !errors.Is(err, injector.ErrProviderUnavailable) {
			t.Errorf("Token at another replica while the lease is kept alive: error %v; want ErrProviderUnavailable", err)
		}
	}
	if st := e.srv.Stats(); st.TokenRequests != 1 || st.ReuseDetections != 0 {
		t.Fatalf("provider stats = %+v; want no further token request and no reuse", st)
	}
	if g, v := e.grant(testUser); v != beforeVersion || g.RefreshToken != before.RefreshToken {
		t.Fatalf("stored grant changed although every write failed")
	}
	if flaky.puts.Load() <= persistAttempts {
		t.Errorf("write attempts = %d; want the background write to keep trying", flaky.puts.Load())
	}

	// The store is back: the background write stores the waiting tokens.
	flaky.failPut.Store(false)
	evs.wait(t, OutcomePersisted)
	got, err := token(t, a, testUser)
	if err != nil {
		t.Fatalf("Token after the store recovered: %v", err)
	}
	if _, _, active := e.srv.Introspect(got); !active || got == old.AccessToken {
		t.Errorf("token after recovery: active %v, is the old one %v; want the new active token", active, got == old.AccessToken)
	}
	g, _ := e.grant(testUser)
	if g.AccessToken != got || g.Generation != before.Generation+1 || g.RefreshToken == old.RefreshToken {
		t.Errorf("stored grant after recovery = %v; want the rotated tokens at generation %d", g, before.Generation+1)
	}
	if v, err := token(t, b, testUser); err != nil || v != got {
		t.Errorf("other replica after recovery: error %v, same token %v; want the persisted token", err, v == got)
	}

	// The persisted refresh token is the rotated one: the provider takes it.
	e.expireStored(testUser)
	if _, err := token(t, a, testUser); err != nil {
		t.Fatalf("refresh with the persisted refresh token: %v", err)
	}
	st := e.srv.Stats()
	if st.Refreshes != 2 || st.TokenRequests != 2 || st.ReuseDetections != 0 {
		t.Errorf("provider stats = %+v; want 2 refreshes in 2 requests, no reuse detection", st)
	}
	if got, want := evs.outcomes(), []Outcome{OutcomePersistFailed, OutcomePersisted, OutcomeRefreshed}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v; want %v", got, want)
	}
	if logs.FilterLevelExact(zapcore.ErrorLevel).Len() == 0 {
		t.Errorf("no error logged for the failed write")
	}
	checkNoSecrets(t, logs, evs.all(), nil, old.AccessToken, old.RefreshToken, got, g.RefreshToken)
}

func TestProviderUnavailable(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		disturb func(e *env)
	}{
		{"503", 0, func(e *env) { e.srv.FailNext(100, http.StatusServiceUnavailable) }},
		{"500", 0, func(e *env) { e.srv.FailNext(100, http.StatusInternalServerError) }},
		{"429", 0, func(e *env) { e.srv.FailNext(100, http.StatusTooManyRequests) }},
		// Connections that never complete a TLS handshake: the request
		// is never sent, so nothing was presented.
		{"not sent within the timeout", 200 * time.Millisecond, nil},
		{"server closed", 0, func(e *env) { e.srv.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, expired := range []bool{false, true} {
				t.Run(fmt.Sprintf("expired=%v", expired), func(t *testing.T) {
					e := newEnv(t)
					user := testUser
					var old string
					if expired {
						old = e.seedExpired(user).AccessToken
					} else {
						// Inside the refresh skew, so a refresh is attempted,
						// yet valid for longer than useMargin.
						old = e.seed(user, time.Now().Add(90*time.Second)).AccessToken
					}
					before, beforeVersion := e.grant(user)
					var evs events
					s := e.source(e.st, e.provider(func(c *ProviderConfig, _ *string) {
						if tt.timeout > 0 {
							c.Timeout = tt.timeout
							c.TokenURL = "https://" + silentListener(t) + "/token"
						}
					}), Options{OnRefresh: evs.add})
					if tt.disturb != nil {
						tt.disturb(e)
					}

					got, err := token(t, s, user)
					if expired {
						if !errors.Is(err, injector.ErrProviderUnavailable) {
							t.Errorf("error %v; want ErrProviderUnavailable", err)
						}
					} else if err != nil || got != old {
						t.Errorf("error %v, got the current token %v; want the still-valid current token", err, got == old)
					}
					g, v := e.grant(user)
					if v != beforeVersion || !cmp.Equal(g, before) {
						t.Errorf("stored grant changed: %s", cmp.Diff(before, g))
					}
					if got, want := evs.outcomes(), []Outcome{OutcomeTransientError}; !slices.Equal(got, want) {
						t.Errorf("outcomes = %v; want %v", got, want)
					}
				})
			}
		})
	}
}

func TestInvalidGrantMarksReconnectRequired(t *testing.T) {
	for _, expired := range []bool{false, true} {
		t.Run(fmt.Sprintf("expired=%v", expired), func(t *testing.T) {
			e := newEnv(t)
			var old string
			if expired {
				old = e.seedExpired(testUser).RefreshToken
			} else {
				old = e.seed(testUser, time.Now().Add(90*time.Second)).RefreshToken
			}
			before, _ := e.grant(testUser)
			e.srv.RevokeUser(testUser)
			logger, logs := observedLogger()
			var evs events
			s := e.source(e.st, e.provider(nil), Options{Logger: logger, OnRefresh: evs.add})

			for i := range 3 {
				_, err := token(t, s, testUser)
				if !errors.Is(err, injector.ErrReconnectRequired) {
					t.Fatalf("call %d: error %v; want ErrReconnectRequired", i, err)
				}
			}
			if got := e.srv.Stats().TokenRequests; got != 1 {
				t.Errorf("token requests = %d; want 1 (later calls must not ask the provider)", got)
			}
			g, _ := e.grant(testUser)
			want := before.Clone()
			want.Status = store.StatusReconnectRequired
			if diff := cmp.Diff(want, g); diff != "" {
				t.Errorf("stored grant: want it kept and marked reconnect_required (-want +got):\n%s", diff)
			}
			if got, want := evs.outcomes(), []Outcome{OutcomeInvalidGrant}; !slices.Equal(got, want) {
				t.Errorf("outcomes = %v; want %v", got, want)
			}
			checkNoSecrets(t, logs, evs.all(), nil, old, before.AccessToken)
		})
	}
}

// TestDroppedResponseEndsInRefreshLost: the provider rotates but its answer
// never arrives. The holder cannot know whether the token was spent, so it
// leaves its lease to run out; only once the takeover rules allow is the
// token presented again. Here it was spent: reuse detection revokes the
// family (the provider doing its job), and the grant is marked with the
// outcome refresh_lost, not as an ordinary revocation.
func TestDroppedResponseEndsInRefreshLost(t *testing.T) {
	e := newEnv(t)
	e.seedExpired(testUser)
	var evs events
	timing := RefreshConfig{LeaseTTL: time.Second, TakeoverAfter: time.Second}
	s := e.source(e.st, e.provider(nil), Options{OnRefresh: evs.add, Refresh: timing})

	e.srv.DropNextResponses(1)
	if _, err := token(t, s, testUser); !errors.Is(err, injector.ErrProviderUnavailable) {
		t.Fatalf("first call: error %v; want ErrProviderUnavailable", err)
	}
	if g, _ := e.grant(testUser); g.Status != store.StatusActive {
		t.Fatalf("grant status after a transient failure = %s; want active", g.Status)
	}
	// The lease stays held: an immediate call does not present the token.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := s.Token(ctx, testProvider, testUser)
	cancel()
	if !errors.Is(err, injector.ErrProviderUnavailable) || e.srv.Stats().TokenRequests != 1 {
		t.Fatalf("call right after: error %v, %d token requests; want ErrProviderUnavailable and no new request", err, e.srv.Stats().TokenRequests)
	}
	// After the lease and takeover_after, the token is presented once more.
	if _, err := token(t, s, testUser); !errors.Is(err, injector.ErrReconnectRequired) {
		t.Fatalf("call after the takeover wait: error %v; want ErrReconnectRequired", err)
	}
	if _, err := token(t, s, testUser); !errors.Is(err, injector.ErrReconnectRequired) {
		t.Fatalf("third call: error %v; want ErrReconnectRequired", err)
	}
	st := e.srv.Stats()
	if st.TokenRequests != 2 || st.Refreshes != 1 || st.ReuseDetections != 1 {
		t.Errorf("provider stats = %+v; want 2 token requests, 1 refresh, 1 reuse detection", st)
	}
	if g, _ := e.grant(testUser); g.Status != store.StatusReconnectRequired {
		t.Errorf("grant status = %s; want reconnect_required", g.Status)
	}
	if got, want := evs.outcomes(), []Outcome{OutcomeTransientError, OutcomeRefreshLost}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v; want %v", got, want)
	}
}

// TestDroppedResponseWithinGrace: with a provider that accepts a reused
// refresh token within a grace period, the holder presents it again at
// once and the grant survives.
func TestDroppedResponseWithinGrace(t *testing.T) {
	e := newEnvWith(t, oauthtest.Options{RefreshReuseGrace: 20 * time.Second})
	e.seedExpired(testUser)
	var evs events
	s := e.source(e.st, e.provider(func(c *ProviderConfig, _ *string) { c.RefreshReuseGrace = 20 * time.Second }), Options{OnRefresh: evs.add})
	e.srv.DropNextResponses(1)
	got, err := token(t, s, testUser)
	if err != nil {
		t.Fatalf("Token: %v; want the token of the second presentation", err)
	}
	st := e.srv.Stats()
	if st.TokenRequests != 2 || st.GraceReuses != 1 || st.ReuseDetections != 0 {
		t.Errorf("provider stats = %+v; want 2 token requests, 1 grace reuse, no reuse detection", st)
	}
	if g, _ := e.grant(testUser); g.AccessToken != got || g.Generation != 2 || g.Status != store.StatusActive {
		t.Errorf("stored grant = %v; want the new token at generation 2", g)
	}
	if got, want := evs.outcomes(), []Outcome{OutcomeRefreshed}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v; want %v", got, want)
	}
}

func TestMisconfiguredClient(t *testing.T) {
	tests := []struct {
		name    string
		disturb func(e *env)
		secret  string
	}{
		{name: "invalid_client answer", disturb: func(e *env) { e.srv.SetInvalidClient(true) }},
		{name: "wrong secret", secret: "not-the-secret-0123"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.seedExpired(testUser)
			before, beforeVersion := e.grant(testUser)
			logger, logs := observedLogger()
			var evs events
			s := e.source(e.st, e.provider(func(_ *ProviderConfig, secret *string) {
				if tt.secret != "" {
					*secret = tt.secret
				}
			}), Options{Logger: logger, OnRefresh: evs.add})
			if tt.disturb != nil {
				tt.disturb(e)
			}
			_, err := token(t, s, testUser)
			if !errors.Is(err, injector.ErrProviderMisconfigured) {
				t.Fatalf("error %v; want ErrProviderMisconfigured", err)
			}
			g, v := e.grant(testUser)
			if v != beforeVersion || !cmp.Equal(g, before) {
				t.Errorf("grant touched: %s", cmp.Diff(before, g))
			}
			if got, want := evs.outcomes(), []Outcome{OutcomeMisconfigured}; !slices.Equal(got, want) {
				t.Errorf("outcomes = %v; want %v", got, want)
			}
			if logs.FilterLevelExact(zapcore.ErrorLevel).Len() != 1 {
				t.Errorf("error-level logs = %d; want 1 loud log", logs.FilterLevelExact(zapcore.ErrorLevel).Len())
			}
			if e.srv.Stats().TokenRequests != 1 {
				t.Errorf("token requests = %d; want 1 (no auth-style probing)", e.srv.Stats().TokenRequests)
			}
			checkNoSecrets(t, logs, evs.all(), []error{err}, testSecret, tt.secret, before.RefreshToken, before.AccessToken)
		})
	}
}

func TestEarlyRefresh(t *testing.T) {
	tests := []struct {
		name        string
		expiresIn   time.Duration
		wantRefresh bool
	}{
		// Inside DefaultRefreshSkew: refreshed although still valid.
		{"within skew", 90 * time.Second, true},
		// Beyond skew plus the largest jitter: served as is.
		{"beyond skew and jitter", DefaultRefreshSkew + DefaultRefreshJitter + time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			old := e.seed(testUser, time.Now().Add(tt.expiresIn))
			s := e.source(e.st, e.provider(nil), Options{})
			got, err := token(t, s, testUser)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if _, _, active := e.srv.Introspect(got); !active {
				t.Errorf("returned token is not active at the provider")
			}
			g, _ := e.grant(testUser)
			if tt.wantRefresh {
				if got == old.AccessToken || g.AccessToken != got || g.Generation != 2 {
					t.Errorf("got the old token %v, stored generation %d; want a refreshed token at generation 2", got == old.AccessToken, g.Generation)
				}
				if st := e.srv.Stats(); st.Refreshes != 1 {
					t.Errorf("refreshes = %d; want 1", st.Refreshes)
				}
				return
			}
			if got != old.AccessToken || g.Generation != 1 {
				t.Errorf("token was refreshed although far from expiry")
			}
			if st := e.srv.Stats(); st.TokenRequests != 0 {
				t.Errorf("token requests = %d; want 0", st.TokenRequests)
			}
		})
	}
}

func TestJitterIsFixedPerSourceAndSpread(t *testing.T) {
	p := &Provider{cfg: DefaultProviderConfig()}
	s := NewSource(nil, nil, Options{})
	// Expiring in the middle of the jitter window: about half of the
	// grants are due, and each decision is stable across calls.
	expiry := time.Now().Add(DefaultRefreshSkew + DefaultRefreshJitter/2)
	const users = 400
	due := 0
	for i := range users {
		g := &store.Grant{Provider: testProvider, User: fmt.Sprintf("user%d", i), AccessToken: "x", Expiry: expiry}
		first := s.needsRefresh(p, g)
		for range 10 {
			if s.needsRefresh(p, g) != first {
				t.Fatalf("needsRefresh changed its mind for one grant")
			}
		}
		if first {
			due++
		}
	}
	if due < users/5 || due > users*4/5 {
		t.Errorf("%d of %d grants due in the middle of the jitter window; want about half", due, users)
	}
	g := &store.Grant{AccessToken: "x", Expiry: time.Now().Add(DefaultRefreshSkew - time.Second)}
	if !s.needsRefresh(p, g) {
		t.Errorf("grant inside the skew not due")
	}
	g.Expiry = time.Now().Add(DefaultRefreshSkew + DefaultRefreshJitter + time.Second)
	if s.needsRefresh(p, g) {
		t.Errorf("grant beyond skew and jitter due")
	}
}

func TestTokenWithoutRefresh(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(g *store.Grant)
		wantErr error
	}{
		{"reconnect_required", func(g *store.Grant) { g.Status = store.StatusReconnectRequired }, injector.ErrReconnectRequired},
		{"expired without refresh token", func(g *store.Grant) {
			g.RefreshToken = ""
			g.Expiry = time.Now().Add(-time.Minute)
		}, injector.ErrReconnectRequired},
		{"within skew without refresh token", func(g *store.Grant) {
			g.RefreshToken = ""
			g.Expiry = time.Now().Add(90 * time.Second)
		}, nil},
		{"no expiry", func(g *store.Grant) { g.Expiry = time.Time{} }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.seed(testUser, time.Now().Add(time.Hour))
			g, v := e.grant(testUser)
			tt.mod(g)
			if _, err := e.st.Put(context.Background(), g, v); err != nil {
				t.Fatal(err)
			}
			before, beforeVersion := e.grant(testUser)
			s := e.source(e.st, e.provider(nil), Options{})
			got, err := token(t, s, testUser)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("error %v; want %v", err, tt.wantErr)
				}
			} else if err != nil || got != before.AccessToken {
				t.Errorf("error %v, got the stored token %v; want the stored token", err, got == before.AccessToken)
			}
			if st := e.srv.Stats(); st.TokenRequests != 0 {
				t.Errorf("token requests = %d; want 0", st.TokenRequests)
			}
			if after, v := e.grant(testUser); v != beforeVersion || !cmp.Equal(after, before) {
				t.Errorf("grant changed: %s", cmp.Diff(before, after))
			}
		})
	}
}

func TestTokenErrors(t *testing.T) {
	e := newEnv(t)
	s := e.source(e.st, e.provider(nil), Options{})
	ctx := context.Background()

	if _, err := s.Token(ctx, testProvider, "bob"); !errors.Is(err, injector.ErrGrantMissing) {
		t.Errorf("missing grant: error %v; want ErrGrantMissing", err)
	}
	_, err := s.Token(ctx, "other", testUser)
	if !errors.Is(err, injector.ErrProviderMisconfigured) || !errors.Is(err, ErrUnknownProvider) {
		t.Errorf("unknown provider: error %v; want ErrProviderMisconfigured and ErrUnknownProvider", err)
	}
	for _, name := range []string{"../etc", "Acme", ""} {
		if _, err := s.Token(ctx, name, testUser); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("provider %q: error %v; want ErrInvalidName", name, err)
		}
	}
	if _, err := s.Token(ctx, testProvider, "a/b"); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("user a/b: error %v; want ErrInvalidName", err)
	}

	closed := e.openStore()
	closed.Close()
	s2 := e.source(closed, e.provider(nil), Options{})
	if _, err := s2.Token(ctx, testProvider, testUser); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("closed store: error %v; want store.ErrUnavailable", err)
	}
}

func TestPeerResultWhileLeaseHeld(t *testing.T) {
	e := newEnv(t)
	e.seedExpired(testUser)
	waiting := &leaseWatch{Store: e.st, held: make(chan struct{})}
	s := e.source(waiting, e.provider(nil), Options{})
	peer := e.openStore()
	ctx := context.Background()
	lease, err := peer.AcquireLease(ctx, testProvider, testUser, store.LeaseRequest{Holder: "peer", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	const peerToken = "peer-access-token"
	done := make(chan error, 1)
	go func() {
		// Once the Source found the lease held and waits, the peer
		// refreshes (here: writes a new generation) and releases.
		<-waiting.held
		g, v, err := peer.Get(ctx, testProvider, testUser)
		if err != nil {
			done <- err
			return
		}
		g.AccessToken, g.Expiry, g.Generation = peerToken, time.Now().Add(time.Hour), g.Generation+1
		if _, err := peer.Put(ctx, g, v); err != nil {
			done <- err
			return
		}
		done <- peer.ReleaseLease(ctx, lease)
	}()
	got, err := token(t, s, testUser)
	if perr := <-done; perr != nil {
		t.Fatalf("peer: %v", perr)
	}
	if err != nil || got != peerToken {
		t.Fatalf("Token = (peer's token %v, %v); want the peer's token", got == peerToken, err)
	}
	if st := e.srv.Stats(); st.TokenRequests != 0 {
		t.Errorf("token requests = %d; want 0", st.TokenRequests)
	}
}

func TestLeaseHeldUsableTokenServedAtOnce(t *testing.T) {
	e := newEnv(t)
	old := e.seed(testUser, time.Now().Add(90*time.Second))
	s := e.source(e.st, e.provider(nil), Options{})
	ctx := context.Background()
	lease, err := e.st.AcquireLease(ctx, testProvider, testUser, store.LeaseRequest{Holder: "peer", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer e.st.ReleaseLease(ctx, lease)
	start := time.Now()
	got, err := token(t, s, testUser)
	if err != nil || got != old.AccessToken {
		t.Fatalf("Token = (current %v, %v); want the current token", got == old.AccessToken, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Token took %s; want no wait for the peer's lease", d)
	}
	if st := e.srv.Stats(); st.TokenRequests != 0 {
		t.Errorf("token requests = %d; want 0", st.TokenRequests)
	}
}

func TestCallerGivingUpDoesNotAbortRefresh(t *testing.T) {
	e := newEnv(t)
	e.seedExpired(testUser)
	s := e.source(e.st, e.provider(nil), Options{})

	// The caller gives up while its refresh is held at the provider.
	e.srv.Stall()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Token(ctx, testProvider, testUser)
		errc <- err
	}()
	waitStalled(t, e, 1)
	cancel()
	if err := <-errc; !errors.Is(err, injector.ErrProviderUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v; want ErrProviderUnavailable with the caller's cancellation", err)
	}
	e.srv.Resume()
	dctx, dcancel := context.WithTimeout(context.Background(), testTimeout)
	defer dcancel()
	if err := s.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	g, _ := e.grant(testUser)
	if g.Generation != 2 {
		t.Fatalf("stored generation = %d; want 2: the detached refresh must be persisted", g.Generation)
	}
	got, err := token(t, s, testUser)
	if err != nil || got != g.AccessToken {
		t.Fatalf("next Token = (stored %v, %v); want the persisted token", got == g.AccessToken, err)
	}
	if st := e.srv.Stats(); st.TokenRequests != 1 || st.ReuseDetections != 0 {
		t.Errorf("provider stats = %+v; want 1 token request, no reuse", st)
	}
}

func TestInvalidGrantAfterPeerRenewed(t *testing.T) {
	// While our refresh is on its way, the user reconnects (a new grant
	// family replaces the stored one) and revokes the old family: the
	// provider answers invalid_grant, but the re-read shows a newer
	// generation, which must be used, not marked.
	e := newEnv(t)
	e.seedExpired(testUser)
	e.srv.Stall()
	var evs events
	s := e.source(e.st, e.provider(nil), Options{OnRefresh: evs.add})

	renewed := make(chan string, 1)
	go func() {
		defer close(renewed)
		defer e.srv.Resume() // our refresh reaches the provider only after the reconnect
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := e.srv.WaitStalled(ctx, 1); err != nil {
			t.Error(err)
			return
		}
		e.srv.RevokeUser(testUser)
		tok, err := e.srv.IssueGrant(testClientID, testUser, testScopes)
		if err != nil {
			t.Error(err)
			return
		}
		g, v, err := e.st.Get(context.Background(), testProvider, testUser)
		if err != nil {
			t.Error(err)
			return
		}
		g.AccessToken, g.RefreshToken, g.Expiry, g.Generation = tok.AccessToken, tok.RefreshToken, tok.Expiry, g.Generation+1
		if _, err := e.st.Put(context.Background(), g, v); err != nil {
			t.Error(err)
			return
		}
		renewed <- tok.AccessToken
	}()
	got, err := token(t, s, testUser)
	want := <-renewed
	if err != nil || got != want {
		t.Fatalf("Token = (renewed %v, %v); want the renewed grant's token", got == want, err)
	}
	if g, _ := e.grant(testUser); g.Status != store.StatusActive {
		t.Errorf("grant status = %s; want active", g.Status)
	}
	if got, want := evs.outcomes(), []Outcome{OutcomeReusedPeerResult}; !slices.Equal(got, want) {
		t.Errorf("outcomes = %v; want %v", got, want)
	}
}

func TestNewSourceHolder(t *testing.T) {
	a := NewSource(nil, nil, Options{})
	b := NewSource(nil, nil, Options{})
	if a.Holder() == b.Holder() {
		t.Errorf("two Sources share holder %q; want unique holders", a.Holder())
	}
	if err := store.ValidateHolder(a.Holder()); err != nil {
		t.Errorf("generated holder %q: %v", a.Holder(), err)
	}
	if got := NewSource(nil, nil, Options{Holder: "pod-1"}).Holder(); got != "pod-1" {
		t.Errorf("Holder() = %q; want pod-1", got)
	}
	defer func() {
		if recover() == nil {
			t.Errorf("NewSource with an invalid holder did not panic")
		}
	}()
	NewSource(nil, nil, Options{Holder: "has space"})
}
