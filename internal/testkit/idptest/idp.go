package idptest

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/storage"
	"github.com/ory/fosite/token/jwt"
	"go.uber.org/zap"
)

// Paths served by the IdP.
const (
	PathDiscovery = "/.well-known/openid-configuration"
	PathJWKS      = "/jwks"
	PathToken     = "/token"
)

// Defaults of the IdP.
const (
	// DefaultTokenTTL is the lifetime of minted ID and access tokens: an
	// hour, as at Google, Okta and Entra ID.
	DefaultTokenTTL = time.Hour
	// DefaultJAGTTL is the lifetime of an issued ID-JAG: the draft expects
	// a short-lived grant, used once, right away.
	DefaultJAGTTL = 5 * time.Minute
	// rsaBits is the size of the IdP's RS256 keys.
	rsaBits = 2048
)

// Client is a client registered at the IdP that may exchange tokens.
type Client struct {
	ID     string
	Secret string
	// Apps maps each app's authorization server this client may get
	// ID-JAGs for (the exchange's audience) to the client's client_id at
	// that server (the ID-JAG's client_id claim). Other audiences are
	// refused with invalid_target.
	Apps map[string]string
}

// IdPOptions configure StartIdP. The zero value is valid but has no
// clients.
type IdPOptions struct {
	Clients []Client
	// JAGTTL is the ID-JAG lifetime; zero means DefaultJAGTTL.
	JAGTTL time.Duration
	// Logger receives operational logs (never a token or secret); nil
	// discards them.
	Logger *zap.Logger
}

// IdPStats counts what clients did at the IdP.
type IdPStats struct {
	// TokenRequests counts every request to the token endpoint.
	TokenRequests int64
	// Exchanges counts ID-JAGs issued.
	Exchanges int64
	// Refusals counts token requests answered with an error by fosite or
	// the exchange handler (injected failures not included).
	Refusals int64
	// DiscoveryRequests and JWKSRequests count metadata and key fetches.
	DiscoveryRequests, JWKSRequests int64
}

// IdP is a running identity provider.
type IdP struct {
	knobs
	http     *httpServer
	log      *zap.Logger
	provider fosite.OAuth2Provider
	jagTTL   time.Duration

	clientsMu sync.Mutex
	clients   map[string]Client
	// tokenMu serialises the token endpoint: fosite's MemoryStore hands
	// out the requests it stores, which fosite then mutates.
	tokenMu sync.Mutex

	keysMu    sync.RWMutex
	keys      []*jose.JSONWebKey // published, private
	signerKID string

	deniedMu sync.Mutex
	denied   map[string]bool // users the IdP's policy refuses exchanges for

	stats struct {
		tokenRequests, exchanges, refusals, discovery, jwks atomic.Int64
	}
}

