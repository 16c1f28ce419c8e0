package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy/mcp"
)

// Kinds of MCP request that carry no JSON-RPC message (policy input
// input.mcp.kind).
const (
	mcpKindStream     = "stream"      // GET: the server's message stream
	mcpKindEndSession = "end_session" // DELETE: the client ends its session
)

// mcpExchange is what the pipeline knows about a request on an MCP route.
type mcpExchange struct {
	// kind is mcpKindStream or mcpKindEndSession for a GET or DELETE;
	// empty for a POST, whose messages are in call.
	kind string
	call *mcp.Call
	// body is the POST body, read whole before deciding and forwarded
	// from memory.
	body            []byte
	session         string
	protocolVersion string
}

// readMCP reads and parses what a request on an MCP route carries, before
// policy: the JSON-RPC messages of a POST (bounded by mcp.MaxBodyBytes,
// refused whole when malformed: nothing is forwarded), nothing for GET and
// DELETE. It fills the audit record's MCP fields.
func (s *Server) readMCP(req *http.Request, ex *exchange) *Error {
	m := ex.mcp
	m.session = req.Header.Get(mcp.HeaderSessionID)
	m.protocolVersion = req.Header.Get(mcp.HeaderProtocolVersion)
	switch req.Method {
	case http.MethodPost:
	case http.MethodGet:
		m.kind = mcpKindStream
		return nil
	case http.MethodDelete:
		m.kind = mcpKindEndSession
		return nil
	default:
		return newError(CodeBadRequest, "an MCP endpoint takes POST (messages), GET (the server's stream) and DELETE (end of session), not "+req.Method, nil)
	}

	body, e := readMCPBody(req)
	if e != nil {
		return e
	}
	// The body is forwarded from memory, with its length.
	req.ContentLength, req.TransferEncoding = int64(len(body)), nil
	m.body = body

	call, err := mcp.Parse(body)
	if err == nil {
		err = mcp.CheckHeaders(req.Header, call)
	}
	var pe *mcp.ProtocolError
	if errors.As(err, &pe) {
		e := newError(CodeBadRequest, "the MCP message was refused: "+pe.Message, err)
		e.RPCCode = pe.Code
		if pe.Code == mcp.CodeHeaderMismatch {
			m.call = call // the refusal answers the request's id
		}
		return e
	}
	m.call = call
	auditMCP(&ex.rec, call)
	return nil
}

// readMCPBody reads a POST body whole, up to mcp.MaxBodyBytes.
func readMCPBody(req *http.Request) ([]byte, *Error) {
	tooLarge := func() *Error {
		return newError(CodeBodyTooLarge, fmt.Sprintf("an MCP request body may be at most %d bytes", mcp.MaxBodyBytes), nil)
	}
	switch n := req.ContentLength; {
	case n > mcp.MaxBodyBytes:
		return nil, tooLarge()
	case n == 0:
		return nil, newError(CodeBadRequest, "the MCP request has no body; POST one JSON-RPC message", nil)
	case n > 0:
		body := make([]byte, n)
		if _, err := io.ReadFull(req.Body, body); err != nil {
			return nil, newError(CodeBadRequest, "the request body ended before its Content-Length", err)
		}
		return body, nil
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, mcp.MaxBodyBytes+1))
	if err != nil {
		return nil, newError(CodeBadRequest, "the request body could not be read", err)
	}
	if len(body) > mcp.MaxBodyBytes {
		return nil, tooLarge()
	}
	return body, nil
}

// auditMCP writes the method, tool and resource of call into rec; a
// batch's values are joined in order.
func auditMCP(rec *audit.Record, call *mcp.Call) {
	if len(call.Messages) == 1 {
		m := &call.Messages[0]
		rec.MCPMethod, rec.MCPTool, rec.MCPResource = m.Method, m.Tool, m.Resource
		return
	}
	join := func(field func(*mcp.Message) string) string {
		var parts []string
		for i := range call.Messages {
			if v := field(&call.Messages[i]); v != "" {
				parts = append(parts, v)
			}
		}
		return strings.Join(parts, ",")
	}
	rec.MCPMethod = join(func(m *mcp.Message) string { return m.Method })
	rec.MCPTool = join(func(m *mcp.Message) string { return m.Tool })
	rec.MCPResource = join(func(m *mcp.Message) string { return m.Resource })
}

