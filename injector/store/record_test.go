package store_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// goldenKey is the key file the golden record was sealed with.
const goldenKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// goldenGrant is the grant in testdata/grant-record-v1.json.
func goldenGrant() *store.Grant {
	return &store.Grant{
		Provider: "slack", User: "alice@example.com",
		AccessToken: "xoxp-old-access-token", RefreshToken: "xoxe-old-refresh-token",
		TokenType: "Bearer", Expiry: time.Date(2026, 6, 18, 7, 0, 0, 0, time.UTC),
		Scopes: []string{"chat:write", "users:read"}, Status: store.StatusActive,
		ConnectedAt:     time.Date(2026, 6, 1, 9, 30, 0, 0, time.UTC),
		ProviderAccount: "U0123", Generation: 7,
	}
}

// TestRecordWireFormat: a grant record written by the embedded store
// before the record type was shared with the Vault store
// (testdata/grant-record-v1.json, sealed under goldenKey) still reads, and
// the store writes records of exactly the same shape.
func TestRecordWireFormat(t *testing.T) {
	dir := t.TempDir()
	key, _ := hex.DecodeString(goldenKey)
	cfg := store.DefaultEmbeddedConfig()
	cfg.Path, cfg.KeyFile = filepath.Join(dir, "grants.db"), filepath.Join(dir, "grants.key")
	if err := os.WriteFile(cfg.KeyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(filepath.Join("testdata", "grant-record-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, cfg) // creates the database with its key check
	want := goldenGrant()
	rawPut(t, cfg.Path, "slack/alice@example.com", old)

	got, v, err := s.Get(context.Background(), want.Provider, want.User)
	if err != nil {
		t.Fatalf("Get of a record written by the earlier code: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" || v != 1 {
		t.Errorf("Get = version %d (want 1), grant diff (-want +got):\n%s", v, diff)
	}
	list, err := s.List(context.Background(), "slack")
	if err != nil || len(list) != 1 || list[0].Generation != 7 || list[0].AccessToken != "" {
		t.Errorf("List = %v, %v; want the one grant without tokens", list, err)
	}

	// A write by the current code has the same fields, in the same order,
	// with the same values apart from the freshly sealed tokens.
	if _, err := s.Put(context.Background(), want, 1); err != nil {
		t.Fatal(err)
	}
	written := rawGet(t, cfg.Path, "slack/alice@example.com")
	if got, want := fieldNames(t, written), fieldNames(t, old); !cmp.Equal(got, want) {
		t.Errorf("written fields = %v; want %v", got, want)
	}
	var a, b map[string]any
	_ = json.Unmarshal(old, &a)
	_ = json.Unmarshal(written, &b)
	for _, m := range []map[string]any{a, b} {
		delete(m, "access_token")
		delete(m, "refresh_token")
		delete(m, "version")
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("written record differs from the earlier code's (-old +new):\n%s", diff)
	}
}

// rawPut writes value under key in the grants bucket, as another program
// would have.
func rawPut(t *testing.T, path, key string, value []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("grants"))
		if err != nil {
			return err
		}
		if _, err := b.NextSequence(); err != nil { // version 1 is taken
			return err
		}
		return b.Put([]byte(key), value)
	}); err != nil {
		t.Fatal(err)
	}
}

// rawGet returns the stored bytes under key in the grants bucket.
func rawGet(t *testing.T, path, key string) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []byte
	_ = db.View(func(tx *bolt.Tx) error {
		out = append(out, tx.Bucket([]byte("grants")).Get([]byte(key))...)
		return nil
	})
	return out
}

// fieldNames returns the top-level member names of a JSON object in order.
func fieldNames(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var names []string
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %v", err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return names
}
