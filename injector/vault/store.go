// Package vault is the production grant store: users' OAuth grants in
// HashiCorp Vault's KV v2 engine, written by compare-and-swap, with refresh
// leases beside them and an optional Transit envelope for the token fields
// (docs/design.md#grant-store). It implements store.Store and passes the
// shared conformance suite against a real Vault.
//
// Layout under the KV v2 mount (prefix configurable):
//
//	<mount>/data/<prefix>/grants/<provider>/<user>   the grant
//	<mount>/data/<prefix>/leases/<provider>/<user>   its refresh lease
//	<mount>/data/<prefix>/activity/<provider>/<user> its last use and revocation (activity.go)
//
// A grant entry holds access_token, refresh_token, token_type, expiry,
// scopes, status, connected_at, provider_account and generation. A Version is
// the KV v2 version of the entry.
//
// Versions are never reused. Vault restarts a key's versions at 1 when its
// metadata is deleted, so a writer holding a version read before a delete
// could overwrite a grant re-created since (the ABA problem: a refresh that
// started before a revoke would resurrect the revoked grant's tokens over the
// new connection). The store therefore never deletes metadata. Delete writes
// a tombstone version by CAS and then destroys the data of every version up
// to it; a later create writes by CAS on the tombstone's version. Releasing a
// lease writes an expired placeholder by CAS for the same reason. Operators
// must not run `vault kv metadata delete` on these paths while sidecars run.
//
// With Transit enabled, tokens are stored as Transit ciphertext under a
// derived key with the context "<provider>/<user>/<field>", so the KV entry
// holds no token in clear and a ciphertext moved to another grant or field
// fails to decrypt (store.ErrDecrypt). Without Transit, a token is stored as
// a JSON string, or as {"base64": …} when it is not valid UTF-8.
//
// A Vault cluster is reached through one address or through every node's
// (Config.Addresses): requests move past nodes that are down, sealed,
// redirecting or without an active node (failover.go), and fail with
// store.ErrUnavailable while the cluster elects a new active node.
//
// The store logs in with a token file, AppRole or Kubernetes auth, keeps the
// token alive with the API's lifetime watcher, and logs in again when renewal
// ends or a request is denied (see session). The HTTP client ignores proxy
// and VAULT_* environment variables. Every operation runs under the
// configured timeout; Vault being unreachable, slow, sealed or failing maps to
// store.ErrUnavailable, and no error text contains a token.
//
// Concurrency: a Store is safe for concurrent use; CAS on Vault serialises
// writers across replicas.
package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Operation limits.
const (
	// maxCASAttempts bounds how often Delete and AcquireLease re-read and
	// retry after losing a CAS race; each loss means another writer made
	// progress, so a few attempts settle any realistic contention.
	maxCASAttempts = 5
	// listConcurrency bounds the grant reads List runs in parallel: enough
	// to list thousands of grants within the timeout, few enough not to
	// load Vault.
	listConcurrency = 8
	// maxSecretFieldLen bounds the field name ReadSecret accepts.
	maxSecretFieldLen = 128
)

// ErrSecretNotFound means ReadSecret found no such secret or field.
var ErrSecretNotFound = errors.New("secret not found")

// Options are the store's collaborators.
type Options struct {
	// Logger receives operational logs (logins, renewals, failures). Nil
	// discards them.
	Logger *zap.Logger
}

