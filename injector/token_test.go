package injector

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCachedTokenDerivedOnce: what requests derive from a cached token (its
// scrub set and fingerprint) is computed by the first request only, shared
// by every copy the cache hands out, and made afresh for the token that
// replaces it; a token that was never cached computes both on each call.
func TestCachedTokenDerivedOnce(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &countingSource{tok: Token{Value: "access-token-0123456789", Secrets: []string{"refresh-token-0123456789"}}}
	c := NewCachedSource(src, CacheConfig{TTL: time.Minute}, func() time.Time { return now })
	var fingerprints atomic.Int64
	fingerprint := func(token string) string {
		fingerprints.Add(1)
		return "fp:" + token[:6]
	}

	if _, err := c.Token(context.Background(), "p", "alice"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	sets := make([]any, 8)
	for i := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := c.Token(context.Background(), "p", "alice")
			if err != nil {
				t.Error(err)
				return
			}
			if got := tok.Fingerprint(fingerprint); got != "fp:access" {
				t.Errorf("fingerprint = %q; want fp:access", got)
			}
			sets[i] = tok.ScrubSet()
		}()
	}
	wg.Wait()
	if got := fingerprints.Load(); got != 1 {
		t.Errorf("fingerprint computed %d times for one cached token; want 1", got)
	}
	for i, s := range sets {
		if s != sets[0] {
			t.Fatalf("request %d got a scrub set of its own; want the cached token's", i)
		}
	}
	tok, _ := c.Token(context.Background(), "p", "alice")
	for _, secret := range []string{"access-token-0123456789", "refresh-token-0123456789"} {
		if out, n := tok.ScrubSet().String("x " + secret + " y"); n != 1 || strings.Contains(out, secret) {
			t.Errorf("the shared scrub set made %q (%d replaced) of a text holding %q; want it replaced", out, n, secret)
		}
	}

	// The replacing token (after the TTL) derives its own.
	src.tok = Token{Value: "second-token-0123456789"}
	now = now.Add(2 * time.Minute)
	c.Token(context.Background(), "p", "alice") // the miss that caches it
	tok2, _ := c.Token(context.Background(), "p", "alice")
	if got := tok2.Fingerprint(fingerprint); got != "fp:second" {
		t.Errorf("new token's fingerprint = %q; want fp:second", got)
	}
	if tok2.ScrubSet() == tok.ScrubSet() {
		t.Error("the new token shares the old token's scrub set")
	}

	// Uncached: computed each time.
	plain := Token{Value: "plain-token-0123456789"}
	before := fingerprints.Load()
	plain.Fingerprint(fingerprint)
	plain.Fingerprint(fingerprint)
	if got := fingerprints.Load() - before; got != 2 {
		t.Errorf("uncached token: fingerprint computed %d times for two calls; want 2", got)
	}
	if first, second := plain.ScrubSet(), plain.ScrubSet(); first == second {
		t.Error("uncached token: two calls returned one scrub set; want each built anew")
	}
}
