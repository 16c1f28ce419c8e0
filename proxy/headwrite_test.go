package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// netHTTPRequest is what http.Request.Write writes for req with body, and
// its error.
func netHTTPRequest(req *http.Request, body []byte) ([]byte, error) {
	out := *req
	out.Body, out.ContentLength = http.NoBody, 0
	if len(body) > 0 {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	var buf bytes.Buffer
	w := bufio.NewWriterSize(&buf, upstreamBufferSize)
	err := out.Write(w)
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return buf.Bytes(), err
}

// compareRequest fails t when writeRequest and http.Request.Write differ
// on req, and returns whether the fast path wrote it.
func compareRequest(t *testing.T, req *http.Request, body []byte) bool {
	t.Helper()
	want, wantErr := netHTTPRequest(req, body)
	var got bytes.Buffer
	w := bufio.NewWriterSize(&got, upstreamBufferSize)
	fast, err := writeRequestFast(w, req, body)
	if !fast {
		if w.Buffered() > 0 {
			t.Fatalf("writeRequestFast wrote bytes and then declined the request")
		}
		err = writeRequest(w, req, body)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v; net/http's %v", err, wantErr)
	}
	if wantErr == nil && !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("wrote (fast path %v)\n%q\nwant (net/http)\n%q", fast, got.Bytes(), want)
	}
	return fast
}

