package idptest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v3"
	josejwt "github.com/go-jose/go-jose/v3/jwt"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/rfc7523"
	"github.com/ory/fosite/storage"
	"go.uber.org/zap"
)

// Paths served by the app's authorization server.
const (
	PathASMetadata = "/.well-known/oauth-authorization-server"
	PathASToken    = "/token"
)

// DefaultAccessTokenTTL is the lifetime of access tokens the app's
// authorization server issues.
const DefaultAccessTokenTTL = time.Hour

// globalSecretLen is the size of fosite's HMAC key for access tokens.
const globalSecretLen = 32

// AppClient is a client registered at the app's authorization server.
type AppClient struct {
	ID     string
	Secret string
	// Scopes are the scopes the client may get.
	Scopes []string
}

// AppASOptions configure StartAppAS.
type AppASOptions struct {
	// IdP is the identity provider whose ID-JAGs are accepted; its keys
	// are fetched from its JWKS over TLS. Required.
	IdP     *IdP
	Clients []AppClient
	// AccessTokenTTL is the lifetime of issued access tokens; zero means
	// DefaultAccessTokenTTL.
	AccessTokenTTL time.Duration
	// Logger receives operational logs (never a token or secret); nil
	// discards them.
	Logger *zap.Logger
}

// AppASStats counts what clients did at the app's authorization server.
type AppASStats struct {
	// TokenRequests counts every request to the token endpoint.
	TokenRequests int64
	// Grants counts access tokens issued for ID-JAGs.
	Grants int64
	// Refusals counts token requests answered with an error.
	Refusals int64
	// JWKSFetches counts fetches of the IdP's keys.
	JWKSFetches int64
}

// AppAS is a running authorization server of an app that accepts ID-JAGs.
type AppAS struct {
	knobs
	http      *httpServer
	log       *zap.Logger
	idp       *IdP
	idpClient *http.Client
	provider  fosite.OAuth2Provider
	scopes    []string
	tokenMu   sync.Mutex
	noBearer  atomic.Bool

	keysMu sync.Mutex
	keys   jose.JSONWebKeySet

	stats struct {
		tokenRequests, grants, refusals, jwks atomic.Int64
	}
}

