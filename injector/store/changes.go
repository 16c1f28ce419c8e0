package store

import (
	"context"
	"fmt"
)

// ChangeFeed is implemented by stores that keep a feed of grant changes:
// one short list, read in one call, naming every grant that was revoked or
// replaced by a new connection. A sidecar that reads it every few seconds
// can keep a cached token past the token cache's TTL without missing a
// revocation (injector.CachedSource), so that a grant's store read is paid
// once per token lifetime rather than once per TTL. The Vault store
// implements it: there a store read is a network round trip, and at
// thousands of users those reads dominate a request's tail latency.
//
// Refreshes are not changes: the access token they replace stays valid at
// the provider until it expires, and a cached token is never kept past
// its expiry.
type ChangeFeed interface {
	// StartChanges creates the feed when it does not exist yet. Readers
	// keep tokens past the TTL only while the feed exists, so a writer
	// that records changes (the connect server) creates it when it
	// starts: a deployment whose writers do not is never trusted to.
	StartChanges(ctx context.Context) error

	// RecordChange appends a change of user's grant at provider to the
	// feed. Delete records its own changes; a writer that replaces a grant
	// with another connection's calls RecordChange after its Put.
	RecordChange(ctx context.Context, provider, user string) error

	// Changes returns the feed, or an error wrapping ErrNotFound when it
	// does not exist.
	Changes(ctx context.Context) (*Changes, error)
}

// Changes is a change feed as read at one moment.
type Changes struct {
	// ID names the feed; it is new whenever the feed is created, so that
	// a reader notices a feed deleted and created again.
	ID string
	// Seq numbers the latest change (0 before the first); every change
	// takes the next number.
	Seq uint64
	// List holds the latest changes, oldest first; older ones have been
	// dropped to keep the feed short.
	List []Change
}

// Change is one entry of a change feed.
type Change struct {
	Seq            uint64
	Provider, User string
}

// Covers reports whether the feed still lists every change after seq: a
// reader that last read the feed at seq can tell exactly which grants
// changed since.
func (c *Changes) Covers(seq uint64) bool {
	if seq > c.Seq {
		return false // the feed went backwards: not the feed read before
	}
	if seq == c.Seq {
		return true
	}
	return len(c.List) > 0 && c.List[0].Seq <= seq+1
}

// RecordChange records a change of user's grant at provider in st's feed
// when st keeps one, and does nothing otherwise.
func RecordChange(ctx context.Context, st Store, provider, user string) error {
	f, ok := st.(ChangeFeed)
	if !ok {
		return nil
	}
	if err := f.RecordChange(ctx, provider, user); err != nil {
		return fmt.Errorf("record change of %s/%s: %w", provider, user, err)
	}
	return nil
}
