//go:build integration

package vaulttest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// logWriter collects Vault's output; start logs it if the test fails.
type logWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	return len(p), nil
}

// start starts a server and registers Close; the output is logged only if
// the test fails.
func start(t *testing.T, o vaulttest.Options) *vaulttest.Server {
	t.Helper()
	w := &logWriter{}
	o.Output = w
	s, err := vaulttest.Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			w.mu.Lock()
			t.Logf("vault output:\n%s", w.b.String())
			w.mu.Unlock()
		}
	})
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestBinaryMissing(t *testing.T) {
	t.Run("nonexistent path", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "no-such-vault")
		t.Setenv(vaulttest.EnvBinary, missing)
		_, err := vaulttest.Start(vaulttest.Options{})
		if !errors.Is(err, vaulttest.ErrBinaryNotFound) {
			t.Fatalf("Start with missing binary: err = %v; want ErrBinaryNotFound", err)
		}
		for _, want := range []string{missing, "make vault", "go build -o .cache/bin/vault github.com/hashicorp/vault", vaulttest.EnvBinary} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
	t.Run("directory", func(t *testing.T) {
		t.Setenv(vaulttest.EnvBinary, t.TempDir())
		if _, err := vaulttest.BinaryPath(); !errors.Is(err, vaulttest.ErrBinaryNotFound) {
			t.Errorf("BinaryPath with a directory: err = %v; want ErrBinaryNotFound", err)
		}
	})
}

func TestStartKVTransitAppRole(t *testing.T) {
	s := start(t, vaulttest.Options{})
	if !strings.HasPrefix(s.Addr(), "http://127.0.0.1:") {
		t.Errorf("Addr = %q; want http://127.0.0.1:PORT", s.Addr())
	}
	c := s.Client()
	if _, err := c.KVv2("secret").Put(ctx(t), "x", map[string]any{"a": "b"}); err != nil {
		t.Fatalf("KV v2 put on secret/: %v", err)
	}
	if err := s.EnableTransit("k"); err != nil {
		t.Fatalf("EnableTransit: %v", err)
	}
	if err := s.EnableTransit("k2"); err != nil {
		t.Fatalf("second EnableTransit: %v", err)
	}
	k, err := c.Logical().ReadWithContext(ctx(t), "transit/keys/k")
	if err != nil || k == nil {
		t.Fatalf("read transit key: %v", err)
	}
	if d, _ := k.Data["derived"].(bool); !d {
		t.Errorf("transit key derived = %v; want true", k.Data["derived"])
	}
	if err := s.WritePolicy("reader", `path "secret/data/x" { capabilities = ["read"] }`); err != nil {
		t.Fatalf("WritePolicy: %v", err)
	}
	roleID, secretID, err := s.EnableAppRole("app", "reader")
	if err != nil {
		t.Fatalf("EnableAppRole: %v", err)
	}
	login, err := c.Logical().WriteWithContext(ctx(t), "auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil || login == nil || login.Auth == nil {
		t.Fatalf("approle login: %v", err)
	}
	ac, err := c.Clone()
	if err != nil {
		t.Fatal(err)
	}
	ac.SetToken(login.Auth.ClientToken)
	if _, err := ac.KVv2("secret").Get(ctx(t), "x"); err != nil {
		t.Errorf("read with approle token: %v", err)
	}
	if _, err := ac.KVv2("secret").Put(ctx(t), "x", map[string]any{"a": "c"}); err == nil {
		t.Errorf("write with read-only approle token succeeded; want permission denied")
	}
}

func TestSealUnseal(t *testing.T) {
	s := start(t, vaulttest.Options{})
	c := s.Client()
	if err := s.Seal(); err != nil {
		t.Fatalf("Seal: %v", err)
	}
	_, err := c.KVv2("secret").Get(ctx(t), "x")
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 503 {
		t.Errorf("read while sealed: err = %v; want a 503 response", err)
	}
	if err := s.Unseal(); err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	if _, err := c.KVv2("secret").Put(ctx(t), "x", map[string]any{"a": "b"}); err != nil {
		t.Errorf("write after unseal: %v", err)
	}
}

