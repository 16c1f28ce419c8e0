// Package mcp reads what an MCP client POSTs to a Streamable HTTP endpoint
// (one JSON-RPC 2.0 message, or a batch of them under protocol revision
// 2025-03-26) and writes the JSON-RPC error responses the sidecar refuses
// them with.
//
// Parse is strict because the sidecar decides on what it parsed while the
// MCP server acts on what it parses: wherever the two could read one body
// differently, the body is refused rather than forwarded. Beyond RFC 8259
// (checked by the jsontext tokenizer: UTF-8 only, no duplicate member names,
// one value) Parse refuses any object holding two member names that are
// equal under Unicode case folding — Go's encoding/json and other
// case-insensitive decoders would merge them — and, where it reads members
// (the message and its params), names that differ from the ones it reads
// only in case ("Method", "paramſ"). A policy therefore sees the method,
// tool, resource and argument names the server will act on.
//
// Everything here is safe for concurrent use; a Call is immutable once
// Parse returns it.
package mcp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// MaxBodyBytes bounds the body of one POST on an MCP route. The sidecar
// reads it whole before deciding; MCP requests (a tool call with its
// arguments) are a few kilobytes, and a megabyte leaves room for uploads of
// moderate documents as tool arguments.
const MaxBodyBytes = 1 << 20

// maxDepth bounds nesting in a body. Tool arguments are shallow JSON; the
// bound keeps the per-object name sets of a hostile body small.
const maxDepth = 256

// JSON-RPC 2.0 error codes (section 5.1 of the JSON-RPC specification) and
// the one MCP defines for intermediaries (revision 2026-07-28).
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeHeaderMismatch refuses a request whose Mcp-Method or Mcp-Name
	// header says something else than its body.
	CodeHeaderMismatch = -32020
)

// Kind is what a JSON-RPC message is.
type Kind uint8

// The kinds of message a client sends.
const (
	// KindRequest has a method and an id and expects a response.
	KindRequest Kind = iota + 1
	// KindNotification has a method and no id.
	KindNotification
	// KindResponse answers a request the server sent (sampling,
	// elicitation, roots): an id and a result or an error.
	KindResponse
)

// String returns the kind as policy input spells it.
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	}
	return ""
}

// Methods whose params Parse reads.
const (
	MethodToolsCall           = "tools/call"
	MethodPromptsGet          = "prompts/get"
	MethodResourcesRead       = "resources/read"
	MethodResourcesSubscribe  = "resources/subscribe"
	MethodResourceUnsubscribe = "resources/unsubscribe"
)

// Message is what Parse read from one JSON-RPC message.
type Message struct {
	Kind Kind
	// Method is the method of a request or notification.
	Method string
	// ID is the id's JSON text (a string with its quotes, or a number) as
	// sent, nil for a notification. It aliases the parsed body.
	ID []byte
	// Tool is params.name of tools/call.
	Tool string
	// Prompt is params.name of prompts/get.
	Prompt string
	// Resource is params.uri of resources/read, resources/subscribe and
	// resources/unsubscribe.
	Resource string
	// ArgumentNames are the member names of params.arguments (tools/call,
	// prompts/get), sorted; never their values.
	ArgumentNames []string
}

// Name is the value the Mcp-Name header mirrors: the tool, prompt or
// resource the message names.
func (m *Message) Name() string {
	switch {
	case m.Tool != "":
		return m.Tool
	case m.Prompt != "":
		return m.Prompt
	}
	return m.Resource
}

// Call is one POST body: a single message, or a batch.
type Call struct {
	Messages []Message
	// Batch is set when the body was a JSON array of messages.
	Batch bool
}

// HasRequests reports whether any message of c expects a response.
func (c *Call) HasRequests() bool {
	for i := range c.Messages {
		if c.Messages[i].Kind == KindRequest {
			return true
		}
	}
	return false
}

// ProtocolError is a body Parse refuses, with the JSON-RPC code to answer
// with. Its message names the problem and never quotes values from the
// body (member names only, which are not secrets).
type ProtocolError struct {
	Code    int
	Message string
}

