package identity

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzAllowed is the allow-list the fuzz target checks against.
var fuzzAllowed = func() algSet {
	var s algSet
	for _, a := range []algorithm{algEdDSA, algES256, algRS256, algHS256} {
		s.add(a)
	}
	return s
}()

const fuzzMaxSize = 4096

// hdrToken is a token with the given header JSON, small valid claims and a
// dummy signature.
func hdrToken(headerJSON string) string {
	return jsonToken(headerJSON, `{"sub":"a"}`)
}

// jsonToken is a token with the given header and claims JSON, as written,
// and a dummy signature.
func jsonToken(headerJSON, claimsJSON string) string {
	return b64([]byte(headerJSON)) + "." + b64([]byte(claimsJSON)) + ".c2ln"
}

// claimsToken is a token with an EdDSA header and the given claims JSON.
func claimsToken(claimsJSON string) string {
	return jsonToken(`{"alg":"EdDSA"}`, claimsJSON)
}

func TestPreparse(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    header
		wantErr error
	}{
		{"minimal", hdrToken(`{"alg":"EdDSA"}`), header{alg: algEdDSA}, nil},
		{"kid and typ", hdrToken(` { "typ" : "JWT" , "kid":"k\"1\u0041", "alg":"ES256" } `), header{alg: algES256, hasKID: true, hasTyp: true, typ: "JWT"}, nil},
		{"typ escaped", hdrToken(`{"alg":"EdDSA","typ":"application\/at+jwt"}`), header{alg: algEdDSA, hasTyp: true, typ: "application/at+jwt"}, nil},
		{"typ empty", hdrToken(`{"alg":"EdDSA","typ":""}`), header{alg: algEdDSA, hasTyp: true}, nil},
		{"typ number", hdrToken(`{"alg":"EdDSA","typ":1}`), header{}, errTypType},
		{"typ null", hdrToken(`{"alg":"EdDSA","typ":null}`), header{}, errTypType},
		{"typ too long", hdrToken(`{"alg":"EdDSA","typ":"` + strings.Repeat("t", maxTypLength+1) + `"}`), header{}, errTypTooLong},
		{"nested unknown member", hdrToken(`{"x":{"a":[1,-2.5e3,true,false,null,{"jku":"u"}]},"alg":"RS256"}`), header{alg: algRS256}, nil},
		{"same name in sibling objects", hdrToken(`{"x":[{"a":1},{"a":2}],"y":{"a":3},"alg":"EdDSA"}`), header{alg: algEdDSA}, nil},
		{"empty", "", header{}, errEmptyAssertion},
		{"too large", strings.Repeat("a", fuzzMaxSize+1), header{}, errTooLarge},
		{"no dots", "abc", header{}, errSegments},
		{"empty header segment", ".a.b", header{}, errSegments},
		{"empty payload segment", b64([]byte(`{"alg":"EdDSA"}`)) + "..c2ln", header{}, errSegments},
		{"header too large", strings.Repeat("A", maxHeaderSegment+4) + ".a.b", header{}, errHeaderTooLarge},
		{"header not base64", "e*J9.a.b", header{}, errBase64},
		{"header bad length", "eyJ9e.a.b", header{}, errBase64},
		{"header padding bits set", "e31.a.b", header{}, errBase64}, // `{}` is e30
		{"header not an object", hdrToken(`["alg","EdDSA"]`), header{}, errHeaderJSON},
		{"header null", hdrToken(`null`), header{}, errHeaderJSON},
		{"trailing data", hdrToken(`{"alg":"EdDSA"}x`), header{}, errHeaderJSON},
		{"second object", hdrToken(`{"alg":"EdDSA"}{"alg":"none"}`), header{}, errHeaderJSON},
		{"trailing comma", hdrToken(`{"alg":"EdDSA",}`), header{}, errHeaderJSON},
		{"unterminated", hdrToken(`{"alg":"EdDSA"`), header{}, errHeaderJSON},
		{"bad number", hdrToken(`{"x":01,"alg":"EdDSA"}`), header{}, errHeaderJSON},
		{"nested", hdrToken(`{"x":[[[[[[[[[[{"y":{}}]]]]]]]]]],"alg":"EdDSA"}`), header{alg: algEdDSA}, nil},
		{"invalid UTF-8", hdrToken("{\"alg\":\"EdDSA\",\"x\":\"\xff\"}"), header{}, errHeaderJSON},
		{"lone surrogate", hdrToken(`{"alg":"EdDSA","x":"\ud800"}`), header{}, errHeaderJSON},
		{"no alg", hdrToken(`{"typ":"JWT"}`), header{}, errNoAlg},
		{"alg number", hdrToken(`{"alg":1}`), header{}, errUnsupportedAlg},
		{"alg null", hdrToken(`{"alg":null}`), header{}, errUnsupportedAlg},
		{"alg escaped", hdrToken(`{"alg":"\u0045dDSA"}`), header{}, errUnsupportedAlg},
		{"alg unknown", hdrToken(`{"alg":"XS256"}`), header{}, errUnsupportedAlg},
		{"alg none", hdrToken(`{"alg":"none"}`), header{}, errAlgorithmRefusals[algNone]},
		{"alg known, not allowed", hdrToken(`{"alg":"PS256"}`), header{}, errAlgorithmRefusals[algPS256]},
		{"duplicate alg", hdrToken(`{"alg":"EdDSA","alg":"EdDSA"}`), header{}, errHeaderDuplicate},
		{"duplicate kid", hdrToken(`{"alg":"EdDSA","kid":"a","kid":"b"}`), header{}, errHeaderDuplicate},
		{"duplicate typ", hdrToken(`{"alg":"EdDSA","typ":"JWT","typ":"JWT"}`), header{}, errHeaderDuplicate},
		{"duplicate alg, one escaped", hdrToken(`{"alg":"none","\u0061lg":"EdDSA"}`), header{}, errHeaderDuplicate},
		{"duplicate in a nested header member", hdrToken(`{"alg":"EdDSA","x":{"a":1,"a":2}}`), header{}, errHeaderDuplicate},
		{"duplicate in an object in an array", hdrToken(`{"alg":"EdDSA","x":[{},{"b":1,"b":1}]}`), header{}, errHeaderDuplicate},
		{"kid empty", hdrToken(`{"alg":"EdDSA","kid":""}`), header{}, errKIDType},
		{"kid object", hdrToken(`{"alg":"EdDSA","kid":{}}`), header{}, errKIDType},
		{"kid null", hdrToken(`{"alg":"EdDSA","kid":null}`), header{}, errKIDType},
		{"kid too long", hdrToken(`{"alg":"EdDSA","kid":"` + strings.Repeat("k", maxKIDLength+1) + `"}`), header{}, errKIDTooLong},
		{"jku", hdrToken(`{"alg":"EdDSA","jku":"https://x"}`), header{}, errHeaderJKU},
		{"jku before alg", hdrToken(`{"jku":"https://x","alg":"none"}`), header{}, errHeaderJKU},
		{"jku after alg none", hdrToken(`{"alg":"none","jku":"https://x"}`), header{}, errHeaderJKU},
		{"x5u", hdrToken(`{"alg":"EdDSA","x5u":"https://x"}`), header{}, errHeaderX5U},
		{"jwk", hdrToken(`{"alg":"EdDSA","jwk":{}}`), header{}, errHeaderJWK},
		{"x5c", hdrToken(`{"alg":"EdDSA","x5c":[]}`), header{}, errHeaderX5C},
		{"crit", hdrToken(`{"alg":"EdDSA","crit":["b64"],"b64":false}`), header{}, errHeaderCrit},
		{"escaped member name", hdrToken(`{"alg":"EdDSA","j\u006bu":"x"}`), header{}, errHeaderEscape},
		{"escaped unknown member name", hdrToken(`{"alg":"EdDSA","\u0074yp":"JWT"}`), header{}, errHeaderEscape},
		{"escaped name in a nested member", hdrToken(`{"alg":"EdDSA","x":{"\u0061":1}}`), header{alg: algEdDSA}, nil},
		{"control char in name", hdrToken("{\"alg\":\"EdDSA\",\"a\x01\":1}"), header{}, errHeaderJSON},
		{"alg none, empty signature", strings.TrimSuffix(hdrToken(`{"alg":"none"}`), "c2ln"), header{}, errAlgorithmRefusals[algNone]},
		{"empty signature", strings.TrimSuffix(hdrToken(`{"alg":"EdDSA"}`), "c2ln"), header{}, errSegments},
		{"payload not base64", b64([]byte(`{"alg":"EdDSA"}`)) + ".a+b.c2ln", header{}, errBase64},
		{"payload padding bits", b64([]byte(`{"alg":"EdDSA"}`)) + ".e30.c2ln", header{alg: algEdDSA}, nil}, // `{}`
		{"payload padding bits set", b64([]byte(`{"alg":"EdDSA"}`)) + ".e31.c2ln", header{}, errBase64},
		{"four segments", hdrToken(`{"alg":"EdDSA"}`) + ".x", header{}, errSegments},

		// Claims: one JSON object, no duplicate member anywhere in it.
		{"claims with nested objects", claimsToken(`{"sub":"alice","act":{"sub":"agent-7","act":{"sub":"o"}},"ctx":[{"a":1},{"a":2}]}`), header{alg: algEdDSA}, nil},
		{"claims duplicate sub", claimsToken(`{"sub":"alice","sub":"bob"}`), header{}, errClaimsDuplicate},
		{"claims duplicate sub, one escaped", claimsToken(`{"sub":"alice","s\u0075b":"bob"}`), header{}, errClaimsDuplicate},
		{"claims duplicate in act", claimsToken(`{"sub":"alice","act":{"sub":"agent-7","sub":"agent-9"}}`), header{}, errClaimsDuplicate},
		{"claims duplicate in nested act", claimsToken(`{"sub":"alice","act":{"sub":"a","act":{"sub":"o","sub":"p"}}}`), header{}, errClaimsDuplicate},
		{"claims duplicate in an array of objects", claimsToken(`{"sub":"alice","ctx":[{"a":1},{"a":1,"a":2}]}`), header{}, errClaimsDuplicate},
		{"claims duplicate null member", claimsToken(`{"sub":"alice","aud":null,"aud":"agent-7"}`), header{}, errClaimsDuplicate},
		{"claims not an object", claimsToken(`["sub","alice"]`), header{}, errClaimsJSON},
		{"claims null", claimsToken(`null`), header{}, errClaimsJSON},
		{"claims not JSON", claimsToken(`not json`), header{}, errClaimsJSON},
		{"claims trailing data", claimsToken(`{"sub":"alice"} {"sub":"bob"}`), header{}, errClaimsJSON},
		{"claims with invalid UTF-8", claimsToken("{\"sub\":\"alice\xff\"}"), header{}, errClaimsJSON},
		{"claims with a lone surrogate", claimsToken(`{"sub":"alice\udc00"}`), header{}, errClaimsJSON},
		{"claims duplicate names of invalid UTF-8", claimsToken("{\"sub\":\"alice\",\"\xfe\":1,\"\xff\":2}"), header{}, errClaimsJSON},
		{"claims iss", claimsToken(`{"iss":"https://idp","sub":"alice"}`), header{alg: algEdDSA, iss: "https://idp"}, nil},
		{"claims iss escaped", claimsToken(`{"\u0069ss":"https:\/\/idp","sub":"alice"}`), header{alg: algEdDSA, iss: "https://idp"}, nil},
		{"claims iss not a string", claimsToken(`{"iss":["https://idp"],"sub":"alice"}`), header{alg: algEdDSA}, nil},
		{"claims iss only nested", claimsToken(`{"act":{"iss":"https://idp"},"sub":"alice"}`), header{alg: algEdDSA}, nil},
		{"claims iss after objects", claimsToken(`{"a":{"iss":"x"},"b":[{"iss":"y"}],"iss":"https://idp"}`), header{alg: algEdDSA, iss: "https://idp"}, nil},
		{"claims duplicate iss", claimsToken(`{"iss":"https://orchestrator","iss":"https://idp"}`), header{}, errClaimsDuplicate},
		{"header refusal before claims", jsonToken(`{"alg":"none"}`, `{"sub":"a","sub":"b"}`), header{}, errAlgorithmRefusals[algNone]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := preparse(tt.raw, fuzzMaxSize, fuzzAllowed, true)
			if err != tt.wantErr || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCheckObject(t *testing.T) {
	tests := []struct {
		in      string
		wantErr error
	}{
		{`{}`, nil},
		{" \t\r\n{ } \n", nil},
		{`{"a":1,"b":"x","c":[1,{"a":1}],"d":{"a":{"a":null}}}`, nil},
		{`{"a":1,"A":2}`, nil}, // names are case-sensitive
		{`{"a":{"b":1},"b":1}`, nil},
		{`{"a":"x:y","b":"\":"}`, nil},
		{`{"a":1e400}`, nil}, // syntax only; the value decoder judges range
		{`{"a":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}`, nil},
		{`{"a":1,"a":1}`, errObjectDuplicate},
		{`{"\u00e9":1,"é":2}`, errObjectDuplicate},
		{`{"a\"":1,"a\u0022":2}`, errObjectDuplicate},
		{`{"a":[[{"x":1,"y":2,"x":3}]]}`, errObjectDuplicate},
		{`{"a":{"b":{"c":{"d":1,"d":2}}}}`, errObjectDuplicate},
		{"{\"\xff\":1}", errObjectSyntax},
		{`{"\udc00":1}`, errObjectSyntax},
		{`[]`, errObjectSyntax},
		{`"x"`, errObjectSyntax},
		{`null`, errObjectSyntax},
		{``, errObjectSyntax},
		{`{`, errObjectSyntax},
		{`{"a"}`, errObjectSyntax},
		{`{"a":}`, errObjectSyntax},
		{`{"a":1 "b":2}`, errObjectSyntax},
		{`{1:2}`, errObjectSyntax},
		{`{"a":[1,]}`, errObjectSyntax},
		{`{"a":[}`, errObjectSyntax},
		{`{"a":tru}`, errObjectSyntax},
		{`{"a":01}`, errObjectSyntax},
		{`{"a":-}`, errObjectSyntax},
		{`{}}`, errObjectSyntax},
		{`{}[]`, errObjectSyntax},
		{`{} {}`, errObjectSyntax},
	}
	for _, tt := range tests {
		if err := checkObject([]byte(tt.in)); err != tt.wantErr {
			t.Errorf("checkObject(%q): got %v; want %v", tt.in, err, tt.wantErr)
		}
	}
}

// preparseRefusals are all errors preparse may return.
var preparseRefusals = func() map[error]bool {
	m := map[error]bool{
		errTooLarge: true, errEmptyAssertion: true, errSegments: true, errBase64: true,
		errHeaderTooLarge: true, errHeaderJSON: true, errHeaderEscape: true, errHeaderDuplicate: true,
		errNoAlg: true, errUnsupportedAlg: true, errKIDType: true, errKIDTooLong: true,
		errHeaderJKU: true, errHeaderX5U: true, errHeaderJWK: true, errHeaderX5C: true, errHeaderCrit: true,
		errClaimsJSON: true, errClaimsDuplicate: true,
	}
	for _, e := range errAlgorithmRefusals {
		m[e] = true
	}
	return m
}()

// FuzzPreparse checks the pre-parser against encoding/json, the decoder the
// JWT library uses on the same segments: whenever preparse accepts a token,
// encoding/json must decode its header and its claims as objects, agree on
// alg and kid, see no jku, x5u, jwk, x5c or crit, and no object in either
// may have had a duplicate member (counted independently, see
// duplicateMembers). A duplicate refusal must name a real duplicate.
// Refusals must be the fixed errors (which cannot carry input), and
// preparse must never accept what its rules exclude.
func FuzzPreparse(f *testing.F) {
	for _, h := range []string{
		`{"alg":"EdDSA","kid":"k1","typ":"JWT"}`,
		`{"alg":"none"}`,
		`{"alg":"HS256","jku":"https://evil"}`,
		`{"alg":"ES256","x":{"jwk":[1,{"y":"\"}"}]}}`,
		`{"alg":"RS256","kid":"\u0000"}`,
		`{"alg":"EdDSA","typ":"JWT","typ":"at+jwt"}`,
	} {
		f.Add(hdrToken(h))
	}
	for _, c := range []string{
		`{"sub":"alice","sub":"bob"}`,
		`{"sub":"alice","act":{"sub":"a","sub":"b"}}`,
		`{"sub":"alice","s\u0075b":"bob"}`,
		`{"sub":"alice","x":[{"a":1},{"a":1,"a":2}]}`,
		`{"iss":"https://idp","sub":"alice"}`,
		`{"\u0069ss":"https://idp","act":{"iss":"x"}}`,
	} {
		f.Add(claimsToken(c))
	}
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		hdr, err := preparse(raw, fuzzMaxSize, fuzzAllowed, true)
		if err != nil {
			if !preparseRefusals[err] {
				t.Fatalf("unexpected error %v", err)
			}
			if hdr != (header{}) {
				t.Fatalf("got header %+v with error %v", hdr, err)
			}
			if err == errHeaderDuplicate || err == errClaimsDuplicate {
				seg := 0
				if err == errClaimsDuplicate {
					seg = 1
				}
				js, _ := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[seg])
				if dup, ok := duplicateMembers(js); ok && !dup {
					t.Fatalf("refused with %v; encoding/json sees no duplicate in %q", err, js)
				}
			}
			return
		}
		if len(raw) > fuzzMaxSize {
			t.Fatalf("accepted %d bytes over the limit %d", len(raw), fuzzMaxSize)
		}
		parts := strings.Split(raw, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted %d segments", len(parts))
		}
		for i, p := range parts {
			if p == "" || strings.ContainsAny(p, "=+/ \t\r\n") {
				t.Fatalf("accepted segment %d %q", i, p)
			}
		}
		if !fuzzAllowed.has(hdr.alg) {
			t.Fatalf("accepted alg %v outside the allow-list", hdr.alg)
		}
		var decoded [2]map[string]any
		for i, name := range []string{"header", "claims"} {
			js, err := base64.RawURLEncoding.DecodeString(parts[i])
			if err != nil {
				t.Fatalf("accepted a %s segment that does not decode: %v", name, err)
			}
			if dup, ok := duplicateMembers(js); !ok || dup {
				t.Fatalf("accepted %s %q: valid object %v, duplicate members %v", name, js, ok, dup)
			}
			if json.Unmarshal(js, &decoded[i]) != nil {
				return // a number out of range: the JWT library refuses it
			}
		}
		m := decoded[0]
		if alg, _ := m["alg"].(string); alg != hdr.alg.String() {
			t.Fatalf("preparse saw alg %q; encoding/json sees %q", hdr.alg, alg)
		}
		kid, hasKID := m["kid"]
		if hasKID != hdr.hasKID {
			t.Fatalf("preparse saw kid=%v; encoding/json sees kid=%v", hdr.hasKID, hasKID)
		}
		if s, ok := kid.(string); hasKID && (!ok || s == "") {
			t.Fatalf("accepted kid %#v", kid)
		}
		for _, name := range []string{"jku", "x5u", "jwk", "x5c", "crit"} {
			if _, ok := m[name]; ok {
				t.Fatalf("accepted a header with %s", name)
			}
		}
		typ, hasTyp := m["typ"]
		if hasTyp != hdr.hasTyp || (hasTyp && typ != hdr.typ) {
			t.Fatalf("preparse saw typ %v %q; encoding/json sees %v %#v", hdr.hasTyp, hdr.typ, hasTyp, typ)
		}
		// The issuer that picks the source must be the one the JWT
		// library then checks.
		if iss, _ := decoded[1]["iss"].(string); iss != hdr.iss {
			t.Fatalf("preparse saw iss %q; encoding/json sees %q", hdr.iss, iss)
		}
	})
}

