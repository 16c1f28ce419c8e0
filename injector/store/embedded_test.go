package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/injector/store/storetest"
)

// testConfig returns a config with files in a fresh temporary directory.
func testConfig(t *testing.T) store.EmbeddedConfig {
	t.Helper()
	dir := t.TempDir()
	cfg := store.DefaultEmbeddedConfig()
	cfg.Path = filepath.Join(dir, "grants.db")
	cfg.KeyFile = filepath.Join(dir, "grants.key")
	return cfg
}

// open opens an Embedded store on cfg and closes it at cleanup.
func open(t *testing.T, cfg store.EmbeddedConfig) *store.Embedded {
	t.Helper()
	s, err := store.OpenEmbedded(cfg)
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestEmbeddedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, testConfig(t))
	})
}

func TestEmbeddedRegistrationConformance(t *testing.T) {
	storetest.RunRegistrations(t, func(t *testing.T) store.Store {
		return open(t, testConfig(t))
	})
}

// TestEmbeddedRegistrationSealed checks that an MCP server's client secret
// is sealed in the file like a grant's tokens, and that a sealed secret
// moved to another server's entry does not open.
func TestEmbeddedRegistrationSealed(t *testing.T) {
	cfg := testConfig(t)
	s := open(t, cfg)
	reg := func(provider string) *store.Registration {
		return &store.Registration{
			Provider: provider, Resource: "https://mcp.example.com/" + provider, Issuer: "https://auth.example.com",
			AuthorizationEndpoint: "https://auth.example.com/authorize", TokenEndpoint: "https://auth.example.com/token",
			ClientID: "client-of-" + provider, ClientSecret: "CANARY-CLIENT-SECRET-" + provider,
			AuthMethod: store.AuthMethodBasic, Dynamic: true,
		}
	}
	if _, err := s.PutRegistration(t.Context(), reg("notes"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutRegistration(t.Context(), reg("tickets"), 0); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("client-of-notes")) {
		t.Fatalf("database file does not contain the client id; wrong file?")
	}
	if bytes.Contains(raw, []byte("CANARY")) {
		t.Error("database file contains a client secret; it must be sealed")
	}

	notes := rawRecord(t, cfg.Path, "registrations", "notes")
	tickets := rawRecord(t, cfg.Path, "registrations", "tickets")
	tickets["client_secret"] = notes["client_secret"]
	writeRaw(t, cfg.Path, "registrations", "tickets", tickets)
	_, _, err = s.Registration(t.Context(), "tickets")
	if !errors.Is(err, store.ErrDecrypt) {
		t.Fatalf("Registration with a secret moved from another server: %v; want ErrDecrypt", err)
	}
	if strings.Contains(err.Error(), "CANARY") {
		t.Errorf("error %q contains the secret", err)
	}
	if got, _, err := s.Registration(t.Context(), "notes"); err != nil || got.ClientSecret != "CANARY-CLIENT-SECRET-notes" {
		t.Errorf("Registration(notes) = %v, %v; want its own secret", got, err)
	}
}

func TestEmbeddedActivityConformance(t *testing.T) {
	storetest.RunActivity(t, func(t *testing.T) store.Store {
		return open(t, testConfig(t))
	})
}

// grant returns a grant with canary tokens.
func grant(provider, user, marker string) *store.Grant {
	return &store.Grant{
		Provider:        provider,
		User:            user,
		AccessToken:     "CANARY-ACCESS-" + marker,
		RefreshToken:    "CANARY-REFRESH-" + marker,
		TokenType:       "Bearer",
		Expiry:          time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		Scopes:          []string{"read"},
		Status:          store.StatusActive,
		ConnectedAt:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		ProviderAccount: "acct-" + marker,
		Generation:      1,
	}
}

func mustPut(t *testing.T, s store.Store, g *store.Grant, cas store.Version) store.Version {
	t.Helper()
	v, err := s.Put(t.Context(), g, cas)
	if err != nil {
		t.Fatalf("Put(%s/%s): %v", g.Provider, g.User, err)
	}
	return v
}

func TestEmbeddedTokensNotInFile(t *testing.T) {
	cfg := testConfig(t)
	s := open(t, cfg)
	mustPut(t, s, grant("slack", "alice", "7f3a9c"), 0)
	g := grant("github", "bob", "e41d02")
	v := mustPut(t, s, g, 0)
	g.AccessToken, g.RefreshToken = "CANARY-ACCESS-rotated", "CANARY-REFRESH-rotated"
	mustPut(t, s, g, v)

	raw, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	// The file is the right one: the unsealed metadata is in it.
	if !bytes.Contains(raw, []byte("acct-7f3a9c")) {
		t.Fatalf("database file does not contain the provider account; wrong file?")
	}
	for _, canary := range []string{"CANARY", "ACCESS-7f3a9c", "REFRESH-e41d02", "rotated"} {
		if bytes.Contains(raw, []byte(canary)) {
			t.Errorf("database file contains %q; tokens must be sealed", canary)
		}
	}
	key, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, key) {
		t.Errorf("database file contains the key")
	}
}

