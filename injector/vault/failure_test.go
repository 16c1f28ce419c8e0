//go:build integration

package vault

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// failTimeout is the store timeout in failure tests: short, so the tests
// are quick, and long enough for a loaded machine's healthy calls.
const failTimeout = 2 * time.Second

// storeCalls are one call of each store method that reaches Vault.
func storeCalls(s *Store) []struct {
	name string
	call func(context.Context) error
} {
	g := canaryGrant("slack", "alice")
	return []struct {
		name string
		call func(context.Context) error
	}{
		{"Get", func(c context.Context) error { _, _, err := s.Get(c, "slack", "alice"); return err }},
		{"Put", func(c context.Context) error { _, err := s.Put(c, g, 1); return err }},
		{"Delete", func(c context.Context) error { return s.Delete(c, "slack", "alice") }},
		{"List", func(c context.Context) error { _, err := s.List(c, ""); return err }},
		{"AcquireLease", func(c context.Context) error {
			_, err := s.AcquireLease(c, "slack", "alice", store.LeaseRequest{Holder: "h", TTL: time.Minute})
			return err
		}},
		{"ReleaseLease", func(c context.Context) error {
			return s.ReleaseLease(c, &store.Lease{Provider: "slack", User: "alice", ID: "x", Version: 1})
		}},
		{"ReadSecret", func(c context.Context) error { _, err := s.ReadSecret(c, "onbehalf/providers/slack", "x"); return err }},
		{"Ping", s.Ping},
	}
}

// wantUnavailable checks that every store call fails with ErrUnavailable
// within the store's timeout (plus scheduling slack), with no secret in the
// error.
func wantUnavailable(t *testing.T, s *Store, why string) {
	t.Helper()
	for _, c := range storeCalls(s) {
		start := time.Now()
		err := c.call(ctx(t))
		took := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s while %s: err = %v; want ErrUnavailable", c.name, why, err)
		}
		if took > s.cfg.Timeout+time.Second {
			t.Errorf("%s while %s took %s; want at most the timeout %s", c.name, why, took, s.cfg.Timeout)
		}
		if err != nil {
			noCanary(t, c.name+" error", err.Error())
		}
	}
}

// roundTrip writes a grant for alice (creating it or updating whatever is
// stored) and reads it back.
func roundTrip(t *testing.T, s *Store) {
	t.Helper()
	g := canaryGrant("slack", "alice")
	_, v, err := s.Get(ctx(t), "slack", "alice")
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get: %v", err)
	}
	nv, err := s.Put(ctx(t), g, v)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, gv, err := s.Get(ctx(t), "slack", "alice")
	if err != nil {
		t.Fatalf("Get after Put: %v", err)
	}
	if gv != nv {
		t.Errorf("version = %d; want %d", gv, nv)
	}
	if diff := cmp.Diff(g, got); diff != "" {
		t.Errorf("grant mismatch (-want +got):\n%s", diff)
	}
}

func TestVaultStoppedMidRun(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	cfg := withTransit(tokenConfig(t, srv))
	cfg.Timeout = failTimeout
	s := open(t, cfg)
	roundTrip(t, s)

	srv.Stop()
	wantUnavailable(t, s, "vault is stopped")

	// A new, empty dev server on the same address; the root token (our
	// token file) is the same, the transit key must be seeded again.
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := srv.EnableTransit(transitKey); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx(t)); err != nil {
		t.Errorf("Ping after restart: %v", err)
	}
	if _, _, err := s.Get(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after restart of an in-memory Vault: err = %v; want ErrNotFound", err)
	}
	roundTrip(t, s)
}

func TestVaultSealed(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	cfg := tokenConfig(t, srv)
	cfg.Timeout = failTimeout
	s := open(t, cfg)
	roundTrip(t, s)

	if err := srv.Seal(); err != nil {
		t.Fatal(err)
	}
	wantUnavailable(t, s, "vault is sealed")
	if err := s.Ping(ctx(t)); err == nil || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("Ping while sealed: err = %v; want it to say sealed", err)
	}
	if err := srv.Unseal(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx(t)); err != nil {
		t.Errorf("Ping after unseal: %v", err)
	}
	roundTrip(t, s)
}

