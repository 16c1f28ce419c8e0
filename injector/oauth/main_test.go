package oauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector/journal"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Names used throughout the tests.
const (
	testProvider = "acme"
	testUser     = "alice"
	testClientID = "onbehalf-sidecar"
	testSecret   = "sidecar-secret-0123456789"
	// testTimeout bounds every Token call of a test, so a hang fails the
	// test instead of stalling it.
	testTimeout = 30 * time.Second
)

var testScopes = []string{"read", "write"}

// env is one test world: a real OAuth server over TLS and an embedded store
// in a temporary directory.
type env struct {
	t   testing.TB
	srv *oauthtest.Server
	dir string
	st  *store.Embedded // the first handle on the database
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, oauthtest.Options{})
}

// newEnvWith is newEnv with the OAuth server configured by o (its client
// list is the env's).
func newEnvWith(t testing.TB, o oauthtest.Options) *env {
	t.Helper()
	o.Clients = []oauthtest.Client{{
		ID:           testClientID,
		Secret:       testSecret,
		RedirectURIs: []string{"http://127.0.0.1/callback"},
		Scopes:       testScopes,
	}}
	srv, err := oauthtest.Start(o)
	if err != nil {
		t.Fatalf("start oauth server: %v", err)
	}
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv, dir: t.TempDir()}
	e.st = e.openStore()
	return e
}

// testLockTimeout is the embedded store's lock_timeout in these tests. The
// storm tests send stormCallers Token calls at one database file at once,
// each reading the grant: under the race detector on a loaded two-core CI
// machine, the last of them have waited past the 2 s default for their turn
// (store_unavailable). In the sidecar, CachedSource stands in front of
// Source and collapses concurrent lookups for one user into one.
const testLockTimeout = 15 * time.Second

// openStore opens another handle on the env's database file: to the code
// under test it is another replica's store.
func (e *env) openStore() *store.Embedded {
	e.t.Helper()
	cfg := store.DefaultEmbeddedConfig()
	cfg.Path = filepath.Join(e.dir, "grants.db")
	cfg.KeyFile = filepath.Join(e.dir, "grants.key")
	cfg.LockTimeout = testLockTimeout
	st, err := store.OpenEmbedded(cfg)
	if err != nil {
		e.t.Fatalf("open store: %v", err)
	}
	e.t.Cleanup(func() { st.Close() })
	return st
}

// providerConfig returns a valid configuration for the env's server.
func (e *env) providerConfig() ProviderConfig {
	c := DefaultProviderConfig()
	c.TokenURL = e.srv.TokenURL()
	c.AuthorizationURL = e.srv.AuthURL()
	c.RevocationURL = e.srv.RevokeURL()
	c.UserinfoURL = e.srv.UserinfoURL()
	c.ClientID = testClientID
	c.ClientSecretVault = "secret/onbehalf/acme#client_secret"
	c.Scopes = testScopes
	c.AuthStyle = AuthStyleHeader
	return c
}

// provider returns a Provider for the env's server, changed by mod.
func (e *env) provider(mod func(c *ProviderConfig, secret *string)) *Provider {
	e.t.Helper()
	c := e.providerConfig()
	secret := testSecret
	if mod != nil {
		mod(&c, &secret)
	}
	p, err := NewProvider(testProvider, c, secret, testHTTPClient(e.t, e.srv.CertPool()))
	if err != nil {
		e.t.Fatalf("NewProvider: %v", err)
	}
	e.t.Cleanup(p.CloseIdleConnections)
	return p
}

// source returns a Source on st with provider p; it drains the Source when
// the test ends.
func (e *env) source(st store.Store, p *Provider, o Options) *Source {
	e.t.Helper()
	s := NewSource(st, map[string]*Provider{testProvider: p}, o)
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := s.Drain(ctx); err != nil {
			e.t.Errorf("Drain: %v", err)
		}
		s.Close()
	})
	return s
}

// journal opens the journal called name in the env's directory (a
// sidecar's journal directory, which survives its restarts).
func (e *env) journal(name string) *journal.Journal {
	e.t.Helper()
	j, err := journal.Open(filepath.Join(e.dir, name), filepath.Join(e.dir, "grants.key"))
	if err != nil {
		e.t.Fatalf("open journal: %v", err)
	}
	e.t.Cleanup(func() { j.Close() })
	return j
}

// seed issues a real grant for user at the provider and stores it with the
// given access-token expiry (the provider's own idea of it is untouched).
func (e *env) seed(user string, expiry time.Time) *oauth2.Token {
	e.t.Helper()
	tok, err := e.srv.IssueGrant(testClientID, user, testScopes)
	if err != nil {
		e.t.Fatalf("IssueGrant: %v", err)
	}
	g := &store.Grant{
		Provider:     testProvider,
		User:         user,
		AccessToken:  tok.AccessToken,
		RefreshToken: tok.RefreshToken,
		TokenType:    tok.TokenType,
		Expiry:       expiry,
		Scopes:       testScopes,
		Status:       store.StatusActive,
		ConnectedAt:  time.Now().Add(-time.Hour),
		Generation:   1,
	}
	if _, err := e.st.Put(context.Background(), g, 0); err != nil {
		e.t.Fatalf("Put: %v", err)
	}
	return tok
}