// rawRecord reads and decodes the stored record of key from the database
// file directly, as an attacker with the file (but not the key) could.
func rawRecord(t *testing.T, path, bucket, key string) map[string]any {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rec map[string]any
	err = db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucket)).Get([]byte(key))
		if v == nil {
			return fmt.Errorf("no %s record %s", bucket, key)
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// writeRaw stores rec under key, bypassing the store.
func writeRaw(t *testing.T, path, bucket, key string, rec map[string]any) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(key), v) }); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedSealedValueBoundToEntry(t *testing.T) {
	tests := []struct {
		name string
		// edit changes bob's record using alice's record.
		edit func(alice, bob map[string]any)
	}{
		{"access token moved to another user", func(a, b map[string]any) { b["access_token"] = a["access_token"] }},
		{"refresh token moved to another user", func(a, b map[string]any) { b["refresh_token"] = a["refresh_token"] }},
		{"refresh token moved into access token", func(a, b map[string]any) { b["access_token"] = b["refresh_token"] }},
		{"record renamed to another user", func(a, b map[string]any) {
			for k, v := range a {
				b[k] = v
			}
			b["user"] = "bob"
		}},
		{"tampered ciphertext", func(a, b map[string]any) {
			// Another valid base64 character in the middle: the text
			// still decodes, to a ciphertext with one byte changed.
			s := []byte(b["access_token"].(string))
			if s[len(s)/2] == 'A' {
				s[len(s)/2] = 'B'
			} else {
				s[len(s)/2] = 'A'
			}
			b["access_token"] = string(s)
		}},
		{"truncated ciphertext", func(a, b map[string]any) { b["refresh_token"] = "AQID" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			s := open(t, cfg)
			alice := grant("slack", "alice", "a")
			mustPut(t, s, alice, 0)
			mustPut(t, s, grant("slack", "bob", "b"), 0)

			ra := rawRecord(t, cfg.Path, "grants", "slack/alice")
			rb := rawRecord(t, cfg.Path, "grants", "slack/bob")
			tt.edit(ra, rb)
			writeRaw(t, cfg.Path, "grants", "slack/bob", rb)
			before := rawRecord(t, cfg.Path, "grants", "slack/bob")

			_, _, err := s.Get(t.Context(), "slack", "bob")
			if !errors.Is(err, store.ErrDecrypt) {
				t.Fatalf("Get of edited entry: err = %v; want ErrDecrypt", err)
			}
			if bytes.Contains([]byte(err.Error()), []byte("CANARY")) {
				t.Errorf("error %q contains a token", err)
			}
			// The entry is left as it was, and still listed.
			if diff := cmp.Diff(before, rawRecord(t, cfg.Path, "grants", "slack/bob")); diff != "" {
				t.Errorf("failed Get changed the entry (-before +after):\n%s", diff)
			}
			list, err := s.List(t.Context(), "slack")
			if err != nil || len(list) != 2 {
				t.Fatalf("List = %d grants, %v; want 2, nil", len(list), err)
			}
			// Alice is unaffected.
			got, _, err := s.Get(t.Context(), "slack", "alice")
			if err != nil {
				t.Fatalf("Get(alice): %v", err)
			}
			if diff := cmp.Diff(alice, got); diff != "" {
				t.Errorf("alice's grant changed (-want +got):\n%s", diff)
			}
			// Overwriting with the stored version heals the entry.
			healed := grant("slack", "bob", "healed")
			nv := mustPut(t, s, healed, store.Version(before["version"].(float64)))
			got, v, err := s.Get(t.Context(), "slack", "bob")
			if err != nil || v != nv || got.AccessToken != healed.AccessToken {
				t.Errorf("Get after heal = (%v, %d, %v); want the healed grant at %d", got, v, err, nv)
			}
		})
	}
}

