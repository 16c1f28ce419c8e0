package injector

import (
	"errors"
	"net/url"
	"strings"
	"unicode/utf8"
)

// ErrAmbiguousPath is the sentinel for a request path that servers may
// read in more than one way; every refusal from CanonicalPath wraps it. The
// proxy answers 400 bad_request and forwards nothing.
var ErrAmbiguousPath = errors.New("ambiguous request path")

// pathError names why a path was refused. Its text is fixed (the path is
// never quoted), so it is safe in the agent's answer and in the audit
// reason.
type pathError struct{ reason string }

func (e *pathError) Error() string { return ErrAmbiguousPath.Error() + ": " + e.reason }
func (e *pathError) Unwrap() error { return ErrAmbiguousPath }

// The reasons CanonicalPath gives.
var (
	errNotAbsolute   = &pathError{"the path must start with \"/\""}
	errRawByte       = &pathError{"a space, control character or non-ASCII byte must be percent-encoded, and NUL, CR and LF are never allowed"}
	errBackslash     = &pathError{"a backslash is read as \"/\" by some servers"}
	errSemicolon     = &pathError{"\";\" starts path parameters, which Tomcat, Jetty and Spring strip before routing"}
	errFragment      = &pathError{"\"#\" is not allowed in a request path"}
	errBadEscape     = &pathError{"\"%\" must be followed by two hexadecimal digits"}
	errEncodedDelim  = &pathError{"an encoded \".\", \"\\\", \"%\" (double encoding) or \";\" is decoded by some servers before routing"}
	errEncodedSlash  = &pathError{"an encoded \"/\" (%2F) is decoded by some servers before routing; this route does not allow it"}
	errEncodedCtrl   = &pathError{"an encoded control character (%00-%1F, %7F) is not allowed"}
	errInvalidUTF8   = &pathError{"percent-encoded bytes must be valid UTF-8 (no overlong forms)"}
	errLookalike     = &pathError{"a Unicode look-alike of \".\", \"/\" or \"\\\" is mapped to it by some servers"}
	errEmptySegment  = &pathError{"an empty segment (\"//\") is merged away by some servers"}
	errDotSegment    = &pathError{"\".\" and \"..\" segments are resolved by servers, and differently"}
	errRoutePathForm = errors.New("must be written in canonical form")
)

// Path is a request path in canonical form.
type Path struct {
	// Escaped is the canonical escaped path: what routes match, what
	// policy sees (attributes.request.http.path, and parsed_path from its
	// decoding), what the audit record holds and what is forwarded.
	Escaped string
	// EncodedSlash reports that Escaped holds "%2F" inside a segment,
	// which only routes with allow_encoded_slashes accept.
	EncodedSlash bool
}

