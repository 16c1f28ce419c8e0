package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Activity records live beside the grants:
//
//	<mount>/data/<prefix>/activity/<provider>/<user>
//
// holding last_used_at, last_used_by, revoked_at and revoked_by. They are
// never deleted: a revoked grant's record says when it was revoked.

var _ store.ActivityStore = (*Store)(nil)

// Activity write limits. Each sidecar writes a grant's record at most once
// a minute, so a lost race is rare; but every loss means another writer
// landed, so as many attempts as writers that could plausibly race settle
// it, and a short random pause keeps the racers from colliding again.
const (
	maxActivityAttempts = 32
	maxActivityBackoff  = 20 * time.Millisecond
)

// activityKey is the entry name of an activity record.
func activityKey(provider, user string) string { return "activity/" + provider + "/" + user }

// RecordActivity implements store.ActivityStore: it reads the record, merges
// a into it and writes it back by CAS on the version read, again after a
// lost race, so that no writer's newer fact is lost.
func (s *Store) RecordActivity(ctx context.Context, provider, user string, a store.Activity) error {
	if err := validateNames(provider, user); err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	op := "record activity " + provider + "/" + user
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	a = a.Normalize()
	path := s.kvPath("data", activityKey(provider, user))
	for attempt := range maxActivityAttempts {
		if attempt > 0 {
			select {
			case <-time.After(rand.N(maxActivityBackoff)):
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", op, ctx.Err())
			}
		}
		cur, err := c.readKV(ctx, path)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		var rec store.Activity
		if cur.data != nil {
			if err := json.Unmarshal(cur.data, &rec); err != nil {
				// A corrupt record is replaced: it is for display only.
				rec = store.Activity{}
			}
		}
		_, err = c.writeKV(ctx, path, cur.version, rec.Merge(a))
		if errors.Is(err, errCASMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	return fmt.Errorf("%s: %w: changed concurrently %d times", op, store.ErrConflict, maxActivityAttempts)
}

// Activity implements store.ActivityStore.
func (s *Store) Activity(ctx context.Context, provider, user string) (store.Activity, error) {
	if err := validateNames(provider, user); err != nil {
		return store.Activity{}, fmt.Errorf("get activity: %w", err)
	}
	op := "get activity " + provider + "/" + user
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return store.Activity{}, fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	e, err := c.readKV(ctx, s.kvPath("data", activityKey(provider, user)))
	if err != nil {
		return store.Activity{}, fmt.Errorf("%s: %w", op, err)
	}
	if e.data == nil {
		return store.Activity{}, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	var rec store.Activity
	if err := json.Unmarshal(e.data, &rec); err != nil {
		return store.Activity{}, fmt.Errorf("%s: %w: corrupt record", op, store.ErrUnavailable)
	}
	return rec, nil
}
