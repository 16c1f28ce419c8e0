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
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
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
	client, err := oauth.NewHTTPClient(srv.CertPool())
	if err != nil {
		panic(err)
	}
	acme, err := oauth.NewProvider("acme", cfg, "sidecar-secret-123", client)
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

// A provider based on a preset names the preset and its client
// credentials; Resolve fills in the rest, and Routes gives the hosts its
// token is injected for.
func ExampleProviderConfig_Resolve() {
	cfg := oauth.DefaultProviderConfig()
	cfg.Preset = "microsoft"
	cfg.Tenant = "contoso.onmicrosoft.com"
	cfg.ClientID = "11111111-2222-3333-4444-555555555555"
	cfg.ClientSecretFile = "/run/secrets/graph"
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	r, err := cfg.Resolve()
	if err != nil {
		panic(err)
	}
	fmt.Println(r.TokenURL)
	fmt.Println(r.Scopes, r.AuthStyle, *r.PKCE)
	for _, rt := range cfg.Routes("graph") {
		fmt.Println(rt.Provider, rt.Host)
	}
	// Output:
	// https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token
	// [offline_access User.Read] params true
	// graph graph.microsoft.com
}

// The connect flow sends the user to AuthCodeURL with a PKCE challenge and
// the preset's authorization parameters, then trades the code with
// Exchange and the verifier.
func ExampleProvider_AuthCodeURL() {
	cfg := oauth.DefaultProviderConfig()
	cfg.Preset = "google"
	cfg.ClientID = "1234.apps.googleusercontent.com"
	cfg.ClientSecretFile = "/run/secrets/google"
	p, err := oauth.NewProvider("google", cfg, "client-secret", nil)
	if err != nil {
		panic(err)
	}
	challenge := "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" // oauth2.S256ChallengeFromVerifier(verifier)
	fmt.Println(p.AuthCodeURL("state-0123456789", challenge, "https://connect.example/callback/google", nil, nil))
	// Output:
	// https://accounts.google.com/o/oauth2/v2/auth?access_type=offline&client_id=1234.apps.googleusercontent.com&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&prompt=consent&redirect_uri=https%3A%2F%2Fconnect.example%2Fcallback%2Fgoogle&response_type=code&scope=openid+email&state=state-0123456789
}
