// Package grpctest runs a real gRPC server (google.golang.org/grpc, its own
// HTTP/2 transport) on a loopback TLS listener, for the end-to-end tests of
// gRPC through the sidecar. Its one service is registered by hand (no
// generated code) and speaks JSON through a codec registered as "json",
// so calls carry content-type application/grpc+json:
//
//	/onbehalf.test.Chat/Say    unary: Message{Text} → Message{Text: "you said " + Text, Auth: scheme}
//	/onbehalf.test.Chat/Count  server streaming: Message{N} → N messages {Text: "tick i"}
//
// Every call's incoming metadata is recorded. A Server is safe for
// concurrent use.
package grpctest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// Message is the request and reply of both methods.
type Message struct {
	Text string `json:"text,omitempty"`
	N    int    `json:"n,omitempty"`
	// Auth is the scheme of the authorization metadata the server saw
	// (never its value).
	Auth string `json:"auth,omitempty"`
}

// Codec marshals messages as JSON; it is registered under its Name.
type Codec struct{}

// Name is the content subtype: application/grpc+json.
func (Codec) Name() string { return "json" }

// Marshal encodes v.
func (Codec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes data into v.
func (Codec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func init() { encoding.RegisterCodec(Codec{}) }

// Service and method names.
const (
	Service = "onbehalf.test.Chat"
	Say     = "/" + Service + "/Say"
	Count   = "/" + Service + "/Count"
)

// Server is the gRPC server.
type Server struct {
	g     *grpc.Server
	ln    net.Listener
	caPEM []byte
	pool  *x509.CertPool

	mu sync.Mutex
	md []metadata.MD
}

// Start serves on a free loopback port with a certificate for names.
func Start(names ...string) (*Server, error) {
	ca, err := testpki.NewCA("grpctest CA")
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
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	s.g = grpc.NewServer(grpc.Creds(creds))
	s.g.RegisterService(&grpc.ServiceDesc{
		ServiceName: Service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Say",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var in Message
				if err := dec(&in); err != nil {
					return nil, err
				}
				return &Message{Text: "you said " + in.Text, Auth: s.record(ctx)}, nil
			},
		}},
		Streams: []grpc.StreamDesc{{
			StreamName:    "Count",
			ServerStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				auth := s.record(stream.Context())
				var in Message
				if err := stream.RecvMsg(&in); err != nil {
					return err
				}
				for i := 1; i <= in.N; i++ {
					if err := stream.SendMsg(&Message{Text: fmt.Sprintf("tick %d", i), Auth: auth}); err != nil {
						return err
					}
				}
				return nil
			},
		}},
	}, nil)
	go func() { _ = s.g.Serve(ln) }()
	return s, nil
}

// record keeps a call's metadata and returns its authorization scheme.
func (s *Server) record(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.md = append(s.md, md.Copy())
	s.mu.Unlock()
	if v := md.Get("authorization"); len(v) > 0 {
		scheme, _, _ := strings.Cut(v[0], " ")
		return scheme
	}
	return ""
}

// Metadata returns the metadata of every call received.
func (s *Server) Metadata() []metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]metadata.MD(nil), s.md...)
}

// Port is the listening port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// CACertPEM is the CA that signed the server's certificate.
func (s *Server) CACertPEM() []byte { return s.caPEM }

// Close stops the server.
func (s *Server) Close() { s.g.Stop() }
