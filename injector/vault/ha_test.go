//go:build integration

package vault

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// startCluster starts a three-node Vault cluster with the Transit key and
// closes it when the test ends; the nodes' output is logged if it fails.
func startCluster(t *testing.T) *vaulttest.Cluster {
	t.Helper()
	var outs []*syncWriter
	c, err := vaulttest.StartCluster(vaulttest.ClusterOptions{Output: func(int) io.Writer {
		w := &syncWriter{w: new(bytes.Buffer)}
		outs = append(outs, w)
		return w
	}})
	if err != nil {
		t.Fatalf("start vault cluster: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		if t.Failed() {
			for i, w := range outs {
				t.Logf("vault node %d output (tail):\n%s", i, tail(w.String(), 4000))
			}
		}
	})
	i, err := c.WaitActive()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[i].EnableTransit(transitKey); err != nil {
		t.Fatal(err)
	}
	return c
}

// clusterConfig is tokenConfig for a cluster: the root token, a fresh
// prefix, Transit on, the failure tests' timeout.
func clusterConfig(t *testing.T, c *vaulttest.Cluster) Config {
	t.Helper()
	cfg := withTransit(tokenConfig(t, c.Nodes[0]))
	cfg.Timeout = failTimeout
	return cfg
}

// TestVaultCluster runs the store against a three-node Vault cluster with
// integrated storage: through one standby's address (Vault CE forwards the
// requests to the active node), and through every node's address while the
// active node is killed and restarted.
func TestVaultCluster(t *testing.T) {
	c := startCluster(t)
	active, err := c.WaitActive()
	if err != nil {
		t.Fatal(err)
	}
	standby := (active + 1) % len(c.Nodes)

	t.Run("one standby address", func(t *testing.T) {
		cfg := clusterConfig(t, c)
		cfg.Address = c.Nodes[standby].Addr()
		s := open(t, cfg)
		roundTrip(t, s) // reads, CAS writes and Transit, all forwarded
		// sys/health answers as a standby: the readiness probe says so.
		if err := s.Ping(ctx(t)); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "standby") {
			t.Errorf("Ping through a standby: %v; want ErrUnavailable naming the standby", err)
		}
	})

	t.Run("every node, active killed", func(t *testing.T) {
		cfg := clusterConfig(t, c)
		// The standby first: the store must find the active node.
		cfg.Address = ""
		cfg.Addresses = []string{c.Nodes[standby].Addr()}
		for i, n := range c.Nodes {
			if i != standby {
				cfg.Addresses = append(cfg.Addresses, n.Addr())
			}
		}
		s := open(t, cfg)
		if err := s.Ping(ctx(t)); err != nil {
			t.Fatalf("Ping: %v; want the active node found", err)
		}
		roundTrip(t, s)

		killed := time.Now()
		c.Nodes[active].Stop()
		start := time.Now()
		_, _, err := s.Get(ctx(t), "slack", "alice")
		if took := time.Since(start); !errors.Is(err, store.ErrUnavailable) || took > cfg.Timeout+time.Second {
			t.Errorf("Get right after the active node was killed: %v after %s; want ErrUnavailable within the timeout", err, took)
		}
		if err != nil {
			noCanary(t, "Get error", err.Error())
			t.Logf("Get right after the kill: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
		}
		for {
			_, _, err := s.Get(ctx(t), "slack", "alice")
			if err == nil {
				break
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("Get during the election: %v; want ErrUnavailable", err)
			}
			if time.Since(killed) > vaulttest.ElectionTimeout {
				t.Fatalf("Get still failing %s after the kill: %v", vaulttest.ElectionTimeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("store served again %s after the active node was killed", time.Since(killed).Round(time.Millisecond))
		roundTrip(t, s)
		if err := s.Ping(ctx(t)); err != nil {
			t.Errorf("Ping after the election: %v", err)
		}

		if err := c.Nodes[active].Restart(); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, s)
	})
}
