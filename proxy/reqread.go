package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
)

// Errors from reading a request inside an intercepted tunnel. They all end
// the connection after a 400/431 answer: after a framing error the byte
// stream can no longer be trusted to delimit requests.
var (
	errHeadTooLarge   = errors.New("request head too large")
	errTooManyHeaders = errors.New("too many header fields")
	errFraming        = errors.New("ambiguous message framing")
	errMalformed      = errors.New("malformed request")
	errHTTP2Preface   = errors.New("HTTP/2 is not supported inside the tunnel")
)

// http2Preface starts every HTTP/2 connection; a client that sends it after
// negotiating http/1.1 gets a clear refusal instead of a parse error.
const http2Preface = "PRI * HTTP/2.0"

// headReader reads request heads from one client connection. It exists
// because net/http quietly repairs the requests this proxy must refuse: it
// drops Content-Length when Transfer-Encoding is present, joins obsolete line
// folding, and offers no count limit on header fields. Reading the raw head
// first lets the proxy reject such requests before anything is forwarded.
type headReader struct {
	br       *bufio.Reader
	maxBytes int
	maxCount int
	head     []byte
	headR    bytes.Reader // reads head to the parser
}

// connBufferSize sizes the per-connection read buffer. Heads longer than
// it are still read (line by line, up to maxBytes); a small buffer keeps
// idle tunnels cheap (docs/security.md, invariant 12, and memory per
// connection).
const connBufferSize = 4 << 10

// parsers reuses the readers that parse a head once it has been read.
var parsers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

func newHeadReader(r io.Reader, maxBytes, maxCount int) *headReader {
	return &headReader{
		br:       bufio.NewReaderSize(r, connBufferSize),
		maxBytes: maxBytes,
		maxCount: maxCount,
	}
}

// next reads one request. The returned request's Body reads from the
// connection and must be consumed or the connection closed before next is
// called again. io.EOF means the client closed cleanly between requests.
func (hr *headReader) next() (*http.Request, error) {
	head, err := hr.readHead()
	if err != nil {
		return nil, err
	}
	framing, err := checkHead(head, hr.maxCount)
	if err != nil {
		return nil, err
	}
	parse := parsers.Get().(*bufio.Reader)
	hr.headR.Reset(head)
	parse.Reset(&hr.headR)
	req, err := http.ReadRequest(parse)
	parse.Reset(nil)
	parsers.Put(parse)
	hr.headR.Reset(nil)
	if err != nil {
		// net/http's errors quote the offending bytes, which may be an
		// assertion or a credential: only the kind of problem travels on.
		return nil, fmt.Errorf("%w: %s", errMalformed, parseProblem(err))
	}
	if req.ProtoMajor != 1 {
		return nil, fmt.Errorf("%w: only HTTP/1.x is served inside the tunnel", errMalformed)
	}
	switch {
	case framing.chunked:
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
		req.Body = &chunkedBody{r: httputil.NewChunkedReader(hr.br), br: hr.br, maxTrailer: hr.maxBytes}
	case framing.length > 0:
		req.ContentLength = framing.length
		req.Body = &lengthBody{r: hr.br, remaining: framing.length}
	default:
		req.ContentLength = 0
		req.Body = http.NoBody
	}
	return req, nil
}

// parseProblem names what net/http's request parser refused, in fixed
// words: its own error texts quote the request line or header line.
func parseProblem(err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "malformed HTTP version"):
		return "malformed HTTP version"
	case strings.HasPrefix(msg, "invalid method"):
		return "invalid method"
	case strings.HasPrefix(msg, "malformed HTTP request"):
		return "malformed request line"
	case strings.HasPrefix(msg, "malformed MIME header"), strings.Contains(msg, "header"):
		return "malformed header field"
	case strings.HasPrefix(msg, "parse "):
		return "invalid request target"
	}
	return "the request line or a header field could not be parsed"
}

// readHead reads up to and including the blank line that ends a request
// head, skipping empty lines before the request line (RFC 9112 2.2).
func (hr *headReader) readHead() ([]byte, error) {
	hr.head = hr.head[:0]
	for {
		line, err := hr.br.ReadSlice('\n')
		if len(hr.head)+len(line) > hr.maxBytes {
			return nil, errHeadTooLarge
		}
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			hr.head = append(hr.head, line...)
			continue
		case errors.Is(err, io.EOF) && len(hr.head) == 0 && len(line) == 0:
			return nil, io.EOF
		default:
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: connection closed inside the request head", errMalformed)
			}
			return nil, err
		}
		if len(hr.head) == 0 && (string(line) == "\r\n" || string(line) == "\n") {
			continue
		}
		if len(hr.head) == 0 && strings.HasPrefix(string(line), http2Preface) {
			return nil, errHTTP2Preface
		}
		hr.head = append(hr.head, line...)
		if string(line) == "\r\n" || string(line) == "\n" {
			return hr.head, nil
		}
	}
}

