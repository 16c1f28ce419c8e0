package proxy

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/andybalholm/brotli"

	"github.com/onbehalf-dev/onbehalf/internal/scrub"
)

// Response scrubbing (docs/security.md, "What comes back is scrubbed"):
// every response to a routed request passes through the secrets of the
// grant whose token was injected — the token itself, the refresh token and
// the provider's client secret — and each occurrence in the status line,
// a header, the body or a trailer is overwritten before the agent sees it.
//
// A compressed body is decoded and relayed to the agent without a content
// coding (gzip, deflate and br are decoded). The sidecar still accepts
// compression from the API, where the bytes cross a network; between
// sidecar and agent, inside one pod, compressing again would cost CPU for
// nothing, and a client that accepts gzip always accepts identity. The
// agent's Accept-Encoding is narrowed to those codings, so that an API
// never answers in one the sidecar cannot read; an answer in another
// coding anyway is refused (502 upstream_invalid), never relayed unread.

// decodableCodings are the content codings the sidecar decodes.
var decodableCodings = []string{"gzip", "x-gzip", "deflate", "br"}

// narrowAcceptEncoding removes from a routed request's Accept-Encoding
// every coding the sidecar cannot decode (zstd, compress, "*"); when none
// is left the header goes, and the API answers uncompressed. A request for
// a byte range asks for identity: a range of a compressed representation
// cannot be decoded on its own.
func narrowAcceptEncoding(h http.Header) {
	if h.Get("Range") != "" {
		h.Set("Accept-Encoding", "identity")
		return
	}
	values, ok := h["Accept-Encoding"]
	if !ok || allDecodable(values) {
		return // the common case: nothing to rewrite, nothing allocated
	}
	var kept []string
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			part = textproto.TrimString(part)
			coding, _, _ := strings.Cut(part, ";")
			coding = strings.ToLower(textproto.TrimString(coding))
			if coding == "identity" || isDecodable(coding) {
				kept = append(kept, part)
			}
		}
	}
	if len(kept) == 0 {
		delete(h, "Accept-Encoding")
		return
	}
	h["Accept-Encoding"] = []string{strings.Join(kept, ", ")}
}

// allDecodable reports whether every coding in an Accept-Encoding field is
// one the sidecar decodes or identity.
func allDecodable(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			coding, _, _ := strings.Cut(part, ";")
			coding = textproto.TrimString(coding)
			if !strings.EqualFold(coding, "identity") && !isDecodableFold(coding) {
				return false
			}
		}
	}
	return true
}

func isDecodableFold(coding string) bool {
	for _, c := range decodableCodings {
		if strings.EqualFold(coding, c) {
			return true
		}
	}
	return false
}

func isDecodable(coding string) bool {
	for _, c := range decodableCodings {
		if coding == c {
			return true
		}
	}
	return false
}

// errUndecodable refuses a response in a content coding the sidecar cannot
// read, so cannot scrub.
var errUndecodable = fmt.Errorf("%w: response in a content coding the sidecar cannot decode", errUpstreamInvalid)

// scrubResponse makes resp, the API's answer to a request that carried a
// token of set's grant, safe to relay: the status line and headers are
// scrubbed now (a header whose name holds a secret is dropped), the body
// and trailers as they are relayed, through body (which resp.Body becomes).
// *count is increased by every secret replaced, the body's once it is
// closed. A compressed body is decoded
// (see above); one in another coding is refused with errUndecodable before
// anything is relayed.
func scrubResponse(resp *http.Response, set *scrub.Set, count *int, body *scrubBody) error {
	coding := contentCoding(resp.Header)
	if coding != "" && !isDecodable(coding) {
		resp.Body.Close()
		return errUndecodable
	}
	var n int
	resp.Status, n = set.String(resp.Status)
	*count += n
	*count += scrubHeader(resp.Header, set)
	if coding != "" {
		decodedHeader(resp)
	}
	*body = scrubBody{orig: resp.Body, set: set, count: count, r: body.r}
	var src io.Reader = resp.Body
	if coding != "" {
		// Decoders read the stream's header on creation: create them on
		// the first read, so a response whose body comes later (a long
		// poll) is not held up before its head.
		src = &lazyDecoder{coding: coding, r: resp.Body}
		// Trailers of a decoded body are not relayed: the decoder may
		// stop before the upstream body reaches them.
		resp.Trailer = nil
	} else {
		body.trailer = resp.Trailer
	}
	body.r.Reset(set, src)
	resp.Body = body
	return nil
}

