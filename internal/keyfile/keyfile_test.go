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

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	key, err := LoadOrCreate(path, 32, false)
	if err != nil || len(key) != 32 {
		t.Fatalf("LoadOrCreate: %v (%d bytes)", err, len(key))
	}
	again, err := LoadOrCreate(path, 32, false)
	if err != nil || !bytes.Equal(key, again) {
		t.Fatalf("second LoadOrCreate: %v, same key %v", err, bytes.Equal(key, again))
	}
	for _, tt := range []struct {
		mode      os.FileMode
		groupRead bool
		ok        bool
	}{
		{0o600, false, true}, {0o400, false, true}, {0o440, false, false}, {0o440, true, true},
		{0o460, true, false}, {0o604, true, false}, {0o640, true, true},
	} {
		os.Chmod(path, tt.mode)
		_, err := Load(path, 32, tt.groupRead)
		if (err == nil) != tt.ok {
			t.Errorf("mode %04o, group read %v: %v; want ok=%v", tt.mode, tt.groupRead, err, tt.ok)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), key) {
			t.Error("the error contains the key")
		}
	}
	os.Chmod(path, 0o600)
	if _, err := Load(path, 16, false); err == nil {
		t.Error("a key of the wrong size was accepted")
	}
	if _, err := Load(dir, 32, false); err == nil {
		t.Error("a directory was accepted as a key file")
	}
}
