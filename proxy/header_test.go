package proxy

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector"
)

func TestSanitizeRequest(t *testing.T) {
	h := http.Header{
		"Connection":          {"keep-alive, X-Secret-Hop"},
		"X-Secret-Hop":        {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Authorization": {"Bearer a"},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Anything":      {"x"},
		"Onbehalf-Assertion":  {"jwt"},
		"onbehalf-assertion":  {"jwt-noncanonical"},
		"Te":                  {"trailers"},
		"Upgrade":             {"websocket"},
		"Authorization":       {"Bearer agent"},
		"Content-Type":        {"application/json"},
	}
	sanitizeRequest(h, "Onbehalf-Assertion")
	want := http.Header{
		"Authorization": {"Bearer agent"},
		"Content-Type":  {"application/json"},
	}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("sanitizeRequest (-want +got):\n%s", diff)
	}
}

func TestRouteInjectReplaces(t *testing.T) {
	tbl, err := injector.NewTable([]injector.RouteConfig{
		{Host: "api.example.com", Provider: "ex"},
		{Host: "key.example.com", Provider: "key", Header: "X-Api-Key", Format: "{token}", StripHeaders: []string{"X-Other-Key"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {"Bearer agent-1", "Basic agent-2"}}
	tbl.Match("api.example.com", 443, "/").Inject(h, "real")
	if got := h.Values("Authorization"); len(got) != 1 || got[0] != "Bearer real" {
		t.Errorf("Authorization = %q; want exactly [Bearer real]", got)
	}
	h = http.Header{"Authorization": {"Bearer agent"}, "X-Api-Key": {"agent"}, "X-Other-Key": {"agent"}}
	tbl.Match("key.example.com", 443, "/").Inject(h, "real")
	want := http.Header{"X-Api-Key": {"real"}}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("custom header injection (-want +got):\n%s", diff)
	}
}

func FuzzSanitizeRequest(f *testing.F) {
	f.Add("Connection", "Authorization, X-A", "X-A", "1")
	f.Add("Proxy-Authorization", "Bearer x", "onbehalf-assertion", "y")
	f.Add("Connection", "proxy-foo,,  ,te", "PROXY-FOO", "z")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		h := http.Header{}
		h[k1] = []string{v1}
		h.Add(k2, v2)
		h.Set("Onbehalf-Assertion", "secret")
		var named []string
		for _, v := range h.Values("Connection") {
			for n := range strings.SplitSeq(v, ",") {
				if n = strings.TrimSpace(n); n != "" {
					named = append(named, n)
				}
			}
		}
		sanitizeRequest(h, "Onbehalf-Assertion")
		tbl, _ := injector.NewTable([]injector.RouteConfig{{Host: "a.example", Provider: "p"}})
		tbl.Match("a.example", 443, "/").Inject(h, "tok")
		for name, vs := range h {
			lower := strings.ToLower(name)
			if strings.HasPrefix(lower, "proxy-") || lower == "onbehalf-assertion" || lower == "connection" {
				t.Fatalf("header %q survived sanitizing", name)
			}
			for _, n := range named {
				if strings.EqualFold(n, name) && lower != "authorization" {
					t.Fatalf("header %q named in Connection survived", name)
				}
			}
			if lower == "authorization" && (len(vs) != 1 || vs[0] != "Bearer tok") {
				t.Fatalf("Authorization = %q; want only the injected credential", vs)
			}
		}
		if h.Get("Authorization") != "Bearer tok" {
			t.Fatal("injected credential missing")
		}
	})
}

func TestLookalikeHeader(t *testing.T) {
	tests := []struct {
		name string
		want string // "" for none
	}{
		{"Transfer_Encoding", "Transfer-Encoding"},
		{"TRANSFER_ENCODING", "Transfer-Encoding"},
		{"Content_Length", "Content-Length"},
		{"Keep_Alive", "Keep-Alive"},
		{"Proxy_Authorization", "a Proxy-* header"},
		{"proxy_x", "a Proxy-* header"},
		{"Onbehalf_Assertion", "Onbehalf-Assertion"},
		{"X_Api_Key", "X-Api-Key"},
		{"X_Custom_Header", ""},
		{"Transfer-Encoding_", ""},
		{"Content-Length", ""},
		{"Host_", ""},
	}
	for _, tt := range tests {
		h := http.Header{tt.name: {"v"}}
		got, ok := lookalikeHeader(h, []string{"Onbehalf-Assertion"}, []string{"Authorization", "X-Api-Key"})
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("lookalikeHeader(%q) = %q, %v; want %q", tt.name, got, ok, tt.want)
		}
	}
}

func TestNarrowAcceptEncoding(t *testing.T) {
	tests := []struct {
		in   []string
		rng  bool
		want []string // nil: header removed
	}{
		{[]string{"gzip"}, false, []string{"gzip"}},
		{[]string{"gzip, deflate, br, zstd"}, false, []string{"gzip, deflate, br"}},
		{[]string{"zstd;q=1.0, GZIP;q=0.5", "*;q=0.1"}, false, []string{"GZIP;q=0.5"}},
		{[]string{"zstd"}, false, nil},
		{[]string{"gzip"}, true, []string{"identity"}},
	}
	for _, tt := range tests {
		h := http.Header{"Accept-Encoding": tt.in}
		if tt.rng {
			h.Set("Range", "bytes=0-9")
		}
		narrowAcceptEncoding(h)
		if got := h["Accept-Encoding"]; !slices.Equal(got, tt.want) {
			t.Errorf("narrowAcceptEncoding(%q, range %v) = %q; want %q", tt.in, tt.rng, got, tt.want)
		}
	}
	h := http.Header{"Accept-Encoding": {"gzip, deflate, br"}}
	if allocs := testing.AllocsPerRun(100, func() { narrowAcceptEncoding(h) }); allocs != 0 {
		t.Errorf("narrowAcceptEncoding allocates %v times on a list it keeps; want 0", allocs)
	}
}
