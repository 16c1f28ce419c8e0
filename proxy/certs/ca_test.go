package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// initCA creates a CA in a temporary directory and returns the paths.
func initCA(t testing.TB, o InitOptions) (certPath, keyPath string) {
	t.Helper()
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := InitCA(certPath, keyPath, o); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return certPath, keyPath
}

func loadCA(t testing.TB, o InitOptions) *CA {
	t.Helper()
	certPath, keyPath := initCA(t, o)
	ca, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return ca
}

func TestInitLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	certPath := filepath.Join(dir, "new", "deeper", "ca.pem")
	keyPath := filepath.Join(dir, "new", "keys", "ca-key.pem")
	start := time.Now()
	if err := InitCA(certPath, keyPath, InitOptions{}); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	for path, want := range map[string]fs.FileMode{
		keyPath:                             0o600,
		certPath:                            0o644,
		filepath.Join(dir, "new"):           0o700 | fs.ModeDir,
		filepath.Join(dir, "new", "deeper"): 0o700 | fs.ModeDir,
		filepath.Join(dir, "new", "keys"):   0o700 | fs.ModeDir,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != want {
			t.Errorf("mode of %s = %v; want %v", path, got, want)
		}
	}
	keyData, _ := os.ReadFile(keyPath)
	if b, _ := pem.Decode(keyData); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PKCS#8 PEM block")
	}

	ca, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	c := ca.Certificate()
	if c.Subject.CommonName != DefaultCommonName {
		t.Errorf("CommonName = %q; want %q", c.Subject.CommonName, DefaultCommonName)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints = IsCA %v valid %v maxPathLen %d zero %v; want CA with path length 0",
			c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
		t.Errorf("KeyUsage = %v; want %v", c.KeyUsage, want)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial has %d bits; want 1..128 and positive", c.SerialNumber.BitLen())
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key is %T; want ECDSA P-256", c.PublicKey)
	}
	if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("SignatureAlgorithm = %v; want ECDSAWithSHA256", c.SignatureAlgorithm)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	wantEnd := start.Add(DefaultCAValidity)
	if d := c.NotAfter.Sub(wantEnd); d < -time.Minute || d > time.Minute {
		t.Errorf("NotAfter = %v; want about %v", c.NotAfter, wantEnd)
	}
	if !c.NotBefore.Before(start) {
		t.Errorf("NotBefore = %v; want before %v (backdated)", c.NotBefore, start)
	}
	certData, _ := os.ReadFile(certPath)
	if got := string(ca.CertPEM()); got != string(certData) {
		t.Errorf("CertPEM() differs from the certificate file")
	}
	p := ca.CertPEM()
	p[0] = 'X'
	if ca.CertPEM()[0] == 'X' {
		t.Errorf("CertPEM() returned the CA's own slice; want a copy")
	}
}

func TestInitCAOptions(t *testing.T) {
	certPath, keyPath := initCA(t, InitOptions{CommonName: "Acme agents CA", Validity: 48 * time.Hour})
	ca, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Certificate()
	if c.Subject.CommonName != "Acme agents CA" {
		t.Errorf("CommonName = %q; want %q", c.Subject.CommonName, "Acme agents CA")
	}
	if d := time.Until(c.NotAfter); d < 47*time.Hour || d > 48*time.Hour {
		t.Errorf("NotAfter in %v; want about 48h", d)
	}
	if err := InitCA(certPath+"x", keyPath+"x", InitOptions{Validity: -time.Hour}); err == nil {
		t.Errorf("InitCA with negative validity succeeded; want error")
	}
	if err := InitCA(certPath+"y", certPath+"y", InitOptions{}); err == nil {
		t.Errorf("InitCA with the same path twice succeeded; want error")
	}
}

