// Package keyfile installs secret key files the way several onbehalf
// processes starting together need: written completely to a temporary
// file (mode 0600) and hard-linked into place, so no reader ever sees a
// half-written key and, when two processes race on a fresh install, the
// first key wins and both use it. Reading and validating a key stays with
// each caller: the grant store, the audit fingerprinter and the connect
// server's session sealer each want their own format and checks.
package keyfile

import (
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
