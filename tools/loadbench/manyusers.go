package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/injector/vault"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// Stores of the many-users workload.
const (
	storeEmbedded = "embedded"
	storeVault    = "vault"
)

// Many-users limits.
const (
	// fillTimeout bounds the pass that puts every user's token in the
	// cache before the memory reading.
	fillTimeout = 2 * time.Minute
	// vaultTokenTTL is the lifetime of the sidecar's Vault token: longer
	// than any run.
	vaultTokenTTL = "4h"
)

// manyState is the store the current many-users sidecar instances use.
type manyState struct {
	storeYAML string
	vault     *vaulttest.Server
}

// usersCase is one row of the many-users table.
type usersCase struct {
	store, dist string
	users       int
	err         string

	// rest is the sidecar's memory with every worker's connection open
	// and the first user's token cached; filled is after one request for
	// each user, with entries tokens cached.
	rest, filled memStatus
	entries      float64

	fill, sat, rate loadResult
	satCtr, rateCtr sidecarCounters
	rateVaultCPU    time.Duration
	satProxyCPU     time.Duration
	rotatedPerSec   float64
	satExited       bool
}

// usersReport is a many-users run's results.
type usersReport struct {
	opts              options
	started, finished time.Time
	machine           machine
	cases             []*usersCase
}

// executeUsers runs the many-users workload: for each store, a one-user
// baseline, then each user count with each distribution, each on a fresh
// sidecar.
func executeUsers(ctx context.Context, o options, progress io.Writer) (*usersReport, error) {
	b, err := newBench(o, progress)
	if err != nil {
		return nil, err
	}
	defer b.close()
	rep := &usersReport{opts: o, started: time.Now(), machine: describeMachine(o)}
	if err := b.prepareOnbehalf(ctx); err != nil {
		return nil, err
	}
	maxUsers := slices.Max(o.users)
	for _, st := range o.stores {
		fmt.Fprintf(progress, "loadbench: %s store: storing %d grants\n", st, maxUsers)
		cleanup, err := b.prepareStore(ctx, st, maxUsers)
		if err != nil {
			return nil, fmt.Errorf("%s store: %w", st, err)
		}
		type plan struct {
			dist string
			n    int
		}
		plans := []plan{{distOne, 1}}
		for _, n := range o.users {
			for _, d := range o.dists {
				plans = append(plans, plan{d, n})
			}
		}
		for _, p := range plans {
			if ctx.Err() != nil {
				break
			}
			fmt.Fprintf(progress, "loadbench: %s store, %d users, %s\n", st, p.n, p.dist)
			// The orchestrator mints and rotates assertions for this
			// case's users only.
			us, err := newUsers(filepath.Join(b.obDir, "orch.key"), p.n, o.rotate)
			if err != nil {
				cleanup()
				return nil, err
			}
			rep.cases = append(rep.cases, b.runUsersCase(ctx, st, p.dist, p.n, us))
			us.close()
		}
		cleanup()
	}
	b.many = nil
	rep.finished = time.Now()
	rep.machine.loadAvgEnd = loadAverage()
	return rep, ctx.Err()
}