// Store is the Vault grant store. Open returns a logged-in Store.
type Store struct {
	cfg     Config
	log     *zap.Logger
	sess    *session
	transit *transit
	closed  atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Open validates cfg, builds the HTTP client, logs in (bounded by ctx and
// cfg.Timeout), checks that the mount is a KV v2 engine and, with Transit
// enabled, that the key exists and is derived. It fails when Vault cannot be reached or refuses the credentials;
// after Open, outages are ridden out without reopening. The returned Store
// runs a background goroutine until Close.
func Open(ctx context.Context, cfg Config, o Options) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open vault store: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	hc, err := newHTTPClient(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("open vault store: %w", err)
	}
	sess, err := newSession(cfg, hc, log)
	if err != nil {
		return nil, fmt.Errorf("open vault store: %w", err)
	}
	if err := sess.start(ctx); err != nil {
		hc.CloseIdleConnections()
		return nil, fmt.Errorf("open vault store: %w", err)
	}
	s := &Store{cfg: cfg, log: log, sess: sess}
	if cfg.Transit.Enabled {
		s.transit = &transit{mount: cfg.Transit.Mount, key: cfg.Transit.Key}
	}
	if err := s.preflight(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open vault store: %w", err)
	}
	return s, nil
}

// preflight checks, once logged in, that the mount is KV v2 and that the
// Transit key (if any) exists and is derived.
func (s *Store) preflight(ctx context.Context) error {
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	if err := c.checkKVv2(ctx, s.cfg.Mount); err != nil {
		return err
	}
	if s.transit != nil {
		return s.transit.checkKey(ctx, c)
	}
	return nil
}

// begin starts an operation: it refuses a closed store or a done context
// and returns a context bounded by the configured timeout and a conn on the
// current login.
func (s *Store) begin(ctx context.Context) (context.Context, context.CancelFunc, *conn, error) {
	if s.closed.Load() {
		return nil, nil, nil, fmt.Errorf("%w: store closed", store.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	return ctx, cancel, &conn{sess: s.sess, st: s.sess.current()}, nil
}

// kvPath returns the KV v2 path of kind ("data", "metadata" or "destroy")
// for the entry rest (for example "grants/slack/alice") under the prefix.
func (s *Store) kvPath(kind, rest string) string {
	return s.cfg.Mount + "/" + kind + "/" + s.cfg.Prefix + "/" + rest
}

// grantKey and leaseKey are the entry names of a grant and its lease; names
// are validated before either is built.
func grantKey(provider, user string) string { return "grants/" + provider + "/" + user }
func leaseKey(provider, user string) string { return "leases/" + provider + "/" + user }

// grantRecord is the Vault store's use of store.Record
// (docs/design.md#grant-store names the fields): no header, tokens as
// Transit ciphertext with Transit on (otherwise see encodePlainToken),
// Deleted marking a tombstone.
type grantRecord = store.Record

// tombstone is the record Delete writes before destroying the versions.
type tombstone struct {
	Deleted bool `json:"deleted"`
}

// plainToken is the {"base64": …} form of a token that is not valid UTF-8
// (JSON strings cannot carry such bytes).
type plainToken struct {
	Base64 string `json:"base64"`
}

// encodePlainToken returns the stored form of a token without Transit: a
// JSON string when tok is valid UTF-8, else {"base64": …}.
func encodePlainToken(tok string) json.RawMessage {
	var b []byte
	if utf8.ValidString(tok) {
		b, _ = json.Marshal(tok)
	} else {
		b, _ = json.Marshal(plainToken{Base64: base64.StdEncoding.EncodeToString([]byte(tok))})
	}
	return b
}

// decodeStringToken returns a stored token that must be a JSON string
// (Transit ciphertext), "" for a missing one.
func decodeStringToken(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: token field is not a transit ciphertext", store.ErrDecrypt)
	}
	return s, nil
}

// decodePlainToken reverses encodePlainToken.
func decodePlainToken(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errors.New("corrupt token field")
		}
		return s, nil
	}
	var p plainToken
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", errors.New("corrupt token field")
	}
	b, err := base64.StdEncoding.DecodeString(p.Base64)
	if err != nil {
		return "", errors.New("corrupt token field")
	}
	return string(b), nil
}

// decodeGrant decodes a present entry; ok is false for a tombstone. The
// error never quotes the data, which holds tokens.
func decodeGrant(e kvEntry) (rec *grantRecord, ok bool, err error) {
	if e.data == nil {
		return nil, false, nil
	}
	rec = new(grantRecord)
	if err := json.Unmarshal(e.data, rec); err != nil {
		return nil, false, errors.New("decode grant: corrupt entry")
	}
	if rec.Deleted {
		return nil, false, nil
	}
	return rec, true, nil
}

