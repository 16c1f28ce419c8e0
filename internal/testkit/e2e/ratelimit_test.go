//go:build integration

package e2e

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/mcptest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// limitPolicy allows what DefaultPolicy allows, and names a limit of its
// own for /api/policy-limited.
const limitPolicy = `package onbehalf.authz

default decision := {"allow": false, "reason": "no rule allowed this request"}

decision := {"allow": true, "reason": "identified user on a route"} if {
	input.subject.user != ""
	input.route.provider != ""
	input.parsed_path != ["api", "policy-limited"]
}

decision := {"allow": true, "reason": "limited by policy", "limit": {"key": concat(":", [input.subject.user, "policy-limited"]), "rate": "2/h", "burst": 2}} if {
	input.subject.user != ""
	input.parsed_path == ["api", "policy-limited"]
}
`

// get sends GET path as user through the sidecar and returns the status,
// the head and the audit record.
func limitedGet(t *testing.T, e *testenv.Env, c *http.Client, assertion, path string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.APIURL(path), nil)
	req.Header.Set(identity.DefaultHeader, assertion)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
}

// TestRateLimits: N concurrent requests against a configured limit of L
// per user → exactly L reach the API, N−L get 429 rate_limited with
// Retry-After, audited with the bucket's key; a limit the policy's
// decision names holds the same way; another user is not affected.
func TestRateLimits(t *testing.T) {
	const n, limit = 12, 5
	e := testenv.New(t, testenv.Options{
		Policy: limitPolicy,
		Config: func(c *sidecar.Config) {
			c.RateLimits.Rules = []ratelimit.RuleConfig{{
				Name: "per-user-ok", Rate: strconv.Itoa(limit) + "/h", By: []string{ratelimit.DimUser, ratelimit.DimRoute},
				Paths: []string{"/api/ok"},
			}}
		},
	})
	e.PutGrant(t, "bob", testenv.CanaryToken, time.Now().Add(time.Hour))
	alice := e.Assert(t, testenv.User)
	c := e.Client()

	var mu sync.Mutex
	statuses := map[int]int{}
	var refused []*http.Response
	var records []map[string]any
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, rec := limitedGet(t, e, c, alice, "/api/ok")
			mu.Lock()
			defer mu.Unlock()
			statuses[resp.StatusCode]++
			if resp.StatusCode == http.StatusTooManyRequests {
				refused = append(refused, resp)
				records = append(records, rec)
			}
		}()
	}
	wg.Wait()
	if statuses[200] != limit || statuses[429] != n-limit {
		t.Fatalf("statuses %v; want %d × 200 and %d × 429", statuses, limit, n-limit)
	}
	if got := len(e.Upstream.Requests()); got != limit {
		t.Errorf("the API received %d requests; want %d (refused ones never reach it)", got, limit)
	}
	for _, resp := range refused {
		if got := resp.Header.Get("Onbehalf-Error"); got != "rate_limited" {
			t.Errorf("Onbehalf-Error = %q; want rate_limited", got)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 720 {
			t.Errorf("Retry-After = %q; want 1..720 seconds (one token per 12 minutes)", resp.Header.Get("Retry-After"))
		}
	}
	for _, rec := range records {
		if rec["error_code"] != "rate_limited" || rec["limit_key"] != "per-user-ok:alice:chat-api" || rec["status"] != float64(429) || rec["decision"] != "allow" {
			t.Errorf("audit record %v; want error_code rate_limited, limit_key per-user-ok:alice:chat-api, status 429, decision allow", rec)
		}
		if rec["token_fingerprint"] != nil {
			t.Errorf("refused record has a token fingerprint: no grant may be read for it")
		}
	}
	// Bob has a bucket of his own; paths outside the rule are not limited.
	if resp, _ := limitedGet(t, e, c, e.Assert(t, "bob"), "/api/ok"); resp.StatusCode != 200 {
		t.Errorf("bob: %d; want 200", resp.StatusCode)
	}
	if resp, _ := limitedGet(t, e, c, alice, "/api/other"); resp.StatusCode != 200 {
		t.Errorf("alice on another path: %d; want 200", resp.StatusCode)
	}

	// The policy's own limit: two, then refused with its key.
	for i := 0; i < 2; i++ {
		if resp, rec := limitedGet(t, e, c, alice, "/api/policy-limited"); resp.StatusCode != 200 {
			t.Fatalf("policy-limited request %d: %d %v; want 200", i+1, resp.StatusCode, rec)
		}
	}
	resp, rec := limitedGet(t, e, c, alice, "/api/policy-limited")
	if resp.StatusCode != 429 || rec["limit_key"] != "policy:alice:policy-limited" {
		t.Errorf("third policy-limited request: %d, limit_key %v; want 429, policy:alice:policy-limited", resp.StatusCode, rec["limit_key"])
	}

	got := scrapeMetrics(t, e)
	for _, want := range []string{
		`onbehalf_rate_limited_total{reason="rule",route="chat-api"} ` + strconv.Itoa(n-limit),
		`onbehalf_rate_limited_total{reason="policy",route="chat-api"} 1`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// scrapeMetrics returns the sidecar's /metrics page.
func scrapeMetrics(t *testing.T, e *testenv.Env) string {
	t.Helper()
	resp, err := http.Get("http://" + e.Sidecar.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestUpstreamBackoff: an API answering 429 with Retry-After, or spending
// the quota in GitHub-style headers (declared for the provider), makes the
// sidecar refuse the user's further requests locally with 429
// rate_limited until the time has passed.
func TestUpstreamBackoff(t *testing.T) {
	as := testenv.StartProvider(t, oauthtest.Options{})
	var mu sync.Mutex
	var resetAt int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/throttle":
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"message":"slow down"}`)
		case "/api/quota":
			mu.Lock()
			reset := resetAt
			mu.Unlock()
			w.Header().Set("X-Ratelimit-Remaining", "0")
			w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(reset, 10))
			_, _ = io.WriteString(w, `{"ok":true}`)
		default:
			_, _ = io.WriteString(w, `{"ok":true}`)
		}
	})
	e := testenv.New(t, testenv.Options{
		Provider: as,
		Upstream: upstreamtest.Options{Handler: handler},
		Config: func(c *sidecar.Config) {
			pc := c.Providers[testenv.Provider]
			pc.RateLimitHeaders = &oauth.RateLimitHeaders{Remaining: "X-RateLimit-Remaining", Reset: "X-RateLimit-Reset", ResetFormat: "epoch_seconds"}
			c.Providers[testenv.Provider] = pc
		},
	})
	alice := e.Assert(t, testenv.User)
	c := e.Client()
	upstreamCount := func() int { return len(e.Upstream.Requests()) }

	// 1. The API's own 429 is relayed as it is.
	resp, _ := limitedGet(t, e, c, alice, "/api/throttle")
	if resp.StatusCode != 429 || resp.Header.Get("Onbehalf-Error") != "" {
		t.Fatalf("throttled answer: %d, Onbehalf-Error %q; want the API's own 429", resp.StatusCode, resp.Header.Get("Onbehalf-Error"))
	}
	start := time.Now()
	before := upstreamCount()
	// 2. Until Retry-After has passed, alice's requests to the provider
	// are refused by the sidecar and never reach the API.
	resp, rec := limitedGet(t, e, c, alice, "/api/ok")
	if resp.StatusCode != 429 || resp.Header.Get("Onbehalf-Error") != "rate_limited" {
		t.Fatalf("during the back-off: %d %q; want 429 rate_limited", resp.StatusCode, resp.Header.Get("Onbehalf-Error"))
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" && ra != "2" {
		t.Errorf("Retry-After = %q; want 1 or 2", ra)
	}
	if rec["limit_key"] != "upstream:"+testenv.Provider+":alice" || rec["error_code"] != "rate_limited" {
		t.Errorf("record %v; want limit_key upstream:%s:alice", rec, testenv.Provider)
	}
	if got := upstreamCount(); got != before {
		t.Errorf("the API received %d requests during the back-off; want none", got-before)
	}
	// 3. After it, requests go again.
	time.Sleep(time.Until(start.Add(2*time.Second + 100*time.Millisecond)))
	if resp, rec := limitedGet(t, e, c, alice, "/api/ok"); resp.StatusCode != 200 {
		t.Fatalf("after the back-off: %d %v; want 200", resp.StatusCode, rec)
	}

	// 4. GitHub-style headers: the answer that spends the quota is a
	// success; the next request waits for the reset.
	mu.Lock()
	resetAt = time.Now().Add(2 * time.Second).Unix()
	mu.Unlock()
	if resp, _ := limitedGet(t, e, c, alice, "/api/quota"); resp.StatusCode != 200 {
		t.Fatalf("quota-spending answer: %d; want 200", resp.StatusCode)
	}
	resp, rec = limitedGet(t, e, c, alice, "/api/ok")
	if resp.StatusCode != 429 || rec["limit_key"] != "upstream:"+testenv.Provider+":alice" {
		t.Fatalf("after the quota was spent: %d %v; want 429 with the upstream key", resp.StatusCode, rec["limit_key"])
	}
	time.Sleep(time.Until(time.Unix(resetAt, 0).Add(100 * time.Millisecond)))
	if resp, rec := limitedGet(t, e, c, alice, "/api/ok"); resp.StatusCode != 200 {
		t.Fatalf("after the reset: %d %v; want 200", resp.StatusCode, rec)
	}
	if got := scrapeMetrics(t, e); !strings.Contains(got, `onbehalf_upstream_backoffs_total{provider="`+testenv.Provider+`"} 2`) ||
		!strings.Contains(got, `onbehalf_rate_limited_total{reason="upstream",route="chat-api"} 2`) {
		t.Errorf("metrics lack the back-offs and refusals:\n%s", grepLines(got, "onbehalf_rate_limited_total", "onbehalf_upstream_backoffs_total"))
	}
}

// TestMCPRateLimited: a limit per user and tool on an MCP route refuses the
// call over it as a JSON-RPC error (-31429, rate_limited in data) the Go
// SDK client hands back as the call's error; other tools and the session
// go on working, and the refused call never reaches the server.
func TestMCPRateLimited(t *testing.T) {
	e := newMCPEnv(t, func(c *sidecar.Config) {
		c.RateLimits.Rules = []ratelimit.RuleConfig{{
			Name: "search", Rate: "2/h", By: []string{ratelimit.DimUser, ratelimit.DimTool}, Tools: []string{"search_*"},
		}}
	})
	cs := e.mcpClient(t, mcptest.PathMCP, "2025-11-25", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	search := func() error {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "search_issues", Arguments: map[string]any{"query": "bug"}})
		return err
	}
	for i := 0; i < 2; i++ {
		if err := search(); err != nil {
			t.Fatalf("search %d: %v", i+1, err)
		}
	}
	we, body := rpcRefusal(t, search())
	if we.Code != -31429 || body.Error != "rate_limited" || !strings.Contains(we.Message, `"search:alice:search_issues"`) {
		t.Errorf("refusal %d %q %+v; want -31429 rate_limited naming the bucket", we.Code, we.Message, body)
	}
	if rec := e.WaitRecord(t, body.DecisionID); rec["limit_key"] != "search:alice:search_issues" || rec["mcp_tool"] != "search_issues" || rec["status"] != float64(200) {
		t.Errorf("record %v; want limit_key search:alice:search_issues, status 200 (a JSON-RPC error)", rec)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"}); err != nil {
		t.Errorf("whoami (not limited): %v", err)
	}
	n := 0
	for _, c := range e.mcp.Calls() {
		if c.Tool == "search_issues" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("the server ran search_issues %d times; want 2", n)
	}
}