func typicalRequest() *http.Request {
	return &http.Request{
		Method: http.MethodPost,
		URL:    &url.URL{Scheme: "https", Host: "api.example.com:443", Path: "/v1/messages", RawQuery: "limit=10&cursor=abc"},
		Host:   "api.example.com:443",
		Header: http.Header{
			"Content-Type":    {"application/json"},
			"Accept":          {"application/json"},
			"Authorization":   {"Bearer xoxp-0123456789-abcdef"},
			"User-Agent":      {"agent/1.0 (python-requests)"},
			"X-Request-Id":    {"4b9f0a0c-7d1e-4e34-9a53-6f0c1b1f2a77"},
			"Accept-Encoding": {"gzip, deflate"},
			"Traceparent":     {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		},
	}
}

// tooManyFields is a header with more fields than the fast path sorts on
// the stack.
func tooManyFields() http.Header {
	h := http.Header{}
	for i := range maxFastFields + 1 {
		h.Set("X-F"+strconv.Itoa(i), "v")
	}
	return h
}

func TestWriteRequestMatchesNetHTTP(t *testing.T) {
	body := []byte(`{"channel":"C1","text":"hello"}`)
	tests := []struct {
		name string
		edit func(r *http.Request)
		body []byte
		fast bool // the fast path must write it
	}{
		{name: "typical POST", body: body, fast: true},
		{name: "GET without body", edit: func(r *http.Request) { r.Method = http.MethodGet }, fast: true},
		{name: "DELETE without body", edit: func(r *http.Request) { r.Method = http.MethodDelete }, fast: true},
		{name: "PUT with empty body gets Content-Length 0", edit: func(r *http.Request) { r.Method = http.MethodPut }, fast: true},
		{name: "PATCH with empty body", edit: func(r *http.Request) { r.Method = http.MethodPatch }, fast: true},
		{name: "empty method is GET", edit: func(r *http.Request) { r.Method = "" }, fast: true},
		{name: "no User-Agent gets net/http's", edit: func(r *http.Request) { r.Header.Del("User-Agent") }, body: body, fast: true},
		{name: "empty User-Agent sends none", edit: func(r *http.Request) { r.Header["User-Agent"] = []string{""} }, fast: true},
		{name: "User-Agent without values sends none", edit: func(r *http.Request) { r.Header["User-Agent"] = nil }, fast: true},
		{name: "blank User-Agent", edit: func(r *http.Request) { r.Header["User-Agent"] = []string{" \t "} }, fast: true},
		{name: "two User-Agents send the first", edit: func(r *http.Request) { r.Header["User-Agent"] = []string{" a ", "b"} }, fast: true},
		{name: "values trimmed", edit: func(r *http.Request) { r.Header["X-Pad"] = []string{"\t padded \t", "", "  "} }, fast: true},
		{name: "several values", edit: func(r *http.Request) { r.Header["Accept"] = []string{"a/b", "c/d"} }, fast: true},
		{name: "field without values", edit: func(r *http.Request) { r.Header["X-Empty"] = nil }, fast: true},
		{name: "non-canonical names are written as they are", edit: func(r *http.Request) {
			r.Header["content-length"] = []string{"7"}
			r.Header["x-lower"] = []string{"v"}
		}, body: body, fast: true},
		{name: "invalid names are dropped", edit: func(r *http.Request) {
			r.Header["Bad Name"] = []string{"v"}
			r.Header[""] = []string{"v"}
			r.Header["Bad:Colon"] = []string{"v"}
		}, fast: true},
		{name: "fields net/http writes itself are left out", edit: func(r *http.Request) {
			r.Header["Host"] = []string{"evil.example"}
			r.Header["Content-Length"] = []string{"999"}
			r.Header["Transfer-Encoding"] = []string{"chunked"}
			r.Header["Trailer"] = []string{"X"}
		}, body: body, fast: true},
		{name: "escaped path and forced query", edit: func(r *http.Request) {
			r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.URL.ForceQuery = "/a b/c", "/a%20b/c", "", true
		}, fast: true},
		{name: "empty path", edit: func(r *http.Request) { r.URL.Path, r.URL.RawQuery = "", "" }, fast: true},
		{name: "IPv6 host", edit: func(r *http.Request) { r.Host = "[::1]:8443" }, fast: true},
		{name: "host from the URL", edit: func(r *http.Request) { r.Host = "" }, fast: true},
		{name: "body larger than the buffer", body: bytes.Repeat([]byte("x"), 3*upstreamBufferSize), fast: true},
		{name: "value with a line feed", edit: func(r *http.Request) { r.Header.Set("X-Split", "a\nInjected: yes") }},
		{name: "value with a carriage return", edit: func(r *http.Request) { r.Header.Set("X-Split", "a\rb") }},
		{name: "User-Agent with a line break", edit: func(r *http.Request) { r.Header.Set("User-Agent", "a\r\nb") }},
		{name: "IPv6 zone", edit: func(r *http.Request) { r.Host = "[fe80::1%25eth0]:443" }},
		{name: "non-ASCII host", edit: func(r *http.Request) { r.Host = "bücher.example:443" }},
		{name: "invalid host", edit: func(r *http.Request) { r.Host = "a b:443" }},
		{name: "control byte in the query", edit: func(r *http.Request) { r.URL.RawQuery = "a=\x7f" }},
		{name: "control byte in the path is escaped", edit: func(r *http.Request) { r.URL.RawPath, r.URL.Path = "", "/a\x01b" }, fast: true},
		{name: "Connection: close", edit: func(r *http.Request) { r.Close = true }},
		{name: "chunked", edit: func(r *http.Request) { r.TransferEncoding = []string{"chunked"} }, body: body},
		{name: "trailers", edit: func(r *http.Request) { r.Trailer = http.Header{"X-T": nil} }, body: body},
		{name: "more fields than the stack holds", edit: func(r *http.Request) { r.Header = tooManyFields() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := typicalRequest()
			if tt.edit != nil {
				tt.edit(req)
			}
			if fast := compareRequest(t, req, tt.body); fast != tt.fast {
				t.Errorf("fast path wrote it: %v; want %v", fast, tt.fast)
			}
		})
	}
}

// fieldsFrom turns fuzz input into header fields: lines "name:value",
// separated by "|".
func fieldsFrom(s string) http.Header {
	h := http.Header{}
	for line := range strings.SplitSeq(s, "|") {
		k, v, _ := strings.Cut(line, ":")
		h[k] = append(h[k], v)
	}
	return h
}

func FuzzWriteRequest(f *testing.F) {
	f.Add("POST", "/v1/x", "a=b", "api.example.com:443", "Content-Type:application/json|User-Agent:ua", []byte("{}"), false)
	f.Add("GET", "", "", "[::1]:443", "X:\t v \t|X: w|x-low:1", []byte(nil), false)
	f.Add("PUT", "/a b", "", "h", "Bad Name:v|Host:x|Content-Length:3", []byte("abc"), true)
	f.Add("", "/", "q", "h:1", "X:a\nb", []byte("x"), false)
	f.Fuzz(func(t *testing.T, method, path, query, host, fields string, body []byte, closeConn bool) {
		req := &http.Request{
			Method: method,
			URL:    &url.URL{Scheme: "https", Host: host, Path: path, RawQuery: query},
			Host:   host,
			Header: fieldsFrom(fields),
			Close:  closeConn,
		}
		compareRequest(t, req, body)
	})
}

// trackedBody is a response body that records whether it was closed.
type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

func typicalResponse(body string) *http.Response {
	return &http.Response{
		Status: "200 OK", StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{
			"Content-Type":         {"application/json; charset=utf-8"},
			"Date":                 {"Thu, 03 Dec 2026 17:00:00 GMT"},
			"Cache-Control":        {"no-store"},
			"X-Ratelimit-Limit":    {"100"},
			"Onbehalf-Decision-Id": {"01JEXAMPLE0000000000000000"},
		},
		ContentLength: int64(len(body)),
		Body:          &trackedBody{Reader: strings.NewReader(body)},
		Request:       &http.Request{Method: http.MethodPost},
	}
}

// compareResponse fails t when writeResponseFast (falling back to
// resp.Write) and resp.Write differ on the responses build returns, and
// returns whether the fast path wrote it.
func compareResponse(t *testing.T, build func() *http.Response) bool {
	t.Helper()
	var want bytes.Buffer
	wantResp := build()
	ww := bufio.NewWriter(&want)
	wantErr := wantResp.Write(ww)
	ww.Flush()

	var got bytes.Buffer
	gotResp := build()
	gw := bufio.NewWriter(&got)
	fast, err := writeResponseFast(gw, gotResp)
	if !fast {
		if gw.Buffered() > 0 {
			t.Fatalf("writeResponseFast wrote bytes and then declined the response")
		}
		err = gotResp.Write(gw)
	}
	gw.Flush()
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v; net/http's %v", err, wantErr)
	}
	if err != nil && err.Error() != wantErr.Error() {
		t.Errorf("error %q; net/http's %q", err, wantErr)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("wrote (fast path %v)\n%q\nwant (net/http)\n%q", fast, got.Bytes(), want.Bytes())
	}
	wb, wok := wantResp.Body.(*trackedBody)
	gb, gok := gotResp.Body.(*trackedBody)
	if wok && gok && wb.closed != gb.closed {
		t.Errorf("body closed: %v; net/http's %v", gb.closed, wb.closed)
	}
	return fast
}

