// Package upstreamtest runs real TLS "API" servers on loopback that record
// exactly what reached them. The end-to-end tests use them as the upstream
// behind the sidecar, to show which headers arrived (the injected token) and
// which did not (the assertion, the agent's own credentials, proxy headers).
//
// A Server is safe for concurrent use.
package upstreamtest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// maxRecordedBody bounds how much of each request body is kept.
const maxRecordedBody = 1 << 20

// Request is what the upstream received.
type Request struct {
	Method     string
	Host       string
	Path       string
	RawQuery   string
	Header     http.Header
	Body       []byte
	ServerName string // SNI the client sent
	// CurveID is the key exchange of the connection it came on.
	CurveID tls.CurveID
	Proto   string
}

// Options configure a Server.
type Options struct {
	// Names the certificate is valid for; default "localhost" and
	// "127.0.0.1".
	Names []string
	// Handler answers requests after they are recorded; default answers
	// 200 with a JSON echo of method, path and the Authorization header's
	// scheme (never its value).
	Handler http.Handler
}

// Server is a recording TLS upstream on 127.0.0.1.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	caPEM  []byte
	caPool *x509.CertPool

	mu   sync.Mutex
	reqs []Request
}

// Start starts a Server on a free loopback port.
func Start(o Options) (*Server, error) {
	if len(o.Names) == 0 {
		o.Names = []string{"localhost", "127.0.0.1"}
	}
	ca, err := testpki.NewCA("upstreamtest CA")
	if err != nil {
		return nil, err
	}
	cert, err := ca.Leaf(o.Names...)
	if err != nil {
		return nil, err
	}
	caPEM, pool := ca.CertPEM, ca.Pool()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, caPEM: caPEM, caPool: pool}
	next := o.Handler
	if next == nil {
		next = http.HandlerFunc(echo)
	}
	s.srv = &http.Server{
		Handler:           s.record(next),
		ReadHeaderTimeout: 10 * time.Second,
		// Clients that give up mid-handshake are normal in load and abuse
		// tests; their errors are not worth a log line.
		ErrorLog:  log.New(io.Discard, "", 0),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	return s, nil
}

// Port is the listening port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Addr is host:port of the listener (127.0.0.1:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CACertPEM is the CA that signed the server's certificate.
func (s *Server) CACertPEM() []byte { return s.caPEM }

// CertPool holds CACertPEM.
func (s *Server) CertPool() *x509.CertPool { return s.caPool }

// Requests returns a copy of everything received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Reset forgets recorded requests.
func (s *Server) Reset() {
	s.mu.Lock()
	s.reqs = nil
	s.mu.Unlock()
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

func (s *Server) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody))
		rec := Request{
			Method: r.Method, Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Header: r.Header.Clone(), Body: body, Proto: r.Proto,
		}
		if r.TLS != nil {
			rec.ServerName = r.TLS.ServerName
			rec.CurveID = r.TLS.CurveID
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, rec)
		s.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

func echo(w http.ResponseWriter, r *http.Request) {
	scheme := ""
	if a := r.Header.Get("Authorization"); a != "" {
		scheme, _, _ = cut(a, ' ')
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"method": r.Method, "path": r.URL.Path, "authorization_scheme": scheme,
	})
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// URL returns https://host:port/path for the server under name.
func (s *Server) URL(name, path string) string {
	return fmt.Sprintf("https://%s%s", net.JoinHostPort(name, strconv.Itoa(s.Port())), path)
}
