//go:build integration

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/mcptest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
)

// mcpEnv is a sidecar whose route is an MCP route to a real go-sdk MCP
// server, which verifies the tokens the test OAuth server issued; alice's
// grant is a real one from that server, and the policy is
// examples/policies/mcp_tools.
type mcpEnv struct {
	*testenv.Env
	as  *oauthtest.Server
	mcp *mcptest.Server
}

func newMCPEnv(t *testing.T, edit func(*sidecar.Config)) *mcpEnv {
	t.Helper()
	as := testenv.StartProvider(t, oauthtest.Options{})
	srv := mcptest.New(mcptest.Options{Verify: mcptest.Introspector(as, false), AuthorizationServers: []string{as.Issuer()}})
	t.Cleanup(srv.Close) // after the environment's cleanups
	e := testenv.New(t, testenv.Options{
		Provider: as,
		Upstream: upstreamtest.Options{Handler: srv.Handler()},
		Config: func(c *sidecar.Config) {
			c.Routes[0].MCP = true
			c.Policy.Paths = []string{filepath.Join(repoRoot(t), "examples", "policies", "mcp_tools")}
			if edit != nil {
				edit(c)
			}
		},
	})
	return &mcpEnv{Env: e, as: as, mcp: srv}
}

// mcpClient is an agent's MCP client session through the sidecar (the Go
// SDK's Streamable HTTP transport), holding only an assertion.
func (e *mcpEnv) mcpClient(t *testing.T, path, version string, progress func(*mcp.ProgressNotificationParams)) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		Proxy:              http.ProxyURL(e.ProxyURL()),
		TLSClientConfig:    &tls.Config{RootCAs: e.CAPool()},
		ProxyConnectHeader: http.Header{"Proxy-Authorization": {"Bearer " + e.Assert(t, testenv.User)}},
	}}
	opts := &mcp.ClientOptions{}
	if progress != nil {
		opts.ProgressNotificationHandler = func(_ context.Context, r *mcp.ProgressNotificationClientRequest) { progress(r.Params) }
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e-agent", Version: "1"}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.APIURL(path), HTTPClient: hc, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect through the sidecar: %v\nlogs: %s", err, e.Logs())
	}
	t.Cleanup(func() { cs.Close(); hc.CloseIdleConnections() })
	return cs
}

// rpcRefusal returns the sidecar's error body carried in a JSON-RPC
// error's data.
func rpcRefusal(t *testing.T, err error) (*jsonrpc.Error, errorBody) {
	t.Helper()
	var we *jsonrpc.Error
	if !errors.As(err, &we) {
		t.Fatalf("error %v (%T); want a JSON-RPC error from the sidecar", err, err)
	}
	var body errorBody
	if err := json.Unmarshal(we.Data, &body); err != nil {
		t.Fatalf("error data %s: %v", we.Data, err)
	}
	return we, body
}

func toolText(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if res.IsError || len(res.Content) == 0 {
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				t.Logf("tool error: %s", tc.Text)
			}
		}
		t.Fatalf("tool result %+v; want text", res)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("tool content %T; want text", res.Content[0])
	}
	return tc.Text
}

