package connect

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/openid"
	fositestorage "github.com/ory/fosite/storage"
	"github.com/ory/fosite/token/jwt"
)

// testIDP is an OpenID Connect identity provider for tests, built on
// github.com/ory/fosite: discovery, JWKS, an authorization endpoint that
// signs in whoever SetUser names (the person already signed in at the
// company IdP) without a page, and a token endpoint issuing RS256 ID
// tokens with the request's nonce. PKCE S256 is enforced for the
// authorization code.
type testIDP struct {
	srv      *httptest.Server
	key      *rsa.PrivateKey
	clientID string
	secret   string

	mu       sync.Mutex // serialises fosite, whose config fills defaults lazily
	provider fosite.OAuth2Provider
	user     string
	email    string
	verified bool
}

const idpKeyID = "idp-key-1"

// newTestIDP starts an identity provider whose client redirects to
// http://127.0.0.1/login/callback (any port).
func newTestIDP(t *testing.T) *testIDP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	i := &testIDP{key: key, clientID: "connect-web", secret: "idp-client-secret-0123456789", verified: true}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.discovery)
	mux.HandleFunc("GET /jwks", i.jwks)
	mux.HandleFunc("/authorize", i.authorize)
	mux.HandleFunc("POST /token", i.token)
	i.srv = httptest.NewTLSServer(mux)
	t.Cleanup(i.srv.Close)

	cfg := &fosite.Config{
		AccessTokenLifespan:        time.Hour,
		AuthorizeCodeLifespan:      10 * time.Minute,
		IDTokenLifespan:            time.Hour,
		IDTokenIssuer:              i.srv.URL,
		GlobalSecret:               []byte("idp-global-secret-0123456789-abcdef"),
		TokenURL:                   i.srv.URL + "/token",
		HashCost:                   4,
		ScopeStrategy:              fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:   fosite.DefaultAudienceMatchingStrategy,
		EnforcePKCE:                true,
		SendDebugMessagesToClients: false,
	}
	cfg.ClientSecretsHasher = &fosite.BCrypt{Config: cfg}
	hash, err := cfg.ClientSecretsHasher.Hash(context.Background(), []byte(i.secret))
	if err != nil {
		t.Fatal(err)
	}
	st := fositestorage.NewMemoryStore()
	st.Clients[i.clientID] = &fosite.DefaultClient{
		ID:            i.clientID,
		Secret:        hash,
		RedirectURIs:  []string{"http://127.0.0.1/login/callback"},
		GrantTypes:    []string{"authorization_code"},
		ResponseTypes: []string{"code"},
		Scopes:        []string{"openid", "profile", "email"},
	}
	i.provider = compose.ComposeAllEnabled(cfg, st, key)
	return i
}

// issuer returns the issuer URL.
func (i *testIDP) issuer() string { return i.srv.URL }

// setUser sets who is signed in at the IdP.
func (i *testIDP) setUser(user, email string, verified bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.user, i.email, i.verified = user, email, verified
}

func (i *testIDP) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.srv.URL,
		"authorization_endpoint":                i.srv.URL + "/authorize",
		"token_endpoint":                        i.srv.URL + "/token",
		"jwks_uri":                              i.srv.URL + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
	})
}

func (i *testIDP) jwks(w http.ResponseWriter, _ *http.Request) {
	pub := i.key.PublicKey
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": idpKeyID,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

func (i *testIDP) authorize(w http.ResponseWriter, r *http.Request) {
	i.mu.Lock()
	defer i.mu.Unlock()
	ctx := r.Context()
	ar, err := i.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		i.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	for _, s := range ar.GetRequestedScopes() {
		ar.GrantScope(s)
	}
	now := time.Now().UTC()
	sess := &openid.DefaultSession{
		Claims: &jwt.IDTokenClaims{
			Subject: i.user, AuthTime: now, RequestedAt: now,
			Extra: map[string]any{"email": i.email, "email_verified": i.verified},
		},
		Headers: &jwt.Headers{Extra: map[string]any{"kid": idpKeyID}},
		Subject: i.user,
	}
	resp, err := i.provider.NewAuthorizeResponse(ctx, ar, sess)
	if err != nil {
		i.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	i.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

func (i *testIDP) token(w http.ResponseWriter, r *http.Request) {
	i.mu.Lock()
	defer i.mu.Unlock()
	ctx := r.Context()
	ar, err := i.provider.NewAccessRequest(ctx, r, openid.NewDefaultSession())
	if err != nil {
		i.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	resp, err := i.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		i.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	i.provider.WriteAccessResponse(ctx, w, ar, resp)
}
