package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy/mcp"
)

// MCP list responses shaped by policy: the answer to tools/list,
// prompts/list or resources/list on an MCP route loses every item that
// policy would refuse this user and agent to use — each item is asked
// about as the call that would use it (tools/call with the tool's name,
// prompts/get with the prompt's, resources/read with the resource's URI),
// so an agent is only shown what it may call. Hiding is a courtesy to the
// agent, not the control: a hidden tool called directly is still decided
// on its own, and refused.

// mcpList describes one list method: the result member holding the items,
// the method that uses an item, and the item member naming it.
type mcpList struct {
	kind   string // metrics label: tools, prompts, resources
	member string
	use    string
	name   string
}

var mcpLists = map[string]mcpList{
	"tools/list":     {kind: "tools", member: "tools", use: mcp.MethodToolsCall, name: "name"},
	"prompts/list":   {kind: "prompts", member: "prompts", use: mcp.MethodPromptsGet, name: "name"},
	"resources/list": {kind: "resources", member: "resources", use: mcp.MethodResourcesRead, name: "uri"},
}

// maxListBody bounds a list response (or one event of a stream) the
// sidecar reads whole to filter it: list pages of real servers are tens of
// kilobytes; one larger than this is refused rather than passed unfiltered.
const maxListBody = 8 << 20

// listDecisionTTL bounds how long a per-item decision is reused within one
// policy revision: decisions that read the time or the assertion's claims
// catch up within it. A call is always decided afresh.
const listDecisionTTL = time.Minute

// listDecisionCacheSize bounds the cached per-item decisions (users ×
// items of one agent deployment).
const listDecisionCacheSize = 10_000

// listKey identifies one per-item decision.
type listKey struct {
	revision, user, agent, issuer, route, method, name string
}

// listCache holds per-item decisions, each for listDecisionTTL. (The
// library's expirable LRU runs a goroutine per cache that nothing stops;
// a plain LRU with the time in each entry needs none.)
type listCache struct {
	mu  sync.Mutex
	lru *simplelru.LRU[listKey, listEntry]
}

type listEntry struct {
	ok      bool
	expires time.Time
}

func newListCache() *listCache {
	lru, _ := simplelru.NewLRU[listKey, listEntry](listDecisionCacheSize, nil) // size is positive
	return &listCache{lru: lru}
}

func (c *listCache) get(now time.Time, k listKey) (ok, hit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, hit := c.lru.Get(k)
	if !hit || !now.Before(e.expires) {
		return false, false
	}
	return e.ok, true
}

func (c *listCache) add(now time.Time, k listKey, ok bool) {
	c.mu.Lock()
	c.lru.Add(k, listEntry{ok: ok, expires: now.Add(listDecisionTTL)})
	c.mu.Unlock()
}

// listFilter is what one request's list responses are filtered with.
type listFilter struct {
	s  *Server
	ex *exchange
	in *policy.Input
	// lists maps the ids (JSON text) of the request's list requests to
	// what they list.
	lists map[string]mcpList
	// anyID filters any response whose result carries a list, whatever
	// its id: on the GET stream, where a server may replay the events of
	// an earlier POST to a resuming client (Last-Event-ID).
	anyID      bool
	reportOnly bool
	mu         sync.Mutex // guards hidden against the stream's goroutine
}

// newListFilter returns the filter of ex's list requests, or nil when it
// holds none.
func (s *Server) newListFilter(ex *exchange, in *policy.Input, reportOnly bool) *listFilter {
	if ex.mcp == nil {
		return nil
	}
	if ex.mcp.kind == mcpKindStream {
		return &listFilter{s: s, ex: ex, in: in, anyID: true, reportOnly: reportOnly}
	}
	if ex.mcp.call == nil {
		return nil
	}
	var f *listFilter
	for i := range ex.mcp.call.Messages {
		m := &ex.mcp.call.Messages[i]
		l, ok := mcpLists[m.Method]
		if !ok || m.Kind != mcp.KindRequest || m.ID == nil {
			continue
		}
		if f == nil {
			f = &listFilter{s: s, ex: ex, in: in, lists: map[string]mcpList{}, reportOnly: reportOnly}
		}
		f.lists[compactJSON(m.ID)] = l
	}
	return f
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}

// errListTooLarge refuses a list response too large to filter.
var errListTooLarge = fmt.Errorf("%w: MCP list response larger than the sidecar filters", errUpstreamInvalid)

