package injector

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestTableMatch(t *testing.T) {
	tbl, err := NewTable([]RouteConfig{
		{Host: "API.Example.com.", Provider: "ex"},
		{Host: "api.example.com", Paths: []string{"/admin"}, Provider: "admin"},
		{Host: "*.atlassian.net", Provider: "jira"},
		{Host: "*.eu.atlassian.net", Provider: "jira-eu"},
		{Host: "files.example.com", Port: 8443, Paths: []string{"/v1/", "/v2"}, Provider: "files"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		port int
		path string
		want string // provider, "" for no route
	}{
		{"api.example.com", 443, "/x", "ex"},
		{"api.example.com", 443, "/admin", "admin"},
		{"api.example.com", 443, "/admin/users", "admin"},
		{"api.example.com", 443, "/administrator", "ex"},
		{"api.example.com", 80, "/x", ""},
		{"acme.atlassian.net", 443, "/rest", "jira"},
		{"acme.eu.atlassian.net", 443, "/rest", "jira-eu"},
		{"atlassian.net", 443, "/", ""},
		{"evilatlassian.net", 443, "/", ""},
		{"files.example.com", 8443, "/v1/a", "files"},
		{"files.example.com", 8443, "/v2", "files"},
		{"files.example.com", 8443, "/v3", ""},
		{"files.example.com", 443, "/v1/a", ""},
		{"other.example.com", 443, "/", ""},
	}
	for _, tt := range tests {
		got := ""
		if r := tbl.Match(tt.host, tt.port, tt.path); r != nil {
			got = r.Provider
		}
		if got != tt.want {
			t.Errorf("Match(%s, %d, %s) = %q; want %q", tt.host, tt.port, tt.path, got, tt.want)
		}
	}
	if !tbl.Intercepts("files.example.com", 8443) || tbl.Intercepts("files.example.com", 443) {
		t.Error("Intercepts does not follow the route's port")
	}
	if !tbl.HostRouted("files.example.com") || tbl.HostRouted("example.com") {
		t.Error("HostRouted wrong")
	}
}

func TestNewTableReportsEveryProblem(t *testing.T) {
	_, err := NewTable([]RouteConfig{
		{Host: "", Provider: "ok"},
		{Host: "a*.example.com", Provider: "ok"},
		{Host: "*.com", Provider: "ok"},
		{Host: "2130706434", Provider: "ok"},
		{Host: "good.example.com", Provider: "Bad Name"},
		{Host: "good.example.com", Provider: "ok", Port: 70000},
		{Host: "p.example.com", Provider: "ok", Paths: []string{"relative", "/a/../b", "/q?x"}},
		{Host: "h.example.com", Provider: "ok", Header: "Bad Header", Format: "no placeholder"},
		{Host: "dup.example.com", Provider: "ok"},
		{Host: "dup.example.com", Provider: "ok2"},
	})
	if err == nil {
		t.Fatal("NewTable: got nil error")
	}
	for _, want := range []string{
		"[0].host: required", "[1].host", "[2].host", "[3].host", "[4].provider", "[5].port",
		"[6].paths[0]", "[6].paths[1]", "[6].paths[2]", "[7].header", "[7].format", "[9].host: duplicates routes[8]",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestTokenStringRedacts(t *testing.T) {
	tok := Token{Value: "secret-value", Generation: 3}
	for _, s := range []string{tok.String(), tok.GoString()} {
		if strings.Contains(s, "secret-value") {
			t.Errorf("Token printed its value: %s", s)
		}
	}
}

func TestInject(t *testing.T) {
	tbl, err := NewTable([]RouteConfig{
		{Host: "bearer.example", Provider: "p"},
		{Host: "key.example", Provider: "p", Header: "X-Api-Key", Format: "key={token};", StripHeaders: []string{"X-Other"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	bearer, key := tbl.Match("bearer.example", 443, "/"), tbl.Match("key.example", 443, "/")
	tests := []struct {
		name  string
		route *Route
		token string
		want  map[string][]string
	}{
		{"bearer", bearer, "tok-1", map[string][]string{"Authorization": {"Bearer tok-1"}}},
		{"other header and format", key, "tok-1", map[string][]string{"X-Api-Key": {"key=tok-1;"}}},
		{"another token", bearer, "tok-2", map[string][]string{"Authorization": {"Bearer tok-2"}}},
	}
	for _, tt := range tests {
		h := http.Header{
			"Authorization": {"Bearer agent"}, "X-Api-Key": {"agent"}, "X-Other": {"agent"}, "Accept": {"*/*"},
		}
		tt.route.Inject(h, tt.token)
		for name, want := range tt.want {
			if got := h[name]; len(got) != 1 || got[0] != want[0] {
				t.Errorf("%s: %s = %q; want %q", tt.name, name, got, want)
			}
		}
		// The key route also strips Authorization and X-Other; the bearer
		// route leaves headers it does not know about.
		wantLen := 4
		if tt.route == key {
			wantLen = 2
		}
		if len(h) != wantLen || h.Get("Accept") != "*/*" {
			t.Errorf("%s: headers %v; want the credential replaced, the rest kept", tt.name, h)
		}
	}
	tok := Token{Value: "tok-secret", Generation: 3}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok)} {
		if strings.Contains(s, "tok-secret") {
			t.Errorf("Token printed its value: %s", s)
		}
	}
}
