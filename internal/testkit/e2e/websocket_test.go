//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/wstest"
)

// Hosts of the WebSocket tests: the same WebSocket API behind a route that
// allows WebSockets and one that does not.
const (
	wsHost   = "ws.chat.test"
	noWSHost = "nows.chat.test"
)

// wsPolicy allows identified users on routes, except WebSocket upgrades to
// paths under /denied.
const wsPolicy = `package onbehalf.authz

default decision := {"allow": false, "reason": "no rule allowed this request"}

decision := {"allow": true, "reason": "identified user on a route"} if {
	input.subject.user != ""
	input.route.provider != ""
	not denied_upgrade
}

decision := {"allow": false, "reason": "no WebSocket here"} if denied_upgrade

denied_upgrade if {
	input.request.upgrade == "websocket"
	input.request.protocol == "websocket"
	input.parsed_path[0] == "denied"
}
`

// wsEnv starts a WebSocket API and a sidecar routing wsHost (websocket:
// true) and noWSHost (not) to it.
func wsEnv(t testing.TB, edit func(*sidecar.Config)) (*testenv.Env, *wstest.Server) {
	t.Helper()
	ws, err := wstest.Start(wsHost, noWSHost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	e := testenv.New(t, testenv.Options{
		Policy:   wsPolicy,
		TrustPEM: [][]byte{ws.CACertPEM()},
		DNS:      map[string][]netip.Addr{wsHost: lo, noWSHost: lo},
		Config: func(c *sidecar.Config) {
			c.Routes = append(c.Routes,
				injector.RouteConfig{Name: "chat-ws", Host: wsHost, Port: ws.Port(), Provider: testenv.Provider, WebSocket: true},
				injector.RouteConfig{Name: "chat-nows", Host: noWSHost, Port: ws.Port(), Provider: testenv.Provider},
			)
			if edit != nil {
				edit(c)
			}
		},
	})
	return e, ws
}

func wsURL(host string, port int, path string) string {
	return "wss://" + host + ":" + strconv.Itoa(port) + path
}

// dialWS opens a WebSocket through the sidecar with coder/websocket, the
// agent's own Authorization header included (it must be replaced).
func dialWS(ctx context.Context, e *testenv.Env, url, assertion string) (*websocket.Conn, *http.Response, error) {
	hc := &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(e.ProxyURL()),
		TLSClientConfig: &tls.Config{RootCAs: e.CAPool()},
	}}
	h := http.Header{}
	h.Set("Onbehalf-Assertion", assertion)
	h.Set("Authorization", "Bearer agent-own-credential")
	return websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: hc, HTTPHeader: h,
		// Offered, and dropped by the sidecar: a compressed frame could
		// hide an echoed token.
		CompressionMode: websocket.CompressionContextTakeover,
	})
}

func readText(t *testing.T, ctx context.Context, c *websocket.Conn) string {
	t.Helper()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("message type %v; want text", typ)
	}
	return string(b)
}

