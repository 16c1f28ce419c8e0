//go:build integration

package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// feedTTL is the sidecars' token cache TTL in the change feed test; they
// read the feed every quarter of it.
const feedTTL = 2 * time.Second

// metricValue returns the value of the metric line that starts with
// series (name plus labels), or -1 when there is none.
func metricValue(t *testing.T, sc *sidecar.Sidecar, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + sc.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestChangeFeedOnVault: sidecars on a real Vault that follow the change
// feed keep a user's token past the cache TTL without reading the store
// again, stop injecting a revoked grant well within the TTL, switch to a
// replacing connection's token, and, when Vault goes away, stop serving
// cached tokens a TTL after their last good read of the feed.
func TestChangeFeedOnVault(t *testing.T) {
	v, err := vaulttest.Start(vaulttest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	e := testenv.New(t, testenv.Options{Vault: v, Config: func(c *sidecar.Config) { c.TokenCache.TTL = feedTTL }})
	feed, ok := e.Store.(store.ChangeFeed)
	if !ok {
		t.Fatal("the Vault store keeps no change feed")
	}
	// What the connect server does when it starts.
	if err := feed.StartChanges(context.Background()); err != nil {
		t.Fatal(err)
	}
	sidecars := []*sidecar.Sidecar{e.Sidecar, e.AddSidecar(t)}
	const feedOK = `onbehalf_change_feed_reads_total{result="ok"}`
	deadline := time.Now().Add(10 * time.Second)
	for _, sc := range sidecars {
		for metricValue(t, sc, feedOK) < 1 {
			if time.Now().After(deadline) {
				t.Fatal("a sidecar has not read the change feed")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	assertion := e.Assert(t, testenv.User)
	inject := func(i int) string {
		t.Helper()
		e.Upstream.Reset()
		code, body := get(t, e.ClientFor(sidecars[i]), e, assertion)
		if code != http.StatusOK {
			return body.Error
		}
		reqs := e.Upstream.Requests()
		if len(reqs) != 1 {
			t.Fatalf("upstream saw %d requests; want 1", len(reqs))
		}
		return reqs[0].Header.Get("Authorization")
	}
	const lookups = "onbehalf_grant_lookups_total"
	for i := range sidecars {
		if got := inject(i); got != "Bearer "+testenv.CanaryToken {
			t.Fatalf("sidecar %d injected %q; want the stored token", i+1, got)
		}
	}
	before := []float64{metricValue(t, sidecars[0], lookups), metricValue(t, sidecars[1], lookups)}

	// Three TTLs of requests: served from the cache, no store read.
	for end := time.Now().Add(3 * feedTTL); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for i := range sidecars {
			if got := inject(i); got != "Bearer "+testenv.CanaryToken {
				t.Fatalf("sidecar %d injected %q; want the cached token", i+1, got)
			}
		}
	}
	for i, sc := range sidecars {
		if got := metricValue(t, sc, lookups); got != before[i] {
			t.Errorf("sidecar %d read the store %v times in three TTLs; want 0 (the feed vouches for its token)", i+1, got-before[i])
		}
	}

	// Revoked: the grant is deleted (the store records the change).
	if err := e.Store.Delete(context.Background(), testenv.Provider, testenv.User); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	stopped := make([]time.Duration, len(sidecars))
	for i := range sidecars {
		for inject(i) != "grant_missing" {
			if time.Since(revoked) > feedTTL {
				t.Fatalf("sidecar %d still injects %v after the revocation; want it stopped within the TTL (%v)", i+1, time.Since(revoked), feedTTL)
			}
			time.Sleep(20 * time.Millisecond)
		}
		stopped[i] = time.Since(revoked)
	}
	t.Logf("sidecars stopped injecting the revoked grant after %v", stopped)

	// Connected again, then replaced by another connection, as the
	// connect server does it.
	e.PutGrant(t, testenv.User, "first-connection-token", time.Now().Add(time.Hour))
	for i := range sidecars {
		if got := inject(i); got != "Bearer first-connection-token" {
			t.Fatalf("sidecar %d injected %q after connecting again", i+1, got)
		}
	}
	e.PutGrant(t, testenv.User, "second-connection-token", time.Now().Add(time.Hour))
	if err := store.RecordChange(context.Background(), e.Store, testenv.Provider, testenv.User); err != nil {
		t.Fatal(err)
	}
	replaced := time.Now()
	for i := range sidecars {
		for inject(i) != "Bearer second-connection-token" {
			if time.Since(replaced) > feedTTL {
				t.Fatalf("sidecar %d still injects the replaced token %v later", i+1, time.Since(replaced))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Past a TTL of the new token's lookup, so that only the feed keeps it.
	time.Sleep(feedTTL + 500*time.Millisecond)
	for i := range sidecars {
		if got := inject(i); got != "Bearer second-connection-token" {
			t.Fatalf("sidecar %d injected %q; want the cached token", i+1, got)
		}
	}
	// Vault goes away: the feed cannot be read, and a TTL after the last
	// good read started no cached token is served.
	v.Stop()
	down := time.Now()
	for i := range sidecars {
		for {
			got := inject(i)
			if got == "store_unavailable" {
				break
			}
			if got != "Bearer second-connection-token" {
				t.Fatalf("sidecar %d answered %q with Vault down; want the cached token, then store_unavailable", i+1, got)
			}
			if time.Since(down) > feedTTL+time.Second {
				t.Fatalf("sidecar %d still serves its cached token %v after Vault went away; want at most the TTL", i+1, time.Since(down))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("cached tokens served for %v after Vault went away", time.Since(down))
}
