package injector

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"
)

// Token cache defaults.
const (
	// DefaultCacheTTL bounds how long a token is served from memory: a
	// revoked or replaced grant stops being injected by every sidecar
	// within this time (docs/security.md, invariant 10).
	DefaultCacheTTL = 10 * time.Second
	// DefaultCacheSize bounds the number of cached tokens: one per user
	// and provider the sidecar acted for within the TTL. A sidecar in
	// front of a shared agent service serves thousands of people.
	DefaultCacheSize = 10000
	// DefaultCacheBytes bounds the cache's memory: 10,000 entries of
	// tokens up to about 1.3 KB each (OAuth access tokens are usually
	// under 100 bytes; JWT access tokens of some providers reach 2 KB).
	DefaultCacheBytes = 16 << 20
	// entryOverhead is what one cached token costs beyond the bytes of
	// its strings: the list element, the map slot, the key and entry
	// structs, the string and slice headers and the token's empty
	// derived memo, as measured with BenchmarkCacheMemory (overhead-B,
	// about 410 bytes an entry on amd64), rounded up.
	entryOverhead = 448
	// derivedOverhead is what a cached token's first use adds beyond a
	// copy of its secrets' bytes (its scrub set copies them): the set
	// and the fingerprint, as measured with BenchmarkCacheMemory
	// (derived-B, about 140 bytes for a token with one other secret),
	// rounded up.
	derivedOverhead = 192
	// lookupTimeout bounds a lookup shared by concurrent callers. It runs
	// on a context detached from them, so that the caller that happened to
	// start it giving up does not fail the others; the store's and the
	// refresh's own time limits end it well before this.
	lookupTimeout = time.Minute
)

// Source hands out a user's access token for a provider.
type Source interface {
	Token(ctx context.Context, provider, user string) (Token, error)
}

// CacheConfig configures the token cache.
type CacheConfig struct {
	// TTL is the longest a token is used without looking at the store
	// again. Zero disables the cache.
	TTL time.Duration `yaml:"ttl"`
	// MaxEntries bounds the number of cached tokens.
	MaxEntries int `yaml:"max_entries"`
	// MaxBytes bounds the memory the cached tokens take, estimated from
	// the sizes of their tokens and secrets plus a fixed overhead per
	// entry. The least recently used tokens are dropped first.
	MaxBytes int64 `yaml:"max_bytes"`
}

// DefaultCacheConfig returns the defaults.
func DefaultCacheConfig() CacheConfig {
	return CacheConfig{TTL: DefaultCacheTTL, MaxEntries: DefaultCacheSize, MaxBytes: DefaultCacheBytes}
}

type cacheKey struct{ provider, user string }

type cacheEntry struct {
	tok Token
	// read is when the lookup that produced tok started.
	read time.Time
	// until is when tok stops being served whatever the change feed says:
	// its expiry less the skew, and at most the TTL (no feed) or
	// feedMaxAge (a feed) after read.
	until time.Time
	size  int64
}

// entrySize estimates the memory one cached token takes once it has been
// used: its entry and strings, and what is derived from it (Token.derived),
// which copies the secrets once more.
func entrySize(k cacheKey, tok Token) int64 {
	secrets := len(tok.Value)
	for _, s := range tok.Secrets {
		secrets += len(s)
	}
	n := entryOverhead + derivedOverhead + len(k.provider) + len(k.user) + len(tok.Source) + 16*len(tok.Secrets) + 2*secrets
	return int64(n)
}

// CachedSource keeps tokens from another Source in memory for a bounded
// time (the TTL, or until they near expiry while a change feed vouches for
// them: FollowChanges), so a cache hit costs no store read, and collapses concurrent
// misses for one (provider, user) into a single lookup that runs detached
// from the callers. Errors are never cached. The cache holds at most
// MaxEntries tokens and MaxBytes of them, dropping the least recently used
// first. It is safe for concurrent use.
type CachedSource struct {
	next     Source
	ttl      time.Duration
	now      func() time.Time
	maxBytes int64

	mu    sync.Mutex
	lru   *simplelru.LRU[cacheKey, cacheEntry]
	bytes int64

	group   singleflight.Group
	lookups atomic.Uint64
	// observe, when set, is told whether each lookup hit.
	observe func(hit bool)

	// feed is what FollowChanges learnt from the change feed; under mu.
	feed feedState
}

