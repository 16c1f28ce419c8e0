package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// The many-users workload (--users): one sidecar acting for thousands of
// people, each with a grant of their own and an assertion of their own that
// the orchestrator rotates, requests spread over them uniformly or
// Zipf-skewed, on the embedded store and on a real Vault.
const (
	// Distributions of requests over users.
	distOne     = "one"     // every request for the first user: the baseline
	distUniform = "uniform" // every user equally likely
	distZipf    = "zipf"    // user i with probability ∝ 1/(1+i)^s

	// defaultZipfS is the Zipf exponent: with s = 1.1 over 10,000 users
	// the first user gets about 15% of requests, the first 100 about two
	// thirds and the last 9,000 about a sixth, a common shape for per-user
	// activity (a few heavy users, a long tail).
	defaultZipfS = 1.1
	// defaultRotate is how often the orchestrator mints each user a new
	// assertion. Rotations are spread evenly: with 10,000 users and 30 s,
	// about 330 assertions a second are new to the sidecar.
	defaultRotate = 30 * time.Second
	// assertionLifetime is each minted assertion's exp - iat: longer than
	// the rotation, so none expires while in use.
	assertionLifetime = 2 * time.Minute
	// rotateTick is how often the minter looks for assertions to rotate.
	rotateTick = 100 * time.Millisecond
	// manyUsersCacheTTL is the sidecar's token cache TTL in this workload:
	// the default an operator runs with, so that misses happen at the rate
	// they would in production.
	manyUsersCacheTTL = "10s"
	// populateConcurrency is how many grant writes run at once when the
	// harness fills a Vault store.
	populateConcurrency = 16
)

// benchUserName is the i-th user of a many-users run.
func benchUserName(i int) string { return fmt.Sprintf("u%05d", i) }

// users mints and rotates one assertion per user, as an orchestrator would,
// and picks the user of each request.
type users struct {
	key      any
	rotate   time.Duration
	names    []string
	asserted []atomic.Pointer[string]
	// epoch is the rotation epoch each user's current assertion was minted
	// in (see epochOf).
	epoch []int64
	start time.Time
	// minted counts assertions minted after the first set.
	minted atomic.Int64

	stop chan struct{}
	done chan struct{}
}

// newUsers mints an assertion for each of n users with the orchestrator
// key in keyFile and starts rotating them.
func newUsers(keyFile string, n int, rotate time.Duration) (*users, error) {
	key, _, err := identity.LoadSigningKey(keyFile)
	if err != nil {
		return nil, err
	}
	u := &users{key: key, rotate: rotate, names: make([]string, n), asserted: make([]atomic.Pointer[string], n),
		epoch: make([]int64, n), start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	for i := range n {
		u.names[i] = benchUserName(i)
		u.epoch[i] = u.epochOf(i, u.start)
		if err := u.mint(i); err != nil {
			return nil, err
		}
	}
	go u.loop()
	return u, nil
}

// epochOf is how many rotations user i has had by t. Each user's
// rotations are offset by its share of the period, so they are spread
// evenly over time.
func (u *users) epochOf(i int, t time.Time) int64 {
	off := time.Duration(int64(u.rotate) * int64(i) / int64(len(u.names)))
	return int64((t.Sub(u.start) + off) / u.rotate)
}

func (u *users) mint(i int) error {
	a, err := identity.Mint(u.key, identity.MintOptions{
		Issuer: benchIssuer, Audience: benchAudience, Subject: u.names[i], Agent: "loadbench-agent",
		KeyID: "orch", TTL: assertionLifetime,
	})
	if err != nil {
		return err
	}
	u.asserted[i].Store(&a)
	return nil
}

func (u *users) loop() {
	defer close(u.done)
	t := time.NewTicker(rotateTick)
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case now := <-t.C:
			for i := range u.names {
				if e := u.epochOf(i, now); e != u.epoch[i] {
					u.epoch[i] = e
					if u.mint(i) == nil {
						u.minted.Add(1)
					}
				}
			}
		}
	}
}

func (u *users) close() {
	close(u.stop)
	<-u.done
}

// set puts user i's current assertion and name on h.
func (u *users) set(h http.Header, i int) {
	h[assertionHeader] = []string{*u.asserted[i].Load()}
	h[benchUserHeader] = []string{u.names[i]}
}

