//go:build integration

package e2e

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/scrub"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
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

// echoSecrets is what the echoing upstream knows: the Authorization value
// it receives, plus secrets the test gives it (the refresh token and client
// secret, which a real API never sees, echoed to show they are scrubbed
// too).
type echoSecrets struct {
	mu    sync.Mutex
	extra []string
}

func (s *echoSecrets) set(v ...string) { s.mu.Lock(); s.extra = v; s.mu.Unlock() }
func (s *echoSecrets) get() []string   { s.mu.Lock(); defer s.mu.Unlock(); return s.extra }

// writeChunked writes body as a chunked body cut at every size in cuts (in
// turn), each chunk flushed on its own after a pause, so that the sidecar
// reads them separately; trailer, when set, is sent as a trailer field.
func writeChunked(c *rawupstream.Conn, body string, cuts []int, trailer string) {
	for i := 0; body != ""; i++ {
		n := min(cuts[i%len(cuts)], len(body))
		fmt.Fprintf(c, "%x\r\n%s\r\n", n, body[:n])
		body = body[n:]
		time.Sleep(2 * time.Millisecond)
	}
	io.WriteString(c, "0\r\n")
	if trailer != "" {
		io.WriteString(c, "X-Trailer-Echo: "+trailer+"\r\n")
	}
	io.WriteString(c, "\r\n")
}

// echoingUpstream answers like the worst API for a credential broker: it
// reflects the Authorization it receives (and the extra secrets) in the
// status line, in headers (WWW-Authenticate, Set-Cookie, Location, a
// header name), in bodies split across chunk and read boundaries, in a
// trailer, and in gzip, deflate and br bodies.
func echoingUpstream(secrets *echoSecrets) rawupstream.Handler {
	return func(c *rawupstream.Conn) {
		for {
			req, err := c.ReadRequest()
			if err != nil {
				return
			}
			discardBody(c, req)
			auth := req.Header.Get("Authorization")
			tok := strings.TrimPrefix(auth, "Bearer ")
			all := append([]string{tok}, secrets.get()...)
			body := "echo: " + auth + "\n" + strings.Join(all, " | ") + "\n" + strings.Repeat(tok, 3) + "\nend\n"
			if req.Method == http.MethodHead {
				// The head a GET would get, with no body.
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: 345\r\nX-Echo: %s\r\n\r\n", tok)
				continue
			}
			switch req.URL.Path {
			case "/headers":
				fmt.Fprintf(c, "HTTP/1.1 401 Unauthorized %s\r\n", tok)
				fmt.Fprintf(c, "WWW-Authenticate: Bearer realm=\"api\", error=\"invalid_token\", token=\"%s\"\r\n", tok)
				fmt.Fprintf(c, "Set-Cookie: session=%s; Secure; HttpOnly\r\n", tok)
				fmt.Fprintf(c, "Location: https://%s/next?access_token=%s\r\n", hostileHost, tok)
				fmt.Fprintf(c, "X-%s: name\r\n", tok)
				fmt.Fprintf(c, "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			case "/length-split":
				// A Content-Length body written in pieces that cut every
				// secret somewhere.
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(body))
				for i := 0; i < len(body); i += 7 {
					io.WriteString(c, body[i:min(i+7, len(body))])
					time.Sleep(time.Millisecond)
				}
			case "/chunked-split":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer-Echo\r\n\r\n")
				writeChunked(c, body, []int{5, 1, 13, 2}, tok)
			case "/gzip", "/deflate", "/deflate-raw", "/br":
				var buf bytes.Buffer
				var w io.WriteCloser
				coding := strings.TrimPrefix(req.URL.Path, "/")
				switch coding {
				case "gzip":
					w = gzip.NewWriter(&buf)
				case "deflate":
					w = zlib.NewWriter(&buf)
				case "deflate-raw":
					w, _ = flate.NewWriter(&buf, flate.BestSpeed)
					coding = "deflate"
				case "br":
					w = brotli.NewWriter(&buf)
				}
				io.WriteString(w, strings.Repeat(body, 50))
				w.Close()
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: %s\r\nETag: \"v1\"\r\nTransfer-Encoding: chunked\r\n\r\n", coding)
				writeChunked(c, buf.String(), []int{17, 3, 101}, "")
			case "/zstd":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Length: 4\r\n\r\n\x28\xb5\x2f\xfd")
			default:
				fmt.Fprintf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
			}
		}
	}
}

