package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
	"github.com/onbehalf-dev/onbehalf/proxy/mcp"
)

// listPolicy refuses delete_* tools, the prompt "secret" and resources
// under file:///etc; it counts its evaluations.
type listPolicy struct {
	calls    atomic.Int64
	revision string
	report   bool
}

func (p *listPolicy) Decide(_ context.Context, in *policy.Input) policy.Decision {
	p.calls.Add(1)
	m := in.MCP
	deny := m == nil || m.Kind != "request" ||
		m.Method == "tools/call" && strings.HasPrefix(m.Tool, "delete_") ||
		m.Method == "prompts/get" && m.Prompt == "secret" ||
		m.Method == "resources/read" && strings.HasPrefix(m.Resource, "file:///etc")
	return policy.Decision{Allow: !deny, ReportOnly: deny && p.report, Revision: p.revision}
}

func (p *listPolicy) Revision() string { return p.revision }

func newListTest(t *testing.T, body string, pol *listPolicy) (*Server, *exchange, *listFilter) {
	t.Helper()
	call, err := mcp.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{d: Deps{Policy: pol, Now: time.Now}, listCache: newListCache()}
	ex := &exchange{
		subject: &identity.Subject{User: "alice", Agent: "agent-7"},
		route:   &injector.Route{Name: "gh", Provider: "github"},
		mcp:     &mcpExchange{call: call},
	}
	f := s.newListFilter(ex, &policy.Input{}, false)
	return s, ex, f
}

const listTools = `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search_issues","inputSchema":{"type":"object"}},{"name":"delete_repository"},{"name":"whoami"}],"nextCursor":"c2"}}`

