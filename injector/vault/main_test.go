//go:build integration

package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// shared is the Vault server most tests use; tests that stop, seal or
// restart Vault start their own (startVault).
var shared *vaulttest.Server

// transitKey is the derived Transit key on every test server.
const transitKey = "onbehalf-grants"

func TestMain(m *testing.M) {
	out := &syncWriter{w: new(bytes.Buffer)}
	s, err := vaulttest.Start(vaulttest.Options{Output: out})
	if err != nil {
		// No skip: a missing binary fails the package with the message
		// saying how to build it.
		fmt.Fprintln(os.Stderr, "injector/vault tests need a real Vault:", err)
		os.Exit(1)
	}
	if err := s.EnableTransit(transitKey); err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = s.Close()
		os.Exit(1)
	}
	shared = s
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close vault:", err)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	} else if os.Getenv("VAULT_TEST_OUTPUT") != "" {
		fmt.Fprintln(os.Stderr, out.String())
	}
	os.Exit(code)
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// startVault starts a server of the test's own (for tests that stop, seal or
// restart it) with the Transit key, and closes it when the test ends. Its
// output is logged if the test fails.
func startVault(t testing.TB, o vaulttest.Options) *vaulttest.Server {
	t.Helper()
	out := &syncWriter{w: new(bytes.Buffer)}
	o.Output = out
	s, err := vaulttest.Start(o)
	if err != nil {
		t.Fatalf("start vault: %v", err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		if t.Failed() {
			t.Logf("vault output (tail):\n%s", tail(out.String(), 4000))
		}
	})
	if err := s.EnableTransit(transitKey); err != nil {
		t.Fatal(err)
	}
	return s
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// writeFile writes content to a new file in the test's temporary directory.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// randomPrefix returns a fresh KV prefix, so each store starts empty.
func randomPrefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "test-" + hex.EncodeToString(b[:])
}

// tokenConfig returns a config for srv with token auth (the root token from
// a file) and a fresh prefix.
func tokenConfig(t testing.TB, srv *vaulttest.Server) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Address = srv.Addr()
	cfg.CAFile = srv.CAFile()
	cfg.Prefix = randomPrefix(t)
	cfg.Auth.Method = AuthToken
	cfg.Auth.TokenFile = writeFile(t, "vault-token", srv.RootToken()+"\n")
	return cfg
}

// withTransit turns the Transit envelope on in cfg.
func withTransit(cfg Config) Config {
	cfg.Transit.Enabled = true
	cfg.Transit.Key = transitKey
	return cfg
}

// testLogger returns a logger writing to the test log.
func testLogger(t testing.TB) *zap.Logger {
	if tt, ok := t.(*testing.T); ok {
		return zaptest.NewLogger(tt, zaptest.Level(zap.InfoLevel))
	}
	return zap.NewNop()
}

// open opens a store for cfg and closes it when the test ends.
func open(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// ctx returns a context bounded well above any store timeout.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
