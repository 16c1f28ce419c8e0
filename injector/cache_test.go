package injector

import (
	"context"
	"errors"
	"fmt"
	"runtime"
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

// gatedSource answers once release is closed, counting calls, and reports
// the context each call ran on.
type gatedSource struct {
	calls   atomic.Int64
	release chan struct{}
	ctxErr  chan error
}

func (s *gatedSource) Token(ctx context.Context, provider, user string) (Token, error) {
	s.calls.Add(1)
	<-s.release
	s.ctxErr <- ctx.Err()
	return Token{Value: "tok-" + user}, nil
}

func TestCachedSourceLookupOutlivesItsStarter(t *testing.T) {
	for _, ttl := range []time.Duration{0, 10 * time.Second} {
		t.Run(ttl.String(), func(t *testing.T) {
			src := &gatedSource{release: make(chan struct{}), ctxErr: make(chan error, 1)}
			c := NewCachedSource(src, CacheConfig{TTL: ttl, MaxEntries: 10}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			first := make(chan error, 1)
			go func() { _, err := c.Token(ctx, "p", "u"); first <- err }()
			for src.calls.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			second := make(chan Token, 1)
			go func() { tok, _ := c.Token(context.Background(), "p", "u"); second <- tok }()
			// Let the second caller join the lookup in flight (it blocks
			// until release, so joining has no deadline but this one).
			time.Sleep(50 * time.Millisecond)
			cancel()
			if err := <-first; !errors.Is(err, context.Canceled) {
				t.Fatalf("the caller that gave up got %v; want context.Canceled", err)
			}
			close(src.release)
			if err := <-src.ctxErr; err != nil {
				t.Errorf("the lookup's context ended with its starter: %v; want it detached", err)
			}
			if tok := <-second; tok.Value != "tok-u" {
				t.Errorf("the waiting caller got %q; want tok-u", tok.Value)
			}
			if got := src.calls.Load(); got != 1 {
				t.Errorf("calls = %d; want 1 (the second caller joins the first lookup)", got)
			}
			if got, want := c.Stats().Lookups, uint64(1); got != want {
				t.Errorf("Stats().Lookups = %d; want %d", got, want)
			}
		})
	}
}

// userSource returns a token of n bytes for every user.
type userSource struct{ n int }

func (s userSource) Token(_ context.Context, _, user string) (Token, error) {
	v := make([]byte, s.n)
	for i := range v {
		v[i] = 'x'
	}
	return Token{Value: string(v), Secrets: []string{"refresh-" + user}}, nil
}

func TestCachedSourceBoundedByBytes(t *testing.T) {
	tok, _ := userSource{n: 1000}.Token(context.Background(), "p", "u0000")
	per := entrySize(cacheKey{"p", "u0000"}, tok)
	c := NewCachedSource(userSource{n: 1000}, CacheConfig{TTL: time.Minute, MaxEntries: 1000, MaxBytes: 10 * per}, nil)
	for i := range 25 {
		if _, err := c.Token(context.Background(), "p", fmt.Sprintf("u%04d", i)); err != nil {
			t.Fatal(err)
		}
		if st := c.Stats(); st.Bytes > 10*per || st.Bytes != int64(st.Entries)*per {
			t.Fatalf("after %d users: %+v; want at most %d bytes, %d per entry", i+1, st, 10*per, per)
		}
	}
	if st := c.Stats(); st.Entries != 10 {
		t.Errorf("entries = %d; want 10", st.Entries)
	}
	// The most recent ten stay; the oldest went first.
	before := c.Stats().Lookups
	c.Token(context.Background(), "p", "u0024")
	c.Token(context.Background(), "p", "u0015")
	if got := c.Stats().Lookups - before; got != 0 {
		t.Errorf("lookups for the ten most recent users = %d; want 0", got)
	}
	c.Token(context.Background(), "p", "u0000")
	if got := c.Stats().Lookups - before; got != 1 {
		t.Errorf("lookups for an evicted user = %d; want 1", got)
	}
	// A token larger than the whole bound is served, never cached.
	big := NewCachedSource(userSource{n: 4096}, CacheConfig{TTL: time.Minute, MaxEntries: 10, MaxBytes: 1024}, nil)
	if _, err := big.Token(context.Background(), "p", "u"); err != nil {
		t.Fatal(err)
	}
	if st := big.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("oversized token: %+v; want nothing cached", st)
	}
	// An oversized token replacing an expired one frees the old entry.
	now := time.Unix(1000, 0)
	grow := &countingSource{tok: Token{Value: "small"}}
	gc := NewCachedSource(grow, CacheConfig{TTL: time.Minute, MaxEntries: 10, MaxBytes: 1024}, func() time.Time { return now })
	gc.Token(context.Background(), "p", "u")
	now = now.Add(2 * time.Minute)
	grow.tok = Token{Value: string(make([]byte, 2048))}
	gc.Token(context.Background(), "p", "u")
	if st := gc.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("oversized replacement: %+v; want nothing cached", st)
	}
}

// BenchmarkCacheMemory measures the heap one cached token takes beyond its
// strings, which entryOverhead must cover (bytes/entry minus the strings'
// own bytes, reported as overhead-B), and what a token used by a request
// adds: its scrub set (which copies the secrets) and fingerprint, which
// derivedOverhead must cover (used-B minus bytes/entry and the copied
// secrets, reported as derived-B).
func BenchmarkCacheMemory(b *testing.B) {
	const n = 20000
	src := userSource{n: 40}
	fingerprint := func(token string) string { return fmt.Sprintf("%016x", len(token)) }
	var ms0, ms1, ms2 runtime.MemStats
	for b.Loop() {
		c := NewCachedSource(src, CacheConfig{TTL: time.Hour, MaxEntries: n, MaxBytes: 1 << 40}, nil)
		users := make([]string, n)
		for i := range users {
			users[i] = fmt.Sprintf("user-%06d@example.com", i)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		for _, u := range users {
			c.Token(context.Background(), "github", u)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		per := float64(ms1.HeapAlloc-ms0.HeapAlloc) / n
		tok, _ := src.Token(context.Background(), "github", users[0])
		strs := float64(len(tok.Value) + len(tok.Secrets[0]))
		b.ReportMetric(per, "bytes/entry")
		b.ReportMetric(per-strs, "overhead-B")
		for _, u := range users {
			tok, _ := c.Token(context.Background(), "github", u)
			tok.ScrubSet()
			tok.Fingerprint(fingerprint)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms2)
		used := float64(ms2.HeapAlloc-ms0.HeapAlloc) / n
		b.ReportMetric(used, "used-B")
		b.ReportMetric(used-per-strs, "derived-B")
		runtime.KeepAlive(c)
	}
}
