package policy

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestDecisionCacheAnalysis(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		cacheable bool
		paths     []string
	}{
		{"static refs", `package onbehalf.authz
decision := {"allow": true} if { input.attributes.request.http.method == "GET"; input.subject.user != "" }`,
			true, []string{`input.attributes.request.http.method`, `input.subject.user`}},
		{"dynamic key keeps the static prefix", `package onbehalf.authz
decision := {"allow": true} if { some h; input.attributes.request.http.headers[h] == "x" }`,
			true, []string{`input.attributes.request.http.headers`}},
		{"no input at all", `package onbehalf.authz
decision := {"allow": true}`, true, nil},
		{"unit tests with `with` do not count", `package onbehalf.authz
decision := {"allow": true} if input.subject.user != ""
test_allow if decision.allow with input as {"subject": {"user": "a"}}`, true, []string{`input.subject.user`}},
		{"clock", `package onbehalf.authz
decision := {"allow": true} if time.now_ns() > 0`, false, nil},
		{"token validity reads the clock", `package onbehalf.authz
decision := {"allow": v} if { [v, _, _] := io.jwt.decode_verify(input.subject.claims.t, {"secret": "x"}) }`, false, nil},
		{"random", `package onbehalf.authz
decision := {"allow": rand.intn("x", 2) == 1}`, false, nil},
		{"whole input", `package onbehalf.authz
decision := {"allow": f(input)}
f(x) := true if x.a`, false, nil},
		{"with", `package onbehalf.authz
decision := {"allow": true} if { g with input as {} }
g if true`, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ast.ParseModuleWithOpts("p.rego", tt.src, ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				t.Fatal(err)
			}
			c := newDecisionCache(map[string]*ast.Module{"p.rego": m}, ast.MustParseBody("data.onbehalf.authz.decision"))
			if (c != nil) != tt.cacheable {
				t.Fatalf("cacheable = %v; want %v", c != nil, tt.cacheable)
			}
			if c == nil {
				return
			}
			got := map[string]bool{}
			for _, p := range c.paths {
				if len(p.terms) > 0 {
					got[ast.Ref(append([]*ast.Term{ast.InputRootDocument}, p.terms...)).String()] = true
				}
			}
			for _, want := range tt.paths {
				if !got[want] {
					t.Errorf("paths %v do not include %s", got, want)
				}
			}
			if len(got) != len(tt.paths) {
				t.Errorf("paths %v; want %v", got, tt.paths)
			}
		})
	}
}

// TestDecisionCacheThroughEngine: repeated inputs are decided once, inputs
// that differ in what the policy reads are decided again, and a reload
// starts a fresh cache.
func TestDecisionCacheThroughEngine(t *testing.T) {
	dir := t.TempDir()
	write := func(src string) {
		if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`package onbehalf.authz
decision := {"allow": input.attributes.request.http.method == "GET", "reason": input.subject.user}`)
	cfg := DefaultConfig()
	cfg.Paths = []string{dir}
	cfg.Watch = false
	e, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	input := func(method, user, path string) *Input {
		r := httptest.NewRequest(method, "https://api.example.com"+path, nil)
		return NewInput(r, InputArgs{Subject: Subject{User: user}, Source: "127.0.0.1:5555", Now: time.Now()})
	}
	evals := func() uint64 { return e.cur.Load().evals.Load() }

	for i, tt := range []struct {
		method, user, path string
		allow              bool
		evals              uint64
	}{
		{"GET", "alice", "/a", true, 1},
		{"GET", "alice", "/b", true, 1},   // path is not read: hit
		{"POST", "alice", "/a", false, 2}, // method differs: miss
		{"GET", "bob", "/a", true, 3},     // user differs: miss
		{"GET", "alice", "/c", true, 3},   // hit again
	} {
		d := e.Decide(context.Background(), input(tt.method, tt.user, tt.path))
		if d.Allow != tt.allow || d.Reason != tt.user {
			t.Errorf("step %d: decision %+v; want allow=%v reason=%s", i, d, tt.allow, tt.user)
		}
		if got := evals(); got != tt.evals {
			t.Errorf("step %d: %d evaluations; want %d", i, got, tt.evals)
		}
	}
}