func toolNames(t *testing.T, payload string) []string {
	t.Helper()
	var m struct {
		Result struct {
			Tools []struct{ Name string } `json:"tools"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		t.Fatalf("%v: %q", err, payload)
	}
	var out []string
	for _, x := range m.Result.Tools {
		out = append(out, x.Name)
	}
	return out
}

func TestListFilter(t *testing.T) {
	ctx := context.Background()
	t.Run("json", func(t *testing.T) {
		pol := &listPolicy{revision: "r1"}
		_, ex, f := newListTest(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, pol)
		if f == nil {
			t.Fatal("no filter for tools/list")
		}
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(listTools))}
		if err := f.apply(ctx, resp); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if got := strings.Join(toolNames(t, string(b)), ","); got != "search_issues,whoami" {
			t.Errorf("tools %q; want search_issues,whoami", got)
		}
		if !strings.Contains(string(b), `"nextCursor":"c2"`) || !strings.Contains(string(b), `"inputSchema":{"type":"object"}`) {
			t.Errorf("other members lost: %s", b)
		}
		if resp.ContentLength != int64(len(b)) || resp.Header.Get("Content-Length") != itoa(len(b)) {
			t.Errorf("length %d / %q; want %d", resp.ContentLength, resp.Header.Get("Content-Length"), len(b))
		}
		if ex.rec.ToolsHidden != 1 {
			t.Errorf("ToolsHidden = %d; want 1", ex.rec.ToolsHidden)
		}
		// A second list is answered from the cache; a new revision asks
		// again.
		n := pol.calls.Load()
		_, _, f2 := newListTest(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, pol)
		f2.s = f.s
		f2.filterPayload(ctx, []byte(listTools))
		if pol.calls.Load() != n {
			t.Errorf("cached list asked policy %d more times; want 0", pol.calls.Load()-n)
		}
		pol.revision = "r2"
		f2.filterPayload(ctx, []byte(listTools))
		if got := pol.calls.Load() - n; got != 3 {
			t.Errorf("after a reload policy was asked %d times; want 3", got)
		}
	})
	t.Run("sse", func(t *testing.T) {
		_, ex, f := newListTest(t, `{"jsonrpc":"2.0","id":"a","method":"tools/list"}`, &listPolicy{revision: "r"})
		progress := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"name\":\"delete_x\"}}\n\n"
		// The response's JSON is split over several data lines, with CRLF.
		resp := strings.Replace(strings.Replace(listTools, `"id":1`, `"id":"a"`, 1), `"tools":[`, "\"tools\":\r\ndata: [", 1)
		stream := ": keep-alive\n\n" + progress + "id: 7\r\nevent: message\r\ndata: " + resp + "\r\n\r\n" + progress
		for _, name := range []string{"whole", "one byte at a time"} {
			ex.rec.ToolsHidden = 0
			out := filterStream(t, f, stream, name != "whole")
			if !strings.HasPrefix(out, ": keep-alive\n\n"+progress+"id: 7\r\nevent: message\r\ndata: ") || !strings.HasSuffix(out, "\n\n"+progress) {
				t.Errorf("%s: other events or fields changed:\n%q", name, out)
			}
			i := strings.Index(out, "id: 7")
			data := out[i:]
			data = data[strings.Index(data, "data: ")+6:]
			data = data[:strings.Index(data, "\n")]
			if got := strings.Join(toolNames(t, data), ","); got != "search_issues,whoami" {
				t.Errorf("%s: tools %q; want search_issues,whoami", name, got)
			}
			if ex.rec.ToolsHidden != 1 {
				t.Errorf("%s: ToolsHidden = %d; want 1", name, ex.rec.ToolsHidden)
			}
		}
	})
	t.Run("prompts and resources in a batch", func(t *testing.T) {
		_, ex, f := newListTest(t, `[{"jsonrpc":"2.0","id":1,"method":"prompts/list"},{"jsonrpc":"2.0","id":2,"method":"resources/list"},{"jsonrpc":"2.0","id":3,"method":"ping"}]`, &listPolicy{revision: "r"})
		body := `[{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"secret"},{"name":"summary"}]}},` +
			`{"jsonrpc":"2.0","id":2,"result":{"resources":[{"uri":"file:///etc/passwd","name":"p"},{"uri":"file:///home/readme"},{"name":"no uri"}]}},` +
			`{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"delete_me"}]}}]`
		out, ok := f.filterPayload(ctx, []byte(body))
		if !ok {
			t.Fatal("nothing filtered")
		}
		s := string(out)
		for _, gone := range []string{"secret", "/etc/passwd", "no uri"} {
			if strings.Contains(s, gone) {
				t.Errorf("%q still listed: %s", gone, s)
			}
		}
		for _, kept := range []string{"summary", "file:///home/readme", "delete_me"} { // id 3 is not a list request
			if !strings.Contains(s, kept) {
				t.Errorf("%q lost: %s", kept, s)
			}
		}
		if ex.rec.ToolsHidden != 3 {
			t.Errorf("ToolsHidden = %d; want 3", ex.rec.ToolsHidden)
		}
	})
	t.Run("replayed on the GET stream", func(t *testing.T) {
		s := &Server{d: Deps{Policy: &listPolicy{revision: "r"}, Now: time.Now}, listCache: newListCache()}
		ex := &exchange{subject: &identity.Subject{User: "alice"}, mcp: &mcpExchange{kind: mcpKindStream}}
		f := s.newListFilter(ex, &policy.Input{}, false)
		if f == nil {
			t.Fatal("no filter on the GET stream")
		}
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
			Body: io.NopCloser(strings.NewReader("id: 3\ndata: " + strings.Replace(listTools, `"id":1`, `"id":"earlier-post"`, 1) + "\n\n"))}
		if err := f.apply(ctx, resp); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(b), "delete_repository") || ex.rec.ToolsHidden != 1 {
			t.Errorf("replayed list not filtered (%d hidden): %s", ex.rec.ToolsHidden, b)
		}
	})
	t.Run("report mode hides nothing", func(t *testing.T) {
		_, _, f := newListTest(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, &listPolicy{revision: "r", report: true})
		if out, ok := f.filterPayload(ctx, []byte(listTools)); ok {
			t.Errorf("filtered in report mode: %s", out)
		}
	})
	t.Run("no list request", func(t *testing.T) {
		if _, _, f := newListTest(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`, &listPolicy{}); f != nil {
			t.Error("a filter for a tools/call")
		}
	})
	t.Run("too large", func(t *testing.T) {
		_, _, f := newListTest(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, &listPolicy{revision: "r"})
		big := strings.Repeat(" ", maxListBody+1)
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(big))}
		if err := f.apply(ctx, resp); err == nil {
			t.Error("a list over the limit was passed")
		}
		resp = &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(strings.NewReader("data: " + big + "\n\n"))}
		_ = f.apply(ctx, resp)
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Error("an event over the limit was passed")
		}
	})
}