func TestWriteResponseMatchesNetHTTP(t *testing.T) {
	const body = `{"ok":true,"items":[1,2,3]}`
	tests := []struct {
		name string
		edit func(r *http.Response)
		fast bool
	}{
		{name: "typical", fast: true},
		{name: "status without text", edit: func(r *http.Response) { r.Status = "" }, fast: true},
		{name: "unknown code without text", edit: func(r *http.Response) { r.Status, r.StatusCode = "", 299 }, fast: true},
		{name: "own reason phrase", edit: func(r *http.Response) { r.Status, r.StatusCode = "201 Made It", 201 }, fast: true},
		{name: "status not starting with the code", edit: func(r *http.Response) { r.Status = "Fine" }, fast: true},
		{name: "no request", edit: func(r *http.Response) { r.Request = nil }, fast: true},
		{name: "values trimmed, invalid names dropped, excluded names left out", edit: func(r *http.Response) {
			r.Header["X-Pad"] = []string{"  a  ", ""}
			r.Header["Bad Name"] = []string{"v"}
			r.Header["Content-Length"] = []string{"1"}
			r.Header["Transfer-Encoding"] = []string{"chunked"}
			r.Header["content-type"] = []string{"text/plain"}
		}, fast: true},
		{name: "body shorter than its length", edit: func(r *http.Response) { r.ContentLength += 5 }, fast: true},
		{name: "body longer than its length", edit: func(r *http.Response) { r.ContentLength -= 5 }, fast: true},
		{name: "body larger than the buffer", edit: func(r *http.Response) {
			big := strings.Repeat("y", 10<<10)
			r.Body, r.ContentLength = &trackedBody{Reader: strings.NewReader(big)}, int64(len(big))
		}, fast: true},
		{name: "value with a line break", edit: func(r *http.Response) { r.Header.Set("X-Echo", "a\r\nSet-Cookie: x") }},
		{name: "unknown length", edit: func(r *http.Response) { r.ContentLength = -1 }},
		{name: "chunked", edit: func(r *http.Response) { r.ContentLength, r.TransferEncoding = -1, []string{"chunked"} }},
		{name: "empty", edit: func(r *http.Response) { r.Body, r.ContentLength = &trackedBody{Reader: strings.NewReader("")}, 0 }},
		{name: "to HEAD", edit: func(r *http.Response) { r.Request.Method = http.MethodHead }},
		{name: "Connection: close", edit: func(r *http.Response) { r.Close = true }},
		{name: "HTTP/1.0", edit: func(r *http.Response) { r.ProtoMinor = 0 }},
		{name: "four-digit code", edit: func(r *http.Response) { r.Status, r.StatusCode = "", 1000 }},
		{name: "more fields than the stack holds", edit: func(r *http.Response) { r.Header = tooManyFields() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			build := func() *http.Response {
				r := typicalResponse(body)
				if tt.edit != nil {
					tt.edit(r)
				}
				return r
			}
			if fast := compareResponse(t, build); fast != tt.fast {
				t.Errorf("fast path wrote it: %v; want %v", fast, tt.fast)
			}
		})
	}
}

