package proxy

import (
	"context"
	"crypto/sha256"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Verified assertions are cached so that an agent reusing one assertion for
// many calls pays for one signature check, not one per request (an Ed25519
// or ECDSA verification costs more than the rest of the pipeline).
const (
	// subjectCacheSize bounds memory: a sidecar in front of a shared
	// agent service holds a live assertion or two for each of thousands
	// of users, as many as the token cache holds tokens
	// (injector.DefaultCacheSize). An entry is a hash and a verified
	// Subject, well under 1 KB.
	subjectCacheSize = 10000
	// subjectCacheTTL bounds how long a cached verification is trusted,
	// whatever the assertion's own expiry, so rotated-out signing keys stop
	// being honoured quickly.
	subjectCacheTTL = time.Minute
	// maxCachedAssertion is identity's largest allowed max_size.
	maxCachedAssertion = 64 << 10
)

type subjectEntry struct {
	sub   *identity.Subject
	until time.Time
}

// subjectCache memoises successful verifications, keyed by the SHA-256 of
// the raw assertion (so the cache never holds the assertion itself). Cached
// subjects are shared between requests and must be treated as read-only.
// Failures are not cached: each is cheap to reproduce and caching them
// would let a flood of garbage evict good entries.
type subjectCache struct {
	v     Verifier
	now   func() time.Time
	cache *lru.Cache[[32]byte, subjectEntry]
}

func newSubjectCache(v Verifier, now func() time.Time) *subjectCache {
	c, _ := lru.New[[32]byte, subjectEntry](subjectCacheSize) // size is positive
	return &subjectCache{v: v, now: now, cache: c}
}

func (c *subjectCache) verify(ctx context.Context, raw string) (*identity.Subject, error) {
	if len(raw) > maxCachedAssertion {
		// Far beyond any valid size: let the verifier refuse it without
		// hashing it first.
		return c.v.Verify(ctx, raw)
	}
	key := assertionKey(raw)
	now := c.now()
	if e, ok := c.cache.Get(key); ok && now.Before(e.until) {
		return e.sub, nil
	}
	sub, err := c.v.Verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	until := now.Add(subjectCacheTTL)
	if sub.Expiry.Before(until) {
		until = sub.Expiry
	}
	c.cache.Add(key, subjectEntry{sub: sub, until: until})
	return sub, nil
}

// stackAssertion bounds the assertions assertionKey hashes from a copy on
// the stack: an orchestrator's assertion is a few hundred bytes.
const stackAssertion = 1 << 10

// assertionKey is the cache key of raw: its SHA-256, so that the cache
// holds no assertion. A string's bytes are hashed from a copy; below
// stackAssertion that copy is on the stack rather than the heap.
func assertionKey(raw string) [32]byte {
	if len(raw) > stackAssertion {
		return sha256.Sum256([]byte(raw))
	}
	var buf [stackAssertion]byte
	return sha256.Sum256(append(buf[:0], raw...))
}