// Get implements store.Store. It costs one KV read, plus one Transit
// decrypt with the envelope on.
func (s *Store) Get(ctx context.Context, provider, user string) (*store.Grant, store.Version, error) {
	if err := validateNames(provider, user); err != nil {
		return nil, 0, fmt.Errorf("get grant: %w", err)
	}
	op := "get grant " + provider + "/" + user
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	e, err := c.readKV(ctx, s.kvPath("data", grantKey(provider, user)))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	rec, ok, err := decodeGrant(e)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	if !ok {
		return nil, 0, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	g := rec.GrantWithoutTokens(provider, user)
	if s.transit == nil {
		if g.AccessToken, err = decodePlainToken(rec.AccessToken); err == nil {
			g.RefreshToken, err = decodePlainToken(rec.RefreshToken)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", op, err)
		}
		// Transit ciphertext read with the envelope off (a configuration
		// change) must not be injected as if it were a token.
		if strings.HasPrefix(g.AccessToken, ciphertextPrefix) || strings.HasPrefix(g.RefreshToken, ciphertextPrefix) {
			return nil, 0, fmt.Errorf("%s: %w: tokens are transit ciphertext but transit is disabled", op, store.ErrDecrypt)
		}
		return g, store.Version(e.version), nil
	}
	at, err := decodeStringToken(rec.AccessToken)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: access token: %w", op, err)
	}
	rt, err := decodeStringToken(rec.RefreshToken)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: refresh token: %w", op, err)
	}
	plain, err := s.transit.decrypt(ctx, c, provider, user, []sealedField{{"access_token", at}, {"refresh_token", rt}})
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	g.AccessToken, g.RefreshToken = plain[0], plain[1]
	return g, store.Version(e.version), nil
}

// Put implements store.Store. It reads the entry's current version first, so
// that a tombstone (a deleted grant) counts as missing: cas 0 then writes by
// CAS on the tombstone's version, and any other cas conflicts. The write
// itself is a KV CAS on the version read, so nothing that happened in between
// is overwritten.
func (s *Store) Put(ctx context.Context, g *store.Grant, cas store.Version) (store.Version, error) {
	if err := store.ValidateGrant(g); err != nil {
		return 0, fmt.Errorf("put grant: %w", err)
	}
	op := "put grant " + g.Provider + "/" + g.User
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	rec := store.NewRecord(g)
	if s.transit == nil {
		rec.AccessToken, rec.RefreshToken = encodePlainToken(g.AccessToken), encodePlainToken(g.RefreshToken)
	} else {
		ct, err := s.transit.encrypt(ctx, c, g.Provider, g.User, []sealedField{{"access_token", g.AccessToken}, {"refresh_token", g.RefreshToken}})
		if err != nil {
			return 0, fmt.Errorf("%s: %w", op, err)
		}
		rec.AccessToken, _ = json.Marshal(ct[0])
		rec.RefreshToken, _ = json.Marshal(ct[1])
	}
	return c.putCAS(ctx, op, s.kvPath("data", grantKey(g.Provider, g.User)), "grant", cas, rec, func(e kvEntry) (bool, error) {
		_, live, err := decodeGrant(e)
		return live, err
	})
}