// Observe makes c report every lookup's result to f (for metrics). It must
// be called before c is used.
func (c *CachedSource) Observe(f func(hit bool)) *CachedSource {
	c.observe = f
	return c
}

// NewCachedSource wraps next. With a zero TTL it returns a cache that
// always asks next (concurrent lookups for one grant still share one).
func NewCachedSource(next Source, c CacheConfig, now func() time.Time) *CachedSource {
	if now == nil {
		now = time.Now
	}
	size := c.MaxEntries
	if size < 1 {
		size = DefaultCacheSize
	}
	maxBytes := c.MaxBytes
	if maxBytes < 1 {
		maxBytes = DefaultCacheBytes
	}
	cs := &CachedSource{next: next, ttl: c.TTL, now: now, maxBytes: maxBytes}
	cs.lru, _ = simplelru.NewLRU[cacheKey, cacheEntry](size, func(_ cacheKey, e cacheEntry) { cs.bytes -= e.size }) // size is positive
	return cs
}

// Token returns the cached token when it is not about to expire and is
// younger than the TTL (or, following a change feed, vouched for by it:
// see FollowChanges), else asks the wrapped source: concurrent callers for
// one (provider, user) share one lookup, and each stops waiting for it
// when its own ctx ends.
func (c *CachedSource) Token(ctx context.Context, provider, user string) (Token, error) {
	key := cacheKey{provider, user}
	if c.ttl > 0 {
		now := c.now()
		c.mu.Lock()
		e, ok := c.lru.Get(key)
		ok = ok && c.fresh(key, e, now)
		c.mu.Unlock()
		if ok {
			if c.observe != nil {
				c.observe(true)
			}
			return e.tok, nil
		}
		if c.observe != nil {
			c.observe(false)
		}
	}
	ch := c.group.DoChan(provider+"\x00"+user, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		c.lookups.Add(1)
		read := c.now()
		tok, err := c.next.Token(lctx, provider, user)
		if err != nil {
			return Token{}, err
		}
		if c.ttl > 0 {
			c.add(key, tok, read)
		}
		return tok, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// add caches tok, read by a lookup that started at read, under key, then
// drops the least recently used tokens while the cache holds more than its
// bytes allow.
func (c *CachedSource) add(key cacheKey, tok Token, read time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	until := read.Add(c.ttl)
	if c.feed.following {
		until = read.Add(feedMaxAge)
	}
	if !tok.Expiry.IsZero() {
		if limit := tok.Expiry.Add(-expirySkew); limit.Before(until) {
			until = limit
		}
	}
	tok.derived = new(derived)
	e := cacheEntry{tok: tok, read: read, until: until, size: entrySize(key, tok)}
	c.lru.Remove(key) // its bytes leave with it (the eviction callback)
	if e.size > c.maxBytes {
		// Served, never cached; nor is the token it replaces kept.
		return
	}
	c.lru.Add(key, e)
	c.bytes += e.size
	for c.bytes > c.maxBytes {
		c.lru.RemoveOldest()
	}
}

// CacheStats are a token cache's counters.
type CacheStats struct {
	// Entries and Bytes are what the cache holds now (Bytes estimated).
	Entries int
	Bytes   int64
	// Lookups counts the lookups that went to the wrapped source: one per
	// miss, less the misses that joined a lookup already in flight.
	Lookups uint64
}

// Stats returns the cache's counters.
func (c *CachedSource) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Entries: c.lru.Len(), Bytes: c.bytes, Lookups: c.lookups.Load()}
}