// picker returns a function choosing the user of each request among the
// first n users by dist. It is safe for concurrent use.
func picker(dist string, n int, s float64, seed uint64) func() int {
	switch dist {
	case distOne:
		return func() int { return 0 }
	case distUniform:
		var mu sync.Mutex
		r := rand.New(rand.NewPCG(seed, 1))
		return func() int {
			mu.Lock()
			defer mu.Unlock()
			return r.IntN(n)
		}
	default:
		var mu sync.Mutex
		z := newZipf(rand.New(rand.NewPCG(seed, 2)), s, n)
		return func() int {
			mu.Lock()
			defer mu.Unlock()
			return z.next()
		}
	}
}

// zipf draws 0..n-1 with probability ∝ 1/(1+i)^s by inverting the
// cumulative distribution (a binary search in a table of n entries).
type zipf struct {
	r   *rand.Rand
	cdf []float64
}

func newZipf(r *rand.Rand, s float64, n int) *zipf {
	z := &zipf{r: r, cdf: make([]float64, n)}
	var sum float64
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
		z.cdf[i] = sum
	}
	for i := range z.cdf {
		z.cdf[i] /= sum
	}
	return z
}

func (z *zipf) next() int {
	x := z.r.Float64()
	lo, hi := 0, len(z.cdf)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if z.cdf[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// share is the probability of the first k of n users under z.
func (z *zipf) share(k int) float64 {
	if k <= 0 {
		return 0
	}
	return z.cdf[min(k, len(z.cdf))-1]
}

// sidecarCounters are the sidecar's token cache counters, read from its
// /metrics.
type sidecarCounters struct {
	hits, misses, lookups, entries float64
}

// readCounters scrapes the admin listener's /metrics.
func readCounters(ctx context.Context, admin string) (sidecarCounters, error) {
	var c sidecarCounters
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/metrics", nil)
	if err != nil {
		return c, err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return c, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case `onbehalf_token_cache_total{result="hit"}`:
			c.hits = v
		case `onbehalf_token_cache_total{result="miss"}`:
			c.misses = v
		case "onbehalf_grant_lookups_total":
			c.lookups = v
		case "onbehalf_token_cache_entries":
			c.entries = v
		}
	}
	return c, sc.Err()
}

// sub is the change from c0 to c.
func (c sidecarCounters) sub(c0 sidecarCounters) sidecarCounters {
	return sidecarCounters{hits: c.hits - c0.hits, misses: c.misses - c0.misses, lookups: c.lookups - c0.lookups, entries: c.entries}
}

// hitRate is the share of lookups the cache answered, or -1 with none.
func (c sidecarCounters) hitRate() float64 {
	if c.hits+c.misses == 0 {
		return -1
	}
	return c.hits / (c.hits + c.misses)
}

// populateGrants stores a grant for each of the first n users (the user's
// derived token, valid for a day) in st, concurrently.
func populateGrants(ctx context.Context, st store.Store, runToken string, n, concurrency int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	now := time.Now().UTC()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				name := benchUserName(i)
				g := &store.Grant{
					Provider: benchProvider, User: name, AccessToken: userToken(runToken, name), TokenType: "Bearer",
					Expiry: now.Add(24 * time.Hour), Scopes: []string{"chat:write"}, Status: store.StatusActive,
					ConnectedAt: now, IssuedAt: now, Generation: 1,
				}
				if _, err := st.Put(ctx, g, 0); err != nil && !errors.Is(err, store.ErrConflict) {
					errs <- fmt.Errorf("grant for %s: %w", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(<-errs, ctx.Err())
}

// populateEmbedded fills the bench's embedded store with n users' grants.
// Each write opens the file and syncs it: thousands take a while, once per
// run.
func (b *bench) populateEmbedded(ctx context.Context, n int) error {
	st, err := store.OpenEmbedded(store.EmbeddedConfig{
		Path: filepath.Join(b.obDir, "grants.db"), KeyFile: filepath.Join(b.obDir, "grants.key"), LockTimeout: time.Minute,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	return populateGrants(ctx, st, b.token, n, 1)
}