func TestStopRestartSameAddress(t *testing.T) {
	s := start(t, vaulttest.Options{})
	addr := s.Addr()
	c := s.Client()
	if _, err := c.KVv2("secret").Put(ctx(t), "x", map[string]any{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	host := strings.TrimPrefix(addr, "http://")
	if conn, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		conn.Close()
		t.Fatalf("dial %s after Stop succeeded; want refused", host)
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.Addr() != addr {
		t.Errorf("Addr after Restart = %q; want %q", s.Addr(), addr)
	}
	// The old client (same root token) works; dev mode lost the data.
	if _, err := c.KVv2("secret").Get(ctx(t), "x"); !errors.Is(err, api.ErrSecretNotFound) {
		t.Errorf("read after Restart: err = %v; want ErrSecretNotFound (dev mode is in memory)", err)
	}
	if _, err := c.KVv2("secret").Put(ctx(t), "x", map[string]any{"a": "b"}); err != nil {
		t.Errorf("write after Restart with the old client: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Restart(); err == nil {
		t.Errorf("Restart after Close succeeded; want error")
	}
}

func TestTLS(t *testing.T) {
	s := start(t, vaulttest.Options{TLS: true})
	if !strings.HasPrefix(s.Addr(), "https://127.0.0.1:") {
		t.Errorf("Addr = %q; want https://127.0.0.1:PORT", s.Addr())
	}
	if s.CAFile() == "" {
		t.Fatal("CAFile empty with TLS")
	}
	if _, err := s.Client().Sys().HealthWithContext(ctx(t)); err != nil {
		t.Errorf("health over TLS: %v", err)
	}
}

// TestPersistentRestartKeepsData: a persistent server killed and restarted
// comes back on the same address, unsealed, with its data and root token.
func TestPersistentRestartKeepsData(t *testing.T) {
	s := start(t, vaulttest.Options{Persistent: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Client().KVv2("secret").Put(ctx, "kept", map[string]any{"v": "before the crash"}); err != nil {
		t.Fatalf("write: %v", err)
	}
	addr, root := s.Addr(), s.RootToken()
	s.Stop()
	if _, err := s.Client().KVv2("secret").Get(ctx, "kept"); err == nil {
		t.Fatal("read succeeded while the server was stopped")
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if s.Addr() != addr || s.RootToken() != root {
		t.Errorf("after Restart: %s %q; want the same address and root token", s.Addr(), s.RootToken())
	}
	got, err := s.Client().KVv2("secret").Get(ctx, "kept")
	if err != nil || got.Data["v"] != "before the crash" {
		t.Errorf("read after Restart = %v, %v; want the data written before", got, err)
	}
	if _, err := vaulttest.Start(vaulttest.Options{Persistent: true, TLS: true}); err == nil {
		t.Errorf("Start with Persistent and TLS succeeded")
	}
}

// TestCluster starts a three-node Raft cluster, kills the active node
// (SIGKILL), waits for another node to take over, restarts the killed node
// and checks that data written before and during the outage is served by
// every node.
func TestCluster(t *testing.T) {
	var outs []*logWriter
	c, err := vaulttest.StartCluster(vaulttest.ClusterOptions{Output: func(int) io.Writer {
		w := &logWriter{}
		outs = append(outs, w)
		return w
	}})
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			for i, w := range outs {
				w.mu.Lock()
				t.Logf("node %d output:\n%s", i, w.b.String())
				w.mu.Unlock()
			}
		}
	})
	if got := len(c.Addrs()); got != 3 {
		t.Fatalf("got %d nodes; want 3", got)
	}
	voters, err := c.Voters(ctx(t))
	if err != nil || len(voters) != 3 {
		t.Fatalf("voters: got %v, %v; want 3", voters, err)
	}
	first, err := c.WaitActive()
	if err != nil {
		t.Fatal(err)
	}
	// A standby serves reads and writes too: it forwards them to the
	// active node.
	standby := c.Nodes[(first+1)%3]
	if _, err := standby.Client().Logical().WriteWithContext(ctx(t), "secret/data/ha", map[string]any{"data": map[string]any{"v": "before"}}); err != nil {
		t.Fatalf("write through a standby: %v", err)
	}

	killed := time.Now()
	c.Nodes[first].Stop()
	next, err := c.WaitActive()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d killed; node %d active after %s", first, next, time.Since(killed).Round(time.Millisecond))
	if next == first {
		t.Fatalf("got active node %d; want another than the killed one", next)
	}
	if _, err := c.Nodes[next].Client().Logical().WriteWithContext(ctx(t), "secret/data/ha2", map[string]any{"data": map[string]any{"v": "during"}}); err != nil {
		t.Fatalf("write after the failover: %v", err)
	}
	if err := c.Nodes[first].Restart(); err != nil {
		t.Fatalf("restart node %d: %v", first, err)
	}
	for i, n := range c.Nodes {
		for _, p := range []string{"secret/data/ha", "secret/data/ha2"} {
			s, err := n.Client().Logical().ReadWithContext(ctx(t), p)
			if err != nil || s == nil {
				t.Errorf("node %d: read %s: %v, %v; want the entry", i, p, s, err)
			}
		}
	}
	if i := c.Active(ctx(t)); i != next {
		t.Errorf("active node after the restart: got %d; want %d (a restarted node rejoins as a standby)", i, next)
	}
}
