package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"math/bits"
	"net/netip"
	"slices"
	"time"
)

// This file builds and signs leaf certificates without
// x509.CreateCertificate. CreateCertificate verifies every signature it
// makes, to catch a faulty crypto.Signer such as a misbehaving HSM; for
// P-256 the verification costs about twice the signing, and a new leaf is
// signed on the accept path of every first-seen host. The CA key here is an
// in-memory *ecdsa.PrivateKey that crypto/ecdsa signs with directly, so the
// check buys nothing. The encoding is, byte for byte, the one
// CreateCertificate produces from the template the Issuer used to give it;
// TestLeafTBSMatchesCreateCertificate and FuzzLeafTBS hold the two together.
//
// The values whose encoding has rules of its own (the serial number, the
// times, the subject's string type) are marshalled by encoding/asn1, as
// CreateCertificate marshals them; der only frames them. The framing is not
// golang.org/x/crypto/cryptobyte's so that the binary links no new module
// (see cmd/onbehalf's TestProductionDependencies).

// leafKeyRotation is how long the leaves an Issuer signs share one key.
// Generating a P-256 key costs tens of microseconds, so a key made once an
// hour costs nothing measurable while a burst of new hosts (a sidecar's
// first minutes) shares it. The key lives in the same process as the CA key,
// so sharing it exposes nothing the CA key does not; a leaked leaf key is
// good only until the last leaf signed with it expires, which is at most
// leafKeyRotation plus the leaf validity after it was made. An hour rather
// than the validity (a day by default) keeps that window close to what a
// key per leaf would give.
const leafKeyRotation = time.Hour

// leafKey is the key an Issuer's leaves share while it is younger than
// leafKeyRotation.
type leafKey struct {
	priv *ecdsa.PrivateKey
	// spki is the DER SubjectPublicKeyInfo of priv's public key, as it
	// goes into each leaf.
	spki    []byte
	created time.Time
}

// newLeafKey generates a P-256 leaf key made at now.
func newLeafKey(now time.Time) (*leafKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return &leafKey{priv: priv, spki: spki, created: now}, nil
}

// leafFields are what varies from one leaf to the next, apart from the key.
type leafFields struct {
	serial    *big.Int
	notBefore time.Time
	notAfter  time.Time
	// name is the normalised host (see normalizeHost); it is the
	// common name if short enough, and the DNS SAN unless ip is valid.
	name string
	// ip, if valid, is the host's address and the leaf's IP SAN.
	ip netip.Addr
}

// DER identifier octets (X.690 section 8.1.2) of the elements a leaf is
// framed with.
const (
	tagBitString   = 0x03
	tagOctetString = 0x04
	tagSequence    = 0x30 // constructed
	tagVersion     = 0xa0 // [0] EXPLICIT, TBSCertificate.version
	tagExtensions  = 0xa3 // [3] EXPLICIT, TBSCertificate.extensions
	tagKeyID       = 0x80 // [0] IMPLICIT, AuthorityKeyIdentifier.keyIdentifier
	tagDNSName     = 0x82 // [2] IMPLICIT, GeneralName.dNSName
	tagIPAddress   = 0x87 // [7] IMPLICIT, GeneralName.iPAddress
)

// The parts of a leaf that are the same in every leaf, encoded once.
var (
	// derVersion3 is TBSCertificate.version v3 (the INTEGER 2).
	derVersion3 = der(tagVersion, mustMarshal(2))
	// derSignatureAlgorithm is the AlgorithmIdentifier of ECDSA with
	// SHA-256, which has no parameters (RFC 5758 section 3.2).
	derSignatureAlgorithm = der(tagSequence, mustMarshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}))
	// derFixedExtensions are the extensions that precede the authority
	// key ID, in CreateCertificate's order: keyUsage (critical,
	// digitalSignature only), extKeyUsage (serverAuth), basicConstraints
	// (critical; CA:FALSE is DER's default and there is no path length,
	// so the sequence is empty).
	derFixedExtensions = slices.Concat(
		extension(mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 15}), true,
			mustMarshal(asn1.BitString{Bytes: []byte{0x80}, BitLength: 1})),
		extension(mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 37}), false,
			mustMarshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}})),
		extension(mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 19}), true,
			der(tagSequence)),
	)
	// derAuthorityKeyIDOID and derSubjectAltNameOID identify the
	// extensions that vary (RFC 5280 section 4.2.1).
	derAuthorityKeyIDOID = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 35})
	derSubjectAltNameOID = mustMarshal(asn1.ObjectIdentifier{2, 5, 29, 17})
	// derTrue is the BOOLEAN that marks an extension critical.
	derTrue = mustMarshal(true)
	// emptySubject is an empty Name, the subject of a leaf whose host is
	// too long for a common name.
	emptySubject = der(tagSequence)
)