// relay forwards TCP connections to a backend until paused; while paused
// it accepts connections and reads requests but never answers, like a hung
// Vault or a black-holed network path.
type relay struct {
	l       net.Listener
	backend string
	mu      sync.Mutex
	paused  bool
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newRelay(t *testing.T, backend string) *relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{l: l, backend: backend}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.close)
	return r
}

func (r *relay) addr() string { return "http://" + r.l.Addr().String() }

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.l.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		paused := r.paused
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if paused {
				_, _ = io.Copy(io.Discard, c)
				return
			}
			b, err := net.Dial("tcp", r.backend)
			if err != nil {
				c.Close()
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, b)
			r.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			_, _ = io.Copy(c, b)
			c.Close()
		}()
	}
}

// pause makes new connections hang and cuts existing ones, so pooled
// connections cannot bypass the pause.
func (r *relay) pause(p bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paused = p
	if p {
		for _, c := range r.conns {
			c.Close()
		}
		r.conns = nil
	}
}

func (r *relay) close() {
	r.l.Close()
	r.pause(true)
	r.wg.Wait()
}

func TestVaultHangsTimesOut(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	rl := newRelay(t, strings.TrimPrefix(srv.Addr(), "http://"))
	cfg := tokenConfig(t, srv)
	cfg.Address = rl.addr()
	// Every call below waits out the timeout: keep it short.
	cfg.Timeout = time.Second
	s := open(t, cfg)
	roundTrip(t, s)

	rl.pause(true)
	wantUnavailable(t, s, "vault hangs")
	rl.pause(false)
	roundTrip(t, s)
}

func TestCallerCancellationIsNotUnavailable(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	rl := newRelay(t, strings.TrimPrefix(srv.Addr(), "http://"))
	cfg := tokenConfig(t, srv)
	cfg.Address = rl.addr()
	cfg.Timeout = failTimeout
	s := open(t, cfg)
	rl.pause(true)
	c, cancel := context.WithCancel(ctx(t))
	time.AfterFunc(100*time.Millisecond, cancel)
	_, _, err := s.Get(c, "slack", "alice")
	if !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Get cancelled by the caller mid-call: err = %v; want context.Canceled only", err)
	}
}

func TestOpenFailures(t *testing.T) {
	srv := shared
	roleID, secretID, err := srv.EnableAppRole("open-failures", "default")
	if err != nil {
		t.Fatal(err)
	}
	base := tokenConfig(t, srv)
	tests := []struct {
		name    string
		edit    func(c *Config)
		want    []string
		secrets []string
	}{
		{"invalid config", func(c *Config) { c.Address = "" }, []string{"address"}, nil},
		{"missing token file", func(c *Config) { c.Auth.TokenFile = "/nonexistent/token" }, []string{"token_file", "/nonexistent/token"}, nil},
		{"bad token", func(c *Config) { c.Auth.TokenFile = writeFile(t, "bad", "hvs.not-a-real-token-7c1d") }, []string{"permission denied"}, []string{"hvs.not-a-real-token-7c1d"}},
		{"wrong secret id", func(c *Config) {
			c.Auth = AuthConfig{Method: AuthAppRole, RoleID: roleID, SecretIDFile: writeFile(t, "sid", "0000-wrong-secret-id"), AppRoleMount: "approle"}
		}, []string{"approle"}, []string{"0000-wrong-secret-id", secretID}},
		{"vault down", func(c *Config) { c.Address = "http://127.0.0.1:1" }, []string{"store unavailable"}, nil},
		{"unknown ca file", func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, []string{"ca_file"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			s, err := Open(ctx(t), cfg, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded; want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open error %q does not mention %q", err, w)
				}
			}
			for _, sec := range append(tt.secrets, srv.RootToken()) {
				if strings.Contains(err.Error(), sec) {
					t.Errorf("Open error %q contains a secret", err)
				}
			}
		})
	}
}
