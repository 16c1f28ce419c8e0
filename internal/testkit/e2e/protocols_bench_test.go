//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/grpctest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
)

// The protocol benchmarks run client, sidecar and API in one process on
// loopback: compare "direct" with "sidecar" on the same machine and load,
// never across runs.

func quiet(c *sidecar.Config) { c.Log.Level = "info" }

// reportP50 reports the median of durations in microseconds.
func reportP50(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	if len(d) > 0 {
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
	}
}

// BenchmarkWebSocketEcho measures one echo round trip (a 64-byte text
// message out and back) on an open WebSocket, direct and through the
// sidecar (relay plus frame scrubbing).
func BenchmarkWebSocketEcho(b *testing.B) {
	e, ws := wsEnv(b, quiet)
	msg := []byte(`{"type":"message","channel":"C1","text":"hello from the bench"}`)
	run := func(b *testing.B, c *websocket.Conn) {
		ctx := context.Background()
		if _, _, err := c.Read(ctx); err != nil { // greeting
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, 1024)
		for b.Loop() {
			start := time.Now()
			if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.Read(ctx); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportP50(b, lat)
	}
	b.Run("direct", func(b *testing.B) {
		hc := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ws.CertPool(), ServerName: wsHost},
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", ws.Addr())
			},
		}}
		c, _, err := websocket.Dial(context.Background(), wsURL(wsHost, ws.Port(), "/socket"), &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		run(b, c)
	})
	b.Run("sidecar", func(b *testing.B) {
		c, _, err := dialWS(context.Background(), e, wsURL(wsHost, ws.Port(), "/socket"), e.Assert(b, testenv.User))
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		run(b, c)
	})
}

// BenchmarkMultiplexed sends GETs through the sidecar from 32 concurrent
// workers: over one tunnel as HTTP/2 streams, and over 32 HTTP/1.1
// tunnels. It reports requests per second.
func BenchmarkMultiplexed(b *testing.B) {
	const workers = 32
	e := testenv.New(b, testenv.Options{Config: quiet})
	assertion := e.Assert(b, testenv.User)
	url := e.APIURL("/api/conversations.list")
	clients := map[string]func(*atomic.Int32) *http.Client{
		"h2-1conn": func(d *atomic.Int32) *http.Client { return h2Client(e, d) },
		"http1.1-32conns": func(d *atomic.Int32) *http.Client {
			dd := &net.Dialer{}
			return &http.Client{Transport: &http.Transport{
				Proxy:               http.ProxyURL(e.ProxyURL()),
				TLSClientConfig:     &tls.Config{RootCAs: e.CAPool()},
				MaxConnsPerHost:     workers,
				MaxIdleConnsPerHost: workers,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					d.Add(1)
					return dd.DialContext(ctx, network, addr)
				},
			}}
		},
	}
	for _, name := range []string{"h2-1conn", "http1.1-32conns"} {
		b.Run(name, func(b *testing.B) {
			var dials atomic.Int32
			c := clients[name](&dials)
			get := func() {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Onbehalf-Assertion", assertion)
				resp, err := c.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			// Warm every connection (one for h2, 32 for HTTP/1.1): one
			// request first, so that HTTP/2's streams share its tunnel.
			get()
			var wg sync.WaitGroup
			for range workers {
				wg.Go(get)
			}
			wg.Wait()
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			start := time.Now()
			for range workers {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						get()
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			b.ReportMetric(float64(dials.Load()), "conns")
		})
	}
}

// BenchmarkGRPCUnary measures a unary gRPC call's latency, direct and
// through the sidecar; the difference of the p50s is what the sidecar
// adds.
func BenchmarkGRPCUnary(b *testing.B) {
	g, err := grpctest.Start(grpcHost)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(g.Close)
	e := testenv.New(b, testenv.Options{
		Policy:   grpcPolicy,
		TrustPEM: [][]byte{g.CACertPEM()},
		DNS:      map[string][]netip.Addr{grpcHost: {netip.MustParseAddr("127.0.0.1")}},
		Config: func(c *sidecar.Config) {
			quiet(c)
			c.Routes = append(c.Routes, injector.RouteConfig{Name: "chat-grpc", Host: grpcHost, Port: g.Port(), Provider: testenv.Provider})
		},
	})
	target := fmt.Sprintf("%s:%d", grpcHost, g.Port())
	direct := func(ctx context.Context, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", g.Port()))
	}
	viaSidecar := func(ctx context.Context, addr string) (net.Conn, error) {
		c, resp, err := e.Connect(addr, "")
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			c.Close()
			return nil, fmt.Errorf("CONNECT: %s", resp.Status)
		}
		return c, nil
	}
	pool := e.CAPool()
	pool.AppendCertsFromPEM(g.CACertPEM())
	for _, tc := range []struct {
		name string
		dial func(context.Context, string) (net.Conn, error)
	}{{"direct", direct}, {"sidecar", viaSidecar}} {
		b.Run(tc.name, func(b *testing.B) {
			conn, err := grpc.NewClient("passthrough:///"+target,
				grpc.WithContextDialer(tc.dial),
				grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})),
				grpc.WithDefaultCallOptions(grpc.CallContentSubtype(grpctest.Codec{}.Name())))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			ctx := metadata.AppendToOutgoingContext(context.Background(), "onbehalf-assertion", e.Assert(b, testenv.User))
			call := func() {
				var out grpctest.Message
				if err := conn.Invoke(ctx, grpctest.Say, &grpctest.Message{Text: "hi"}, &out); err != nil {
					b.Fatal(err)
				}
			}
			call()
			lat := make([]time.Duration, 0, 1024)
			for b.Loop() {
				start := time.Now()
				call()
				lat = append(lat, time.Since(start))
			}
			reportP50(b, lat)
		})
	}
}
