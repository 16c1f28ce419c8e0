package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sync/semaphore"
)

// Bucket and key names inside the database file.
var (
	bucketGrants = []byte("grants")
	bucketLeases = []byte("leases")
	bucketMeta   = []byte("meta")
	bucketRevoke = []byte("revocations")
	keyKeyCheck  = []byte("keycheck")
)

// recordFormat is stored in every record so that a later layout can be told
// apart from this one.
const recordFormat = 1

// maxInProcessReaders bounds how many read operations of one Embedded run at
// once; each holds one file descriptor and one mapping of the file. A write
// takes all of them, which makes the semaphore an in-process reader/writer
// lock: goroutines of one process queue here (FIFO, context-aware) instead of
// polling bbolt's file lock, which retries only every 50 ms.
const maxInProcessReaders = 64

// Embedded is the grant store on a local bbolt file with token fields sealed
// by AES-256-GCM under a local key file.
//
// bbolt holds an exclusive flock on its file for as long as a read-write
// handle is open, so Embedded does not keep the database open: each operation
// opens it (read-only with a shared lock for Get and List, read-write with an
// exclusive lock for writes), runs one transaction and closes it. Several
// processes (the sidecar, the connect server, the CLI) can therefore share
// one file; their writes serialise on the file lock and each Put's
// compare-and-swap runs inside one exclusive transaction.
//
// Embedded is safe for concurrent use. Versions come from one sequence per
// database, so a version is never reused for a key, even across Delete.
type Embedded struct {
	path        string
	lockTimeout time.Duration
	// bboltLocks leaves taking the file lock to bbolt (50 ms retries)
	// instead of openLocked: only BenchmarkEmbeddedContended sets it, to
	// show the difference.
	bboltLocks bool
	sealer     *sealer
	sem        *semaphore.Weighted
	closed     atomic.Bool
}

var _ Store = (*Embedded)(nil)

// grantRecord is the embedded store's use of Record: the header filled,
// each token a JSON string of base64 sealed bytes (see sealedToken).
type grantRecord = Record

// sealedToken returns the stored form of a sealed token: a JSON string of
// its base64 encoding.
func sealedToken(sealed []byte) json.RawMessage {
	b, _ := json.Marshal(sealed) // marshalling bytes cannot fail
	return b
}

// sealedBytes reverses sealedToken. The error does not quote the value.
func sealedBytes(raw json.RawMessage) ([]byte, error) {
	var b []byte
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, errors.New("decode record: corrupt entry")
		}
	}
	return b, nil
}

// leaseRecord is the stored form of a lease. The fields after Expiry were
// added later; a record without them reads as a lease acquired at an
// unknown time for no refresh.
type leaseRecord struct {
	Format     int       `json:"format"`
	Version    Version   `json:"version"`
	Holder     string    `json:"holder"`
	ID         string    `json:"id"`
	Expiry     time.Time `json:"expiry"`
	Acquired   time.Time `json:"acquired,omitzero"`
	Refresh    bool      `json:"refresh,omitempty"`
	Generation int64     `json:"generation,omitempty"`
}

// lease returns the lease r stores for provider and user.
func (r *leaseRecord) lease(provider, user string) *Lease {
	return &Lease{
		Provider: provider, User: user, Holder: r.Holder, ID: r.ID, Expiry: r.Expiry, Version: r.Version,
		Acquired: r.Acquired, Refresh: r.Refresh, Generation: r.Generation,
	}
}

// entryKey is the key of a grant or lease. Provider names cannot contain '/',
// so the provider prefix "p/" selects exactly that provider's entries.
func entryKey(provider, user string) []byte {
	return []byte(provider + "/" + user)
}

