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

// lateResponder answers each request with a response and then, unasked, a
// second one naming the same user. The second response's TLS record is
// sent in the same write(2) as the last record of the first (sync) or a
// little later (while the connection sits idle in the sidecar's pool), so
// the sidecar reads it ahead into its TLS buffer or finds it waiting on
// the socket; with split, the second response's record is cut in two and
// only its first bytes come with the first response, the rest
// splitDelay later. users maps each injected Authorization value to a user
// name.
func lateResponder(users map[string]string, idleDelay time.Duration, split bool) rawupstream.Handler {
	return func(c *rawupstream.Conn) {
		for {
			req, err := c.ReadRequest()
			if err != nil {
				return
			}
			discardBody(c, req)
			who := users[req.Header.Get("Authorization")]
			if who == "" {
				who = "nobody"
			}
			body := "for=" + who + strings.Repeat(".", 200)
			// The head and all but the last byte of the body first; the
			// sidecar reads them and waits for the rest.
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:len(body)-1])
			time.Sleep(20 * time.Millisecond)
			late := "late-for=" + who
			second := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(late), late)
			if split {
				c.Hold()
				io.WriteString(c, body[len(body)-1:])
				io.WriteString(c, second)
				if c.FlushSplit() != nil {
					return
				}
				time.Sleep(splitDelay)
				if c.Flush() != nil {
					return
				}
				continue
			}
			if idleDelay == 0 {
				c.Hold()
				io.WriteString(c, body[len(body)-1:])
				io.WriteString(c, second)
				if c.Flush() != nil {
					return
				}
				continue
			}
			io.WriteString(c, body[len(body)-1:])
			time.Sleep(idleDelay)
			io.WriteString(c, second)
		}
	}
}

// splitDelay is how long the rest of a split late record waits: longer
// than the sidecar takes to write the next request.
const splitDelay = 100 * time.Millisecond

// TestLateResponseNotDelivered: an upstream that sends a second,
// unsolicited response after answering alice must not have it read as the
// answer to bob's next request on the pooled connection. Whether the late
// response was read ahead into the TLS layer's buffer together with the
// end of the first, or arrived while the connection was idle, the sidecar
// closes that connection instead of reusing it. With
// proxy.upstream.pool: per_user, bob never shares alice's connection at all.
func TestLateResponseNotDelivered(t *testing.T) {
	const bobToken = "bob-access-token-5d1e"
	users := map[string]string{"Bearer " + testenv.CanaryToken: "alice", "Bearer " + bobToken: "bob"}
	for _, tt := range []struct {
		name  string
		delay time.Duration
		split bool
		pool  string
	}{
		{"read ahead with the first response", 0, false, "shared"},
		{"first bytes read ahead, the rest later", 0, true, "shared"},
		{"arrives while idle", 50 * time.Millisecond, false, "shared"},
		{"pool per user", 0, false, "per_user"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, up := hostileEnv(t, lateResponder(users, tt.delay, tt.split), func(c *sidecar.Config) {
				setPool(c, tt.pool)
			})
			e.PutGrant(t, "bob", bobToken, time.Now().Add(time.Hour))
			client := e.Client()
			get := func(user string) string {
				t.Helper()
				req, _ := http.NewRequest("GET", hostileURL(up, "/data"), nil)
				req.Header.Set(identity.DefaultHeader, e.Assert(t, user))
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", user, err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return string(b)
			}
			if got := get("alice"); !strings.HasPrefix(got, "for=alice") {
				t.Fatalf("alice got %q", got)
			}
			for i := range 3 {
				// A late response that comes after the next request was
				// sent cannot be told from an answer to it: the test
				// waits for it to arrive first.
				time.Sleep(2 * tt.delay)
				if got := get("bob"); !strings.HasPrefix(got, "for=bob") {
					t.Fatalf("bob's request %d got %q; want his own answer", i, got)
				}
			}
			if tt.pool == "per_user" && up.Accepted() < 2 {
				t.Errorf("upstream accepted %d connections; want bob on a connection of his own", up.Accepted())
			}
		})
	}
}

// setPool sets proxy.upstream.pool.
func setPool(c *sidecar.Config, pool string) {
	c.Proxy.Upstream.Pool = pool
}
