// Package dnstest runs a DNS server on a loopback UDP port that answers A
// and AAAA queries from a function, so tests can make names resolve to any
// address (private, metadata, rebinding) without a packet leaving loopback.
// The server is safe for concurrent use.
package dnstest

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// Answer returns the addresses for name (lower case, no trailing dot);
// aQueries is how many A queries for name came before this one. nil means
// NXDOMAIN.
type Answer func(name string, aQueries int) []netip.Addr

// Server is a fake DNS server.
type Server struct {
	pc      net.PacketConn
	answer  Answer
	mu      sync.Mutex
	queries map[string]int
	names   map[string]Answer // per-name answers set after Start
	done    chan struct{}
}

// Set makes name (lower case, no trailing dot) answer from answer from now
// on, ahead of the Answer the server started with.
func (s *Server) Set(name string, answer Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		s.names = map[string]Answer{}
	}
	s.names[name] = answer
}

// Start starts a server on 127.0.0.1.
func Start(answer Answer) (*Server, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{pc: pc, answer: answer, queries: map[string]int{}, done: make(chan struct{})}
	go s.serve()
	return s, nil
}

// Static returns an Answer from a fixed table.
func Static(table map[string][]netip.Addr) Answer {
	return func(name string, _ int) []netip.Addr { return table[name] }
}

// Close stops the server and waits for it.
func (s *Server) Close() {
	s.pc.Close()
	<-s.done
}

// Addr is the server's address.
func (s *Server) Addr() string { return s.pc.LocalAddr().String() }

// Resolver returns a Go resolver that sends every query to s.
func (s *Server) Resolver() *net.Resolver {
	addr := s.Addr()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

// AQueries is how many A queries for name the server has answered.
func (s *Server) AQueries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[name]
}

func (s *Server) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if resp, err := s.respond(buf[:n]); err == nil {
			_, _ = s.pc.WriteTo(resp, from)
		}
	}
}

func (s *Server) respond(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
	s.mu.Lock()
	seen := s.queries[name]
	if q.Type == dnsmessage.TypeA {
		s.queries[name]++
	}
	answer := s.answer
	if a, ok := s.names[name]; ok {
		answer = a
	}
	s.mu.Unlock()

	addrs := answer(name, seen)
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if addrs == nil {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range addrs {
		hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			err = b.AResource(hdr, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			err = b.AAAAResource(hdr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, err
		}
	}
	return b.Finish()
}
