//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/grpctest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
)

// grpcHost is the routed gRPC API.
const grpcHost = "grpc.chat.test"

// grpcClientEnv makes the test binary run grpcClientMain instead of the
// tests (see TestMain).
const grpcClientEnv = "ONBEHALF_E2E_GRPC_CLIENT"

// grpcPolicy allows identified users on routes, except mallory.
const grpcPolicy = `package onbehalf.authz

default decision := {"allow": false, "reason": "no rule allowed this request"}

decision := {"allow": true, "reason": "identified user on a route"} if {
	input.subject.user != ""
	input.subject.user != "mallory"
	input.route.provider != ""
}

decision := {"allow": false, "reason": "mallory may not call anything"} if {
	input.subject.user == "mallory"
	input.request.protocol == "grpc"
}
`

// grpcResult is what the client process prints for one call.
type grpcResult struct {
	Method   string              `json:"method"`
	Code     string              `json:"code"`
	Message  string              `json:"message"`
	Replies  []grpctest.Message  `json:"replies"`
	Header   map[string][]string `json:"header"`
	Trailer  map[string][]string `json:"trailer"`
	Duration float64             `json:"duration_ms"`
}

// grpcClientMain is a grpc-go client through the sidecar, configured from
// the environment like an agent: HTTPS_PROXY, ONBEHALF_CA,
// ONBEHALF_ASSERTION (may be empty) and GRPC_TARGET (host:port). It calls
// Say and Count and prints one JSON line per call.
func grpcClientMain() int {
	pem, err := os.ReadFile(os.Getenv("ONBEHALF_CA"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conn, err := grpc.NewClient(os.Getenv("GRPC_TARGET"),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(grpctest.Codec{}.Name())))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	md := []string{"authorization", "Bearer agent-own-credential"}
	if a := os.Getenv("ONBEHALF_ASSERTION"); a != "" {
		md = append(md, "onbehalf-assertion", a)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, md...)
	enc := json.NewEncoder(os.Stdout)
	finish := func(r *grpcResult, start time.Time, err error, hdr, trl metadata.MD) {
		st, _ := status.FromError(err)
		r.Code, r.Message = st.Code().String(), st.Message()
		r.Header, r.Trailer = hdr, trl
		r.Duration = float64(time.Since(start).Microseconds()) / 1000
		_ = enc.Encode(r)
	}

	for range 3 {
		var reply grpctest.Message
		var hdr, trl metadata.MD
		start := time.Now()
		err = conn.Invoke(ctx, grpctest.Say, &grpctest.Message{Text: "hi"}, &reply, grpc.Header(&hdr), grpc.Trailer(&trl))
		r := &grpcResult{Method: "Say"}
		if err == nil {
			r.Replies = []grpctest.Message{reply}
		}
		finish(r, start, err, hdr, trl)
	}

	start := time.Now()
	r := &grpcResult{Method: "Count"}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, grpctest.Count)
	if err == nil {
		err = stream.SendMsg(&grpctest.Message{N: 5})
	}
	if err == nil {
		err = stream.CloseSend()
	}
	for err == nil {
		var m grpctest.Message
		if err = stream.RecvMsg(&m); err == nil {
			r.Replies = append(r.Replies, m)
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	var hdr, trl metadata.MD
	if stream != nil {
		hdr, _ = stream.Header()
		trl = stream.Trailer()
	}
	finish(r, start, err, hdr, trl)
	return 0
}

// TestGRPC calls a real gRPC server (grpc-go) through the sidecar from a
// grpc-go client that finds the sidecar in HTTPS_PROXY: unary and server
// streaming calls succeed with the user's token in the server's
// authorization metadata; identity, policy and grant refusals arrive as
// gRPC statuses with the stable code and decision id.
func TestGRPC(t *testing.T) {
	g, err := grpctest.Start(grpcHost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	e := testenv.New(t, testenv.Options{
		Policy:   grpcPolicy,
		TrustPEM: [][]byte{g.CACertPEM()},
		DNS:      map[string][]netip.Addr{grpcHost: {netip.MustParseAddr("127.0.0.1")}},
		Config: func(c *sidecar.Config) {
			c.Routes = append(c.Routes, injector.RouteConfig{Name: "chat-grpc", Host: grpcHost, Port: g.Port(), Provider: testenv.Provider})
		},
	})
	target := fmt.Sprintf("%s:%d", grpcHost, g.Port())
	run := func(t *testing.T, assertion string) []grpcResult {
		t.Helper()
		env := append(agentEnv(e, assertion), grpcClientEnv+"=1", "GRPC_TARGET="+target)
		out, _ := runClient(t, env, t.TempDir(), os.Args[0])
		var rs []grpcResult
		dec := json.NewDecoder(strings.NewReader(out))
		for {
			var r grpcResult
			if err := dec.Decode(&r); err != nil {
				break
			}
			rs = append(rs, r)
		}
		if len(rs) != 4 {
			t.Fatalf("client printed %d results; want 4:\n%s", len(rs), out)
		}
		if strings.Contains(out, testenv.CanaryToken) {
			t.Error("the gRPC client received the injected token")
		}
		return rs
	}

	t.Run("allowed", func(t *testing.T) {
		rs := run(t, e.Assert(t, testenv.User))
		for _, r := range rs[:3] {
			if r.Code != "OK" || len(r.Replies) != 1 || r.Replies[0].Text != "you said hi" || r.Replies[0].Auth != "Bearer" {
				t.Errorf("Say: %+v; want OK with the reply", r)
			}
		}
		c := rs[3]
		if c.Code != "OK" || len(c.Replies) != 5 || c.Replies[4].Text != "tick 5" {
			t.Errorf("Count: %+v; want OK with 5 messages", c)
		}
		mds := g.Metadata()
		if len(mds) != 4 {
			t.Fatalf("the server saw %d calls; want 4", len(mds))
		}
		for _, md := range mds {
			if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+testenv.CanaryToken {
				t.Errorf("server authorization metadata %q; want exactly the user's token", redactAll(got))
			}
			if len(md.Get("onbehalf-assertion")) != 0 {
				t.Error("the assertion reached the server")
			}
		}
		id := c.Header["onbehalf-decision-id"]
		if len(id) != 1 {
			t.Fatalf("Count's header metadata %v; want onbehalf-decision-id", c.Header)
		}
		rec := e.WaitRecord(t, id[0])
		if rec["protocol"] != "grpc" || rec["path"] != grpctest.Count || rec["user"] != testenv.User || rec["status"] != float64(200) {
			t.Errorf("audit record %v; want protocol grpc, path %s, alice, 200", rec, grpctest.Count)
		}
	})

	refusals := []struct {
		name, user, code, errCode string
	}{
		{"no assertion", "", "Unauthenticated", "identity_required"},
		{"policy", "mallory", "PermissionDenied", "policy_denied"},
		{"no grant", "bob", "Unauthenticated", "grant_missing"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			assertion := ""
			if tt.user != "" {
				assertion = e.Assert(t, tt.user)
			}
			before := len(g.Metadata())
			for _, r := range run(t, assertion) {
				if r.Code != tt.code || !strings.HasPrefix(r.Message, tt.errCode+": ") || !strings.Contains(r.Message, "(decision_id ") {
					t.Errorf("%s: %s %q; want %s with %q and the decision id", r.Method, r.Code, r.Message, tt.code, tt.errCode)
				}
				if got := r.Trailer["onbehalf-error"]; len(got) != 1 || got[0] != tt.errCode {
					t.Errorf("%s: onbehalf-error metadata %v; want %s", r.Method, got, tt.errCode)
				}
				if tt.errCode == "grant_missing" && !strings.Contains(r.Message, "connect_url https://connect.test/connect/chat") {
					t.Errorf("%s: message %q; want the connect URL", r.Method, r.Message)
				}
			}
			if n := len(g.Metadata()); n != before {
				t.Errorf("%d refused calls reached the server", n-before)
			}
		})
	}
}