func TestEmbeddedWrongKeyFile(t *testing.T) {
	cfg := testConfig(t)
	s := open(t, cfg)
	g := grant("slack", "alice", "a")
	v := mustPut(t, s, g, 0)

	other := cfg
	other.KeyFile = filepath.Join(t.TempDir(), "other.key")
	if _, err := store.OpenEmbedded(other); !errors.Is(err, store.ErrDecrypt) {
		t.Fatalf("OpenEmbedded with another key: err = %v; want ErrDecrypt", err)
	}
	// A key file of the right size but different content.
	if err := os.WriteFile(other.KeyFile, bytes.Repeat([]byte{7}, store.KeySize), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenEmbedded(other); !errors.Is(err, store.ErrDecrypt) {
		t.Fatalf("OpenEmbedded with a foreign key: err = %v; want ErrDecrypt", err)
	}
	// The database is intact for the right key.
	got, gotV, err := s.Get(t.Context(), "slack", "alice")
	if err != nil || gotV != v {
		t.Fatalf("Get after refused open = (%d, %v); want (%d, nil)", gotV, err, v)
	}
	if diff := cmp.Diff(g, got); diff != "" {
		t.Errorf("grant changed (-want +got):\n%s", diff)
	}
}

func TestEmbeddedKeyFile(t *testing.T) {
	t.Run("created when missing", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.KeyFile = filepath.Join(t.TempDir(), "sub", "dir", "k")
		open(t, cfg)
		fi, err := os.Stat(cfg.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != store.KeySize {
			t.Errorf("key file size = %d; want %d", fi.Size(), store.KeySize)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("key file mode = %04o; want 0600", perm)
		}
		key, _ := os.ReadFile(cfg.KeyFile)
		if bytes.Equal(key, make([]byte, store.KeySize)) {
			t.Errorf("key file is all zeros")
		}
		// Reopening keeps the key.
		open(t, cfg)
		again, _ := os.ReadFile(cfg.KeyFile)
		if !bytes.Equal(key, again) {
			t.Errorf("reopening changed the key file")
		}
		dbInfo, err := os.Stat(cfg.Path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := dbInfo.Mode().Perm(); perm != 0o600 {
			t.Errorf("database file mode = %04o; want 0600", perm)
		}
	})

	refused := []struct {
		name    string
		content []byte
		mode    os.FileMode
	}{
		{"empty", nil, 0o600},
		{"short", bytes.Repeat([]byte{1}, 31), 0o600},
		{"long", bytes.Repeat([]byte{1}, 33), 0o600},
		{"hex encoded", bytes.Repeat([]byte("ab"), 32), 0o600},
		{"world readable", bytes.Repeat([]byte{1}, 32), 0o604},
		{"group readable", bytes.Repeat([]byte{1}, 32), 0o640},
		{"group writable", bytes.Repeat([]byte{1}, 32), 0o620},
	}
	for _, tt := range refused {
		t.Run("refused "+tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			if err := os.WriteFile(cfg.KeyFile, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(cfg.KeyFile, tt.mode); err != nil {
				t.Fatal(err)
			}
			s, err := store.OpenEmbedded(cfg)
			if err == nil {
				_ = s.Close()
				t.Fatalf("OpenEmbedded with %s key file succeeded; want an error", tt.name)
			}
			if bytes.Contains([]byte(err.Error()), tt.content) && len(tt.content) > 0 {
				t.Errorf("error %q contains the key material", err)
			}
			got, _ := os.ReadFile(cfg.KeyFile)
			if !bytes.Equal(got, tt.content) {
				t.Errorf("refused key file was modified")
			}
		})
	}

	t.Run("directory refused", func(t *testing.T) {
		cfg := testConfig(t)
		if err := os.Mkdir(cfg.KeyFile, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := store.OpenEmbedded(cfg); err == nil {
			t.Fatalf("OpenEmbedded with a directory as key file succeeded; want an error")
		}
	})

	t.Run("read-only 0400 accepted", func(t *testing.T) {
		cfg := testConfig(t)
		if err := os.WriteFile(cfg.KeyFile, bytes.Repeat([]byte{9}, 32), 0o400); err != nil {
			t.Fatal(err)
		}
		s := open(t, cfg)
		mustPut(t, s, grant("slack", "alice", "a"), 0)
	})

	t.Run("concurrent creation agrees on one key", func(t *testing.T) {
		cfg := testConfig(t)
		const n = 8
		stores := make([]*store.Embedded, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				stores[i], errs[i] = store.OpenEmbedded(cfg)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("OpenEmbedded %d: %v", i, err)
			}
			t.Cleanup(func() { _ = stores[i].Close() })
		}
		g := grant("slack", "alice", "a")
		mustPut(t, stores[0], g, 0)
		for i, s := range stores {
			got, _, err := s.Get(t.Context(), "slack", "alice")
			if err != nil {
				t.Fatalf("store %d Get: %v", i, err)
			}
			if got.AccessToken != g.AccessToken {
				t.Errorf("store %d read another token", i)
			}
		}
		entries, _ := os.ReadDir(filepath.Dir(cfg.KeyFile))
		for _, e := range entries {
			if e.Name() != "grants.key" && e.Name() != "grants.db" {
				t.Errorf("leftover file %s after key creation", e.Name())
			}
		}
	})
}

func TestEmbeddedTwoInstancesInterleave(t *testing.T) {
	cfg := testConfig(t)
	a, b := open(t, cfg), open(t, cfg)
	base := grant("slack", "alice", "base")
	base.Generation = 0
	mustPut(t, a, base, 0)

	const perInstance, increments = 5, 4
	var wg sync.WaitGroup
	errs := make(chan error, 2*perInstance)
	for _, s := range []*store.Embedded{a, b} {
		for w := range perInstance {
			wg.Go(func() {
				// Each writer also owns a grant of its own.
				own := grant("slack", fmt.Sprintf("w%p-%d", s, w), "own")
				if _, err := s.Put(t.Context(), own, 0); err != nil {
					errs <- err
					return
				}
				for done := 0; done < increments; {
					g, v, err := s.Get(t.Context(), "slack", "alice")
					if err != nil {
						errs <- err
						return
					}
					g.Generation++
					if _, err := s.Put(t.Context(), g, v); errors.Is(err, store.ErrConflict) {
						continue
					} else if err != nil {
						errs <- err
						return
					}
					done++
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("writer: %v", err)
	}
	for name, s := range map[string]*store.Embedded{"a": a, "b": b} {
		g, _, err := s.Get(t.Context(), "slack", "alice")
		if err != nil {
			t.Fatalf("%s Get: %v", name, err)
		}
		if want := int64(2 * perInstance * increments); g.Generation != want {
			t.Errorf("instance %s sees generation %d; want %d", name, g.Generation, want)
		}
		list, err := s.List(t.Context(), "slack")
		if err != nil {
			t.Fatalf("%s List: %v", name, err)
		}
		if len(list) != 1+2*perInstance {
			t.Errorf("instance %s lists %d grants; want %d", name, len(list), 1+2*perInstance)
		}
	}
	// A lease taken through one instance is held for the other.
	l, err := a.AcquireLease(t.Context(), "slack", "alice", store.LeaseRequest{Holder: "a", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AcquireLease(t.Context(), "slack", "alice", store.LeaseRequest{Holder: "b", TTL: time.Minute}); !errors.Is(err, store.ErrLeaseHeld) {
		t.Errorf("AcquireLease through the other instance: err = %v; want ErrLeaseHeld", err)
	}
	if err := b.ReleaseLease(t.Context(), l); err != nil {
		t.Errorf("ReleaseLease through the other instance: %v", err)
	}
}

// Environment of the child processes of TestEmbeddedTwoProcesses.
const (
	envChildDB  = "ONBEHALF_STORETEST_CHILD_DB"
	envChildKey = "ONBEHALF_STORETEST_CHILD_KEY"
	envChildN   = "ONBEHALF_STORETEST_CHILD_N"
	envChildID  = "ONBEHALF_STORETEST_CHILD_ID"
)

// TestEmbeddedTwoProcesses runs this test binary twice more as child
// processes that increment one grant's generation concurrently through the
// same database file, then checks that no update was lost.
func TestEmbeddedTwoProcesses(t *testing.T) {
	if path := os.Getenv(envChildDB); path != "" {
		childIncrement(t, path)
		return
	}
	cfg := testConfig(t)
	s := open(t, cfg)
	base := grant("slack", "alice", "base")
	base.Generation = 0
	mustPut(t, s, base, 0)

	const children, increments = 2, 15
	cmds := make([]*exec.Cmd, children)
	outs := make([]bytes.Buffer, children)
	for i := range children {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestEmbeddedTwoProcesses$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			envChildDB+"="+cfg.Path, envChildKey+"="+cfg.KeyFile,
			envChildN+"="+strconv.Itoa(increments), envChildID+"="+strconv.Itoa(i))
		cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("child %d: %v\n%s", i, err, outs[i].String())
		}
	}
	g, _, err := s.Get(t.Context(), "slack", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(children * increments); g.Generation != want {
		t.Errorf("generation after %d increments from %d processes = %d; want %d", children*increments, children, g.Generation, want)
	}
	for i := range children {
		if _, _, err := s.Get(t.Context(), "slack", "child"+strconv.Itoa(i)); err != nil {
			t.Errorf("grant written by child %d: %v", i, err)
		}
	}
}

// childIncrement is the body of a TestEmbeddedTwoProcesses child process.
func childIncrement(t *testing.T, path string) {
	cfg := store.DefaultEmbeddedConfig()
	cfg.Path, cfg.KeyFile = path, os.Getenv(envChildKey)
	cfg.LockTimeout = 10 * time.Second
	n, err := strconv.Atoi(os.Getenv(envChildN))
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, cfg)
	mustPut(t, s, grant("slack", "child"+os.Getenv(envChildID), "c"), 0)
	for done := 0; done < n; {
		g, v, err := s.Get(t.Context(), "slack", "alice")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		g.Generation++
		if _, err := s.Put(t.Context(), g, v); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			t.Fatalf("Put: %v", err)
		}
		done++
	}
}

func TestEmbeddedLockTimeout(t *testing.T) {
	cfg := testConfig(t)
	cfg.LockTimeout = 300 * time.Millisecond
	s := open(t, cfg)
	mustPut(t, s, grant("slack", "alice", "a"), 0)

	// Another "process" holds the database open read-write: an exclusive
	// file lock for as long as it stays open.
	holder, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()

	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Get", func(ctx context.Context) error { _, _, err := s.Get(ctx, "slack", "alice"); return err }},
		{"Put", func(ctx context.Context) error { _, err := s.Put(ctx, grant("slack", "bob", "b"), 0); return err }},
		{"List", func(ctx context.Context) error { _, err := s.List(ctx, ""); return err }},
		{"AcquireLease", func(ctx context.Context) error {
			_, err := s.AcquireLease(ctx, "slack", "alice", store.LeaseRequest{Holder: "h", TTL: time.Second})
			return err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			err := c.call(t.Context())
			took := time.Since(start)
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("err = %v; want ErrUnavailable", err)
			}
			if took < 200*time.Millisecond || took > 3*time.Second {
				t.Errorf("gave up after %s; want about lock_timeout (%s)", took, cfg.LockTimeout)
			}
			// A shorter context deadline wins over lock_timeout.
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Millisecond)
			defer cancel()
			start = time.Now()
			err = c.call(ctx)
			if err == nil {
				t.Errorf("call with short deadline succeeded while the file is locked")
			}
			if took := time.Since(start); took > 250*time.Millisecond {
				t.Errorf("call with a 60ms deadline took %s", took)
			}
		})
	}
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(t.Context(), "slack", "alice"); err != nil {
		t.Errorf("Get after the lock was released: %v", err)
	}
}

func TestEmbeddedUnavailable(t *testing.T) {
	t.Run("database removed", func(t *testing.T) {
		cfg := testConfig(t)
		s := open(t, cfg)
		mustPut(t, s, grant("slack", "alice", "a"), 0)
		if err := os.Remove(cfg.Path); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Get(t.Context(), "slack", "alice"); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Get: err = %v; want ErrUnavailable", err)
		}
		if _, err := s.Put(t.Context(), grant("slack", "bob", "b"), 0); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Put: err = %v; want ErrUnavailable", err)
		}
		if _, err := os.Stat(cfg.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a write recreated the removed database (stat err = %v)", err)
		}
	})
	t.Run("directory is a file", func(t *testing.T) {
		cfg := testConfig(t)
		blocker := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(blocker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Path = filepath.Join(blocker, "grants.db")
		if _, err := store.OpenEmbedded(cfg); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("OpenEmbedded: err = %v; want ErrUnavailable", err)
		}
	})
	t.Run("corrupt database", func(t *testing.T) {
		cfg := testConfig(t)
		if err := os.WriteFile(cfg.Path, bytes.Repeat([]byte("not a bolt file "), 1024), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := store.OpenEmbedded(cfg); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("OpenEmbedded: err = %v; want ErrUnavailable", err)
		}
	})
	t.Run("invalid config", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.LockTimeout = 0
		if _, err := store.OpenEmbedded(cfg); err == nil {
			t.Errorf("OpenEmbedded with invalid config succeeded")
		}
	})
}