// OpenEmbedded validates cfg, loads or creates the key file, creates the
// database file if needed and checks that the key matches the one the database
// was created with (a mismatch wraps ErrDecrypt). The database is closed again
// before OpenEmbedded returns; see Embedded.
func OpenEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	key, err := loadOrCreateKey(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	s, err := newSealer(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("open embedded store: %w: create directory: %w", ErrUnavailable, err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: cfg.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", boltOpenError(err))
	}
	var keyErr error
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketGrants, bucketLeases, bucketMeta, bucketRevoke} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if check := meta.Get(keyKeyCheck); check != nil {
			got, err := s.open(check, keyCheckAD)
			if err != nil || got != keyCheckPlaintext {
				keyErr = fmt.Errorf("key file %s does not match the database %s: %w", cfg.KeyFile, cfg.Path, ErrDecrypt)
				return keyErr
			}
			return nil
		}
		check, err := s.seal(keyCheckPlaintext, keyCheckAD)
		if err != nil {
			return err
		}
		return meta.Put(keyKeyCheck, check)
	})
	closeErr := db.Close()
	switch {
	case keyErr != nil:
		return nil, fmt.Errorf("open embedded store: %w", keyErr)
	case err != nil:
		return nil, fmt.Errorf("open embedded store: %w: initialise database: %w", ErrUnavailable, err)
	case closeErr != nil:
		return nil, fmt.Errorf("open embedded store: %w: close database: %w", ErrUnavailable, closeErr)
	}
	return &Embedded{
		path:        cfg.Path,
		lockTimeout: cfg.LockTimeout,
		sealer:      s,
		sem:         semaphore.NewWeighted(maxInProcessReaders),
	}, nil
}

// boltOpenError classifies an error from bolt.Open; every open failure wraps
// ErrUnavailable.
func boltOpenError(err error) error {
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("%w: database locked by another process beyond lock_timeout", ErrUnavailable)
	}
	return fmt.Errorf("%w: open database: %w", ErrUnavailable, err)
}

// openNoCreate opens the database file for bbolt without O_CREATE: only
// OpenEmbedded creates the file, so a file deleted under a running process
// makes operations fail with ErrUnavailable instead of silently starting an
// empty store.
func openNoCreate(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag&^os.O_CREATE, perm)
}

// withDB opens the database for one transaction, runs fn in it and closes the
// database. Errors returned by fn pass through unchanged (they abort a write
// transaction); failures to lock, open, commit or close wrap ErrUnavailable.
func (e *Embedded) withDB(ctx context.Context, write bool, fn func(tx *bolt.Tx) error) error {
	if e.closed.Load() {
		return fmt.Errorf("%w: store closed", ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline := time.Now().Add(e.lockTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	lctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	weight := int64(1)
	if write {
		weight = maxInProcessReaders
	}
	if err := e.sem.Acquire(lctx, weight); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return fmt.Errorf("%w: database busy in this process beyond lock_timeout", ErrUnavailable)
	}
	defer e.sem.Release(weight)
	if e.closed.Load() {
		return fmt.Errorf("%w: store closed", ErrUnavailable)
	}
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return fmt.Errorf("%w: database busy beyond lock_timeout", ErrUnavailable)
	}
	open := openLocked(lctx)
	if e.bboltLocks {
		open = openNoCreate
	}
	db, err := bolt.Open(e.path, 0o600, &bolt.Options{
		Timeout:  remaining,
		ReadOnly: !write,
		OpenFile: open,
	})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return boltOpenError(err)
	}
	var fnErr error
	run := func(tx *bolt.Tx) error {
		fnErr = fn(tx)
		return fnErr
	}
	if write {
		err = db.Update(run)
	} else {
		err = db.View(run)
	}
	closeErr := db.Close()
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil:
		return fmt.Errorf("%w: transaction: %w", ErrUnavailable, err)
	case closeErr != nil:
		return fmt.Errorf("%w: close database: %w", ErrUnavailable, closeErr)
	}
	return nil
}

