package injector

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// fakeFeed is a change feed for the cache's unit tests.
type fakeFeed struct {
	mu  sync.Mutex
	ch  store.Changes
	err error
}

func (f *fakeFeed) Changes(context.Context) (*store.Changes, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	c := f.ch
	c.List = append([]store.Change(nil), f.ch.List...)
	return &c, nil
}

func (f *fakeFeed) record(provider, user string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ch.Seq++
	f.ch.List = append(f.ch.List, store.Change{Seq: f.ch.Seq, Provider: provider, User: user})
}

func (f *fakeFeed) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// feedRig is a cache following a fake feed on a fake clock. The feed is
// read when the test says (read), never by the ticker.
type feedRig struct {
	t    *testing.T
	now  time.Time
	src  *countingSource
	feed *fakeFeed
	c    *CachedSource
}

const rigTTL = 10 * time.Second

// newFeedRig starts a rig whose source answers tok (a default one when
// empty); setup, when given, edits the feed before the cache first reads it.
func newFeedRig(t *testing.T, tok Token, setup ...func(*fakeFeed)) *feedRig {
	r := &feedRig{t: t, now: time.Unix(1_000_000, 0), feed: &fakeFeed{ch: store.Changes{ID: "feed-1"}}}
	for _, f := range setup {
		f(r.feed)
	}
	if tok.Value == "" {
		tok = Token{Value: "t", Expiry: r.now.Add(24 * time.Hour)}
	}
	r.src = &countingSource{tok: tok}
	r.c = NewCachedSource(r.src, CacheConfig{TTL: rigTTL, MaxEntries: 10}, func() time.Time { return r.now })
	stop := r.c.FollowChanges(context.Background(), r.feed, FeedOptions{Interval: time.Hour})
	t.Cleanup(stop)
	return r
}

func (r *feedRig) read() error { return r.c.readFeed(context.Background(), r.feed) }

// advance moves the clock by d in steps of step, reading the feed after
// each.
func (r *feedRig) advance(d, step time.Duration) {
	for end := r.now.Add(d); r.now.Before(end); {
		r.now = r.now.Add(min(step, end.Sub(r.now)))
		_ = r.read()
	}
}

// lookup asks for alice's token and reports whether it took a store read.
func (r *feedRig) lookup() (read bool) {
	r.t.Helper()
	return r.lookupFor("alice")
}

// lookupFor asks for user's token and reports whether it took a store read.
func (r *feedRig) lookupFor(user string) (read bool) {
	r.t.Helper()
	before := r.src.calls.Load()
	if _, err := r.c.Token(context.Background(), "p", user); err != nil {
		r.t.Fatal(err)
	}
	return r.src.calls.Load() != before
}

func (r *feedRig) want(read bool, when string) {
	r.t.Helper()
	if got := r.lookup(); got != read {
		r.t.Fatalf("%s: store read = %v; want %v", when, got, read)
	}
}

func TestFeedKeepsTokensPastTheTTL(t *testing.T) {
	r := newFeedRig(t, Token{})
	r.want(true, "first lookup")
	// Kept for as long as the feed is read and does not name alice.
	for i := range 30 {
		r.advance(2*time.Second, 2*time.Second)
		r.want(false, fmt.Sprintf("%ds later", 2*(i+1)))
	}
	if got := r.c.Stats().Lookups; got != 1 {
		t.Errorf("store reads = %d; want 1", got)
	}
}

// TestFeedFirstReadHoldsNamedGrants: grants the feed names when the cache
// first reads it changed lately; their writers may not have deleted them
// yet, so what is read of them within the TTL is served for the TTL only.
func TestFeedFirstReadHoldsNamedGrants(t *testing.T) {
	r := newFeedRig(t, Token{}, func(f *fakeFeed) { f.record("p", "alice") })
	r.lookupFor("alice")
	r.lookupFor("bob")
	r.advance(rigTTL, 2*time.Second)
	if !r.lookupFor("alice") {
		t.Error("alice's token, read within a TTL of the feed naming her, was served past the TTL")
	}
	if r.lookupFor("bob") {
		t.Error("bob's token was read again a TTL later; want it kept (the feed never named him)")
	}
	r.advance(30*time.Second, 2*time.Second)
	if r.lookupFor("alice") {
		t.Error("alice's token read a TTL after the change was not kept")
	}
}

