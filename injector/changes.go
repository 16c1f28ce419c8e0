package injector

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Following a change feed (store.ChangeFeed).
//
// Without a feed, a cached token is served for at most the TTL after the
// lookup that read it: that is what bounds revocation (docs/security.md,
// invariant 10), and it costs one store read per user and TTL. With a feed
// read every feedInterval, a token stays cached until it nears expiry (or
// feedMaxAge), and the TTL bounds something else: how long ago the last
// good read of the feed may have started. A revocation is appended to the
// feed before the grant is deleted, so a read that starts after it sees it
// and drops the token; if the feed cannot be read, tokens fall back to
// being served for the TTL after their own lookup.
//
// Two races are closed by the rule in trusted: a lookup that was reading
// the grant while a read of the feed dropped it, and a lookup that read the
// grant between its change being recorded and its deletion. Tokens read
// within the TTL of their grant's change (or of a read that could not tell
// which grants changed: a new feed, one that fell behind) are served for
// the TTL after their lookup, never longer. The Vault store also
// records a deletion's change a second time once the grant is gone.
const (
	// feedMaxAge bounds how long a token is served on the feed's word: it
	// is how soon writes that are not changes (a refresh by another
	// replica, a grant marked for reconnection) reach a sidecar whose
	// token has not expired.
	feedMaxAge = 15 * time.Minute
	// minFeedInterval bounds how often a sidecar reads the feed, whatever
	// the TTL.
	minFeedInterval = 500 * time.Millisecond
	// feedReadTimeout bounds one read of the feed; the store's own
	// timeout is usually shorter.
	feedReadTimeout = 5 * time.Second
	// changedKeep is how long a change is remembered: past it no lookup
	// that started before the change can still be running, nor any read
	// within the TTL after it be served on the TTL alone.
	changedKeep = lookupTimeout + time.Minute
)

// Feed is a change feed as CachedSource reads it.
type Feed interface {
	Changes(ctx context.Context) (*store.Changes, error)
}

// feedState is what a CachedSource knows of its feed.
type feedState struct {
	following bool
	// id and seq are the feed and the change the last good read saw.
	id  string
	seq uint64
	// synced is when the last good read started; flushed is when a read
	// could not tell which grants changed.
	synced, flushed time.Time
	// changed maps the grants the feed named lately to when the change
	// was applied.
	changed map[cacheKey]time.Time
}

// fresh reports whether e, cached under key, may be served at now. c.mu
// is held.
func (c *CachedSource) fresh(key cacheKey, e cacheEntry, now time.Time) bool {
	if !now.Before(e.until) {
		return false
	}
	if now.Before(e.read.Add(c.ttl)) {
		return true
	}
	return c.trusted(key, e.read) && now.Before(c.feed.synced.Add(c.ttl))
}

// trusted reports whether a token read at read may be served on the feed's
// word, past the TTL after its lookup. c.mu is held.
func (c *CachedSource) trusted(key cacheKey, read time.Time) bool {
	f := &c.feed
	if !f.following || f.synced.IsZero() || read.Before(f.flushed.Add(c.ttl)) {
		return false
	}
	at, ok := f.changed[key]
	return !ok || !read.Before(at.Add(c.ttl))
}

// FeedOptions tune FollowChanges.
type FeedOptions struct {
	// Interval is how often the feed is read; zero means a quarter of the
	// TTL (at least minFeedInterval).
	Interval time.Duration
	// OnRead, when set, is told the result of every read of the feed
	// (nil, or an error that wraps store.ErrNotFound when there is no
	// feed).
	OnRead func(error)
}

// FollowChanges reads feed once, then every interval until stop is called,
// and serves cached tokens as the package comment above says. It must be
// called before c is used, at most once, and not on a cache with a zero
// TTL.
func (c *CachedSource) FollowChanges(ctx context.Context, feed Feed, o FeedOptions) (stop func()) {
	every := o.Interval
	if every <= 0 {
		every = max(c.ttl/4, minFeedInterval)
	}
	c.mu.Lock()
	c.feed = feedState{following: true, changed: map[cacheKey]time.Time{}}
	c.mu.Unlock()
	read := func(ctx context.Context) {
		rctx, cancel := context.WithTimeout(ctx, feedReadTimeout)
		defer cancel()
		err := c.readFeed(rctx, feed)
		if o.OnRead != nil && ctx.Err() == nil {
			o.OnRead(err)
		}
	}
	read(ctx)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read(ctx)
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// readFeed reads the feed once and applies it: the tokens of grants that
// changed since the last good read are dropped, and the others are
// confirmed as of the read's start.
func (c *CachedSource) readFeed(ctx context.Context, feed Feed) error {
	start := c.now()
	ch, err := feed.Changes(ctx)
	if err != nil {
		return err
	}
	if ch == nil {
		return errors.New("read change feed: no answer")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := &c.feed
	now := c.now()
	switch {
	case f.id == "" && c.lookups.Load() == 0:
		// The first read, before any lookup: nothing is cached that
		// the feed could clear. The grants it names changed lately,
		// and their writers may not have deleted them yet: what is
		// read of them within the TTL is served for the TTL only.
		for _, x := range ch.List {
			f.changed[cacheKey{x.Provider, x.User}] = now
		}
	case f.id == "" || ch.ID != f.id || !ch.Covers(f.seq):
		// The first read after lookups (the feed was missing or could
		// not be read), a feed created anew, or one that dropped
		// changes this cache has not seen: no cached token can be
		// cleared, so each is served for the TTL after its lookup.
		f.flushed = now
	default:
		for _, x := range ch.List {
			if x.Seq <= f.seq {
				continue
			}
			k := cacheKey{x.Provider, x.User}
			c.lru.Remove(k)
			f.changed[k] = now
		}
	}
	f.id, f.seq, f.synced = ch.ID, ch.Seq, start
	for k, at := range f.changed {
		if now.Sub(at) > changedKeep {
			delete(f.changed, k)
		}
	}
	return nil
}