// Get implements Store.
func (e *Embedded) Get(ctx context.Context, provider, user string) (*Grant, Version, error) {
	if err := validateNames(provider, user); err != nil {
		return nil, 0, fmt.Errorf("get grant: %w", err)
	}
	var rec grantRecord
	err := e.withDB(ctx, false, func(tx *bolt.Tx) error {
		return readGrant(tx, provider, user, &rec)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("get grant %s/%s: %w", provider, user, err)
	}
	g := rec.GrantWithoutTokens(rec.Provider, rec.User)
	if g.AccessToken, err = e.openToken(rec.AccessToken, tokenAD("access_token", provider, user)); err != nil {
		return nil, 0, fmt.Errorf("get grant %s/%s: access token: %w", provider, user, err)
	}
	if g.RefreshToken, err = e.openToken(rec.RefreshToken, tokenAD("refresh_token", provider, user)); err != nil {
		return nil, 0, fmt.Errorf("get grant %s/%s: refresh token: %w", provider, user, err)
	}
	return g, rec.Version, nil
}

// openToken opens a token stored by Put.
func (e *Embedded) openToken(raw json.RawMessage, ad []byte) (string, error) {
	sealed, err := sealedBytes(raw)
	if err != nil {
		return "", err
	}
	return e.sealer.open(sealed, ad)
}

// readGrant decodes the record of provider/user into rec, or returns
// ErrNotFound.
func readGrant(tx *bolt.Tx, provider, user string, rec *grantRecord) error {
	b := tx.Bucket(bucketGrants)
	if b == nil {
		return ErrNotFound
	}
	v := b.Get(entryKey(provider, user))
	if v == nil {
		return ErrNotFound
	}
	return decodeRecord(v, rec)
}

// record is a stored record; every layout carries its format number.
type record interface {
	format() int
}

func (r *grantRecord) format() int { return r.Format }
func (r *leaseRecord) format() int { return r.Format }
func (r *recordHead) format() int  { return r.Format }

// recordHead is the part of a record needed for compare-and-swap.
type recordHead struct {
	Format  int     `json:"format"`
	Version Version `json:"version"`
}

// decodeRecord unmarshals a stored record and checks its format. The error
// does not quote the value, which holds sealed tokens.
func decodeRecord(v []byte, rec record) error {
	if err := json.Unmarshal(v, rec); err != nil {
		return errors.New("decode record: corrupt entry")
	}
	if f := rec.format(); f != recordFormat {
		return fmt.Errorf("decode record: unsupported format %d", f)
	}
	return nil
}

// Put implements Store.
func (e *Embedded) Put(ctx context.Context, g *Grant, cas Version) (Version, error) {
	if err := ValidateGrant(g); err != nil {
		return 0, fmt.Errorf("put grant: %w", err)
	}
	rec := NewRecord(g)
	rec.Format, rec.Provider, rec.User = recordFormat, g.Provider, g.User
	// Seal before taking the lock: it needs no database state.
	at, err := e.sealer.seal(g.AccessToken, tokenAD("access_token", g.Provider, g.User))
	if err != nil {
		return 0, fmt.Errorf("put grant %s/%s: seal access token: %w", g.Provider, g.User, err)
	}
	rt, err := e.sealer.seal(g.RefreshToken, tokenAD("refresh_token", g.Provider, g.User))
	if err != nil {
		return 0, fmt.Errorf("put grant %s/%s: seal refresh token: %w", g.Provider, g.User, err)
	}
	rec.AccessToken, rec.RefreshToken = sealedToken(at), sealedToken(rt)
	key := entryKey(g.Provider, g.User)
	err = e.withDB(ctx, true, func(tx *bolt.Tx) error {
		return casPut(tx, bucketGrants, key, cas, func(v Version) ([]byte, error) {
			rec.Version = v
			return json.Marshal(rec)
		})
	})
	if err != nil {
		return 0, fmt.Errorf("put grant %s/%s: %w", g.Provider, g.User, err)
	}
	return rec.Version, nil
}

// casPut writes the record encode returns for a version under key in
// bucket, when the version stored there is cas (0: none). The version is
// the bucket's next sequence, which survives deletes, so no key ever has a
// version twice.
func casPut(tx *bolt.Tx, bucket, key []byte, cas Version, encode func(Version) ([]byte, error)) error {
	b, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return fmt.Errorf("%w: bucket: %w", ErrUnavailable, err)
	}
	cur, err := storedVersion(b.Get(key))
	if err != nil {
		return err
	}
	if cur != cas {
		return fmt.Errorf("%w: stored version %d, cas %d", ErrConflict, cur, cas)
	}
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("%w: next version: %w", ErrUnavailable, err)
	}
	v, err := encode(Version(seq))
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	if err := b.Put(key, v); err != nil {
		return fmt.Errorf("%w: write: %w", ErrUnavailable, err)
	}
	return nil
}

