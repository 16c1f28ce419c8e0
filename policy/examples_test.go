package policy

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// examplesDir holds the example policy library, one policy per directory.
const examplesDir = "../examples/policies"

func exampleDirs(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(examplesDir)
	if err != nil {
		t.Fatalf("read examples: %v", err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) == 0 {
		t.Fatalf("no example policies under %s", examplesDir)
	}
	return dirs
}

// TestExamplePolicies runs every example's own Rego tests through Test.
func TestExamplePolicies(t *testing.T) {
	for _, name := range exampleDirs(t) {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			passed, err := Test(context.Background(), []string{filepath.Join(examplesDir, name)}, &out, true)
			if err != nil {
				t.Fatalf("Test: %v\n%s", err, out.String())
			}
			if !passed {
				t.Fatalf("Test passed = false; want true\n%s", out.String())
			}
			t.Log(out.String())
		})
	}
}

// exampleQuery returns the query an example is written for.
func exampleQuery(name string) string {
	if name == "envoy" {
		return "data.envoy.authz.allow"
	}
	return DefaultQuery
}

// exampleRequests are, per example, a request the policy allows and one it
// denies, as the sidecar would present them.
var exampleRequests = map[string]struct {
	allow, deny exampleRequest
}{
	"default": {
		exampleRequest{method: "GET", url: "https://slack.com/api/conversations.list", provider: "slack", claims: map[string]any{"providers": []any{"slack"}}},
		exampleRequest{method: "DELETE", url: "https://api.github.com/orgs/acme/members/bob", provider: "github"},
	},
	"provider_allowlist": {
		exampleRequest{method: "GET", url: "https://slack.com/api/conversations.list", provider: "slack"},
		exampleRequest{method: "GET", url: "https://graph.microsoft.com/v1.0/me", provider: "microsoft"},
	},
	"read_only": {
		exampleRequest{method: "POST", url: "https://api.github.com/repos/acme/app/issues/7/comments", provider: "github"},
		exampleRequest{method: "DELETE", url: "https://api.github.com/repos/acme/app", provider: "github"},
	},
	"slack_channels": {
		exampleRequest{method: "POST", url: "https://slack.com/api/chat.postMessage?channel=C0123ABC&text=hi", provider: "slack", claims: map[string]any{"slack_channels": []any{"C0123ABC"}}},
		exampleRequest{method: "POST", url: "https://slack.com/api/chat.postMessage?channel=C0999&text=hi", provider: "slack", claims: map[string]any{"slack_channels": []any{"C0123ABC"}}},
	},
	"business_hours": {
		exampleRequest{method: "GET", url: "https://graph.microsoft.com/v1.0/me/events", provider: "microsoft", claims: map[string]any{"unattended": true}, at: time.Date(2026, 6, 18, 9, 0, 0, 0, time.UTC)},
		exampleRequest{method: "GET", url: "https://graph.microsoft.com/v1.0/me/events", provider: "microsoft", claims: map[string]any{"unattended": true}, at: time.Date(2026, 6, 20, 9, 0, 0, 0, time.UTC)},
	},
	"dangerous_endpoints": {
		exampleRequest{method: "POST", url: "https://api.github.com/repos/acme/app/issues", provider: "github"},
		exampleRequest{method: "DELETE", url: "https://api.github.com/repos/acme/app/", provider: "github"},
	},
	"task_claims": {
		exampleRequest{method: "GET", url: "https://slack.com/api/conversations.list", provider: "slack", claims: map[string]any{"task_id": "T-1", "providers": []any{"slack"}, "read_only": true}},
		exampleRequest{method: "POST", url: "https://slack.com/api/chat.postMessage", provider: "slack", claims: map[string]any{"task_id": "T-1", "read_only": true}},
	},
	"mcp_tools": {
		exampleRequest{method: "POST", url: "https://mcp.example.com/mcp", provider: "github", mcp: &MCP{
			MCPMessage: MCPMessage{Kind: "request", Method: "tools/call", Tool: "search_issues", ArgumentNames: []string{"query"}, ID: []byte("1")},
			Batch:      []MCPMessage{},
		}},
		exampleRequest{method: "POST", url: "https://mcp.example.com/mcp", provider: "github", mcp: &MCP{
			MCPMessage: MCPMessage{Kind: "request", Method: "tools/call", Tool: "delete_repository", ArgumentNames: []string{"name"}, ID: []byte("2")},
			Batch:      []MCPMessage{},
		}},
	},
	"envoy": {
		exampleRequest{method: "POST", url: "https://shop.example/api/v1/orders", headers: map[string]string{"X-Team": "payments", "Content-Type": "application/json"}},
		exampleRequest{method: "POST", url: "https://shop.example/api/v1/orders", headers: map[string]string{"X-Team": "marketing", "Content-Type": "application/json"}},
	},
}

type exampleRequest struct {
	method, url, provider string
	headers               map[string]string
	claims                map[string]any
	at                    time.Time
	// mcp is input.mcp of a request on an MCP route.
	mcp *MCP
}