// StartIdP starts an IdP on a loopback port with one RS256 signing key.
func StartIdP(o IdPOptions) (*IdP, error) {
	p := &IdP{
		log:     o.Logger,
		jagTTL:  o.JAGTTL,
		clients: make(map[string]Client, len(o.Clients)),
		denied:  make(map[string]bool),
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	if p.jagTTL == 0 {
		p.jagTTL = DefaultJAGTTL
	}
	if _, err := p.RotateKey(); err != nil {
		return nil, fmt.Errorf("start idp: %w", err)
	}
	store := storage.NewMemoryStore()
	for _, c := range o.Clients {
		if c.ID == "" || len(c.Secret) < minSecretLen {
			return nil, fmt.Errorf("start idp: client %q: id and a secret of at least %d characters are required", c.ID, minSecretLen)
		}
		c.Apps = maps.Clone(c.Apps)
		p.clients[c.ID] = c
		store.Clients[c.ID] = &fosite.DefaultClient{
			ID: c.ID, Secret: hashSecret(c.Secret), GrantTypes: []string{GrantTokenExchange},
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc(PathDiscovery, p.handleDiscovery)
	mux.HandleFunc(PathJWKS, p.handleJWKS)
	mux.HandleFunc(PathToken, p.handleToken)
	srv, err := startHTTPS("onbehalf idptest IdP CA", mux, p.log)
	if err != nil {
		return nil, fmt.Errorf("start idp: %w", err)
	}
	p.http = srv
	cfg := &fosite.Config{
		TokenURL:                 srv.url + PathToken,
		ClientSecretsHasher:      secretHasher{},
		ScopeStrategy:            fosite.ExactScopeStrategy,
		AudienceMatchingStrategy: fosite.DefaultAudienceMatchingStrategy,
	}
	p.provider = compose.Compose(cfg, store, nil, func(fosite.Configurator, any, any) any {
		return &exchangeHandler{idp: p}
	})
	p.log.Info("idp started", zap.String("issuer", srv.url))
	return p, nil
}

// Issuer returns the issuer identifier (the server's URL).
func (p *IdP) Issuer() string { return p.http.url }

// TokenURL returns the token endpoint.
func (p *IdP) TokenURL() string { return p.http.url + PathToken }

// JWKSURL returns the key set's URL.
func (p *IdP) JWKSURL() string { return p.http.url + PathJWKS }

// CACertPEM returns the CA certificate clients must trust.
func (p *IdP) CACertPEM() []byte { return slices.Clone(p.http.caPEM) }

// Client returns an HTTP client trusting the IdP, without proxy or
// redirects.
func (p *IdP) Client() *http.Client { return p.http.client }

// Close stops the server.
func (p *IdP) Close() { p.http.close() }

// Stats returns the counters.
func (p *IdP) Stats() IdPStats {
	return IdPStats{
		TokenRequests:     p.stats.tokenRequests.Load(),
		Exchanges:         p.stats.exchanges.Load(),
		Refusals:          p.stats.refusals.Load(),
		DiscoveryRequests: p.stats.discovery.Load(),
		JWKSRequests:      p.stats.jwks.Load(),
	}
}

// AllowApp lets client get ID-JAGs for the app whose authorization server
// is audience, where the client is known as appClientID. Apps are usually
// started after the IdP (they need its keys), hence this method.
func (p *IdP) AllowApp(client, audience, appClientID string) error {
	p.clientsMu.Lock()
	defer p.clientsMu.Unlock()
	c, ok := p.clients[client]
	if !ok {
		return fmt.Errorf("allow app: unknown client %q", client)
	}
	if c.Apps == nil {
		c.Apps = map[string]string{}
	}
	c.Apps[audience] = appClientID
	p.clients[client] = c
	return nil
}

// appClient returns client's client_id at the app audience.
func (p *IdP) appClient(client, audience string) (string, bool) {
	p.clientsMu.Lock()
	defer p.clientsMu.Unlock()
	id, ok := p.clients[client].Apps[audience]
	return id, ok
}

// Deny makes the IdP's policy refuse (access_denied) exchanges of user's
// tokens, or allow them again.
func (p *IdP) Deny(user string, deny bool) {
	p.deniedMu.Lock()
	defer p.deniedMu.Unlock()
	p.denied[user] = deny
}

func (p *IdP) isDenied(user string) bool {
	p.deniedMu.Lock()
	defer p.deniedMu.Unlock()
	return p.denied[user]
}

// RotateKey creates a new RS256 key, publishes it beside the others and
// signs with it from now on. It returns the new kid.
func (p *IdP) RotateKey() (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return "", err
	}
	kid := "idp-" + randomID()[:12]
	jwk := &jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"}
	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	p.keys = append(p.keys, jwk)
	p.signerKID = kid
	return kid, nil
}

// RemoveKey unpublishes the key kid: the JWKS no longer lists it, and the
// IdP no longer accepts subject tokens it signed. Signing moves to the
// newest remaining key.
func (p *IdP) RemoveKey(kid string) {
	p.keysMu.Lock()
	defer p.keysMu.Unlock()
	p.keys = slices.DeleteFunc(p.keys, func(k *jose.JSONWebKey) bool { return k.KeyID == kid })
	if p.signerKID == kid && len(p.keys) > 0 {
		p.signerKID = p.keys[len(p.keys)-1].KeyID
	}
}

// KeyIDs returns the published kids, oldest first.
func (p *IdP) KeyIDs() []string {
	p.keysMu.RLock()
	defer p.keysMu.RUnlock()
	out := make([]string, len(p.keys))
	for i, k := range p.keys {
		out[i] = k.KeyID
	}
	return out
}

// key returns the published key kid ("" for the current signing key).
func (p *IdP) key(kid string) (*jose.JSONWebKey, error) {
	p.keysMu.RLock()
	defer p.keysMu.RUnlock()
	if kid == "" {
		kid = p.signerKID
	}
	for _, k := range p.keys {
		if k.KeyID == kid {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no published key %q", kid)
}

// publicKeys returns the published keys' public halves.
func (p *IdP) publicKeys() jose.JSONWebKeySet {
	p.keysMu.RLock()
	defer p.keysMu.RUnlock()
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, len(p.keys))}
	for i, k := range p.keys {
		set.Keys[i] = k.Public()
	}
	return set
}

// TokenOptions describe a token to mint.
type TokenOptions struct {
	// Audience is the aud claim: for an ID token, the client it was issued
	// to; for an access token, the resource.
	Audience string
	// TTL is exp-iat; zero means DefaultTokenTTL.
	TTL time.Duration
	// IssuedAt is the iat claim; zero means now. A time in the past makes
	// expired tokens.
	IssuedAt time.Time
	// Claims are further claims (act, azp, client_id, email…).
	Claims map[string]any
	// KeyID signs with that published key; empty means the current one.
	KeyID string
}

// IDToken mints an OpenID Connect ID token (typ JWT) for user. Tokens
// issued now are made by fosite's OpenID Connect strategy; others (IssuedAt
// set) are signed with the same claims type by fosite's signer.
func (p *IdP) IDToken(user string, o TokenOptions) (string, error) {
	key, err := p.key(o.KeyID)
	if err != nil {
		return "", err
	}
	ttl := cmp.Or(o.TTL, DefaultTokenTTL)
	claims := &jwt.IDTokenClaims{
		Issuer: p.Issuer(), Subject: user, JTI: randomID(), Extra: maps.Clone(o.Claims),
	}
	headers := &jwt.Headers{Extra: map[string]any{"kid": key.KeyID, "typ": "JWT"}}
	signer := &jwt.DefaultSigner{GetPrivateKey: func(context.Context) (any, error) { return key, nil }}
	if o.IssuedAt.IsZero() {
		claims.ExpiresAt = time.Now().UTC().Add(ttl)
		req := fosite.NewAccessRequest(&openid.DefaultSession{Claims: claims, Headers: headers})
		req.Client = &fosite.DefaultClient{ID: o.Audience}
		strategy := &openid.DefaultStrategy{Signer: signer, Config: &fosite.Config{IDTokenIssuer: p.Issuer()}}
		return strategy.GenerateIDToken(context.Background(), ttl, req)
	}
	claims.Audience = []string{o.Audience}
	claims.IssuedAt, claims.ExpiresAt = o.IssuedAt, o.IssuedAt.Add(ttl)
	tok, _, err := signer.Generate(context.Background(), claims.ToMapClaims(), headers)
	return tok, err
}

// AccessToken mints an RFC 9068 access token (typ at+jwt) for user, with
// fosite's JWT access-token strategy (or its signer, when IssuedAt is
// set).
func (p *IdP) AccessToken(user string, o TokenOptions) (string, error) {
	key, err := p.key(o.KeyID)
	if err != nil {
		return "", err
	}
	ttl := cmp.Or(o.TTL, DefaultTokenTTL)
	iat := o.IssuedAt
	if iat.IsZero() {
		iat = time.Now().UTC()
	}
	claims := &jwt.JWTClaims{
		Issuer: p.Issuer(), Subject: user, JTI: randomID(), Audience: []string{o.Audience},
		IssuedAt: iat, ExpiresAt: iat.Add(ttl), Extra: maps.Clone(o.Claims),
	}
	headers := &jwt.Headers{Extra: map[string]any{"kid": key.KeyID, "typ": "at+jwt"}}
	signer := &jwt.DefaultSigner{GetPrivateKey: func(context.Context) (any, error) { return key, nil }}
	if o.IssuedAt.IsZero() {
		sess := &oauth2.JWTSession{JWTClaims: claims, JWTHeader: headers, ExpiresAt: map[fosite.TokenType]time.Time{fosite.AccessToken: claims.ExpiresAt}}
		req := fosite.NewAccessRequest(sess)
		req.GrantAudience(o.Audience)
		strategy := &oauth2.DefaultJWTStrategy{Signer: signer, Config: &fosite.Config{AccessTokenIssuer: p.Issuer(), JWTScopeClaimKey: jwt.JWTScopeFieldString}}
		tok, _, err := strategy.GenerateAccessToken(context.Background(), req)
		return tok, err
	}
	tok, _, err := signer.Generate(context.Background(), claims.ToMapClaims(), headers)
	return tok, err
}

// Sign signs any claims with typ (empty: no typ header) and the published
// key kid (empty: the current one), for tokens no well-behaved IdP mints.
func (p *IdP) Sign(typ string, claims map[string]any, kid string) (string, error) {
	key, err := p.key(kid)
	if err != nil {
		return "", err
	}
	headers := &jwt.Headers{Extra: map[string]any{"kid": key.KeyID}}
	if typ != "" {
		headers.Extra["typ"] = typ
	}
	signer := &jwt.DefaultSigner{GetPrivateKey: func(context.Context) (any, error) { return key, nil }}
	tok, _, err := signer.Generate(context.Background(), jwt.MapClaims(maps.Clone(claims)), headers)
	return tok, err
}

func (p *IdP) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	p.stats.discovery.Add(1)
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.Issuer(),
		"jwks_uri":                              p.JWKSURL(),
		"token_endpoint":                        p.TokenURL(),
		"grant_types_supported":                 []string{GrantTokenExchange},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
	})
}