// TestFeedMissingAtStart: tokens looked up before the first good read of
// the feed may predate changes the feed no longer lists, so they are
// served for the TTL only.
func TestFeedMissingAtStart(t *testing.T) {
	r := newFeedRig(t, Token{}, func(f *fakeFeed) { f.fail(fmt.Errorf("read change feed: %w", store.ErrNotFound)) })
	r.want(true, "first lookup")
	r.advance(2*time.Second, time.Second)
	r.feed.fail(nil)
	r.advance(time.Second, time.Second)
	r.advance(rigTTL-3*time.Second-time.Millisecond, time.Second)
	r.want(false, "within the TTL")
	r.advance(time.Millisecond, time.Millisecond)
	r.want(true, "a TTL after the lookup, though the feed is read now")
	r.advance(rigTTL, 2*time.Second)
	r.want(true, "a TTL later: read within a TTL of the first good read of the feed")
	r.advance(30*time.Second, 2*time.Second)
	r.want(false, "30s later")
}

func TestFeedChangeDropsToken(t *testing.T) {
	r := newFeedRig(t, Token{})
	r.advance(rigTTL+time.Second, time.Second)
	r.want(true, "first lookup")
	r.advance(30*time.Second, 2*time.Second)
	r.want(false, "30s later")
	r.feed.record("p", "bob") // another user's change changes nothing
	r.advance(time.Second, time.Second)
	r.want(false, "after bob's change")

	r.feed.record("p", "alice")
	r.now = r.now.Add(time.Second)
	r.want(false, "before the feed is read again")
	r.advance(time.Second, time.Second)
	r.want(true, "after the feed named alice")
	// What was read just after the change is served for the TTL only: the
	// revoking writer may not have deleted the grant yet.
	r.advance(rigTTL, time.Second)
	r.want(true, "a TTL after the change")
	r.advance(30*time.Second, 2*time.Second)
	r.want(false, "30s later")
}

func TestFeedUnreadableFallsBackToTTL(t *testing.T) {
	r := newFeedRig(t, Token{})
	r.advance(rigTTL+time.Second, time.Second)
	r.want(true, "first lookup")
	r.advance(30*time.Second, 2*time.Second)
	r.want(false, "30s later")
	// The last good read of the feed started at most a TTL ago: the token
	// is served until then, never after.
	r.feed.fail(fmt.Errorf("read change feed: %w", store.ErrUnavailable))
	r.advance(rigTTL-time.Second, time.Second)
	r.want(false, "within a TTL of the last good read")
	r.advance(time.Second, time.Second)
	r.want(true, "a TTL after the last good read")
	r.advance(rigTTL-time.Second, time.Second)
	r.want(false, "within a TTL of the store read")
	r.advance(time.Second, time.Second)
	r.want(true, "a TTL after the store read")
	// The feed is back: tokens read since the last good read are still
	// trusted (no change named them).
	r.feed.fail(nil)
	r.advance(time.Second, time.Second)
	r.advance(30*time.Second, 2*time.Second)
	r.want(false, "after the feed came back")
}

func TestFeedThatCannotTellFlushes(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*store.Changes)
	}{
		{"changes dropped", func(c *store.Changes) {
			c.Seq += 5
			c.List = []store.Change{{Seq: c.Seq - 1, Provider: "p", User: "x"}, {Seq: c.Seq, Provider: "p", User: "y"}}
		}},
		{"feed created anew", func(c *store.Changes) { *c = store.Changes{ID: "feed-2"} }},
		{"feed went backwards", func(c *store.Changes) { c.Seq--; c.List = c.List[:len(c.List)-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newFeedRig(t, Token{})
			r.feed.record("p", "z")
			r.advance(rigTTL+time.Second, time.Second)
			r.want(true, "first lookup")
			r.advance(30*time.Second, 2*time.Second)
			r.want(false, "30s later")
			r.feed.mu.Lock()
			tc.edit(&r.feed.ch)
			r.feed.mu.Unlock()
			r.advance(time.Second, time.Second)
			// Nothing named alice, but nothing can say she did not
			// change: her token goes when a TTL has passed since its
			// lookup, and so does one read within a TTL of the flush.
			r.want(true, "after a feed that cannot tell")
			r.advance(rigTTL-time.Second, time.Second)
			r.want(false, "within a TTL of the store read")
			r.advance(time.Second, time.Second)
			r.want(true, "a TTL after the store read")
			r.advance(30*time.Second, 2*time.Second)
			r.want(false, "30s later")
		})
	}
}

