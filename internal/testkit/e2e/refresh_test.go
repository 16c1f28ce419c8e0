//go:build integration

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// stormTimeout bounds one storm request. Hundreds of new tunnels, each a
// TLS handshake, start at once: under the race detector on a loaded
// two-core machine the last of them can take longer than a client's usual
// 15 s. The storm tests check correctness (one refresh, no reuse), not
// speed; the benchmarks measure that.
const stormTimeout = 60 * time.Second

// storm sends n concurrent requests as alice, spread over clients, and
// returns the statuses and the tokens the upstream received.
func storm(t *testing.T, e *testenv.Env, clients []*http.Client, n int) (statuses map[int]int) {
	t.Helper()
	assertion := e.Assert(t, testenv.User)
	var mu sync.Mutex
	statuses = map[int]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, e.APIURL(fmt.Sprintf("/api/storm/%d", i)), strings.NewReader(`{}`))
			req.Header.Set(identity.DefaultHeader, assertion)
			code := 0
			c := *clients[i%len(clients)] // same transport, a storm's timeout
			c.Timeout = stormTimeout
			resp, err := c.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
				if code != 200 {
					t.Logf("request %d: %d %s", i, code, b)
				}
			} else {
				t.Logf("request %d: %v", i, err)
			}
			mu.Lock()
			statuses[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return statuses
}

// checkStorm asserts one refresh, no reuse detection, every request 200
// with the new, live token.
func checkStorm(t *testing.T, e *testenv.Env, prov *oauthtest.Server, statuses map[int]int, n int) {
	t.Helper()
	if statuses[200] != n {
		t.Errorf("statuses %v; want all %d requests 200", statuses, n)
	}
	st := prov.Stats()
	if st.Refreshes != 1 || st.ReuseDetections != 0 {
		t.Errorf("provider saw %d refreshes and %d reuse detections; want exactly 1 and 0", st.Refreshes, st.ReuseDetections)
	}
	seen := map[string]bool{}
	for _, r := range e.Upstream.Requests() {
		seen[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")] = true
	}
	if len(seen) != 1 || seen[e.Token] {
		t.Errorf("upstream saw %d distinct tokens (old one among them: %v); want only the new one", len(seen), seen[e.Token])
	}
	for tok := range seen {
		if user, _, active := prov.Introspect(tok); !active || user != testenv.User {
			t.Errorf("the injected token is not alice's live token (user %q, active %v)", user, active)
		}
	}
	g, _, err := e.Store.Get(context.Background(), testenv.Provider, testenv.User)
	if err != nil || g.Generation != 2 || g.RefreshToken == e.RefreshToken || g.Status != store.StatusActive {
		t.Errorf("stored grant after the storm: %v, err %v; want generation 2, a rotated refresh token, active", g, err)
	}
}

// expire makes alice's access token expired everywhere: in the store and at
// the provider.
func expire(t *testing.T, e *testenv.Env, prov *oauthtest.Server) {
	t.Helper()
	e.SetExpiry(t, testenv.User, time.Now().Add(-time.Minute))
	if err := prov.ExpireAccessToken(e.Token); err != nil {
		t.Fatal(err)
	}
}

// TestRefreshStormThreeSidecarsOnVault: three sidecars with separate
// caches share one real Vault; 300 concurrent requests for a user whose
// access token expired cause exactly one refresh.
func TestRefreshStormThreeSidecarsOnVault(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	e := testenv.New(t, testenv.Options{Vault: sharedVault(t), Provider: prov})
	sidecars := []*http.Client{e.Client(), e.ClientFor(e.AddSidecar(t)), e.ClientFor(e.AddSidecar(t))}
	expire(t, e, prov)
	e.Upstream.Reset()
	checkStorm(t, e, prov, storm(t, e, sidecars, 300), 300)
}

// TestRefreshStormEmbedded: the same with the embedded store and one sidecar.
func TestRefreshStormEmbedded(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	e := testenv.New(t, testenv.Options{Provider: prov})
	expire(t, e, prov)
	e.Upstream.Reset()
	checkStorm(t, e, prov, storm(t, e, []*http.Client{e.Client()}, 300), 300)
}

// TestRefreshStormTransit: Vault with Transit envelope encryption.
func TestRefreshStormTransit(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	e := testenv.New(t, testenv.Options{Vault: sharedVault(t), Transit: true, Provider: prov})
	sidecars := []*http.Client{e.Client(), e.ClientFor(e.AddSidecar(t))}
	expire(t, e, prov)
	e.Upstream.Reset()
	checkStorm(t, e, prov, storm(t, e, sidecars, 100), 100)
}

func get(t *testing.T, c *http.Client, e *testenv.Env, assertion string) (int, errorBody) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/x"), nil)
	req.Header.Set(identity.DefaultHeader, assertion)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, readError(t, resp)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, errorBody{}
}

