package oauthtest

import (
	"crypto/tls"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// serverCert is the TLS identity of one server: a self-signed CA and a leaf
// signed by it for the loopback names.
type serverCert struct {
	caPEM []byte
	leaf  tls.Certificate
}

// newServerCert creates a fresh ECDSA P-256 CA and a leaf for 127.0.0.1, ::1
// and localhost. Nothing is written to disk.
func newServerCert() (*serverCert, error) {
	ca, err := testpki.NewCA("onbehalf oauthtest CA")
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Leaf("localhost", "127.0.0.1", "::1")
	if err != nil {
		return nil, err
	}
	return &serverCert{caPEM: ca.CertPEM, leaf: leaf}, nil
}
