// Package wstest runs a real WebSocket API (github.com/coder/websocket) on
// a loopback TLS listener, for the end-to-end tests of WebSocket routes.
// On connect it sends a greeting (a server-initiated message); then it
// answers each message:
//
//	"headers"        the upgrade request's headers as JSON, in one frame —
//	                 Authorization included, the canary echo
//	"headers-split"  the same JSON fragmented one byte per frame
//	"close CODE"     closes with that status code and reason "bye"
//	"stream N"       N server-initiated messages "tick 1" … "tick N"
//	anything else    echoed with the same message type
//
// A Server is safe for concurrent use.
package wstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// Greeting is the first message the server sends on every connection.
const Greeting = "hello from the server"

// Server is a WebSocket API on 127.0.0.1.
type Server struct {
	srv   *http.Server
	ln    net.Listener
	caPEM []byte
	pool  *x509.CertPool

	mu      sync.Mutex
	headers []http.Header
	wg      sync.WaitGroup
}

// Start serves on a free loopback port with a certificate for names.
func Start(names ...string) (*Server, error) {
	ca, err := testpki.NewCA("wstest CA")
	if err != nil {
		return nil, err
	}
	cert, err := ca.Leaf(names...)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, caPEM: ca.CertPEM, pool: ca.Pool()}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		// HTTP/1.1 only: WebSocket over HTTP/2 (RFC 8441) is not used.
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
	}
	go func() { _ = s.srv.Serve(tls.NewListener(ln, s.srv.TLSConfig)) }()
	return s, nil
}

// Port is the listening port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Addr is 127.0.0.1:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CACertPEM is the CA that signed the server's certificate.
func (s *Server) CACertPEM() []byte { return s.caPEM }

// CertPool holds CACertPEM.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// Headers returns the headers of every upgrade request received.
func (s *Server) Headers() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.headers...)
}

// Close stops the server and waits for its connections to end.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.wg.Wait()
	return err
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.wg.Add(1)
	defer s.wg.Done()
	h := r.Header.Clone()
	s.mu.Lock()
	s.headers = append(s.headers, h)
	s.mu.Unlock()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(Greeting)); err != nil {
		return
	}
	echo, _ := json.Marshal(h)
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		m := string(msg)
		switch {
		case m == "headers":
			err = c.Write(ctx, websocket.MessageText, echo)
		case m == "headers-split":
			err = writeSplit(ctx, c, echo)
		case strings.HasPrefix(m, "close "):
			code, _ := strconv.Atoi(strings.TrimPrefix(m, "close "))
			_ = c.Close(websocket.StatusCode(code), "bye")
			return
		case strings.HasPrefix(m, "stream "):
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "stream "))
			for i := 1; i <= n && err == nil; i++ {
				err = c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf("tick %d", i)))
			}
		default:
			err = c.Write(ctx, typ, msg)
		}
		if err != nil {
			return
		}
	}
}

// writeSplit sends b as one text message, one byte per frame.
func writeSplit(ctx context.Context, c *websocket.Conn, b []byte) error {
	w, err := c.Writer(ctx, websocket.MessageText)
	if err != nil {
		return err
	}
	for i := range b {
		if _, err := w.Write(b[i : i+1]); err != nil {
			return err
		}
	}
	return w.Close()
}
