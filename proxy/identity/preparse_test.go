package identity

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
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

func hdrToken(headerJSON string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(headerJSON)) + ".eyJzdWIiOiJhIn0.c2ln"
}

func TestPreparse(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    header
		wantErr error
	}{
		{"minimal", hdrToken(`{"alg":"EdDSA"}`), header{alg: algEdDSA}, nil},
		{"kid and typ", hdrToken(` { "typ" : "JWT" , "kid":"k\"1\u0041", "alg":"ES256" } `), header{alg: algES256, hasKID: true}, nil},
		{"nested unknown member", hdrToken(`{"x":{"a":[1,-2.5e3,true,false,null,{"jku":"u"}]},"alg":"RS256"}`), header{alg: algRS256}, nil},
		{"empty", "", header{}, errEmptyAssertion},
		{"too large", strings.Repeat("a", fuzzMaxSize+1), header{}, errTooLarge},
		{"no dots", "abc", header{}, errSegments},
		{"empty header segment", ".a.b", header{}, errSegments},
		{"empty payload segment", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA"}`)) + "..c2ln", header{}, errSegments},
		{"header too large", strings.Repeat("A", maxHeaderSegment+4) + ".a.b", header{}, errHeaderTooLarge},
		{"header not base64", "e*J9.a.b", header{}, errBase64},
		{"header bad length", "eyJ9e.a.b", header{}, errBase64},
		{"header not an object", hdrToken(`["alg","EdDSA"]`), header{}, errHeaderJSON},
		{"trailing data", hdrToken(`{"alg":"EdDSA"}x`), header{}, errHeaderJSON},
		{"trailing comma", hdrToken(`{"alg":"EdDSA",}`), header{}, errHeaderJSON},
		{"unterminated", hdrToken(`{"alg":"EdDSA"`), header{}, errHeaderJSON},
		{"too deep", hdrToken(`{"x":[[[[[[[[[[1]]]]]]]]]],"alg":"EdDSA"}`), header{}, errHeaderJSON},
		{"no alg", hdrToken(`{"typ":"JWT"}`), header{}, errNoAlg},
		{"alg number", hdrToken(`{"alg":1}`), header{}, errUnsupportedAlg},
		{"alg escaped", hdrToken(`{"alg":"\u0045dDSA"}`), header{}, errUnsupportedAlg},
		{"alg unknown", hdrToken(`{"alg":"XS256"}`), header{}, errUnsupportedAlg},
		{"alg none", hdrToken(`{"alg":"none"}`), header{}, errAlgorithmRefusals[algNone]},
		{"alg known, not allowed", hdrToken(`{"alg":"PS256"}`), header{}, errAlgorithmRefusals[algPS256]},
		{"duplicate alg", hdrToken(`{"alg":"EdDSA","alg":"EdDSA"}`), header{}, errHeaderDuplicate},
		{"duplicate kid", hdrToken(`{"alg":"EdDSA","kid":"a","kid":"b"}`), header{}, errHeaderDuplicate},
		{"kid empty", hdrToken(`{"alg":"EdDSA","kid":""}`), header{}, errKIDType},
		{"kid object", hdrToken(`{"alg":"EdDSA","kid":{}}`), header{}, errKIDType},
		{"kid too long", hdrToken(`{"alg":"EdDSA","kid":"` + strings.Repeat("k", maxKIDLength+1) + `"}`), header{}, errKIDTooLong},
		{"jku", hdrToken(`{"alg":"EdDSA","jku":"https://x"}`), header{}, errHeaderJKU},
		{"jku before alg", hdrToken(`{"jku":"https://x","alg":"none"}`), header{}, errHeaderJKU},
		{"x5u", hdrToken(`{"alg":"EdDSA","x5u":"https://x"}`), header{}, errHeaderX5U},
		{"jwk", hdrToken(`{"alg":"EdDSA","jwk":{}}`), header{}, errHeaderJWK},
		{"x5c", hdrToken(`{"alg":"EdDSA","x5c":[]}`), header{}, errHeaderX5C},
		{"crit", hdrToken(`{"alg":"EdDSA","crit":["b64"],"b64":false}`), header{}, errHeaderCrit},
		{"escaped member name", hdrToken(`{"alg":"EdDSA","j\u006bu":"x"}`), header{}, errHeaderEscape},
		{"control char in name", hdrToken("{\"alg\":\"EdDSA\",\"a\x01\":1}"), header{}, errHeaderJSON},
		{"alg none, empty signature", hdrToken(`{"alg":"none"}`)[:len(hdrToken(`{"alg":"none"}`))-4], header{}, errAlgorithmRefusals[algNone]},
		{"empty signature", hdrToken(`{"alg":"EdDSA"}`)[:len(hdrToken(`{"alg":"EdDSA"}`))-4], header{}, errSegments},
		{"payload not base64", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA"}`)) + ".a+b.c2ln", header{}, errBase64},
		{"four segments", hdrToken(`{"alg":"EdDSA"}`) + ".x", header{}, errSegments},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := preparse(tt.raw, fuzzMaxSize, fuzzAllowed)
			if err != tt.wantErr || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestPreparseDoesNotAllocate(t *testing.T) {
	for _, raw := range []string{
		hdrToken(`{"alg":"EdDSA","kid":"key-2026-06","typ":"JWT"}`),
		hdrToken(`{"alg":"HS512"}`),
		hdrToken(`{"alg":"EdDSA","jku":"https://x"}`),
		strings.Repeat("x", 1<<20),
	} {
		allocs := testing.AllocsPerRun(50, func() {
			preparse(raw, fuzzMaxSize, fuzzAllowed)
		})
		if allocs != 0 {
			t.Errorf("preparse(%.40q…): got %v allocations; want 0", raw, allocs)
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
	}
	for _, e := range errAlgorithmRefusals {
		m[e] = true
	}
	return m
}()

// FuzzPreparse checks the pre-parser against encoding/json, the decoder the
// JWT library uses on the same header: whenever preparse accepts a token
// whose header encoding/json can decode, both must agree on alg, on kid, and
// on the absence of jku, x5u, jwk, x5c and crit. Refusals must be the fixed
// errors (which cannot carry input), and preparse must never accept what its
// rules exclude.
func FuzzPreparse(f *testing.F) {
	for _, h := range []string{
		`{"alg":"EdDSA","kid":"k1","typ":"JWT"}`,
		`{"alg":"none"}`,
		`{"alg":"HS256","jku":"https://evil"}`,
		`{"alg":"ES256","x":{"jwk":[1,{"y":"\"}"}]}}`,
		`{"alg":"RS256","kid":"\u0000"}`,
	} {
		f.Add(hdrToken(h))
	}
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		hdr, err := preparse(raw, fuzzMaxSize, fuzzAllowed)
		if err != nil {
			if !preparseRefusals[err] {
				t.Fatalf("unexpected error %v", err)
			}
			if hdr != (header{}) {
				t.Fatalf("got header %+v with error %v", hdr, err)
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
		headerJSON, err := base64.RawURLEncoding.DecodeString(parts[0])
		if err != nil {
			t.Fatalf("accepted a header segment that does not decode: %v", err)
		}
		var m map[string]any
		if json.Unmarshal(headerJSON, &m) != nil {
			return // the JWT library refuses it too
		}
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
	})
}
