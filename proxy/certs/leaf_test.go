package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// leafTemplate is the template the Issuer gave x509.CreateCertificate
// before CA.signLeaf existed. The builder must encode the certificate
// CreateCertificate makes from it.
func leafTemplate(f leafFields) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber:          f.serial,
		NotBefore:             f.notBefore,
		NotAfter:              f.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if len(f.name) <= maxCommonNameLen {
		tmpl.Subject = pkix.Name{CommonName: f.name}
	}
	if f.ip.IsValid() {
		tmpl.IPAddresses = []net.IP{f.ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{f.name}
	}
	return tmpl
}

// createCertificateLeaf signs the leaf for f holding pub the way the Issuer
// did before CA.signLeaf, with x509.CreateCertificate.
func createCertificateLeaf(ca *CA, f leafFields, pub *ecdsa.PublicKey) ([]byte, error) {
	return x509.CreateCertificate(rand.Reader, leafTemplate(f), ca.cert, pub, ca.key)
}

// splitCert returns the three parts of a DER certificate: the
// TBSCertificate and the signature AlgorithmIdentifier, each with tag and
// length, and the signature.
func splitCert(t testing.TB, der []byte) (tbs, alg, sig []byte) {
	t.Helper()
	var cert struct {
		TBS asn1.RawValue
		Alg asn1.RawValue
		Sig asn1.BitString
	}
	if rest, err := asn1.Unmarshal(der, &cert); err != nil || len(rest) != 0 {
		t.Fatalf("certificate %x is not SEQUENCE {tbs, alg, sig}: %v, %d bytes after", der, err, len(rest))
	}
	return cert.TBS.FullBytes, cert.Alg.FullBytes, cert.Sig.Bytes
}

// checkSameLeaf signs f both ways and fails unless the TBSCertificates and
// signature algorithms are byte for byte the same and both signatures
// verify against the CA.
func checkSameLeaf(t *testing.T, ca *CA, key *leafKey, f leafFields) {
	t.Helper()
	want, err := createCertificateLeaf(ca, f, &key.priv.PublicKey)
	if err != nil {
		t.Fatalf("CreateCertificate(%s): %v", f.name, err)
	}
	got, err := ca.signLeaf(f, key.spki)
	if err != nil {
		t.Fatalf("signLeaf(%s): %v", f.name, err)
	}
	wantTBS, wantAlg, _ := splitCert(t, want)
	gotTBS, gotAlg, _ := splitCert(t, got)
	if !bytes.Equal(gotTBS, wantTBS) {
		t.Errorf("TBSCertificate for %s:\ngot  %x\nwant %x", f.name, gotTBS, wantTBS)
	}
	if !bytes.Equal(gotAlg, wantAlg) {
		t.Errorf("signature algorithm for %s = %x; want %x", f.name, gotAlg, wantAlg)
	}
	leaf, err := x509.ParseCertificate(got)
	if err != nil {
		t.Fatalf("parse built leaf for %s: %v", f.name, err)
	}
	if err := leaf.CheckSignatureFrom(ca.cert); err != nil {
		t.Errorf("built leaf for %s: signature does not verify against the CA: %v", f.name, err)
	}
}

