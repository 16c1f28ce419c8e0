package injector

import (
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

func TestCleanPath(t *testing.T) {
	tests := map[string]bool{
		"/":                      true,
		"/api/chat.postMessage":  true,
		"/projects/grp%2Fproj":   true,
		"/a/./b":                 false,
		"/a/../b":                false,
		"/a/%2e%2E/b":            false,
		"/a%2f..%2fb":            false,
		"/a%5c..%5cb":            false,
		`/a\b`:                   false,
		"/a%00b":                 false,
		"relative":               false,
		"/a b":                   false,
		"/..":                    false,
		"/files/report..pdf":     true,
		"/.well-known/something": true,
	}
	for path, want := range tests {
		if got := CleanPath(path); got != want {
			t.Errorf("CleanPath(%q) = %v; want %v", path, got, want)
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
