package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// This file writes the two HTTP/1.1 messages of every intercepted request
// — the request to the API and the response to the agent — without
// net/http's general writers, for the shapes the tunnel sends almost
// always: a body whose length is known, no Transfer-Encoding, no trailers.
// The bytes are net/http's, field for field and in its order (header
// fields sorted by name); TestWriteRequestMatchesNetHTTP and
// TestWriteResponseMatchesNetHTTP, and their fuzz targets, compare the two
// writers on the same messages. Anything else — a field value with a line
// break (net/http turns it into a space), an unusual Host, a chunked or
// HEAD response — goes to [http.Request.Write] or [http.Response.Write].
//
// Why: those writers format through fmt, allocate a transfer writer and a
// sorter per message and probe bodies they cannot size; on the sidecar's
// hot path the two heads cost about 6 % of its CPU
// (BenchmarkWriteRequestHead, BenchmarkWriteResponseHead).

// maxFastFields bounds the header fields sorted on the stack; a message
// with more is written by net/http.
const maxFastFields = 32

// writeRequest writes req and its body (nil for none) to w, leaving w
// unflushed, as req.Write does when req's body is body. req's own Body and
// ContentLength are not used.
func writeRequest(w *bufio.Writer, req *http.Request, body []byte) error {
	if ok, err := writeRequestFast(w, req, body); ok {
		return err
	}
	out := *req
	out.Body, out.ContentLength = http.NoBody, 0
	if len(body) > 0 {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	return out.Write(w)
}

// writeRequestFast writes req as net/http would, or reports false having
// written nothing when req is not a shape it writes.
func writeRequestFast(w *bufio.Writer, req *http.Request, body []byte) (bool, error) {
	if req.URL == nil || req.Method == http.MethodConnect || req.Close ||
		len(req.TransferEncoding) > 0 || req.Trailer != nil {
		return false, nil
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	// net/http rewrites a non-ASCII host (Punycode), blanks an invalid one
	// and removes an IPv6 zone ("%25…").
	if host == "" || !isASCII(host) || !httpguts.ValidHostHeader(host) || strings.IndexByte(host, '%') >= 0 {
		return false, nil
	}
	// The target as req.URL.RequestURI makes it, without joining the
	// parts into a new string.
	if req.URL.Opaque != "" {
		return false, nil
	}
	path, query, hasQuery := req.URL.EscapedPath(), req.URL.RawQuery, req.URL.ForceQuery || req.URL.RawQuery != ""
	if path == "" {
		path = "/"
	}
	if hasCTL(path) || hasCTL(query) { // net/http refuses it; let it say so
		return false, nil
	}
	// A User-Agent field, even an empty one, replaces net/http's own.
	userAgent := defaultUserAgent
	if vs, ok := req.Header["User-Agent"]; ok {
		userAgent = ""
		if len(vs) > 0 {
			userAgent = vs[0]
		}
	}
	if hasLineBreak(userAgent) {
		return false, nil
	}
	var stack [maxFastFields]string
	keys, ok := sortedFields(stack[:0], req.Header, excludedRequestField)
	if !ok {
		return false, nil
	}

	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(path)
	if hasQuery {
		w.WriteByte('?')
		w.WriteString(query)
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	if userAgent != "" {
		w.WriteString("User-Agent: ")
		w.WriteString(textproto.TrimString(userAgent))
		w.WriteString("\r\n")
	}
	// net/http's rule (transferWriter.shouldSendContentLength): a body's
	// length always, and 0 for the methods servers expect it on.
	if len(body) > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		writeContentLength(w, int64(len(body)))
	}
	writeFields(w, req.Header, keys)
	w.WriteString("\r\n")
	_, err := w.Write(body)
	return true, err
}

// defaultUserAgent is what net/http sends when a request has no
// User-Agent field.
const defaultUserAgent = "Go-http-client/1.1"

// writeResponseFast writes resp as resp.Write would, or reports false
// having written nothing when resp is not a shape it writes. Like
// resp.Write it closes resp.Body, and reports a body whose length is not
// resp.ContentLength as an error.
func writeResponseFast(w *bufio.Writer, resp *http.Response) (bool, error) {
	if resp.ContentLength <= 0 || resp.Body == nil || resp.Close || len(resp.TransferEncoding) > 0 ||
		resp.ProtoMajor != 1 || resp.ProtoMinor != 1 || resp.StatusCode < 100 || resp.StatusCode > 999 ||
		(resp.Request != nil && resp.Request.Method == http.MethodHead) {
		return false, nil
	}
	var stack [maxFastFields]string
	keys, ok := sortedFields(stack[:0], resp.Header, excludedResponseField)
	if !ok {
		return false, nil
	}
	w.WriteString("HTTP/1.1 ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(resp.StatusCode), 10))
	w.WriteByte(' ')
	w.WriteString(statusText(resp))
	w.WriteString("\r\n")
	writeContentLength(w, resp.ContentLength)
	writeFields(w, resp.Header, keys)
	w.WriteString("\r\n")

	// The body as net/http's transferWriter.writeBody copies it: up to the
	// declared length, then whatever follows to nowhere, counting both.
	n, err := io.Copy(w, io.LimitReader(resp.Body, resp.ContentLength))
	if err == nil {
		var extra int64
		extra, err = io.Copy(io.Discard, resp.Body)
		n += extra
	}
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != resp.ContentLength {
		err = &bodyLengthError{want: resp.ContentLength, got: n}
	}
	return true, err
}

// bodyLengthError is a response body shorter or longer than its
// Content-Length, as net/http reports it.
type bodyLengthError struct{ want, got int64 }

func (e *bodyLengthError) Error() string {
	return "http: ContentLength=" + strconv.FormatInt(e.want, 10) + " with Body length " + strconv.FormatInt(e.got, 10)
}

// statusText is the reason phrase resp.Write puts after the code.
func statusText(resp *http.Response) string {
	if resp.Status == "" {
		if text := http.StatusText(resp.StatusCode); text != "" {
			return text
		}
		return "status code " + strconv.Itoa(resp.StatusCode)
	}
	var buf [8]byte
	prefix := append(strconv.AppendInt(buf[:0], int64(resp.StatusCode), 10), ' ')
	if strings.HasPrefix(resp.Status, string(prefix)) {
		return resp.Status[len(prefix):]
	}
	return resp.Status
}

// excludedRequestField and excludedResponseField are the fields net/http
// writes from the message's own fields rather than from its header map
// (reqWriteExcludeHeader, respExcludeHeader); the names are matched as
// they are, as there.
func excludedRequestField(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

func excludedResponseField(k string) bool {
	switch k {
	case "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// sortedFields appends to keys the names of h's fields that are written —
// not excluded, and valid names (net/http drops the others) — sorted as
// net/http sorts them. It reports false when a value holds a line break,
// which net/http rewrites, or when there are more than maxFastFields.
func sortedFields(keys []string, h http.Header, excluded func(string) bool) ([]string, bool) {
	for k, vs := range h {
		if excluded(k) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			if hasLineBreak(v) {
				return nil, false
			}
		}
		if len(keys) == maxFastFields {
			return nil, false
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, true
}

// writeFields writes h's fields named in keys, each value on its own line
// with surrounding white space trimmed, as net/http's Header.Write does.
func writeFields(w *bufio.Writer, h http.Header, keys []string) {
	for _, k := range keys {
		for _, v := range h[k] {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(textproto.TrimString(v))
			w.WriteString("\r\n")
		}
	}
}

func writeContentLength(w *bufio.Writer, n int64) {
	w.WriteString("Content-Length: ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
	w.WriteString("\r\n")
}

// hasLineBreak reports whether s holds a CR or LF (two IndexByte scans
// are faster than ContainsAny, which builds a set on every call).
func hasLineBreak(s string) bool {
	return strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0
}

// hasCTL reports whether s holds an ASCII control byte or DEL, as
// net/http's stringContainsCTLByte.
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
