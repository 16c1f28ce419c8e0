// Package keyfile installs secret key files the way several onbehalf
// processes starting together need: written completely to a temporary
// file (mode 0600) and hard-linked into place, so no reader ever sees a
// half-written key and, when two processes race on a fresh install, the
// first key wins and both use it. Reading and validating a key stays with
// each caller: the grant store, the audit fingerprinter and the connect
// server's session sealer each want their own format and checks.
package keyfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Install writes data to path unless path already exists, in which case
// the existing file is kept (another process installed it first) and
// Install returns nil. The directory is created (mode 0700) when missing.
// Errors name the path, never the data.
func Install(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".onbehalf-key-*")
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	// CreateTemp already uses mode 0600; Chmod guards against odd umasks.
	if err := errors.Join(tmp.Chmod(0o600), werr, tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("install key file %s: %w", path, err)
	}
	return nil
}

// ErrIO marks failures to open, inspect or read a key file (as opposed to
// a file that is there but unfit), so callers can report the first kind
// as their store or service being unavailable.
var ErrIO = errors.New("key file unreadable")

// Load reads a raw key of exactly size bytes from path. It refuses a file
// that is not a regular file, that others may access or the group may
// write, and — unless allowGroupRead — that the group may read (a
// Kubernetes Secret mounted with an fsGroup is 0440, owned by the pod's own
// group). A missing file gives an error matching fs.ErrNotExist. Errors
// name the path, never the key.
func Load(path string, size int, allowGroupRead bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrIO, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIO, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s: not a regular file", path)
	}
	forbidden, want := fs.FileMode(0o077), "0600 or 0400"
	if allowGroupRead {
		forbidden, want = 0o037, "0600, 0400 or 0440"
	}
	if perm := fi.Mode().Perm(); perm&forbidden != 0 {
		return nil, fmt.Errorf("key file %s: mode %04o gives others more access than a key may have; want %s", path, perm, want)
	}
	if fi.Size() != int64(size) {
		return nil, fmt.Errorf("key file %s: %d bytes; want exactly %d (a raw key)", path, fi.Size(), size)
	}
	key := make([]byte, size)
	if n, err := f.ReadAt(key, 0); n != size {
		return nil, fmt.Errorf("%w: read %s: %w", ErrIO, path, err)
	}
	return key, nil
}

// LoadOrCreate is Load, creating the file with size random bytes first
// when it does not exist (see Install: concurrent starters agree on one).
func LoadOrCreate(path string, size int, allowGroupRead bool) ([]byte, error) {
	key, err := Load(path, size, allowGroupRead)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	fresh := make([]byte, size)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	defer clear(fresh)
	if err := Install(path, fresh); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIO, err)
	}
	return Load(path, size, allowGroupRead)
}