// FuzzCheckObject checks checkObject against an independent reading of
// the same text by encoding/json: checkObject never accepts a text that is
// not one valid object, or one whose members, counted after decoding, are
// fewer than the member separators in the text (a duplicate that decoding
// dropped); a duplicate it reports is one; and it accepts every valid
// object without duplicates in valid UTF-8 without surrogate escapes (which
// it judges more strictly than encoding/json).
func FuzzCheckObject(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"c":2}]}}`, `{"s\u0075b":1,"sub":2}`,
		`{"a":"x:y","b":"\":"}`, `{"a":[[[[[1]]]]]}`, `{"a":1} x`, `[1,2]`, `{"\u00e9":1,"é":2}`,
		"{\"\xff\":1,\"\xfe\":2}", `{"\ud800":1,"\udfff":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkObject(b)
		dup, ok := duplicateMembers(b)
		switch {
		case err == nil && (!ok || dup):
			t.Fatalf("checkObject(%q) accepted it; encoding/json: valid object %v, duplicates %v", b, ok, dup)
		case err == errObjectDuplicate && ok && !dup:
			t.Fatalf("checkObject(%q) reports a duplicate; encoding/json sees none", b)
		case err != nil && ok && !dup && utf8.Valid(b) && !surrogateEscape.Match(b):
			t.Fatalf("checkObject(%q) = %v; encoding/json reads one object without duplicates", b, err)
		}
	})
}

// surrogateEscape matches a \u escape of a UTF-16 surrogate (and, harmlessly,
// an escaped backslash followed by such text).
var surrogateEscape = regexp.MustCompile(`(?i)\\ud[89a-f]`)

// duplicateMembers is the fuzz targets' reference: ok reports whether b is
// one JSON object by encoding/json's own reading, and dup whether decoding
// it lost members, that is whether the text has more name separators
// (colons outside strings) than the decoded value has members.
func duplicateMembers(b []byte) (dup, ok bool) {
	if !json.Valid(b) {
		return false, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return false, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return false, false
	}
	if _, isObject := v.(map[string]any); !isObject {
		return false, false
	}
	return colons(b) != members(v), true
}

// colons counts the colons outside strings in valid JSON: one per member.
func colons(b []byte) int {
	n, inString := 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && c == ':':
			n++
		}
	}
	return n
}

// members counts the members of every object in a decoded value.
func members(v any) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		n += len(v)
		for _, e := range v {
			n += members(e)
		}
	case []any:
		for _, e := range v {
			n += members(e)
		}
	}
	return n
}
