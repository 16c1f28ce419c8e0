package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/onbehalf-dev/onbehalf/internal/keyfile"
)

// KeySize is the size in bytes of the embedded store's key file: one raw
// AES-256 key.
const KeySize = 32

// sealFormat is the first byte of every sealed value, so that a future key
// rotation or algorithm change can tell old values from new ones.
const sealFormat byte = 1

// keyCheckPlaintext is sealed under the key when a database is created; a
// later open with another key fails to open it and is refused at start-up
// instead of failing on every grant.
const keyCheckPlaintext = "onbehalf embedded store key check"

// sealer seals and opens token fields with AES-256-GCM. It is safe for
// concurrent use (cipher.AEAD from crypto/aes is).
type sealer struct {
	aead cipher.AEAD
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes; want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("new gcm: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// tokenAD is the additional data binding a sealed token to its field, provider
// and user, so a ciphertext copied to another field or another user's entry
// does not open. Names cannot contain NUL (see ValidateProvider and
// ValidateUser), so the encoding is unambiguous.
func tokenAD(field, provider, user string) []byte {
	return []byte("onbehalf/grant/v1\x00" + field + "\x00" + provider + "\x00" + user)
}

// keyCheckAD is the additional data of the key-check value.
var keyCheckAD = []byte("onbehalf/keycheck/v1")

// seal returns format byte || random nonce || ciphertext and tag.
func (s *sealer) seal(plaintext string, ad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+s.aead.Overhead())
	out[0] = sealFormat
	if _, err := rand.Read(out[1 : 1+ns]); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:1+ns], []byte(plaintext), ad), nil
}

// open reverses seal. Any failure (wrong key, tampering, a value moved from
// another entry, a truncated value) wraps ErrDecrypt; the error says nothing
// about the plaintext.
func (s *sealer) open(sealed, ad []byte) (string, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() || sealed[0] != sealFormat {
		return "", fmt.Errorf("%w: malformed sealed value", ErrDecrypt)
	}
	pt, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], ad)
	if err != nil {
		return "", fmt.Errorf("%w: wrong key or tampered value", ErrDecrypt)
	}
	return string(pt), nil
}

// loadOrCreateKey reads the key file at path, creating it with a fresh random
// key (mode 0600, parent directories 0700) when it does not exist. It refuses a
// file of the wrong size, a non-regular file and a file that group or others
// may access. Creation is atomic (a complete temporary file is hard-linked
// into place), so two processes starting together on a fresh install agree on
// one key and neither ever reads a half-written file.
func loadOrCreateKey(path string) ([]byte, error) {
	key, err := keyfile.LoadOrCreate(path, KeySize, false)
	if errors.Is(err, keyfile.ErrIO) {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return key, err
}
