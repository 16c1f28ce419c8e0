package proxy

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// countingVerifier accepts every assertion but "bad" as sub, counting calls.
type countingVerifier struct {
	sub   *identity.Subject
	calls atomic.Int64
}

func (v *countingVerifier) Verify(_ context.Context, raw string) (*identity.Subject, error) {
	v.calls.Add(1)
	if raw == "bad" {
		return nil, identity.ErrInvalid
	}
	return v.sub, nil
}

func TestSubjectCache(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	clock := func() time.Time { return now }
	ctx := context.Background()
	v := &countingVerifier{sub: &identity.Subject{User: "alice", Expiry: now.Add(90 * time.Second)}}
	c := newSubjectCache(v, clock)
	verify := func(raw string, wantCalls int64) {
		t.Helper()
		sub, err := c.verify(ctx, raw)
		if raw == "bad" {
			if err == nil {
				t.Fatalf("verify(bad): got %v; want an error", sub)
			}
		} else if err != nil || sub != v.sub {
			t.Fatalf("verify: got %v, %v; want the verifier's subject", sub, err)
		}
		if got := v.calls.Load(); got != wantCalls {
			t.Fatalf("verifier called %d times; want %d", got, wantCalls)
		}
	}
	verify("a.b.c", 1)
	verify("a.b.c", 1) // a hit
	verify("a.b.d", 2) // another assertion
	verify("bad", 3)   // failures are not cached
	verify("bad", 4)
	now = now.Add(subjectCacheTTL - time.Second)
	verify("a.b.c", 4) // still within the TTL
	now = now.Add(2 * time.Second)
	verify("a.b.c", 5) // past the TTL: verified again
	now = now.Add(subjectCacheTTL - time.Second)
	verify("a.b.c", 6) // past the subject's expiry, before the TTL
	long := string(make([]byte, maxCachedAssertion+1))
	verify(long, 7)
	verify(long, 8) // never cached
}

// BenchmarkSubjectCacheHit is the verified-assertion cache on a hit, the
// path of every request that reuses an assertion: the SHA-256 of a typical
// assertion and an LRU lookup. A miss costs a whole verification
// (identity.BenchmarkVerifyAssertion).
func BenchmarkSubjectCacheHit(b *testing.B) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	raw, err := identity.Mint(key, identity.MintOptions{
		Issuer: "https://orchestrator.test", Audience: "agent-7", Subject: "alice", Agent: "agent-7",
		KeyID: "orchestrator", Now: now, TTL: 5 * time.Minute,
		Claims: map[string]any{"providers": []any{"slack"}, "task_id": "t-42"},
	})
	if err != nil {
		b.Fatal(err)
	}
	v := &countingVerifier{sub: &identity.Subject{User: "alice", Expiry: now.Add(5 * time.Minute)}}
	c := newSubjectCache(v, func() time.Time { return now })
	ctx := context.Background()
	if _, err := c.verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(raw)), "assertion-bytes")
	if v.calls.Load() != 1 {
		b.Fatalf("verifier called %d times; want 1", v.calls.Load())
	}
}

// TestAssertionKey: the key is the assertion's SHA-256 on both sides of
// the stack copy's bound.
func TestAssertionKey(t *testing.T) {
	for _, n := range []int{0, 1, stackAssertion - 1, stackAssertion, stackAssertion + 1, 4 * stackAssertion} {
		raw := strings.Repeat("a.b-", n/4+1)[:n]
		if got, want := assertionKey(raw), sha256.Sum256([]byte(raw)); got != want {
			t.Errorf("assertionKey of %d bytes = %x; want %x", n, got, want)
		}
	}
}
