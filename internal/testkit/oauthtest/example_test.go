package oauthtest_test

import (
	"fmt"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
)

// A test starts a server, mints a grant for a user and later checks that the
// access token an upstream received is a live one.
func Example() {
	s, err := oauthtest.Start(oauthtest.Options{
		Clients: []oauthtest.Client{{
			ID:           "slack-app",
			Secret:       "app-secret-123",
			RedirectURIs: []string{"http://127.0.0.1/callback"},
			Scopes:       []string{"chat:write"},
		}},
	})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	tok, err := s.IssueGrant("slack-app", "alice", []string{"chat:write"})
	if err != nil {
		panic(err)
	}
	user, scopes, active := s.Introspect(tok.AccessToken)
	fmt.Println(user, scopes, active)

	s.RevokeUser("alice")
	_, _, active = s.Introspect(tok.AccessToken)
	fmt.Println(active)
	// Output:
	// alice [chat:write] true
	// false
}