// StartAppAS starts an app's authorization server on a loopback port.
func StartAppAS(o AppASOptions) (*AppAS, error) {
	if o.IdP == nil {
		return nil, fmt.Errorf("start app as: an IdP is required")
	}
	a := &AppAS{log: o.Logger, idp: o.IdP}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	// The IdP's keys are fetched like any relying party would: over TLS,
	// trusting the IdP's CA.
	a.idpClient = &http.Client{
		Timeout:       readTimeout,
		Transport:     &http.Transport{Proxy: nil, TLSClientConfig: o.IdP.Client().Transport.(*http.Transport).TLSClientConfig.Clone()},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	store := &asStorage{MemoryStore: storage.NewMemoryStore(), as: a}
	for _, c := range o.Clients {
		if c.ID == "" || len(c.Secret) < minSecretLen {
			return nil, fmt.Errorf("start app as: client %q: id and a secret of at least %d characters are required", c.ID, minSecretLen)
		}
		store.Clients[c.ID] = &fosite.DefaultClient{
			ID: c.ID, Secret: hashSecret(c.Secret), GrantTypes: []string{GrantJWTBearer}, Scopes: slices.Clone(c.Scopes),
		}
		for _, s := range c.Scopes {
			if !slices.Contains(a.scopes, s) {
				a.scopes = append(a.scopes, s)
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc(PathASToken, a.handleToken)
	mux.HandleFunc(PathASMetadata, a.handleMetadata)
	srv, err := startHTTPS("onbehalf idptest app AS CA", mux, a.log)
	if err != nil {
		return nil, fmt.Errorf("start app as: %w", err)
	}
	a.http = srv
	secret := make([]byte, globalSecretLen)
	if _, err := rand.Read(secret); err != nil {
		srv.close()
		return nil, err
	}
	ttl := o.AccessTokenTTL
	if ttl == 0 {
		ttl = DefaultAccessTokenTTL
	}
	cfg := &fosite.Config{
		AccessTokenLifespan:      ttl,
		GlobalSecret:             secret,
		TokenURL:                 srv.url + PathASToken,
		ClientSecretsHasher:      secretHasher{},
		ScopeStrategy:            fosite.ExactScopeStrategy,
		AudienceMatchingStrategy: fosite.DefaultAudienceMatchingStrategy,
	}
	strategy := compose.NewOAuth2HMACStrategy(cfg)
	a.provider = compose.Compose(cfg, store, strategy,
		compose.OAuth2TokenIntrospectionFactory,
		func(fosite.Configurator, any, any) any {
			return &jagHandler{as: a, inner: &rfc7523.Handler{
				Storage: store,
				Config:  asConfig{Config: cfg, issuer: srv.url},
				HandleHelper: &oauth2.HandleHelper{
					AccessTokenStrategy: strategy, AccessTokenStorage: store, Config: cfg,
				},
			}}
		},
	)
	a.log.Info("app authorization server started", zap.String("issuer", srv.url))
	return a, nil
}

// Issuer returns the issuer identifier (the server's URL): the audience of
// ID-JAGs for this app.
func (a *AppAS) Issuer() string { return a.http.url }

// TokenURL returns the token endpoint.
func (a *AppAS) TokenURL() string { return a.http.url + PathASToken }

// CACertPEM returns the CA certificate clients must trust.
func (a *AppAS) CACertPEM() []byte { return slices.Clone(a.http.caPEM) }

// Client returns an HTTP client trusting the server.
func (a *AppAS) Client() *http.Client { return a.http.client }

// Close stops the server.
func (a *AppAS) Close() {
	a.http.close()
	a.idpClient.CloseIdleConnections()
}

// SetJWTBearer turns JWT bearer grants off (an app that does not support
// exchange answers unsupported_grant_type) or on again.
func (a *AppAS) SetJWTBearer(on bool) { a.noBearer.Store(!on) }

// Stats returns the counters.
func (a *AppAS) Stats() AppASStats {
	return AppASStats{
		TokenRequests: a.stats.tokenRequests.Load(),
		Grants:        a.stats.grants.Load(),
		Refusals:      a.stats.refusals.Load(),
		JWKSFetches:   a.stats.jwks.Load(),
	}
}

// Introspect checks an access token as the app's API would: it reports
// the user it was issued for, its scopes and client, and whether it is
// active.
func (a *AppAS) Introspect(ctx context.Context, token string) (user string, scopes []string, client string, active bool) {
	a.tokenMu.Lock()
	defer a.tokenMu.Unlock()
	_, ar, err := a.provider.IntrospectToken(ctx, token, fosite.AccessToken, &fosite.DefaultSession{})
	if err != nil {
		return "", nil, "", false
	}
	return ar.GetSession().GetSubject(), slices.Clone([]string(ar.GetGrantedScopes())), ar.GetClient().GetID(), true
}

func (a *AppAS) handleMetadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                a.Issuer(),
		"token_endpoint":                        a.TokenURL(),
		"grant_types_supported":                 []string{GrantJWTBearer},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"scopes_supported":                      a.scopes,
	})
}

func (a *AppAS) handleToken(w http.ResponseWriter, r *http.Request) {
	a.stats.tokenRequests.Add(1)
	if !a.before(w, r) {
		return
	}
	ctx := r.Context()
	a.tokenMu.Lock()
	ar, err := a.provider.NewAccessRequest(ctx, r, &fosite.DefaultSession{})
	var resp fosite.AccessResponder
	if err == nil {
		resp, err = a.provider.NewAccessResponse(ctx, ar)
	}
	a.tokenMu.Unlock()
	if err != nil {
		a.stats.refusals.Add(1)
		rfc := fosite.ErrorToRFC6749Error(err)
		a.log.Info("jwt bearer grant refused", zap.String("error", rfc.ErrorField), zap.String("hint", rfc.HintField))
		a.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	a.stats.grants.Add(1)
	a.log.Info("access token issued", zap.String("client", ar.GetClient().GetID()), zap.String("user", ar.GetSession().GetSubject()))
	a.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// jagHandler adds what the ID-JAG draft requires of the app's
// authorization server to fosite's RFC 7523 handler, which verifies the
// signature (with the IdP's keys), iss, sub, aud (this server), exp, iat
// and single use of the jti: the typ must be oauth-id-jag+jwt, the
// client_id claim must name the authenticated client, and the requested
// scopes must be within the grant's.
type jagHandler struct {
	as    *AppAS
	inner *rfc7523.Handler
}

var _ fosite.TokenEndpointHandler = (*jagHandler)(nil)

func (h *jagHandler) CanHandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) bool {
	return h.inner.CanHandleTokenEndpointRequest(ctx, ar)
}

// CanSkipClientAuth is false: the ID-JAG names the client that must
// present it.
func (h *jagHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool { return false }

func (h *jagHandler) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
	if h.as.noBearer.Load() {
		return rfcError("unsupported_grant_type", 400, "This server does not accept JWT bearer grants.")
	}
	tok, err := josejwt.ParseSigned(ar.GetRequestForm().Get("assertion"))
	if err != nil || len(tok.Headers) != 1 {
		return fosite.ErrInvalidGrant.WithHint("The assertion is not a signed JWT.")
	}
	typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string)
	if !strings.EqualFold(strings.TrimPrefix(typ, "application/"), TypeIDJAG) {
		return fosite.ErrInvalidGrant.WithHint("The assertion is not an ID-JAG (typ oauth-id-jag+jwt).")
	}
	var c struct {
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return fosite.ErrInvalidGrant.WithHint("The assertion's claims cannot be read.")
	}
	if c.ClientID == "" || c.ClientID != ar.GetClient().GetID() {
		return fosite.ErrInvalidGrant.WithHint("The ID-JAG was issued for another client.")
	}
	granted := strings.Fields(c.Scope)
	for _, s := range ar.GetRequestedScopes() {
		if !slices.Contains(granted, s) || !slices.Contains(ar.GetClient().GetScopes(), s) {
			return fosite.ErrInvalidScope.WithHintf("Scope %q is not within the grant.", s)
		}
	}
	return h.inner.HandleTokenEndpointRequest(ctx, ar)
}

func (h *jagHandler) PopulateTokenEndpointResponse(ctx context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	return h.inner.PopulateTokenEndpointResponse(ctx, ar, resp)
}

// asConfig makes fosite's RFC 7523 handler accept this server's issuer
// identifier as the assertion's audience (the ID-JAG's aud), besides its
// token URL.
type asConfig struct {
	*fosite.Config
	issuer string
}

func (c asConfig) GetTokenURLs(ctx context.Context) []string {
	return []string{c.issuer, c.Config.TokenURL}
}

// asStorage is fosite's memory store with the RFC 7523 key lookups
// answered from the IdP's published keys, for any subject.
type asStorage struct {
	*storage.MemoryStore
	as *AppAS
}

var _ rfc7523.RFC7523KeyStorage = (*asStorage)(nil)

func (s *asStorage) GetPublicKey(ctx context.Context, issuer, _ string, kid string) (*jose.JSONWebKey, error) {
	if issuer != s.as.idp.Issuer() {
		return nil, fosite.ErrNotFound
	}
	return s.as.idpKey(ctx, kid)
}

func (s *asStorage) GetPublicKeys(ctx context.Context, issuer, _ string) (*jose.JSONWebKeySet, error) {
	if issuer != s.as.idp.Issuer() {
		return nil, fosite.ErrNotFound
	}
	if err := s.as.fetchKeys(ctx); err != nil {
		return nil, err
	}
	s.as.keysMu.Lock()
	defer s.as.keysMu.Unlock()
	set := jose.JSONWebKeySet{Keys: slices.Clone(s.as.keys.Keys)}
	return &set, nil
}

func (s *asStorage) GetPublicKeyScopes(_ context.Context, issuer, _, _ string) ([]string, error) {
	if issuer != s.as.idp.Issuer() {
		return nil, fosite.ErrNotFound
	}
	return slices.Clone(s.as.scopes), nil
}

// idpKey returns the IdP's key kid, fetching the JWKS again when it is
// not known.
func (a *AppAS) idpKey(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	for attempt := 0; attempt < 2; attempt++ {
		a.keysMu.Lock()
		keys := a.keys.Key(kid)
		a.keysMu.Unlock()
		if len(keys) == 1 {
			k := keys[0]
			return &k, nil
		}
		if attempt == 0 {
			if err := a.fetchKeys(ctx); err != nil {
				return nil, err
			}
		}
	}
	return nil, fosite.ErrNotFound
}

func (a *AppAS) fetchKeys(ctx context.Context) error {
	a.stats.jwks.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.idp.JWKSURL(), nil)
	if err != nil {
		return err
	}
	resp, err := a.idpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("idp jwks: status %d", resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxFormBytes)).Decode(&set); err != nil {
		return fmt.Errorf("idp jwks: %w", err)
	}
	a.keysMu.Lock()
	a.keys = set
	a.keysMu.Unlock()
	return nil
}
