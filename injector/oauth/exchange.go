package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/onbehalf-dev/onbehalf/injector"
)

// Token exchange identifiers (RFC 8693 section 3, RFC 7523 section 2.1 and
// draft-ietf-oauth-identity-assertion-authz-grant).
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	grantJWTBearer     = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	tokenTypeIDJAG     = "urn:ietf:params:oauth:token-type:id-jag"
	tokenTypeIDToken   = "urn:ietf:params:oauth:token-type:id_token"
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
)

// Exchange cache defaults, used when ExchangeOptions leaves them zero. They
// are the token cache's: an exchanged token is served from memory no longer
// than a stored one would be, so an IdP's change of mind (a user removed
// from the app) takes effect within the same bound as a revocation.
const (
	defaultExchangeTTL     = injector.DefaultCacheTTL
	defaultExchangeEntries = injector.DefaultCacheSize
)

// refusalCodes are the OAuth error codes by which an IdP or an
// authorization server says no to this user, subject token or app, as
// opposed to a failing server or a misconfigured client. RFC 6749 section
// 5.2 (invalid_grant, invalid_scope, unauthorized_client), RFC 8693
// section 2.2.2 (invalid_target), and the OpenID Connect codes some IdPs
// answer when their policy wants the user involved.
var refusalCodes = map[string]bool{
	"invalid_grant":        true,
	"invalid_scope":        true,
	"invalid_target":       true,
	"unauthorized_client":  true,
	"access_denied":        true,
	"consent_required":     true,
	"interaction_required": true,
	"login_required":       true,
}

// ExchangeOutcome says how one exchange ended.
type ExchangeOutcome string

// Outcomes of an exchange, as ExchangeEvent reports them.
const (
	// ExchangeOK: both token calls succeeded.
	ExchangeOK ExchangeOutcome = "exchanged"
	// ExchangeRefused: the IdP or the app's authorization server refused
	// (ErrExchangeDenied).
	ExchangeRefused ExchangeOutcome = "refused"
	// ExchangeUnavailable: a timeout, connection failure, 429, 5xx or an
	// unusable answer (ErrProviderUnavailable).
	ExchangeUnavailable ExchangeOutcome = "unavailable"
	// ExchangeMisconfigured: the sidecar's client was refused, or the
	// server does not support what was asked (ErrProviderMisconfigured).
	ExchangeMisconfigured ExchangeOutcome = "misconfigured"
)

// ExchangeEvent describes one exchange (two token calls at most), for the
// audit trail and metrics. It holds no secret.
type ExchangeEvent struct {
	Provider string
	User     string
	Outcome  ExchangeOutcome
	// Step is where it ended: "idp" (RFC 8693 at the IdP) or "as" (RFC
	// 7523 at the app's authorization server).
	Step string
	// IdentityJTI is the jti of the presented IdP token, when it had one.
	IdentityJTI string
	// Duration is the time both calls took.
	Duration time.Duration
	// Err is nil for ExchangeOK; its text holds no secret and no response
	// body.
	Err error
}

