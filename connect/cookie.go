package connect

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/onbehalf-dev/onbehalf/internal/keyfile"
)

// SessionKeySize is the size in bytes of the session key file: one raw
// 256-bit key.
const SessionKeySize = 32

// maxCookieBytes bounds an encoded cookie value. Browsers keep cookies of up
// to 4096 bytes including the name and attributes; staying below leaves room
// for both.
const maxCookieBytes = 3800

// cookieKeyInfo derives the cookie-sealing key from the key file, so that
// the file's key is never used directly for two purposes.
const cookieKeyInfo = "onbehalf connect cookie v1"

// errCookie means a cookie could not be opened: absent, tampered with,
// sealed under another key or for another cookie name.
var errCookie = errors.New("cookie cannot be opened")

// sealer seals and opens cookie values with AES-256-GCM. It is safe for
// concurrent use.
type sealer struct {
	aead cipher.AEAD
}

// newSealer derives the cookie key from key (HKDF-SHA256).
func newSealer(key []byte) (*sealer, error) {
	if len(key) != SessionKeySize {
		return nil, fmt.Errorf("session key is %d bytes; want %d", len(key), SessionKeySize)
	}
	k, err := hkdf.Key(sha256.New, key, nil, cookieKeyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive cookie key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("new gcm: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal encodes v as JSON and seals it for the cookie name, which is the
// additional data: a value sealed for one cookie does not open as another.
func (s *sealer) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("seal cookie: %w", err)
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal cookie: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, plain, []byte(name))
	clear(plain)
	enc := base64.RawURLEncoding.EncodeToString(out)
	if len(enc) > maxCookieBytes {
		return "", fmt.Errorf("seal cookie: %d bytes encoded, more than %d", len(enc), maxCookieBytes)
	}
	return enc, nil
}

// open reverses seal into v. Every failure is errCookie, which quotes
// nothing of the value.
func (s *sealer) open(name, value string, v any) error {
	if value == "" || len(value) > maxCookieBytes {
		return errCookie
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return errCookie
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(name))
	if err != nil {
		return errCookie
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, v); err != nil {
		return errCookie
	}
	return nil
}

// LoadOrCreateSessionKey reads the session key file, or creates it (mode
// 0600, 32 random bytes) when it does not exist. Creation is atomic, so
// replicas starting together on a shared volume agree on one key. A file
// that others may read or the group may write (group read is allowed, for
// Secrets mounted with an fsGroup), or that does not hold exactly 32 bytes,
// is refused. Errors name the path, never the key.
func LoadOrCreateSessionKey(path string) ([]byte, error) {
	key, err := keyfile.LoadOrCreate(path, SessionKeySize, true)
	if err != nil {
		return nil, fmt.Errorf("session key file: %w", err)
	}
	return key, nil
}
