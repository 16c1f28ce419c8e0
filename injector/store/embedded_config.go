package store

import (
	"path/filepath"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Embedded store defaults and limits.
const (
	// DefaultLockTimeout bounds how long one operation waits for the
	// database file lock. Writers hold it for one small transaction plus an
	// fsync (milliseconds), so two seconds rides out bursts from the other
	// processes sharing the file yet stays well below a request deadline.
	DefaultLockTimeout = 2 * time.Second
	// maxLockTimeout caps lock_timeout: a request waiting longer than this
	// for a local file lock has already failed its caller.
	maxLockTimeout = time.Minute
)

// EmbeddedConfig configures the embedded (bbolt) grant store.
type EmbeddedConfig struct {
	// Path is the database file. It and its directory are created (0600 and
	// 0700) when missing.
	Path string `yaml:"path"`
	// KeyFile holds the 32-byte raw AES-256 key that seals token fields. It
	// is created from crypto/rand (mode 0600) when missing and refused when
	// it has the wrong size or group or others may access it.
	KeyFile string `yaml:"key_file"`
	// LockTimeout bounds the wait for the database file lock per operation;
	// exceeding it fails the operation with ErrUnavailable.
	LockTimeout time.Duration `yaml:"lock_timeout"`
}

// DefaultEmbeddedConfig returns the configuration used by `make run` and the
// demo: files in the working directory and DefaultLockTimeout.
func DefaultEmbeddedConfig() EmbeddedConfig {
	return EmbeddedConfig{
		Path:        "onbehalf-grants.db",
		KeyFile:     "onbehalf-grants.key",
		LockTimeout: DefaultLockTimeout,
	}
}

// Validate reports every problem with c at once, as an errors.Join of
// *config.FieldError with paths relative to the embedded store section.
func (c EmbeddedConfig) Validate() error {
	var p config.Problems
	if c.Path == "" {
		p.Addf("path", "must not be empty")
	}
	if c.KeyFile == "" {
		p.Addf("key_file", "must not be empty")
	}
	if c.Path != "" && c.KeyFile != "" && filepath.Clean(c.Path) == filepath.Clean(c.KeyFile) {
		p.Addf("key_file", "must not be the database file")
	}
	if c.LockTimeout <= 0 || c.LockTimeout > maxLockTimeout {
		p.Addf("lock_timeout", "must be positive and at most %s", maxLockTimeout)
	}
	return p.Err()
}
