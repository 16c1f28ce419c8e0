package keyfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestInstall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "key")
	if err := Install(path, []byte("first")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if err := Install(path, []byte("second")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "first" {
		t.Errorf("content %q; want the first key kept", b)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".onbehalf-key-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestInstallRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Install(path, []byte(fmt.Sprintf("key-%02d", i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 6 || !bytes.HasPrefix(b, []byte("key-")) {
		t.Errorf("after the race: %q %v; want one complete key", b, err)
	}
}