func TestInitCARefusesOverwrite(t *testing.T) {
	certPath, keyPath := initCA(t, InitOptions{})
	before, _ := LoadCA(certPath, keyPath)
	oldCert, _ := os.ReadFile(certPath)
	oldKey, _ := os.ReadFile(keyPath)

	err := InitCA(certPath, keyPath, InitOptions{})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("InitCA over existing files = %v; want fs.ErrExist", err)
	}
	if !strings.Contains(err.Error(), keyPath) {
		t.Errorf("error %q does not name the existing file", err)
	}
	// Only the certificate exists: still refused, and the key not created.
	os.Remove(keyPath)
	if err := InitCA(certPath, keyPath, InitOptions{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("InitCA over existing certificate = %v; want fs.ErrExist", err)
	}
	if _, err := os.Stat(keyPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("key file created although InitCA refused")
	}
	if got, _ := os.ReadFile(certPath); string(got) != string(oldCert) {
		t.Errorf("certificate changed although InitCA refused")
	}
	os.WriteFile(keyPath, oldKey, 0o600)

	if err := InitCA(certPath, keyPath, InitOptions{Force: true}); err != nil {
		t.Fatalf("InitCA with Force: %v", err)
	}
	after, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatalf("LoadCA after Force: %v", err)
	}
	if after.Certificate().SerialNumber.Cmp(before.Certificate().SerialNumber) == 0 {
		t.Errorf("Force kept the old CA; want a new one")
	}
	for path, want := range map[string]fs.FileMode{keyPath: 0o600, certPath: 0o644} {
		if fi, _ := os.Stat(path); fi.Mode() != want {
			t.Errorf("mode of %s after Force = %v; want %v", path, fi.Mode(), want)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(certPath))
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries after Force; want 2 (no temporary files left)", len(entries))
	}
}

