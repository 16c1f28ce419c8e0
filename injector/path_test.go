package injector

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestCanonicalPath is the exact rule, variant by variant: the escapes of
// the adversarial review (Tomcat's "..;", encoded and double-encoded dots,
// overlong UTF-8) and the forms around them that must keep working.
func TestCanonicalPath(t *testing.T) {
	tests := []struct {
		in    string
		want  string // canonical form; "" when refused
		slash bool   // EncodedSlash
		why   error  // the refusal, when want is ""
	}{
		// Accepted, unchanged.
		{in: "/", want: "/"},
		{in: "/api/chat.postMessage", want: "/api/chat.postMessage"},
		{in: "/api/x/", want: "/api/x/"},
		{in: "/files/report..pdf", want: "/files/report..pdf"},
		{in: "/.well-known/openid-configuration", want: "/.well-known/openid-configuration"},
		{in: "/v1/users:batchGet", want: "/v1/users:batchGet"},
		{in: "/a/b@c/!$&'()*+,=", want: "/a/b@c/!$&'()*+,="},
		{in: "/caf%C3%A9", want: "/caf%C3%A9"},
		{in: "/my%20file", want: "/my%20file"},
		{in: "/drive/root:/Documents/a.txt:/content", want: "/drive/root:/Documents/a.txt:/content"},
		// Accepted, made canonical.
		{in: "/%61pi/x", want: "/api/x"},
		{in: "/a%7Eb%2D%5F", want: "/a~b-_"},
		{in: "/caf%c3%a9", want: "/caf%C3%A9"},
		{in: "/a%3fb", want: "/a%3Fb"},
		{in: "/a{b}|c^d`e\"<>[]", want: "/a%7Bb%7D%7Cc%5Ed%60e%22%3C%3E%5B%5D"},
		{in: "/projects/grp%2fproj", want: "/projects/grp%2Fproj", slash: true},
		{in: "/projects/grp%2Fproj/files/a%2Fb.txt", want: "/projects/grp%2Fproj/files/a%2Fb.txt", slash: true},
		// Tomcat, Spring and Jetty read ";" parameters, and "..;" as "..".
		{in: "/api/..;/echo", why: errSemicolon},
		{in: "/api/..%3b/echo", why: errEncodedDelim},
		{in: "/api/%2e%2e;/echo", why: errEncodedDelim},
		{in: "/api;jsessionid=1/admin", why: errSemicolon},
		{in: "/api/.;x=y/echo", why: errSemicolon},
		// Encoded and double-encoded dots, slashes, backslashes.
		{in: "/api/%2e%2e/echo", why: errEncodedDelim},
		{in: "/api/%2E./echo", why: errEncodedDelim},
		{in: "/api/.%2e/echo", why: errEncodedDelim},
		{in: "/api/%252e%252e/echo", why: errEncodedDelim},
		{in: "/api/%25252e/echo", why: errEncodedDelim},
		{in: "/api%5c..%5cadmin", why: errEncodedDelim},
		{in: "/api/..%2fadmin", why: errDotSegment, slash: true},
		{in: "/api%2f..%2fadmin", why: errDotSegment, slash: true},
		{in: "/api%2F%2Fadmin", why: errEmptySegment, slash: true},
		// Overlong and invalid UTF-8, look-alikes.
		{in: "/api/..%c0%af/echo", why: errInvalidUTF8},
		{in: "/api/%c0%ae%c0%ae/echo", why: errInvalidUTF8},
		{in: "/api/%e0%80%ae/echo", why: errInvalidUTF8},
		{in: "/api/%ed%a0%80", why: errInvalidUTF8},
		{in: "/api/%ff", why: errInvalidUTF8},
		{in: "/api/%c3", why: errInvalidUTF8},
		{in: "/api/..%ef%bc%8fadmin", why: errLookalike},
		{in: "/api/%ef%bc%8e%ef%bc%8e/admin", why: errLookalike},
		{in: "/api/x%e2%88%95y", why: errLookalike},
		// NUL, controls, raw bytes, malformed escapes.
		{in: "/api/%00/x", why: errEncodedCtrl},
		{in: "/api/x%0d%0aSet-Cookie:a", why: errEncodedCtrl},
		{in: "/api/x%7f", why: errEncodedCtrl},
		{in: "/api/a b", why: errRawByte},
		{in: "/api/\x00", why: errRawByte},
		{in: "/api/caf\xc3\xa9", why: errRawByte},
		{in: "/api/%2", why: errBadEscape},
		{in: "/api/%zz", why: errBadEscape},
		{in: "/api/%u002e%u002e/x", why: errBadEscape},
		{in: "/api/%%32%65", why: errBadEscape},
		// Backslashes, dot and empty segments, fragments, relative paths.
		{in: `/api\..\admin`, why: errBackslash},
		{in: "/api/../admin", why: errDotSegment},
		{in: "/api/./x", why: errDotSegment},
		{in: "/..", why: errDotSegment},
		{in: "/api/..", why: errDotSegment},
		{in: "//api/x", why: errEmptySegment},
		{in: "/api//admin", why: errEmptySegment},
		{in: "/api/x#frag", why: errFragment},
		{in: "api/x", why: errNotAbsolute},
		{in: "", why: errNotAbsolute},
		{in: "*", why: errNotAbsolute},
	}
	for _, tt := range tests {
		got, err := CanonicalPath(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrAmbiguousPath) || (tt.why != nil && err != tt.why) {
				t.Errorf("CanonicalPath(%q) = %q, %v; want refused: %v", tt.in, got.Escaped, err, tt.why)
			}
			if err != nil && strings.Contains(err.Error(), tt.in) && tt.in != "" {
				t.Errorf("CanonicalPath(%q): the error quotes the path: %v", tt.in, err)
			}
			continue
		}
		if err != nil || got.Escaped != tt.want || got.EncodedSlash != tt.slash {
			t.Errorf("CanonicalPath(%q) = %q (slash %v), %v; want %q (slash %v)", tt.in, got.Escaped, got.EncodedSlash, err, tt.want, tt.slash)
			continue
		}
		if again, err := CanonicalPath(got.Escaped); err != nil || again.Escaped != got.Escaped {
			t.Errorf("CanonicalPath(%q) = %q, %v; want its own canonical form", got.Escaped, again.Escaped, err)
		}
	}
	if len(tests) < 30 {
		t.Errorf("%d variants; the rule deserves at least 30", len(tests))
	}
}