func TestLeafTBSMatchesCreateCertificate(t *testing.T) {
	defaultCA := loadCA(t, InitOptions{})
	// A CA named like a host: for that host issuer and subject are the
	// same bytes and CreateCertificate drops the authority key ID.
	hostCA := loadCA(t, InitOptions{CommonName: "api.example.com"})
	// A CA without a subject key ID (InitCA always writes one, other tools
	// may not): no authority key ID.
	noSKIDCert := *defaultCA.cert
	noSKIDCert.SubjectKeyId = nil
	noSKIDCA := &CA{cert: &noSKIDCert, key: defaultCA.key}

	key, err := newLeafKey(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	label63 := strings.Repeat("a", 63)
	hosts := []string{
		"api.example.com",
		"under_score.example.com", // '_' is not PrintableString: UTF8String CN
		"x-1.example.com",
		label63,                          // one 63-character label
		label63 + ".b",                   // 65 characters: no CN, critical SAN
		strings.Repeat("b", 60) + ".com", // 64 characters: the longest CN
		label63 + "." + label63 + "." + label63 + ".example", // long, no CN
		"127.0.0.1",
		"10.0.0.1",
		"::1",
		"2001:db8::1",
		"[2001:db8:0:0:0:0:0:2]",
		"::ffff:10.0.0.1", // normalised to 10.0.0.1
	}
	zone := time.FixedZone("UTC-7", -7*3600)
	times := []struct {
		name      string
		notBefore time.Time
	}{
		{"now", time.Now()},
		{"zone and nanoseconds", time.Date(2026, 3, 4, 5, 6, 7, 123456789, zone)},
		{"NotAfter in 2050", time.Date(2049, 12, 31, 12, 0, 0, 0, time.UTC)},
		{"NotBefore in 1949", time.Date(1949, 12, 31, 12, 0, 0, 0, time.UTC)},
	}
	serials := []*big.Int{
		big.NewInt(1),
		new(big.Int).Lsh(big.NewInt(1), 127), // top bit set: a leading zero byte
		new(big.Int).SetBytes(bytes.Repeat([]byte{0x7f}, 16)),
	}
	cas := []struct {
		name string
		ca   *CA
	}{{"default CA", defaultCA}, {"CA named api.example.com", hostCA}, {"CA without SKID", noSKIDCA}}
	for _, c := range cas {
		for _, host := range hosts {
			t.Run(c.name+"/"+host, func(t *testing.T) {
				name, ip, err := normalizeHost(host)
				if err != nil {
					t.Fatalf("normalizeHost(%q): %v", host, err)
				}
				names := []string{name}
				if parent, ok := wildcardParent(name); ok && !ip.IsValid() {
					names = append(names, "*"+parent) // '*' is not PrintableString either
				}
				for _, name := range names {
					for _, tm := range times {
						for _, serial := range serials {
							checkSameLeaf(t, c.ca, key, leafFields{
								serial:    serial,
								notBefore: tm.notBefore,
								notAfter:  tm.notBefore.Add(DefaultLeafValidity),
								name:      name,
								ip:        ip,
							})
						}
					}
				}
			})
		}
	}
	// An IPv4-mapped address that did not go through normalizeHost is
	// still written as four bytes, as CreateCertificate writes it.
	t.Run("mapped address unnormalised", func(t *testing.T) {
		now := time.Now()
		checkSameLeaf(t, defaultCA, key, leafFields{
			serial:    big.NewInt(42),
			notBefore: now,
			notAfter:  now.Add(time.Hour),
			name:      "::ffff:10.0.0.1",
			ip:        netip.MustParseAddr("::ffff:10.0.0.1"),
		})
	})
}

func FuzzLeafTBS(f *testing.F) {
	ca := loadCA(f, InitOptions{})
	key, err := newLeafKey(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add("api.example.com", int64(1767225600), uint32(0), []byte{1})
	f.Add("Under_Score.Example.COM.", int64(2524607999), uint32(999999999), []byte{0x80, 0})
	f.Add(strings.Repeat("a", 63)+".example.com", int64(-631152001), uint32(1), []byte{0x7f, 0xff})
	f.Add("[2001:db8::1]", int64(1767225600), uint32(0), []byte{})
	f.Add("::ffff:192.0.2.1", int64(0), uint32(0), bytes.Repeat([]byte{0xff}, 20))
	f.Add("127.0.0.1", int64(253402300799), uint32(0), []byte{5})
	f.Fuzz(func(t *testing.T, host string, unix int64, nsec uint32, serial []byte) {
		name, ip, err := normalizeHost(host)
		if err != nil {
			return
		}
		notBefore := time.Unix(unix, int64(nsec%1e9))
		fields := leafFields{
			serial:    new(big.Int).SetBytes(serial),
			notBefore: notBefore,
			notAfter:  notBefore.Add(DefaultLeafValidity),
			name:      name,
			ip:        ip,
		}
		want, wantErr := createCertificateLeaf(ca, fields, &key.priv.PublicKey)
		got, gotErr := ca.leafTBS(fields, key.spki)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("host %q at %v: leafTBS error %v; CreateCertificate error %v", host, notBefore, gotErr, wantErr)
		}
		if wantErr != nil {
			return // a time ASN.1 cannot hold; both refuse it
		}
		wantTBS, _, _ := splitCert(t, want)
		if !bytes.Equal(got, wantTBS) {
			t.Fatalf("host %q at %v serial %x: TBSCertificate\ngot  %x\nwant %x", host, notBefore, serial, got, wantTBS)
		}
	})
}

func TestLeafKeyRotation(t *testing.T) {
	now := time.Now()
	iss := NewIssuer(loadCA(t, InitOptions{}), IssuerOptions{Now: func() time.Time { return now }})
	pub := func(host string) *ecdsa.PublicKey {
		t.Helper()
		c, err := iss.Leaf(host)
		if err != nil {
			t.Fatalf("Leaf(%s): %v", host, err)
		}
		key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			t.Fatalf("leaf key is %T; want *ecdsa.PrivateKey", c.PrivateKey)
		}
		if p, ok := c.Leaf.PublicKey.(*ecdsa.PublicKey); !ok || !p.Equal(&key.PublicKey) {
			t.Fatalf("leaf for %s does not hold its private key's public key", host)
		}
		return &key.PublicKey
	}

	a := pub("a.test")
	now = now.Add(leafKeyRotation - time.Second)
	if b := pub("b.test"); !b.Equal(a) {
		t.Errorf("leaves signed %v apart have different keys; want one shared key", leafKeyRotation-time.Second)
	}
	now = now.Add(time.Second) // the first key is leafKeyRotation old
	c := pub("c.test")
	if c.Equal(a) {
		t.Errorf("leaf signed %v after the first has the first leaf's key; want a new key", leafKeyRotation)
	}
	now = now.Add(leafKeyRotation / 2)
	if d := pub("d.test"); !d.Equal(c) {
		t.Errorf("leaf signed %v after a rotation has a different key; want the rotated key", leafKeyRotation/2)
	}
	now = now.Add(-leafKeyRotation/2 - time.Minute) // the clock steps back past the key's making: a new key
	if e := pub("e.test"); e.Equal(c) {
		t.Errorf("leaf signed after the clock stepped back has the current key; want a new key")
	}
	// The cached leaves keep the keys they were signed with.
	if a2 := pub("a.test"); !a2.Equal(a) {
		t.Errorf("cached leaf a.test has a different key after rotation")
	}
}

