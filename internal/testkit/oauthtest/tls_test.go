package oauthtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/url"
	"testing"
)

func TestServerTLS(t *testing.T) {
	s := newServer(t, testOptions())
	block, rest := pem.Decode(s.CACertPEM())
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("CACertPEM is not exactly one PEM certificate")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse CA: %v", err)
	}
	if !ca.IsCA {
		t.Errorf("CA certificate is not a CA")
	}
	if k, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key is %T; want ECDSA P-256", ca.PublicKey)
	}

	u, _ := url.Parse(s.URL())
	if u.Scheme != "https" || u.Hostname() != "127.0.0.1" {
		t.Errorf("URL %s; want https://127.0.0.1:PORT", s.URL())
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CACertPEM())
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run(host, func(t *testing.T) {
			conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", u.Port()), &tls.Config{RootCAs: pool, ServerName: host})
			if err != nil {
				t.Fatalf("TLS handshake as %s trusting CACertPEM: %v", host, err)
			}
			defer conn.Close()
			st := conn.ConnectionState()
			if k, ok := st.PeerCertificates[0].PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("leaf key is %T; want ECDSA P-256", st.PeerCertificates[0].PublicKey)
			}
			if st.NegotiatedProtocol == "h2" {
				t.Errorf("negotiated HTTP/2; want HTTP/1.1 only")
			}
		})
	}

	t.Run("untrusted without the CA", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{}}}
		defer c.CloseIdleConnections()
		_, err := c.Get(s.URL() + PathMetadata)
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Errorf("GET with system roots: error %v; want x509.UnknownAuthorityError", err)
		}
	})
	t.Run("CertPool", func(t *testing.T) {
		if _, err := ca.Verify(x509.VerifyOptions{Roots: s.CertPool()}); err != nil {
			t.Errorf("CA does not verify against CertPool: %v", err)
		}
	})
}