// TestMCPGoClient drives the Go SDK's client through the sidecar against
// the go-sdk server, in both protocol eras: 2026-07-28 (server/discover,
// stateless) and 2025-11-25 (initialize, Mcp-Session-Id, the GET stream),
// on the SSE endpoint and the JSON one.
func TestMCPGoClient(t *testing.T) {
	e := newMCPEnv(t, nil)
	for _, tt := range []struct {
		name, path, version, firstMethod string
	}{
		{"2026-07-28 sse", mcptest.PathMCP, "2026-07-28", "server/discover"},
		{"2025-11-25 sse", mcptest.PathMCP, "2025-11-25", "initialize"},
		{"2025-11-25 json", mcptest.PathMCPJSON, "2025-11-25", "initialize"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var progress []time.Time
			cs := e.mcpClient(t, tt.path, tt.version, func(*mcp.ProgressNotificationParams) {
				mu.Lock()
				progress = append(progress, time.Now())
				mu.Unlock()
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatalf("tools/list: %v", err)
			}
			var names []string
			for _, tool := range tools.Tools {
				names = append(names, tool.Name)
			}
			slices.Sort(names)
			// delete_repository is destructive: policy would refuse the
			// call, so the list does not show it (the call below is
			// still refused on its own).
			if want := []string{"count_slowly", "search_issues", "whoami"}; !slices.Equal(names, want) {
				t.Errorf("tools %v; want %v", names, want)
			}

			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
			if err != nil {
				t.Fatalf("whoami: %v", err)
			}
			if got := toolText(t, res); got != "you are "+testenv.User {
				t.Errorf("whoami = %q; the server saw another user", got)
			}

			// A streamed answer: progress events spaced in time, then the
			// result, relayed as they come.
			// (A JSON answer has no room for progress notifications.)
			streamed := tt.path == mcptest.PathMCP
			params := &mcp.CallToolParams{Name: "count_slowly", Arguments: map[string]any{"n": 4, "interval_ms": 80}}
			if streamed {
				params.Meta = mcp.Meta{"progressToken": "p-" + tt.name}
			}
			start := time.Now()
			res, err = cs.CallTool(ctx, params)
			if err != nil {
				t.Fatalf("count_slowly: %v", err)
			}
			if got := toolText(t, res); got != "counted to 4" {
				t.Errorf("count_slowly = %q", got)
			}
			end := time.Since(start)
			if streamed {
				// The last notification may reach the handler just
				// after the result.
				waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(progress) == 4 })
				mu.Lock()
				got := slices.Clone(progress)
				mu.Unlock()
				// Nothing buffered: the first event arrives long before the
				// answer is complete.
				if first := got[0].Sub(start); first > end-150*time.Millisecond {
					t.Errorf("first progress event after %v of %v: the stream was buffered", first, end)
				}
			}

			// A destructive tool: refused by policy as a JSON-RPC error
			// the client hands back as the call's error.
			_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "delete_repository", Arguments: map[string]any{"name": "acme/api"}})
			we, body := rpcRefusal(t, err)
			if we.Code != -31403 || body.Error != "policy_denied" || body.DecisionID == "" ||
				!strings.Contains(we.Message, "tool delete_repository is destructive") {
				t.Errorf("refusal code %d message %q body %+v; want -31403 policy_denied with the reason", we.Code, we.Message, body)
			}
			rec := e.WaitRecord(t, body.DecisionID)
			if rec["mcp_method"] != "tools/call" || rec["mcp_tool"] != "delete_repository" || rec["decision"] != "deny" || rec["error_code"] != "policy_denied" {
				t.Errorf("audit record of the refusal %v", rec)
			}

			// The session still works after a refusal.
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "search_issues", Arguments: map[string]any{"query": "bug"}}); err != nil {
				t.Errorf("search_issues after a refusal: %v", err)
			}
		})
	}

	for _, c := range e.mcp.Calls() {
		if c.Tool == "delete_repository" {
			t.Errorf("the destructive tool reached the server: %+v", c)
		}
		if c.User != testenv.User {
			t.Errorf("call %+v made as another user", c)
		}
	}
	checkMCPUpstream(t, e)
	checkMCPAudit(t, e)
}

// checkMCPUpstream: every request the MCP server received carried exactly
// alice's injected token and none of the agent's own credentials.
func checkMCPUpstream(t *testing.T, e *mcpEnv) {
	t.Helper()
	reqs := e.Upstream.Requests()
	if len(reqs) == 0 {
		t.Fatal("nothing reached the MCP server")
	}
	for _, r := range reqs {
		if auth := r.Header.Values("Authorization"); len(auth) != 1 || auth[0] != "Bearer "+e.Token {
			t.Errorf("%s %s arrived with Authorization %d values; want exactly alice's token", r.Method, r.Path, len(auth))
		}
		for name := range r.Header {
			if l := strings.ToLower(name); strings.HasPrefix(l, "proxy-") || l == "onbehalf-assertion" {
				t.Errorf("%s %s arrived with header %s", r.Method, r.Path, name)
			}
		}
	}
}