// prepareStore fills the named store with n users' grants (and alice's,
// which every instance's first request uses) and points the sidecar
// configuration at it. cleanup stops what it started.
func (b *bench) prepareStore(ctx context.Context, name string, n int) (cleanup func(), err error) {
	switch name {
	case storeEmbedded:
		b.many = &manyState{storeYAML: embeddedStoreYAML}
		return func() {}, b.populateEmbedded(ctx, n)
	case storeVault:
	default:
		return nil, fmt.Errorf("unknown store %q", name)
	}
	srv, err := vaulttest.Start(vaulttest.Options{})
	if err != nil {
		return nil, err
	}
	cleanup = func() { _ = srv.Close() }
	// The sidecar runs with the least-privilege policy the example ships.
	policy, err := os.ReadFile(b.opts.vaultPolicy)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("read the sidecar's Vault policy (--vault-policy): %w", err)
	}
	if err := srv.WritePolicy("onbehalf-sidecar", string(policy)); err != nil {
		cleanup()
		return nil, err
	}
	sec, err := srv.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"onbehalf-sidecar"}, TTL: vaultTokenTTL, NoParent: true})
	if err != nil || sec == nil || sec.Auth == nil {
		cleanup()
		return nil, fmt.Errorf("create the sidecar's Vault token: %v", err)
	}
	tokenFile := filepath.Join(b.obDir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(sec.Auth.ClientToken), 0o600); err != nil {
		cleanup()
		return nil, err
	}
	cfg := vault.DefaultConfig()
	cfg.Address = srv.Addr()
	cfg.Auth = vault.AuthConfig{Method: vault.AuthToken, TokenFile: tokenFile}
	st, err := vault.Open(ctx, cfg, vault.Options{})
	if err != nil {
		cleanup()
		return nil, err
	}
	now := time.Now().UTC()
	alice := &store.Grant{Provider: benchProvider, User: benchUser, AccessToken: b.token, TokenType: "Bearer",
		Expiry: now.Add(24 * time.Hour), Scopes: []string{"chat:write"}, Status: store.StatusActive, ConnectedAt: now, Generation: 1}
	if _, err := st.Put(ctx, alice, 0); err != nil {
		_ = st.Close()
		cleanup()
		return nil, err
	}
	err = populateGrants(ctx, st, b.token, n, populateConcurrency)
	if err == nil {
		// The connect server creates the change feed when it starts;
		// the sidecars follow it (store.ChangeFeed).
		err = st.StartChanges(ctx)
	}
	_ = st.Close()
	if err != nil {
		cleanup()
		return nil, err
	}
	b.many = &manyState{vault: srv, storeYAML: fmt.Sprintf("{backend: vault, vault: {address: %q, auth: {method: token, token_file: vault-token}}}", srv.Addr())}
	return cleanup, nil
}

// runUsersCase measures one row on a fresh sidecar: memory at rest, memory
// once every user's token is cached, saturation and the fixed rate.
func (b *bench) runUsersCase(ctx context.Context, st, dist string, n int, us *users) *usersCase {
	c := &usersCase{store: st, dist: dist, users: n}
	b.launchHosts = b.restHostsFile
	defer func() { b.launchHosts = b.hostsFile }()
	inst, err := startOnbehalf(ctx, b)
	if err != nil {
		c.err = err.Error()
		return c
	}
	defer inst.stop()
	clients := make([]*http.Client, b.opts.workers)
	for i := range clients {
		clients[i] = inst.ep.client(true)
	}
	defer func() {
		for _, cl := range clients {
			cl.CloseIdleConnections()
		}
	}()
	localhost := func() string { return "localhost" }
	lim := b.lim

	// Open every worker's connection with the first user's requests
	// before the reading at rest, so that the growth to the filled
	// reading is the users' alone, not the connections' buffers.
	first := *inst.ep
	first.vary = func(h http.Header) { us.set(h, 0) }
	if res := first.closedLoop(ctx, clients, fillTimeout, 4*len(clients), localhost); res.failed > 0 {
		c.err = fmt.Sprintf("opening connections: %d requests failed (first: %s)", res.failed, res.firstErr)
		return c
	}
	c.rest = inst.tree.memory()

	// One request per user, in order: every user's token in the cache.
	fill := *inst.ep
	var seq atomic.Int64
	fill.vary = func(h http.Header) { us.set(h, int(seq.Add(1)-1)%n) }
	fctx, cancel := context.WithTimeout(ctx, fillTimeout)
	res := fill.closedLoop(fctx, clients, fillTimeout, n, localhost)
	cancel()
	// A failed request leaves one user out of the memory reading; the
	// case goes on, and the failures are reported.
	c.fill = res
	c.filled = inst.tree.memory()
	if ctr, err := readCounters(ctx, inst.admin); err == nil {
		c.entries = ctr.entries
	}

	ep := *inst.ep
	pick := picker(dist, n, b.opts.zipfS, uint64(n))
	ep.vary = func(h http.Header) { us.set(h, pick()) }
	ep.closedLoop(ctx, clients, lim.warmup, lim.warmupReqs, localhost)

	var vaultTree processTree
	if b.many != nil && b.many.vault != nil {
		vaultTree = processTree{root: b.many.vault.PID()}
	}
	minted0, t0 := us.minted.Load(), time.Now()
	ctr0, _ := readCounters(ctx, inst.admin)
	p0 := inst.tree.cpu()
	c.sat = ep.closedLoop(ctx, clients, b.opts.duration, lim.requests, localhost)
	c.satProxyCPU = inst.tree.cpu() - p0
	ctr1, _ := readCounters(ctx, inst.admin)
	c.satCtr = ctr1.sub(ctr0)

	v0 := vaultTree.cpu()
	c.rate = ep.openLoop(ctx, clients, b.opts.rate, b.opts.duration, lim.requests, localhost)
	c.rateVaultCPU = vaultTree.cpu() - v0
	ctr2, _ := readCounters(ctx, inst.admin)
	c.rateCtr = ctr2.sub(ctr1)
	c.rotatedPerSec = float64(us.minted.Load()-minted0) / time.Since(t0).Seconds()
	select {
	case <-inst.exited:
		c.satExited = true
	default:
	}
	return c
}

