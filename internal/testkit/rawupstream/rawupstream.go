// Package rawupstream runs a hostile TLS "API" on loopback that speaks
// HTTP/1.1 by hand: each connection is given to a function that reads
// requests and writes whatever bytes the test wants (two responses for one
// request, a header line of 100 MiB, a token split across chunk
// boundaries). Writes can be held back and sent as one write(2), so that
// several TLS records reach the client together: that is how a late,
// unsolicited response ends up read ahead into a client's TLS buffer.
//
// A Server is safe for concurrent use; each Conn belongs to its handler.
package rawupstream

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// Handler serves one connection; the connection is closed when it returns.
type Handler func(c *Conn)

// Server is a TLS listener on 127.0.0.1 whose connections go to a Handler.
type Server struct {
	ln    net.Listener
	conf  *tls.Config
	h     Handler
	caPEM []byte
	pool  *x509.CertPool

	mu    sync.Mutex
	conns map[*Conn]struct{}
	n     int
	wg    sync.WaitGroup
}

// Start listens on a free port of 127.0.0.1 with a certificate for names
// (default "localhost" and "127.0.0.1") and serves each connection with h.
func Start(names []string, h Handler) (*Server, error) {
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1"}
	}
	ca, err := testpki.NewCA("rawupstream CA")
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
	s := &Server{
		ln:    ln,
		conf:  &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		h:     h,
		caPEM: ca.CertPEM,
		pool:  ca.Pool(),
		conns: map[*Conn]struct{}{},
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// handshakeTimeout bounds a client's TLS handshake; the clients here are
// local.
const handshakeTimeout = 10 * time.Second

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			return
		}
		hc := &holdConn{Conn: raw}
		tc := tls.Server(hc, s.conf)
		c := &Conn{Conn: tc, R: bufio.NewReader(tc), hold: hc}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.n++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				tc.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
			if err := tc.Handshake(); err != nil {
				return
			}
			_ = raw.SetDeadline(time.Time{})
			s.h(c)
		}()
	}
}

// Port is the listening port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// CACertPEM is the CA that signed the server's certificate.
func (s *Server) CACertPEM() []byte { return s.caPEM }

// CertPool holds CACertPEM.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// Accepted is how many connections the server has accepted.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Close stops listening, closes every connection and waits for handlers.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Conn is one client connection, past its TLS handshake.
type Conn struct {
	*tls.Conn
	// R reads from the connection; use it (not Conn.Read) after ReadRequest.
	R    *bufio.Reader
	hold *holdConn
}

// ReadRequest reads the next request head; its body is left unread (use R
// to read or discard it).
func (c *Conn) ReadRequest() (*http.Request, error) { return http.ReadRequest(c.R) }

// Hold makes later writes wait, in order, until Flush sends them with one
// write(2): the TLS records they make then reach the client together.
func (c *Conn) Hold() { c.hold.setHold(true) }

// Flush sends what Hold kept back and stops holding.
func (c *Conn) Flush() error { return c.hold.flush() }

// FlushSplit sends what Hold kept back except all but the first few bytes
// of the last write, which stay held until Flush: the last TLS record
// arrives in two parts, the first together with the records before it.
func (c *Conn) FlushSplit() error { return c.hold.flushSplit() }

// holdConn is the TCP connection under the TLS one; while holding, it
// buffers what TLS writes.
type holdConn struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
	last int // where the last held write starts in buf
}

func (h *holdConn) setHold(on bool) {
	h.mu.Lock()
	h.held = on
	h.mu.Unlock()
}

func (h *holdConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	if h.held {
		h.last = len(h.buf)
		h.buf = append(h.buf, p...)
		h.mu.Unlock()
		return len(p), nil
	}
	h.mu.Unlock()
	return h.Conn.Write(p)
}

// splitKeep is how many bytes of the last held write flushSplit sends
// with the others: a TLS record header and a little more.
const splitKeep = 8

func (h *holdConn) flushSplit() error {
	h.mu.Lock()
	cut := min(h.last+splitKeep, len(h.buf))
	first := h.buf[:cut]
	h.buf = append([]byte(nil), h.buf[cut:]...)
	h.last = 0
	h.mu.Unlock()
	return h.write(first)
}

func (h *holdConn) flush() error {
	h.mu.Lock()
	buf := h.buf
	h.buf, h.held, h.last = nil, false, 0
	h.mu.Unlock()
	return h.write(buf)
}

func (h *holdConn) write(buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	n, err := h.Conn.Write(buf)
	if err == nil && n != len(buf) {
		err = errors.New("rawupstream: short write")
	}
	return err
}