func TestFeedChangeDuringLookup(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	src := &gatedSource{release: make(chan struct{}), ctxErr: make(chan error, 1)}
	feed := &fakeFeed{ch: store.Changes{ID: "feed-1"}}
	c := NewCachedSource(src, CacheConfig{TTL: rigTTL, MaxEntries: 10}, clock)
	t.Cleanup(c.FollowChanges(context.Background(), feed, FeedOptions{Interval: time.Hour}))
	set(rigTTL + time.Second)
	if err := c.readFeed(context.Background(), feed); err != nil {
		t.Fatal(err)
	}
	// The lookup reads alice's grant while the feed names it: a revoking
	// writer records the change, then deletes the grant.
	got := make(chan Token, 1)
	go func() { tok, _ := c.Token(context.Background(), "p", "u"); got <- tok }()
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	feed.record("p", "u")
	set(time.Second)
	if err := c.readFeed(context.Background(), feed); err != nil {
		t.Fatal(err)
	}
	close(src.release)
	<-got
	<-src.ctxErr
	// What it read is served for the TTL after the lookup, never longer.
	for range rigTTL / time.Second {
		set(time.Second)
		if err := c.readFeed(context.Background(), feed); err != nil {
			t.Fatal(err)
		}
	}
	src.release = make(chan struct{})
	close(src.release)
	if _, err := c.Token(context.Background(), "p", "u"); err != nil {
		t.Fatal(err)
	}
	if n := src.calls.Load(); n != 2 {
		t.Errorf("store reads = %d; want 2: a token read while the feed named its grant was served past the TTL", n)
	}
}

func TestFeedTokenBounds(t *testing.T) {
	t.Run("expiry", func(t *testing.T) {
		r := newFeedRig(t, Token{Value: "t", Expiry: time.Unix(1_000_000, 0).Add(5 * time.Minute)})
		r.advance(rigTTL+time.Second, time.Second)
		r.want(true, "first lookup")
		r.advance(5*time.Minute-expirySkew-rigTTL-2*time.Second, 2*time.Second)
		r.want(false, "before the skew")
		r.advance(2*time.Second, time.Second)
		r.want(true, "within the skew of expiry")
	})
	t.Run("max age", func(t *testing.T) {
		r := newFeedRig(t, Token{Value: "t"}) // no expiry
		r.advance(rigTTL+time.Second, time.Second)
		r.want(true, "first lookup")
		r.advance(feedMaxAge-time.Second, 5*time.Second)
		r.want(false, "before the maximum age")
		r.advance(time.Second, time.Second)
		r.want(true, "at the maximum age")
	})
}

func TestNoFeedMeansTTL(t *testing.T) {
	r := newFeedRig(t, Token{})
	r.feed.fail(fmt.Errorf("read change feed: %w", store.ErrNotFound))
	r.advance(rigTTL+time.Second, time.Second)
	for i := range 5 {
		r.want(true, fmt.Sprintf("lookup %d", i))
		r.advance(rigTTL-time.Second, time.Second)
		r.want(false, "within the TTL")
		r.advance(time.Second, time.Second)
	}
}

// BenchmarkCachedSourceHitFollowing is BenchmarkCachedSourceHit on a cache
// that follows a change feed, past the TTL of the token's lookup.
func BenchmarkCachedSourceHitFollowing(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	feed := &fakeFeed{ch: store.Changes{ID: "feed-1"}}
	c := NewCachedSource(&countingSource{tok: Token{Value: "t", Expiry: now.Add(time.Hour)}}, CacheConfig{TTL: rigTTL}, func() time.Time { return now })
	b.Cleanup(c.FollowChanges(context.Background(), feed, FeedOptions{Interval: time.Hour}))
	now = now.Add(rigTTL + time.Second)
	c.readFeed(context.Background(), feed)
	c.Token(context.Background(), "p", "u")
	now = now.Add(rigTTL + time.Second)
	c.readFeed(context.Background(), feed)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Token(context.Background(), "p", "u"); err != nil {
			b.Fatal(err)
		}
	}
	if c.Stats().Lookups != 1 {
		b.Fatalf("lookups = %d; want 1", c.Stats().Lookups)
	}
}