// failed reports whether the case went wrong.
func (c *usersCase) failed(rate int) bool {
	return c.err != "" || c.satExited || c.fill.failed > 0 || c.sat.failed > 0 || c.sat.ok == 0 || rateFails(&phaseResult{load: c.rate}, rate) != ""
}

// perCachedUser is the private memory each cached user added.
func (c *usersCase) perCachedUser() int64 {
	if c.entries < 2 {
		return 0
	}
	return int64(float64(c.filled.anon-c.rest.anon) / c.entries)
}

// markdown renders the many-users report.
func (r *usersReport) markdown() string {
	var b bytes.Buffer
	var n notes
	o := r.opts
	fmt.Fprintf(&b, "### Many users: run of %s\n\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	if o.smoke {
		b.WriteString("**Smoke run**: a few hundred requests per phase to check the harness works; the figures are not measurements.\n\n")
	}
	fmt.Fprintf(&b, "- Machine: %s, %d cores, %s memory; %s, kernel %s; %s; load average %s at the start, %s at the end.\n",
		r.machine.cpu, r.machine.cores, r.machine.memory, r.machine.os, r.machine.kernel, r.machine.goVersion, r.machine.loadAvg, r.machine.loadAvgEnd)
	if len(r.machine.versions) > 0 {
		fmt.Fprintf(&b, "- Versions: %s.\n", strings.Join(r.machine.versions, "; "))
	}
	fmt.Fprintf(&b, "- Command: `%s` (%s in all).\n", o.command, r.finished.Sub(r.started).Round(time.Second))
	fmt.Fprintf(&b, "- Workload: POST of %d bytes of JSON over HTTPS through CONNECT, %d workers; %s per phase; fixed rate %d req/s. "+
		"Each user has a grant and an assertion of their own, minted by the harness as an orchestrator would and rotated every %s "+
		"(rotations spread evenly over users); Zipf exponent %.2f. Token cache TTL %s (the default); on Vault the sidecar follows the store's change feed, "+
		"so a cached token is kept until it expires while the feed is read, rather than for the TTL. "+
		"The upstream accepts a request only with the token of the user it names.\n\n",
		len(requestBody), o.workers, o.duration, o.rate, o.rotate, o.zipfS, manyUsersCacheTTL)

	b.WriteString("| store | users | spread | req/s at saturation | cache hits | store reads/s | p50 ms at " + fmt.Sprint(o.rate) + "/s | p99 ms | cache hits | store reads/s | Vault CPU µs/req | private MB at rest → all cached | KB per cached user |\n")
	b.WriteString("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	pct := func(v float64) string {
		if v < 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f%%", 100*v)
	}
	for _, c := range r.cases {
		if c.err != "" {
			fmt.Fprintf(&b, "| %s | %d | %s | fails %s | | | | | | | | | |\n", c.store, c.users, c.dist, n.add("%s, %d users, %s: %s", c.store, c.users, c.dist, oneLine(c.err)))
			continue
		}
		row := []string{c.store, fmt.Sprint(c.users), c.dist}
		sat := rps(perSecond(c.sat))
		if c.sat.failed > 0 {
			sat += " " + n.add("%s, %d users, %s, saturation: %d of %d failed (first: %s)", c.store, c.users, c.dist, c.sat.failed, c.sat.failed+c.sat.ok, c.sat.firstErr)
		}
		row = append(row, sat, pct(c.satCtr.hitRate()), fmt.Sprintf("%.0f", c.satCtr.lookups/c.sat.elapsed.Seconds()))
		if why := rateFails(&phaseResult{load: c.rate}, o.rate); why != "" {
			row = append(row, "fails "+n.add("%s, %d users, %s at %d req/s: %s", c.store, c.users, c.dist, o.rate, why), "")
		} else {
			row = append(row, ms(percentile(c.rate.latencies, 50)), ms(percentile(c.rate.latencies, 99)))
		}
		row = append(row, pct(c.rateCtr.hitRate()), fmt.Sprintf("%.0f", c.rateCtr.lookups/c.rate.elapsed.Seconds()))
		if c.store == storeVault && c.rate.ok > 0 {
			row = append(row, fmt.Sprintf("%.0f", float64(perRequest(c.rateVaultCPU, c.rate))/float64(time.Microsecond)))
		} else {
			row = append(row, "—")
		}
		mem := mb(c.rest.anon)
		per := "—"
		if c.users > 1 {
			mem += " → " + mb(c.filled.anon)
			per = kb(c.perCachedUser())
			if int(c.entries) < c.users-c.fill.failed {
				per += " " + n.add("%s, %d users: %.0f tokens cached after one request per user (token_cache.max_entries or max_bytes)", c.store, c.users, c.entries)
			}
		}
		if c.fill.failed > 0 {
			per += " " + n.add("%s, %d users, %s, one request per user: %d of %d failed (first: %s)", c.store, c.users, c.dist, c.fill.failed, c.fill.failed+c.fill.ok, c.fill.firstErr)
		}
		row = append(row, mem, per)
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	b.WriteString("\nStore reads are the lookups that went past the token cache (`onbehalf_grant_lookups_total`), one grant read each; " +
		"concurrent misses for one user share one. Cache hits are `onbehalf_token_cache_total` hits over all lookups. " +
		"KB per cached user is the growth of private memory (RssAnon) from rest to one request per user, over the tokens then cached: " +
		"it includes the user's verified assertion, policy decision cache entry and the Go heap's headroom.\n")
	var rot []string
	for _, c := range r.cases {
		if c.users > 1 && c.err == "" {
			rot = append(rot, fmt.Sprintf("%s/%d/%s %.0f", c.store, c.users, c.dist, c.rotatedPerSec))
		}
	}
	if len(rot) > 0 {
		b.WriteString("\nAssertions rotated per second during the measured phases: " + strings.Join(rot, "; ") + ".\n")
	}
	if !o.smoke {
		r.targets(&b)
	}
	if len(n.items) > 0 {
		b.WriteString("\n")
		for i, it := range n.items {
			fmt.Fprintf(&b, "%d. %s\n", i+1, it)
		}
	}
	return b.String()
}

// targets checks issue 20's many-users target: p99 at the fixed rate over
// the most users, Zipf, on Vault within 2 ms of one user on Vault.
func (r *usersReport) targets(b *bytes.Buffer) {
	var one, many *usersCase
	for _, c := range r.cases {
		// The target is on the fixed-rate phase: a case counts when that
		// phase kept up, whatever happened in the others (they are
		// reported in the table).
		if c.store != storeVault || c.err != "" || c.rate.ok == 0 || rateFails(&phaseResult{load: c.rate}, r.opts.rate) != "" {
			continue
		}
		switch {
		case c.dist == distOne:
			one = c
		case c.dist == distZipf && (many == nil || c.users > many.users):
			many = c
		}
	}
	if one == nil || many == nil {
		return
	}
	p1, pn := percentile(one.rate.latencies, 99), percentile(many.rate.latencies, 99)
	verdict := "met"
	switch {
	case p1 > quietP99:
		// A one-user tail this long is the machine's (other work on
		// the cores), not the sidecar's: a difference of two such
		// tails says nothing about a 2 ms target.
		verdict = fmt.Sprintf("not judged: the one-user p99 is over %s ms, the machine was busy", ms(quietP99))
	case pn-p1 > targetManyUsersP99:
		verdict = "**missed**"
	}
	fmt.Fprintf(b, "\n| target (issue 20) | measured | |\n|---|---|---|\n| p99 at %d req/s, %d Zipf users on Vault, within 2 ms of one user | %s ms vs %s ms (%+.2f ms); p50 %s ms vs %s ms | %s |\n",
		r.opts.rate, many.users, ms(pn), ms(p1), float64(pn-p1)/float64(time.Millisecond),
		ms(percentile(many.rate.latencies, 50)), ms(percentile(one.rate.latencies, 50)), verdict)
}

// targetManyUsersP99 is how much higher the p99 over many users may be.
const targetManyUsersP99 = 2 * time.Millisecond

// quietP99 is the longest one-user p99 at the fixed rate that still
// reflects the sidecar rather than other work on the machine: on a quiet
// machine it is a millisecond or two.
const quietP99 = 10 * time.Millisecond

// requiredFailures names the cases that failed.
func (r *usersReport) requiredFailures() []string {
	var bad []string
	for _, c := range r.cases {
		if c.failed(r.opts.rate) {
			bad = append(bad, fmt.Sprintf("%s/%d/%s", c.store, c.users, c.dist))
		}
	}
	return bad
}
