package mcp

import (
	"encoding/json"
	"slices"
	"testing"
)

// v1Message is how a server built on encoding/json (which matches member
// names case-insensitively and lets the last duplicate win) reads a
// message.
type v1Message struct {
	Method string `json:"method"`
	Params *struct {
		Name      json.RawMessage            `json:"name"`
		URI       json.RawMessage            `json:"uri"`
		Arguments map[string]json.RawMessage `json:"arguments"`
	} `json:"params"`
}

// FuzzParse checks that Parse never panics and that whatever it accepts,
// a case-insensitive decoder reads the same method, tool, resource and
// argument names: the policy decides on what the server will act on.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","Name":"delete"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///x"}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":"s","result":{}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","paramſ":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"a":"1","\u212a":"2"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := Parse(body)
		if err != nil {
			if _, ok := err.(*ProtocolError); !ok {
				t.Fatalf("error %T; want *ProtocolError", err)
			}
			return
		}
		if c.Batch {
			return
		}
		m := c.Messages[0]
		var v v1Message
		if err := json.Unmarshal(body, &v); err != nil {
			return // e.g. a number id encoding/json cannot hold: not a divergence in names
		}
		if v.Method != m.Method {
			t.Fatalf("method %q; encoding/json reads %q", m.Method, v.Method)
		}
		str := func(raw json.RawMessage) string {
			var s string
			_ = json.Unmarshal(raw, &s)
			return s
		}
		if v.Params == nil {
			if m.Name() != "" || len(m.ArgumentNames) > 0 {
				t.Fatalf("name %q, arguments %v; encoding/json reads no params", m.Name(), m.ArgumentNames)
			}
			return
		}
		switch m.Method {
		case MethodToolsCall:
			if got := str(v.Params.Name); got != m.Tool {
				t.Fatalf("tool %q; encoding/json reads %q", m.Tool, got)
			}
		case MethodPromptsGet:
			if got := str(v.Params.Name); got != m.Prompt {
				t.Fatalf("prompt %q; encoding/json reads %q", m.Prompt, got)
			}
		case MethodResourcesRead, MethodResourcesSubscribe, MethodResourceUnsubscribe:
			if got := str(v.Params.URI); got != m.Resource {
				t.Fatalf("resource %q; encoding/json reads %q", m.Resource, got)
			}
		default:
			return
		}
		var names []string
		for k := range v.Params.Arguments {
			names = append(names, k)
		}
		slices.Sort(names)
		if !slices.Equal(names, m.ArgumentNames) {
			t.Fatalf("argument names %v; encoding/json reads %v", m.ArgumentNames, names)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_issues","arguments":{"query":"is:open label:bug","limit":20,"repo":"acme/api"},"_meta":{"progressToken":7}}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}
