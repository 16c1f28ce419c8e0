//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// The Vault high-availability tests of docs/security.md invariant 13: three
// `onbehalf serve` processes on a three-node Vault cluster (integrated
// storage, every node listed in store.vault.addresses) while the active node
// is killed (SIGKILL) under steady traffic and during a refresh storm, and
// while every node is restarted in turn. The fault-test harness of
// grantloss_test.go runs them: the rotating provider with reuse detection,
// the recording upstream and the per-run checks (no reuse, the grant
// refreshed and stored, every forwarded request carrying a credential the
// provider issued to the user).

// backendVaultHA is the fault environment on a Vault cluster.
const backendVaultHA = "vault-ha"

// Timing of the HA tests.
const (
	// haSettle is how long traffic must run clean after the election
	// before a run's outage is measured: any late failure would show.
	haSettle = 1500 * time.Millisecond
	// haStormPerNode is how many concurrent requests each sidecar gets in
	// a refresh storm.
	haStormPerNode = 30
	// haCacheTTL is the token cache of the rolling-restart test: longer
	// than the whole restart, so every request is served from the cache.
	haCacheTTL = time.Minute
)

// startCluster starts the Vault cluster of an HA fault environment and
// writes its root token for the sidecars.
func (f *faultEnv) startCluster() {
	f.t.Helper()
	c, err := vaulttest.StartCluster(vaulttest.ClusterOptions{Output: func(int) io.Writer {
		w := &lockedBuffer{}
		f.vlogs = append(f.vlogs, w)
		return w
	}})
	if err != nil {
		f.t.Fatalf("start Vault cluster: %v", err)
	}
	f.t.Cleanup(func() {
		if f.t.Failed() {
			for i, w := range f.vlogs {
				f.t.Logf("vault node %d output:\n%s", i, tail(w.String(), 8000))
			}
		}
		c.Close()
	})
	f.cluster = c
	must(f.t, os.WriteFile(f.path("vault-token"), []byte(c.RootToken()), 0o600))
}

// healCluster restarts every stopped node and waits for an active one.
func (f *faultEnv) healCluster() {
	for i, n := range f.cluster.Nodes {
		if !n.Running() {
			if err := n.Restart(); err != nil {
				f.t.Errorf("restart vault node %d: %v", i, err)
			}
		}
	}
	if _, err := f.cluster.WaitActive(); err != nil {
		f.t.Error(err)
	}
}

// killActive kills (SIGKILL) the cluster's active node and returns its
// index and the time of the kill.
func (f *faultEnv) killActive(t *testing.T) (int, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	i := f.cluster.Active(ctx)
	if i < 0 {
		t.Fatal("no active vault node to kill")
	}
	at := time.Now()
	f.cluster.Nodes[i].Stop()
	return i, at
}

// hangActive stops (SIGSTOP) the cluster's active node, as a stalled
// machine, a long pause or a partition would leave it: it holds its
// connections and answers nothing. It returns the node's index, the time
// of the stop and a function that resumes it (SIGCONT), which the run's
// cleanup also calls.
func (f *faultEnv) hangActive(t *testing.T) (int, time.Time, func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	i := f.cluster.Active(ctx)
	pid := 0
	if i >= 0 {
		pid = f.cluster.Nodes[i].PID()
	}
	if pid == 0 {
		t.Fatal("no active vault node to stop")
	}
	at := time.Now()
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	var once sync.Once
	resume := func() error {
		var err error
		once.Do(func() { err = syscall.Kill(pid, syscall.SIGCONT) })
		return err
	}
	t.Cleanup(func() { _ = resume() })
	return i, at, resume
}

// outage is what the agents saw after a kill.
type outage struct {
	// window runs from the kill to the sending of the last request that
	// failed: requests sent later all succeeded.
	window time.Duration
	// toFirstOK runs from the kill to the answer of the first 200 after
	// the last failure.
	toFirstOK time.Duration
	requests  int
	failed    int
	codes     map[string]int
}