func (e *ProtocolError) Error() string { return e.Message }

func protocolErrorf(code int, format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Member names Parse reads, at the message and params levels.
var (
	messageKeys = []string{"jsonrpc", "id", "method", "params", "result", "error"}
	paramKeys   = []string{"name", "uri", "arguments"}
)

// Parse reads a POST body. A body that is not JSON, or holds member names a
// case-insensitive decoder would read differently, is a ProtocolError with
// CodeParseError; JSON that is not JSON-RPC 2.0 (or an MCP message without
// the params its method needs) one with CodeInvalidRequest or
// CodeInvalidParams.
func Parse(body []byte) (*Call, error) {
	d := decoders.Get().(*pooledDecoder)
	defer d.release()
	d.buf = bytes.NewBuffer(body)
	d.dec.Reset(d.buf)
	p := parser{body: body, dec: d.dec}
	return p.parse()
}

// pooledDecoder keeps a tokenizer's buffers across calls: a jsontext
// Decoder costs a few kilobytes to set up, more than parsing a typical
// message (BenchmarkParse).
type pooledDecoder struct {
	dec *jsontext.Decoder
	buf *bytes.Buffer
}

var decoders = sync.Pool{New: func() any {
	return &pooledDecoder{dec: jsontext.NewDecoder(bytes.NewBuffer(nil))}
}}

func (d *pooledDecoder) release() {
	d.buf = nil
	d.dec.Reset(bytes.NewBuffer(nil)) // drop the reference to the body
	decoders.Put(d)
}

// parser walks the body's tokens once, checking member names at every depth
// and collecting the fields of each message.
type parser struct {
	body []byte
	dec  *jsontext.Decoder
	call Call
	base int // depth of the message objects' members: 1, or 2 in a batch
	// started is set once the top-level value began.
	started bool
	// cur is the message being read and its raw fields.
	cur      Message
	seen     fields
	names    [4]string // the member being read at depths 1..3 (relative to base-1)
	nameSets []nameSet // per open object, by depth
}

// fields records which members a message had.
type fields struct {
	jsonrpc, id, method, params, result, errorMember bool
	version                                          string
	name, uri                                        string
	hasName, hasURI                                  bool
}

func (p *parser) parse() (*Call, error) {
	for {
		before := p.dec.InputOffset()
		depth := p.dec.StackDepth()
		kind, length := p.dec.StackIndex(depth)
		tok, err := p.dec.ReadToken()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, protocolErrorf(CodeParseError, "the body is not valid JSON: %v", syntaxReason(err))
		}
		isName := kind == '{' && length%2 == 0 && tok.Kind() == '"'
		if err := p.token(tok, depth, isName, before); err != nil {
			return nil, err
		}
	}
	if len(p.call.Messages) == 0 {
		return nil, protocolErrorf(CodeInvalidRequest, "the body holds no JSON-RPC message")
	}
	return &p.call, nil
}

// token handles one token read at depth (the stack depth before reading
// it); before is the input offset before it.
func (p *parser) token(tok jsontext.Token, depth int, isName bool, before int64) error {
	k := tok.Kind()
	if (k == '{' || k == '[') && depth >= maxDepth {
		return protocolErrorf(CodeParseError, "the body nests deeper than %d levels", maxDepth)
	}
	switch {
	case depth == 0:
		// The top-level value: a message or a batch, and nothing after it.
		if p.started {
			return protocolErrorf(CodeParseError, "the body holds more than one JSON value")
		}
		p.started = true
		switch k {
		case '{':
			p.base = 1
			p.startMessage()
		case '[':
			p.base, p.call.Batch = 2, true
		default:
			return protocolErrorf(CodeInvalidRequest, "the body must be a JSON-RPC message (an object) or a batch (an array)")
		}
	case p.call.Batch && depth == 1:
		// An element of a batch.
		switch k {
		case '{':
			p.startMessage()
		case ']':
			if len(p.call.Messages) == 0 {
				return protocolErrorf(CodeInvalidRequest, "a batch must hold at least one message")
			}
		default:
			return protocolErrorf(CodeInvalidRequest, "every element of a batch must be a JSON-RPC message (an object)")
		}
	}

	// Member names: no two in one object may fold to the same name, and
	// where Parse reads members, none may differ from a name it reads
	// only in case.
	if isName {
		name := tok.String()
		if err := p.checkName(name, depth); err != nil {
			return err
		}
		if rel := depth - p.base + 1; rel >= 1 && rel <= 3 {
			p.names[rel] = name
		}
		return nil
	}

	// Open and close objects for the name sets.
	switch k {
	case '{':
		p.pushObject(depth + 1)
	case '}':
		p.popObject(depth)
		if depth == p.base {
			return p.endMessage()
		}
	}
	if depth < p.base {
		return nil
	}
	return p.value(tok, depth-p.base+1, before)
}

