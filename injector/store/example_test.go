package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// The refresh sequence of docs/design.md#refresh on the embedded store: take
// the lease, re-read under it, persist the rotated grant with CAS on the
// version just read, release.
func ExampleOpenEmbedded() {
	dir, err := os.MkdirTemp("", "onbehalf-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	cfg := store.DefaultEmbeddedConfig()
	cfg.Path = filepath.Join(dir, "grants.db")
	cfg.KeyFile = filepath.Join(dir, "grants.key") // created on first use
	s, err := store.OpenEmbedded(cfg)
	if err != nil {
		panic(err)
	}
	defer s.Close()
	ctx := context.Background()

	g := &store.Grant{
		Provider: "slack", User: "alice@example.com",
		AccessToken: "old-access", RefreshToken: "old-refresh",
		Status: store.StatusActive, Generation: 1,
	}
	if _, err := s.Put(ctx, g, 0); err != nil {
		panic(err)
	}

	lease, err := s.AcquireLease(ctx, "slack", "alice@example.com", store.LeaseRequest{Holder: "sidecar-1", TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	cur, v, err := s.Get(ctx, "slack", "alice@example.com")
	if err != nil {
		panic(err)
	}
	cur.AccessToken, cur.RefreshToken = "new-access", "new-refresh"
	cur.Generation++
	if _, err := s.Put(ctx, cur, v); err != nil {
		panic(err)
	}
	if err := s.ReleaseLease(ctx, lease); err != nil {
		panic(err)
	}

	// A writer still holding the old version loses.
	_, err = s.Put(ctx, g, v)
	fmt.Println("stale write conflicts:", errors.Is(err, store.ErrConflict))
	fmt.Println(cur)
	// Output:
	// stale write conflicts: true
	// Grant{slack/alice@example.com status=active generation=2 token_type= expiry=0001-01-01T00:00:00Z scopes= access_token=REDACTED refresh_token=REDACTED}
}