// putCAS writes rec at path by KV CAS on the version read first, with
// Put's semantics: live decodes the entry read and reports whether it holds
// data rather than a tombstone (missing or a tombstone: cas must be 0; an
// entry that fails to decode is still an entry, overwritten by a CAS on its
// version, never created over). what names the entry in errors ("grant").
func (c *conn) putCAS(ctx context.Context, op, path, what string, cas store.Version, rec any, live func(kvEntry) (bool, error)) (store.Version, error) {
	cur, err := c.readKV(ctx, path)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	ok, err := live(cur)
	if err != nil {
		ok = true
	}
	switch {
	case ok && uint64(cas) != cur.version:
		return 0, fmt.Errorf("%s: %w: stored version %d, cas %d", op, store.ErrConflict, cur.version, cas)
	case !ok && cas != 0:
		return 0, fmt.Errorf("%s: %w: no %s stored, cas %d", op, store.ErrConflict, what, cas)
	}
	v, err := c.writeKV(ctx, path, cur.version, rec)
	if errors.Is(err, errCASMismatch) {
		return 0, fmt.Errorf("%s: %w: changed concurrently", op, store.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	return store.Version(v), nil
}

// Delete implements store.Store. It writes a tombstone by CAS on the
// current version (so no concurrent writer is lost unnoticed: a racing Put
// either lands before and is deleted too, or fails its CAS), then destroys
// the data of every version up to the tombstone. The key's metadata stays, so
// versions keep increasing after a re-create. Delete of a tombstone whose
// versions were not all destroyed (an earlier Delete failed half-way)
// finishes the destruction and reports ErrNotFound.
func (s *Store) Delete(ctx context.Context, provider, user string) error {
	if err := validateNames(provider, user); err != nil {
		return fmt.Errorf("delete grant: %w", err)
	}
	op := "delete grant " + provider + "/" + user
	// Sidecars may keep a cached token until the change feed names its
	// grant (store.ChangeFeed): the change is recorded before the grant
	// goes, so that no sidecar can miss it, and again after, so that a
	// sidecar that read the grant in between drops what it read.
	if err := s.RecordChange(ctx, provider, user); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	err := s.deleteEntry(ctx, op, grantKey(provider, user), "grant", func(e kvEntry) (bool, error) {
		_, live, err := decodeGrant(e)
		return live, err
	})
	if err == nil {
		if rerr := s.RecordChange(ctx, provider, user); rerr != nil {
			// The first record stands: sidecars that read the grant
			// within their TTL of seeing it keep that read no longer
			// than the TTL (injector.CachedSource).
			s.log.Warn("grant deleted; recording the change again failed", zap.String("provider", provider), zap.String("user", user), zap.Error(rerr))
		}
	}
	return err
}

// deleteEntry deletes the KV entry at key as Delete describes. what names
// the entry in errors ("grant"); live decodes an entry and reports whether
// it holds data rather than a tombstone (an entry that fails to decode is
// deleted like any other).
func (s *Store) deleteEntry(ctx context.Context, op, key, what string, live func(kvEntry) (bool, error)) error {
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	path := s.kvPath("data", key)
	destroy := func(upTo uint64) error {
		return c.destroyVersions(ctx, s.kvPath("metadata", key), s.kvPath("destroy", key), upTo)
	}
	for range maxCASAttempts {
		cur, err := c.readKV(ctx, path)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		ok, err := live(cur)
		if err != nil {
			ok = true // corrupt entries are deleted like any other
		}
		if !ok {
			if cur.data != nil {
				// A tombstone still readable: its destruction did not
				// finish.
				if err := destroy(cur.version); err != nil {
					return fmt.Errorf("%s: destroy old versions: %w", op, err)
				}
			}
			return fmt.Errorf("%s: %w", op, store.ErrNotFound)
		}
		t, err := c.writeKV(ctx, path, cur.version, tombstone{Deleted: true})
		if errors.Is(err, errCASMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		if err := destroy(t); err != nil {
			return fmt.Errorf("%s: %s deleted, but its stored versions were not destroyed (delete again to finish): %w", op, what, err)
		}
		return nil
	}
	return fmt.Errorf("%s: %w: %s kept changing", op, store.ErrConflict, what)
}

// List implements store.Store: one metadata LIST per provider folder (plus
// one for the providers when provider is empty) and one read per grant, a
// few at a time. Tokens are never decrypted. Entries whose names fail
// validation (written by something else) are skipped.
func (s *Store) List(ctx context.Context, provider string) ([]*store.Grant, error) {
	if provider != "" {
		if err := store.ValidateProvider(provider); err != nil {
			return nil, fmt.Errorf("list grants: %w", err)
		}
	}
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	defer cancel()
	providers := []string{provider}
	if provider == "" {
		keys, err := c.listKV(ctx, s.kvPath("metadata", "grants/"))
		if err != nil {
			return nil, fmt.Errorf("list grants: %w", err)
		}
		providers = providers[:0]
		for _, k := range keys {
			if p, ok := strings.CutSuffix(k, "/"); ok && store.ValidateProvider(p) == nil {
				providers = append(providers, p)
			}
		}
	}
	type name struct{ provider, user string }
	var names []name
	for _, p := range providers {
		keys, err := c.listKV(ctx, s.kvPath("metadata", "grants/"+p+"/"))
		if err != nil {
			return nil, fmt.Errorf("list grants of %s: %w", p, err)
		}
		for _, u := range keys {
			if store.ValidateUser(u) == nil {
				names = append(names, name{p, u})
			}
		}
	}
	out := make([]*store.Grant, len(names))
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(listConcurrency)
	for i, n := range names {
		eg.Go(func() error {
			// Each goroutine has its own conn: a conn is not safe for
			// concurrent use.
			gc := &conn{sess: c.sess, st: c.st}
			e, err := gc.readKV(ectx, s.kvPath("data", grantKey(n.provider, n.user)))
			if err != nil {
				return fmt.Errorf("read %s/%s: %w", n.provider, n.user, err)
			}
			rec, ok, err := decodeGrant(e)
			if err != nil {
				return fmt.Errorf("read %s/%s: %w", n.provider, n.user, err)
			}
			if ok {
				out[i] = rec.GrantWithoutTokens(n.provider, n.user)
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	out = slices.DeleteFunc(out, func(g *store.Grant) bool { return g == nil })
	slices.SortFunc(out, func(a, b *store.Grant) int {
		if c := strings.Compare(a.Provider, b.Provider); c != 0 {
			return c
		}
		return strings.Compare(a.User, b.User)
	})
	return out, nil
}

// Ping reports whether the store can serve: Vault answers sys/health as
// initialised, unsealed and active (not a standby), and the last login did
// not fail. The sidecar's /readyz calls it. Errors wrap ErrUnavailable.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("ping vault: %w: store closed", store.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var h struct {
		Initialized bool `json:"initialized"`
		Sealed      bool `json:"sealed"`
		Standby     bool `json:"standby"`
	}
	// sys/health answers 429, 472, 473, 501 and 503 for standbys, sealed
	// or uninitialised servers, with the same body; the body decides.
	_, err := request(ctx, s.sess.anon, http.MethodGet, "sys/health", nil, &h)
	switch {
	case h.Sealed:
		return fmt.Errorf("ping vault: %w: vault is sealed", store.ErrUnavailable)
	case err == nil && !h.Initialized:
		return fmt.Errorf("ping vault: %w: vault is not initialised", store.ErrUnavailable)
	case h.Standby:
		return fmt.Errorf("ping vault: %w: vault answered as a standby", store.ErrUnavailable)
	case err != nil:
		return fmt.Errorf("ping vault: %w", unexpected(err))
	}
	if err := s.sess.status(); err != nil {
		return fmt.Errorf("ping vault: %w: login failing: %w", store.ErrUnavailable, err)
	}
	return nil
}

// ReadSecret returns field of the KV v2 secret at path under the store's
// mount (for example path "onbehalf/providers/slack", field
// "client_secret"): provider client secrets live beside the grants. A
// missing secret or field wraps ErrSecretNotFound. The value is never logged
// or quoted in errors.
func (s *Store) ReadSecret(ctx context.Context, path, field string) (string, error) {
	if !validPath(path) {
		return "", fmt.Errorf("read secret: %w: path must be segments of A-Z, a-z, 0-9, '.', '_' and '-' separated by '/'", store.ErrInvalidArgument)
	}
	if field == "" || len(field) > maxSecretFieldLen || strings.ContainsFunc(field, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", fmt.Errorf("read secret %s: %w: bad field name", path, store.ErrInvalidArgument)
	}
	op := "read secret " + path
	ctx, cancel, c, err := s.begin(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	defer cancel()
	e, err := c.readKV(ctx, s.cfg.Mount+"/data/"+path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	if e.data == nil {
		return "", fmt.Errorf("%s: %w", op, ErrSecretNotFound)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(e.data, &fields); err != nil {
		return "", fmt.Errorf("%s: corrupt entry", op)
	}
	raw, ok := fields[field]
	if !ok {
		return "", fmt.Errorf("%s: %w: no field %q", op, ErrSecretNotFound, field)
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("%s: field %q is not a string", op, field)
	}
	return v, nil
}

// Close implements store.Store: it stops the login goroutine (and the token
// watcher) and closes idle connections. Later operations fail with
// ErrUnavailable. The Vault token is not revoked: another replica may share
// it (token auth), and it expires by itself.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.sess.close()
	s.sess.hc.CloseIdleConnections()
	return nil
}

// validateNames validates a provider and user pair.
func validateNames(provider, user string) error {
	if err := store.ValidateProvider(provider); err != nil {
		return err
	}
	return store.ValidateUser(user)
}