// filterStream runs an event stream through f, whole or one byte at a
// time, and returns what the agent would read.
func filterStream(t *testing.T, f *listFilter, stream string, oneByte bool) string {
	t.Helper()
	var src io.Reader = strings.NewReader(stream)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	r := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(src)}
	if err := f.apply(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestListFilterSSELineEnds feeds the event stream filter streams whose
// lines end in a lone CR, as the event-stream format allows beside LF and
// CRLF: the list response among them is filtered, every other event passes
// unchanged, and an event is relayed as soon as its blank line has come.
func TestListFilterSSELineEnds(t *testing.T) {
	ctx := context.Background()
	progress := "event: message\rdata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"name\":\"delete_x\"}}\r\r"
	list := strings.Replace(listTools, `"id":1`, `"id":"a"`, 1)
	for _, tc := range []struct{ name, stream string }{
		{"lone CR", progress + "id: 7\revent: message\rdata: " + list + "\r\r" + progress},
		{"mixed", progress + "id: 7\r\nevent: message\rdata: " + strings.Replace(list, `"tools":[`, "\"tools\":\ndata: [", 1) + "\r\n\r" + progress},
	} {
		for _, split := range []string{"whole", "one byte at a time"} {
			t.Run(tc.name+"/"+split, func(t *testing.T) {
				_, ex, f := newListTest(t, `{"jsonrpc":"2.0","id":"a","method":"tools/list"}`, &listPolicy{revision: "r"})
				out := filterStream(t, f, tc.stream, split != "whole")
				if !strings.HasPrefix(out, progress+"id: 7\r") || !strings.HasSuffix(out, "\n\n"+progress) {
					t.Errorf("other events or fields changed:\n%q", out)
				}
				data := out[strings.Index(out, "id: 7"):]
				data = data[strings.Index(data, "data: ")+len("data: "):]
				data = data[:strings.Index(data, "\n")]
				if got := strings.Join(toolNames(t, data), ","); got != "search_issues,whoami" {
					t.Errorf("tools %q; want search_issues,whoami", got)
				}
				if ex.rec.ToolsHidden != 1 {
					t.Errorf("ToolsHidden = %d; want 1", ex.rec.ToolsHidden)
				}
			})
		}
	}

	t.Run("an event ends at its blank line", func(t *testing.T) {
		_, _, f := newListTest(t, `{"jsonrpc":"2.0","id":"a","method":"tools/list"}`, &listPolicy{revision: "r"})
		pr, pw := io.Pipe()
		defer pw.Close()
		r := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: pr}
		if err := f.apply(ctx, r); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			b := make([]byte, 4096)
			n, _ := r.Body.Read(b)
			got <- string(b[:n])
		}()
		// The server sends one event and then nothing: the blank line's
		// CR may be the first half of a CRLF, but the event is complete.
		go io.WriteString(pw, "data: "+list+"\r\r")
		select {
		case out := <-got:
			if strings.Contains(out, "delete_repository") || !strings.Contains(out, "whoami") {
				t.Errorf("event relayed unfiltered: %q", out)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the event was held back waiting for the byte after its blank line")
		}
	})
}

func TestReadLine(t *testing.T) {
	// A 16-byte buffer (bufio's smallest): lines longer than it come in
	// chunks, and a CRLF may straddle two fills.
	for _, tc := range []struct {
		in   string
		want []string // lines; "+" marks an incomplete chunk
	}{
		{"a\nb\r\nc\rd", []string{"a\n", "b\r\n", "c\r", "+d"}},
		{"\r\r\n\n", []string{"\r", "\r\n", "\n"}},
		{"0123456789abcde\r\nx\n", []string{"+0123456789abcde", "\r\n", "x\n"}},
		{"0123456789abcdef0123\r\n", []string{"+0123456789abcdef", "0123\r\n"}},
	} {
		r := bufio.NewReaderSize(iotest.HalfReader(strings.NewReader(tc.in)), 16)
		var got []string
		continued := false
		for {
			line, complete, err := readLine(r, continued)
			if len(line) > 0 || err == nil {
				s := string(line)
				if !complete {
					s = "+" + s
				}
				got = append(got, s)
			}
			if err != nil {
				break
			}
			continued = !complete
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q; want %q", tc.in, got, tc.want)
		}
	}
}
