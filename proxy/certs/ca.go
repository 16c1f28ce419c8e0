// Package certs holds the sidecar's interception CA and the cache of leaf
// certificates it signs for the hosts whose TLS the proxy intercepts.
//
// The CA is the project's own ECDSA P-256 CA, created once with InitCA (the
// `onbehalf ca init` command) and loaded strictly with LoadCA: the sidecar
// refuses to start if it is missing, corrupt, of the wrong kind or not
// currently valid. goproxy's built-in CA is never used.
//
// An Issuer signs short-lived ECDSA P-256 leaves on demand, keeps them in a
// bounded LRU cache, and signs at most once per host at a time. A CA is
// immutable after loading and an Issuer is safe for concurrent use.
//
// Signing a leaf is on the accept path of every first-seen host, so it is
// made cheap in two ways. The leaves an Issuer signs within an hour of one
// another share one key, rotated after that: the key lives in the same
// process as the CA key, and a leaked leaf key is useful only until the
// leaves signed with it expire. And leaves are encoded and signed by the
// package rather than by x509.CreateCertificate, which verifies every
// signature it makes at about twice the cost of the signing; a test and a
// fuzz test require the package's encoding to be byte for byte the one
// CreateCertificate produces.
package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

const (
	// DefaultCommonName is the CA's subject common name unless
	// InitOptions says otherwise.
	DefaultCommonName = "onbehalf interception CA"

	// DefaultCAValidity is how long a new CA is valid: long enough that
	// agents' trust stores are not re-provisioned often, short enough
	// that a forgotten CA does not outlive the deployment by decades.
	DefaultCAValidity = 5 * 365 * 24 * time.Hour

	// caBackdate moves a new CA's NotBefore into the past, so clients
	// whose clock runs behind the sidecar's still accept it.
	caBackdate = time.Hour

	// maxPEMFileSize bounds what LoadCA reads from each file. A CA
	// certificate or key is a few kilobytes; the bound keeps a
	// misconfigured path (a log, a device) from exhausting memory.
	maxPEMFileSize = 1 << 20

	// keyFileMode and certFileMode are the permissions InitCA gives the
	// files: the key is readable by the sidecar's user only, the
	// certificate is public.
	keyFileMode  = 0o600
	certFileMode = 0o644

	// dirMode is the permission of directories InitCA creates.
	dirMode = 0o700
)

// ErrInvalidCA is wrapped by every LoadCA error about a file's contents (as
// opposed to reading it; a missing file wraps fs.ErrNotExist), and by
// signing errors once the CA has expired.
var ErrInvalidCA = errors.New("invalid CA")

// CA is a loaded interception CA: its certificate and ECDSA P-256 key.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// Certificate returns the CA certificate. Callers must not modify it.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// CertPEM returns the CA certificate in PEM form, as served at /ca.pem for
// agents to trust. The slice is a copy.
func (c *CA) CertPEM() []byte { return bytes.Clone(c.certPEM) }

// InitOptions are the settings of InitCA. The zero value is the default.
type InitOptions struct {
	// CommonName is the CA's subject common name (DefaultCommonName if
	// empty).
	CommonName string
	// Validity is how long the CA is valid (DefaultCAValidity if zero).
	Validity time.Duration
	// Force allows replacing existing files.
	Force bool
	// Now replaces time.Now when set (tests).
	Now func() time.Time
}