// CanonicalPath checks an escaped request path (the request target up to
// "?", as the client sent it) and returns its canonical form. It refuses,
// with an error wrapping ErrAmbiguousPath, every path that servers may
// interpret differently (docs/security.md, "One canonical path"):
//
//   - a path that does not start with "/", or holds "#";
//   - a raw byte outside printable ASCII (space, control, DEL, non-ASCII);
//   - a backslash, raw or encoded (%5C);
//   - ";" (path parameters), raw or encoded (%3B);
//   - "%" not followed by two hexadecimal digits;
//   - an encoded "." (%2E) or "%" (%25, so no double encoding);
//   - an encoded control character (%00-%1F, %7F);
//   - percent-encoded bytes that are not valid UTF-8 (overlong forms such
//     as %C0%AF, surrogates, truncated sequences), or that encode a
//     Unicode look-alike that Windows "best fit" mapping turns into ".",
//     "/" or "\" (U+2024, U+2025, U+2044, U+2215, U+2216, U+FE52, U+FF0E,
//     U+FF0F, U+FF3C);
//   - an empty segment ("//"), except the last one (a trailing "/");
//   - a "." or ".." segment, also between encoded slashes.
//
// An encoded "/" (%2F) is kept, as data inside its segment, and reported
// in Path.EncodedSlash: the caller refuses it unless the route allows it.
//
// The canonical form decodes escapes of unreserved characters (letters,
// digits, "-", "_", "~"), writes the hexadecimal digits of other escapes
// in upper case, and percent-encodes the printable characters RFC 3986
// does not allow raw in a path (" < > [ ] ^ ` { | }). The result is its
// own canonical form. It allocates only when the canonical form differs
// from the input.
func CanonicalPath(escaped string) (Path, error) {
	if escaped == "" || escaped[0] != '/' {
		return Path{}, errNotAbsolute
	}
	var (
		out      []byte // nil while the output equals the input so far
		p        Path
		nonASCII bool // an escape decodes to a byte >= 0x80
	)
	emit := func(i int, b ...byte) {
		if out == nil {
			out = make([]byte, 0, len(escaped)+8)
			out = append(out, escaped[:i]...)
		}
		out = append(out, b...)
	}
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch {
		case c < 0x21 || c >= 0x7f:
			return Path{}, errRawByte
		case c == '\\':
			return Path{}, errBackslash
		case c == ';':
			return Path{}, errSemicolon
		case c == '#':
			return Path{}, errFragment
		case c == '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return Path{}, errBadEscape
			}
			d := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			switch {
			case d < 0x20 || d == 0x7f:
				return Path{}, errEncodedCtrl
			case d == '.' || d == '\\' || d == '%' || d == ';':
				return Path{}, errEncodedDelim
			case d == '/':
				p.EncodedSlash = true
			case d >= 0x80:
				nonASCII = true
			}
			switch {
			case isUnreserved(d):
				emit(i, d)
			case escaped[i+1] >= 'a' || escaped[i+2] >= 'a':
				emit(i, '%', upperHex[d>>4], upperHex[d&0xf])
			case out != nil:
				out = append(out, escaped[i:i+3]...)
			}
			i += 2
		case isPathChar(c):
			if out != nil {
				out = append(out, c)
			}
		default: // printable, but not allowed raw in a path
			emit(i, '%', upperHex[c>>4], upperHex[c&0xf])
		}
	}
	p.Escaped = escaped
	if out != nil {
		p.Escaped = string(out)
	}
	if nonASCII {
		if err := checkDecoded(p.Escaped); err != nil {
			return Path{}, err
		}
	}
	if err := checkSegments(p.Escaped); err != nil {
		return Path{}, err
	}
	return p, nil
}

// checkSegments refuses empty and dot segments of a canonical path; an
// encoded slash separates segments here too, as servers that decode it
// would see them.
func checkSegments(escaped string) error {
	start := 1 // after the leading "/"
	for i := 1; i <= len(escaped); {
		n := separatorLen(escaped[i:])
		if n == 0 {
			i++
			continue
		}
		seg := escaped[start:i]
		switch {
		case seg == "." || seg == "..":
			return errDotSegment
		case seg == "" && i < len(escaped):
			return errEmptySegment
		}
		i += n
		start = i
	}
	return nil
}

// separatorLen returns the length of the segment separator s starts with
// ("/" or "%2F" — canonical paths spell escapes in upper case), 1 at the
// end of s, and 0 inside a segment.
func separatorLen(s string) int {
	switch {
	case s == "" || s[0] == '/':
		return 1
	case len(s) >= 3 && s[0] == '%' && s[1] == '2' && s[2] == 'F':
		return 3
	}
	return 0
}

// lookalikes are code points that Windows "best fit" mapping (and some
// normalising servers) turn into ".", "/" or "\".
var lookalikes = []rune{0x2024, 0x2025, 0x2044, 0x2215, 0x2216, 0xFE52, 0xFF0E, 0xFF0F, 0xFF3C}

// checkDecoded refuses a canonical path whose decoding is not valid UTF-8
// or holds a look-alike of a separator.
func checkDecoded(escaped string) error {
	dec, err := url.PathUnescape(escaped)
	if err != nil || !utf8.ValidString(dec) {
		return errInvalidUTF8
	}
	for _, r := range dec {
		for _, l := range lookalikes {
			if r == l {
				return errLookalike
			}
		}
	}
	return nil
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// isUnreserved reports RFC 3986 unreserved characters other than ".",
// whose escapes are decoded in the canonical form (an encoded "." is
// refused before it gets here).
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '~'
}

// isPathChar reports the characters allowed raw in a canonical path:
// RFC 3986 pchar and "/", without ";" (refused before) and "%" (handled as
// an escape).
func isPathChar(c byte) bool {
	return isUnreserved(c) || c == '.' || c == '/' || strings.IndexByte("!$&'()*+,=:@", c) >= 0
}

// checkRoutePath validates a route's path prefix: absolute, and written in
// canonical form (so that it compares with canonical request paths).
func checkRoutePath(p string) error {
	if strings.ContainsAny(p, "?#") {
		return errors.New("must not hold a query or fragment")
	}
	c, err := CanonicalPath(p)
	if err != nil {
		return err
	}
	if c.Escaped != p {
		return errRoutePathForm
	}
	return nil
}