// value records a member value of interest; rel is its depth relative to
// the message (1: a member of the message, 2: of params, 3: of
// params.arguments).
func (p *parser) value(tok jsontext.Token, rel int, before int64) error {
	k := tok.Kind()
	// Only the first token of a value matters: a closing delimiter ends a
	// value already handled.
	if k == '}' || k == ']' {
		return nil
	}
	f := &p.seen
	switch rel {
	case 1:
		switch p.names[1] {
		case "jsonrpc":
			f.jsonrpc = true
			if k != '"' {
				return protocolErrorf(CodeInvalidRequest, `"jsonrpc" must be "2.0"`)
			}
			f.version = tok.String()
		case "id":
			f.id = true
			if k != '"' && k != '0' {
				return protocolErrorf(CodeInvalidRequest, `"id" must be a string or a number`)
			}
			p.cur.ID = p.raw(before)
		case "method":
			f.method = true
			if k != '"' {
				return protocolErrorf(CodeInvalidRequest, `"method" must be a string`)
			}
			p.cur.Method = tok.String()
		case "params":
			f.params = true
			if k != '{' {
				return protocolErrorf(CodeInvalidParams, `"params" must be an object`)
			}
		case "result":
			f.result = true
		case "error":
			f.errorMember = true
		}
	case 2:
		if p.names[1] != "params" {
			return nil
		}
		switch p.names[2] {
		case "name":
			f.hasName = true
			if k == '"' {
				f.name = tok.String()
			}
		case "uri":
			f.hasURI = true
			if k == '"' {
				f.uri = tok.String()
			}
		case "arguments":
			if k != '{' && k != 'n' {
				return protocolErrorf(CodeInvalidParams, `"params.arguments" must be an object`)
			}
		}
	}
	return nil
}

// raw returns the JSON text of the scalar value just read, which began
// after offset before (past the name separator and whitespace).
func (p *parser) raw(before int64) []byte {
	b := p.body[before:p.dec.InputOffset()]
	return bytes.TrimLeft(b, " \t\r\n:,")
}

func (p *parser) startMessage() {
	p.cur = Message{}
	p.seen = fields{}
	p.names = [4]string{}
}

// endMessage classifies the message just read and checks its params.
func (p *parser) endMessage() error {
	f, m := &p.seen, &p.cur
	if !f.jsonrpc || f.version != "2.0" {
		return protocolErrorf(CodeInvalidRequest, `every message must carry "jsonrpc": "2.0"`)
	}
	switch {
	case f.method && (f.result || f.errorMember):
		return protocolErrorf(CodeInvalidRequest, `a message cannot have both "method" and "result" or "error"`)
	case f.method && m.Method == "":
		return protocolErrorf(CodeInvalidRequest, `"method" must not be empty`)
	case f.method && f.id:
		m.Kind = KindRequest
	case f.method:
		m.Kind = KindNotification
	case f.id && f.result != f.errorMember:
		m.Kind = KindResponse
	default:
		return protocolErrorf(CodeInvalidRequest, `a message needs "method" (a request or notification) or "id" with one of "result" and "error" (a response)`)
	}
	switch m.Method {
	case MethodToolsCall, MethodPromptsGet:
		if !f.hasName || f.name == "" {
			return protocolErrorf(CodeInvalidParams, `%s needs "params.name", a non-empty string`, m.Method)
		}
		if m.Method == MethodToolsCall {
			m.Tool = f.name
		} else {
			m.Prompt = f.name
		}
	case MethodResourcesRead, MethodResourcesSubscribe, MethodResourceUnsubscribe:
		if !f.hasURI || f.uri == "" {
			return protocolErrorf(CodeInvalidParams, `%s needs "params.uri", a non-empty string`, m.Method)
		}
		m.Resource = f.uri
	}
	if m.Method == MethodToolsCall || m.Method == MethodPromptsGet {
		slices.Sort(m.ArgumentNames)
	} else {
		m.ArgumentNames = nil
	}
	p.call.Messages = append(p.call.Messages, *m)
	return nil
}

