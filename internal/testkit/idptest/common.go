package idptest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ory/fosite"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// Server limits and timeouts.
const (
	// readHeaderTimeout bounds how long a client may take to send request
	// headers, so a stalled client cannot hold a connection.
	readHeaderTimeout = 5 * time.Second
	// readTimeout bounds reading a whole request; forms here are small.
	readTimeout = 30 * time.Second
	// idleTimeout closes keep-alive connections nobody uses.
	idleTimeout = 90 * time.Second
	// maxFormBytes bounds request bodies: token requests carrying a JWT are
	// a few KiB.
	maxFormBytes = 64 << 10
	// minSecretLen is the shortest client secret accepted: secrets are
	// compared through SHA-256 (see secretHasher), which is only sound for
	// secrets that are not guessable.
	minSecretLen = 8
)

// Grant and token type identifiers.
const (
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	GrantJWTBearer     = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	TokenTypeIDJAG     = "urn:ietf:params:oauth:token-type:id-jag"
	TokenTypeIDToken   = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	// TypeIDJAG is the typ header of an ID-JAG.
	TypeIDJAG = "oauth-id-jag+jwt"
)

// httpServer is the TLS listener both servers share the plumbing of.
type httpServer struct {
	url    string
	caPEM  []byte
	srv    *http.Server
	client *http.Client
	done   chan struct{}
	once   sync.Once
}

// startHTTPS serves h on a fresh loopback port with a certificate for
// 127.0.0.1 and localhost from a new CA named cn.
func startHTTPS(cn string, h http.Handler, logger *zap.Logger) (*httpServer, error) {
	ca, err := testpki.NewCA(cn)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Leaf("localhost", "127.0.0.1", "::1")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	errLog := log.New(io.Discard, "", 0)
	if l, err := zap.NewStdLogAt(logger, zap.DebugLevel); err == nil {
		errLog = l
	}
	s := &httpServer{
		url:   "https://" + ln.Addr().String(),
		caPEM: ca.CertPEM,
		done:  make(chan struct{}),
		srv: &http.Server{
			Handler:           http.MaxBytesHandler(h, maxFormBytes),
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			IdleTimeout:       idleTimeout,
			ErrorLog:          errLog,
			TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf}},
		},
		client: &http.Client{
			Timeout: readTimeout,
			Transport: &http.Transport{
				Proxy:           nil, // never through an environment proxy
				TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("server stopped", zap.Error(err))
		}
	}()
	return s, nil
}

func (s *httpServer) close() {
	s.once.Do(func() {
		_ = s.srv.Close()
		<-s.done
		s.client.CloseIdleConnections()
	})
}

// certPool returns a pool holding the server's CA.
func (s *httpServer) certPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(s.caPEM)
	return p
}

// knobs are failure-injection settings shared by both servers.
type knobs struct {
	mu         sync.Mutex
	latency    time.Duration
	failLeft   int
	failStatus int
}

// SetLatency makes the token endpoint wait d before each request.
func (k *knobs) SetLatency(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.latency = max(d, 0)
}

// FailNext makes the next n token requests fail with HTTP status and an
// OAuth error (temporarily_unavailable for 503, server_error for other
// 5xx, invalid_request otherwise), unprocessed.
func (k *knobs) FailNext(n, status int) {
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failLeft, k.failStatus = max(n, 0), status
}

// before applies latency and injected failures; it reports false when it
// answered the request itself.
func (k *knobs) before(w http.ResponseWriter, r *http.Request) bool {
	k.mu.Lock()
	d := k.latency
	fail := 0
	if k.failLeft > 0 {
		k.failLeft--
		fail = k.failStatus
	}
	k.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return false
		}
	}
	if fail != 0 {
		code := "invalid_request"
		switch {
		case fail == http.StatusServiceUnavailable:
			code = "temporarily_unavailable"
		case fail >= 500:
			code = "server_error"
		}
		writeJSON(w, fail, map[string]string{"error": code, "error_description": "Injected failure."})
		return false
	}
	return true
}

// secretHasher is the fosite.Hasher for client secrets: SHA-256 with a
// constant-time comparison (fosite's default, bcrypt, costs a quarter of a
// second per token request; these secrets are random strings, not
// passwords).
type secretHasher struct{}

var _ fosite.Hasher = secretHasher{}

func (secretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	h := sha256.Sum256(data)
	return h[:], nil
}

func (secretHasher) Compare(_ context.Context, hash, data []byte) error {
	h := sha256.Sum256(data)
	if subtle.ConstantTimeCompare(hash, h[:]) != 1 {
		return errors.New("client secret mismatch")
	}
	return nil
}

func hashSecret(secret string) []byte {
	h, _ := secretHasher{}.Hash(context.Background(), []byte(secret))
	return h
}

// randomID returns 16 random bytes in hex (token ids).
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeJSON writes v as an uncacheable JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// rfcError returns an OAuth error fosite writes as is.
func rfcError(code string, status int, hint string) *fosite.RFC6749Error {
	return &fosite.RFC6749Error{ErrorField: code, CodeField: status, DescriptionField: hint}
}