// TestResponseScrubbing: whatever the API echoes, in whatever framing and
// coding, the agent receives no secret of the grant — not the injected
// token, not the refresh token, not the client secret — the audit record
// counts what was replaced, and the metric adds it up. Go's client, curl and
// Python requests are the agents.
func TestResponseScrubbing(t *testing.T) {
	secrets := &echoSecrets{}
	prov := testenv.StartProvider(t, oauthtest.Options{})
	up, err := rawupstream.Start([]string{hostileHost}, echoingUpstream(secrets))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	e := testenv.New(t, testenv.Options{
		Provider: prov,
		DNS:      map[string][]netip.Addr{hostileHost: {netip.MustParseAddr("127.0.0.1")}},
		TrustPEM: [][]byte{up.CACertPEM()},
		Config: func(c *sidecar.Config) {
			c.Routes = append(c.Routes, injector.RouteConfig{Name: "hostile", Host: hostileHost, Port: up.Port(), Provider: testenv.Provider})
		},
	})
	secrets.set(e.RefreshToken, testenv.ProviderClientSecret)
	forbidden := map[string]string{
		"access token":  e.Token,
		"refresh token": e.RefreshToken,
		"client secret": testenv.ProviderClientSecret,
	}
	assertion := e.Assert(t, testenv.User)
	client := e.Client()
	// Go's transport would add Accept-Encoding: gzip and decode itself;
	// this client asks for each coding explicitly instead.
	client.Transport.(*http.Transport).DisableCompression = true
	var seen bytes.Buffer
	check := func(t *testing.T, where string, b []byte) {
		t.Helper()
		seen.Write(b)
		for what, s := range forbidden {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("the %s reached the agent in %s", what, where)
			}
		}
	}
	for _, tt := range []struct {
		path, acceptEncoding string
		status, min          int // expected status; least secrets replaced
	}{
		{"/headers", "", http.StatusUnauthorized, 10},
		{"/length-split", "", http.StatusOK, 6},
		{"/chunked-split", "", http.StatusOK, 7},
		{"/gzip", "gzip", http.StatusOK, 300},
		{"/deflate", "deflate", http.StatusOK, 300},
		{"/deflate-raw", "deflate", http.StatusOK, 300},
		{"/br", "br, zstd", http.StatusOK, 300},
	} {
		t.Run(tt.path, func(t *testing.T) {
			req, _ := http.NewRequest("GET", hostileURL(up, tt.path), nil)
			req.Header.Set(identity.DefaultHeader, assertion)
			if tt.acceptEncoding != "" {
				req.Header.Set("Accept-Encoding", tt.acceptEncoding)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			dump, err := httputil.DumpResponse(resp, true)
			if err != nil {
				t.Fatal(err)
			}
			check(t, tt.path, dump)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d; want %d", resp.StatusCode, tt.status)
			}
			if !bytes.Contains(dump, []byte(scrub.Marker)) {
				t.Errorf("no marker in the response:\n%s", dump)
			}
			if ce := resp.Header.Get("Content-Encoding"); ce != "" {
				t.Errorf("Content-Encoding %q; want the body relayed decoded", ce)
			}
			if tt.acceptEncoding != "" && resp.Header.Get("Etag") != `W/"v1"` {
				t.Errorf("ETag %q; want the weak W/\"v1\" of a decoded body", resp.Header.Get("Etag"))
			}
			if resp.Request.Method == "GET" && tt.path == "/headers" {
				check(t, "trailers", []byte(fmt.Sprint(resp.Trailer)))
			}
			rec := e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
			if n, _ := rec["scrubbed"].(float64); int(n) < tt.min {
				t.Errorf("audit scrubbed = %v; want at least %d", rec["scrubbed"], tt.min)
			}
		})
	}
	t.Run("trailer", func(t *testing.T) {
		req, _ := http.NewRequest("GET", hostileURL(up, "/chunked-split"), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Trailer.Get("X-Trailer-Echo"); got == "" || strings.Contains(got, e.Token) {
			t.Errorf("trailer %q; want it relayed, scrubbed", got)
		}
	})
	t.Run("HEAD of a compressed resource", func(t *testing.T) {
		req, _ := http.NewRequest("HEAD", hostileURL(up, "/gzip"), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		dump, _ := httputil.DumpResponse(resp, false)
		check(t, "HEAD", dump)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Content-Length") != "" {
			t.Errorf("HEAD: %d, Content-Encoding %q, Content-Length %q; want 200 and the head a decoded GET gets", resp.StatusCode, resp.Header.Get("Content-Encoding"), resp.Header.Get("Content-Length"))
		}
	})
	t.Run("undecodable coding refused", func(t *testing.T) {
		req, _ := http.NewRequest("GET", hostileURL(up, "/zstd"), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := readError(t, resp); resp.StatusCode != http.StatusBadGateway || got.Error != "upstream_invalid" {
			t.Errorf("got %d %s; want 502 upstream_invalid", resp.StatusCode, got.Error)
		}
	})
	t.Run("curl", func(t *testing.T) {
		for _, p := range []string{"/headers", "/chunked-split", "/gzip", "/br"} {
			out, errOut := runClient(t, agentEnv(e, assertion), t.TempDir(), "curl", "--silent", "--show-error", "--include", "--compressed",
				"-x", e.ProxyURL().String(), "--cacert", e.CAFile, "-H", "Onbehalf-Assertion: "+assertion, hostileURL(up, p))
			check(t, "curl "+p, []byte(out+errOut))
			if !strings.Contains(out, scrub.Marker) {
				t.Errorf("curl %s: no marker in %q", p, out)
			}
		}
	})
	t.Run("python-requests", func(t *testing.T) {
		script := `
import os, requests
for p in ["/headers", "/length-split", "/chunked-split", "/gzip", "/deflate", "/br"]:
    r = requests.get(os.environ["BASE"] + p, headers={"Onbehalf-Assertion": os.environ["ONBEHALF_ASSERTION"]},
        proxies={"https": os.environ["HTTPS_PROXY"]}, verify=os.environ["ONBEHALF_CA"], timeout=30)
    print(r.status_code, r.reason, dict(r.headers))
    print(r.text)
`
		env := append(agentEnv(e, assertion), "BASE="+hostileURL(up, ""))
		out, errOut := runClient(t, env, t.TempDir(), "/usr/bin/python3", "-c", script)
		check(t, "python requests", []byte(out+errOut))
		if !strings.Contains(out, scrub.Marker) {
			t.Errorf("python: no marker in %q", out)
		}
	})
	if !bytes.Contains(seen.Bytes(), []byte(scrub.Marker)) {
		t.Error("nothing was scrubbed; the test proves nothing")
	}
	// Nothing in the sidecar's own outputs either.
	for where, out := range map[string][]byte{"operational logs": e.Logs(), "audit trail": e.AuditRaw(t)} {
		for what, s := range forbidden {
			if bytes.Contains(out, []byte(s)) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
	}
	metrics := scrape(t, e, "onbehalf_")
	if !regexp.MustCompile(`(?m)^onbehalf_scrubbed_total [1-9]`).MatchString(metrics) {
		t.Errorf("onbehalf_scrubbed_total not counted:\n%s", linesContaining(metrics, "scrubbed"))
	}
}

// scrape returns the sidecar's /metrics text.
func linesContaining(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