// TestWebSocketGo opens a WebSocket through the sidecar with a Go client:
// greeting, echoes, a stream of server messages, the canary echo (whole and
// split one byte per frame) and a close code; then the audit record.
func TestWebSocketGo(t *testing.T) {
	e, ws := wsEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := dialWS(ctx, e, wsURL(wsHost, ws.Port(), "/socket?channel=C1"), e.Assert(t, testenv.User))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	id := resp.Header.Get("Onbehalf-Decision-Id")
	if id == "" {
		t.Fatal("101 without Onbehalf-Decision-Id")
	}
	if got := readText(t, ctx, c); got != wstest.Greeting {
		t.Errorf("greeting %q; want %q", got, wstest.Greeting)
	}
	for i := range 5 {
		msg := "ping " + strconv.Itoa(i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if got := readText(t, ctx, c); got != msg {
			t.Errorf("echo %q; want %q", got, msg)
		}
	}
	bin := []byte{0, 1, 2, 0xff, 0xfe}
	if err := c.Write(ctx, websocket.MessageBinary, bin); err != nil {
		t.Fatal(err)
	}
	if typ, got, err := c.Read(ctx); err != nil || typ != websocket.MessageBinary || string(got) != string(bin) {
		t.Errorf("binary echo %v %x %v; want %x", typ, got, err, bin)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("stream 50")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 50; i++ {
		if got, want := readText(t, ctx, c), "tick "+strconv.Itoa(i); got != want {
			t.Fatalf("server message %q; want %q", got, want)
		}
	}

	// The API echoes the upgrade request's headers, Authorization
	// included: the agent must not see the token.
	for _, ask := range []string{"headers", "headers-split"} {
		if err := c.Write(ctx, websocket.MessageText, []byte(ask)); err != nil {
			t.Fatal(err)
		}
		got := readText(t, ctx, c)
		if strings.Contains(got, testenv.CanaryToken) {
			t.Fatalf("%s: the agent received the injected token", ask)
		}
		// Split one byte per frame, at most the first wsHotPrefix-1
		// bytes can pass; whole, nothing.
		if strings.Contains(got, testenv.CanaryToken[7:]) {
			t.Errorf("%s: the agent received the token's last %d bytes", ask, len(testenv.CanaryToken)-7)
		}
		var echoed map[string][]string
		if err := json.Unmarshal([]byte(got), &echoed); err != nil {
			t.Fatalf("%s: echo is not the headers' JSON: %v", ask, err)
		}
		want := "Bearer [onbehalf:redacted]"
		if ask == "headers-split" {
			want = "Bearer " + testenv.CanaryToken[:7] + "lf:redacted]"
		}
		if auth := echoed["Authorization"]; len(auth) != 1 || !strings.HasPrefix(auth[0], want) {
			t.Errorf("%s: echoed Authorization %q; want it to start %q", ask, auth, want)
		}
	}

	// What reached the API: the injected token only, the handshake's own
	// headers, no extension offer, no assertion.
	hs := ws.Headers()
	if len(hs) != 1 {
		t.Fatalf("upgrade requests at the API: %d; want 1", len(hs))
	}
	h := hs[0]
	if got := h.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+testenv.CanaryToken {
		t.Errorf("API Authorization = %q; want exactly the injected token", redactAll(got))
	}
	for _, name := range []string{"Onbehalf-Assertion", "Sec-Websocket-Extensions", "Proxy-Authorization"} {
		if h.Get(name) != "" {
			t.Errorf("API received %s", name)
		}
	}
	if h.Get("Sec-Websocket-Key") == "" || h.Get("Sec-Websocket-Version") != "13" || !strings.EqualFold(h.Get("Upgrade"), "websocket") {
		t.Errorf("API handshake headers %v; want Sec-WebSocket-Key, -Version 13, Upgrade: websocket", h)
	}

	// A close code chosen by the API reaches the agent.
	if err := c.Write(ctx, websocket.MessageText, []byte("close 4001")); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != 4001 {
		t.Errorf("close status %v (%v); want 4001", got, err)
	}

	rec := e.WaitRecord(t, id)
	if rec["protocol"] != "websocket" || rec["status"] != float64(101) || rec["user"] != testenv.User ||
		rec["agent"] != testenv.Agent || rec["route"] != "chat-ws" || rec["decision"] != "allow" {
		t.Errorf("audit record %v; want protocol websocket, status 101, alice/agent-7 on chat-ws, allow", rec)
	}
	if in, out := rec["bytes_in"], rec["bytes_out"]; in == nil || out == nil || in.(float64) < 100 || out.(float64) < 1000 {
		t.Errorf("audit bytes_in %v bytes_out %v; want the frames each way", in, out)
	}
	if d, _ := rec["duration_ms"].(float64); d <= 0 {
		t.Errorf("audit duration_ms %v; want the connection's lifetime", rec["duration_ms"])
	}
	if strings.Contains(string(e.AuditRaw(t)), testenv.CanaryToken) || strings.Contains(string(e.Logs()), testenv.CanaryToken) {
		t.Error("the token is in the audit trail or the logs")
	}
}

// TestWebSocketRefused: a denied upgrade and an upgrade on a route that
// does not allow WebSockets get the usual JSON errors; nothing reaches the
// API.
func TestWebSocketRefused(t *testing.T) {
	e, ws := wsEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		name, url, code string
		status          int
	}{
		{"policy", wsURL(wsHost, ws.Port(), "/denied/socket"), "policy_denied", http.StatusForbidden},
		{"route without websocket", wsURL(noWSHost, ws.Port(), "/socket"), "bad_request", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, resp, err := dialWS(ctx, e, tt.url, e.Assert(t, testenv.User))
			if err == nil {
				c.CloseNow()
				t.Fatal("upgrade succeeded; want a refusal")
			}
			if resp == nil || resp.StatusCode != tt.status || resp.Header.Get("Onbehalf-Error") != tt.code {
				t.Fatalf("answer %v; want %d %s", resp, tt.status, tt.code)
			}
			rec := e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
			if rec["protocol"] != "websocket" || rec["error_code"] != tt.code {
				t.Errorf("audit record %v; want protocol websocket, error_code %s", rec, tt.code)
			}
		})
	}
	if n := len(ws.Headers()); n != 0 {
		t.Errorf("%d upgrade requests reached the API; want none", n)
	}
	// Without an assertion: identity_required, as for any request.
	_, resp, err := dialWS(ctx, e, wsURL(wsHost, ws.Port(), "/socket"), "")
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("upgrade without assertion: %v %v; want 401", resp, err)
	}
}