// seedExpired seeds a grant whose access token has expired both at the
// provider and in the store.
func (e *env) seedExpired(user string) *oauth2.Token {
	e.t.Helper()
	tok := e.seed(user, time.Now().Add(-time.Minute))
	if err := e.srv.ExpireAccessToken(tok.AccessToken); err != nil {
		e.t.Fatalf("ExpireAccessToken: %v", err)
	}
	return tok
}

// grant reads user's stored grant.
func (e *env) grant(user string) (*store.Grant, store.Version) {
	e.t.Helper()
	g, v, err := e.st.Get(context.Background(), testProvider, user)
	if err != nil {
		e.t.Fatalf("Get: %v", err)
	}
	return g, v
}

// expireStored marks user's stored access token expired, at the provider
// and in the store.
func (e *env) expireStored(user string) {
	e.t.Helper()
	g, v := e.grant(user)
	if err := e.srv.ExpireAccessToken(g.AccessToken); err != nil {
		e.t.Fatalf("ExpireAccessToken: %v", err)
	}
	g.Expiry = time.Now().Add(-time.Minute)
	if _, err := e.st.Put(context.Background(), g, v); err != nil {
		e.t.Fatalf("Put: %v", err)
	}
}

// token calls s.Token for user with a bounded context.
func token(t testing.TB, s *Source, user string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tok, err := s.Token(ctx, testProvider, user)
	return tok.Value, err
}

// events records RefreshEvents.
type events struct {
	mu      sync.Mutex
	evs     []RefreshEvent
	changed chan struct{} // closed at the next add; nil when nobody waits
}

func (r *events) add(ev RefreshEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// wait waits until an event with outcome o was recorded.
func (r *events) wait(t testing.TB, o Outcome) RefreshEvent {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		r.mu.Lock()
		for _, ev := range r.evs {
			if ev.Outcome == o {
				r.mu.Unlock()
				return ev
			}
		}
		changed := r.changed
		if changed == nil {
			changed = make(chan struct{})
			r.changed = changed
		}
		r.mu.Unlock()
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("no %s event within %s; events: %v", o, testTimeout, r.outcomes())
		}
	}
}

func (r *events) outcomes() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Outcome
	for _, ev := range r.evs {
		out = append(out, ev.Outcome)
	}
	return out
}

func (r *events) all() []RefreshEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RefreshEvent(nil), r.evs...)
}

// observedLogger returns a logger that records every entry at debug level
// and above.
func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// checkNoSecrets fails t if any log entry, event error or error in errs
// contains one of secrets.
func checkNoSecrets(t testing.TB, logs *observer.ObservedLogs, evs []RefreshEvent, errs []error, secrets ...string) {
	t.Helper()
	var texts []string
	for _, entry := range logs.All() {
		enc := zapcore.NewMapObjectEncoder()
		for _, f := range entry.Context {
			f.AddTo(enc)
		}
		texts = append(texts, entry.Message+" "+fmt.Sprint(enc.Fields))
	}
	for _, ev := range evs {
		texts = append(texts, fmt.Sprintf("%+v %#v", ev, ev))
		if ev.Err != nil {
			texts = append(texts, ev.Err.Error())
		}
	}
	for _, err := range errs {
		if err != nil {
			texts = append(texts, err.Error())
		}
	}
	for _, text := range texts {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("secret leaked into %q", text)
			}
		}
	}
}

// flakyStore is a store whose Put fails with ErrUnavailable while failPut
// is set, as when Vault goes away between a refresh and its write.
type flakyStore struct {
	store.Store
	failPut atomic.Bool
	puts    atomic.Int64 // Put calls while failing
}

var errInjected = errors.New("injected write failure")

func (f *flakyStore) Put(ctx context.Context, g *store.Grant, cas store.Version) (store.Version, error) {
	if f.failPut.Load() {
		f.puts.Add(1)
		return 0, fmt.Errorf("put grant %s/%s: %w: %w", g.Provider, g.User, store.ErrUnavailable, errInjected)
	}
	return f.Store.Put(ctx, g, cas)
}

// waitStalled waits until the env's stalled provider holds n token
// requests.
func waitStalled(t testing.TB, e *env, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := e.srv.WaitStalled(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// leaseWatch is a store that closes held (once) when an AcquireLease
// finds the lease held: the caller then waits for a peer.
type leaseWatch struct {
	store.Store
	held chan struct{}
	once sync.Once
}

func (w *leaseWatch) AcquireLease(ctx context.Context, provider, user string, req store.LeaseRequest) (*store.Lease, error) {
	l, err := w.Store.AcquireLease(ctx, provider, user, req)
	if errors.Is(err, store.ErrLeaseHeld) {
		w.once.Do(func() { close(w.held) })
	}
	return l, err
}

// silentListener returns the address of a TCP listener that accepts
// connections and never answers: a TLS handshake with it never completes,
// so a request to it is never sent.
func silentListener(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// drain waits for s's refreshes and deferred writes.
func drain(t testing.TB, s *Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}
