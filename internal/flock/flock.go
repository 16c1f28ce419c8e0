// Package flock takes the advisory file locks that keep two writers off one
// file: the audit file and the refresh journal each have one writer.
package flock

import "errors"

// ErrLocked is returned by TryLock when the file is locked already.
var ErrLocked = errors.New("file locked by another writer")