func TestCanonicalPathAllocs(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := CanonicalPath("/API/Chat.PostMessage/grp%2Fproj"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("CanonicalPath allocates %v times on a canonical path; want 0", allocs)
	}
}

func TestDecideEncodedSlash(t *testing.T) {
	tbl, err := NewTable([]RouteConfig{
		{Host: "gitlab.example.com", Provider: "gitlab", Paths: []string{"/api/v4/"}, AllowEncodedSlashes: true},
		{Host: "api.example.com", Provider: "ex"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, r, err := tbl.Decide("gitlab.example.com", 443, "/api/v4/projects/grp%2Fproj"); err != nil || r == nil {
		t.Errorf("GitLab project path: route %v, %v; want routed", r, err)
	}
	if _, _, err := tbl.Decide("api.example.com", 443, "/api/grp%2Fproj"); !errors.Is(err, errEncodedSlash) {
		t.Errorf("encoded slash on a route without allow_encoded_slashes: %v; want refused", err)
	}
	if _, r, err := tbl.Decide("api.example.com", 443, "/%61dmin"); err != nil || r == nil {
		t.Errorf("canonical routing: %v, %v", r, err)
	}
}

func TestRoutePathsCanonical(t *testing.T) {
	_, err := NewTable([]RouteConfig{
		{Host: "a.example.com", Provider: "p", Paths: []string{"/%61pi/", "/x;y", "/a%2e/", "/ok/"}},
	})
	if err == nil {
		t.Fatal("NewTable accepted route paths that are not canonical")
	}
	for _, want := range []string{`paths[0]: must be written in canonical form, "/api/" rather than "/%61pi/"`, "paths[1]", "paths[2]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "paths[3]") {
		t.Errorf("a canonical path was refused:\n%v", err)
	}
}

// fuzzTable is the route table the fuzz target decides on: path-limited
// routes side by side on one host, no catch-all, one route that allows
// encoded slashes.
func fuzzTable(tb testing.TB) *Table {
	tbl, err := NewTable([]RouteConfig{
		{Name: "api", Host: "h.test", Provider: "p", Paths: []string{"/api/", "/v1/users"}},
		{Name: "admin", Host: "h.test", Provider: "p", Paths: []string{"/admin"}},
		{Name: "public", Host: "h.test", Provider: "p", Paths: []string{"/public/docs"}},
		{Name: "gitlab", Host: "h.test", Provider: "p", Paths: []string{"/projects/"}, AllowEncodedSlashes: true},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return tbl
}

// referenceNormalize is how the most permissive server could read a path:
// percent-decoding repeated until nothing changes (double encoding),
// overlong UTF-8 and best-fit look-alikes taken for the ASCII character
// they imitate, backslashes as slashes, ";" parameters stripped from every
// segment, empty segments merged and dot segments resolved. It is
// deliberately simple and independent of CanonicalPath.
func referenceNormalize(p string) string {
	for range 8 {
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			break
		}
		p = d
	}
	p = strings.NewReplacer(
		"\xc0\xae", ".", "\xe0\x80\xae", ".", "\xc0\xaf", "/", "\xe0\x80\xaf", "/", "\xc1\x9c", "/",
		"\u2024", ".", "\u2025", "..", "\u2044", "/", "\u2215", "/", "\u2216", "/",
		"\ufe52", ".", "\uff0e", ".", "\uff0f", "/", "\uff3c", "/",
		`\`, "/",
	).Replace(p)
	segs := strings.Split(p, "/")
	for i, s := range segs {
		s, _, _ = strings.Cut(s, ";")
		segs[i] = s
	}
	trailing := strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
	p = path.Clean("/" + strings.Join(segs, "/"))
	if trailing && p != "/" {
		p += "/"
	}
	return p
}

// referenceRoute routes a normalised (decoded) path with the same prefix
// rule as Table.Match, over fuzzTable's routes.
func referenceRoute(p string) string {
	best, bestLen := "", -1
	for _, r := range []struct {
		name  string
		paths []string
	}{
		{"api", []string{"/api/", "/v1/users"}},
		{"admin", []string{"/admin"}},
		{"public", []string{"/public/docs"}},
		{"gitlab", []string{"/projects/"}},
	} {
		for _, prefix := range r.paths {
			if PathHasPrefix(p, prefix) && len(prefix) > bestLen {
				best, bestLen = r.name, len(prefix)
			}
		}
	}
	return best
}

// checkRouteDecision is the property FuzzRouteDecision checks: a path the
// sidecar accepts and routes is routed the same way however a server reads
// it, and its canonical form is stable.
func checkRouteDecision(t *testing.T, tbl *Table, p string) {
	canon, r, err := tbl.Decide("h.test", 443, p)
	if err != nil {
		if !errors.Is(err, ErrAmbiguousPath) {
			t.Fatalf("Decide(%q) = %v; want nil or ErrAmbiguousPath", p, err)
		}
		return
	}
	if again, err := CanonicalPath(canon.Escaped); err != nil || again != canon {
		t.Fatalf("CanonicalPath(%q) = %+v, %v; want the same canonical form back", canon.Escaped, again, err)
	}
	if dec, err := url.PathUnescape(canon.Escaped); err != nil || !utf8.ValidString(dec) {
		t.Fatalf("canonical form %q of %q does not decode to valid UTF-8", canon.Escaped, p)
	}
	if r == nil {
		return // no route: nothing is forwarded, whatever a server would read
	}
	if want := referenceRoute(referenceNormalize(p)); want != r.Name {
		t.Fatalf("Decide(%q) routes to %q (canonical %q); a server reading it as %q would need route %q", p, r.Name, canon.Escaped, referenceNormalize(p), want)
	}
}

func TestRouteDecisionMatchesReference(t *testing.T) {
	tbl := fuzzTable(t)
	alphabet := []string{"/", ".", "%", "2", "e", "f", "5", "c", "a", ";", "\\", "api", "admin", "%2e", "%2f", "%25", "%c0%af", "%ef%bc%8f", "%3b", "x"}
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		checkRouteDecision(t, tbl, prefix)
		if depth == 0 {
			return
		}
		for _, a := range alphabet {
			walk(prefix+a, depth-1)
		}
	}
	walk("/", 4)
	for _, p := range []string{"/api/..;/admin", "/public/docs/..%2f..%2fadmin", "/projects/a%2F..%2F..%2Fadmin", "/projects/a%2Fb", "/api/%61dmin"} {
		checkRouteDecision(t, tbl, p)
	}
}

// FuzzRouteDecision compares the route decision on any path with the
// reference normaliser (make fuzz runs it; seeds in testdata/fuzz).
func FuzzRouteDecision(f *testing.F) {
	for _, s := range []string{"/", "/api/x", "/api/..;/admin", "/api/%2e%2e/admin", "/api/%252e%252e/admin", "/api/..%c0%af/admin", "/projects/a%2Fb", "/public/docs/%2e./x"} {
		f.Add(s)
	}
	tbl := fuzzTable(f)
	f.Fuzz(func(t *testing.T, p string) {
		checkRouteDecision(t, tbl, p)
	})
}