func (p *IdP) handleJWKS(w http.ResponseWriter, r *http.Request) {
	p.stats.jwks.Add(1)
	w.Header().Set("Content-Type", "application/jwk-set+json")
	writeJSON(w, http.StatusOK, p.publicKeys())
}

// handleToken serves the token endpoint: RFC 8693 token exchange only.
func (p *IdP) handleToken(w http.ResponseWriter, r *http.Request) {
	p.stats.tokenRequests.Add(1)
	if !p.before(w, r) {
		return
	}
	ctx := r.Context()
	p.tokenMu.Lock()
	ar, err := p.provider.NewAccessRequest(ctx, r, &fosite.DefaultSession{Extra: map[string]any{}})
	var resp fosite.AccessResponder
	if err == nil {
		resp, err = p.provider.NewAccessResponse(ctx, ar)
	}
	p.tokenMu.Unlock()
	if err != nil {
		p.stats.refusals.Add(1)
		rfc := fosite.ErrorToRFC6749Error(err)
		p.log.Info("token exchange refused", zap.String("error", rfc.ErrorField), zap.String("hint", rfc.HintField))
		p.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	p.stats.exchanges.Add(1)
	p.log.Info("id-jag issued", zap.String("client", ar.GetClient().GetID()), zap.String("user", ar.GetSession().GetSubject()))
	p.provider.WriteAccessResponse(ctx, w, ar, resp)
}
