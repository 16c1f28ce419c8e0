//go:build integration

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
)

// h2Client is an agent's Go client with HTTP/2 forced inside the tunnel;
// dials counts the connections it opens to the proxy.
func h2Client(e *testenv.Env, dials *atomic.Int32) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 20 * time.Second,
		Transport: &http.Transport{
			Proxy:           http.ProxyURL(e.ProxyURL()),
			TLSClientConfig: &tls.Config{RootCAs: e.CAPool()},
			// A custom TLS config turns HTTP/2 off unless forced.
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if dials != nil {
					dials.Add(1)
				}
				return d.DialContext(ctx, network, addr)
			},
		},
	}
}

// TestHTTP2Clients sends requests over HTTP/2 inside the tunnel from Go
// net/http, curl --http2 and Node undici with allowH2: each is one
// pipeline pass, injected and audited with protocol h2.
func TestHTTP2Clients(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	assertion := e.Assert(t, testenv.User)

	t.Run("go-net-http", func(t *testing.T) {
		e.Upstream.Reset()
		req, _ := http.NewRequest("POST", e.APIURL("/api/go-h2"), strings.NewReader(`{"text":"hi"}`))
		req.Header.Set("Onbehalf-Assertion", assertion)
		req.Header.Set("Authorization", "Bearer agent-own")
		resp, err := h2Client(e, nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("got %s %d %s; want HTTP/2.0 200", resp.Proto, resp.StatusCode, body)
		}
		checkArrived(t, e, "/api/go-h2")
		if got := e.Upstream.Requests()[0].Body; string(got) != `{"text":"hi"}` {
			t.Errorf("upstream body %q", got)
		}
		if rec := e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id")); rec["protocol"] != "h2" || rec["user"] != testenv.User {
			t.Errorf("audit record %v; want protocol h2 for alice", rec)
		}
	})

	t.Run("curl", func(t *testing.T) {
		e.Upstream.Reset()
		out, _ := runClient(t, agentEnv(e, assertion), t.TempDir(), "curl", "-sS", "--http2",
			"-x", e.ProxyURL().String(), "--cacert", e.CAFile,
			"-H", "Onbehalf-Assertion: "+assertion, "-D", "-",
			"-w", "\nversion=%{http_version}\n", e.APIURL("/api/curl-h2"))
		if !strings.Contains(out, "version=2\n") || !strings.Contains(out, "\nHTTP/2 200") {
			t.Fatalf("curl output %q; want HTTP/2 200", out)
		}
		checkArrived(t, e, "/api/curl-h2")
		id := headerLine(out, "onbehalf-decision-id")
		if rec := e.WaitRecord(t, id); rec["protocol"] != "h2" {
			t.Errorf("audit record %v; want protocol h2", rec)
		}
	})

	t.Run("node-undici", func(t *testing.T) {
		e.Upstream.Reset()
		out, _ := runClient(t, agentEnv(e, assertion), nodeClients(t), "node", "h2.mjs", e.APIURL("/api/undici-h2"), "8")
		var got []struct {
			Status int    `json:"status"`
			Path   string `json:"path"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 8 {
			t.Fatalf("undici output %q: %v", out, err)
		}
		for _, r := range got {
			if r.Status != 200 {
				t.Errorf("undici status %d for %s", r.Status, r.Path)
			}
		}
		for _, r := range e.Upstream.Requests() {
			if a := r.Header.Get("Authorization"); a != "Bearer "+testenv.CanaryToken {
				t.Errorf("upstream Authorization %q; want the injected token", redactAll([]string{a}))
			}
		}
		undici := func(rec map[string]any) bool {
			p, _ := rec["path"].(string)
			return strings.HasPrefix(p, "/api/undici-h2/")
		}
		n := 0
		for _, rec := range e.WaitRequestRecords(t, 8, undici) {
			if rec["event"] == "request" && undici(rec) {
				n++
				if rec["protocol"] != "h2" {
					t.Errorf("audit record %v; want protocol h2", rec)
				}
			}
		}
		if n != 8 {
			t.Errorf("%d audit records for undici's requests; want 8", n)
		}
	})
}

// headerLine returns a header's value from curl -D output.
func headerLine(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestHTTP2TwoUsersOneTunnel multiplexes 64 streams for two users on one
// tunnel: each stream is identified by its own assertion, gets its own
// user's token, and is audited to its own user.
func TestHTTP2TwoUsersOneTunnel(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	const bobToken = "canary-bob-token-5c2d7e19aa30"
	e.PutGrant(t, "bob", bobToken, time.Now().Add(time.Hour))
	tokens := map[string]string{testenv.User: testenv.CanaryToken, "bob": bobToken}
	assertions := map[string]string{testenv.User: e.Assert(t, testenv.User), "bob": e.Assert(t, "bob")}
	var dials atomic.Int32
	c := h2Client(e, &dials)
	get := func(user string, i int) (*http.Response, error) {
		req, _ := http.NewRequest("GET", e.APIURL(fmt.Sprintf("/api/%s/%d", user, i)), nil)
		req.Header.Set("Onbehalf-Assertion", assertions[user])
		return c.Do(req)
	}
	// One request first, so that the others share its connection.
	resp, err := get(testenv.User, -1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e.Upstream.Reset()

	const perUser = 32
	var wg sync.WaitGroup
	errs := make(chan error, 2*perUser)
	for _, user := range []string{testenv.User, "bob"} {
		for i := range perUser {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := get(user, i)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
					errs <- fmt.Errorf("%s %d: %s %d", user, i, resp.Proto, resp.StatusCode)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections to the proxy; want all streams on one", n)
	}
	reqs := e.Upstream.Requests()
	if len(reqs) != 2*perUser {
		t.Fatalf("%d requests upstream; want %d", len(reqs), 2*perUser)
	}
	for _, r := range reqs {
		user := strings.Split(r.Path, "/")[2]
		if got := r.Header.Get("Authorization"); got != "Bearer "+tokens[user] {
			t.Errorf("%s reached the API with another user's token", r.Path)
		}
	}
	// Each record names the user whose path it is (the sidecar writes a
	// record after answering: wait for all of them).
	userPath := func(rec map[string]any) []string {
		p, _ := rec["path"].(string)
		parts := strings.Split(p, "/")
		if len(parts) < 4 || parts[3] == "-1" {
			return nil
		}
		return parts
	}
	records := e.WaitRequestRecords(t, 2*perUser, func(rec map[string]any) bool { return userPath(rec) != nil })
	for _, rec := range records {
		parts := userPath(rec)
		if parts == nil || rec["event"] != "request" {
			continue
		}
		if rec["user"] != parts[2] || rec["protocol"] != "h2" {
			t.Errorf("record for %s names user %v, protocol %v", rec["path"], rec["user"], rec["protocol"])
		}
	}
}

// rawH2 is an HTTP/2 client connection written frame by frame, to send
// what ordinary clients refuse to.
type rawH2 struct {
	t *testing.T
	c *tls.Conn
	// settings holds what the server's SETTINGS frames said.
	settings map[http2.SettingID]uint32
	fr       *http2.Framer
	buf      bytes.Buffer
	enc      *hpack.Encoder
}

func dialRawH2(t *testing.T, e *testenv.Env, proxyAuth string) *rawH2 {
	t.Helper()
	target := e.Upstream.Addr()
	target = testenv.APIHost + target[strings.LastIndexByte(target, ':'):]
	c, resp, err := e.Connect(target, proxyAuth)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(c, &tls.Config{RootCAs: e.CAPool(), ServerName: testenv.APIHost, NextProtos: []string{"h2"}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q; want h2", p)
	}
	r := &rawH2{t: t, c: tc, settings: map[http2.SettingID]uint32{}}
	r.enc = hpack.NewEncoder(&r.buf)
	r.fr = http2.NewFramer(tc, tc)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(65536, nil)
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return r
}

// request sends a HEADERS frame with fields (pseudo-headers first, in the
// order given) that ends the stream.
func (r *rawH2) request(id uint32, fields ...string) error {
	r.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	// Blocks larger than the default frame size go on in CONTINUATION
	// frames, as a conforming client sends them.
	const maxFrame = 16 << 10
	block := r.buf.Bytes()
	first := block[:min(len(block), maxFrame)]
	block = block[len(first):]
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: true, EndHeaders: len(block) == 0}); err != nil {
		return err
	}
	for len(block) > 0 {
		chunk := block[:min(len(block), maxFrame)]
		block = block[len(chunk):]
		if err := r.fr.WriteContinuation(id, len(block) == 0, chunk); err != nil {
			return err
		}
	}
	return nil
}

// statuses reads frames until every stream in want has a status (or a
// reset), the connection ends, or timeout passes.
func (r *rawH2) statuses(want int, timeout time.Duration) (map[uint32]string, error) {
	got := map[uint32]string{}
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	for len(got) < want {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return got, err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" {
				code := ""
				for _, hf := range f.RegularFields() {
					if hf.Name == "onbehalf-error" {
						code = hf.Value
					}
				}
				got[f.StreamID] = s + " " + code
			}
		case *http2.RSTStreamFrame:
			got[f.StreamID] = "reset " + f.ErrCode.String()
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = f.ForeachSetting(func(s http2.Setting) error { r.settings[s.ID] = s.Val; return nil })
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			return got, fmt.Errorf("goaway %v", f.ErrCode)
		}
	}
	return got, nil
}

// TestHTTP2StreamBinding sends streams that break the tunnel binding
// beside good ones on one connection: each bad stream is refused with 400
// on its own, and the good ones pass.
func TestHTTP2StreamBinding(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	assertion := e.Assert(t, testenv.User)
	port := e.Upstream.Addr()[strings.LastIndexByte(e.Upstream.Addr(), ':'):]
	target := testenv.APIHost + port
	r := dialRawH2(t, e, "")
	e.Upstream.Reset()
	tests := []struct {
		name   string
		fields []string
		want   string
	}{
		{"good", []string{":method", "GET", ":scheme", "https", ":authority", target, ":path", "/api/good"}, "200 "},
		{"authority normalised", []string{":method", "GET", ":scheme", "https", ":authority", "API.Chat.Test." + port, ":path", "/api/norm"}, "200 "},
		{"other host", []string{":method", "GET", ":scheme", "https", ":authority", "evil.test" + port, ":path", "/api/x"}, "400 bad_request"},
		{"other port", []string{":method", "GET", ":scheme", "https", ":authority", testenv.APIHost + ":1", ":path", "/api/x"}, "400 bad_request"},
		{"default port", []string{":method", "GET", ":scheme", "https", ":authority", testenv.APIHost, ":path", "/api/x"}, "400 bad_request"},
		// The HTTP/2 server itself resets this one (RFC 9113 8.3.1).
		{"host header differs", []string{":method", "GET", ":scheme", "https", ":authority", target, ":path", "/api/x", "host", "evil.test" + port}, "reset PROTOCOL_ERROR"},
		{"scheme http", []string{":method", "GET", ":scheme", "http", ":authority", target, ":path", "/api/x"}, "400 bad_request"},
		{"dot segments", []string{":method", "GET", ":scheme", "https", ":authority", target, ":path", "/api/../admin"}, "400 bad_request"},
		{"no authority", []string{":method", "GET", ":scheme", "https", ":path", "/api/x"}, "400 bad_request"},
		{"host header only", []string{":method", "GET", ":scheme", "https", ":path", "/api/host-only", "host", target}, "200 "},
	}
	ids := map[uint32]int{}
	for i, tt := range tests {
		id := uint32(2*i + 1)
		ids[id] = i
		fields := append(tt.fields, "onbehalf-assertion", assertion)
		if err := r.request(id, fields...); err != nil {
			t.Fatal(err)
		}
	}
	got, err := r.statuses(len(tests), 10*time.Second)
	if err != nil {
		t.Fatalf("after %d answers: %v", len(got), err)
	}
	for id, i := range ids {
		if got[id] != tests[i].want {
			t.Errorf("%s: stream answered %q; want %q", tests[i].name, got[id], tests[i].want)
		}
	}
	for _, req := range e.Upstream.Requests() {
		if req.Path != "/api/good" && req.Path != "/api/norm" && req.Path != "/api/host-only" {
			t.Errorf("a refused stream reached the API: %s", req.Path)
		}
	}
	badStream := func(rec map[string]any) bool {
		return rec["protocol"] == "h2" && rec["error_code"] == "bad_request"
	}
	bad := 0
	for _, rec := range e.WaitRequestRecords(t, 6, badStream) {
		if badStream(rec) {
			bad++
		}
	}
	if bad != 6 {
		t.Errorf("%d audited bad_request streams; want 6", bad)
	}
}

// TestHTTP2RapidReset opens streams and resets each at once (CVE-2023-44487):
// the sidecar closes the connection after proxy.http2.max_resets of them.
func TestHTTP2RapidReset(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) { c.Proxy.HTTP2.MaxResets = 20 }})
	assertion := e.Assert(t, testenv.User)
	port := e.Upstream.Addr()[strings.LastIndexByte(e.Upstream.Addr(), ':'):]
	r := dialRawH2(t, e, assertion)
	const streams = 2000
	var werr error
	sent := 0
	for i := range streams {
		id := uint32(2*i + 1)
		if werr = r.request(id, ":method", "GET", ":scheme", "https", ":authority", testenv.APIHost+port, ":path", "/api/reset"); werr != nil {
			break
		}
		if werr = r.fr.WriteRSTStream(id, http2.ErrCodeCancel); werr != nil {
			break
		}
		sent++
	}
	// Whether or not the writes already failed, the connection must end.
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var err error
	for err == nil {
		_, err = r.fr.ReadFrame()
	}
	if strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the connection stayed open after %d reset streams", sent)
	}
	if !bytes.Contains(e.Logs(), []byte("resets too many streams")) {
		t.Errorf("no log line for the closed connection (sent %d streams; read error %v)", sent, err)
	}
	resp, herr := http.Get("http://" + e.Sidecar.AdminAddr() + "/metrics")
	if herr != nil {
		t.Fatal(herr)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`onbehalf_h2_connections_closed_total{reason="rapid_reset"} 1`)) {
		t.Error("metric onbehalf_h2_connections_closed_total{reason=\"rapid_reset\"} is not 1")
	}
}

// TestHTTP2Disabled: with proxy.http2.enabled off the tunnel offers only
// http/1.1, and a client that would speak HTTP/2 speaks HTTP/1.1.
func TestHTTP2Disabled(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) { c.Proxy.HTTP2.Enabled = false }})
	req, _ := http.NewRequest("GET", e.APIURL("/api/h1-only"), nil)
	req.Header.Set("Onbehalf-Assertion", e.Assert(t, testenv.User))
	resp, err := h2Client(e, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Fatalf("got %s %d; want HTTP/1.1 200", resp.Proto, resp.StatusCode)
	}
	if rec := e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id")); rec["protocol"] != "http/1.1" {
		t.Errorf("audit protocol %v; want http/1.1", rec["protocol"])
	}
}

// TestHTTP2Limits: the server advertises proxy.http2.max_concurrent_streams
// and the header list size, refuses a stream with more header fields than
// limits.max_header_count (431) and one whose header list is too large.
func TestHTTP2Limits(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Proxy.HTTP2.MaxConcurrentStreams = 7
		c.Proxy.Limits.MaxHeaderBytes = 16 << 10
		c.Proxy.Limits.MaxHeaderCount = 30
	}})
	assertion := e.Assert(t, testenv.User)
	port := e.Upstream.Addr()[strings.LastIndexByte(e.Upstream.Addr(), ':'):]
	base := []string{":method", "GET", ":scheme", "https", ":authority", testenv.APIHost + port, ":path", "/api/limits", "onbehalf-assertion", assertion}
	r := dialRawH2(t, e, "")
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("x-field-%d", i), "v")
	}
	if err := r.request(1, base...); err != nil {
		t.Fatal(err)
	}
	if err := r.request(3, append(append([]string{}, base...), many...)...); err != nil {
		t.Fatal(err)
	}
	// Three fields of 7 KiB: each fits, the list does not. (One field
	// longer than the whole limit is a connection error in x/net.)
	big := strings.Repeat("a", 7<<10)
	if err := r.request(5, append(append([]string{}, base...), "x-big-1", big, "x-big-2", big, "x-big-3", big)...); err != nil {
		t.Fatal(err)
	}
	got, err := r.statuses(3, 10*time.Second)
	if err != nil {
		t.Fatalf("after %v: %v", got, err)
	}
	if got[1] != "200 " || got[3] != "431 request_header_too_large" || !strings.HasPrefix(got[5], "431") {
		t.Errorf("answers %v; want 200, 431 request_header_too_large (field count), 431 (header list size)", got)
	}
	if v := r.settings[http2.SettingMaxConcurrentStreams]; v != 7 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d; want 7", v)
	}
	if v := r.settings[http2.SettingMaxHeaderListSize]; v < 16<<10 || v > 20<<10 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d; want about 16 KiB", v)
	}
}