// ExchangeOptions configure an Exchanger. The zero value is usable.
type ExchangeOptions struct {
	// TokenEndpoint returns the IdP's token endpoint when the
	// configuration names none (the sidecar reads it from the IdP's
	// discovery document). Nil with an empty token_url makes every
	// exchange fail as misconfigured.
	TokenEndpoint func(issuer string) (string, error)
	// CacheTTL bounds how long an exchanged token is served from memory
	// (it is never served past its expiry minus a margin). Zero means
	// defaultExchangeTTL; negative disables the cache (single-flight stays).
	CacheTTL time.Duration
	// CacheEntries bounds the number of cached tokens; zero means
	// defaultExchangeEntries.
	CacheEntries int
	// OnExchange, when set, is called once per exchange that reached the
	// network, after it ended.
	OnExchange func(ExchangeEvent)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// exchangeKey identifies cached tokens: per user, provider and scopes.
type exchangeKey struct{ user, provider, scopes string }

type exchangeEntry struct {
	tok   injector.Token
	until time.Time
}

// Exchanger obtains one provider's access tokens by token exchange:
//
//  1. the presented token must be a verified token of the configured IdP;
//  2. a cached token for (user, provider, scopes) is used while it is
//     within the cache bound and not about to expire;
//  3. otherwise one exchange runs per key at a time (single-flight), on a
//     context detached from the request that started it, so that callers
//     giving up do not fail the others;
//  4. RFC 8693 at the IdP: the presented token as subject_token, an
//     ID-JAG requested for the app's authorization server (audience) and
//     resource, with the sidecar's client authentication at the IdP;
//  5. RFC 7523 at the app's authorization server: the ID-JAG as assertion,
//     with the provider's client authentication;
//  6. the access token is cached and handed out with Source "exchange".
//
// The presented token and the ID-JAG go only to the two token endpoints,
// never into a log, an error or an event. Errors wrap exactly one of
// injector.ErrExchangeDenied (injector.ErrNoSubjectToken for step 1),
// injector.ErrProviderUnavailable and injector.ErrProviderMisconfigured.
// An Exchanger is safe for concurrent use.
type Exchanger struct {
	provider *Provider
	// idp is the sidecar's client at the IdP: the provider machinery
	// (client authentication, answer parsing) with the exchange's client
	// credentials and no quirks.
	idp      *Provider
	cfg      ExchangeConfig
	scopes   []string
	scopeKey string
	timeout  time.Duration
	o        ExchangeOptions
	cache    *lru.Cache[exchangeKey, exchangeEntry]
	group    singleflight.Group
	flights  sync.WaitGroup
}

// NewExchanger returns the exchanger of provider p, whose configuration
// must have an exchange section. idpSecret is the resolved client secret at
// the IdP. The IdP calls use p's HTTP client (no proxy, verified TLS, no
// redirects).
func NewExchanger(p *Provider, idpSecret string, o ExchangeOptions) (*Exchanger, error) {
	cfg := p.cfg.Exchange
	if cfg == nil {
		return nil, fmt.Errorf("new exchanger %s: provider has no exchange section", p.name)
	}
	if idpSecret == "" {
		return nil, fmt.Errorf("new exchanger %s: %w", p.name, ErrEmptySecret)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = defaultExchangeTTL
	}
	if o.CacheEntries <= 0 {
		o.CacheEntries = defaultExchangeEntries
	}
	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = p.cfg.Scopes
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = p.cfg.Timeout
	}
	cache, _ := lru.New[exchangeKey, exchangeEntry](o.CacheEntries) // size is positive
	idp := &Provider{
		name:   p.name,
		cfg:    ProviderConfig{AuthStyle: cfg.AuthStyle, Timeout: timeout},
		oauth:  oauth2.Config{ClientID: cfg.ClientID, ClientSecret: idpSecret},
		client: p.client,
	}
	return &Exchanger{
		provider: p,
		idp:      idp,
		cfg:      *cfg.clone(),
		scopes:   scopes,
		scopeKey: strings.Join(scopes, " "),
		timeout:  timeout,
		o:        o,
		cache:    cache,
	}, nil
}

// Fallback returns what the provider does when the exchange yields no
// token: FallbackRefuse or FallbackGrant.
func (e *Exchanger) Fallback() string { return e.cfg.Fallback }

// Issuer returns the IdP whose tokens are exchanged.
func (e *Exchanger) Issuer() string { return e.cfg.Issuer }

