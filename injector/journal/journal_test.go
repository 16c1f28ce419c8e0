package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// open opens a journal in a fresh directory with a fresh key file.
func open(t *testing.T) (*Journal, string) {
	t.Helper()
	base := t.TempDir()
	j, err := Open(filepath.Join(base, "journal"), filepath.Join(base, "journal.key"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j, base
}

// entry returns an entry for user at generation gen with canary tokens.
func entry(user string, gen int64) *Entry {
	return &Entry{
		Grant: &store.Grant{
			Provider: "slack", User: user,
			AccessToken:  fmt.Sprintf("CANARY-AT-%s-%d", user, gen),
			RefreshToken: fmt.Sprintf("CANARY-RT-%s-%d", user, gen),
			TokenType:    "Bearer", Expiry: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
			Scopes: []string{"chat:write"}, Status: store.StatusActive,
			ConnectedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Generation: gen,
		},
		Base:        store.Version(40 + gen),
		Spent:       fmt.Sprintf("CANARY-SPENT-%s-%d", user, gen),
		LeaseID:     "lease-id",
		LeaseHolder: "pod-1/42/abc",
		Written:     time.Date(2026, 6, 18, 6, 0, 0, 0, time.UTC),
	}
}

func TestWriteLoadRemove(t *testing.T) {
	j, _ := open(t)
	entries := []*Entry{entry("bob", 3), entry("alice", 8), entry("alice", 7), entry("alice@example.com", 1)}
	for _, e := range entries {
		if err := j.Write(e); err != nil {
			t.Fatalf("Write(%s): %v", e, err)
		}
	}
	got, err := j.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []*Entry{entries[2], entries[1], entries[3], entries[0]} // by user, then generation
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}

	// Rewriting a generation replaces its entry.
	again := entry("bob", 3)
	again.Grant.AccessToken = "CANARY-AT-bob-3-rewritten"
	if err := j.Write(again); err != nil {
		t.Fatal(err)
	}
	if err := j.Remove("slack", "alice", 7); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := j.Remove("slack", "carol", 100); err != nil {
		t.Errorf("Remove of a grant without entries: %v", err)
	}
	got, err = j.Load()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*Entry{entries[1], entries[3], again}, got); diff != "" {
		t.Errorf("Load after Remove(alice, 7) (-want +got):\n%s", diff)
	}
	if err := j.Remove("slack", "alice", 8); err != nil {
		t.Fatal(err)
	}
	if err := j.Remove("slack", "alice@example.com", 1); err != nil {
		t.Fatal(err)
	}
	if err := j.Remove("slack", "bob", 3); err != nil {
		t.Fatal(err)
	}
	if got, err := j.Load(); err != nil || len(got) != 0 {
		t.Errorf("Load after removing everything = %v, %v; want nothing", got, err)
	}
	if des, _ := os.ReadDir(j.Dir()); len(des) != 1 {
		t.Errorf("directory holds %d files after removing everything; want only the lock", len(des))
	}
}