// checkMCPAudit: the audit trail names the MCP methods and tools, and no
// record holds a token.
func checkMCPAudit(t *testing.T, e *mcpEnv) {
	t.Helper()
	raw := e.AuditRaw(t)
	for _, secret := range []string{e.Token, e.RefreshToken} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatal("the audit trail holds a token")
		}
	}
	wants := []string{
		"tools/list  allow", "tools/call whoami allow", "tools/call count_slowly allow",
		"tools/call delete_repository deny", "tools/call search_issues allow",
	}
	var seen map[string]bool
	e.WaitAudit(t, func(records []map[string]any) bool {
		seen = map[string]bool{}
		for _, r := range records {
			if r["event"] != "request" {
				continue
			}
			if m, _ := r["mcp_method"].(string); m != "" {
				tool, _ := r["mcp_tool"].(string)
				seen[m+" "+tool+" "+r["decision"].(string)] = true
			}
		}
		for _, want := range wants {
			if !seen[want] {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("audit records %v; want each of %q", seen, wants) })
}

// TestMCPReconnectRequired: after the user revoked the app at the provider,
// the next call that needs a refresh is refused with reconnect_required and
// the connect URL, as a JSON-RPC error.
func TestMCPReconnectRequired(t *testing.T) {
	// No token cache: the next call reads the grant the test expired.
	e := newMCPEnv(t, func(c *sidecar.Config) { c.TokenCache.TTL = 0 })
	cs := e.mcpClient(t, mcptest.PathMCP, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"}); err != nil {
		t.Fatal(err)
	}
	if n := e.as.RevokeUser(testenv.User); n == 0 {
		t.Fatal("nothing revoked")
	}
	e.SetExpiry(t, testenv.User, time.Now().Add(-time.Minute))
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
	we, body := rpcRefusal(t, err)
	if we.Code != -31401 || body.Error != "reconnect_required" || body.ConnectURL != "https://connect.test/connect/chat" {
		t.Errorf("refusal code %d body %+v; want -31401 reconnect_required with the connect URL", we.Code, body)
	}
}

// mcpPost sends one raw POST to the MCP endpoint through the sidecar.
func mcpPost(t *testing.T, e *mcpEnv, body string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	c := e.Client()
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, e.APIURL(mcptest.PathMCPJSON), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	req.Header.Set("Onbehalf-Assertion", e.Assert(t, testenv.User))
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestMCPRefusals sends what real clients do not: malformed and ambiguous
// bodies, batches with a denied message, refused notifications, headers that
// contradict the body. Nothing of it may reach the server.
func TestMCPRefusals(t *testing.T) {
	e := newMCPEnv(t, nil)
	type rpcResp struct {
		ID    json.RawMessage `json:"id"`
		Error struct {
			Code    int       `json:"code"`
			Message string    `json:"message"`
			Data    errorBody `json:"data"`
		} `json:"error"`
	}
	tests := []struct {
		name   string
		body   string
		header http.Header
		status int
		code   int
		errKey string
		ids    []string
	}{
		{"not JSON", `{"jsonrpc":"2.0","id":1,"method":`, nil, 400, -32700, "bad_request", []string{"null"}},
		{"method differing in case", `{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"delete_repository"}}`, nil, 400, -32700, "bad_request", []string{"null"}},
		{"tool name differing in case", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_issues","Name":"delete_repository"}}`, nil, 400, -32700, "bad_request", []string{"null"}},
		{"tools/call without a name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, nil, 400, -32602, "bad_request", []string{"null"}},
		{"batch with a destructive call", `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_issues","arguments":{"query":"x"}}},{"jsonrpc":"2.0","method":"notifications/progress"},{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"delete_repository"}}]`, nil, 200, -31403, "policy_denied", []string{"1", `"b"`}},
		{"mirrored header contradicts the body", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search_issues"}}`, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"delete_repository"}}, 400, -32020, "bad_request", []string{"7"}},
		{"unknown method", `{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{}}`, nil, 200, -31403, "policy_denied", []string{"3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.Upstream.Requests())
			resp, b := mcpPost(t, e, tt.body, tt.header)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d (body %s)", resp.StatusCode, tt.status, b)
			}
			if got := resp.Header.Get("Onbehalf-Error"); got != tt.errKey {
				t.Errorf("Onbehalf-Error %q; want %q", got, tt.errKey)
			}
			var rs []rpcResp
			if bytes.HasPrefix(bytes.TrimSpace(b), []byte("[")) {
				if err := json.Unmarshal(b, &rs); err != nil {
					t.Fatalf("body %s: %v", b, err)
				}
			} else {
				var r rpcResp
				if err := json.Unmarshal(b, &r); err != nil {
					t.Fatalf("body %s: %v", b, err)
				}
				rs = append(rs, r)
			}
			var ids []string
			for _, r := range rs {
				ids = append(ids, string(r.ID))
				if r.Error.Code != tt.code || r.Error.Data.Error != tt.errKey || r.Error.Data.DecisionID != resp.Header.Get("Onbehalf-Decision-Id") {
					t.Errorf("error %+v; want code %d with %s and the decision id", r.Error, tt.code, tt.errKey)
				}
			}
			if !slices.Equal(ids, tt.ids) {
				t.Errorf("answered ids %v; want %v", ids, tt.ids)
			}
			if after := len(e.Upstream.Requests()); after != before {
				t.Errorf("%d requests reached the MCP server; want none", after-before)
			}
		})
	}

	t.Run("refused notification", func(t *testing.T) {
		// An unverified notification has no id to answer: the HTTP status
		// carries the refusal (the transport spec's rule for notifications).
		c := e.Client()
		defer c.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodPost, e.APIURL(mcptest.PathMCPJSON), strings.NewReader(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
		resp, err := c.Do(req) // no assertion
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var r rpcResp
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("body %s: %v", b, err)
		}
		if resp.StatusCode != http.StatusUnauthorized || string(r.ID) != "null" || r.Error.Code != -31401 || r.Error.Data.Error != "identity_required" {
			t.Errorf("status %d body %s; want 401 with a JSON-RPC identity_required error", resp.StatusCode, b)
		}
	})

	t.Run("body too large", func(t *testing.T) {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_issues","arguments":{"query":"` + strings.Repeat("x", 1<<20) + `"}}}`
		resp, b := mcpPost(t, e, body, nil)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Onbehalf-Error") != "request_body_too_large" {
			t.Errorf("status %d, body %.200s; want 413 request_body_too_large", resp.StatusCode, b)
		}
	})

	t.Run("allowed batch", func(t *testing.T) {
		before := len(e.mcp.Calls())
		resp, b := mcpPost(t, e, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"search_issues","arguments":{"query":"ok"}}}`, nil)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("found")) {
			t.Fatalf("status %d body %s; want the tool's answer", resp.StatusCode, b)
		}
		if len(e.mcp.Calls()) != before+1 {
			t.Errorf("the allowed call did not reach the server once")
		}
		rec := e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
		if rec["mcp_tool"] != "search_issues" || rec["decision"] != "allow" || rec["status"] != float64(200) {
			t.Errorf("audit record %v", rec)
		}
	})
}

// TestMCPStreamOutlivesIdleTimeout: an SSE answer that lasts several idle
// timeouts is relayed whole while its events keep coming, and its audit
// record is written at its end with the bytes and the duration.
func TestMCPStreamOutlivesIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	e := newMCPEnv(t, func(c *sidecar.Config) { c.Proxy.Limits.IdleTimeout = idle })
	var mu sync.Mutex
	n := 0
	cs := e.mcpClient(t, mcptest.PathMCP, "2025-11-25", func(*mcp.ProgressNotificationParams) { mu.Lock(); n++; mu.Unlock() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{
		Name: "count_slowly", Arguments: map[string]any{"n": 8, "interval_ms": 150}, Meta: mcp.Meta{"progressToken": 1},
	})
	if err != nil {
		t.Fatalf("count_slowly: %v\nlogs: %s", err, e.Logs())
	}
	took := time.Since(start)
	if got := toolText(t, res); got != "counted to 8" || took < 3*idle {
		t.Fatalf("result %q after %v; want the whole count, lasting well past the idle timeout %v", got, took, idle)
	}
	// The last notification may be handed to the handler just after the
	// result.
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return n == 8 })
	waitFor(t, func() bool {
		for _, r := range e.AuditRecords(t) {
			if r["mcp_tool"] != "count_slowly" || r["event"] != "request" {
				continue
			}
			if d, _ := r["duration_ms"].(float64); d < float64(3*idle/time.Millisecond) {
				t.Errorf("the stream's record says %vms; want its whole duration", d)
			}
			if b, _ := r["bytes_out"].(float64); b < 8*50 {
				t.Errorf("the stream's record says %v bytes out; want every event counted", b)
			}
			return true
		}
		return false
	})
}

// TestMCPQuietStreamEndsWithClient: when the agent leaves the server's GET
// stream, on which nothing is sent, the sidecar ends the upstream call and
// writes the record at once instead of waiting for an event that may never
// come.
func TestMCPQuietStreamEndsWithClient(t *testing.T) {
	e := newMCPEnv(t, nil)
	c := e.Client()
	defer c.CloseIdleConnections()
	assertion := e.Assert(t, testenv.User)
	post := func(body, session string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, e.APIURL(mcptest.PathMCP), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Onbehalf-Assertion", assertion)
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, "")
	session := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || session == "" {
		t.Fatalf("initialize: status %d, session %q", resp.StatusCode, session)
	}
	post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, session)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.APIURL(mcptest.PathMCP), nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", session)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Onbehalf-Assertion", assertion)
	stream, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if stream.StatusCode != http.StatusOK || !strings.HasPrefix(stream.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET stream: status %d, type %q", stream.StatusCode, stream.Header.Get("Content-Type"))
	}
	id := stream.Header.Get("Onbehalf-Decision-Id")
	cancel() // the agent goes away; the stream has sent nothing
	stream.Body.Close()
	rec := e.WaitRecord(t, id)
	if rec["method"] != "GET" || rec["decision"] != "allow" || rec["status"] != float64(200) {
		t.Errorf("record of the stream %v", rec)
	}
}

// tsLine is one line the TypeScript agent prints.
type tsLine struct {
	Tools    []string `json:"tools"`
	Progress *float64 `json:"progress"`
	Result   *string  `json:"result"`
	Error    *struct {
		Code    int       `json:"code"`
		Message string    `json:"message"`
		Data    errorBody `json:"data"`
	} `json:"error"`
}

// runTSAgent runs examples/agents/mcp/agent.mjs (the official TypeScript
// SDK, with undici's ProxyAgent) and returns its lines; a refused call
// exits 1.
func runTSAgent(t *testing.T, e *mcpEnv, args ...string) []tsLine {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "examples", "agents", "mcp")
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{"agent.mjs", e.APIURL(mcptest.PathMCP)}, args...)...)
	cmd.Dir = dir
	cmd.Env = agentEnv(e.Env, e.Assert(t, testenv.User))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("node agent.mjs %v: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
	}
	// The agent never holds a token: none in anything it printed.
	for _, secret := range []string{e.Token, e.RefreshToken} {
		if strings.Contains(stdout.String()+stderr.String(), secret) {
			t.Fatalf("the agent printed a token")
		}
	}
	var lines []tsLine
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var x tsLine
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("agent line %q: %v (stderr %s)", l, err, stderr.String())
		}
		lines = append(lines, x)
	}
	return lines
}

// TestMCPTypeScriptClient runs the official TypeScript SDK (protocol
// 2025-11-25: initialize, Mcp-Session-Id, the GET stream) through the
// sidecar: list, an allowed streamed call, a denied call the SDK surfaces
// as an McpError carrying the sidecar's code, and reconnect_required after
// the user revoked the app.
func TestMCPTypeScriptClient(t *testing.T) {
	if _, err := os.Stat(filepath.Join(repoRoot(t), "examples", "agents", "mcp", "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		t.Fatalf("the MCP agent's dependencies are missing: run `make agents` (npm ci in examples/agents/mcp): %v", err)
	}
	e := newMCPEnv(t, func(c *sidecar.Config) { c.TokenCache.TTL = 0 })

	// The list shows only the tools policy lets alice call: the
	// destructive one is hidden, and its absence audited.
	lines := runTSAgent(t, e)
	if len(lines) != 1 || !slices.Equal(lines[0].Tools, []string{"count_slowly", "search_issues", "whoami"}) {
		t.Fatalf("tools/list printed %+v; want the three allowed tools", lines)
	}
	list := func(r map[string]any) bool { return r["mcp_method"] == "tools/list" }
	hidden := 0
	for _, r := range e.WaitRequestRecords(t, 1, list) {
		if r["event"] == "request" && list(r) {
			if r["tools_hidden"] != float64(1) {
				t.Errorf("tools/list record %v; want tools_hidden 1", r)
			}
			hidden++
		}
	}
	if hidden == 0 {
		t.Error("no audit record of the tools/list")
	}

	lines = runTSAgent(t, e, "count_slowly", `{"n":3,"interval_ms":60}`)
	progress := 0
	for _, l := range lines[:len(lines)-1] {
		if l.Progress != nil {
			progress++
		}
	}
	if last := lines[len(lines)-1]; progress != 3 || last.Result == nil || *last.Result != "counted to 3" {
		t.Fatalf("count_slowly printed %+v; want 3 progress lines, then the result", lines)
	}

	lines = runTSAgent(t, e, "delete_repository", `{"name":"acme/api"}`)
	if len(lines) != 1 || lines[0].Error == nil {
		t.Fatalf("delete_repository printed %+v; want the refusal", lines)
	}
	ref := lines[0].Error
	if ref.Code != -31403 || ref.Data.Error != "policy_denied" || ref.Data.DecisionID == "" || !strings.Contains(ref.Message, "destructive") {
		t.Errorf("refusal %+v; want -31403 policy_denied with the reason and decision id", ref)
	}
	if rec := e.WaitRecord(t, ref.Data.DecisionID); rec["mcp_tool"] != "delete_repository" || rec["decision"] != "deny" {
		t.Errorf("audit record %v", rec)
	}

	e.as.RevokeUser(testenv.User)
	e.SetExpiry(t, testenv.User, time.Now().Add(-time.Minute))
	lines = runTSAgent(t, e, "whoami")
	if len(lines) != 1 || lines[0].Error == nil || lines[0].Error.Data.Error != "reconnect_required" ||
		lines[0].Error.Data.ConnectURL != "https://connect.test/connect/chat" {
		t.Fatalf("whoami after revocation printed %+v; want reconnect_required with the connect URL", lines)
	}
	for _, c := range e.mcp.Calls() {
		if c.Tool == "delete_repository" {
			t.Error("the destructive tool reached the server")
		}
	}
	checkMCPUpstream(t, e)
}
