package vault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// The change feed (store.ChangeFeed) is one KV v2 entry, changes, written
// by compare-and-swap: every sidecar reads it every few seconds, so it
// must stay one small read.
const (
	changesKey = "changes"
	// maxFeedChanges bounds the changes the feed keeps (about 60 bytes
	// each). A reader that falls further behind (it read the feed more
	// than this many changes ago) stops trusting its cached tokens past
	// the TTL until it has read the grants again: a mass revocation costs
	// store reads, never a missed revocation.
	maxFeedChanges = 1000
	// maxFeedAttempts bounds the compare-and-swap retries of one append.
	// Unlike a grant's, the feed is one entry that every revocation
	// writes: a batch of revocations run side by side contends on it, so
	// it gets more attempts than maxCASAttempts, spaced by feedBackoff.
	maxFeedAttempts = 30
	// feedBackoff is the longest random pause between two attempts: it
	// spreads writers that lost a race so that one of them wins the next.
	feedBackoff = 20 * time.Millisecond
)

var _ store.ChangeFeed = (*Store)(nil)

// changesRecord is the stored form of store.Changes.
type changesRecord struct {
	ID      string         `json:"id"`
	Seq     uint64         `json:"seq"`
	Changes []changeRecord `json:"changes"`
}

type changeRecord struct {
	Seq      uint64    `json:"seq"`
	Provider string    `json:"provider"`
	User     string    `json:"user"`
	At       time.Time `json:"at"` // for operators reading the entry; readers go by Seq
}

// decodeChanges parses the feed entry; a feed that is not what
// StartChanges and RecordChange write is an error, never an empty feed.
func decodeChanges(data json.RawMessage) (*changesRecord, error) {
	var rec changesRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.ID == "" {
		return nil, fmt.Errorf("%w: the change feed entry is not one this store wrote", store.ErrUnavailable)
	}
	for i, c := range rec.Changes {
		if c.Seq > rec.Seq || (i > 0 && c.Seq <= rec.Changes[i-1].Seq) || validateNames(c.Provider, c.User) != nil {
			return nil, fmt.Errorf("%w: the change feed entry is not one this store wrote", store.ErrUnavailable)
		}
	}
	return &rec, nil
}

func newFeedID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("feed id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// StartChanges implements store.ChangeFeed.
func (s *Store) StartChanges(ctx context.Context) error {
	const op = "start change feed"
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	path := s.kvPath("data", changesKey)
	cur, err := c.readKV(ctx, path)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if cur.data != nil {
		if _, err := decodeChanges(cur.data); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	id, err := newFeedID()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_, err = c.writeKV(ctx, path, cur.version, changesRecord{ID: id, Changes: []changeRecord{}})
	if errors.Is(err, errCASMismatch) {
		return nil // another writer created it first
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// RecordChange implements store.ChangeFeed. A feed that does not exist is
// created with this change as its first.
func (s *Store) RecordChange(ctx context.Context, provider, user string) error {
	if err := validateNames(provider, user); err != nil {
		return fmt.Errorf("record change: %w", err)
	}
	op := "record change of " + provider + "/" + user
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	return s.recordChange(ctx, c, op, provider, user)
}

// recordChange appends one change by compare-and-swap, retrying lost races.
func (s *Store) recordChange(ctx context.Context, c *conn, op, provider, user string) error {
	path := s.kvPath("data", changesKey)
	for attempt := range maxFeedAttempts {
		if attempt > 0 {
			t := time.NewTimer(mrand.N(feedBackoff) + time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%s: %w: %w", op, store.ErrUnavailable, ctx.Err())
			case <-t.C:
			}
		}
		cur, err := c.readKV(ctx, path)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		var rec *changesRecord
		if cur.data == nil {
			id, err := newFeedID()
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			rec = &changesRecord{ID: id}
		} else if rec, err = decodeChanges(cur.data); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		rec.Seq++
		rec.Changes = append(rec.Changes, changeRecord{Seq: rec.Seq, Provider: provider, User: user, At: time.Now().UTC().Truncate(time.Millisecond)})
		if n := len(rec.Changes) - maxFeedChanges; n > 0 {
			rec.Changes = rec.Changes[n:]
		}
		_, err = c.writeKV(ctx, path, cur.version, rec)
		if errors.Is(err, errCASMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	return fmt.Errorf("%s: %w: the change feed kept changing", op, store.ErrConflict)
}

// Changes implements store.ChangeFeed: one KV read.
func (s *Store) Changes(ctx context.Context) (*store.Changes, error) {
	const op = "read change feed"
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	cur, err := c.readKV(ctx, s.kvPath("data", changesKey))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if cur.data == nil {
		return nil, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	rec, err := decodeChanges(cur.data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	out := &store.Changes{ID: rec.ID, Seq: rec.Seq, List: make([]store.Change, len(rec.Changes))}
	for i, ch := range rec.Changes {
		out.List[i] = store.Change{Seq: ch.Seq, Provider: ch.Provider, User: ch.User}
	}
	return out, nil
}
