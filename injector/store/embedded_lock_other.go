//go:build !unix

package store

import (
	"context"
	"os"
)

// openLocked leaves locking to bbolt where flock is not available.
func openLocked(context.Context) func(string, int, os.FileMode) (*os.File, error) {
	return openNoCreate
}
