package policy

import (
	"context"
	"math/rand/v2"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// cachePair is an example policy loaded twice: with its decision cache and
// with the cache taken away, so every decision of off is an evaluation.
type cachePair struct {
	name    string
	on, off *Engine
}

// cachePairs loads every example policy twice. Each policy the cache can
// serve keeps its cache in on; the test fails when none can, so that it
// never passes by comparing two uncached engines.
func cachePairs(tb testing.TB) []cachePair {
	tb.Helper()
	var pairs []cachePair
	cached := 0
	for _, name := range exampleDirs(tb) {
		on, off := exampleEngine(tb, name), exampleEngine(tb, name)
		off.cur.Load().cache = nil
		if on.cur.Load().cache != nil {
			cached++
		}
		pairs = append(pairs, cachePair{name: name, on: on, off: off})
	}
	if cached < len(pairs)/2 {
		tb.Fatalf("only %d of %d example policies have a decision cache", cached, len(pairs))
	}
	return pairs
}

// equivInput is one fuzzed request as the sidecar would present it.
type equivInput struct {
	method, host, path, query string
	provider, user, agent     string
	team, channel             string
	claimProviders            string
	readOnly, unattended      bool
	day, hour                 uint8
	tool                      string
}

func (x equivInput) input() *Input {
	u := url.URL{Scheme: "https", Host: x.host, Path: x.path, RawQuery: x.query}
	claims := map[string]any{"read_only": x.readOnly, "unattended": x.unattended, "task_id": "T-" + x.agent}
	if x.claimProviders != "" {
		claims["providers"] = []any{x.claimProviders}
	}
	if x.channel != "" {
		claims["slack_channels"] = []any{x.channel}
	}
	req := exampleRequest{
		method: x.method, url: u.String(), provider: x.provider,
		headers: map[string]string{"X-Team": x.team}, claims: claims,
		at: time.Date(2026, 6, 15+int(x.day%7), int(x.hour%24), 0, 0, 0, time.UTC),
	}
	if x.tool != "" {
		req.mcp = &MCP{MCPMessage: MCPMessage{Kind: "request", Method: "tools/call", Tool: x.tool, ArgumentNames: []string{"q"}, ID: []byte("1")}, Batch: []MCPMessage{}}
	}
	in := req.input()
	in.Subject.User, in.Subject.Agent = x.user, x.agent
	return in
}

// checkEquiv decides x with and without the cache under every example
// policy; the decisions must be equal.
func checkEquiv(t *testing.T, pairs []cachePair, x equivInput) {
	t.Helper()
	for _, p := range pairs {
		got := p.on.Decide(context.Background(), x.input())
		want := p.off.Decide(context.Background(), x.input())
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%s: %+v: decision with the cache differs from evaluation (-off +on):\n%s", p.name, x, diff)
		}
	}
}

// TestDecisionCacheEqualsEvaluation is a property test: over random
// requests drawn from small alphabets (so that many share a cache key, and
// many differ only in what a policy reads), every decision served with the
// decision cache equals the decision evaluated without it, under every
// example policy. The engines live for the whole test, so later requests
// hit entries earlier ones made.
func TestDecisionCacheEqualsEvaluation(t *testing.T) {
	pairs := cachePairs(t)
	r := rand.New(rand.NewPCG(20, 26))
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	n := 300
	if testing.Short() || raceEnabled {
		// The race detector slows evaluation tenfold; the cache's
		// concurrency is not what this test is about.
		n = 100
	}
	for range n {
		checkEquiv(t, pairs, equivInput{
			method:         pick("GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"),
			host:           pick("slack.com", "api.github.com", "graph.microsoft.com", "mcp.example.com", "shop.example"),
			path:           pick("/api/chat.postMessage", "/api/conversations.list", "/repos/acme/app", "/repos/acme/app/", "/orgs/acme/members/bob", "/v1.0/me/events", "/mcp", "/api/v1/orders", "/"),
			query:          pick("", "channel=C0123ABC", "channel=C0999&text=hi", "channel=C0123ABC&channel=C0999"),
			provider:       pick("", "slack", "github", "microsoft"),
			user:           pick("alice", "bob", ""),
			agent:          pick("agent-7", "agent-8"),
			team:           pick("payments", "marketing", ""),
			channel:        pick("", "C0123ABC"),
			claimProviders: pick("", "slack", "github"),
			readOnly:       r.IntN(2) == 0,
			unattended:     r.IntN(2) == 0,
			day:            uint8(r.IntN(7)),
			hour:           uint8(r.IntN(24)),
			tool:           pick("", "search_issues", "delete_repository"),
		})
	}
}

// FuzzDecisionCache: for any request, the decision with the decision cache
// equals the decision without it, under every example policy. Run it with
// go test -fuzz FuzzDecisionCache ./policy; the seeds run with every go test.
func FuzzDecisionCache(f *testing.F) {
	f.Add("GET", "slack.com", "/api/conversations.list", "", "slack", "alice", "agent-7", "", "", "slack", false, false, uint8(3), uint8(9), "")
	f.Add("POST", "slack.com", "/api/chat.postMessage", "channel=C0999&text=hi", "slack", "alice", "agent-7", "", "C0123ABC", "", false, false, uint8(3), uint8(9), "")
	f.Add("DELETE", "api.github.com", "/repos/acme/app/", "", "github", "bob", "agent-8", "", "", "github", true, false, uint8(5), uint8(9), "")
	f.Add("GET", "graph.microsoft.com", "/v1.0/me/events", "", "microsoft", "alice", "agent-7", "", "", "", false, true, uint8(5), uint8(22), "")
	f.Add("POST", "mcp.example.com", "/mcp", "", "github", "alice", "agent-7", "", "", "", false, false, uint8(1), uint8(9), "delete_repository")
	f.Add("POST", "shop.example", "/api/v1/orders", "", "", "alice", "agent-7", "payments", "", "", false, false, uint8(1), uint8(9), "")
	// The engines are shared by every input of the run, so that the
	// caches fill and later inputs hit entries earlier ones made.
	pairs := cachePairs(f)
	f.Fuzz(func(t *testing.T, method, host, path, query, provider, user, agent, team, channel, claimProviders string, readOnly, unattended bool, day, hour uint8, tool string) {
		x := equivInput{method: method, host: host, path: path, query: query, provider: provider, user: user, agent: agent,
			team: team, channel: channel, claimProviders: claimProviders, readOnly: readOnly, unattended: unattended, day: day, hour: hour, tool: tool}
		if !validFuzzInput(x) {
			return // not a request the sidecar could see: nothing to compare
		}
		checkEquiv(t, pairs, x)
	})
}

// validFuzzInput reports whether x makes a request the sidecar could see:
// a token method, a host name and headers net/http would accept.
func validFuzzInput(x equivInput) bool {
	isToken := func(s string) bool {
		if s == "" {
			return false
		}
		for _, c := range s {
			if c <= ' ' || c >= 0x7f || c == '(' || c == ')' || c == ',' || c == '/' || c == ':' || c == ';' || c == '<' || c == '>' || c == '=' || c == '?' || c == '@' || c == '[' || c == ']' || c == '\\' || c == '"' || c == '{' || c == '}' {
				return false
			}
		}
		return true
	}
	if !isToken(x.method) || !isToken(x.host) {
		return false
	}
	for _, c := range x.team {
		if c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
