package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
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
	// staticKeyFunc is the key function when there is no JWKS: bound once,
	// so that Verify does not allocate a closure per call.
	staticKeyFunc jwt.Keyfunc
	client        *http.Client
	tooLarge      error
	closeOnce     sync.Once
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
	if o.now == nil {
		o.now = time.Now
	}
	if o.logger == nil {
		o.logger = zap.NewNop()
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
		// Several issuers are checked by checkClaims, which checks
		// membership for one issuer too.
		popts = append(popts, jwt.WithIssuer(cfg.Issuers[0]))
	}
	v.parser = jwt.NewParser(popts...)
	v.staticKeyFunc = func(t *jwt.Token) (any, error) { return v.key(context.Background(), t) }

	if cfg.JWKSURL != "" {
		client := o.client
		if client == nil {
			c, err := newJWKSClient(cfg.JWKSCAFile)
			if err != nil {
				return nil, fmt.Errorf("identity: %w", config.Prefix("jwks_ca_file", err))
			}
			client = c
		} else {
			c := *client
			c.CheckRedirect = outbound.RefuseRedirect
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

// Verify checks raw and returns the Subject it names. raw is pre-parsed
// first (size, shape, header, claims without duplicate members), and only
// then parsed and verified by the JWT library. Errors wrap ErrMissing or
// ErrInvalid and never contain raw.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Subject, error) {
	if len(raw) > v.maxSize {
		return nil, v.tooLarge
	}
	hdr, err := preparse(raw, v.maxSize, v.allowed)
	if err != nil {
		return nil, err
	}
	claims := jwt.MapClaims{}
	kf := v.staticKeyFunc
	if v.jwks != nil {
		// Only a JWKS lookup can wait (for a fetch), so only it needs ctx.
		kf = func(t *jwt.Token) (any, error) { return v.key(ctx, t) }
	}
	tok, err := v.parser.ParseWithClaims(raw, claims, kf)
	if err != nil {
		return nil, classify(err, claims)
	}
	// The library decoded the header again; it must have seen what the
	// pre-parser saw.
	if _, hasKID := tok.Header["kid"]; tok.Method.Alg() != hdr.alg.String() || hasKID != hdr.hasKID {
		return nil, errHeaderMismatch
	}
	if err := v.checkClaims(claims); err != nil {
		return nil, err
	}
	return newSubject(claims), nil
}

// key chooses the verification key for t (the jwt.Keyfunc of Verify):
//   - with a kid: the static key with that id (it must be for this
//     algorithm), else the JWKS key with that kid (fetching the set again,
//     rate-limited, if the kid is unknown), else the static keys without id;
//   - without a kid: every static and JWKS key that can verify this
//     algorithm.
//
// Keys are only ever used with their one algorithm.
func (v *Verifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	alg := algUnknown
	if t.Method != nil {
		alg = algorithmFromName(t.Method.Alg())
	}
	if !v.allowed.has(alg) {
		return nil, errAlgorithmRefusals[alg]
	}
	for _, f := range forbiddenHeaders {
		if _, ok := t.Header[f.name]; ok {
			return nil, f.err
		}
	}
	raw, ok := t.Header["kid"]
	if !ok {
		return v.keyWithoutKID(ctx, alg)
	}
	kid, ok := raw.(string)
	if !ok || kid == "" {
		return nil, errKIDType
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

// checkClaims adds this package's claim rules to the library's (exp, nbf,
// iat, aud, and iss for a single issuer): iss among the configured issuers,
// a non-empty string sub, well-formed act and jti, and the lifetime limit.
// It runs only on claims of a token whose signature has been verified.
func (v *Verifier) checkClaims(m jwt.MapClaims) error {
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
	exp, ok := numericDate(m, "exp")
	if !ok || exp.IsZero() {
		// The library requires exp; this is a second line.
		return errMissingExp
	}
	iat, ok := numericDate(m, "iat")
	if !ok {
		return errMalformedClaims
	}
	if !iat.IsZero() {
		if exp.Sub(iat) > v.maxLifetime {
			return errLifetime
		}
	} else if exp.Sub(v.now()) > v.maxLifetime+v.leeway {
		// Without iat the lifetime is measured from now; the leeway covers
		// an issuer whose clock runs ahead.
		return errLifetime
	}
	return nil
}

// numericDate reads a NumericDate claim the way the JWT library does
// (seconds as a JSON number; 0 counts as absent), without allocating. It
// returns the zero time when the claim is absent and ok false when it is not
// a number.
func numericDate(m jwt.MapClaims, name string) (time.Time, bool) {
	var f float64
	switch n := m[name].(type) {
	case nil:
		return time.Time{}, true
	case float64:
		f = n
	case json.Number:
		var err error
		if f, err = n.Float64(); err != nil {
			return time.Time{}, false
		}
	default:
		return time.Time{}, false
	}
	if f == 0 {
		return time.Time{}, true
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).Truncate(jwt.TimePrecision), true
}

// newSubject builds the Subject from claims that checkClaims accepted.
// Subject.Claims reuses the decoded map minus the registered claims.
func newSubject(m jwt.MapClaims) *Subject {
	s := &Subject{}
	s.User, _ = m["sub"].(string)
	s.Issuer, _ = m["iss"].(string)
	s.ID, _ = m["jti"].(string)
	if act, ok := m["act"].(map[string]any); ok {
		s.Agent, _ = act["sub"].(string)
	}
	s.Expiry, _ = numericDate(m, "exp")
	for _, name := range registeredClaims {
		delete(m, name)
	}
	s.Claims = m
	return s
}

// classify turns the JWT library's error into one of this package's
// refusals. Refusals raised by the key lookup travel inside the library's
// error and are returned as they are. claims is what the library decoded,
// to tell which required claim is missing.
func classify(err error, claims jwt.MapClaims) error {
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
	case errors.Is(err, jwt.ErrInvalidType):
		return errMalformedClaims
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		if exp, _ := numericDate(claims, "exp"); exp.IsZero() {
			return errMissingExp
		}
		if aud, _ := claims.GetAudience(); len(aud) == 0 || len(aud) == 1 && aud[0] == "" {
			return errMissingAud
		}
		if iss, _ := claims["iss"].(string); iss == "" {
			return errMissingIss
		}
		return errMalformedClaims
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
	}
	return errUnverifiable
}
