package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Subject is the verified identity behind a request.
type Subject struct {
	// User is the acting user (the sub claim), never empty.
	User string
	// Agent is the agent acting for User (the RFC 8693 act.sub claim), or "".
	Agent string
	// Issuer is the iss claim.
	Issuer string
	// ID is the jti claim, or "".
	ID string
	// Expiry is the exp claim.
	Expiry time.Time
	// Claims holds the claims that are not registered ones (iss, sub, aud,
	// exp, nbf, iat, jti, act): the narrowing claims such as providers,
	// task_id or channels, as decoded from JSON. Never nil.
	Claims map[string]any
}

// registeredClaims are the claims Subject carries in its own fields (act as
// Agent) or that only matter to verification; they are left out of
// Subject.Claims.
var registeredClaims = [...]string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "act"}

// forbiddenHeaders are JOSE headers that point at keys or demand extensions.
// The pre-parser refuses them; the key lookup checks them again on the
// library's own decoding of the header.
var forbiddenHeaders = [...]struct {
	name string
	err  error
}{
	{"jku", errHeaderJKU}, {"x5u", errHeaderX5U}, {"jwk", errHeaderJWK}, {"x5c", errHeaderX5C}, {"crit", errHeaderCrit},
}

// Option adjusts New.
type Option func(*options)

type options struct {
	client *http.Client
	now    func() time.Time
	logger *zap.Logger
}

// WithHTTPClient makes the verifier fetch the JWKS with client (tests use an
// httptest TLS server's client). Redirects are still not followed.
func WithHTTPClient(client *http.Client) Option {
	return func(o *options) { o.client = client }
}

// WithNow sets the clock used for exp, nbf, iat, the lifetime limit and the
// unknown-kid refetch interval. The default is time.Now.
func WithNow(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithLogger sets the operational logger (JWKS refresh problems). The
// default discards everything. Nothing from an assertion is ever logged.
func WithLogger(logger *zap.Logger) Option {
	return func(o *options) { o.logger = logger }
}

// Verifier checks assertions. It is safe for concurrent use.
type Verifier struct {
	header      string
	issuers     []string
	maxSize     int
	allowed     algSet
	maxLifetime time.Duration
	leeway      time.Duration
	now         func() time.Time
	parser      *jwt.Parser
	keys        []staticKey
	// withoutKID and anonymous hold, per algorithm, the static keys for a
	// token without kid (all keys of that algorithm) and for a kid no key
	// claims (the keys without id): nil, a single key, or a
	// jwt.VerificationKeySet, built once so that the lookup does not
	// allocate. staticKeys is the plain list per algorithm.
	withoutKID [numAlgorithms]any
	anonymous  [numAlgorithms]any
	staticKeys [numAlgorithms][]jwt.VerificationKey
	jwks       *jwksSource
	client     *http.Client
	tooLarge   error
	closeOnce  sync.Once
}

// staticKey is one configured key, bound to one algorithm.
type staticKey struct {
	id  string
	alg algorithm
	key any
}

// New validates cfg, loads its keys and, with a JWKS URL, fetches the set
// (bounded by ctx; a failure is logged and retried, see Ready) and starts
// refreshing it in the background until Close.
func New(ctx context.Context, cfg Config, opts ...Option) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("identity config: %w", err)
	}
	o := options{now: time.Now, logger: zap.NewNop()}
	for _, opt := range opts {
		opt(&o)
	}
	v := &Verifier{
		header:      cfg.Header,
		issuers:     slices.Clone(cfg.Issuers),
		maxSize:     cfg.MaxSize,
		allowed:     cfg.allowedSet(),
		maxLifetime: cfg.MaxLifetime,
		leeway:      cfg.Leeway,
		now:         o.now,
		tooLarge:    sizeError(cfg.MaxSize),
	}
	var problems config.Problems
	for i, kc := range cfg.Keys {
		key, alg, err := loadVerificationKey(kc.File, kc.Algorithm)
		if err != nil {
			problems.Addf(idx("keys", i)+".file", "%v", err)
			continue
		}
		if !v.allowed.has(alg) {
			problems.Addf(idx("keys", i)+".algorithm", "key is for %s, which is not listed in algorithms", alg)
			continue
		}
		v.keys = append(v.keys, staticKey{id: kc.ID, alg: alg, key: key})
	}
	if err := problems.Err(); err != nil {
		return nil, fmt.Errorf("identity keys: %w", err)
	}
	var anonymous [numAlgorithms][]jwt.VerificationKey
	for _, k := range v.keys {
		v.staticKeys[k.alg] = append(v.staticKeys[k.alg], k.key)
		if k.id == "" {
			anonymous[k.alg] = append(anonymous[k.alg], k.key)
		}
	}
	for a := range numAlgorithms {
		v.withoutKID[a] = keyOrSet(v.staticKeys[a])
		v.anonymous[a] = keyOrSet(anonymous[a])
	}

	methods := make([]string, 0, len(cfg.Algorithms))
	for a := algorithm(1); a < numAlgorithms; a++ {
		if v.allowed.has(a) {
			methods = append(methods, a.String())
		}
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(o.now),
		jwt.WithStrictDecoding(),
	}
	if len(cfg.Issuers) == 1 {
		// More issuers are checked by assertionClaims.Validate, which
		// checks membership for one issuer too.
		popts = append(popts, jwt.WithIssuer(cfg.Issuers[0]))
	}
	v.parser = jwt.NewParser(popts...)

	if cfg.JWKSURL != "" {
		client := o.client
		if client == nil {
			c, err := NewJWKSClient(cfg.JWKSCAFile)
			if err != nil {
				return nil, fmt.Errorf("identity: %w", config.Prefix("jwks_ca_file", err))
			}
			client = c
		} else {
			c := *client
			c.CheckRedirect = refuseRedirect
			client = &c
		}
		v.client = client
		src, err := newJWKSSource(cfg.JWKSURL, client, cfg.JWKSUnknownKIDInterval, o.now, o.logger.Named("jwks"))
		if err != nil {
			return nil, err
		}
		v.jwks = src
		src.start(ctx, cfg.JWKSRefresh)
	}
	return v, nil
}