func TestEmbeddedVersionsNeverReused(t *testing.T) {
	s := open(t, testConfig(t))
	g := grant("slack", "alice", "a")
	v1 := mustPut(t, s, g, 0)
	v2 := mustPut(t, s, g, v1)
	if err := s.Delete(t.Context(), "slack", "alice"); err != nil {
		t.Fatal(err)
	}
	v3 := mustPut(t, s, g, 0)
	if v3 <= v2 {
		t.Errorf("version after delete and recreate = %d; want greater than %d (no reuse)", v3, v2)
	}
	if _, err := s.Put(t.Context(), g, v1); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Put with pre-delete version: err = %v; want ErrConflict", err)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(entries)
}

// TestEmbeddedNoFDLeak checks that the per-operation open and close returns
// every file descriptor, on success and error paths alike.
func TestEmbeddedNoFDLeak(t *testing.T) {
	cfg := testConfig(t)
	s := open(t, cfg)
	v := mustPut(t, s, grant("slack", "alice", "a"), 0)
	before := openFDs(t)
	ctx := t.Context()
	for range 50 {
		g, cur, err := s.Get(ctx, "slack", "alice")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, g, v-1); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("stale Put: %v", err)
		}
		if v, err = s.Put(ctx, g, cur); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Get(ctx, "slack", "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "slack", "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		if _, err := s.List(ctx, ""); err != nil {
			t.Fatal(err)
		}
		l, err := s.AcquireLease(ctx, "slack", "alice", store.LeaseRequest{Holder: "h", TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AcquireLease(ctx, "slack", "alice", store.LeaseRequest{Holder: "h", TTL: time.Minute}); !errors.Is(err, store.ErrLeaseHeld) {
			t.Fatal(err)
		}
		if err := s.ReleaseLease(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("open file descriptors: %d after 50 rounds; want %d", after, before)
	}
}

func TestEmbeddedUnknownRecordFormat(t *testing.T) {
	cfg := testConfig(t)
	s := open(t, cfg)
	v := mustPut(t, s, grant("slack", "alice", "a"), 0)
	rec := rawRecord(t, cfg.Path, "grants", "slack/alice")
	rec["format"] = float64(2)
	writeRaw(t, cfg.Path, "grants", "slack/alice", rec)
	if _, _, err := s.Get(t.Context(), "slack", "alice"); err == nil || !strings.Contains(err.Error(), "unsupported format 2") {
		t.Errorf("Get of a format-2 record: err = %v; want unsupported format", err)
	}
	if _, err := s.Put(t.Context(), grant("slack", "alice", "b"), v); err == nil {
		t.Errorf("Put over a format-2 record succeeded; want an error (never overwrite what this version cannot read)")
	}
	if diff := cmp.Diff(rec["format"], rawRecord(t, cfg.Path, "grants", "slack/alice")["format"]); diff != "" {
		t.Errorf("record changed:\n%s", diff)
	}
}