// checkName checks a member name read at depth against the others of its
// object, and against the names Parse reads at that level.
func (p *parser) checkName(name string, depth int) error {
	key := foldKey(name)
	set := &p.nameSets[depth-1]
	if set.has(key) {
		return protocolErrorf(CodeParseError, "an object holds member names that differ only in case (%s)", quoteName(name))
	}
	set.add(key)
	var known []string
	switch rel := depth - p.base + 1; {
	case rel == 1:
		known = messageKeys
	case rel == 2 && p.names[1] == "params":
		known = paramKeys
	case rel == 3 && p.names[1] == "params" && p.names[2] == "arguments":
		p.cur.ArgumentNames = append(p.cur.ArgumentNames, name)
	}
	for _, k := range known {
		if name != k && strings.EqualFold(name, k) {
			return protocolErrorf(CodeParseError, "member %s differs from %q only in case", quoteName(name), k)
		}
	}
	return nil
}

func (p *parser) pushObject(depth int) {
	for len(p.nameSets) < depth {
		p.nameSets = append(p.nameSets, nameSet{})
	}
	p.nameSets = p.nameSets[:depth]
	p.nameSets[depth-1].reset()
}

func (p *parser) popObject(depth int) {
	if depth >= 1 && depth <= len(p.nameSets) {
		p.nameSets = p.nameSets[:depth-1]
	}
}

// nameSet holds the folded member names of one object: a slice while it is
// small (most objects have a handful of members), a map beyond.
type nameSet struct {
	list []string
	m    map[string]struct{}
}

// nameSetListMax is where a nameSet switches from scanning a slice to a map.
const nameSetListMax = 16

func (s *nameSet) reset() { s.list, s.m = s.list[:0], nil }

func (s *nameSet) has(key string) bool {
	if s.m != nil {
		_, ok := s.m[key]
		return ok
	}
	return slices.Contains(s.list, key)
}

func (s *nameSet) add(key string) {
	switch {
	case s.m != nil:
		s.m[key] = struct{}{}
	case len(s.list) < nameSetListMax:
		s.list = append(s.list, key)
	default:
		s.m = make(map[string]struct{}, 2*nameSetListMax)
		for _, k := range s.list {
			s.m[k] = struct{}{}
		}
		s.m[key] = struct{}{}
	}
}

// foldKey maps s to a key that two names share exactly when
// strings.EqualFold reports them equal: each rune becomes the smallest rune
// of its Unicode simple-folding orbit (so "k", "K" and the Kelvin sign
// share "K").
func foldKey(s string) string {
	ascii, lower := true, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
		// 'k' and 's' fold with non-ASCII runes (U+212A, U+017F), whose
		// orbits' smallest member is the ASCII upper case.
		if 'a' <= c && c <= 'z' {
			lower = true
		}
	}
	if ascii && !lower {
		return s
	}
	if ascii {
		return strings.ToUpper(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// quoteName quotes a member name for an error message, bounded.
func quoteName(name string) string {
	const max = 64
	if len(name) > max {
		name = name[:max] + "…"
	}
	return fmt.Sprintf("%q", name)
}

// syntaxReason returns the tokenizer's description of a syntax error
// without the byte offset's context (which could quote the body).
func syntaxReason(err error) string {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) && se.Err != nil {
		return fmt.Sprintf("%v at byte %d", se.Err, se.ByteOffset)
	}
	return "malformed input"
}
