package oauth_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/oauthtest"
)

// A sidecar builds one Provider per configured provider, one Source over the
// grant store, and puts the token cache in front of it. A grant whose access
// token has expired is refreshed on first use and persisted with the next
// generation.
func Example() {
	srv, err := oauthtest.Start(oauthtest.Options{Clients: []oauthtest.Client{{
		ID: "sidecar", Secret: "sidecar-secret-123", RedirectURIs: []string{"http://127.0.0.1/cb"}, Scopes: []string{"read"},
	}}})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	dir, err := os.MkdirTemp("", "oauth-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.OpenEmbedded(store.EmbeddedConfig{
		Path: filepath.Join(dir, "grants.db"), KeyFile: filepath.Join(dir, "grants.key"), LockTimeout: store.DefaultLockTimeout,
	})
	if err != nil {
		panic(err)
	}
	defer st.Close()

	// The connect flow stored alice's grant; its access token has expired.
	tok, err := srv.IssueGrant("sidecar", "alice", []string{"read"})
	if err != nil {
		panic(err)
	}
	_, err = st.Put(context.Background(), &store.Grant{
		Provider: "acme", User: "alice", AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		Expiry: time.Now().Add(-time.Minute), Status: store.StatusActive, Generation: 1,
	}, 0)
	if err != nil {
		panic(err)
	}

	cfg := oauth.DefaultProviderConfig()
	cfg.TokenURL = srv.TokenURL()
	cfg.ClientID = "sidecar"
	cfg.ClientSecretFile = "/run/secrets/acme" // read with oauth.ReadSecretFile at start
	cfg.AuthStyle = oauth.AuthStyleHeader
	acme, err := oauth.NewProvider("acme", cfg, "sidecar-secret-123", oauth.NewHTTPClient(srv.CertPool()))
	if err != nil {
		panic(err)
	}
	defer acme.CloseIdleConnections()

	src := oauth.NewSource(st, map[string]*oauth.Provider{"acme": acme}, oauth.Options{
		OnRefresh: func(ev oauth.RefreshEvent) {
			fmt.Printf("refresh %s/%s: %s, rotated %v, generation %d\n", ev.Provider, ev.User, ev.Outcome, ev.Rotated, ev.Generation)
		},
	})
	tokens := injector.NewCachedSource(src, injector.DefaultCacheConfig(), nil)

	t, err := tokens.Token(context.Background(), "acme", "alice")
	if err != nil {
		panic(err)
	}
	_, _, active := srv.Introspect(t.Value)
	fmt.Printf("token generation %d, active %v\n", t.Generation, active)
	_ = src.Drain(context.Background())
	// Output:
	// refresh acme/alice: refreshed, rotated true, generation 2
	// token generation 2, active true
}
