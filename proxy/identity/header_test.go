package identity

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestFromHeader(t *testing.T) {
	tests := []struct {
		name    string
		h       http.Header
		want    string
		wantErr error
	}{
		{"absent", http.Header{}, "", errNoAssertion},
		{"other headers only", http.Header{"Authorization": {"Bearer x"}}, "", errNoAssertion},
		{"one", http.Header{"Onbehalf-Assertion": {"a.b.c"}}, "a.b.c", nil},
		{"surrounding whitespace", http.Header{"Onbehalf-Assertion": {" \ta.b.c\t "}}, "a.b.c", nil},
		{"blank", http.Header{"Onbehalf-Assertion": {"  "}}, "", errEmptyAssertion},
		{"two values", http.Header{"Onbehalf-Assertion": {"a.b.c", "d.e.f"}}, "", errDuplicate},
		{"same value twice", http.Header{"Onbehalf-Assertion": {"a.b.c", "a.b.c"}}, "", errDuplicate},
		{"comma-joined", http.Header{"Onbehalf-Assertion": {"a.b.c, d.e.f"}}, "", errDuplicate},
		{"non-canonical second key", http.Header{"Onbehalf-Assertion": {"a.b.c"}, "onbehalf-assertion": {"d.e.f"}}, "", errDuplicate},
		{"non-canonical only key", http.Header{"ONBEHALF-ASSERTION": {"a.b.c"}}, "a.b.c", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromHeader(tt.h, DefaultHeader)
			if err != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestFromHeaderSentinels(t *testing.T) {
	_, err := FromHeader(http.Header{}, DefaultHeader)
	if !errors.Is(err, ErrMissing) {
		t.Errorf("absent: got %v; want ErrMissing", err)
	}
	_, err = FromHeader(http.Header{DefaultHeader: {"a", "b"}}, DefaultHeader)
	if !errors.Is(err, ErrInvalid) || Reason(err) != "duplicate assertion" {
		t.Errorf("duplicate: got %v; want ErrInvalid with reason duplicate assertion", err)
	}
}

func TestFromProxyAuthorization(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    string
		wantErr error
	}{
		{"absent", nil, "", errNoAssertion},
		{"bearer", []string{"Bearer a.b.c"}, "a.b.c", nil},
		{"scheme case-insensitive", []string{"bEaReR a.b.c"}, "a.b.c", nil},
		{"extra spaces", []string{"  Bearer    a.b.c  "}, "a.b.c", nil},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", errNotBearer},
		{"scheme only", []string{"Bearer"}, "", errEmptyAssertion},
		{"tab after scheme", []string{"Bearer\ta.b.c"}, "", errNotBearer},
		{"empty token", []string{"Bearer   "}, "", errEmptyAssertion},
		{"blank", []string{" "}, "", errEmptyAssertion},
		{"token with space", []string{"Bearer a.b.c d"}, "", errNotBearer},
		{"two headers", []string{"Bearer a.b.c", "Bearer d.e.f"}, "", errDuplicate},
		{"comma-joined", []string{"Bearer a.b.c, Bearer d.e.f"}, "", errDuplicate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.values {
				h.Add("Proxy-Authorization", v)
			}
			got, err := FromProxyAuthorization(h)
			if err != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestExtract(t *testing.T) {
	tests := []struct {
		name      string
		h         http.Header
		proxyAuth bool
		want      string
		wantErr   error
	}{
		{"nothing", http.Header{}, true, "", errNoAssertion},
		{"header only", http.Header{"Onbehalf-Assertion": {"a.b.c"}}, true, "a.b.c", nil},
		{"proxy auth only", http.Header{"Proxy-Authorization": {"Bearer a.b.c"}}, true, "a.b.c", nil},
		{"proxy auth ignored when not accepted", http.Header{"Proxy-Authorization": {"Bearer a.b.c"}}, false, "", errNoAssertion},
		{"both", http.Header{"Onbehalf-Assertion": {"a.b.c"}, "Proxy-Authorization": {"Bearer a.b.c"}}, true, "", errDuplicate},
		{"header and basic proxy auth", http.Header{"Onbehalf-Assertion": {"a.b.c"}, "Proxy-Authorization": {"Basic eDp5"}}, true, "a.b.c", nil},
		{"basic proxy auth only", http.Header{"Proxy-Authorization": {"Basic eDp5"}}, true, "", errNotBearer},
		{"duplicate proxy auth with header", http.Header{"Onbehalf-Assertion": {"a.b.c"}, "Proxy-Authorization": {"Bearer x", "Bearer y"}}, true, "", errDuplicate},
		{"duplicate header with proxy auth", http.Header{"Onbehalf-Assertion": {"a", "b"}, "Proxy-Authorization": {"Bearer x"}}, true, "", errDuplicate},
		{"blank header, bearer proxy auth", http.Header{"Onbehalf-Assertion": {""}, "Proxy-Authorization": {"Bearer a.b.c"}}, true, "a.b.c", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Extract(tt.h, DefaultHeader, tt.proxyAuth)
			if err != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// headerRefusals are all errors the header functions may return.
var headerRefusals = map[error]bool{
	errNoAssertion: true, errEmptyAssertion: true, errDuplicate: true, errNotBearer: true,
}

// FuzzFromHeader feeds arbitrary header values to FromHeader,
// FromProxyAuthorization and Extract. On success the result must be a
// trimmed, comma-free, non-empty part of one input; on failure the error must
// be one of the fixed refusals (so it cannot carry input).
func FuzzFromHeader(f *testing.F) {
	f.Add("a.b.c", "", uint8(1))
	f.Add("a.b.c", "d.e.f", uint8(3))
	f.Add("Bearer a.b.c", "Bearer d", uint8(4))
	f.Add("a.b.c, d.e.f", "", uint8(1))
	f.Add("bearer\ta.b.c", "x", uint8(13))
	f.Fuzz(func(t *testing.T, a, b string, layout uint8) {
		h := http.Header{}
		if layout&1 != 0 {
			h.Add(DefaultHeader, a)
		}
		if layout&2 != 0 {
			h.Add(DefaultHeader, b)
		}
		if layout&4 != 0 {
			h.Add("Proxy-Authorization", a)
		}
		if layout&8 != 0 {
			h.Add("Proxy-Authorization", b)
		}
		if layout&16 != 0 {
			h["onbehalf-assertion"] = append(h["onbehalf-assertion"], b)
		}
		check := func(fn string, got string, err error) {
			if err != nil {
				if !headerRefusals[err] {
					t.Fatalf("%s: unexpected error %v", fn, err)
				}
				if got != "" {
					t.Fatalf("%s: got %q with an error", fn, got)
				}
				if errors.Is(err, ErrMissing) == errors.Is(err, ErrInvalid) {
					t.Fatalf("%s: error %v must wrap exactly one sentinel", fn, err)
				}
				return
			}
			if got == "" || strings.ContainsRune(got, ',') || got != trimOWS(got) {
				t.Fatalf("%s: got %q", fn, got)
			}
			if !strings.Contains(a, got) && !strings.Contains(b, got) {
				t.Fatalf("%s: got %q, which is in neither input", fn, got)
			}
		}
		got, err := FromHeader(h, DefaultHeader)
		check("FromHeader", got, err)
		got, err = FromProxyAuthorization(h)
		check("FromProxyAuthorization", got, err)
		got, err = Extract(h, DefaultHeader, true)
		check("Extract", got, err)
		if layout&3 == 3 || layout&(1|16) == 1|16 || layout&(2|16) == 2|16 {
			if _, err := FromHeader(h, DefaultHeader); err != errDuplicate {
				t.Fatalf("FromHeader with two values: got %v; want duplicate", err)
			}
		}
	})
}