// TestReopenWithKeyFile: a journal reopened with the same key file (a
// restarted sidecar) reads what the first one wrote; another key does not.
func TestReopenWithKeyFile(t *testing.T) {
	j, base := open(t)
	e := entry("alice", 2)
	if err := j.Write(e); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(base, "journal"), filepath.Join(base, "journal.key")); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open while the first is open: %v; want ErrInUse", err)
	}
	j.Close()
	j2, err := Open(filepath.Join(base, "journal"), filepath.Join(base, "journal.key"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := j2.Load()
	if err != nil || len(got) != 1 || !cmp.Equal(got[0], e) {
		t.Errorf("Load after reopening = %v, %v; want the entry", got, err)
	}
	j2.Close()
	other, err := Open(filepath.Join(base, "journal"), filepath.Join(base, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	got, err = other.Load()
	if !errors.Is(err, ErrCorrupt) || len(got) != 0 {
		t.Errorf("Load with another key = %v, %v; want ErrCorrupt and nothing", got, err)
	}
	// The unreadable entry stays for an operator (beside the lock).
	if des, _ := os.ReadDir(j.Dir()); len(des) != 2 {
		t.Errorf("directory holds %d files; want the unreadable entry kept", len(des))
	}
}

// TestTamperedEntries: an entry edited, truncated, renamed to another
// generation or moved to another grant's name does not load; the others
// do.
func TestTamperedEntries(t *testing.T) {
	tamper := map[string]func(t *testing.T, j *Journal, name string){
		"flipped ciphertext byte": func(t *testing.T, j *Journal, name string) {
			editFile(t, j, name, func(f *file) { f.Sealed[len(f.Sealed)-1] ^= 1 })
		},
		"truncated": func(t *testing.T, j *Journal, name string) {
			editFile(t, j, name, func(f *file) { f.Sealed = f.Sealed[:10] })
		},
		"header claims another user": func(t *testing.T, j *Journal, name string) {
			editFile(t, j, name, func(f *file) { f.User = "mallory" })
			// Renamed to match, so only the seal can tell.
			if err := os.Rename(filepath.Join(j.dir, name), filepath.Join(j.dir, entryName("slack", "mallory", 5))); err != nil {
				t.Fatal(err)
			}
		},
		"header claims another generation": func(t *testing.T, j *Journal, name string) {
			editFile(t, j, name, func(f *file) { f.Generation = 6 })
			if err := os.Rename(filepath.Join(j.dir, name), filepath.Join(j.dir, entryName("slack", "alice", 6))); err != nil {
				t.Fatal(err)
			}
		},
		"file renamed only": func(t *testing.T, j *Journal, name string) {
			if err := os.Rename(filepath.Join(j.dir, name), filepath.Join(j.dir, entryName("slack", "mallory", 5))); err != nil {
				t.Fatal(err)
			}
		},
		"not JSON": func(t *testing.T, j *Journal, name string) {
			if err := os.WriteFile(filepath.Join(j.dir, name), []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"unknown format": func(t *testing.T, j *Journal, name string) {
			editFile(t, j, name, func(f *file) { f.Format = 99 })
		},
	}
	for what, fn := range tamper {
		t.Run(what, func(t *testing.T) {
			j, _ := open(t)
			good := entry("bob", 1)
			if err := j.Write(good); err != nil {
				t.Fatal(err)
			}
			if err := j.Write(entry("alice", 5)); err != nil {
				t.Fatal(err)
			}
			fn(t, j, entryName("slack", "alice", 5))
			got, err := j.Load()
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Load: err = %v; want ErrCorrupt", err)
			}
			if len(got) != 1 || !cmp.Equal(got[0], good) {
				t.Errorf("Load = %v; want only the untouched entry", got)
			}
			if err != nil && strings.Contains(err.Error(), "CANARY") {
				t.Errorf("error quotes a token: %v", err)
			}
		})
	}
}

// editFile rewrites an entry file's JSON with edit.
func editFile(t *testing.T, j *Journal, name string, edit func(*file)) {
	t.Helper()
	path := filepath.Join(j.dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	edit(&f)
	b, _ = json.Marshal(f)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestNoSecretsAtRest: the files hold no token in clear, are private, and no
// temporary file is left behind; a leftover temporary file of an
// interrupted write is removed by Load.
func TestNoSecretsAtRest(t *testing.T) {
	j, _ := open(t)
	e := entry("alice", 2)
	if err := j.Write(e); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(j.dir, tmpPrefix+"interrupted"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Load(); err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(j.dir)
	if err != nil {
		t.Fatal(err)
	}
	des = slices.DeleteFunc(des, func(de os.DirEntry) bool { return de.Name() == lockName })
	if len(des) != 1 || des[0].Name() != entryName("slack", "alice", 2) {
		t.Fatalf("directory = %v; want exactly the entry file (and the lock)", des)
	}
	info, _ := des[0].Info()
	if info.Mode().Perm() != 0o600 {
		t.Errorf("entry mode %o; want 0600", info.Mode().Perm())
	}
	if st, _ := os.Stat(j.dir); st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %o; want 0700", st.Mode().Perm())
	}
	b, _ := os.ReadFile(filepath.Join(j.dir, des[0].Name()))
	for _, secret := range []string{e.Grant.AccessToken, e.Grant.RefreshToken, e.Spent, "CANARY"} {
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("entry file holds %q in clear", secret)
		}
	}
	if s := e.String(); strings.Contains(s, "CANARY") {
		t.Errorf("Entry.String() = %q; holds a token", s)
	}
}

func TestOpenRefusesOpenDirectory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "journal")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, filepath.Join(base, "k")); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Errorf("Open of a 0755 directory: %v; want a refusal naming the mode", err)
	}
	if _, err := Open("", filepath.Join(base, "k")); err == nil {
		t.Errorf("Open without a directory succeeded")
	}
	if err := os.WriteFile(filepath.Join(base, "short.key"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(base, "j2"), filepath.Join(base, "short.key")); err == nil {
		t.Errorf("Open with a short key file succeeded")
	}
}

func TestWriteRefusesInvalidGrant(t *testing.T) {
	j, _ := open(t)
	e := entry("a/b", 1)
	if err := j.Write(e); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("Write with user a/b: err = %v; want ErrInvalidName", err)
	}
	if err := j.Write(&Entry{}); err == nil {
		t.Errorf("Write without a grant succeeded")
	}
}

func TestConcurrentWrites(t *testing.T) {
	j, _ := open(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for gen := range int64(5) {
				if err := j.Write(entry(fmt.Sprintf("user%d", i), gen+1)); err != nil {
					t.Error(err)
				}
			}
			if err := j.Remove("slack", fmt.Sprintf("user%d", i), 4); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := j.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 16 {
		t.Fatalf("Load = %d entries; want 16 (generation 5 of each user)", len(got))
	}
	for _, e := range got {
		if e.Grant.Generation != 5 {
			t.Errorf("%s left; want only generation 5", e)
		}
	}
}

// BenchmarkWrite measures one durable write and its removal, the cost the
// journal adds to every refresh (two fsyncs: the file and its directory).
func BenchmarkWrite(b *testing.B) {
	base := b.TempDir()
	j, err := Open(filepath.Join(base, "journal"), filepath.Join(base, "journal.key"))
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	e := entry("alice", 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := j.Write(e); err != nil {
			b.Fatal(err)
		}
		if err := j.Remove("slack", "alice", 1); err != nil {
			b.Fatal(err)
		}
	}
}
