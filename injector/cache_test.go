package injector

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingSource is a fake Source for the cache's unit tests.
type countingSource struct {
	calls atomic.Int64
	tok   Token
	err   error
	delay time.Duration
}

func (s *countingSource) Token(ctx context.Context, provider, user string) (Token, error) {
	s.calls.Add(1)
	time.Sleep(s.delay)
	return s.tok, s.err
}

func TestCachedSourceHitsAndExpires(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	src := &countingSource{tok: Token{Value: "t", Expiry: now.Add(time.Hour)}}
	c := NewCachedSource(src, CacheConfig{TTL: 10 * time.Second, MaxEntries: 10}, clock)
	for range 5 {
		if _, err := c.Token(context.Background(), "p", "u"); err != nil {
			t.Fatal(err)
		}
	}
	if got := src.calls.Load(); got != 1 {
		t.Errorf("calls after 5 lookups = %d; want 1", got)
	}
	now = now.Add(10 * time.Second)
	c.Token(context.Background(), "p", "u")
	if got := src.calls.Load(); got != 2 {
		t.Errorf("calls after the TTL = %d; want 2", got)
	}
	c.Forget("p", "u")
	c.Token(context.Background(), "p", "u")
	if got := src.calls.Load(); got != 3 {
		t.Errorf("calls after Forget = %d; want 3", got)
	}
}

func TestCachedSourceBoundedByTokenExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &countingSource{tok: Token{Value: "t", Expiry: now.Add(expirySkew + time.Second)}}
	c := NewCachedSource(src, CacheConfig{TTL: time.Minute}, func() time.Time { return now })
	c.Token(context.Background(), "p", "u")
	now = now.Add(2 * time.Second)
	c.Token(context.Background(), "p", "u")
	if got := src.calls.Load(); got != 2 {
		t.Errorf("calls = %d; want 2: a token near expiry must not be served from cache", got)
	}
}

func TestCachedSourceErrorsNotCached(t *testing.T) {
	src := &countingSource{err: ErrGrantMissing}
	c := NewCachedSource(src, DefaultCacheConfig(), nil)
	for range 3 {
		if _, err := c.Token(context.Background(), "p", "u"); !errors.Is(err, ErrGrantMissing) {
			t.Fatalf("got %v; want ErrGrantMissing", err)
		}
	}
	if got := src.calls.Load(); got != 3 {
		t.Errorf("calls = %d; want 3", got)
	}
}

func TestCachedSourceCollapsesConcurrentMisses(t *testing.T) {
	src := &countingSource{tok: Token{Value: "t"}, delay: 50 * time.Millisecond}
	c := NewCachedSource(src, DefaultCacheConfig(), nil)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tok, err := c.Token(context.Background(), "p", "u"); err != nil || tok.Value != "t" {
				t.Errorf("got %v, %v", tok, err)
			}
		}()
	}
	wg.Wait()
	if got := src.calls.Load(); got != 1 {
		t.Errorf("calls = %d; want 1", got)
	}
}

func BenchmarkCachedSourceHit(b *testing.B) {
	c := NewCachedSource(&countingSource{tok: Token{Value: "t"}}, DefaultCacheConfig(), nil)
	c.Token(context.Background(), "p", "u")
	b.ReportAllocs()
	for b.Loop() {
		c.Token(context.Background(), "p", "u")
	}
}