// storedVersion returns the version of a stored record, 0 for none.
func storedVersion(v []byte) (Version, error) {
	if v == nil {
		return 0, nil
	}
	var head recordHead
	if err := decodeRecord(v, &head); err != nil {
		return 0, err
	}
	return head.Version, nil
}

// Delete implements Store.
func (e *Embedded) Delete(ctx context.Context, provider, user string) error {
	if err := validateNames(provider, user); err != nil {
		return fmt.Errorf("delete grant: %w", err)
	}
	key := entryKey(provider, user)
	err := e.withDB(ctx, true, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGrants)
		if b == nil || b.Get(key) == nil {
			return ErrNotFound
		}
		if err := b.Delete(key); err != nil {
			return fmt.Errorf("%w: delete: %w", ErrUnavailable, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete grant %s/%s: %w", provider, user, err)
	}
	return nil
}

// List implements Store.
func (e *Embedded) List(ctx context.Context, provider string) ([]*Grant, error) {
	if provider != "" {
		if err := ValidateProvider(provider); err != nil {
			return nil, fmt.Errorf("list grants: %w", err)
		}
	}
	var out []*Grant
	err := e.withDB(ctx, false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGrants)
		if b == nil {
			return nil
		}
		var prefix []byte
		if provider != "" {
			prefix = []byte(provider + "/")
		}
		c := b.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var rec grantRecord
			if err := decodeRecord(v, &rec); err != nil {
				return fmt.Errorf("entry %s: %w", k, err)
			}
			out = append(out, rec.GrantWithoutTokens(rec.Provider, rec.User))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	// Keys sort by bytes ("a-b/x" before "a/x"); the contract is provider,
	// then user.
	slices.SortFunc(out, func(a, b *Grant) int {
		if c := strings.Compare(a.Provider, b.Provider); c != 0 {
			return c
		}
		return strings.Compare(a.User, b.User)
	})
	return out, nil
}

// AcquireLease implements Store. Expiry is computed from this process's wall
// clock once the file lock is held, so time spent waiting for the lock does
// not shorten the lease.
func (e *Embedded) AcquireLease(ctx context.Context, provider, user string, req LeaseRequest) (*Lease, error) {
	if err := validateNames(provider, user); err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	if err := CheckLeaseArgs(req.Holder, req.TTL); err != nil {
		return nil, fmt.Errorf("acquire lease %s/%s: %w", provider, user, err)
	}
	id, err := newLeaseID()
	if err != nil {
		return nil, fmt.Errorf("acquire lease %s/%s: %w", provider, user, err)
	}
	key := entryKey(provider, user)
	var lease *Lease
	err = e.withDB(ctx, true, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketLeases)
		if err != nil {
			return fmt.Errorf("%w: bucket: %w", ErrUnavailable, err)
		}
		now := time.Now()
		if v := b.Get(key); v != nil {
			var cur leaseRecord
			if err := decodeRecord(v, &cur); err != nil {
				return err
			}
			held := cur.lease(provider, user)
			if now.Before(cur.Expiry) || (req.TakeOver != nil && !req.TakeOver(held)) {
				return &LeaseHeldError{Lease: *held}
			}
		}
		seq, err := b.NextSequence()
		if err != nil {
			return fmt.Errorf("%w: next version: %w", ErrUnavailable, err)
		}
		rec := leaseRecord{
			Format: recordFormat, Version: Version(seq), Holder: req.Holder, ID: id, Expiry: now.Add(req.TTL),
			Acquired: now, Refresh: req.Refresh, Generation: req.Generation,
		}
		v, err := json.Marshal(&rec)
		if err != nil {
			return fmt.Errorf("encode lease: %w", err)
		}
		if err := b.Put(key, v); err != nil {
			return fmt.Errorf("%w: write: %w", ErrUnavailable, err)
		}
		lease = rec.lease(provider, user)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("acquire lease %s/%s: %w", provider, user, err)
	}
	return lease, nil
}