// TestProviderDown: a still-valid token keeps working; an expired one gives
// 503 provider_unavailable; the grant stays active.
func TestProviderDown(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	e := testenv.New(t, testenv.Options{Provider: prov, Config: func(c *sidecar.Config) { c.TokenCache.TTL = 0 }})
	assertion := e.Assert(t, testenv.User)
	prov.FailNext(1000, http.StatusServiceUnavailable)
	if code, body := get(t, e.Client(), e, assertion); code != 200 {
		t.Errorf("valid token with the provider down: %d %s; want 200", code, body.Error)
	}
	e.SetExpiry(t, testenv.User, time.Now().Add(-time.Minute))
	if code, body := get(t, e.Client(), e, assertion); code != 503 || body.Error != "provider_unavailable" {
		t.Errorf("expired token with the provider down: %d %s; want 503 provider_unavailable", code, body.Error)
	}
	g, _, err := e.Store.Get(context.Background(), testenv.Provider, testenv.User)
	if err != nil || g.Status != store.StatusActive || g.RefreshToken != e.RefreshToken {
		t.Errorf("grant after a provider outage: %v %v; want untouched and active", g, err)
	}
}

// TestInvalidGrant: the provider revoked the grant; the sidecar marks it
// reconnect_required (kept, not deleted), answers 401 with a connect URL,
// and does not ask the provider again.
func TestInvalidGrant(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	e := testenv.New(t, testenv.Options{Provider: prov, Config: func(c *sidecar.Config) { c.TokenCache.TTL = 0 }})
	assertion := e.Assert(t, testenv.User)
	prov.RevokeUser(testenv.User)
	e.SetExpiry(t, testenv.User, time.Now().Add(-time.Minute))
	code, body := get(t, e.Client(), e, assertion)
	if code != 401 || body.Error != "reconnect_required" || body.ConnectURL != "https://connect.test/connect/"+testenv.Provider {
		t.Errorf("got %d %s %q; want 401 reconnect_required with the connect URL", code, body.Error, body.ConnectURL)
	}
	g, _, err := e.Store.Get(context.Background(), testenv.Provider, testenv.User)
	if err != nil || g.Status != store.StatusReconnectRequired {
		t.Errorf("grant: %v %v; want kept and marked reconnect_required", g, err)
	}
	before := prov.Stats().TokenRequests
	for range 3 {
		if code, body := get(t, e.Client(), e, assertion); code != 401 || body.Error != "reconnect_required" {
			t.Errorf("later request: %d %s", code, body.Error)
		}
	}
	if after := prov.Stats().TokenRequests; after != before {
		t.Errorf("the provider was asked %d more times after invalid_grant; want 0", after-before)
	}
}

// failingPuts fails the next Put calls on a real store (as a Vault write
// failure after the provider answered would).
type failingPuts struct {
	store.Store
	fail atomic.Int64
}

func (f *failingPuts) Put(ctx context.Context, g *store.Grant, cas store.Version) (store.Version, error) {
	if f.fail.Add(-1) >= 0 {
		return 0, fmt.Errorf("test: %w", store.ErrUnavailable)
	}
	return f.Store.Put(ctx, g, cas)
}

