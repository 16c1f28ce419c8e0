package mcp

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Headers of the Streamable HTTP transport.
const (
	// HeaderSessionID carries the session a server assigned at initialize
	// (revisions 2025-03-26 to 2025-11-25).
	HeaderSessionID = "Mcp-Session-Id"
	// HeaderProtocolVersion names the protocol revision of a request.
	HeaderProtocolVersion = "Mcp-Protocol-Version"
	// HeaderMethod and HeaderName mirror the body's method and
	// params.name or params.uri (revision 2026-07-28), for intermediaries
	// that route without reading bodies.
	HeaderMethod = "Mcp-Method"
	HeaderName   = "Mcp-Name"
)

// CheckHeaders refuses a request whose Mcp-Method or Mcp-Name header
// disagrees with its body (revision 2026-07-28, "Server Validation"): the
// sidecar decides on the body, and a server or gateway that acted on the
// headers must not act on something else. Absent headers are not required:
// clients of earlier revisions send none. A batch (which that revision no
// longer has) may not carry them at all.
func CheckHeaders(h http.Header, c *Call) error {
	methods, names := h.Values(HeaderMethod), h.Values(HeaderName)
	if len(methods) == 0 && len(names) == 0 {
		return nil
	}
	if c.Batch || len(c.Messages) != 1 {
		return protocolErrorf(CodeHeaderMismatch, "Header mismatch: a batch cannot carry %s or %s headers", HeaderMethod, HeaderName)
	}
	m := &c.Messages[0]
	if len(methods) > 1 || len(names) > 1 {
		return protocolErrorf(CodeHeaderMismatch, "Header mismatch: %s and %s may appear once each", HeaderMethod, HeaderName)
	}
	if len(methods) == 1 && methods[0] != m.Method {
		return protocolErrorf(CodeHeaderMismatch, "Header mismatch: the %s header does not match the body's method", HeaderMethod)
	}
	if len(names) == 1 {
		v, ok := decodeHeaderValue(names[0])
		if !ok {
			return protocolErrorf(CodeHeaderMismatch, "Header mismatch: the %s header is not a valid value", HeaderName)
		}
		if v != m.Name() {
			return protocolErrorf(CodeHeaderMismatch, "Header mismatch: the %s header does not match the body's tool, prompt or resource", HeaderName)
		}
	}
	return nil
}

// decodeHeaderValue decodes a header value in the transport's Base64
// sentinel form (=?base64?…?=) or returns a plain one as it is.
func decodeHeaderValue(v string) (string, bool) {
	inner, ok := strings.CutPrefix(v, "=?base64?")
	if !ok {
		return v, true
	}
	inner, ok = strings.CutSuffix(inner, "?=")
	if !ok {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(inner)
	if err != nil || !utf8.Valid(b) {
		return "", false
	}
	return string(b), true
}

// AppendError appends a JSON-RPC error response to b: id is the request's
// id as JSON text (nil writes null), data is a JSON value or nil.
func AppendError(b []byte, id []byte, code int, message string, data []byte) []byte {
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	if id == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, id...)
	}
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	if data != nil {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	return append(b, "}}"...)
}

// Refusal returns the body that refuses c: the error response to its
// request, or for a batch an array with one error response per request
// (notifications and responses get none, as JSON-RPC says). It returns nil
// when c holds no request; the refusal then travels as an HTTP error status,
// with ErrorWithoutID as its body.
func Refusal(c *Call, code int, message string, data []byte) []byte {
	if !c.HasRequests() {
		return nil
	}
	var b []byte
	if c.Batch {
		b = append(b, '[')
	}
	n := 0
	for i := range c.Messages {
		m := &c.Messages[i]
		if m.Kind != KindRequest {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = AppendError(b, m.ID, code, message, data)
		n++
	}
	if c.Batch {
		b = append(b, ']')
	}
	return append(b, '\n')
}

// ErrorWithoutID returns a JSON-RPC error response with a null id: the body
// of a refusal that has no request to answer (a parse error, a refused
// notification, a refused stream).
func ErrorWithoutID(code int, message string, data []byte) []byte {
	return append(AppendError(nil, nil, code, message, data), '\n')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