// Token returns an access token for req.User at the provider, obtained by
// token exchange with req.Identity (see Exchanger for the steps).
func (e *Exchanger) Token(ctx context.Context, req injector.TokenRequest) (injector.Token, error) {
	// 1. Only a token of the exchanging IdP can be exchanged.
	if req.Identity.Value == "" || req.Identity.Issuer != e.cfg.Issuer {
		return injector.Token{}, fmt.Errorf("exchange %s/%s: %w", e.provider.name, req.User, injector.ErrNoSubjectToken)
	}
	// 2. A cached token.
	key := exchangeKey{user: req.User, provider: e.provider.name, scopes: e.scopeKey}
	if tok, ok := e.cached(key); ok {
		return tok, nil
	}
	// 3. One exchange per key, shared by every caller meanwhile.
	ch := e.group.DoChan(key.user+"\x00"+key.provider+"\x00"+key.scopes, func() (any, error) {
		if tok, ok := e.cached(key); ok {
			return tok, nil // a flight that just ended filled it
		}
		e.flights.Add(1)
		defer e.flights.Done()
		// Detached: the callers sharing this flight must not fail because
		// the one that started it went away; each call has its timeout.
		return e.exchange(context.WithoutCancel(ctx), key, req)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return injector.Token{}, r.Err
		}
		return r.Val.(injector.Token), nil
	case <-ctx.Done():
		return injector.Token{}, fmt.Errorf("exchange %s/%s: %w: %w", e.provider.name, req.User, injector.ErrProviderUnavailable, ctx.Err())
	}
}

// Wait waits for exchanges in flight (tests and shutdown).
func (e *Exchanger) Wait() { e.flights.Wait() }

func (e *Exchanger) cached(key exchangeKey) (injector.Token, bool) {
	if ent, ok := e.cache.Get(key); ok && e.o.Now().Before(ent.until) {
		return ent.tok, true
	}
	return injector.Token{}, false
}

// exchange runs steps 4 to 6 and reports the outcome.
func (e *Exchanger) exchange(ctx context.Context, key exchangeKey, req injector.TokenRequest) (injector.Token, error) {
	start := time.Now()
	ev := ExchangeEvent{Provider: e.provider.name, User: req.User, IdentityJTI: req.Identity.ID, Step: "idp"}
	tok, err := e.twoCalls(ctx, req, &ev)
	ev.Duration = time.Since(start)
	ev.Err = err
	switch {
	case err == nil:
		ev.Outcome = ExchangeOK
	case errors.Is(err, injector.ErrExchangeDenied):
		ev.Outcome = ExchangeRefused
	case errors.Is(err, injector.ErrProviderMisconfigured):
		ev.Outcome = ExchangeMisconfigured
	default:
		ev.Outcome = ExchangeUnavailable
	}
	if e.o.OnExchange != nil {
		e.o.OnExchange(ev)
	}
	if err != nil {
		return injector.Token{}, fmt.Errorf("exchange %s/%s: %w", e.provider.name, req.User, err)
	}
	if e.o.CacheTTL > 0 {
		until := e.o.Now().Add(e.o.CacheTTL)
		if !tok.Expiry.IsZero() {
			if limit := tok.Expiry.Add(-useMargin); limit.Before(until) {
				until = limit
			}
		}
		e.cache.Add(key, exchangeEntry{tok: tok, until: until})
	}
	return tok, nil
}

