package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestHeadReaderFraming(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
		body    string
	}{
		{name: "no body", in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "content-length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", body: "hello"},
		{name: "chunked", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", body: "hello"},
		{name: "chunked with trailer", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n", body: "hi"},
		{name: "leading empty line", in: "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{name: "CL and TE", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", wantErr: errFraming},
		{name: "TE then CL", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", wantErr: errFraming},
		{name: "two CL equal", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", wantErr: errFraming},
		{name: "two CL differ", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", wantErr: errFraming},
		{name: "negative CL", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", wantErr: errFraming},
		{name: "plus CL", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", wantErr: errFraming},
		{name: "TE gzip", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", wantErr: errFraming},
		{name: "TE twice", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: errFraming},
		{name: "TE case", in: "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n"},
		{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n", wantErr: errMalformed},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", wantErr: errMalformed},
		{name: "control char", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n", wantErr: errMalformed},
		{name: "bare CR", in: "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", wantErr: errMalformed},
		{name: "http2 preface", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", wantErr: errHTTP2Preface},
		{name: "http/2 version", in: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", wantErr: errMalformed},
		{name: "garbage", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\r\n", wantErr: errMalformed},
		{name: "truncated head", in: "GET / HTTP/1.1\r\nHost: a\r\n", wantErr: errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hr := newHeadReader(strings.NewReader(tt.in), 8192, 100)
			req, err := hr.next()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got error %v; want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("next: %v", err)
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if string(b) != tt.body {
				t.Errorf("body %q; want %q", b, tt.body)
			}
			if _, err := hr.next(); !errors.Is(err, io.EOF) {
				t.Errorf("after the request: got %v; want io.EOF (nothing left over)", err)
			}
		})
	}
}

func TestHeadReaderLimits(t *testing.T) {
	big := "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 9000) + "\r\n\r\n"
	if _, err := newHeadReader(strings.NewReader(big), 8192, 100).next(); !errors.Is(err, errHeadTooLarge) {
		t.Errorf("oversized head: got %v; want errHeadTooLarge", err)
	}
	var many strings.Builder
	many.WriteString("GET / HTTP/1.1\r\nHost: a\r\n")
	for range 101 {
		many.WriteString("X-A: 1\r\n")
	}
	many.WriteString("\r\n")
	if _, err := newHeadReader(strings.NewReader(many.String()), 1<<20, 100).next(); !errors.Is(err, errTooManyHeaders) {
		t.Errorf("too many headers: got %v; want errTooManyHeaders", err)
	}
}

func TestHeadReaderPipelined(t *testing.T) {
	in := "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
	hr := newHeadReader(strings.NewReader(in), 8192, 100)
	r1, err := hr.next()
	if err != nil {
		t.Fatal(err)
	}
	if !drain(r1.Body, 1024) {
		t.Fatal("drain: body not consumed")
	}
	r2, err := hr.next()
	if err != nil {
		t.Fatal(err)
	}
	if r1.URL.Path != "/a" || r2.URL.Path != "/b" || r2.Method != http.MethodGet {
		t.Errorf("got %s %s then %s %s; want POST /a then GET /b", r1.Method, r1.URL.Path, r2.Method, r2.URL.Path)
	}
}

func TestLengthBodyTruncated(t *testing.T) {
	hr := newHeadReader(strings.NewReader("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"), 8192, 100)
	req, err := hr.next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(req.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated body: got %v; want io.ErrUnexpectedEOF", err)
	}
}

func FuzzCheckHead(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		hr := newHeadReader(strings.NewReader(string(data)), 4096, 50)
		for range 4 {
			req, err := hr.next()
			if err != nil {
				return
			}
			// Whatever was accepted has unambiguous framing.
			if req.ContentLength >= 0 && len(req.TransferEncoding) > 0 {
				t.Fatalf("accepted both a length and a transfer encoding")
			}
			if len(req.Header.Values("Content-Length")) > 1 {
				t.Fatalf("accepted %d Content-Length fields", len(req.Header.Values("Content-Length")))
			}
			if !drain(req.Body, 1<<20) {
				return
			}
		}
	})
}

// checkHeadSplit is checkHead's line walk as first written, with
// bytes.Split: the in-place walk must agree with it.
func checkHeadSplit(head []byte) (blankAt int, ok bool) {
	lines := bytes.Split(head, []byte("\n"))
	for i, raw := range lines[1:] {
		if len(bytes.TrimSuffix(raw, []byte("\r"))) == 0 {
			return i, i == len(lines)-3
		}
	}
	return -1, true
}

func TestCheckHeadBlankLine(t *testing.T) {
	heads := []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n",
		"GET / HTTP/1.1\r\nHost: a",
		"GET / HTTP/1.1\r\n\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nx",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n",
		"",
		"\n",
		"\n\n",
	}
	for _, h := range heads {
		_, splitOK := checkHeadSplit([]byte(h))
		_, err := checkHead([]byte(h), 100)
		if gotOK := !errors.Is(err, errMalformed); gotOK != splitOK {
			t.Errorf("checkHead(%q) = %v; want blank-line check ok=%v", h, err, splitOK)
		}
	}
}

func TestCheckHeadAllocs(t *testing.T) {
	head := []byte("POST /api/chat.postMessage HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n")
	allocs := testing.AllocsPerRun(50, func() {
		if f, err := checkHead(head, 100); err != nil || f.length != 5 {
			t.Fatalf("checkHead = %+v, %v; want length 5", f, err)
		}
	})
	if allocs != 0 {
		t.Errorf("checkHead allocates %v times; want 0", allocs)
	}
}
