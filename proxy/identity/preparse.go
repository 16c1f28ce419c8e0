package identity

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// header is what the pre-parser learns from a token: its JOSE header's alg,
// whether it has a kid, its typ, and (when asked for) the unverified iss of
// its claims, which only chooses the issuer whose keys then verify it.
type header struct {
	alg    algorithm
	hasKID bool
	hasTyp bool
	typ    string
	iss    string
}

// Limits of the pre-parser.
const (
	// maxHeaderSegment bounds the encoded JOSE header. A real assertion
	// header (alg, typ, kid) is well under 300 characters; 1 KiB leaves room
	// for long key ids.
	maxHeaderSegment = 1024
	// maxKIDLength bounds the kid; kid is only a lookup key and real ones
	// are short (a thumbprint is 43 bytes).
	maxKIDLength = 256
	// maxTypLength bounds the typ; the longest one accepted is
	// "application/oauth-id-jag+jwt" (28 bytes).
	maxTypLength = 64
)

// strictBase64 rejects encodings with non-zero padding bits, so one token
// has exactly one accepted spelling. It is the decoding golang-jwt uses
// with jwt.WithStrictDecoding, so the pre-parser reads the same bytes the
// library then verifies.
var strictBase64 = base64.RawURLEncoding.Strict()

// preparse checks raw before any signature work and returns what its header
// says. In order: the size limit (before anything reads the token), exactly
// three non-empty base64url segments, a bounded header that is one JSON
// object without duplicate members, alg in allowed, no jku/x5u/jwk/x5c/crit
// member, kid (if any) a non-empty string, typ (if any) a short string; then
// claims that are one JSON object in which no object, nested ones included,
// has duplicate members. With wantIss it also reads the claims' iss (a
// string, or "" when absent or not one), which is not verified yet: it only
// picks the issuer whose keys and rules apply. Every error it returns is one
// of this package's fixed refusals.
//
// The header and claims are decoded here from the same segments, with the
// same base64 decoding, as golang-jwt decodes them afterwards, so what is
// checked here is the text that is verified; the JSON is read with jsontext,
// which agrees with golang-jwt's encoding/json on every text it accepts (see
// checkObject). This runs only when the proxy has not verified raw before (its cache is
// keyed by the assertion), and costs a few microseconds against a signature
// check's tens (BenchmarkPreparse, BenchmarkVerifyAssertion).
func preparse(raw string, maxSize int, allowed algSet, wantIss bool) (header, error) {
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
	js, err := strictBase64.DecodeString(h)
	if err != nil {
		return header{}, errBase64
	}
	hdr, err := decodeHeader(js, allowed)
	if err != nil {
		return header{}, err
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
	claims, err := strictBase64.DecodeString(payload)
	if err != nil {
		return header{}, errBase64
	}
	if err := checkObject(claims); err != nil {
		if errors.Is(err, errObjectDuplicate) {
			return header{}, errClaimsDuplicate
		}
		return header{}, errClaimsJSON
	}
	if wantIss {
		hdr.iss = readIssuer(claims)
	}
	return hdr, nil
}

// readIssuer returns the top-level iss member of claims, a JSON object that
// checkObject accepted, when it is a string; "" otherwise.
func readIssuer(claims []byte) string {
	dec := jsontext.NewDecoder(bytes.NewReader(claims))
	if _, err := dec.ReadToken(); err != nil { // '{'
		return ""
	}
	for dec.PeekKind() == '"' {
		name, err := dec.ReadToken()
		if err != nil {
			return ""
		}
		if name.String() != "iss" {
			if err := dec.SkipValue(); err != nil {
				return ""
			}
			continue
		}
		v, err := dec.ReadToken()
		if err != nil || v.Kind() != '"' {
			return ""
		}
		return v.String()
	}
	return ""
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

// decodeHeader reads a JOSE header: one JSON object without duplicate
// members (checkObject), whose member names carry no escapes, without the
// forbidden members, with a kid that is a non-empty string of bounded
// length if there is one, and an alg from allowed.
//
// No honest encoder escapes the ASCII names JOSE defines, or an alg value;
// an escaped "jku" exists only to get past a filter that compares raw bytes,
// so both are refused. What this reads is checked once more against
// golang-jwt's own decoding of the header (see Verify and Verifier.key).
func decodeHeader(b []byte, allowed algSet) (header, error) {
	switch err := checkObject(b); {
	case errors.Is(err, errObjectDuplicate):
		return header{}, errHeaderDuplicate
	case err != nil:
		return header{}, errHeaderJSON
	}
	// b is one valid object with unique names: read its members.
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	if _, err := dec.ReadToken(); err != nil { // '{'
		return header{}, errHeaderJSON
	}
	var hdr header
	var alg jsontext.Value
	for dec.PeekKind() == '"' {
		name, err := dec.ReadValue()
		if err != nil {
			return header{}, errHeaderJSON
		}
		if bytes.IndexByte(name, '\\') >= 0 {
			return header{}, errHeaderEscape
		}
		n := string(name[1 : len(name)-1])
		value, err := dec.ReadValue()
		if err != nil {
			return header{}, errHeaderJSON
		}
		for _, f := range forbiddenHeaders {
			if n == f.name {
				return header{}, f.err
			}
		}
		switch n {
		case "alg":
			alg = value.Clone()
		case "kid":
			if value.Kind() != '"' {
				return header{}, errKIDType
			}
			kid, err := jsontext.AppendUnquote(nil, value)
			switch {
			case err != nil || len(kid) == 0:
				return header{}, errKIDType
			case len(kid) > maxKIDLength:
				return header{}, errKIDTooLong
			}
			hdr.hasKID = true
		case "typ":
			if value.Kind() != '"' {
				return header{}, errTypType
			}
			// Without escapes the value is the text between the
			// quotes; unquoting it would cost an allocation.
			typ := []byte(value[1 : len(value)-1])
			if bytes.IndexByte(typ, '\\') >= 0 {
				if typ, err = jsontext.AppendUnquote(nil, value); err != nil {
					return header{}, errTypType
				}
			}
			if len(typ) > maxTypLength {
				return header{}, errTypTooLong
			}
			hdr.hasTyp = true
			// The usual values need no allocation of their own.
			switch string(typ) {
			case TypeJWT:
				hdr.typ = TypeJWT
			case TypeAccessToken:
				hdr.typ = TypeAccessToken
			default:
				hdr.typ = string(typ)
			}
		}
	}
	switch {
	case alg == nil:
		return header{}, errNoAlg
	case alg.Kind() != '"' || bytes.IndexByte(alg, '\\') >= 0:
		return header{}, errUnsupportedAlg
	}
	hdr.alg = algorithmFromName(string(alg[1 : len(alg)-1]))
	switch {
	case hdr.alg == algUnknown:
		return header{}, errUnsupportedAlg
	case !allowed.has(hdr.alg):
		return header{}, errAlgorithmRefusals[hdr.alg]
	}
	return hdr, nil
}
