package identity

import (
	"encoding/base64"
	"strings"
)

// algorithm is a JOSE signature algorithm ("alg") known to this package.
// Known-but-refused names (none, HS384, ES512, …) have values too, so that a
// refusal can name them without quoting the token.
type algorithm uint8

const (
	algUnknown algorithm = iota
	algNone
	algHS256
	algHS384
	algHS512
	algRS256
	algRS384
	algRS512
	algPS256
	algPS384
	algPS512
	algES256
	algES384
	algES512
	algEdDSA
	numAlgorithms
)

var algorithmNames = [numAlgorithms]string{
	algUnknown: "",
	algNone:    "none",
	algHS256:   "HS256",
	algHS384:   "HS384",
	algHS512:   "HS512",
	algRS256:   "RS256",
	algRS384:   "RS384",
	algRS512:   "RS512",
	algPS256:   "PS256",
	algPS384:   "PS384",
	algPS512:   "PS512",
	algES256:   "ES256",
	algES384:   "ES384",
	algES512:   "ES512",
	algEdDSA:   "EdDSA",
}

// String returns the JOSE name of a ("" for algUnknown).
func (a algorithm) String() string {
	if a >= numAlgorithms {
		return ""
	}
	return algorithmNames[a]
}

// configurable reports whether a may appear in Config.Algorithms.
func (a algorithm) configurable() bool {
	switch a {
	case algEdDSA, algES256, algES384, algRS256, algRS384, algRS512, algPS256, algHS256:
		return true
	}
	return false
}

// algorithmFromName maps a JOSE name (case-sensitive, as RFC 7515 says) to
// its algorithm, or algUnknown.
func algorithmFromName(name string) algorithm {
	for a := algNone; a < numAlgorithms; a++ {
		if algorithmNames[a] == name {
			return a
		}
	}
	return algUnknown
}

// algorithmFromBytes is algorithmFromName for a byte slice, without
// allocating.
func algorithmFromBytes(name []byte) algorithm {
	for a := algNone; a < numAlgorithms; a++ {
		if algorithmNames[a] == string(name) {
			return a
		}
	}
	return algUnknown
}

// algSet is a set of algorithms.
type algSet uint32

func (s algSet) has(a algorithm) bool { return a != algUnknown && s&(1<<a) != 0 }
func (s *algSet) add(a algorithm)     { *s |= 1 << a }

// header is what the pre-parser learns from a token's JOSE header.
type header struct {
	alg    algorithm
	hasKID bool
}

// Limits of the pre-parser.
const (
	// maxHeaderSegment bounds the encoded JOSE header. A real assertion
	// header (alg, typ, kid) is well under 300 characters; 1 KiB leaves room
	// for long key ids while keeping the decode buffers on the stack.
	maxHeaderSegment = 1024
	// maxHeaderJSON is the decoded size of the largest accepted header.
	maxHeaderJSON = maxHeaderSegment / 4 * 3
	// maxKIDLength bounds the kid as it appears in the header JSON; kid is
	// only a lookup key and real ones are short (a thumbprint is 43 bytes).
	maxKIDLength = 256
	// maxHeaderDepth bounds nesting inside unknown header members, so a
	// crafted header cannot make the scanner recurse deeply.
	maxHeaderDepth = 8
)

// strictBase64 rejects encodings with non-zero padding bits, so one token
// has exactly one accepted spelling (the parser is configured the same way).
var strictBase64 = base64.RawURLEncoding.Strict()

// preparse checks raw before any signature work and returns what its header
// says. In order: the size limit (before anything reads the token), exactly
// three non-empty base64url segments, a bounded header decoded into a fixed
// struct, alg in allowed, no jku/x5u/jwk/x5c/crit member, kid (if any) a
// non-empty string. Duplicate alg or kid members are refused, because JSON
// decoders disagree on which one wins. preparse does not allocate; every error
// it returns is one of this package's fixed refusals.
func preparse(raw string, maxSize int, allowed algSet) (header, error) {
	if len(raw) > maxSize {
		return header{}, errTooLarge
	}
	if raw == "" {
		return header{}, errEmptyAssertion
	}
	h, rest, ok := strings.Cut(raw, ".")
	if !ok {
		return header{}, errSegments
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(sig, '.') >= 0 || h == "" || payload == "" {
		return header{}, errSegments
	}
	if len(h) > maxHeaderSegment {
		return header{}, errHeaderTooLarge
	}
	if !isBase64URL(h) {
		return header{}, errBase64
	}
	var src [maxHeaderSegment]byte
	n := copy(src[:], h)
	var js [maxHeaderJSON]byte
	m, err := strictBase64.Decode(js[:], src[:n])
	if err != nil {
		return header{}, errBase64
	}
	hdr, herr := scanHeader(js[:m], allowed)
	if herr != nil {
		return header{}, herr
	}
	// The header decides the most telling refusals (alg none, jku); the
	// other segments are checked after it. An empty signature is what
	// alg none produces, and it is refused here for every other alg.
	if sig == "" {
		return header{}, errSegments
	}
	if !isBase64URL(payload) || !isBase64URL(sig) {
		return header{}, errBase64
	}
	return hdr, nil
}

// isBase64URL reports whether s is unpadded base64url of a possible length.
func isBase64URL(s string) bool {
	if len(s)%4 == 1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ('A' <= c && c <= 'Z') || ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' || c == '_' {
			continue
		}
		return false
	}
	return true
}

