package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchStore opens a store in a temporary directory holding n grants.
func benchStore(b *testing.B, n int) (*Embedded, EmbeddedConfig) {
	b.Helper()
	dir := b.TempDir()
	cfg := DefaultEmbeddedConfig()
	cfg.Path = filepath.Join(dir, "grants.db")
	cfg.KeyFile = filepath.Join(dir, "grants.key")
	s, err := OpenEmbedded(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	for i := range n {
		g := &Grant{
			Provider: "slack", User: fmt.Sprintf("user%04d", i),
			AccessToken:  "xoxp-access-token-of-realistic-length-0123456789abcdef",
			RefreshToken: "xoxe-1-refresh-token-of-realistic-length-0123456789abcdef",
			TokenType:    "Bearer", Expiry: time.Now().Add(time.Hour), Scopes: []string{"chat:write", "channels:read"},
			Status: StatusActive, ConnectedAt: time.Now(), Generation: 1,
		}
		if _, err := s.Put(context.Background(), g, 0); err != nil {
			b.Fatal(err)
		}
	}
	return s, cfg
}

// BenchmarkEmbeddedGet measures one Get including what the embedded store
// pays for sharing its file between processes: a read-only open with a
// shared flock, mmap, one read transaction, close; plus decoding and two
// AES-GCM opens.
func BenchmarkEmbeddedGet(b *testing.B) {
	s, _ := benchStore(b, 100)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Get(ctx, "slack", "user0042"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEmbeddedGetParallel is BenchmarkEmbeddedGet from GOMAXPROCS
// goroutines: readers share the file lock.
func BenchmarkEmbeddedGetParallel(b *testing.B) {
	s, _ := benchStore(b, 100)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := s.Get(ctx, "slack", "user0042"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkEmbeddedGetHeldOpen is the baseline Embedded gives up: the same
// read, decode and unseal on a database kept open. The difference to
// BenchmarkEmbeddedGet is the per-operation open and close.
func BenchmarkEmbeddedGetHeldOpen(b *testing.B) {
	s, cfg := benchStore(b, 100)
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ReportAllocs()
	for b.Loop() {
		var rec grantRecord
		if err := db.View(func(tx *bolt.Tx) error { return readGrant(tx, "slack", "user0042", &rec) }); err != nil {
			b.Fatal(err)
		}
		if _, err := s.openToken(rec.AccessToken, tokenAD("access_token", "slack", "user0042")); err != nil {
			b.Fatal(err)
		}
		if _, err := s.openToken(rec.RefreshToken, tokenAD("refresh_token", "slack", "user0042")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEmbeddedPut measures one compare-and-swap update: read-write open
// with an exclusive flock, one write transaction with its fsyncs, close.
func BenchmarkEmbeddedPut(b *testing.B) {
	s, _ := benchStore(b, 100)
	ctx := context.Background()
	g, v, err := s.Get(ctx, "slack", "user0042")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		g.Generation++
		if v, err = s.Put(ctx, g, v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEmbeddedList measures listing 100 grants (no unsealing).
func BenchmarkEmbeddedList(b *testing.B) {
	s, _ := benchStore(b, 100)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.List(ctx, "slack"); err != nil {
			b.Fatal(err)
		}
	}
}
