//go:build integration

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/rawupstream"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// hostileHost is the routed name of the hand-written upstream.
const hostileHost = "hostile.test"

// hostileEnv starts a hand-written TLS upstream serving h, routed as
// hostileHost for the test provider, and a sidecar in front of it; edit
// changes the sidecar config further.
func hostileEnv(t *testing.T, h rawupstream.Handler, edit func(*sidecar.Config)) (*testenv.Env, *rawupstream.Server) {
	t.Helper()
	up, err := rawupstream.Start([]string{hostileHost}, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	e := testenv.New(t, testenv.Options{
		DNS:      map[string][]netip.Addr{hostileHost: {netip.MustParseAddr("127.0.0.1")}},
		TrustPEM: [][]byte{up.CACertPEM()},
		Config: func(c *sidecar.Config) {
			c.Routes = append(c.Routes, injector.RouteConfig{Name: "hostile", Host: hostileHost, Port: up.Port(), Provider: testenv.Provider})
			if edit != nil {
				edit(c)
			}
		},
	})
	return e, up
}

// hostileURL is https://hostileHost:port/path.
func hostileURL(up *rawupstream.Server, path string) string {
	return fmt.Sprintf("https://%s:%d%s", hostileHost, up.Port(), path)
}

// discardBody reads a request's body away (Content-Length or chunked).
func discardBody(c *rawupstream.Conn, req *http.Request) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
	}
}

// TestUpstreamResponseHeaderLimit has the upstream answer with a header
// section far over proxy.upstream.max_response_header_bytes (one 64 MiB
// line; a few MiB in many lines), on both upstream paths (a request whose
// body is in memory, and a streamed upload). The agent gets 502
// upstream_invalid and none of the header, the sidecar reads no more than
// about the limit (bytes allocated while serving stay far below the
// header's size) and its heap is back to where it was afterwards.
func TestUpstreamResponseHeaderLimit(t *testing.T) {
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	e, up := hostileEnv(t, func(c *rawupstream.Conn) {
		for {
			req, err := c.ReadRequest()
			if err != nil {
				return
			}
			discardBody(c, req)
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			switch req.URL.Path {
			case "/one-line":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: ")
				for range 1024 { // 64 MiB
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
				io.WriteString(c, "\r\n\r\n")
			case "/many-lines":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n")
				line := "X-Many: " + strings.Repeat("m", 1000) + "\r\n"
				for range 3000 { // about 3 MiB
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
				io.WriteString(c, "\r\n")
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	}, nil)
	assertion := e.Assert(t, testenv.User)
	client := e.Client()
	do := func(t *testing.T, method, path string, body io.Reader) (*http.Response, errorBody) {
		t.Helper()
		req, _ := http.NewRequest(method, hostileURL(up, path), body)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if resp.StatusCode == http.StatusOK {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp, errorBody{}
		}
		return resp, readError(t, resp)
	}
	// Warm up (TLS sessions, leaf certificate, policy, token cache), then
	// take the baseline.
	if resp, _ := do(t, "GET", "/ok", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	tests := []struct {
		name, method, path string
		body               func() io.Reader
	}{
		{"one 64 MiB line, in-memory body", "GET", "/one-line", nil},
		{"3 MiB of lines, in-memory body", "POST", "/many-lines", func() io.Reader { return strings.NewReader(`{"x":1}`) }},
		// A reader of unknown length: streamed upstream by net/http.
		{"one 64 MiB line, streamed body", "POST", "/one-line", func() io.Reader { return io.MultiReader(strings.NewReader(`{"x":`), strings.NewReader(`1}`)) }},
		{"3 MiB of lines, streamed body", "POST", "/many-lines", func() io.Reader { return io.MultiReader(strings.NewReader(`{"x":`), strings.NewReader(`1}`)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = tt.body()
			}
			resp, got := do(t, tt.method, tt.path, body)
			if resp.StatusCode != http.StatusBadGateway || got.Error != "upstream_invalid" {
				t.Errorf("got %d %s (%s); want 502 upstream_invalid", resp.StatusCode, got.Error, got.Message)
			}
			if resp.Header.Get("X-Big") != "" || resp.Header.Get("X-Many") != "" {
				t.Error("the oversized header reached the agent")
			}
		})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// The 64 MiB line alone would be 128 MiB of allocation if it were read
	// (twice, over both paths); bounded reading costs a few MiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Errorf("%d MiB allocated while refusing the oversized headers; want under 32 MiB (reading is bounded by the limit)", alloc>>20)
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Errorf("live heap grew by %d KiB; want it back to its baseline", grew>>10)
	}
	// The sidecar still works.
	if resp, _ := do(t, "GET", "/ok", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("after the refusals: %d; want 200", resp.StatusCode)
	}
}