// keyOrSet returns nil for no key, the key itself for one, and a
// jwt.VerificationKeySet for several.
func keyOrSet(keys []jwt.VerificationKey) any {
	switch len(keys) {
	case 0:
		return nil
	case 1:
		return keys[0]
	}
	return jwt.VerificationKeySet{Keys: keys}
}

// Header returns the name of the request header that carries assertions.
func (v *Verifier) Header() string { return v.header }

// Ready returns nil when the verifier can verify: always with static keys
// only, and with a JWKS once it has been fetched successfully.
func (v *Verifier) Ready() error {
	if v.jwks == nil {
		return nil
	}
	return v.jwks.ready()
}

// Close stops the JWKS refresh and waits for it. It is safe to call more
// than once. Verify keeps working on the keys already loaded.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		if v.jwks != nil {
			v.jwks.close()
		}
		if v.client != nil {
			v.client.CloseIdleConnections()
		}
	})
	return nil
}

// assertionClaims receives the claims from the JWT library. Besides the
// claims it carries what the key lookup and the extra validation need (the
// library's callbacks take no context), and the Subject that Verify returns,
// so that one allocation serves all three.
type assertionClaims struct {
	jwt.MapClaims
	v       *Verifier
	ctx     context.Context
	hdr     header
	subject Subject
}

// UnmarshalJSON decodes the claims into the embedded map; without it
// encoding/json would look for a field named MapClaims.
func (c *assertionClaims) UnmarshalJSON(b []byte) error {
	return json.Unmarshal(b, &c.MapClaims)
}

// Verify checks raw and returns the Subject it names. raw is pre-parsed
// first (size, shape, header), and only then parsed and verified by the JWT
// library. Errors wrap ErrMissing or ErrInvalid and never contain raw.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Subject, error) {
	if len(raw) > v.maxSize {
		return nil, v.tooLarge
	}
	hdr, err := preparse(raw, v.maxSize, v.allowed)
	if err != nil {
		return nil, err
	}
	c := &assertionClaims{v: v, ctx: ctx, hdr: hdr}
	_, err = v.parser.ParseWithClaims(raw, c, keyFunc)
	c.ctx, c.v = nil, nil
	if err != nil {
		return nil, classify(err)
	}
	return c.finish(), nil
}

// keyFunc is the jwt.Keyfunc for every Verify. It is a plain function, not a
// closure, so that passing it costs nothing; its state travels in the claims.
func keyFunc(t *jwt.Token) (any, error) {
	c, ok := t.Claims.(*assertionClaims)
	if !ok || c.v == nil {
		return nil, errUnverifiable
	}
	return c.v.key(c.ctx, t, c.hdr)
}