// outageSince summarises the results of requests sent after t0.
func (l *load) outageSince(t0 time.Time) outage {
	l.mu.Lock()
	res := slices.Clone(l.res)
	l.mu.Unlock()
	o := outage{codes: map[string]int{}}
	var lastFail time.Time
	for _, r := range res {
		if r.sent.Before(t0) && r.at.Before(t0) {
			continue
		}
		o.requests++
		if r.status == 200 {
			continue
		}
		o.failed++
		o.codes[fmt.Sprintf("%d %s", r.status, r.code)]++
		if r.sent.After(lastFail) {
			lastFail = r.sent
		}
	}
	if o.failed == 0 {
		return o
	}
	o.window = lastFail.Sub(t0)
	first := time.Time{}
	for _, r := range res {
		if r.status == 200 && r.sent.After(lastFail) && (first.IsZero() || r.at.Before(first)) {
			first = r.at
		}
	}
	if !first.IsZero() {
		o.toFirstOK = first.Sub(t0)
	}
	return o
}

// failoverCheck waits, after the active node was killed (or hung) at t0,
// for the cluster to elect a new one and for every sidecar to answer 200
// again, lets traffic run clean for haSettle, and checks what the agents
// saw: failures only as 503 store_unavailable. It then brings the node back
// (rejoin; nil restarts a killed node) — it rejoins as a standby — and
// checks that this costs no request. It returns the time service was back.
func (f *faultEnv) failoverCheck(t *testing.T, l *load, name string, killed int, t0 time.Time, rejoin func() error) time.Time {
	t.Helper()
	next, err := f.cluster.WaitActive()
	if err != nil {
		t.Fatal(err)
	}
	elected := time.Since(t0)
	deadline := time.Now().Add(faultRecoverWithin)
	for _, n := range f.nodes {
		for {
			o := l.outageSince(t0)
			var lastFail time.Time
			if o.failed > 0 {
				lastFail = t0.Add(o.window)
			} else {
				lastFail = t0
			}
			if !l.firstOK(n.i, lastFail).IsZero() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sidecar %d: no 200 within %s after the failover", n.i, faultRecoverWithin)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(haSettle)
	o := l.outageSince(t0)
	f.unavailable += o.codes["503 store_unavailable"]
	for code := range o.codes {
		if code != "503 store_unavailable" {
			t.Errorf("during the election: %d × %q; want only 503 store_unavailable", o.codes[code], code)
		}
	}
	back := time.Now()
	fault := "killed"
	if rejoin != nil {
		fault = "hung"
	}
	line := fmt.Sprintf("%-8s %-48s vault node %d %s, node %d active after %s; window %s (first 200 after %s); failed %d of %d requests %v",
		f.name, name, killed, fault, next, elected.Round(time.Millisecond), o.window.Round(time.Millisecond), o.toFirstOK.Round(time.Millisecond), o.failed, o.requests, o.codes)
	f.summary = append(f.summary, line)
	t.Log(line)

	// The node comes back as a standby without disturbing anyone.
	t1 := time.Now()
	if rejoin == nil {
		rejoin = f.cluster.Nodes[killed].Restart
	}
	if err := rejoin(); err != nil {
		t.Fatalf("bring vault node %d back: %v", killed, err)
	}
	time.Sleep(500 * time.Millisecond)
	if r := l.outageSince(t1); r.failed != 0 {
		t.Errorf("while the killed node rejoined: %d of %d requests failed %v; want none", r.failed, r.requests, r.codes)
	}
	return back
}

// storm sends haStormPerNode concurrent requests through every sidecar and
// records them with l's results.
func (f *faultEnv) storm(t *testing.T, l *load) {
	assertion := f.mint(t)
	for _, n := range f.nodes {
		for j := range haStormPerNode {
			l.wg.Go(func() { l.record(f.request(n, assertion, fmt.Sprintf("/api/storm/%d/%d", n.i, j))) })
		}
	}
}

// mint returns a fresh assertion for alice.
func (f *faultEnv) mint(t *testing.T) string {
	t.Helper()
	a, err := identity.Mint(f.key, identity.MintOptions{Issuer: testenv.Issuer, Audience: testenv.Audience,
		Subject: testenv.User, Agent: testenv.Agent, TTL: 5 * time.Minute, Algorithm: "EdDSA", KeyID: "orch"})
	must(t, err)
	return a
}

// waitAllOK waits until every sidecar answered 200 after t0.
func (f *faultEnv) waitAllOK(t *testing.T, l *load, t0 time.Time) {
	t.Helper()
	deadline := time.Now().Add(faultRecoverWithin)
	for _, n := range f.nodes {
		for l.firstOK(n.i, t0).IsZero() {
			if time.Now().After(deadline) {
				t.Fatalf("sidecar %d: no 200 within %s", n.i, faultRecoverWithin)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestVaultFailover kills the active node of a three-node Vault cluster
// under three sidecars: under steady traffic (every request reads the
// store), at the moment the provider rotated the refresh token during a
// refresh storm (the new tokens cannot be stored until a new node is
// active), and at the start of a refresh storm (no lease can be taken);
// and stops it (SIGSTOP) under steady traffic, a node that holds its
// connections and answers nothing, resumed after the failover. Each run
// checks no reuse, the grant refreshed and stored, only 503
// store_unavailable during the election, and service back by itself; the
// unavailability window is logged. See docs/security.md, invariant 13.
func TestVaultFailover(t *testing.T) {
	f := newFaultEnv(t, backendVaultHA)

	f.run("e/active node killed under steady traffic", func(t *testing.T, l *load) time.Time {
		t0 := time.Now()
		l.on(true, f.nodes...)
		f.waitAllOK(t, l, t0) // the expired token was refreshed
		time.Sleep(500 * time.Millisecond)
		killed, at := f.killActive(t)
		return f.failoverCheck(t, l, "steady traffic", killed, at, nil)
	})

	f.run("f/active node killed at the rotation in a refresh storm", func(t *testing.T, l *load) time.Time {
		var (
			killed int
			at     time.Time
		)
		rotated := f.onRotate(func() { killed, at = f.killActive(t) })
		f.storm(t, l)
		l.on(true, f.nodes...)
		awaitFault(t, rotated, 10*time.Second, "the rotation")
		return f.failoverCheck(t, l, "refresh storm, killed at the rotation", killed, at, nil)
	})

	f.run("g/active node killed as a refresh storm starts", func(t *testing.T, l *load) time.Time {
		killed, at := f.killActive(t)
		f.storm(t, l)
		l.on(true, f.nodes...)
		return f.failoverCheck(t, l, "refresh storm, killed at its start", killed, at, nil)
	})

	f.run("h/active node hung (SIGSTOP) under steady traffic", func(t *testing.T, l *load) time.Time {
		t0 := time.Now()
		l.on(true, f.nodes...)
		f.waitAllOK(t, l, t0)
		time.Sleep(500 * time.Millisecond)
		// Requests waiting on the hung node end at the store timeout;
		// the standbys forward to it until the others elect a leader.
		// Resumed, it finds a newer term and steps down.
		hung, at, resume := f.hangActive(t)
		return f.failoverCheck(t, l, "steady traffic, active node hung", hung, at, resume)
	})

	// What operators see: every refusal counted in the metrics and
	// audited with its code, and no refreshed grant left unwritten.
	var metric, storeErrors, audited, pending float64
	for _, n := range f.nodes {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", n.adminPort))
		must(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for line := range strings.SplitSeq(string(b), "\n") {
			name, val, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			v, _ := strconv.ParseFloat(val, 64)
			switch {
			case strings.HasPrefix(name, "onbehalf_requests_total{") && strings.Contains(name, `code="store_unavailable"`):
				metric += v
			case name == "onbehalf_store_errors_total":
				storeErrors += v
			case strings.HasPrefix(name, "onbehalf_refresh_writes_pending"):
				pending += v
			}
		}
		trail, err := os.ReadFile(f.path(fmt.Sprintf("audit-%d.log", n.i)))
		must(t, err)
		for line := range strings.SplitSeq(strings.TrimSpace(string(trail)), "\n") {
			var rec struct {
				Event     string `json:"event"`
				Decision  string `json:"decision"`
				Status    int    `json:"status"`
				ErrorCode string `json:"error_code"`
			}
			must(t, json.Unmarshal([]byte(line), &rec))
			if rec.ErrorCode != "store_unavailable" {
				continue
			}
			audited++
			if rec.Event != "request" || rec.Decision != "allow" || rec.Status != 503 {
				t.Errorf("audit record of a refusal: event %q, decision %q, status %d; want request, allow, 503", rec.Event, rec.Decision, rec.Status)
			}
		}
	}
	if storeErrors < float64(f.unavailable) {
		t.Errorf("onbehalf_store_errors_total: got %v; want at least %d", storeErrors, f.unavailable)
	}
	if metric != float64(f.unavailable) || audited != float64(f.unavailable) {
		t.Errorf("store_unavailable: agents got %d, onbehalf_requests_total counts %v, the audit trail %v; want all equal", f.unavailable, metric, audited)
	}
	if pending != 0 {
		t.Errorf("onbehalf_refresh_writes_pending: got %v after the runs; want 0", pending)
	}
	for _, line := range f.summary {
		t.Log(line)
	}
}

// TestVaultRollingRestart restarts every node of the Vault cluster in turn,
// the way an operator upgrades it (standbys first, each stopped gracefully
// and restarted; then the active node steps down and is restarted), under
// steady traffic from three sidecars whose tokens are cached: no request
// may fail.
func TestVaultRollingRestart(t *testing.T) {
	f := newFaultEnvCache(t, backendVaultHA, haCacheTTL)
	before := f.prov.Stats()
	l := f.startLoad()
	defer func() {
		if l != nil {
			l.end()
		}
	}()
	t0 := time.Now()
	l.on(true, f.nodes...)
	f.waitAllOK(t, l, t0) // every sidecar has the token cached
	must(t, f.cluster.WaitHealthy())
	start := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	active := f.cluster.Active(ctx)
	cancel()
	if active < 0 {
		t.Fatal("no active vault node")
	}
	order := []int{}
	for i := range f.cluster.Nodes {
		if i != active {
			order = append(order, i)
		}
	}
	var steps []string
	// restart stops node i gracefully, starts it and waits until autopilot
	// reports every voter healthy again, as an operator would before
	// touching the next node.
	restart := func(i int, what string) {
		st := time.Now()
		f.cluster.Nodes[i].Shutdown()
		stopped := time.Since(st)
		if err := f.cluster.Nodes[i].Restart(); err != nil {
			t.Fatalf("restart vault node %d: %v", i, err)
		}
		up := time.Since(st)
		must(t, f.cluster.WaitHealthy())
		steps = append(steps, fmt.Sprintf("%s %d: stopped in %s, unsealed after %s, cluster healthy after %s",
			what, i, stopped.Round(time.Millisecond), up.Round(time.Millisecond), time.Since(st).Round(time.Millisecond)))
	}
	for _, i := range order {
		restart(i, "standby")
	}
	st := time.Now()
	must(t, f.cluster.StepDown(active))
	next, err := f.cluster.WaitActive()
	must(t, err)
	steps = append(steps, fmt.Sprintf("node %d stepped down, node %d active after %s", active, next, time.Since(st).Round(time.Millisecond)))
	restart(active, "former active")
	took := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	res := l.end()
	l = nil

	o := outage{codes: map[string]int{}}
	for _, r := range res {
		if r.sent.Before(start) {
			continue
		}
		o.requests++
		if r.status != 200 {
			o.failed++
			o.codes[fmt.Sprintf("%d %s", r.status, r.code)]++
		}
	}
	if o.failed != 0 {
		t.Errorf("rolling restart: %d of %d requests failed %v; want none (the tokens are cached)", o.failed, o.requests, o.codes)
	}
	if o.requests < 50 {
		t.Errorf("rolling restart: only %d requests sent; want a steady load", o.requests)
	}
	if reuse := f.prov.Stats().ReuseDetections - before.ReuseDetections; reuse != 0 {
		t.Errorf("the provider detected %d reuses; want 0", reuse)
	}
	for _, r := range f.up.Requests() {
		bearer, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if user, issued := f.prov.IssuedTo(bearer); !found || !issued || user != testenv.User {
			t.Errorf("the upstream got credential %q (issued to %q: %v); want one issued to alice", redactTok(bearer), user, issued)
		}
	}
	t.Logf("rolling restart of 3 vault nodes in %s (%s): failed %d of %d requests", took.Round(time.Millisecond), strings.Join(steps, "; "), o.failed, o.requests)
}
