package store

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketActivity holds the Activity records, keyed like grants.
var bucketActivity = []byte("activity")

var _ ActivityStore = (*Embedded)(nil)

// activityRecord is the stored form of an Activity.
type activityRecord struct {
	Format int `json:"format"`
	Activity
}

func (r *activityRecord) format() int { return r.Format }

// RecordActivity implements ActivityStore: the merge runs inside one write
// transaction, so concurrent writers of one file never lose a newer fact.
func (e *Embedded) RecordActivity(ctx context.Context, provider, user string, a Activity) error {
	if err := validateNames(provider, user); err != nil {
		return fmt.Errorf("record activity: %w", err)
	}
	a = a.Normalize()
	key := entryKey(provider, user)
	err := e.withDB(ctx, true, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketActivity)
		if err != nil {
			return fmt.Errorf("%w: bucket: %w", ErrUnavailable, err)
		}
		rec := activityRecord{Format: recordFormat}
		if v := b.Get(key); v != nil {
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
		}
		rec.Activity = rec.Activity.Merge(a)
		v, err := json.Marshal(&rec)
		if err != nil {
			return fmt.Errorf("encode activity: %w", err)
		}
		if err := b.Put(key, v); err != nil {
			return fmt.Errorf("%w: write: %w", ErrUnavailable, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record activity %s/%s: %w", provider, user, err)
	}
	return nil
}

// Activity implements ActivityStore.
func (e *Embedded) Activity(ctx context.Context, provider, user string) (Activity, error) {
	if err := validateNames(provider, user); err != nil {
		return Activity{}, fmt.Errorf("get activity: %w", err)
	}
	var rec activityRecord
	err := e.withDB(ctx, false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketActivity)
		if b == nil {
			return ErrNotFound
		}
		v := b.Get(entryKey(provider, user))
		if v == nil {
			return ErrNotFound
		}
		return decodeRecord(v, &rec)
	})
	if err != nil {
		return Activity{}, fmt.Errorf("get activity %s/%s: %w", provider, user, err)
	}
	return rec.Activity, nil
}