// framing is what a head says about its body.
type framing struct {
	chunked bool
	length  int64
}

// checkHead validates a raw head's header section: no obsolete folding, no
// whitespace before a colon, no control bytes, at most maxCount fields, and
// unambiguous framing — at most one Content-Length, a Transfer-Encoding of
// exactly "chunked", and never both.
func checkHead(head []byte, maxCount int) (framing, error) {
	var f framing
	var (
		count        int
		sawLength    bool
		sawEncoding  bool
		encodingVals []string
	)
	// The lines are walked in place (bytes.Split would allocate per
	// request); the one after the last newline is empty.
	lines := bytes.Count(head, []byte("\n")) + 1
	i := -1
	for raw := range bytes.SplitSeq(head, []byte("\n")) {
		if i++; i == 0 {
			continue // the request line
		}
		line := bytes.TrimSuffix(raw, []byte("\r"))
		if len(line) == 0 {
			if i != lines-2 { // the blank line must be the last one
				return f, fmt.Errorf("%w: blank line inside the head", errMalformed)
			}
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return f, fmt.Errorf("%w: obsolete line folding", errMalformed)
		}
		count++
		if count > maxCount {
			return f, errTooManyHeaders
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return f, fmt.Errorf("%w: header line without a name", errMalformed)
		}
		name := line[:colon]
		if bytes.ContainsAny(name, " \t") {
			return f, fmt.Errorf("%w: whitespace in a header name", errMalformed)
		}
		value := bytes.TrimSpace(line[colon+1:])
		for _, c := range value {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return f, fmt.Errorf("%w: control character in a header value", errMalformed)
			}
		}
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if sawLength {
				return f, fmt.Errorf("%w: more than one Content-Length", errFraming)
			}
			sawLength = true
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || len(value) == 0 || value[0] == '+' {
				return f, fmt.Errorf("%w: invalid Content-Length", errFraming)
			}
			f.length = n
		case asciiEqualFold(name, "Transfer-Encoding"):
			sawEncoding = true
			encodingVals = append(encodingVals, string(value))
		}
	}
	if sawEncoding {
		if sawLength {
			return f, fmt.Errorf("%w: both Content-Length and Transfer-Encoding", errFraming)
		}
		if len(encodingVals) != 1 || !strings.EqualFold(textproto.TrimString(encodingVals[0]), "chunked") {
			return f, fmt.Errorf("%w: Transfer-Encoding must be exactly \"chunked\"", errFraming)
		}
		f.chunked = true
	}
	return f, nil
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// lengthBody is a Content-Length body that reports a short body as an error
// instead of a silent EOF, so a truncated upload is never forwarded as
// complete. It never reads past its length: what follows on the connection
// is the next request.
type lengthBody struct {
	r         io.Reader
	remaining int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.r.Read(p)
	b.remaining -= int64(n)
	if errors.Is(err, io.EOF) && b.remaining > 0 {
		return n, io.ErrUnexpectedEOF
	}
	if b.remaining == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

// chunkedBody decodes a chunked body and then consumes its trailer section,
// which httputil's chunked reader leaves on the connection.
type chunkedBody struct {
	r          io.Reader
	br         *bufio.Reader
	maxTrailer int
	done       bool
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		if terr := b.readTrailer(); terr != nil {
			return n, terr
		}
		b.done = true
	}
	return n, err
}

func (b *chunkedBody) readTrailer() error {
	total := 0
	for {
		line, err := b.br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("%w: reading chunked trailer: %v", errMalformed, err)
		}
		total += len(line)
		if total > b.maxTrailer {
			return errHeadTooLarge
		}
		if string(line) == "\r\n" || string(line) == "\n" {
			return nil
		}
	}
}

func (b *chunkedBody) Close() error { return nil }

// drain reads what is left of a request body so the next request on the
// connection can be read, up to limit bytes. It reports whether the body was
// fully consumed; if not, the connection must be closed.
func drain(body io.Reader, limit int64) bool {
	n, err := io.Copy(io.Discard, io.LimitReader(body, limit+1))
	return err == nil && n <= limit
}
