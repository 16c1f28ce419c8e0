package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/onbehalf-dev/onbehalf/internal/keyfile"
)

const (
	// MinFingerprintKeyBytes is the shortest accepted HMAC key: a key with
	// less than 256 bits would let someone holding the audit trail test
	// guessed tokens against fingerprints.
	MinFingerprintKeyBytes = 32
	// maxFingerprintKeyBytes bounds what is read from the key file.
	maxFingerprintKeyBytes = 4096
	// fingerprintHexLen is the length of a fingerprint: 64 bits, enough to
	// tell a user's tokens apart and to correlate records, too short to be
	// useful for anything else.
	fingerprintHexLen = 16
)

// ErrFingerprintKey reports a fingerprint key that is missing, too short or
// unreadable. The key itself never appears in the error.
var ErrFingerprintKey = errors.New("fingerprint key")

// Fingerprinter computes token fingerprints: a keyed hash prefix that lets
// records be correlated by token without the token ever being stored. It is
// safe for concurrent use.
type Fingerprinter struct {
	key  []byte
	pool sync.Pool // of hash.Hash (HMAC-SHA256 under key)
}

// NewFingerprinter returns a Fingerprinter keyed with key (at least
// [MinFingerprintKeyBytes] bytes). The key is copied.
func NewFingerprinter(key []byte) (*Fingerprinter, error) {
	if len(key) < MinFingerprintKeyBytes {
		return nil, fmt.Errorf("%w: must be at least %d bytes (got %d)", ErrFingerprintKey, MinFingerprintKeyBytes, len(key))
	}
	f := &Fingerprinter{key: bytes.Clone(key)}
	f.pool.New = func() any { return hmac.New(sha256.New, f.key) }
	return f, nil
}

// LoadFingerprinter reads the key from path (its content with surrounding
// white space trimmed). When the file does not exist it is created, mode
// 0600, holding 32 random bytes in hex; creation is atomic, so concurrent
// starters agree on one key.
func LoadFingerprinter(path string) (*Fingerprinter, error) {
	key, err := readKeyFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err = createKeyFile(path)
	}
	if err != nil {
		return nil, err
	}
	return NewFingerprinter(key)
}

// CheckFingerprintKeyFile reads the key at path as LoadFingerprinter does,
// without creating it: a missing file gives an error matching
// fs.ErrNotExist (LoadFingerprinter would create it), an unreadable or
// too short one an error wrapping ErrFingerprintKey. `serve --check` uses
// it.
func CheckFingerprintKeyFile(path string) error {
	key, err := readKeyFile(path)
	clear(key)
	return err
}

// randomFingerprinter returns a Fingerprinter with a fresh key that lives
// only in memory.
func randomFingerprinter() (*Fingerprinter, error) {
	key := make([]byte, MinFingerprintKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("%w: generate: %w", ErrFingerprintKey, err)
	}
	return NewFingerprinter(key)
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrFingerprintKey, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFingerprintKeyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrFingerprintKey, path, err)
	}
	if len(b) > maxFingerprintKeyBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrFingerprintKey, path, maxFingerprintKeyBytes)
	}
	key := bytes.TrimSpace(b)
	if len(key) < MinFingerprintKeyBytes {
		return nil, fmt.Errorf("%w: %s holds %d bytes; want at least %d", ErrFingerprintKey, path, len(key), MinFingerprintKeyBytes)
	}
	return key, nil
}

// createKeyFile installs a new hex key; when another process won the
// race, its key is read and used.
func createKeyFile(path string) ([]byte, error) {
	raw := make([]byte, MinFingerprintKeyBytes)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("%w: generate: %w", ErrFingerprintKey, err)
	}
	key := []byte(hex.EncodeToString(raw))
	if err := keyfile.Install(path, append(key, '\n')); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFingerprintKey, err)
	}
	return readKeyFile(path)
}

// Token returns the fingerprint of token: the first 16 hex characters of
// HMAC-SHA256(key, token). An empty token gives "".
func (f *Fingerprinter) Token(token string) string {
	if token == "" {
		return ""
	}
	h := f.pool.Get().(hash.Hash)
	h.Reset()
	_, _ = io.WriteString(h, token)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	f.pool.Put(h)
	var out [fingerprintHexLen]byte
	hex.Encode(out[:], sum[:fingerprintHexLen/2])
	return string(out[:])
}