// apply filters resp: a JSON body now, an event stream event by event as
// it is relayed.
func (f *listFilter) apply(ctx context.Context, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	if isEventStream(resp) {
		resp.Body = &sseFilter{ctx: ctx, f: f, src: resp.Body, r: bufio.NewReaderSize(resp.Body, 4096)}
		return nil
	}
	ct := resp.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBody+1))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read MCP list response: %w", err)
	}
	if len(body) > maxListBody {
		return errListTooLarge
	}
	if out, ok := f.filterPayload(ctx, body); ok {
		body = append(out, '\n')
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// filterPayload filters one JSON-RPC payload (a response, or a batch of
// them) and returns the new text, or false when nothing in it changed.
func (f *listFilter) filterPayload(ctx context.Context, b []byte) ([]byte, bool) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var msgs []json.RawMessage
		if json.Unmarshal(b, &msgs) != nil {
			return nil, false
		}
		changed := false
		for i, m := range msgs {
			if out, ok := f.filterMessage(ctx, m); ok {
				msgs[i], changed = out, true
			}
		}
		if !changed {
			return nil, false
		}
		out, err := json.Marshal(msgs)
		return out, err == nil
	}
	return f.filterMessage(ctx, b)
}

// filterMessage filters one response to a list request.
func (f *listFilter) filterMessage(ctx context.Context, b []byte) ([]byte, bool) {
	var msg map[string]json.RawMessage
	if json.Unmarshal(b, &msg) != nil {
		return nil, false
	}
	id, ok := msg["id"]
	if !ok || msg["result"] == nil {
		return nil, false
	}
	var result map[string]json.RawMessage
	if json.Unmarshal(msg["result"], &result) != nil {
		return nil, false
	}
	l, ok := f.lists[compactJSON(id)]
	if !ok && f.anyID {
		l, ok = listIn(result)
	}
	if !ok {
		return nil, false
	}
	var items []json.RawMessage
	if json.Unmarshal(result[l.member], &items) != nil {
		return nil, false
	}
	kept := items[:0]
	hidden := 0
	for _, it := range items {
		var named map[string]json.RawMessage
		var name string
		if json.Unmarshal(it, &named) != nil || json.Unmarshal(named[l.name], &name) != nil || !f.allowed(ctx, l, name) {
			hidden++ // an item without a name cannot be asked about
			continue
		}
		kept = append(kept, it)
	}
	if hidden == 0 {
		return nil, false
	}
	f.mu.Lock()
	f.ex.rec.ToolsHidden += hidden
	f.mu.Unlock()
	f.s.d.Metrics.MCPHidden(l.kind, hidden)
	var err error
	if result[l.member], err = json.Marshal(kept); err != nil {
		return nil, false
	}
	if msg["result"], err = json.Marshal(result); err != nil {
		return nil, false
	}
	out, err := json.Marshal(msg)
	return out, err == nil
}

// listIn returns the list a result carries (its tools, prompts or
// resources array), when it carries one.
func listIn(result map[string]json.RawMessage) (mcpList, bool) {
	for _, l := range mcpLists {
		if v := bytes.TrimSpace(result[l.member]); len(v) > 0 && v[0] == '[' {
			return l, true
		}
	}
	return mcpList{}, false
}

// allowed asks policy whether the user and agent may use the item name
// through l.use, from the cache when this revision already answered.
func (f *listFilter) allowed(ctx context.Context, l mcpList, name string) bool {
	ex, s := f.ex, f.s
	key := listKey{revision: s.d.Policy.Revision(), method: l.use, name: name}
	if ex.subject != nil {
		key.user, key.agent, key.issuer = ex.subject.User, ex.subject.Agent, ex.subject.Issuer
	}
	if ex.route != nil {
		key.route = ex.route.Name
	}
	if ok, hit := s.listCache.get(s.d.Now(), key); hit {
		return ok
	}
	in := *f.in
	m := policy.MCP{Batch: []policy.MCPMessage{}}
	if base := f.in.MCP; base != nil {
		m.Session, m.ProtocolVersion = base.Session, base.ProtocolVersion
	}
	m.MCPMessage = policy.MCPMessage{Kind: mcp.KindRequest.String(), Method: l.use, ArgumentNames: []string{}}
	switch l.use {
	case mcp.MethodToolsCall:
		m.Tool = name
	case mcp.MethodPromptsGet:
		m.Prompt = name
	default:
		m.Resource = name
	}
	in.MCP = &m
	d := s.d.Policy.Decide(ctx, &in)
	ok := d.Allow || d.ReportOnly || f.reportOnly
	if d.Revision == key.revision {
		s.listCache.add(s.d.Now(), key, ok)
	}
	return ok
}

