package injector

import (
	"context"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// Token cache defaults.
const (
	// DefaultCacheTTL bounds how long a token is served from memory: a
	// revoked or replaced grant stops being injected by every sidecar
	// within this time (docs/security.md, invariant 10).
	DefaultCacheTTL = 10 * time.Second
	// DefaultCacheSize bounds memory; a sidecar serves one agent acting for
	// a handful of users.
	DefaultCacheSize = 10000
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
}

// DefaultCacheConfig returns the defaults.
func DefaultCacheConfig() CacheConfig {
	return CacheConfig{TTL: DefaultCacheTTL, MaxEntries: DefaultCacheSize}
}

type cacheKey struct{ provider, user string }

type cacheEntry struct {
	tok   Token
	until time.Time
}

// CachedSource keeps tokens from another Source in memory for a bounded
// time, so a cache hit costs no store read, and collapses concurrent
// misses for one (provider, user) into a single lookup. Errors are never
// cached. It is safe for concurrent use.
type CachedSource struct {
	next  Source
	ttl   time.Duration
	now   func() time.Time
	cache *lru.Cache[cacheKey, cacheEntry]
	group singleflight.Group
	// observe, when set, is told whether each lookup hit.
	observe func(hit bool)
}

// Observe makes c report every lookup's result to f (for metrics). It must
// be called before c is used.
func (c *CachedSource) Observe(f func(hit bool)) *CachedSource {
	c.observe = f
	return c
}

// NewCachedSource wraps next. With a zero TTL it returns a cache that
// always asks next.
func NewCachedSource(next Source, c CacheConfig, now func() time.Time) *CachedSource {
	if now == nil {
		now = time.Now
	}
	size := c.MaxEntries
	if size < 1 {
		size = DefaultCacheSize
	}
	cache, _ := lru.New[cacheKey, cacheEntry](size) // size is positive
	return &CachedSource{next: next, ttl: c.TTL, now: now, cache: cache}
}

// Token returns the cached token when it is younger than the TTL and not
// about to expire, else asks the wrapped source.
func (c *CachedSource) Token(ctx context.Context, provider, user string) (Token, error) {
	if c.ttl <= 0 {
		return c.next.Token(ctx, provider, user)
	}
	key := cacheKey{provider, user}
	now := c.now()
	if e, ok := c.cache.Get(key); ok && now.Before(e.until) {
		if c.observe != nil {
			c.observe(true)
		}
		return e.tok, nil
	}
	if c.observe != nil {
		c.observe(false)
	}
	v, err, _ := c.group.Do(provider+"\x00"+user, func() (any, error) {
		tok, err := c.next.Token(ctx, provider, user)
		if err != nil {
			return Token{}, err
		}
		until := c.now().Add(c.ttl)
		if !tok.Expiry.IsZero() {
			if limit := tok.Expiry.Add(-expirySkew); limit.Before(until) {
				until = limit
			}
		}
		c.cache.Add(key, cacheEntry{tok: tok, until: until})
		return tok, nil
	})
	if err != nil {
		return Token{}, err
	}
	return v.(Token), nil
}

// Forget drops a cached token, for this process's own revocations.
func (c *CachedSource) Forget(provider, user string) {
	c.cache.Remove(cacheKey{provider, user})
}
