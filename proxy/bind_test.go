package proxy

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

func TestBindTunnelRequest(t *testing.T) {
	tun := newTunnel("api.example.com", 443, "")
	tests := []struct {
		raw  string
		ok   bool
		path string
	}{
		{"GET /v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", true, "/v1/x"},
		{"GET /v1/x HTTP/1.1\r\nHost: API.Example.COM.\r\n\r\n", true, "/v1/x"},
		{"GET /v1/x HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n", true, "/v1/x"},
		{"GET https://api.example.com/v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", true, "/v1/x"},
		{"GET /v1/x HTTP/1.1\r\nHost: api.example.com:8443\r\n\r\n", false, ""},
		{"GET /v1/x HTTP/1.1\r\nHost: evil.example.com\r\n\r\n", false, ""},
		{"GET https://evil.example.com/v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", false, ""},
		{"GET http://api.example.com/v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", false, ""},
		{"GET /v1/../admin HTTP/1.1\r\nHost: api.example.com\r\n\r\n", false, ""},
		{"GET * HTTP/1.1\r\nHost: api.example.com\r\n\r\n", false, ""},
		{"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n", false, ""},
	}
	for _, tt := range tests {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tt.raw)))
		if err != nil {
			t.Fatalf("%q: %v", tt.raw, err)
		}
		path, e := bindTunnelRequest(tun, req)
		if ok := e == nil; ok != tt.ok || path != tt.path {
			t.Errorf("%q: got path %q, error %v; want ok=%v path %q", strings.SplitN(tt.raw, "\r\n", 2)[0], path, e, tt.ok, tt.path)
		}
	}
}

// FuzzBindTunnelRequest: whatever the request says, an accepted one targets
// exactly the tunnel's host and port with a clean path.
func FuzzBindTunnelRequest(f *testing.F) {
	f.Add("GET /v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	f.Add("GET https://api.example.com:443/v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	f.Add("GET //evil.example.com/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	f.Add("GET /a%2f..%2fb HTTP/1.1\r\nHost: api.example.com.\r\n\r\n")
	f.Add("OPTIONS * HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	// Sub-delimiters leave as they came, not re-escaped (%21, %2A).
	f.Add("GET /v1/a!b*c('d') HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	tun := newTunnel("api.example.com", 443, "")
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		path, e := bindTunnelRequest(tun, req)
		if e != nil {
			return
		}
		out := outboundRequest(new(exchange), req, tun)
		if out.URL.Host != "api.example.com" || out.Host != "api.example.com" || out.URL.Scheme != "https" {
			t.Fatalf("accepted request goes to %s://%s (Host %s)", out.URL.Scheme, out.URL.Host, out.Host)
		}
		if !strings.HasPrefix(path, "/") || strings.Contains(path, "/../") || strings.HasSuffix(path, "/..") {
			t.Fatalf("accepted path %q", path)
		}
		if got := out.URL.EscapedPath(); got != path {
			t.Fatalf("outbound path %q differs from the bound path %q", got, path)
		}
	})
}
