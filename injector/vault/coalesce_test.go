//go:build integration

package vault

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// gatedStore is a real store whose reads are counted per grant and held
// until release is closed, so that every concurrent caller is waiting on
// the cache at once before any read returns.
type gatedStore struct {
	store.Store
	release chan struct{}
	mu      sync.Mutex
	reads   map[string]int
}

func (s *gatedStore) Get(ctx context.Context, provider, user string) (*store.Grant, store.Version, error) {
	s.mu.Lock()
	s.reads[user]++
	s.mu.Unlock()
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	return s.Store.Get(ctx, provider, user)
}

// joinWait is how long the test lets callers that have missed the cache
// enter the shared lookup before the reads are released. Missing and
// joining are a few instructions apart; this covers a loaded machine.
const joinWait = 200 * time.Millisecond

// TestCachedSourceCoalescesStoreReads: concurrent requests for the same
// grant that miss the token cache cost one read of the real store (Vault,
// and the embedded store), each caller gets its own user's token, and a
// caller giving up does not fail the others.
func TestCachedSourceCoalescesStoreReads(t *testing.T) {
	const users, perUser = 8, 32
	stores := map[string]func(t *testing.T) store.Store{
		"vault": func(t *testing.T) store.Store { return open(t, tokenConfig(t, shared)) },
		"embedded": func(t *testing.T) store.Store {
			dir := t.TempDir()
			s, err := store.OpenEmbedded(store.EmbeddedConfig{Path: filepath.Join(dir, "grants.db"), KeyFile: filepath.Join(dir, "grants.key"), LockTimeout: store.DefaultLockTimeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
	}
	for name, openStore := range stores {
		t.Run(name, func(t *testing.T) {
			real := openStore(t)
			for u := range users {
				if _, err := real.Put(ctx(t), canaryGrant("slack", fmt.Sprintf("user%d", u)), 0); err != nil {
					t.Fatal(err)
				}
			}
			gs := &gatedStore{Store: real, release: make(chan struct{}), reads: map[string]int{}}
			var misses atomic.Int64
			cache := injector.NewCachedSource(injector.NewStoreSource(gs), injector.DefaultCacheConfig(), nil).
				Observe(func(hit bool) {
					if !hit {
						misses.Add(1)
					}
				})

			// One caller per user gives up while the read is held.
			quitter, quit := context.WithCancel(ctx(t))
			var wg sync.WaitGroup
			errs := make(chan error, users*perUser)
			for u := range users {
				user := fmt.Sprintf("user%d", u)
				for i := range perUser {
					c := ctx(t)
					if i == 0 {
						c = quitter
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						tok, err := cache.Token(c, "slack", user)
						switch {
						case i == 0:
							if err == nil {
								errs <- fmt.Errorf("%s: the caller that gave up got a token; want its context's error", user)
							}
						case err != nil:
							errs <- fmt.Errorf("%s: %w", user, err)
						case tok.Value != canaryAccess+"-"+user:
							errs <- fmt.Errorf("%s got another user's token", user)
						}
					}()
				}
			}
			deadline := time.Now().Add(30 * time.Second)
			for misses.Load() < users*perUser {
				if time.Now().After(deadline) {
					t.Fatalf("only %d of %d callers reached the cache", misses.Load(), users*perUser)
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(joinWait)
			quit()
			time.Sleep(joinWait)
			close(gs.release)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for u := range users {
				user := fmt.Sprintf("user%d", u)
				if got := gs.reads[user]; got != 1 {
					t.Errorf("%s: %d store reads for %d concurrent requests; want 1", user, got, perUser)
				}
			}
			if got := cache.Stats().Lookups; got != users {
				t.Errorf("lookups = %d; want %d", got, users)
			}
			// The lookup outlived the caller that gave up: its token is cached.
			if _, err := cache.Token(ctx(t), "slack", "user0"); err != nil {
				t.Fatal(err)
			}
			if got := gs.reads["user0"]; got != 1 {
				t.Errorf("user0: %d store reads after the shared lookup; want 1 (served from the cache)", got)
			}
		})
	}
}