// TestInputValueAt: the shortcuts the cache uses return exactly what the
// full conversion holds at each path, and encode it to the same key bytes.
func TestInputValueAt(t *testing.T) {
	r := httptest.NewRequest("POST", "https://api.example.com/v1/chat.post?channel=C1&x=2&x=3", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Task", "t-1")
	r.Header.Add("Accept", "a")
	r.Header.Add("Accept", "b")
	with := NewInput(r, InputArgs{
		Subject: Subject{User: "alice", Agent: "agent-7", Issuer: "https://o", Source: "idp", Claims: map[string]any{"providers": []any{"slack"}, "n": 3}},
		Route:   &Route{Provider: "slack", Host: "api.example.com", Name: "slack-api"},
		Source:  "127.0.0.1:5555", Scheme: "https", Host: "api.example.com", Now: time.Unix(1700000000, 0),
	})
	without := NewInput(r, InputArgs{Source: "127.0.0.1:5555", Now: time.Unix(1700000000, 0)})
	with.MCP = testMCP()
	paths := []string{
		"attributes", "attributes.request", "attributes.request.http", "attributes.request.http.method",
		"attributes.request.http.host", "attributes.request.http.path", "attributes.request.http.scheme",
		"attributes.request.http.headers", "attributes.request.http.headers.x-task", "attributes.request.http.headers.missing",
		"attributes.request.http.headers.accept", "attributes.request.http.headers.x-task.deeper",
		"attributes.request.http.method.deeper", "attributes.request.http.nope", "attributes.request.nope",
		"attributes.source", "attributes.source.address", "attributes.source.address.x", "attributes.source.nope", "attributes.nope",
		"parsed_path", "parsed_path.x", "parsed_query", "parsed_query.channel", "parsed_query.x", "parsed_query.missing",
		"parsed_query.x.y", "subject", "subject.user", "subject.agent", "subject.issuer", "subject.source", "subject.source.x", "subject.claims",
		"subject.claims.providers", "subject.claims.n", "subject.user.x", "subject.nope",
		"route", "route.provider", "route.host", "route.name", "route.nope", "route.provider.x",
		"time", "time.x", "nothing",
		"mcp", "mcp.kind", "mcp.method", "mcp.tool", "mcp.resource", "mcp.prompt", "mcp.session", "mcp.protocol_version",
		"mcp.argument_names", "mcp.argument_names.x", "mcp.id", "mcp.batch", "mcp.method.x", "mcp.nope",
	}
	for _, in := range []*Input{with, without} {
		full, err := in.Value()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			path := testPath(p)
			want := valueAt(full, path.terms)
			got := in.valueAt(path.terms)
			if (want == nil) != (got == nil) || (want != nil && want.Compare(got) != 0) {
				t.Errorf("input.%s: got %v; want %v", p, got, want)
			}
			if got, want := in.appendAt(nil, path), appendValue(nil, want); !bytes.Equal(got, want) {
				t.Errorf("input.%s: key %q; want %q", p, got, want)
			}
		}
	}
}

// testMCP is input.mcp of a tools/call in a batch.
func testMCP() *MCP {
	call := MCPMessage{Kind: "request", Method: "tools/call", Tool: "search_issues", ArgumentNames: []string{"limit", "query"}, ID: []byte(`"7"`)}
	return &MCP{
		MCPMessage: call, Session: "s-1", ProtocolVersion: "2025-03-26",
		Batch: []MCPMessage{call, {Kind: "notification", Method: "notifications/progress", ArgumentNames: []string{}}},
	}
}

func testPath(dotted string) inputPath {
	var p inputPath
	for k := range strings.SplitSeq(dotted, ".") {
		p.terms = append(p.terms, ast.StringTerm(k))
		p.keys = append(p.keys, k)
	}
	return p
}

// TestKeyEncodingDistinguishes: values that differ never share a key, even
// where a naive concatenation would run them together.
func TestKeyEncodingDistinguishes(t *testing.T) {
	values := []string{
		`null`, `true`, `false`, `1`, `1.0`, `"1"`, `""`, `"a"`, `"ab"`, `["a"]`, `["a","b"]`, `["ab"]`,
		`[]`, `{}`, `{"a":"b"}`, `{"a":"b","c":"d"}`, `{"ab":""}`, `{"a":["b"]}`, `{"a":{"b":"c"}}`,
		`{"a"}`, `{"a","b"}`, `set()`, `[null]`, `[["a"]]`, `[[],[]]`, `[[[]]]`,
	}
	seen := map[string]string{}
	for _, a := range values {
		for _, b := range append(values, "absent") {
			var k []byte
			k = appendValue(k, ast.MustParseTerm(a).Value)
			if b == "absent" {
				k = appendValue(k, nil)
			} else {
				k = appendValue(k, ast.MustParseTerm(b).Value)
			}
			pair := a + " then " + b
			if prev, dup := seen[string(k)]; dup {
				t.Errorf("%s and %s share the key %q", prev, pair, k)
			}
			seen[string(k)] = pair
		}
	}
	// Equal values encode equally whatever order they were built in.
	x := appendValue(nil, ast.MustParseTerm(`{"b":[1],"a":{"d":2,"c":3}}`).Value)
	y := appendValue(nil, ast.MustParseTerm(`{"a":{"c":3,"d":2},"b":[1]}`).Value)
	if !bytes.Equal(x, y) {
		t.Errorf("equal objects: keys %q and %q differ", x, y)
	}
}

