package mcp

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Call
	}{
		{"initialize", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`,
			Call{Messages: []Message{{Kind: KindRequest, Method: "initialize", ID: []byte("1")}}}},
		{"tools/call", `{"jsonrpc":"2.0","id":"a-7","method":"tools/call","params":{"name":"search_issues","arguments":{"query":"x","limit":5,"nested":{"deep":[1,{"k":2}]}}}}`,
			Call{Messages: []Message{{Kind: KindRequest, Method: "tools/call", ID: []byte(`"a-7"`), Tool: "search_issues", ArgumentNames: []string{"limit", "nested", "query"}}}}},
		{"tools/call params before method", ` { "params" : {"arguments":{"b":1,"a":2},"name":"t"}, "id" : 3 , "method":"tools/call","jsonrpc":"2.0"} `,
			Call{Messages: []Message{{Kind: KindRequest, Method: "tools/call", ID: []byte("3"), Tool: "t", ArgumentNames: []string{"a", "b"}}}}},
		{"tools/call without arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`,
			Call{Messages: []Message{{Kind: KindRequest, Method: "tools/call", ID: []byte("1"), Tool: "t"}}}},
		{"tools/call null arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":null}}`,
			Call{Messages: []Message{{Kind: KindRequest, Method: "tools/call", ID: []byte("1"), Tool: "t"}}}},
		{"prompts/get", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"x":"1"}}}`,
			Call{Messages: []Message{{Kind: KindRequest, Method: "prompts/get", ID: []byte("1"), Prompt: "p", ArgumentNames: []string{"x"}}}}},
		{"resources/read", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/x"}}`,
			Call{Messages: []Message{{Kind: KindRequest, Method: "resources/read", ID: []byte("1"), Resource: "file:///etc/x"}}}},
		{"arguments of other methods are not listed", `{"jsonrpc":"2.0","id":1,"method":"x/y","params":{"name":"n","arguments":{"a":1}}}`,
			Call{Messages: []Message{{Kind: KindRequest, Method: "x/y", ID: []byte("1")}}}},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			Call{Messages: []Message{{Kind: KindNotification, Method: "notifications/initialized"}}}},
		{"response", `{"jsonrpc":"2.0","id":"srv-1","result":{"roots":[]}}`,
			Call{Messages: []Message{{Kind: KindResponse, ID: []byte(`"srv-1"`)}}}},
		{"error response", `{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"no"}}`,
			Call{Messages: []Message{{Kind: KindResponse, ID: []byte("4")}}}},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"u"}}]`,
			Call{Batch: true, Messages: []Message{
				{Kind: KindRequest, Method: "tools/call", ID: []byte("1"), Tool: "a"},
				{Kind: KindNotification, Method: "notifications/x"},
				{Kind: KindRequest, Method: "resources/read", ID: []byte("2"), Resource: "u"},
			}}},
		{"names equal only across objects", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"Name":1,"x":{"name":2,"y":{"NAME":{}}}}}}`,
			Call{Messages: []Message{{Kind: KindRequest, Method: "tools/call", ID: []byte("1"), Tool: "t", ArgumentNames: []string{"Name", "x"}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(&tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name string
		body string
		code int
	}{
		{"empty", ``, CodeInvalidRequest},
		{"not JSON", `hello`, CodeParseError},
		{"truncated", `{"jsonrpc":"2.0","id":1,"method":"x"`, CodeParseError},
		{"trailing value", `{"jsonrpc":"2.0","id":1,"method":"x"} {"jsonrpc":"2.0","id":2,"method":"y"}`, CodeParseError},
		{"trailing garbage", `{"jsonrpc":"2.0","id":1,"method":"x"}x`, CodeParseError},
		{"invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"t\xff\"}}", CodeParseError},
		{"lone surrogate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t\ud800"}}`, CodeParseError},
		{"duplicate method", `{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}`, CodeParseError},
		{"method differing in case", `{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"x"}}`, CodeParseError},
		{"lone Method", `{"jsonrpc":"2.0","id":1,"Method":"tools/call"}`, CodeParseError},
		{"params with long s", `{"jsonrpc":"2.0","id":1,"method":"tools/list","paramſ":{"name":"x"}}`, CodeParseError},
		{"Name in params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","Name":"delete_repo"}}`, CodeParseError},
		{"Arguments in params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","Arguments":{"x":1}}}`, CodeParseError},
		{"duplicate argument by case", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"path":1,"PATH":2}}}`, CodeParseError},
		{"duplicate deep by Kelvin sign", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":{"k":1,"\u212a":2}}}}`, CodeParseError},
		{"duplicate in result", `{"jsonrpc":"2.0","id":1,"result":{"a":1,"a":2}}`, CodeParseError},
		{"too deep", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}}`, CodeParseError},
		{"array of scalars", `[1]`, CodeInvalidRequest},
		{"empty batch", `[]`, CodeInvalidRequest},
		{"scalar", `"x"`, CodeInvalidRequest},
		{"no jsonrpc", `{"id":1,"method":"x"}`, CodeInvalidRequest},
		{"jsonrpc 1.0", `{"jsonrpc":"1.0","id":1,"method":"x"}`, CodeInvalidRequest},
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"x"}`, CodeInvalidRequest},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"x"}`, CodeInvalidRequest},
		{"method number", `{"jsonrpc":"2.0","id":1,"method":5}`, CodeInvalidRequest},
		{"empty method", `{"jsonrpc":"2.0","id":1,"method":""}`, CodeInvalidRequest},
		{"method and result", `{"jsonrpc":"2.0","id":1,"method":"x","result":{}}`, CodeInvalidRequest},
		{"result and error", `{"jsonrpc":"2.0","id":1,"result":{},"error":{}}`, CodeInvalidRequest},
		{"response without id", `{"jsonrpc":"2.0","result":{}}`, CodeInvalidRequest},
		{"params array", `{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}`, CodeInvalidParams},
		{"tools/call without name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}`, CodeInvalidParams},
		{"tools/call without params", `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`, CodeInvalidParams},
		{"tools/call name not a string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_repo"]}}`, CodeInvalidParams},
		{"tools/call arguments array", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":["a"]}}`, CodeInvalidParams},
		{"resources/read without uri", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}`, CodeInvalidParams},
		{"bad message in batch", `[{"jsonrpc":"2.0","id":1,"method":"x"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a","Name":"b"}}]`, CodeParseError},
		{"nested batch", `[[{"jsonrpc":"2.0","id":1,"method":"x"}]]`, CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.body))
			if err == nil {
				t.Fatalf("Parse accepted %s: %+v", tt.body, got)
			}
			pe, ok := err.(*ProtocolError)
			if !ok {
				t.Fatalf("Parse error %T %v; want *ProtocolError", err, err)
			}
			if pe.Code != tt.code {
				t.Errorf("code %d (%s); want %d", pe.Code, pe.Message, tt.code)
			}
		})
	}
}