// signLeaf returns the DER certificate for f holding the public key spki (a
// DER SubjectPublicKeyInfo), signed by c with ECDSA and SHA-256.
func (c *CA) signLeaf(f leafFields, spki []byte) ([]byte, error) {
	tbs, err := c.leafTBS(f, spki)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, c.key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	// The signature is a BIT STRING with no unused bits.
	return der(tagSequence, tbs, derSignatureAlgorithm, der(tagBitString, []byte{0}, sig)), nil
}

// leafTBS returns the DER TBSCertificate of the leaf for f holding spki,
// as x509.CreateCertificate encodes it for the Issuer's template: version 3;
// the issuer is the CA's subject as its certificate spells it; the times in
// UTC (encoding/asn1 picks UTCTime or GeneralizedTime as RFC 5280 asks);
// the subject is the common name f.name, or empty if the name is longer
// than RFC 5280 allows; then the extensions.
func (c *CA) leafTBS(f leafFields, spki []byte) ([]byte, error) {
	serial, err := asn1.Marshal(f.serial)
	if err != nil {
		return nil, fmt.Errorf("encode serial number: %w", err)
	}
	notBefore, err := asn1.Marshal(f.notBefore.UTC())
	if err != nil {
		return nil, fmt.Errorf("encode NotBefore: %w", err)
	}
	notAfter, err := asn1.Marshal(f.notAfter.UTC())
	if err != nil {
		return nil, fmt.Errorf("encode NotAfter: %w", err)
	}
	subject := emptySubject
	if len(f.name) <= maxCommonNameLen {
		subject, err = asn1.Marshal(pkix.Name{CommonName: f.name}.ToRDNSequence())
		if err != nil {
			return nil, fmt.Errorf("encode subject: %w", err)
		}
	}
	return der(tagSequence,
		derVersion3,
		serial,
		derSignatureAlgorithm,
		c.cert.RawSubject,
		der(tagSequence, notBefore, notAfter),
		subject,
		spki,
		der(tagExtensions, der(tagSequence, c.leafExtensions(f, subject)...)),
	), nil
}

// leafExtensions returns a leaf's extensions in the order
// x509.CreateCertificate emits them.
func (c *CA) leafExtensions(f leafFields, subject []byte) [][]byte {
	exts := make([][]byte, 0, 3)
	exts = append(exts, derFixedExtensions)
	// authorityKeyIdentifier, from the CA's subjectKeyIdentifier if it has
	// one. CreateCertificate leaves it out when issuer and subject are the
	// same bytes (it takes that for a self-signed certificate), which
	// happens if the CA's name is just the host as common name.
	if len(c.cert.SubjectKeyId) > 0 && !bytes.Equal(c.cert.RawSubject, subject) {
		exts = append(exts, extension(derAuthorityKeyIDOID, false,
			der(tagSequence, der(tagKeyID, c.cert.SubjectKeyId))))
	}
	// subjectAltName: one DNS name or one address, critical if the subject
	// is empty (RFC 5280 section 4.2.1.6). An IPv4 address is four bytes
	// even if mapped into IPv6, as CreateCertificate writes it.
	var name []byte
	if f.ip.IsValid() {
		name = der(tagIPAddress, f.ip.Unmap().AsSlice())
	} else {
		name = der(tagDNSName, []byte(f.name))
	}
	critical := bytes.Equal(subject, emptySubject)
	return append(exts, extension(derSubjectAltNameOID, critical, der(tagSequence, name)))
}

// extension returns the DER Extension with the encoded OID id and the DER
// value; critical is written only when true, DER leaving out a default.
func extension(id []byte, critical bool, value []byte) []byte {
	if critical {
		return der(tagSequence, id, derTrue, der(tagOctetString, value))
	}
	return der(tagSequence, id, der(tagOctetString, value))
}

// der returns the DER element with the identifier octet tag whose contents
// are the concatenation of parts, with its length in the shortest form
// (X.690 section 10.1).
func der(tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, 2+bits.UintSize/8+n)
	out = append(out, tag)
	if n < 0x80 {
		out = append(out, byte(n))
	} else {
		k := (bits.Len(uint(n)) + 7) / 8
		out = append(out, 0x80|byte(k))
		for i := k - 1; i >= 0; i-- {
			out = append(out, byte(n>>(8*i)))
		}
	}
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// mustMarshal returns asn1.Marshal(v) for the constants above, which
// cannot fail to encode.
func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("certs: asn1.Marshal(%v): %v", v, err))
	}
	return b
}