// contentCoding returns the response's content coding in lower case, ""
// for none or identity, and "unsupported" for a list of several.
func contentCoding(h http.Header) string {
	values := h.Values("Content-Encoding")
	var codings []string
	for _, v := range values {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(textproto.TrimString(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	switch len(codings) {
	case 0:
		return ""
	case 1:
		return codings[0]
	}
	return "unsupported"
}

// decodedHeader fixes the headers of a response whose body will be
// relayed decoded: no Content-Encoding and no length (it is only known at
// the end), digests of the encoded bytes dropped, a strong ETag made weak
// (it named the encoded representation), as HTTP servers do when they
// compress on the fly.
func decodedHeader(resp *http.Response) {
	for _, k := range []string{"Content-Encoding", "Content-Length", "Content-Md5", "Digest", "Content-Digest", "Repr-Digest"} {
		delete(resp.Header, k)
	}
	resp.ContentLength = -1
	if et := resp.Header.Get("Etag"); et != "" && !strings.HasPrefix(et, "W/") {
		resp.Header.Set("Etag", "W/"+et)
	}
}

// scrubHeader scrubs h in place and returns how many secrets it replaced.
func scrubHeader(h http.Header, set *scrub.Set) int {
	count := 0
	for name, values := range h {
		if _, n := set.String(name); n > 0 {
			// A header name cannot hold the marker: the header goes.
			delete(h, name)
			count += n
			continue
		}
		for i, v := range values {
			var n int
			values[i], n = set.String(v)
			count += n
		}
	}
	return count
}

// scrubBody is a response body relayed through a scrub.Reader. It lives in
// the request's exchange, so that scrubbing allocates nothing of its own
// per response.
type scrubBody struct {
	r       scrub.Reader
	orig    io.ReadCloser
	set     *scrub.Set
	trailer http.Header // filled in by orig at its end; nil when not relayed
	count   *int
	closed  bool
}

func (b *scrubBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.trailer != nil {
		// The upstream body has filled in the trailers; they are written
		// after the body, so this is in time.
		*b.count += scrubHeader(b.trailer, b.set)
		b.trailer = nil
	}
	return n, err
}

func (b *scrubBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	*b.count += b.r.Count()
	return b.orig.Close()
}

// lazyDecoder decodes a body in one content coding, starting at its first
// read.
type lazyDecoder struct {
	coding string
	r      io.Reader
	dec    io.Reader
	err    error
}

func (d *lazyDecoder) Read(p []byte) (int, error) {
	if d.dec == nil && d.err == nil {
		// An empty body (a HEAD or 304 answer that names its coding)
		// decodes to nothing rather than to a decoder's error.
		br := bufio.NewReader(d.r)
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			d.err = io.EOF
		} else {
			d.dec, d.err = newDecoder(d.coding, br)
		}
	}
	if d.err != nil {
		return 0, d.err
	}
	return d.dec.Read(p)
}

// newDecoder returns a decoder of r in coding. "deflate" is meant to be
// zlib-wrapped (RFC 9110) but some servers send raw deflate: the first two
// bytes tell which.
func newDecoder(coding string, r io.Reader) (io.Reader, error) {
	switch coding {
	case "gzip", "x-gzip":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", errUpstreamInvalid, err)
		}
		return z, nil
	case "deflate":
		br, ok := r.(*bufio.Reader)
		if !ok {
			br = bufio.NewReader(r)
		}
		head, err := br.Peek(2)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if len(head) == 2 && head[0]&0x0f == 8 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 {
			z, err := zlib.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("%w: deflate: %w", errUpstreamInvalid, err)
			}
			return z, nil
		}
		return flate.NewReader(br), nil
	case "br":
		return brotli.NewReader(r), nil
	}
	return nil, errUndecodable
}