// scanHeader reads a JOSE header JSON object. It is deliberately strict
// about the top-level member names (no escapes, no duplicates of alg or
// kid), so that what it sees is what encoding/json (used later by the JWT
// library) sees. Values of other members are skipped, not interpreted.
func scanHeader(b []byte, allowed algSet) (header, error) {
	s := scanner{b: b}
	var hdr header
	seenAlg := false
	s.ws()
	if !s.eat('{') {
		return header{}, errHeaderJSON
	}
	s.ws()
	if !s.eat('}') {
		for {
			name, err := s.memberName()
			if err != nil {
				return header{}, err
			}
			s.ws()
			if !s.eat(':') {
				return header{}, errHeaderJSON
			}
			s.ws()
			switch string(name) {
			case "alg":
				if seenAlg {
					return header{}, errHeaderDuplicate
				}
				seenAlg = true
				v, ok := s.plainString()
				if !ok {
					return header{}, errUnsupportedAlg
				}
				hdr.alg = algorithmFromBytes(v)
			case "kid":
				if hdr.hasKID {
					return header{}, errHeaderDuplicate
				}
				start := s.i
				if !s.skipString() {
					return header{}, errKIDType
				}
				switch l := s.i - start - 2; {
				case l <= 0:
					return header{}, errKIDType
				case l > maxKIDLength:
					return header{}, errKIDTooLong
				}
				hdr.hasKID = true
			case "jku":
				return header{}, errHeaderJKU
			case "x5u":
				return header{}, errHeaderX5U
			case "jwk":
				return header{}, errHeaderJWK
			case "x5c":
				return header{}, errHeaderX5C
			case "crit":
				return header{}, errHeaderCrit
			default:
				if !s.skipValue(0) {
					return header{}, errHeaderJSON
				}
			}
			s.ws()
			if s.eat(',') {
				s.ws()
				continue
			}
			if s.eat('}') {
				break
			}
			return header{}, errHeaderJSON
		}
	}
	s.ws()
	if s.i != len(s.b) {
		return header{}, errHeaderJSON
	}
	switch {
	case !seenAlg:
		return header{}, errNoAlg
	case hdr.alg == algUnknown:
		return header{}, errUnsupportedAlg
	case !allowed.has(hdr.alg):
		return header{}, errAlgorithmRefusals[hdr.alg]
	}
	return hdr, nil
}

// scanner walks a JSON text without building values.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// memberName reads a top-level member name. Escapes are refused: no honest
// encoder escapes "alg", and decoding them here would be a second JSON
// decoder to keep in step with encoding/json.
func (s *scanner) memberName() ([]byte, error) {
	if !s.eat('"') {
		return nil, errHeaderJSON
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			name := s.b[start:s.i]
			s.i++
			return name, nil
		case c == '\\':
			return nil, errHeaderEscape
		case c < 0x20:
			return nil, errHeaderJSON
		}
		s.i++
	}
	return nil, errHeaderJSON
}

// plainString reads a string value without escapes and returns its bytes.
func (s *scanner) plainString() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			return v, true
		case c == '\\' || c < 0x20:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// skipString skips a string value, escapes included.
func (s *scanner) skipString() bool {
	if !s.eat('"') {
		return false
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		s.i++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i >= len(s.b) {
				return false
			}
			e := s.b[s.i]
			s.i++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if s.i+4 > len(s.b) {
					return false
				}
				for _, h := range s.b[s.i : s.i+4] {
					if !isHex(h) {
						return false
					}
				}
				s.i += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// skipValue skips any JSON value. Numbers are skipped leniently (the JWT
// library's decoder validates them afterwards); strings and nesting are
// tracked exactly, since they decide where top-level members begin.
func (s *scanner) skipValue(depth int) bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.skipString()
	case c == '{' || c == '[':
		if depth >= maxHeaderDepth {
			return false
		}
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		s.i++
		s.ws()
		if s.eat(closing) {
			return true
		}
		for {
			if c == '{' {
				if !s.skipString() {
					return false
				}
				s.ws()
				if !s.eat(':') {
					return false
				}
				s.ws()
			}
			if !s.skipValue(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				s.ws()
				continue
			}
			return s.eat(closing)
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		for s.i < len(s.b) {
			switch c := s.b[s.i]; {
			case c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' || ('0' <= c && c <= '9'):
				s.i++
			default:
				return true
			}
		}
		return true
	}
	return false
}

func (s *scanner) literal(word string) bool {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return false
	}
	s.i += len(word)
	return true
}
