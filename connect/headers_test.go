package connect

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// inlineContent finds what the pages' CSP would block: a script element
// without src, a style element or attribute, an event handler attribute, a
// javascript: URL.
var inlineContent = regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]|<script>|<style|\sstyle=|\son[a-z]+=|javascript:`)

// TestSecurityHeaders checks the headers of every kind of response: no
// framing, no caching, no Referer, no script but the server's own file,
// and pages without inline script, style or event handlers.
func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	b.openConfirm(e, e.linkURL("alice"))
	for _, path := range []string{"/", "/connect/acme", "/connect/nope", "/callback", "/callback?state=x", "/api/apps",
		"/admin/api/grants", "/login", "/nothing-here", "/healthz"} {
		r := b.get(e.url + path)
		h := r.header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if !strings.Contains(csp, "script-src 'self';") || strings.Contains(csp, "unsafe-") || strings.Count(csp, "script-src") != 1 {
			t.Errorf("%s: CSP %q allows script from elsewhere than this origin, or inline content", path, csp)
		}
		if strings.HasPrefix(h.Get("Content-Type"), "text/html") && inlineContent.MatchString(r.body) {
			t.Errorf("%s: page has inline script, style or an event handler: %q", path, inlineContent.FindString(r.body))
		}
		for k, want := range map[string]string{
			"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s = %q; want %q", path, k, got, want)
			}
		}
	}
}

// TestCrossOriginRefused checks that state-changing requests from another
// site are refused before any handler runs.
func TestCrossOriginRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	_, action, fields := b.openConfirm(e, e.linkURL("alice"))
	for _, h := range []map[string]string{
		{"Origin": "https://evil.example"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Sec-Fetch-Site": "cross-site", "Origin": "null"},
		{"Sec-Fetch-Site": "same-origin-not", "Origin": e.url},
	} {
		req, _ := http.NewRequest(http.MethodPost, e.url+action, strings.NewReader(fields.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		if r := b.do(req); r.status != http.StatusForbidden {
			t.Errorf("confirm with %v: status %d; want 403", h, r.status)
		}
	}
	// What browsers send on their own form posts; with Referrer-Policy
	// no-referrer, Chromium sends Origin: null.
	for _, h := range []map[string]string{
		{"Sec-Fetch-Site": "same-origin", "Origin": "null"},
		{"Sec-Fetch-Site": "same-origin", "Origin": e.url},
		{"Origin": e.url},
	} {
		_, action, fields := b.openConfirm(e, e.linkURL("alice"))
		req, _ := http.NewRequest(http.MethodPost, e.url+action, strings.NewReader(fields.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		if r := b.do(req); r.status != http.StatusSeeOther {
			t.Errorf("same-origin confirm with %v: status %d; want 303", h, r.status)
		}
	}
}