// TestRotationThenStoreWriteFails: the provider rotates the refresh token,
// then writing the new grant to Vault fails. The rotated tokens are
// journalled, so the request is served with the new access token at once;
// the store write is retried in the background until it lands, and the old
// (spent) refresh token is never presented again.
func TestRotationThenStoreWriteFails(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	fp := &failingPuts{}
	e := testenv.New(t, testenv.Options{
		Vault: sharedVault(t), Provider: prov,
		WrapStore: func(s store.Store) store.Store { fp.Store = s; return fp },
		Config:    func(c *sidecar.Config) { c.TokenCache.TTL = 0 },
	})
	assertion := e.Assert(t, testenv.User)
	expire(t, e, prov)
	fp.fail.Store(5) // the immediate retries and the first background ones fail
	code, body := get(t, e.Client(), e, assertion)
	if code != 200 {
		t.Errorf("first request: %d %s; want 200 with the journalled token", code, body.Error)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		g, _, err := e.Store.Get(context.Background(), testenv.Provider, testenv.User)
		if err == nil && g.Generation == 2 {
			if g.RefreshToken == e.RefreshToken {
				t.Errorf("stored refresh token is the spent one")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored grant %v, %v after 20s; want the rotated tokens at generation 2", g, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get(t, e.Client(), e, assertion); code != 200 {
		t.Errorf("request after the write: %d %s", code, body.Error)
	}
	if st := prov.Stats(); st.ReuseDetections != 0 || st.Refreshes != 1 {
		t.Errorf("provider: %d refreshes, %d reuse detections; want 1 and 0 (the spent refresh token was never sent again)", st.Refreshes, st.ReuseDetections)
	}
	seen := map[string]bool{}
	for _, r := range e.Upstream.Requests() {
		seen[r.Header.Get("Authorization")] = true
	}
	if len(seen) != 1 || seen["Bearer "+e.Token] || seen[""] {
		t.Errorf("upstream saw %d distinct credentials (old one among them: %v); want only the rotated token", len(seen), seen["Bearer "+e.Token])
	}
}

// TestVaultStoppedMidRun: with Vault down, requests that need the store get
// 503 store_unavailable, tokens cached within the bound still work, /readyz
// reports the store, and service resumes by itself when Vault is back.
func TestVaultStoppedMidRun(t *testing.T) {
	v := sharedVault(t)
	e := testenv.New(t, testenv.Options{Vault: v, Config: func(c *sidecar.Config) { c.TokenCache.TTL = 30 * time.Second }})
	e.PutGrant(t, "bob", "bob-token", time.Now().Add(time.Hour))
	alice := e.Assert(t, testenv.User)
	if code, _ := get(t, e.Client(), e, alice); code != 200 {
		t.Fatalf("warm-up: %d", code)
	}
	v.Stop()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			v.Restart()
		}
	})
	if code, body := get(t, e.Client(), e, alice); code != 200 {
		t.Errorf("cached token with Vault down: %d %s; want 200", code, body.Error)
	}
	start := time.Now()
	if code, body := get(t, e.Client(), e, e.Assert(t, "bob")); code != 503 || body.Error != "store_unavailable" {
		t.Errorf("uncached user with Vault down: %d %s; want 503 store_unavailable", code, body.Error)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("store_unavailable took %v; want it within the Vault call timeout", d)
	}
	if rd := readyz(t, e); !strings.Contains(rd, `"ready":false`) {
		t.Errorf("/readyz with Vault down: %s", rd)
	}
	if err := v.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// A dev server restarts empty: seed bob's grant again (as an operator
	// restoring Vault would).
	e.PutGrant(t, "bob", "bob-token", time.Now().Add(time.Hour))
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := get(t, e.Client(), e, e.Assert(t, "bob"))
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d after Vault came back; want service to resume without a restart", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// BenchmarkRefreshStormVault measures the refresh storm end to end: 300
// concurrent requests as alice, whose access token has expired, spread over
// one or three sidecars sharing one real Vault, against the real OAuth
// server answering at once. Each iteration is one storm and must cost
// exactly one refresh; storm-ms is the wall time from the first request to
// the last answer. The token cache is off, so that each storm starts from
// the store, as the first storm after a token expires does.
func BenchmarkRefreshStormVault(b *testing.B) {
	const requests = 300
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			prov := testenv.StartProvider(b, oauthtest.Options{})
			e := testenv.New(b, testenv.Options{Vault: sharedVault(b), Provider: prov,
				Config: func(c *sidecar.Config) { c.TokenCache.TTL = 0 }})
			clients := []*http.Client{e.Client()}
			for range replicas - 1 {
				clients = append(clients, e.ClientFor(e.AddSidecar(b)))
			}
			assertion := e.Assert(b, testenv.User)
			var total time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				g, _, err := e.Store.Get(context.Background(), testenv.Provider, testenv.User)
				if err != nil {
					b.Fatal(err)
				}
				if err := prov.ExpireAccessToken(g.AccessToken); err != nil {
					b.Fatal(err)
				}
				e.SetExpiry(b, testenv.User, time.Now().Add(-time.Minute))
				before := prov.Stats().Refreshes
				b.StartTimer()
				start := time.Now()
				var wg sync.WaitGroup
				var failed atomic.Int64
				for r := range requests {
					wg.Go(func() {
						req, _ := http.NewRequest(http.MethodGet, e.APIURL(fmt.Sprintf("/api/storm/%d", r)), nil)
						req.Header.Set(identity.DefaultHeader, assertion)
						resp, err := clients[r%len(clients)].Do(req)
						if err != nil {
							failed.Add(1)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							failed.Add(1)
						}
					})
				}
				wg.Wait()
				total += time.Since(start)
				b.StopTimer()
				if n := failed.Load(); n > 0 {
					b.Fatalf("%d of %d requests failed", n, requests)
				}
				if st := prov.Stats(); st.Refreshes != before+1 || st.ReuseDetections != 0 {
					b.Fatalf("provider: %d refreshes in the storm, %d reuse detections; want 1 and 0", st.Refreshes-before, st.ReuseDetections)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "storm-ms")
		})
	}
}

