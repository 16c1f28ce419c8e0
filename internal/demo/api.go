package demo

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// chatAPI is the demo app: a TLS API on loopback that accepts a request only
// with a live access token from the demo provider, says whose it is, and
// remembers the headers of every request it received so the demo can show
// what arrived (the injected token) and what did not (the assertion, the
// agent's own credential). It is safe for concurrent use.
type chatAPI struct {
	prov *authServer
	srv  *http.Server
	ln   net.Listener

	mu   sync.Mutex
	seen []http.Header
}

// maxAPIBody bounds what the demo API reads of a request body.
const maxAPIBody = 64 << 10

func startChatAPI(cert tls.Certificate, prov *authServer) (*chatAPI, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	a := &chatAPI{prov: prov, ln: ln}
	a.srv = &http.Server{
		Handler:           http.HandlerFunc(a.serve),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = a.srv.ServeTLS(ln, "", "") }()
	return a, nil
}

func (a *chatAPI) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxAPIBody))
	a.mu.Lock()
	a.seen = append(a.seen, r.Header.Clone())
	a.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	who, active := a.prov.Introspect(tok)
	if scheme != "Bearer" || !active {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"ok":false,"error":"invalid_auth"}`)
		return
	}
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(map[string]any{"ok": true, "posted_as": who, "path": r.URL.Path})
	_, _ = w.Write(b.Bytes())
}

// Port is the API's loopback port.
func (a *chatAPI) Port() int { return a.ln.Addr().(*net.TCPAddr).Port }

// URL is https://host:port/path for the API under host.
func (a *chatAPI) URL(host, path string) string {
	return fmt.Sprintf("https://%s:%d%s", host, a.Port(), path)
}

// Received is how many requests reached the API.
func (a *chatAPI) Received() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// LastHeader is the header of the last request that reached the API.
func (a *chatAPI) LastHeader() http.Header {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		return http.Header{}
	}
	return a.seen[len(a.seen)-1]
}

// Close stops the API.
func (a *chatAPI) Close() error { return a.srv.Close() }