// BenchmarkSignLeaf compares signing a new leaf the old way (a key per leaf
// and x509.CreateCertificate, which verifies its own signature) with the
// Issuer's way (a shared key and CA.signLeaf). Each includes the
// x509.ParseCertificate the Issuer does for tls.Certificate.Leaf.
// createcertificate-sharedkey separates the two gains.
func BenchmarkSignLeaf(b *testing.B) {
	ca := loadCA(b, InitOptions{})
	now := time.Now()
	shared, err := newLeafKey(now)
	if err != nil {
		b.Fatal(err)
	}
	fields := func(i int) leafFields {
		serial, err := randomSerial()
		if err != nil {
			b.Fatal(err)
		}
		return leafFields{
			serial:    serial,
			notBefore: now.Add(-leafBackdate),
			notAfter:  now.Add(DefaultLeafValidity),
			name:      fmt.Sprintf("h%d.example.com", i),
		}
	}
	parse := func(der []byte, err error) {
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("createcertificate", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			parse(createCertificateLeaf(ca, fields(i), &key.PublicKey))
			i++
		}
	})
	b.Run("createcertificate-sharedkey", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			parse(createCertificateLeaf(ca, fields(i), &shared.priv.PublicKey))
			i++
		}
	})
	b.Run("builder", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			parse(ca.signLeaf(fields(i), shared.spki))
			i++
		}
	})
}