// decideMCP asks policy about each message of an MCP request, with
// input.mcp describing it; a batch proceeds only when every message is
// allowed, and the first denied message refuses the whole batch. A GET or
// DELETE is one decision.
func (s *Server) decideMCP(ctx context.Context, ex *exchange, in *policy.Input, reportOnly bool) *Error {
	m := ex.mcp
	base := policy.MCP{Session: m.session, ProtocolVersion: m.protocolVersion, Batch: []policy.MCPMessage{}}
	if m.call == nil {
		in.MCP = &base
		in.MCP.MCPMessage = policy.MCPMessage{Kind: m.kind, ArgumentNames: []string{}}
		return s.decide(ctx, ex, in, reportOnly)
	}
	msgs := m.call.Messages
	if m.call.Batch {
		for i := range msgs {
			base.Batch = append(base.Batch, policyMessage(&msgs[i]))
		}
	}
	var wouldDeny, wouldDenyReason string
	for i := range msgs {
		mi := base
		mi.MCPMessage = policyMessage(&msgs[i])
		in.MCP = &mi
		if e := s.decide(ctx, ex, in, reportOnly); e != nil {
			if m.call.Batch {
				e.Message += fmt.Sprintf(" (message %d of the batch, %s; the whole batch was refused)", i+1, describeMessage(&msgs[i]))
			}
			return e
		}
		if ex.rec.Decision == decisionWouldDeny && wouldDeny == "" {
			wouldDeny, wouldDenyReason = decisionWouldDeny, ex.rec.Reason
		}
	}
	// A message policy would have refused marks the whole request.
	if wouldDeny != "" {
		ex.rec.Decision, ex.rec.Reason = wouldDeny, wouldDenyReason
	}
	return nil
}

// policyMessage is one message as policy input shows it.
func policyMessage(m *mcp.Message) policy.MCPMessage {
	names := m.ArgumentNames
	if names == nil {
		names = []string{}
	}
	return policy.MCPMessage{
		Kind: m.Kind.String(), Method: m.Method, Tool: m.Tool, Resource: m.Resource, Prompt: m.Prompt,
		ArgumentNames: names, ID: m.ID,
	}
}

// describeMessage names a message in a refusal: its method and the tool,
// prompt or resource.
func describeMessage(m *mcp.Message) string {
	switch {
	case m.Kind == mcp.KindResponse:
		return "a response"
	case m.Name() != "":
		return strconv.Quote(m.Method) + " " + strconv.Quote(m.Name())
	}
	return strconv.Quote(m.Method)
}

// mcpRefusal is the refusal of a request on an MCP route, in the shape MCP
// clients hand to the model rather than treat as a broken transport: a
// JSON-RPC error response with HTTP 200 answering each request the POST
// held, carrying the sidecar's error body (code, message, decision_id,
// connect_url) as its data. What holds no request to answer (a refused
// notification or response, a stream, a body that could not be parsed,
// a header mismatch as the 2026-07-28 revision requires) gets the code's
// HTTP status with a JSON-RPC error response as its body.
func (s *Server) mcpRefusal(req *http.Request, ex *exchange, e *Error) *http.Response {
	id := ex.rec.DecisionID
	data := bytes.TrimSpace(e.body(id))
	code := e.RPCCode
	if code == 0 {
		code = e.Code.JSONRPC()
	}
	status := http.StatusOK
	var body []byte
	if c := ex.mcp.call; c != nil {
		body = mcp.Refusal(c, code, e.Message, data)
	}
	if body == nil || code == mcp.CodeHeaderMismatch {
		status = e.Code.Status()
	}
	if body == nil {
		body = mcp.ErrorWithoutID(code, e.Message, data)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set(headerError, string(e.Code))
	h.Set(headerDecisionID, id)
	e.setRetryAfter(h)
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