// TestWebSocketLimits: the sidecar ends a connection at its idle timeout
// and at its maximum lifetime, with close code 1001, and audits why.
func TestWebSocketLimits(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*sidecar.Config)
		ping   bool // keep the connection busy
		reason string
	}{
		{"idle", func(c *sidecar.Config) { c.Proxy.WebSocket.IdleTimeout = 500 * time.Millisecond }, false, "idle_timeout"},
		{"lifetime", func(c *sidecar.Config) { c.Proxy.WebSocket.MaxLifetime = 1500 * time.Millisecond }, true, "max_lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ws := wsEnv(t, tt.edit)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, resp, err := dialWS(ctx, e, wsURL(wsHost, ws.Port(), "/socket"), e.Assert(t, testenv.User))
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			readText(t, ctx, c) // greeting
			if tt.ping {
				go func() {
					for c.Write(ctx, websocket.MessageText, []byte("ping")) == nil {
						time.Sleep(100 * time.Millisecond)
					}
				}()
			}
			for {
				_, _, err := c.Read(ctx)
				if err != nil {
					if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
						t.Errorf("close status %v (%v); want 1001", got, err)
					}
					break
				}
			}
			rec := e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
			if !strings.Contains(rec["reason"].(string), tt.reason) {
				t.Errorf("audit reason %q; want it to name %s", rec["reason"], tt.reason)
			}
		})
	}
}

// nodeClients is the test-only Node package of WebSocket and HTTP/2
// clients (make agents installs it).
func nodeClients(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "internal", "testkit", "e2e", "testdata", "node")
	for _, pkg := range []string{"ws", "undici", "https-proxy-agent"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg)); err != nil {
			t.Fatalf("the Node test clients' dependencies are missing: run `make agents`: %v", err)
		}
	}
	return dir
}

// TestWebSocketClients opens WebSockets through the sidecar with real
// clients in other languages: Node's ws, undici's WebSocket and Python's
// websockets. Each sees the greeting, its echo, the header echo without
// the token, and the API's close code.
func TestWebSocketClients(t *testing.T) {
	e, ws := wsEnv(t, nil)
	node := nodeClients(t)
	py := filepath.Join(repoRoot(t), "internal", "testkit", "e2e", "testdata", "python", "websocket_client.py")
	url := wsURL(wsHost, ws.Port(), "/socket")
	tests := []struct {
		name string
		cmd  []string
	}{
		{"node-ws", []string{"node", "websocket.mjs", "ws", url}},
		{"node-undici", []string{"node", "websocket.mjs", "undici", url}},
		{"python-websockets", []string{"/usr/bin/python3", py, url}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _ := runClient(t, agentEnv(e, e.Assert(t, testenv.User)), node, tt.cmd[0], tt.cmd[1:]...)
			var got struct {
				Messages  []string `json:"messages"`
				CloseCode int      `json:"close_code"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("client output %q: %v", out, err)
			}
			if len(got.Messages) < 3 || got.Messages[0] != wstest.Greeting || !strings.HasPrefix(got.Messages[1], "echo from ") {
				t.Fatalf("messages %q; want the greeting, the echo and the headers", got.Messages)
			}
			if strings.Contains(out, testenv.CanaryToken) || !strings.Contains(got.Messages[2], "Bearer [onbehalf:redacted]") {
				t.Errorf("header echo %q; want the token redacted", got.Messages[2])
			}
			if got.CloseCode != 4001 {
				t.Errorf("close code %d; want 4001", got.CloseCode)
			}
		})
	}
	hs := ws.Headers()
	if len(hs) != len(tests) {
		t.Fatalf("upgrade requests at the API: %d; want %d", len(hs), len(tests))
	}
	for _, h := range hs {
		if got := h.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+testenv.CanaryToken || h.Get("Onbehalf-Assertion") != "" {
			t.Errorf("API Authorization %q, assertion present %v; want exactly the injected token and no assertion", redactAll(got), h.Get("Onbehalf-Assertion") != "")
		}
	}
}

// TestWebSocketRevoked: revoking the user's grant closes an open WebSocket
// (close code 1008) within token_cache.ttl plus
// proxy.websocket.revocation_check, and the record says why.
func TestWebSocketRevoked(t *testing.T) {
	e, ws := wsEnv(t, func(c *sidecar.Config) {
		c.TokenCache.TTL = 200 * time.Millisecond
		c.Proxy.WebSocket.RevocationCheck = 200 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := dialWS(ctx, e, wsURL(wsHost, ws.Port(), "/socket"), e.Assert(t, testenv.User))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	readText(t, ctx, c) // greeting
	// Still open after several checks while the grant exists.
	time.Sleep(700 * time.Millisecond)
	if err := c.Write(ctx, websocket.MessageText, []byte("still there")); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, ctx, c); got != "still there" {
		t.Fatalf("echo %q", got)
	}
	if err := e.Store.Delete(ctx, testenv.Provider, testenv.User); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
		t.Fatalf("close status %v (%v); want 1008", got, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed %v after the revocation; want within the cache TTL plus the check interval", d)
	}
	rec := e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
	if !strings.Contains(rec["reason"].(string), "grant_missing") {
		t.Errorf("audit reason %q; want grant_missing", rec["reason"])
	}
}