// InitCA creates a new self-signed interception CA: an ECDSA P-256 key
// written to keyPath (mode 0600, PKCS#8 PEM) and a certificate written to
// certPath (mode 0644, PEM) with CA:TRUE, path length 0, key usage
// certificate and CRL signing, and a random 128-bit serial number. Missing
// parent directories are created with mode 0700. Existing files are not
// overwritten unless o.Force is set; the error then wraps fs.ErrExist.
func InitCA(certPath, keyPath string, o InitOptions) error {
	if o.CommonName == "" {
		o.CommonName = DefaultCommonName
	}
	if o.Validity == 0 {
		o.Validity = DefaultCAValidity
	}
	if o.Validity < 0 {
		return fmt.Errorf("init CA: validity %v is negative", o.Validity)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if certPath == "" || keyPath == "" {
		return errors.New("init CA: certificate and key paths are required")
	}
	if filepath.Clean(certPath) == filepath.Clean(keyPath) {
		return fmt.Errorf("init CA: certificate and key paths are the same (%s)", certPath)
	}
	if !o.Force {
		for _, p := range []string{keyPath, certPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("init CA: %s already exists (use force to replace it): %w", p, fs.ErrExist)
			}
		}
	}
	for _, p := range []string{keyPath, certPath} {
		if err := os.MkdirAll(filepath.Dir(p), dirMode); err != nil {
			return fmt.Errorf("init CA: %w", err)
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("init CA: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	now := o.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName},
		NotBefore:             now.Add(-caBackdate),
		NotAfter:              now.Add(o.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("init CA: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("init CA: encode key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	if err := writeFile(keyPath, keyPEM, keyFileMode, o.Force); err != nil {
		return fmt.Errorf("init CA: write key: %w", err)
	}
	if err := writeFile(certPath, certPEM, certFileMode, o.Force); err != nil {
		if !o.Force {
			os.Remove(keyPath) // we created it just now; leave no half CA behind
		}
		return fmt.Errorf("init CA: write certificate: %w", err)
	}
	return nil
}

// writeFile writes data to path with mode perm. Without force it creates
// the file exclusively (failing if it appeared meanwhile); with force it
// writes a temporary file beside path and renames it over path, so a crash
// never leaves a truncated file.
func writeFile(path string, data []byte, perm os.FileMode, force bool) (err error) {
	var f *os.File
	if force {
		f, err = os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	} else {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	}
	if err != nil {
		return err
	}
	name := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(name)
		}
	}()
	// Chmod explicitly: the umask may have narrowed the certificate's
	// mode, and CreateTemp uses 0600.
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if force {
		return os.Rename(name, path)
	}
	return nil
}

// randomSerial returns a random positive serial number of at most 128 bits.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// LoadCA loads and checks the interception CA. Both files must exist and
// parse; the key must be an unencrypted ECDSA P-256 key (PKCS#8 "PRIVATE
// KEY", or SEC 1 "EC PRIVATE KEY" as openssl writes it) matching the
// certificate's public key; the certificate must be a CA allowed to sign
// certificates and valid now. Errors name the offending file, never its
// contents; content errors wrap ErrInvalidCA and a missing file wraps
// fs.ErrNotExist.
func LoadCA(certPath, keyPath string) (*CA, error) {
	certData, err := readLimited(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: read certificate: %w", err)
	}
	keyData, err := readLimited(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: read key: %w", err)
	}
	cert, certPEM, err := parseCertPEM(certData)
	if err != nil {
		return nil, fmt.Errorf("load CA: certificate %s: %w: %s", certPath, ErrInvalidCA, err)
	}
	key, err := parseKeyPEM(keyData)
	if err != nil {
		return nil, fmt.Errorf("load CA: key %s: %w: %s", keyPath, ErrInvalidCA, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("load CA: key %s: %w: does not match the certificate %s", keyPath, ErrInvalidCA, certPath)
	}
	if err := checkCACert(cert, time.Now()); err != nil {
		return nil, fmt.Errorf("load CA: certificate %s: %w: %s", certPath, ErrInvalidCA, err)
	}
	return &CA{cert: cert, key: key, certPEM: certPEM}, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPEMFileSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrInvalidCA, maxPEMFileSize)
	}
	return data, nil
}

// parseCertPEM parses exactly one CERTIFICATE block and returns the
// certificate and the block re-encoded (without surrounding text).
func parseCertPEM(data []byte) (*x509.Certificate, []byte, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("no PEM data")
	}
	if block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("PEM block is %q; want CERTIFICATE", block.Type)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, nil, errors.New("more than one PEM block; want only the CA certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), nil
}

// parseKeyPEM parses one unencrypted ECDSA P-256 private key, skipping an
// "EC PARAMETERS" block such as `openssl ecparam -genkey` writes.
func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	var block *pem.Block
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type == "EC PARAMETERS" {
			continue
		}
		if block != nil {
			return nil, errors.New("more than one key")
		}
		block = b
	}
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	if block.Headers["Proc-Type"] != "" || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, errors.New("key is encrypted; want an unencrypted key")
	}
	var parsed any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return nil, errors.New("key is RSA; want ECDSA P-256")
	default:
		return nil, fmt.Errorf("PEM block is %q; want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, errors.New("cannot parse the private key")
	}
	switch k := parsed.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("key is ECDSA %s; want ECDSA P-256", k.Curve.Params().Name)
		}
		return k, nil
	case *rsa.PrivateKey:
		return nil, errors.New("key is RSA; want ECDSA P-256")
	case ed25519.PrivateKey:
		return nil, errors.New("key is Ed25519; want ECDSA P-256")
	default:
		return nil, fmt.Errorf("key is %T; want ECDSA P-256", parsed)
	}
}

// checkCACert checks that cert can act as the interception CA at now.
func checkCACert(cert *x509.Certificate, now time.Time) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return errors.New("not a CA certificate (basic constraints lack CA:TRUE)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("key usage does not include certificate signing")
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return fmt.Errorf("expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