// key chooses the verification key for t. The library has decoded the header
// again by now; it must agree with the pre-parser. Then:
//   - with a kid: the static key with that id (it must be for this
//     algorithm), else the JWKS key with that kid (refetching the set if the
//     kid is unknown), else the static keys without id;
//   - without a kid: every static and JWKS key that can verify this
//     algorithm.
//
// Keys are only ever used with their one algorithm.
func (v *Verifier) key(ctx context.Context, t *jwt.Token, hdr header) (any, error) {
	if t.Method == nil || t.Method.Alg() != hdr.alg.String() {
		return nil, errHeaderMismatch
	}
	for _, f := range forbiddenHeaders {
		if _, ok := t.Header[f.name]; ok {
			return nil, f.err
		}
	}
	kid := ""
	if raw, ok := t.Header["kid"]; ok {
		s, ok := raw.(string)
		if !ok || s == "" {
			return nil, errKIDType
		}
		kid = s
	}
	if hdr.hasKID != (kid != "") {
		return nil, errHeaderMismatch
	}
	alg := hdr.alg
	if kid == "" {
		return v.keyWithoutKID(ctx, alg)
	}
	otherAlg := false
	for i := range v.keys {
		k := &v.keys[i]
		if k.id != kid {
			continue
		}
		if k.alg == alg {
			return k.key, nil
		}
		otherAlg = true
	}
	if otherAlg {
		return nil, errKeyAlg
	}
	if v.jwks != nil {
		key, err := v.jwks.keyByID(ctx, t, alg)
		if err != errUnknownKID {
			return key, err
		}
	}
	if k := v.anonymous[alg]; k != nil {
		return k, nil
	}
	return nil, errUnknownKID
}

func (v *Verifier) keyWithoutKID(ctx context.Context, alg algorithm) (any, error) {
	var fromSet []jwt.VerificationKey
	if v.jwks != nil {
		fromSet = v.jwks.keysFor(ctx, alg)
	}
	if len(fromSet) == 0 {
		if k := v.withoutKID[alg]; k != nil {
			return k, nil
		}
		return nil, errNoKey
	}
	all := append(slices.Clip(v.staticKeys[alg]), fromSet...)
	return keyOrSet(all), nil
}

// Validate adds this package's claim rules to the library's (exp, nbf, iat,
// aud): iss among the configured issuers, a non-empty string sub, well-formed
// act and jti, and the lifetime limit. The library calls it only after the
// signature has been verified.
func (c *assertionClaims) Validate() error {
	v := c.v
	if v == nil {
		return errUnverifiable
	}
	m := c.MapClaims
	switch iss := m["iss"].(type) {
	case nil:
		return errMissingIss
	case string:
		if iss == "" {
			return errMissingIss
		}
		if !slices.Contains(v.issuers, iss) {
			return errIssuer
		}
	default:
		return errMalformedClaims
	}
	if m["aud"] == nil {
		return errMissingAud
	}
	switch sub := m["sub"].(type) {
	case nil:
		return errMissingSub
	case string:
		if sub == "" {
			return errMissingSub
		}
	default:
		return errMalformedClaims
	}
	if act, ok := m["act"]; ok {
		a, ok := act.(map[string]any)
		if !ok {
			return errMalformedAct
		}
		if s, ok := a["sub"].(string); !ok || s == "" {
			return errMalformedAct
		}
	}
	if jti, ok := m["jti"]; ok {
		if _, ok := jti.(string); !ok {
			return errMalformedJTI
		}
	}
	exp, err := m.GetExpirationTime()
	if err != nil {
		return errMalformedClaims
	}
	if exp == nil {
		return errMissingExp
	}
	iat, err := m.GetIssuedAt()
	if err != nil {
		return errMalformedClaims
	}
	if iat != nil {
		if exp.Sub(iat.Time) > v.maxLifetime {
			return errLifetime
		}
	} else if exp.Sub(v.now()) > v.maxLifetime+v.leeway {
		// Without iat the lifetime is measured from now; the leeway covers
		// an issuer whose clock runs ahead.
		return errLifetime
	}
	return nil
}

// finish fills the Subject from claims that Validate has checked and
// returns it. Subject.Claims reuses the decoded map minus the registered
// claims.
func (c *assertionClaims) finish() *Subject {
	m := c.MapClaims
	s := &c.subject
	s.User, _ = m["sub"].(string)
	s.Issuer, _ = m["iss"].(string)
	s.ID, _ = m["jti"].(string)
	if act, ok := m["act"].(map[string]any); ok {
		s.Agent, _ = act["sub"].(string)
	}
	if exp, err := m.GetExpirationTime(); err == nil && exp != nil {
		s.Expiry = exp.Time
	}
	for _, name := range registeredClaims {
		delete(m, name)
	}
	s.Claims = m
	c.MapClaims = nil
	return s
}

// classify turns the JWT library's error into one of this package's
// refusals. Refusals raised by the key lookup or by Validate travel inside
// the library's error and are returned as they are.
func classify(err error) error {
	var re *reasonError
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		if errors.As(err, &re) {
			return re
		}
		return errUnverifiable
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errSignature
	case errors.As(err, &re):
		return re
	case errors.Is(err, jwt.ErrTokenExpired):
		return errExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errNotYetValid
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errIssuedInFuture
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errIssuer
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing), errors.Is(err, jwt.ErrInvalidType):
		return errMalformedClaims
	}
	return errUnverifiable
}