func FuzzWriteResponse(f *testing.F) {
	f.Add(200, "200 OK", "Content-Type:application/json|X: a ", "{}", int64(2), "POST", false)
	f.Add(404, "", "x-low:1|Bad Name:v", "not found", int64(3), "GET", false)
	f.Add(299, "299 Whatever", "X:a\nb", "abc", int64(9), "HEAD", true)
	f.Fuzz(func(t *testing.T, code int, status, fields, body string, length int64, method string, closeConn bool) {
		build := func() *http.Response {
			return &http.Response{
				Status: status, StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header:        fieldsFrom(fields),
				ContentLength: length,
				Close:         closeConn,
				Body:          &trackedBody{Reader: strings.NewReader(body)},
				Request:       &http.Request{Method: method},
			}
		}
		compareResponse(t, build)
	})
}

// BenchmarkWriteRequestHead compares net/http's request writer with
// writeRequest on the request the sidecar sends most: a POST with a small
// JSON body and the fields an agent's HTTP library sets.
func BenchmarkWriteRequestHead(b *testing.B) {
	req := typicalRequest()
	body := []byte(`{"channel":"C1","text":"hello"}`)
	w := bufio.NewWriterSize(io.Discard, upstreamBufferSize)
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out := *req
			out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
			if err := out.Write(w); err != nil {
				b.Fatal(err)
			}
			w.Flush()
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := writeRequest(w, req, body); err != nil {
				b.Fatal(err)
			}
			w.Flush()
		}
	})
}

// BenchmarkWriteResponseHead compares net/http's response writer with
// writeResponseFast on a small JSON response.
func BenchmarkWriteResponseHead(b *testing.B) {
	const body = `{"ok":true,"items":[1,2,3]}`
	resp := typicalResponse(body)
	tb := resp.Body.(*trackedBody)
	sr := strings.NewReader(body)
	w := bufio.NewWriterSize(io.Discard, upstreamBufferSize)
	for _, fast := range []bool{false, true} {
		name := "net-http"
		if fast {
			name = "fast"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sr.Reset(body)
				tb.Reader = sr
				var err error
				if fast {
					_, err = writeResponseFast(w, resp)
				} else {
					err = resp.Write(w)
				}
				if err != nil {
					b.Fatal(err)
				}
				w.Flush()
			}
		})
	}
}