// TestDecisionCacheBounds: the cache never holds more than its size, and an
// oversized key is evaluated every time rather than stored.
func TestDecisionCacheBounds(t *testing.T) {
	c := &decisionCache{entries: map[string]Decision{}, paths: []inputPath{testPath("attributes.request.http.path")}}
	for i := range decisionCacheSize + 10 {
		in := &Input{}
		in.Attributes.Request.HTTP.Path = fmt.Sprintf("/p/%d", i)
		k := c.key(in.appendAt)
		c.put(k, Decision{Allow: true})
		k.release()
	}
	if n := len(c.entries); n != decisionCacheSize {
		t.Errorf("%d entries; want %d", n, decisionCacheSize)
	}
	in := &Input{}
	in.Attributes.Request.HTTP.Path = "/" + strings.Repeat("x", maxKeyBytes)
	k := c.key(in.appendAt)
	defer k.release()
	c.put(k, Decision{Allow: true})
	if _, hit := c.get(k); hit {
		t.Error("an oversized key was cached")
	}
}

// TestDecideCacheHitAllocs: a decision served from the cache allocates
// nothing for a policy reading the fields the sidecar's policies read.
func TestDecideCacheHitAllocs(t *testing.T) {
	dir := t.TempDir()
	src := `package onbehalf.authz
decision := {"allow": true} if {
	input.subject.user != ""
	input.route.provider != ""
	input.attributes.request.http.method != "DELETE"
	input.parsed_path[0] == "api"
	input.attributes.request.http.headers["content-type"] == "application/json"
}`
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Paths = []string{dir}
	cfg.Watch = false
	e, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r := httptest.NewRequest("POST", "https://slack.com/api/chat.postMessage", nil)
	r.Header.Set("Content-Type", "application/json")
	in := NewInput(r, InputArgs{Subject: Subject{User: "alice"}, Route: &Route{Provider: "slack"}, Now: inputTime})
	ctx := context.Background()
	if d := e.Decide(ctx, in); !d.Allow {
		t.Fatalf("Decide = %+v; want allow", d)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if d := e.Decide(ctx, in); !d.Allow {
			t.Fatalf("Decide = %+v; want allow", d)
		}
	})
	// Under -race the pooled key buffer is sometimes dropped and made anew.
	if want := 0.0; allocs > want && !(raceEnabled && allocs <= 1) {
		t.Errorf("a cache hit allocates %v times; want %v", allocs, want)
	}
	if n := e.cur.Load().evals.Load(); n != 1 {
		t.Errorf("%d evaluations; want 1", n)
	}
}

// TestDecisionCacheMCP: a policy on input.mcp is cached per tool, and the
// JSON-RPC id (different on every call, unread by the policy) does not
// defeat the cache.
func TestDecisionCacheMCP(t *testing.T) {
	dir := t.TempDir()
	src := `package onbehalf.authz
default decision := {"allow": false, "reason": "not a read-only tool"}
decision := {"allow": true, "reason": "read-only"} if {
	input.mcp.method == "tools/call"
	startswith(input.mcp.tool, "get_")
	not "force" in input.mcp.argument_names
}`
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Paths = []string{dir}
	cfg.Watch = false
	e, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	evals := func() uint64 { return e.cur.Load().evals.Load() }
	for i, tt := range []struct {
		tool  string
		args  []string
		id    string
		allow bool
		evals uint64
	}{
		{"get_issue", []string{"number"}, "1", true, 1},
		{"get_issue", []string{"number"}, "2", true, 1}, // id unread: hit
		{"delete_repo", []string{"number"}, "3", false, 2},
		{"get_issue", []string{"force", "number"}, "4", false, 3},
		{"get_issue", []string{"number"}, `"five"`, true, 3},
	} {
		in := NewInput(httptest.NewRequest("POST", "https://mcp.example.com/mcp", nil), InputArgs{Now: time.Now()})
		in.MCP = &MCP{MCPMessage: MCPMessage{Kind: "request", Method: "tools/call", Tool: tt.tool, ArgumentNames: tt.args, ID: []byte(tt.id)}, Batch: []MCPMessage{}}
		d := e.Decide(context.Background(), in)
		if d.Allow != tt.allow {
			t.Errorf("step %d: decision %+v; want allow=%v", i, d, tt.allow)
		}
		if got := evals(); got != tt.evals {
			t.Errorf("step %d: %d evaluations; want %d", i, got, tt.evals)
		}
	}
}
