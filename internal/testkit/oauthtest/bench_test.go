package oauthtest

import (
	"context"
	"fmt"
	"testing"

	"golang.org/x/oauth2"
)

// BenchmarkRefresh measures one refresh_token grant over TLS with a
// keep-alive connection, the operation sidecars hammer in the load tests.
func BenchmarkRefresh(b *testing.B) {
	s := newServer(b, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(b, s, confID, "alice")
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, s.Client())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		next, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		if err != nil {
			b.Fatal(err)
		}
		tok = next
	}
}

// BenchmarkIntrospect measures the check a fake upstream makes per request.
func BenchmarkIntrospect(b *testing.B) {
	s := newServer(b, testOptions())
	tok := issue(b, s, confID, "alice")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, active := s.Introspect(tok.AccessToken); !active {
			b.Fatal("inactive")
		}
	}
}

// BenchmarkIssueGrant measures minting a grant in process.
func BenchmarkIssueGrant(b *testing.B) {
	s := newServer(b, testOptions())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := s.IssueGrant(confID, fmt.Sprintf("user%d", i), []string{"read"}); err != nil {
			b.Fatal(err)
		}
	}
}