// TestRefreshLostAudited: a sidecar takes over the lease of a holder that
// died after spending the refresh token; its one presentation is refused,
// and the grant is marked reconnect_required with the reason refresh_lost
// in the audit record and in grants_lost_total, not as a revocation.
func TestRefreshLostAudited(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	e := testenv.New(t, testenv.Options{Provider: prov, Config: func(c *sidecar.Config) {
		c.TokenCache.TTL = 0
		c.Refresh.LeaseTTL, c.Refresh.TakeoverAfter = time.Second, time.Second
	}})
	ctx := context.Background()
	g, _, err := e.Store.Get(ctx, testenv.Provider, testenv.User)
	if err != nil {
		t.Fatal(err)
	}
	// The dead holder spent the refresh token and never stored the result.
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {g.RefreshToken}}
	req, _ := http.NewRequest(http.MethodPost, prov.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testenv.ProviderClientID, testenv.ProviderClientSecret)
	resp, err := prov.Client().Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the dead holder's refresh: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := e.Store.AcquireLease(ctx, testenv.Provider, testenv.User, store.LeaseRequest{
		Holder: "dead-holder", TTL: 500 * time.Millisecond, Refresh: true, Generation: g.Generation,
	}); err != nil {
		t.Fatal(err)
	}
	expire(t, e, prov)

	assertion := e.Assert(t, testenv.User)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get(t, e.Client(), e, assertion)
		if code == 401 && body.Error == "reconnect_required" {
			break
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("got %d %s; want 503 while the lease is left to its holder, then 401 reconnect_required", code, body.Error)
		}
	}
	if st := prov.Stats(); st.ReuseDetections != 1 {
		t.Errorf("provider reuse detections = %d; want the one presentation after the takeover", st.ReuseDetections)
	}
	var rec map[string]any
	for _, r := range e.AuditRecords(t) {
		if r["event"] == "refresh" {
			rec = r
		}
	}
	if rec == nil || rec["reason"] != "refresh_lost" {
		t.Errorf("last refresh audit record = %v; want reason refresh_lost", rec)
	}
	mresp, err := http.Get("http://" + e.Sidecar.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(text), `onbehalf_grants_lost_total{provider="chat"} 1`) ||
		!strings.Contains(string(text), `onbehalf_refreshes_total{outcome="refresh_lost",provider="chat"} 1`) {
		t.Errorf("metrics do not count the lost grant:\n%s", grepLines(string(text), "onbehalf_grants_lost_total", "onbehalf_refreshes_total"))
	}
}

// grepLines returns the lines of s that start with one of prefixes.
func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