// twoCalls asks the IdP for an ID-JAG and trades it at the app's
// authorization server.
func (e *Exchanger) twoCalls(ctx context.Context, req injector.TokenRequest, ev *ExchangeEvent) (injector.Token, error) {
	endpoint := e.cfg.TokenURL
	if endpoint == "" {
		if e.o.TokenEndpoint == nil {
			return injector.Token{}, fmt.Errorf("idp token endpoint: none configured: %w", injector.ErrProviderMisconfigured)
		}
		var err error
		if endpoint, err = e.o.TokenEndpoint(e.cfg.Issuer); err != nil {
			// Discovery not done yet (the IdP is down) is transient.
			return injector.Token{}, fmt.Errorf("idp token endpoint: %w: %w", injector.ErrProviderUnavailable, err)
		}
	}
	// 4. RFC 8693 at the IdP.
	form := url.Values{
		"grant_type":           {grantTokenExchange},
		"requested_token_type": {tokenTypeIDJAG},
		"subject_token":        {req.Identity.Value},
		"subject_token_type":   {subjectTokenType(req.Identity.Type)},
		"audience":             {e.cfg.Audience},
	}
	if e.cfg.Resource != "" {
		form.Set("resource", e.cfg.Resource)
	}
	if len(e.scopes) > 0 {
		form.Set("scope", e.scopeKey)
	}
	fields, err := e.idp.exchangeCall(ctx, "token exchange at the idp", endpoint, form)
	if err != nil {
		return injector.Token{}, err
	}
	if typ := str(fields["issued_token_type"]); typ != tokenTypeIDJAG {
		return injector.Token{}, fmt.Errorf("token exchange at the idp: issued token type %q, not an ID-JAG: %w", sanitizeCode(typ), injector.ErrProviderMisconfigured)
	}
	jag := str(fields["access_token"])
	if jag == "" {
		return injector.Token{}, fmt.Errorf("token exchange at the idp: %w: %w", injector.ErrProviderUnavailable, errUnusableResponse)
	}

	// 5. RFC 7523 at the app's authorization server.
	ev.Step = "as"
	form = url.Values{"grant_type": {grantJWTBearer}, "assertion": {jag}}
	if len(e.scopes) > 0 {
		form.Set("scope", e.scopeKey)
	}
	fields, err = e.provider.exchangeCall(ctx, "jwt bearer grant at the app", e.provider.cfg.TokenURL, form)
	if err != nil {
		return injector.Token{}, err
	}
	tok, ok := e.provider.q.token(fields, e.o.Now())
	if !ok {
		return injector.Token{}, fmt.Errorf("jwt bearer grant at the app: %w: %w", injector.ErrProviderUnavailable, errUnusableResponse)
	}
	if t := tok.TokenType; t != "" && !strings.EqualFold(t, "bearer") {
		// A sender-constrained (DPoP) token cannot be injected as a
		// bearer token.
		return injector.Token{}, fmt.Errorf("jwt bearer grant at the app: token type %q, not Bearer: %w", sanitizeCode(t), injector.ErrProviderMisconfigured)
	}
	// 6. Ready to inject.
	return injector.Token{Value: tok.AccessToken, Expiry: tok.Expiry, Source: injector.SourceExchange}, nil
}

// subjectTokenType maps the typ a token was presented with to its RFC 8693
// token type: an RFC 9068 access token, an ID-JAG (a JWT of another kind),
// or an ID token.
func subjectTokenType(typ string) string {
	t := strings.TrimPrefix(strings.ToLower(typ), "application/")
	switch t {
	case "at+jwt":
		return tokenTypeAccess
	case "oauth-id-jag+jwt":
		return tokenTypeJWT
	}
	return tokenTypeIDToken
}

// exchangeCall posts form to endpoint with p's client authentication
// within the exchange's timeout and returns the answer's fields. Errors
// wrap exactly one of injector.ErrExchangeDenied (a refusal code),
// injector.ErrProviderUnavailable (transport failures, 408, 429, 5xx,
// server_error, temporarily_unavailable, unreadable answers) and
// injector.ErrProviderMisconfigured (every other refusal: invalid_client,
// unsupported_grant_type, unsupported_token_type, invalid_request,
// redirects). They quote at most the error code and HTTP status.
func (p *Provider) exchangeCall(ctx context.Context, what, endpoint string, form url.Values) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := p.newClientRequest(ctx, http.MethodPost, endpoint, form, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, injector.ErrProviderMisconfigured, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, injector.ErrProviderUnavailable, transportError(err))
	}
	body, err := readBody(resp, maxTokenResponse)
	if err != nil {
		return nil, fmt.Errorf("%s: status %d: %w: %w", what, resp.StatusCode, injector.ErrProviderUnavailable, err)
	}
	fields, parsed := parseFields(resp.Header.Get("Content-Type"), body)
	clear(body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		code := sanitizeCode(str(fields["error"]))
		if refusalCodes[code] && resp.StatusCode < 500 {
			return nil, fmt.Errorf("%s: status %d, error %q: %w", what, resp.StatusCode, code, injector.ErrExchangeDenied)
		}
		return nil, classifyStatus(what, resp.StatusCode, code, injector.ErrExchangeDenied)
	}
	if !parsed {
		return nil, fmt.Errorf("%s: status %d: %w: %w", what, resp.StatusCode, injector.ErrProviderUnavailable, errUnusableResponse)
	}
	return fields, nil
}