// TestParseErrorsQuoteNoValues checks that refusals never echo a value from
// the body (it may be an argument holding a secret).
func TestParseErrorsQuoteNoValues(t *testing.T) {
	const secret = "s3cr3t-value"
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"k":"` + secret + `"` + "\xff" + `}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"k":"` + secret + `",}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"k":"` + secret + `"}}} ` + secret,
	} {
		_, err := Parse([]byte(body))
		if err == nil {
			t.Fatalf("Parse accepted %q", body)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q quotes a value from the body", err)
		}
	}
}

func TestFoldKey(t *testing.T) {
	names := []string{"k", "K", "\u212a", "s", "S", "\u017f", "params", "PARAMS", "paramſ", "Straße", "STRASSE", "ǅ", "ǆ", "Ǆ", "ab", "a"}
	for _, a := range names {
		for _, b := range names {
			if got, want := foldKey(a) == foldKey(b), strings.EqualFold(a, b); got != want {
				t.Errorf("foldKey(%q) == foldKey(%q) is %v; want %v (strings.EqualFold)", a, b, got, want)
			}
		}
	}
}

func TestCheckHeaders(t *testing.T) {
	call := func(body string) *Call {
		c, err := Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	toolCall := call(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}`)
	tests := []struct {
		name string
		h    http.Header
		c    *Call
		ok   bool
	}{
		{"none", http.Header{}, toolCall, true},
		{"matching", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"get_weather"}}, toolCall, true},
		{"base64 name", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"=?base64?Z2V0X3dlYXRoZXI=?="}}, toolCall, true},
		{"method mismatch", http.Header{"Mcp-Method": {"tools/list"}}, toolCall, false},
		{"name mismatch", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"delete_repo"}}, toolCall, false},
		{"bad base64", http.Header{"Mcp-Name": {"=?base64?***?="}}, toolCall, false},
		{"two names", http.Header{"Mcp-Name": {"get_weather", "get_weather"}}, toolCall, false},
		{"batch", http.Header{"Mcp-Method": {"tools/call"}}, call(`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}]`), false},
		{"name on a method without one", http.Header{"Mcp-Name": {"x"}}, call(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHeaders(tt.h, tt.c)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckHeaders = %v; want ok=%v", err, tt.ok)
			}
			if err != nil && err.(*ProtocolError).Code != CodeHeaderMismatch {
				t.Errorf("code %d; want %d", err.(*ProtocolError).Code, CodeHeaderMismatch)
			}
		})
	}
}

func TestRefusal(t *testing.T) {
	data := []byte(`{"error":"policy_denied","decision_id":"d1"}`)
	single, _ := Parse([]byte(`{"jsonrpc":"2.0","id":"x\"y","method":"tools/call","params":{"name":"t"}}`))
	batch, _ := Parse([]byte(`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":2,"method":"b"}]`))
	notes, _ := Parse([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))

	type rpcError struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	type response struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}
	var one response
	if err := json.Unmarshal(Refusal(single, -31403, "policy <denied>", data), &one); err != nil {
		t.Fatal(err)
	}
	if one.JSONRPC != "2.0" || string(one.ID) != `"x\"y"` || one.Error.Code != -31403 || one.Error.Message != "policy <denied>" || string(one.Error.Data) != string(data) {
		t.Errorf("refusal %+v", one)
	}
	var many []response
	if err := json.Unmarshal(Refusal(batch, -31403, "m", nil), &many); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range many {
		ids = append(ids, string(r.ID))
	}
	if !slices.Equal(ids, []string{"1", "2"}) {
		t.Errorf("batch refusal answers ids %v; want [1 2] (none for the notification)", ids)
	}
	if b := Refusal(notes, -31403, "m", nil); b != nil {
		t.Errorf("refusal of a notification has body %s; want none", b)
	}
	var noID response
	if err := json.Unmarshal(ErrorWithoutID(CodeParseError, "bad", nil), &noID); err != nil || string(noID.ID) != "null" {
		t.Errorf("ErrorWithoutID: %v %+v", err, noID)
	}
}