func (x exampleRequest) input() *Input {
	r := httptest.NewRequest(x.method, x.url, nil)
	r.Header.Set("Authorization", "Bearer agent-supplied")
	r.Header.Set("Accept", "application/json")
	for k, v := range x.headers {
		r.Header.Set(k, v)
	}
	var route *Route
	if x.provider != "" {
		route = &Route{Provider: x.provider, Host: r.URL.Hostname(), Name: x.provider}
	}
	at := x.at
	if at.IsZero() {
		at = time.Date(2026, 6, 18, 9, 0, 0, 0, time.UTC)
	}
	in := NewInput(r, InputArgs{
		Source:  "127.0.0.1:51234",
		Subject: Subject{User: "alice", Agent: "agent-7", Issuer: "https://orchestrator.example", Claims: x.claims},
		Route:   route,
		Now:     at,
	})
	in.MCP = x.mcp
	return in
}

func exampleEngine(tb testing.TB, name string) *Engine {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Paths = []string{filepath.Join(examplesDir, name)}
	cfg.Query = exampleQuery(name)
	cfg.Watch = false
	// The machine running tests and benchmarks is shared: a preempted
	// decision must not turn into a timeout deny and fail the run.
	cfg.Timeout = time.Second
	e, err := New(context.Background(), cfg, Options{})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(e.Close)
	if st := e.Status(); !st.Ready {
		tb.Fatalf("example %s not loaded: %s", name, st.LastError)
	}
	return e
}

// TestExamplePoliciesThroughEngine runs each example in the engine, with
// inputs built by NewInput, so that the examples' own tests cannot drift
// from the input the sidecar really builds. The envoy example runs
// unchanged under its opa-envoy-plugin query.
func TestExamplePoliciesThroughEngine(t *testing.T) {
	for _, name := range exampleDirs(t) {
		t.Run(name, func(t *testing.T) {
			reqs, ok := exampleRequests[name]
			if !ok {
				t.Fatalf("no example requests for %s; add them to exampleRequests", name)
			}
			e := exampleEngine(t, name)
			if d := e.Decide(context.Background(), reqs.allow.input()); !d.Allow {
				t.Errorf("Decide(%s %s) = %+v; want allow", reqs.allow.method, reqs.allow.url, d)
			}
			d := e.Decide(context.Background(), reqs.deny.input())
			if d.Allow || d.Reason == "" || strings.HasPrefix(d.Reason, "policy ") {
				t.Errorf("Decide(%s %s) = %+v; want a policy deny with a reason", reqs.deny.method, reqs.deny.url, d)
			}
		})
	}
}

// TestEnvoyPolicyWithEnvoyInput evaluates the envoy example against an input
// exactly as opa-envoy-plugin builds it.
func TestEnvoyPolicyWithEnvoyInput(t *testing.T) {
	bs, err := os.ReadFile("testdata/envoy_input.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Paths = []string{filepath.Join(examplesDir, "envoy")}
	cfg.Query = "data.envoy.authz.allow"
	d, err := EvalFile(context.Background(), cfg, bs)
	if err != nil {
		t.Fatalf("EvalFile: %v", err)
	}
	if !d.Allow {
		t.Errorf("EvalFile = %+v; want allow", d)
	}
}

// BenchmarkDecide measures one decision per example policy, from an Input
// to a Decision (AST conversion, evaluation under a deadline, result
// parsing). p50-ns and p99-ns are the median and 99th percentile of sampled
// single decisions.
// BenchmarkEvaluate measures one full OPA evaluation per decision (the
// cost of every new combination of the inputs a policy reads); Decide
// serves repeats from the decision cache (BenchmarkDecide).
func BenchmarkEvaluate(b *testing.B) {
	for _, name := range exampleDirs(b) {
		b.Run(name, func(b *testing.B) {
			e := exampleEngine(b, name)
			v, err := exampleRequests[name].allow.input().Value()
			if err != nil {
				b.Fatal(err)
			}
			p := e.cur.Load()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if d, _ := p.evalReport(ctx, v, time.Second); !d.Allow {
					b.Fatalf("evaluate = %+v; want allow", d)
				}
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, name := range exampleDirs(b) {
		b.Run(name, func(b *testing.B) {
			e := exampleEngine(b, name)
			in := exampleRequests[name].allow.input()
			ctx := context.Background()
			samples := make([]time.Duration, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				d := e.Decide(ctx, in)
				if len(samples) < cap(samples) {
					samples = append(samples, time.Since(start))
				}
				if !d.Allow {
					b.Fatalf("Decide = %+v; want allow", d)
				}
			}
			slices.Sort(samples)
			if n := len(samples); n > 0 {
				b.ReportMetric(float64(samples[n/2].Nanoseconds()), "p50-ns")
				b.ReportMetric(float64(samples[n*99/100].Nanoseconds()), "p99-ns")
			}
		})
	}
}