// selfSigned writes a certificate for pub signed by signer, built from
// tmpl, and returns its PEM.
func selfSigned(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) []byte {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(42)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pkcs8PEM(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func caTemplate() *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func TestLoadCARefuses(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	goodCert := selfSigned(t, caTemplate(), &p256.PublicKey, p256)
	goodKey := pkcs8PEM(t, p256)
	ecDER, _ := x509.MarshalECPrivateKey(p256)

	nonCA := caTemplate()
	nonCA.IsCA = false
	nonCA.KeyUsage = x509.KeyUsageDigitalSignature
	noCertSign := caTemplate()
	noCertSign.KeyUsage = x509.KeyUsageDigitalSignature
	expired := caTemplate()
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	future := caTemplate()
	future.NotBefore, future.NotAfter = time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour)

	tests := []struct {
		name      string
		cert, key []byte // nil means the file is missing
		badFile   string // "cert" or "key": the file the error must name
		want      string
		notExist  bool
	}{
		{name: "missing cert", cert: nil, key: goodKey, badFile: "cert", want: "no such file", notExist: true},
		{name: "missing key", cert: goodCert, key: nil, badFile: "key", want: "no such file", notExist: true},
		{name: "empty cert", cert: []byte{}, key: goodKey, badFile: "cert", want: "no PEM data"},
		{name: "corrupt cert", cert: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key: goodKey, badFile: "cert", want: "parse certificate"},
		{name: "garbage cert", cert: []byte("hello world"), key: goodKey, badFile: "cert", want: "no PEM data"},
		{name: "key in cert file", cert: goodKey, key: goodKey, badFile: "cert", want: "want CERTIFICATE"},
		{name: "two certs", cert: append(append([]byte{}, goodCert...), goodCert...), key: goodKey, badFile: "cert", want: "more than one"},
		{name: "corrupt key", cert: goodCert, key: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), badFile: "key", want: "cannot parse"},
		{name: "empty key", cert: goodCert, key: []byte("\n"), badFile: "key", want: "no PEM private key"},
		{name: "cert in key file", cert: goodCert, key: goodCert, badFile: "key", want: "want PRIVATE KEY"},
		{name: "RSA key PKCS#8", cert: selfSigned(t, caTemplate(), &rsaKey.PublicKey, rsaKey), key: pkcs8PEM(t, rsaKey), badFile: "key", want: "key is RSA"},
		{name: "RSA key PKCS#1", cert: selfSigned(t, caTemplate(), &rsaKey.PublicKey, rsaKey),
			key: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), badFile: "key", want: "key is RSA"},
		{name: "P-384 key", cert: selfSigned(t, caTemplate(), &p384.PublicKey, p384), key: pkcs8PEM(t, p384), badFile: "key", want: "ECDSA P-384; want ECDSA P-256"},
		{name: "Ed25519 key", cert: selfSigned(t, caTemplate(), edPub, edKey), key: pkcs8PEM(t, edKey), badFile: "key", want: "Ed25519"},
		{name: "encrypted key", cert: goodCert, key: pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}), badFile: "key", want: "encrypted"},
		{name: "two keys", cert: goodCert, key: append(append([]byte{}, goodKey...), goodKey...), badFile: "key", want: "more than one key"},
		{name: "mismatched key", cert: goodCert, key: pkcs8PEM(t, other), badFile: "key", want: "does not match"},
		{name: "not a CA", cert: selfSigned(t, nonCA, &p256.PublicKey, p256), key: goodKey, badFile: "cert", want: "not a CA"},
		{name: "no cert signing", cert: selfSigned(t, noCertSign, &p256.PublicKey, p256), key: goodKey, badFile: "cert", want: "certificate signing"},
		{name: "expired", cert: selfSigned(t, expired, &p256.PublicKey, p256), key: goodKey, badFile: "cert", want: "expired at"},
		{name: "not yet valid", cert: selfSigned(t, future, &p256.PublicKey, p256), key: goodKey, badFile: "cert", want: "not valid before"},
		{name: "oversized cert", cert: make([]byte, maxPEMFileSize+1), key: goodKey, badFile: "cert", want: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
			if tt.cert != nil {
				os.WriteFile(certPath, tt.cert, 0o644)
			}
			if tt.key != nil {
				os.WriteFile(keyPath, tt.key, 0o600)
			}
			ca, err := LoadCA(certPath, keyPath)
			if err == nil {
				t.Fatalf("LoadCA succeeded (%v); want refusal", ca.Certificate().Subject)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error = %q; want it to contain %q", msg, tt.want)
			}
			bad := certPath
			if tt.badFile == "key" {
				bad = keyPath
			}
			if !strings.Contains(msg, bad) {
				t.Errorf("error = %q; want it to name %s", msg, bad)
			}
			if tt.notExist {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("error = %v; want fs.ErrNotExist", err)
				}
			} else if !errors.Is(err, ErrInvalidCA) {
				t.Errorf("error = %v; want ErrInvalidCA", err)
			}
			// Contents never leak: no PEM armour or base64 of keys.
			for _, leak := range []string{"BEGIN", "MII", "MHc", "AAAA"} {
				if strings.Contains(msg, leak) {
					t.Errorf("error %q contains file contents (%q)", msg, leak)
				}
			}
		})
	}

	// SEC 1 keys with an EC PARAMETERS block, as openssl writes them, load.
	t.Run("SEC 1 key with parameters", func(t *testing.T) {
		dir := t.TempDir()
		certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
		params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
		os.WriteFile(certPath, goodCert, 0o644)
		os.WriteFile(keyPath, append(params, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})...), 0o600)
		if _, err := LoadCA(certPath, keyPath); err != nil {
			t.Errorf("LoadCA with SEC 1 key = %v; want success", err)
		}
	})
}

func TestLoadCAExpiredFromInit(t *testing.T) {
	past := time.Now().Add(-10 * 24 * time.Hour)
	certPath, keyPath := initCA(t, InitOptions{Validity: 24 * time.Hour, Now: func() time.Time { return past }})
	_, err := LoadCA(certPath, keyPath)
	if !errors.Is(err, ErrInvalidCA) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("LoadCA of an expired CA = %v; want ErrInvalidCA naming expiry", err)
	}
}
