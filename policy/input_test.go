package policy

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

var inputTime = time.Date(2026, 6, 18, 6, 0, 0, 0, time.UTC)

func TestNewInput(t *testing.T) {
	r := httptest.NewRequest("POST", "https://Slack.COM/api/chat.postMessage?x=1&x=2&channel=C1", strings.NewReader("{}"))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Add("Accept", "text/plain")
	r.Header.Add("Accept", "application/json")
	r.Header.Set("Authorization", "Bearer secret")
	r.Header.Set("Onbehalf-Assertion", "eyJ...")
	got := NewInput(r, InputArgs{
		Source:  "127.0.0.1:51234",
		Subject: Subject{User: "alice", Agent: "agent-7", Issuer: "https://orchestrator", Source: "orchestrator", Claims: map[string]any{"task_id": "T-1"}},
		Route:   &Route{Provider: "slack", Host: "slack.com", Name: "slack"},
		Now:     inputTime.Add(5 * time.Hour).In(time.FixedZone("CEST", 2*3600)),
	})
	want := &Input{
		Attributes: Attributes{
			Request: Request{HTTP: HTTPRequest{
				Method: "POST",
				Host:   "slack.com",
				Path:   "/api/chat.postMessage?x=1&x=2&channel=C1",
				Scheme: "https",
				Headers: map[string]string{
					"content-type":   "application/json",
					"accept":         "text/plain, application/json",
					"content-length": "2",
				},
			}},
			Source: Source{Address: "127.0.0.1:51234"},
		},
		ParsedPath:  []string{"api", "chat.postMessage"},
		ParsedQuery: map[string][]string{"x": {"1", "2"}, "channel": {"C1"}},
		Subject:     Subject{User: "alice", Agent: "agent-7", Issuer: "https://orchestrator", Source: "orchestrator", Claims: map[string]any{"task_id": "T-1"}},
		Route:       &Route{Provider: "slack", Host: "slack.com", Name: "slack"},
		Time:        "2026-06-18T11:00:00Z",
		Request:     RequestInfo{Protocol: ProtocolHTTP1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NewInput mismatch (-want +got):\n%s", diff)
	}
}

// TestInputReset: one Input reset for request after request equals a new
// input for each; no header of an earlier request stays in its map.
func TestInputReset(t *testing.T) {
	reqs := []func() (*http.Request, InputArgs){
		func() (*http.Request, InputArgs) {
			r := httptest.NewRequest("POST", "https://slack.com/api/chat.postMessage?x=1", strings.NewReader("{}"))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("X-Trace", "abc")
			r.Header.Set("Authorization", "Bearer secret")
			return r, InputArgs{Subject: Subject{User: "alice"}, Route: &Route{Provider: "slack"}, Now: inputTime}
		},
		func() (*http.Request, InputArgs) {
			r := httptest.NewRequest("GET", "https://slack.com/api/users.list", nil)
			r.Header.Set("Accept", "application/json")
			return r, InputArgs{Subject: Subject{User: "bob", Claims: map[string]any{"task_id": "T-2"}}, Now: inputTime.Add(time.Second), Protocol: ProtocolH2}
		},
		func() (*http.Request, InputArgs) {
			r := httptest.NewRequest("GET", "https://slack.com/", nil)
			return r, InputArgs{Now: inputTime.Add(2 * time.Second), Upgrade: "websocket"}
		},
	}
	var reused Input
	for round := range 2 {
		for i, req := range reqs {
			r, a := req()
			want := NewInput(r, a)
			reused.Reset(r, a)
			if diff := cmp.Diff(want, &reused); diff != "" {
				t.Errorf("round %d, request %d: Reset differs from NewInput (-new +reset):\n%s", round, i, diff)
			}
		}
	}
}

// TestNewInputJSON checks the wire shape of docs/design.md#policy-input:
// field names, a null route, and empty objects rather than nulls.
func TestNewInputJSON(t *testing.T) {
	r := httptest.NewRequest("GET", "http://example.com/", nil)
	bs, err := json.Marshal(NewInput(r, InputArgs{Now: inputTime}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"attributes":{"request":{"http":{"method":"GET","host":"example.com","path":"/","scheme":"http","headers":{}}},"source":{"address":""}},` +
		`"parsed_path":[""],"parsed_query":{},"subject":{"user":"","agent":"","issuer":"","source":"","claims":{}},"route":null,"time":"2026-06-18T06:00:00Z",` +
		`"request":{"protocol":"http/1.1","upgrade":""}}`
	if string(bs) != want {
		t.Errorf("JSON = %s\nwant   %s", bs, want)
	}
}

func TestNewInputDropsCredentials(t *testing.T) {
	tests := []struct {
		name   string
		header string
		args   InputArgs
	}{
		{"authorization", "Authorization", InputArgs{}},
		{"proxy authorization", "Proxy-Authorization", InputArgs{}},
		{"other proxy header", "Proxy-Connection", InputArgs{}},
		{"cookie", "Cookie", InputArgs{}},
		{"set-cookie", "Set-Cookie", InputArgs{}},
		{"default assertion", "Onbehalf-Assertion", InputArgs{}},
		{"default assertion with a custom one set", "Onbehalf-Assertion", InputArgs{AssertionHeader: "X-Assertion"}},
		{"custom assertion", "X-Assertion", InputArgs{AssertionHeader: "x-assertion"}},
		{"route credential header", "X-Api-Key", InputArgs{DropHeaders: []string{"X-API-KEY"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "https://api.example/", nil)
			// Set the header raw, in odd case, twice: nothing may survive.
			r.Header[tt.header] = []string{"secret-1", "secret-2"}
			r.Header[strings.ToLower(tt.header)] = []string{"secret-3"}
			r.Header[strings.ToUpper(tt.header)] = []string{"secret-4"}
			r.Header.Set("X-Ordinary", "kept")
			in := NewInput(r, tt.args)
			bs, _ := json.Marshal(in)
			if strings.Contains(string(bs), "secret") {
				t.Errorf("input contains %s: %s", tt.header, bs)
			}
			if in.Attributes.Request.HTTP.Headers["x-ordinary"] != "kept" {
				t.Errorf("headers = %v; want x-ordinary kept", in.Attributes.Request.HTTP.Headers)
			}
		})
	}
}

func TestLowerHeaderName(t *testing.T) {
	for _, name := range []string{"Content-Type", "content-type", "X-Custom-Header", "X-CUSTOM", "x-ok", "Accept", "X-Ä", "ÄB", ""} {
		if got, want := lowerHeaderName(name), strings.ToLower(name); got != want {
			t.Errorf("lowerHeaderName(%q) = %q; want %q", name, got, want)
		}
	}
	for name, lower := range commonHeaderNames {
		if name != http.CanonicalHeaderKey(name) || lower != strings.ToLower(name) {
			t.Errorf("commonHeaderNames[%q] = %q: the key must be canonical, the value its lower case", name, lower)
		}
	}
}

func TestFormatTime(t *testing.T) {
	paris := time.FixedZone("CEST", 2*3600)
	for _, tm := range []time.Time{
		inputTime, inputTime, inputTime.Add(999 * time.Millisecond), inputTime.Add(time.Second),
		inputTime.In(paris), inputTime.Add(-time.Second), time.Unix(0, 0), inputTime,
	} {
		if got, want := formatTime(tm), tm.UTC().Format(time.RFC3339); got != want {
			t.Errorf("formatTime(%v) = %s; want %s", tm, got, want)
		}
	}
}

func TestNewInputRequestForms(t *testing.T) {
	tests := []struct {
		name       string
		req        func() *http.Request
		args       InputArgs
		wantHost   string
		wantScheme string
		wantPath   string
		wantParsed []string
	}{
		{
			name:       "absolute form with default port",
			req:        func() *http.Request { return httptest.NewRequest("GET", "http://Example.com.:80/a/b/", nil) },
			wantHost:   "example.com",
			wantScheme: "http",
			wantPath:   "/a/b/",
			wantParsed: []string{"a", "b", ""},
		},
		{
			name:       "non-default port kept",
			req:        func() *http.Request { return httptest.NewRequest("GET", "https://example.com:8443/x", nil) },
			wantHost:   "example.com:8443",
			wantScheme: "https",
			wantPath:   "/x",
			wantParsed: []string{"x"},
		},
		{
			name: "origin form inside a tunnel",
			req: func() *http.Request {
				r := httptest.NewRequest("GET", "/repos/o/r?ref=main", nil)
				r.Host = "api.github.com:443"
				r.TLS = &tls.ConnectionState{}
				return r
			},
			wantHost:   "api.github.com",
			wantScheme: "https",
			wantPath:   "/repos/o/r?ref=main",
			wantParsed: []string{"repos", "o", "r"},
		},
		{
			name:       "caller's scheme and host win",
			req:        func() *http.Request { return httptest.NewRequest("GET", "/x", nil) },
			args:       InputArgs{Scheme: "https", Host: "slack.com"},
			wantHost:   "slack.com",
			wantScheme: "https",
			wantPath:   "/x",
			wantParsed: []string{"x"},
		},
		{
			name:       "escaped path kept, parsed path decoded",
			req:        func() *http.Request { return httptest.NewRequest("GET", "https://h/a%20b//c%2Fd", nil) },
			wantHost:   "h",
			wantScheme: "https",
			wantPath:   "/a%20b//c%2Fd",
			wantParsed: []string{"a b", "", "c", "d"},
		},
		{
			name:       "root",
			req:        func() *http.Request { return httptest.NewRequest("GET", "https://h", nil) },
			wantHost:   "h",
			wantScheme: "https",
			wantPath:   "/",
			wantParsed: []string{""},
		},
		{
			name:       "ipv6 default port",
			req:        func() *http.Request { return httptest.NewRequest("GET", "https://[::1]:443/", nil) },
			wantHost:   "[::1]",
			wantScheme: "https",
			wantPath:   "/",
			wantParsed: []string{""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := NewInput(tt.req(), tt.args)
			h := in.Attributes.Request.HTTP
			if h.Host != tt.wantHost || h.Scheme != tt.wantScheme || h.Path != tt.wantPath {
				t.Errorf("host, scheme, path = %q, %q, %q; want %q, %q, %q", h.Host, h.Scheme, h.Path, tt.wantHost, tt.wantScheme, tt.wantPath)
			}
			if diff := cmp.Diff(tt.wantParsed, in.ParsedPath); diff != "" {
				t.Errorf("ParsedPath mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNewInputBodyHeaders checks that a body stays visible to policy after Go
// moved its framing out of the header map.
func TestNewInputBodyHeaders(t *testing.T) {
	r := httptest.NewRequest("POST", "https://h/x", nil)
	r.TransferEncoding = []string{"chunked"}
	r.ContentLength = -1
	if got := NewInput(r, InputArgs{}).Attributes.Request.HTTP.Headers["transfer-encoding"]; got != "chunked" {
		t.Errorf("transfer-encoding = %q; want chunked", got)
	}
	r = httptest.NewRequest("POST", "https://h/x", strings.NewReader("hello"))
	r.Header.Del("Content-Length")
	if got := NewInput(r, InputArgs{}).Attributes.Request.HTTP.Headers["content-length"]; got != "5" {
		t.Errorf("content-length = %q; want 5", got)
	}
}

// TestInputValue checks that the hand-built AST value equals the value OPA
// would build from the JSON encoding.
func TestInputValue(t *testing.T) {
	inputs := map[string]*Input{
		"full":     benchInput(),
		"no route": NewInput(httptest.NewRequest("GET", "http://example.com/", nil), InputArgs{Now: inputTime}),
		"claims": NewInput(httptest.NewRequest("GET", "https://h/?a=1", nil), InputArgs{Subject: Subject{Claims: map[string]any{
			"providers": []any{"slack"}, "n": 3.5, "nested": map[string]any{"ok": true, "none": nil},
		}}}),
	}
	inputs["mcp"] = benchInput()
	inputs["mcp"].MCP = testMCP()
	inputs["mcp numeric id"] = benchInput()
	inputs["mcp numeric id"].MCP = &MCP{MCPMessage: MCPMessage{Kind: "request", Method: "tools/list", ArgumentNames: []string{}, ID: []byte("12")}, Batch: []MCPMessage{}}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			got, err := in.Value()
			if err != nil {
				t.Fatal(err)
			}
			want := jsonValue(t, in)
			if got.Compare(want) != 0 {
				t.Errorf("Value() = %v\nwant      %v", got, want)
			}
		})
	}
}

// jsonValue converts in to an AST value through JSON, the slow way.
func jsonValue(t testing.TB, in *Input) ast.Value {
	bs, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var x any
	if err := util.UnmarshalJSON(bs, &x); err != nil {
		t.Fatal(err)
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// benchInput is a typical request: a Slack post with a handful of headers
// and narrowing claims.
func benchInput() *Input {
	r := httptest.NewRequest("POST", "https://slack.com/api/chat.postMessage?channel=C0123ABC&text=hello", nil)
	for k, v := range map[string]string{
		"Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
		"User-Agent": "agent-sdk/1.2", "X-Request-Id": "8c1f0c7e", "Accept-Encoding": "gzip",
	} {
		r.Header.Set(k, v)
	}
	return NewInput(r, InputArgs{
		Source: "127.0.0.1:51234",
		Subject: Subject{User: "alice", Agent: "agent-7", Issuer: "https://orchestrator.example", Claims: map[string]any{
			"task_id": "T-1234", "providers": []any{"slack", "github"}, "slack_channels": []any{"C0123ABC"},
		}},
		Route: &Route{Provider: "slack", Host: "slack.com", Name: "slack"},
		Now:   inputTime,
	})
}

func BenchmarkNewInput(b *testing.B) {
	r := httptest.NewRequest("POST", "https://slack.com/api/chat.postMessage?channel=C0123ABC", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer x")
	args := InputArgs{Subject: Subject{User: "alice"}, Route: &Route{Provider: "slack"}, Now: inputTime}
	b.ReportAllocs()
	for b.Loop() {
		NewInput(r, args)
	}
}

// BenchmarkInputValue compares the direct AST conversion with the JSON round
// trip it replaces.
func BenchmarkInputValue(b *testing.B) {
	in := benchInput()
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := in.Value(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			jsonValue(b, in)
		}
	})
	b.Run("interface", func(b *testing.B) {
		// What rego.EvalInput does with a Go value: ast.InterfaceToValue,
		// which round-trips structs through JSON.
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ast.InterfaceToValue(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}