// sseFilter relays an event stream, filtering the events that carry a
// response to a list request. Other events pass byte for byte.
type sseFilter struct {
	ctx context.Context
	f   *listFilter
	src io.ReadCloser
	r   *bufio.Reader
	out []byte // filtered bytes not yet read
	err error
}

// errEventTooLarge ends a stream whose event is too large to filter.
var errEventTooLarge = errors.New("MCP event stream: event larger than the sidecar filters")

func (s *sseFilter) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		s.out, s.err = s.event()
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

// event reads one event (up to and including its blank line) and returns
// what to relay for it.
func (s *sseFilter) event() ([]byte, error) {
	var raw []byte
	partial := false // the current line began in an earlier chunk
	for {
		line, complete, err := readLine(s.r, partial)
		raw = append(raw, line...)
		if len(raw) > maxListBody {
			return nil, errEventTooLarge
		}
		if err != nil {
			// The stream's end (or failure): what came is relayed,
			// filtered like a whole event.
			return s.filterEvent(raw), err
		}
		if !complete {
			partial = true
			continue
		}
		if !partial && isBlankLine(line) {
			return s.filterEvent(raw), nil
		}
		partial = false
	}
}

// readLine reads one line of an event stream with its line end: CRLF, LF
// or a lone CR, all three of which the format allows. complete is false
// when the line does not fit r's buffer (the rest follows) or the stream
// ended inside it; continued says the line began in such a chunk. The
// returned slice is valid until the next read from r, as with ReadSlice.
//
// A CR at the end of what has arrived is a line end whatever follows, but
// it may be the first half of a CRLF whose LF is still on its way. A blank
// line ends an event, so "\r" alone is taken at once rather than holding
// the event back for a byte that may not come soon; a LF that then follows
// reads as one more blank line, which dispatches nothing. After any other
// line the event cannot end yet, and readLine waits for the next byte.
func readLine(r *bufio.Reader, continued bool) (line []byte, complete bool, err error) {
	take := func(n int) []byte {
		b, _ := r.Peek(n)
		_, _ = r.Discard(n)
		return b
	}
	for {
		buf, _ := r.Peek(r.Buffered())
		if i := bytes.IndexAny(buf, "\r\n"); i >= 0 {
			end := i + 1
			if buf[i] == '\r' {
				switch {
				case i+1 < len(buf):
					if buf[i+1] == '\n' {
						end++
					}
				case i == 0 && !continued:
				case len(buf) == r.Size():
					// The CR ends a full buffer: the line up to it now,
					// the CR with what follows it at the next read.
					return take(i), false, nil
				default:
					if more, err := r.Peek(i + 2); err == nil && more[i+1] == '\n' {
						end++
					} // an error: the stream ended after a lone CR
				}
			}
			return take(end), true, nil
		}
		if len(buf) == r.Size() {
			return take(len(buf)), false, nil
		}
		if _, err := r.Peek(len(buf) + 1); err != nil {
			return take(r.Buffered()), false, err
		}
	}
}

func isBlankLine(line []byte) bool {
	return len(bytes.TrimRight(line, "\r\n")) == 0
}

// splitLines splits an event into its lines, each with its line end (CRLF,
// LF or a lone CR; the last may have none).
func splitLines(raw []byte) [][]byte {
	var lines [][]byte
	for len(raw) > 0 {
		i := bytes.IndexAny(raw, "\r\n")
		if i < 0 {
			return append(lines, raw)
		}
		end := i + 1
		if raw[i] == '\r' && end < len(raw) && raw[end] == '\n' {
			end++
		}
		lines, raw = append(lines, raw[:end]), raw[end:]
	}
	return lines
}

// filterEvent returns raw, or the event rewritten with its data filtered
// when it is a response to a list request.
func (s *sseFilter) filterEvent(raw []byte) []byte {
	var data [][]byte
	var other [][]byte
	for _, line := range splitLines(raw) {
		t := bytes.TrimRight(line, "\r\n")
		switch {
		case len(t) == 0:
		case bytes.HasPrefix(t, []byte("data:")):
			v := t[len("data:"):]
			v = bytes.TrimPrefix(v, []byte(" "))
			data = append(data, v)
		default:
			other = append(other, line)
		}
	}
	if len(data) == 0 {
		return raw
	}
	out, ok := s.f.filterPayload(s.ctx, bytes.Join(data, []byte("\n")))
	if !ok {
		return raw
	}
	var b []byte
	for _, l := range other {
		b = append(b, l...)
		if !bytes.HasSuffix(l, []byte("\n")) {
			b = append(b, '\n')
		}
	}
	b = append(b, "data: "...)
	b = append(b, out...)
	return append(b, "\n\n"...)
}

func (s *sseFilter) Close() error { return s.src.Close() }
