package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var fingerprintRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

func TestFingerprinterToken(t *testing.T) {
	f1, err := NewFingerprinter(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := NewFingerprinter(bytes.Repeat([]byte("j"), 32))
	if err != nil {
		t.Fatal(err)
	}
	a, b := f1.Token(canary), f1.Token(canary+"x")
	if !fingerprintRE.MatchString(a) {
		t.Errorf("got %q; want 16 lower-case hex characters", a)
	}
	if a != f1.Token(canary) {
		t.Error("the same token gave two fingerprints")
	}
	if a == b {
		t.Error("two tokens gave the same fingerprint")
	}
	if a == f2.Token(canary) {
		t.Error("two keys gave the same fingerprint")
	}
	if got := f1.Token(""); got != "" {
		t.Errorf("empty token: got %q; want empty", got)
	}
	// Known answer, computed independently (Python hmac):
	// HMAC-SHA256(key "k"*32, "hello") begins b77dedb81d7deb35.
	if got, want := f1.Token("hello"), "b77dedb81d7deb35"; got != want {
		t.Errorf("Token(hello): got %s; want %s", got, want)
	}
}

func TestNewFingerprinterShortKey(t *testing.T) {
	if _, err := NewFingerprinter([]byte("short")); !errors.Is(err, ErrFingerprintKey) {
		t.Errorf("got %v; want ErrFingerprintKey", err)
	}
}

func TestLoadFingerprinterCreatesKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "fingerprint.key")
	f1, err := LoadFingerprinter(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("got mode %v; want 0600", fi.Mode().Perm())
	}
	key := bytes.TrimSpace(readFile(t, path))
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).Match(key) {
		t.Errorf("got key file of %d bytes; want 64 hex characters", len(key))
	}
	f2, err := LoadFingerprinter(path)
	if err != nil {
		t.Fatal(err)
	}
	if f1.Token(canary) != f2.Token(canary) {
		t.Error("reloading the key file changed fingerprints")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("got %d files in the key directory; want only the key (temporary file removed)", len(entries))
	}
}

func TestLoadFingerprinterConcurrentCreation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fingerprint.key")
	const n = 8
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			f, err := LoadFingerprinter(path)
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = f.Token(canary)
		})
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if got[i] != got[0] {
			t.Fatalf("starters disagree on the key: %v", got)
		}
	}
}

func TestLoadFingerprinterBadFile(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.key")
	writeFile(t, short, []byte("  "+canaryCore+"  \n"))
	_, err := LoadFingerprinter(short)
	if !errors.Is(err, ErrFingerprintKey) {
		t.Fatalf("got %v; want ErrFingerprintKey", err)
	}
	if strings.Contains(err.Error(), canaryCore) {
		t.Errorf("error %q contains the key", err)
	}
	big := filepath.Join(dir, "big.key")
	writeFile(t, big, bytes.Repeat([]byte("a"), maxFingerprintKeyBytes+1))
	if _, err := LoadFingerprinter(big); !errors.Is(err, ErrFingerprintKey) {
		t.Errorf("got %v; want ErrFingerprintKey", err)
	}
	if _, err := LoadFingerprinter(dir); !errors.Is(err, ErrFingerprintKey) {
		t.Errorf("directory: got %v; want ErrFingerprintKey", err)
	}
}

func TestAuditorUsesFingerprintKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fp.key")
	key := bytes.Repeat([]byte("z"), 40)
	writeFile(t, path, append(key, '\n'))
	cfg := stdoutConfig()
	cfg.FingerprintKeyFile = path
	a := newAuditor(t, cfg, Options{Stdout: &bytes.Buffer{}})
	want, err := NewFingerprinter(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Fingerprinter().Token(canary); got != want.Token(canary) {
		t.Errorf("got %s; want the key file's fingerprint %s", got, want.Token(canary))
	}
	// Without a key file each auditor has its own random key.
	b := newAuditor(t, stdoutConfig(), Options{Stdout: &bytes.Buffer{}})
	c := newAuditor(t, stdoutConfig(), Options{Stdout: &bytes.Buffer{}})
	if b.Fingerprinter().Token(canary) == c.Fingerprinter().Token(canary) {
		t.Error("two auditors without a key file share fingerprints")
	}
}

func TestFingerprinterConcurrent(t *testing.T) {
	f, err := NewFingerprinter(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	want := f.Token("hello")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if got := f.Token("hello"); got != want {
					t.Errorf("got %s; want %s", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
