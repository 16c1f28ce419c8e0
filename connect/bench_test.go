package connect

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkSessionCookie measures reading and writing the sealed session
// cookie, which every page view does at least once.
func BenchmarkSessionCookie(b *testing.B) {
	c := newCookies(true, testSealer(b))
	now := time.Now()
	s := newSession(now, time.Hour)
	s.User, s.Via = "alice@example.com", viaOIDC
	s.addFlow(flow{StateHash: hashState("state"), Provider: "acme", User: s.User, Verifier: "v", Scopes: testScopes, Expiry: now.Add(time.Minute)})
	w := httptest.NewRecorder()
	if err := c.write(w, s, now); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.AddCookie(w.Result().Cookies()[0])
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got := c.read(req, now)
		if got == nil {
			b.Fatal("no session")
		}
		if err := c.write(httptest.NewRecorder(), got, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSafeReturnTo measures the return_to check.
func BenchmarkSafeReturnTo(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if safeReturnTo("/apps?from=chat") == "" || safeReturnTo("//evil.example/x") != "" {
			b.Fatal("safeReturnTo")
		}
	}
}
