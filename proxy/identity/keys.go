package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// Key limits.
const (
	// minRSABits is the smallest RSA modulus accepted (NIST SP 800-131A:
	// 1024-bit RSA is no longer acceptable for signatures).
	minRSABits = 2048
	// minHMACSecret is the smallest HS256 secret accepted: RFC 7518 section
	// 3.2 requires a key at least as long as the hash output (256 bits).
	minHMACSecret = 32
	// maxKeyFileBytes bounds how much of a key file is read. PEM keys and
	// secrets are a few KiB at most; a larger file is a mistake.
	maxKeyFileBytes = 64 << 10
)

// pemMarker starts every PEM block. A secret file holding it is almost
// certainly a key that was meant to be parsed, not a shared secret.
var pemMarker = []byte("-----BEGIN")

// keyFits reports whether key can verify tokens signed with alg. It is the
// one place that binds key types to algorithms: an HMAC algorithm only ever
// gets a []byte secret loaded as such, an RSA algorithm only an RSA public
// key of at least minRSABits, and so on.
func keyFits(alg algorithm, key any) bool {
	switch alg {
	case algEdDSA:
		k, ok := key.(ed25519.PublicKey)
		return ok && len(k) == ed25519.PublicKeySize
	case algES256:
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve != nil && k.Curve.Params().Name == "P-256"
	case algES384:
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve != nil && k.Curve.Params().Name == "P-384"
	case algRS256, algRS384, algRS512, algPS256:
		k, ok := key.(*rsa.PublicKey)
		return ok && k.N != nil && k.N.BitLen() >= minRSABits
	case algHS256:
		k, ok := key.([]byte)
		return ok && len(k) >= minHMACSecret
	}
	return false
}

// defaultAlgorithm returns the algorithm a public key is used with when the
// configuration names none. RSA keys default to RS256; other RSA algorithms
// must be configured explicitly, one per key.
func defaultAlgorithm(key any) algorithm {
	switch k := key.(type) {
	case ed25519.PublicKey:
		return algEdDSA
	case *ecdsa.PublicKey:
		if k.Curve == nil {
			return algUnknown
		}
		switch k.Curve.Params().Name {
		case "P-256":
			return algES256
		case "P-384":
			return algES384
		}
	case *rsa.PublicKey:
		return algRS256
	}
	return algUnknown
}

// describeKey names a key's type for error messages (never its material).
func describeKey(key any) string {
	switch k := key.(type) {
	case ed25519.PublicKey, ed25519.PrivateKey:
		return "Ed25519 key"
	case *ecdsa.PublicKey:
		if k.Curve != nil {
			return "ECDSA " + k.Curve.Params().Name + " key"
		}
	case *ecdsa.PrivateKey:
		if k.Curve != nil {
			return "ECDSA " + k.Curve.Params().Name + " key"
		}
	case *rsa.PublicKey:
		if k.N != nil {
			return fmt.Sprintf("RSA %d-bit key", k.N.BitLen())
		}
	case *rsa.PrivateKey:
		if k.N != nil {
			return fmt.Sprintf("RSA %d-bit key", k.N.BitLen())
		}
	case []byte:
		return fmt.Sprintf("%d-byte secret", len(k))
	}
	return fmt.Sprintf("%T", key)
}

// readKeyFile reads at most maxKeyFileBytes of path.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyFileBytes)
	}
	return data, nil
}

// loadVerificationKey reads one configured key. name is the configured
// algorithm ("" to infer it from a public key). A PEM file must hold exactly
// one public key (PKIX, PKCS#1 RSA or a certificate); a file that is not PEM
// is an HS256 secret and is accepted only when name is "HS256", so a public
// key file can never become an HMAC secret.
func loadVerificationKey(path, name string) (any, algorithm, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, algUnknown, err
	}
	alg := algUnknown
	if name != "" {
		alg = algorithmFromName(name)
	}
	if alg == algHS256 {
		secret, err := parseSecret(data)
		if err != nil {
			return nil, algUnknown, err
		}
		return secret, algHS256, nil
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, algUnknown, errors.New("not a PEM public key (an HMAC secret needs algorithm: HS256)")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, algUnknown, errors.New("holds more than one PEM block; give one key per file")
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		cert, err = x509.ParseCertificate(block.Bytes)
		if err == nil {
			key = cert.PublicKey
		}
	case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return nil, algUnknown, errors.New("holds a private key; the verifier needs only the public key")
	default:
		return nil, algUnknown, fmt.Errorf("unsupported PEM block %q (want PUBLIC KEY)", block.Type)
	}
	if err != nil {
		return nil, algUnknown, fmt.Errorf("parse public key: %w", err)
	}
	if alg == algUnknown {
		alg = defaultAlgorithm(key)
		if alg == algUnknown {
			return nil, algUnknown, fmt.Errorf("unsupported key type %s (want Ed25519, ECDSA P-256/P-384 or RSA)", describeKey(key))
		}
	}
	if !keyFits(alg, key) {
		if k, ok := key.(*rsa.PublicKey); ok && k.N.BitLen() < minRSABits {
			return nil, algUnknown, fmt.Errorf("RSA key has %d bits; at least %d required", k.N.BitLen(), minRSABits)
		}
		return nil, algUnknown, fmt.Errorf("%s cannot be used with algorithm %s", describeKey(key), alg)
	}
	return key, alg, nil
}

// parseSecret turns a secret file into an HMAC key: trailing whitespace
// (the newline editors add) is removed, PEM content is refused, and the rest
// must be at least minHMACSecret bytes.
func parseSecret(data []byte) ([]byte, error) {
	if bytes.Contains(data, pemMarker) {
		return nil, errors.New("holds a PEM block; an HS256 secret must be a random secret, never a public or private key")
	}
	secret := bytes.TrimRight(data, " \t\r\n")
	if len(secret) < minHMACSecret {
		return nil, fmt.Errorf("HS256 secret must be at least %d bytes, got %d", minHMACSecret, len(secret))
	}
	return bytes.Clone(secret), nil
}