// RenewLease implements Store.
func (e *Embedded) RenewLease(ctx context.Context, l *Lease, ttl time.Duration) (*Lease, error) {
	if err := CheckLease(l); err != nil {
		return nil, fmt.Errorf("renew lease: %w", err)
	}
	if err := CheckLeaseTTL(ttl); err != nil {
		return nil, fmt.Errorf("renew lease %s/%s: %w", l.Provider, l.User, err)
	}
	key := entryKey(l.Provider, l.User)
	var renewed *Lease
	err := e.withDB(ctx, true, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		if b == nil {
			return ErrLeaseLost
		}
		v := b.Get(key)
		if v == nil {
			return ErrLeaseLost
		}
		var cur leaseRecord
		if err := decodeRecord(v, &cur); err != nil {
			return err
		}
		if cur.ID != l.ID || cur.Version != l.Version {
			return fmt.Errorf("%w: now held by %s", ErrLeaseLost, cur.Holder)
		}
		seq, err := b.NextSequence()
		if err != nil {
			return fmt.Errorf("%w: next version: %w", ErrUnavailable, err)
		}
		cur.Version, cur.Expiry = Version(seq), time.Now().Add(ttl)
		nv, err := json.Marshal(&cur)
		if err != nil {
			return fmt.Errorf("encode lease: %w", err)
		}
		if err := b.Put(key, nv); err != nil {
			return fmt.Errorf("%w: write: %w", ErrUnavailable, err)
		}
		renewed = cur.lease(l.Provider, l.User)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("renew lease %s/%s: %w", l.Provider, l.User, err)
	}
	return renewed, nil
}

