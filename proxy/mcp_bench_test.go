package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/mcptest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// mcpBench is a go-sdk MCP server behind an MCP route, with the
// mcp_tools example policy, and two clients: through the sidecar with an
// assertion, and straight to the server with the token.
type mcpBench struct {
	e              *testenv.Env
	proxied        *http.Client
	direct         *http.Client
	assertion      string
	proxyURL, dURL func(path string) string
}

func newMCPBench(b *testing.B) *mcpBench {
	srv := mcptest.New(mcptest.Options{Verify: mcptest.StaticVerifier(testenv.CanaryToken, testenv.User, nil)})
	b.Cleanup(srv.Close)
	e := testenv.New(b, testenv.Options{
		Upstream: upstreamtest.Options{Handler: srv.Handler()},
		Config: func(c *sidecar.Config) {
			c.Log.Level = "info"
			c.Routes[0].MCP = true
			c.Policy.Paths = []string{filepath.Join("..", "examples", "policies", "mcp_tools")}
		},
	})
	return &mcpBench{
		e:         e,
		proxied:   e.Client(),
		direct:    &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfigFor(e)}},
		assertion: e.Assert(b, testenv.User),
		proxyURL:  e.APIURL,
		dURL:      func(path string) string { return fmt.Sprintf("https://127.0.0.1:%d%s", e.Upstream.Port(), path) },
	}
}

// post sends one JSON-RPC message, through the sidecar or directly (then
// with the token the sidecar would inject).
func (m *mcpBench) post(b *testing.B, proxied bool, path, session, body string) *http.Response {
	c, url := m.direct, m.dURL(path)
	if proxied {
		c, url = m.proxied, m.proxyURL(path)
	}
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	if proxied {
		req.Header.Set(identity.DefaultHeader, m.assertion)
	} else {
		req.Header.Set("Authorization", "Bearer "+testenv.CanaryToken)
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		body, _ := io.ReadAll(resp.Body)
		b.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	return resp
}

// reportPercentiles reports the p50 and p99 of d in microseconds.
func reportPercentiles(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// BenchmarkMCPToolCall is one tools/call round trip on the stateless JSON
// endpoint (a JSON-RPC POST answered with application/json), through the
// sidecar and directly: the difference is what an MCP route adds (body
// read and parse, a decision on input.mcp, injection, audit).
func BenchmarkMCPToolCall(b *testing.B) {
	m := newMCPBench(b)
	const body = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search_issues","arguments":{"query":"is:open label:bug","limit":3}}}`
	for _, via := range []string{"sidecar", "direct"} {
		b.Run(via, func(b *testing.B) {
			call := func() {
				resp := m.post(b, via == "sidecar", mcptest.PathMCPJSON, "", body)
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !bytes.Contains(out, []byte("found 3 issues")) {
					b.Fatalf("answer %s", out)
				}
			}
			call() // warm the tunnel, the leaf, the caches
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				call()
				lat = append(lat, time.Since(start))
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkMCPFirstEvent is the time from sending a tools/call on the SSE
// endpoint to reading the first event of its stream (a progress
// notification the tool sends after 1 ms), through the sidecar and
// directly: events must be relayed as they come, never held back.
func BenchmarkMCPFirstEvent(b *testing.B) {
	m := newMCPBench(b)
	for _, via := range []string{"sidecar", "direct"} {
		b.Run(via, func(b *testing.B) {
			proxied := via == "sidecar"
			resp := m.post(b, proxied, mcptest.PathMCP, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}`)
			session := resp.Header.Get("Mcp-Session-Id")
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			resp = m.post(b, proxied, mcptest.PathMCP, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			resp.Body.Close()
			const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"count_slowly","arguments":{"n":2,"interval_ms":1},"_meta":{"progressToken":"p"}}}`
			first := func() time.Duration {
				start := time.Now()
				resp := m.post(b, proxied, mcptest.PathMCP, session, body)
				defer resp.Body.Close()
				br := bufio.NewReader(resp.Body)
				var d time.Duration
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						if d == 0 {
							b.Fatalf("stream ended without an event: %v", err)
						}
						return d
					}
					if d == 0 && strings.HasPrefix(line, "data:") && strings.Contains(line, "notifications/progress") {
						d = time.Since(start)
					}
				}
			}
			first()
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				lat = append(lat, first())
			}
			reportPercentiles(b, lat)
		})
	}
}
