package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultMintTTL is the lifetime of a minted assertion when MintOptions.TTL
// is zero: long enough for one task step, well under the verifier's default
// max_lifetime.
const DefaultMintTTL = 5 * time.Minute

// MintOptions describes an assertion to mint.
type MintOptions struct {
	// Issuer (iss), Audience (aud) and Subject (sub, the user) are required.
	Issuer, Audience, Subject string
	// Agent, when set, becomes the RFC 8693 actor claim {"act": {"sub": Agent}}.
	Agent string
	// KeyID, when set, becomes the kid header.
	KeyID string
	// TTL is exp-iat; zero means DefaultMintTTL.
	TTL time.Duration
	// Claims are extra (narrowing) claims such as providers or task_id. They
	// may not set a registered claim.
	Claims map[string]any
	// Algorithm is the alg; empty means the natural one for the key (EdDSA,
	// ES256/ES384, RS256, HS256).
	Algorithm string
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// Mint signs an assertion with key: an ed25519.PrivateKey, *ecdsa.PrivateKey
// (P-256 or P-384), *rsa.PrivateKey (at least 2048 bits) or, for HS256, a
// []byte secret of at least 32 bytes. It sets iss, sub, aud, iat, exp, a
// random jti and, with an Agent, act.
func Mint(key any, o MintOptions) (string, error) {
	switch {
	case o.Issuer == "":
		return "", errors.New("mint assertion: issuer is required")
	case o.Audience == "":
		return "", errors.New("mint assertion: audience is required")
	case o.Subject == "":
		return "", errors.New("mint assertion: subject is required")
	case o.TTL < 0:
		return "", errors.New("mint assertion: ttl must not be negative")
	}
	alg, err := signingAlgorithm(key, o.Algorithm)
	if err != nil {
		return "", fmt.Errorf("mint assertion: %w", err)
	}
	ttl := o.TTL
	if ttl == 0 {
		ttl = DefaultMintTTL
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	claims := jwt.MapClaims{}
	for k, val := range o.Claims {
		for _, r := range registeredClaims {
			if k == r {
				return "", fmt.Errorf("mint assertion: claim %q is set by Mint itself", k)
			}
		}
		claims[k] = val
	}
	claims["iss"] = o.Issuer
	claims["sub"] = o.Subject
	claims["aud"] = o.Audience
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(ttl).Unix()
	claims["jti"] = rand.Text()
	if o.Agent != "" {
		claims["act"] = map[string]any{"sub": o.Agent}
	}
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(alg.String()), claims)
	if o.KeyID != "" {
		tok.Header["kid"] = o.KeyID
	}
	s, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("mint assertion: sign: %w", err)
	}
	return s, nil
}

// signingAlgorithm returns the algorithm to sign with: name if it fits the
// private key, or the key's natural one when name is empty.
func signingAlgorithm(key any, name string) (algorithm, error) {
	var pub any
	switch k := key.(type) {
	case ed25519.PrivateKey:
		if len(k) != ed25519.PrivateKeySize {
			return algUnknown, errors.New("malformed Ed25519 private key")
		}
		pub = k.Public()
	case *ecdsa.PrivateKey:
		pub = &k.PublicKey
	case *rsa.PrivateKey:
		pub = &k.PublicKey
	case []byte:
		pub = k
	default:
		return algUnknown, fmt.Errorf("unsupported signing key type %T", key)
	}
	alg := algHS256
	if _, secret := key.([]byte); !secret {
		alg = defaultAlgorithm(pub)
	}
	if name != "" {
		alg = algorithmFromName(name)
		if !alg.configurable() {
			return algUnknown, fmt.Errorf("unsupported algorithm %q", name)
		}
	}
	if alg == algUnknown {
		return algUnknown, fmt.Errorf("unsupported signing key %s", describeKey(key))
	}
	if !keyFits(alg, pub) {
		return algUnknown, fmt.Errorf("%s cannot sign with algorithm %s", describeKey(key), alg)
	}
	return alg, nil
}

// LoadSigningKey reads a signing key for Mint from path and returns it with
// its natural algorithm. A PEM file must hold a private key (PKCS#8, SEC 1
// "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"); any other file is an HS256
// secret (trailing whitespace removed, at least 32 bytes).
func LoadSigningKey(path string) (key any, alg string, err error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("load signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		secret, err := parseSecret(data)
		if err != nil {
			return nil, "", fmt.Errorf("load signing key: %w", err)
		}
		return secret, algHS256.String(), nil
	}
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE":
		return nil, "", errors.New("load signing key: holds a public key; signing needs the private key")
	default:
		return nil, "", fmt.Errorf("load signing key: unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("load signing key: parse: %w", err)
	}
	a, err := signingAlgorithm(key, "")
	if err != nil {
		return nil, "", fmt.Errorf("load signing key: %w", err)
	}
	return key, a.String(), nil
}

// GenerateKeyPair creates a key pair for alg ("EdDSA" or "ES256") and returns
// the private key (for Mint) and the public key as PKIX PEM (for the
// verifier's keys[].file).
func GenerateKeyPair(alg string) (priv any, pubPEM []byte, err error) {
	var pub any
	switch alg {
	case "EdDSA":
		p, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generate key pair: %w", err)
		}
		priv, pub = k, p
	case "ES256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generate key pair: %w", err)
		}
		priv, pub = k, &k.PublicKey
	default:
		return nil, nil, fmt.Errorf("generate key pair: unsupported algorithm %q (want EdDSA or ES256)", alg)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key pair: %w", err)
	}
	return priv, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// MarshalPrivateKeyPEM encodes a private key from GenerateKeyPair (or any
// Ed25519, ECDSA or RSA private key) as PKCS#8 PEM, the form LoadSigningKey
// reads.
func MarshalPrivateKeyPEM(priv any) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