// ReleaseLease implements Store.
func (e *Embedded) ReleaseLease(ctx context.Context, l *Lease) error {
	if err := CheckLease(l); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	key := entryKey(l.Provider, l.User)
	err := e.withDB(ctx, true, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		if b == nil {
			return ErrLeaseLost
		}
		v := b.Get(key)
		if v == nil {
			return ErrLeaseLost
		}
		var cur leaseRecord
		if err := decodeRecord(v, &cur); err != nil {
			return err
		}
		if cur.ID != l.ID || cur.Version != l.Version {
			return fmt.Errorf("%w: now held by %s", ErrLeaseLost, cur.Holder)
		}
		if err := b.Delete(key); err != nil {
			return fmt.Errorf("%w: delete: %w", ErrUnavailable, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release lease %s/%s: %w", l.Provider, l.User, err)
	}
	return nil
}

// revocationRecord is the stored form of a Revocation, tokens sealed.
type revocationRecord struct {
	Format       int       `json:"format"`
	ID           string    `json:"id"`
	Provider     string    `json:"provider"`
	User         string    `json:"user"`
	Generation   int64     `json:"generation"`
	AccessToken  []byte    `json:"access_token"`
	RefreshToken []byte    `json:"refresh_token"`
	Actor        string    `json:"actor"`
	Fingerprint  string    `json:"fingerprint"`
	Attempt      int       `json:"attempt"`
	Due          time.Time `json:"due"`
	Queued       time.Time `json:"queued"`
}

func (r *revocationRecord) format() int { return r.Format }

// revocationAD binds a sealed revocation token to its field and entry.
func revocationAD(field, id string) []byte {
	return []byte("onbehalf/revocation/v1\x00" + field + "\x00" + id)
}

// PutRevocation implements Store.
func (e *Embedded) PutRevocation(ctx context.Context, r *Revocation) error {
	if err := ValidateRevocation(r); err != nil {
		return fmt.Errorf("put revocation: %w", err)
	}
	rec := revocationRecord{
		Format: recordFormat, ID: r.ID, Provider: r.Provider, User: r.User, Generation: r.Generation,
		Actor: r.Actor, Fingerprint: r.Fingerprint, Attempt: r.Attempt, Due: r.Due, Queued: r.Queued,
	}
	var err error
	if rec.AccessToken, err = e.sealer.seal(r.AccessToken, revocationAD("access_token", r.ID)); err != nil {
		return fmt.Errorf("put revocation %s: %w", r.ID, err)
	}
	if rec.RefreshToken, err = e.sealer.seal(r.RefreshToken, revocationAD("refresh_token", r.ID)); err != nil {
		return fmt.Errorf("put revocation %s: %w", r.ID, err)
	}
	v, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("put revocation %s: %w", r.ID, err)
	}
	err = e.withDB(ctx, true, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketRevoke)
		if err != nil {
			return fmt.Errorf("%w: bucket: %w", ErrUnavailable, err)
		}
		if err := b.Put([]byte(r.ID), v); err != nil {
			return fmt.Errorf("%w: write: %w", ErrUnavailable, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put revocation %s: %w", r.ID, err)
	}
	return nil
}

// ListRevocations implements Store.
func (e *Embedded) ListRevocations(ctx context.Context) ([]*Revocation, error) {
	var recs []revocationRecord
	err := e.withDB(ctx, false, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRevoke)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var rec revocationRecord
			if err := decodeRecord(v, &rec); err != nil {
				return fmt.Errorf("entry %s: %w", k, err)
			}
			recs = append(recs, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	out := make([]*Revocation, 0, len(recs))
	for _, rec := range recs {
		r := &Revocation{
			ID: rec.ID, Provider: rec.Provider, User: rec.User, Generation: rec.Generation,
			Actor: rec.Actor, Fingerprint: rec.Fingerprint, Attempt: rec.Attempt, Due: rec.Due, Queued: rec.Queued,
		}
		if r.AccessToken, err = e.sealer.open(rec.AccessToken, revocationAD("access_token", rec.ID)); err != nil {
			return nil, fmt.Errorf("list revocations: %s: %w", rec.ID, err)
		}
		if r.RefreshToken, err = e.sealer.open(rec.RefreshToken, revocationAD("refresh_token", rec.ID)); err != nil {
			return nil, fmt.Errorf("list revocations: %s: %w", rec.ID, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Revocation) int { return a.Queued.Compare(b.Queued) })
	return out, nil
}

// DeleteRevocation implements Store.
func (e *Embedded) DeleteRevocation(ctx context.Context, id string) error {
	if err := ValidateRevocationID(id); err != nil {
		return fmt.Errorf("delete revocation: %w", err)
	}
	err := e.withDB(ctx, true, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRevoke)
		if b == nil {
			return nil
		}
		if err := b.Delete([]byte(id)); err != nil {
			return fmt.Errorf("%w: delete: %w", ErrUnavailable, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete revocation %s: %w", id, err)
	}
	return nil
}

// Close implements Store. It waits for operations in flight; later
// operations fail with ErrUnavailable.
func (e *Embedded) Close() error {
	e.closed.Store(true)
	// Taking every slot waits for in-flight operations to finish.
	if err := e.sem.Acquire(context.Background(), maxInProcessReaders); err != nil {
		return fmt.Errorf("close embedded store: %w", err)
	}
	e.sem.Release(maxInProcessReaders)
	return nil
}

// validateNames validates a provider and user pair.
func validateNames(provider, user string) error {
	if err := ValidateProvider(provider); err != nil {
		return err
	}
	return ValidateUser(user)
}

// newLeaseID returns 128 random bits in hex.
func newLeaseID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lease id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
