package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// Subject is the verified identity behind a request.
//
// A Subject from an IdP keeps the token it was verified from, for a token
// exchange that presents it to the IdP again (see Token). That token is
// never printed: fmt renders a Subject through String, which leaves it out,
// and it sits in an unexported field, which encoding/json and zap's
// reflection skip.
type Subject struct {
	// User is the acting user (the sub claim, or the IdP's user_claim),
	// never empty.
	User string
	// Agent is the agent acting for User (the RFC 8693 act.sub claim, or
	// the IdP's agent_claim), or "".
	Agent string
	// Issuer is the iss claim.
	Issuer string
	// Source is SourceOrchestrator or SourceIdP.
	Source string
	// Type is the token's typ header as presented, or "" without one.
	Type string
	// ID is the jti claim, or "".
	ID string
	// Expiry is the exp claim.
	Expiry time.Time
	// Fingerprint is a keyed, non-reversible tag of an IdP token (see
	// WithFingerprint), for the audit trail; "" for orchestrator
	// assertions.
	Fingerprint string
	// Claims holds the claims that are not registered ones (iss, sub, aud,
	// exp, nbf, iat, jti, act): the narrowing claims such as providers,
	// task_id or channels, or an IdP's email, groups or scp, as decoded
	// from JSON. Never nil.
	Claims map[string]any

	// token is the token as presented, kept for IdP subjects only.
	token string
}

// Token returns the IdP token this Subject was verified from, which a token
// exchange presents to the IdP as its subject token; "" for orchestrator
// assertions. It is a bearer credential: never log or forward it.
func (s *Subject) Token() string { return s.token }

// String describes s without its token.
func (s Subject) String() string {
	return fmt.Sprintf("Subject{user: %q, agent: %q, issuer: %q, source: %s, type: %q, id: %q, expiry: %s}",
		s.User, s.Agent, s.Issuer, s.Source, s.Type, s.ID, s.Expiry.Format(time.RFC3339))
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %d…) print String, so that
// a Subject printed by mistake never shows its token.
func (s Subject) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

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
	client      *http.Client
	now         func() time.Time
	logger      *zap.Logger
	fingerprint func(string) string
}

// WithHTTPClient makes the verifier fetch every JWKS and discovery document
// with client (tests use an httptest TLS server's client). Redirects are
// still not followed.
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

// WithFingerprint sets the keyed hash that tags IdP tokens in
// Subject.Fingerprint (the audit trail's identity_fingerprint). Without it
// the field stays empty.
func WithFingerprint(f func(token string) string) Option {
	return func(o *options) { o.fingerprint = f }
}

// Verifier checks assertions and IdP tokens. It is safe for concurrent use.
type Verifier struct {
	header   string
	maxSize  int
	tooLarge error
	// allowed is the union of every source's algorithms, for the
	// pre-parser; each source checks its own again.
	allowed algSet
	// orchestrator verifies the orchestrator's assertions; nil when only
	// IdPs are configured.
	orchestrator *source
	// idps maps an issuer to its source. It is nil without IdPs, and the
	// pre-parser then does not read iss.
	idps        map[string]*source
	sources     []*source
	fingerprint func(string) string
	closeOnce   sync.Once
}

// source is one identity source, the orchestrator or one IdP, with
// everything needed to verify its tokens.
type source struct {
	kind        string // SourceOrchestrator or SourceIdP
	issuers     []string
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

	// types are an IdP's accepted typ values, normalised; nil for the
	// orchestrator, whose assertions are not typed.
	types []string
	// userPath and agentPath are an IdP's claim mapping; nil for the
	// orchestrator (sub, and act.sub through the act claim).
	userPath, agentPath []string
	// required are an IdP's required claim paths.
	required [][]string
}

// staticKey is one configured key, bound to one algorithm.
type staticKey struct {
	id  string
	alg algorithm
	key any
}

// New validates cfg, loads its keys and, for each JWKS URL and discovery
// document, fetches the key set (bounded by ctx; a failure is logged and
// retried, see Ready) and starts refreshing it in the background until
// Close.
func New(ctx context.Context, cfg Config, opts ...Option) (_ *Verifier, err error) {
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
		maxSize:     cfg.MaxSize,
		tooLarge:    sizeError(cfg.MaxSize),
		fingerprint: o.fingerprint,
	}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	if cfg.orchestrated() || len(cfg.IdPs) == 0 {
		src, err := newOrchestratorSource(ctx, cfg, o)
		if err != nil {
			return nil, err
		}
		v.orchestrator = src
		v.sources = append(v.sources, src)
	}
	if len(cfg.IdPs) > 0 {
		v.idps = make(map[string]*source, len(cfg.IdPs))
	}
	for i, ic := range cfg.IdPs {
		src, err := newIdPSource(ctx, ic, o)
		if err != nil {
			return nil, fmt.Errorf("identity: %w", config.Prefix(idx("idps", i), err))
		}
		v.idps[ic.Issuer] = src
		v.sources = append(v.sources, src)
	}
	for _, src := range v.sources {
		v.allowed |= src.allowed
	}
	return v, nil
}

// newOrchestratorSource builds the source of the orchestrator's
// assertions: static keys and an optional JWKS URL.
func newOrchestratorSource(ctx context.Context, cfg Config, o options) (*source, error) {
	src := &source{
		kind:        SourceOrchestrator,
		issuers:     slices.Clone(cfg.Issuers),
		allowed:     cfg.allowedSet(),
		maxLifetime: cfg.MaxLifetime,
		leeway:      cfg.Leeway,
		now:         o.now,
	}
	var problems config.Problems
	for i, kc := range cfg.Keys {
		key, alg, err := loadVerificationKey(kc.File, kc.Algorithm)
		if err != nil {
			problems.Addf(idx("keys", i)+".file", "%v", err)
			continue
		}
		if !src.allowed.has(alg) {
			problems.Addf(idx("keys", i)+".algorithm", "key is for %s, which is not listed in algorithms", alg)
			continue
		}
		src.keys = append(src.keys, staticKey{id: kc.ID, alg: alg, key: key})
	}
	if err := problems.Err(); err != nil {
		return nil, fmt.Errorf("identity keys: %w", err)
	}
	var anonymous [numAlgorithms][]jwt.VerificationKey
	for _, k := range src.keys {
		src.staticKeys[k.alg] = append(src.staticKeys[k.alg], k.key)
		if k.id == "" {
			anonymous[k.alg] = append(anonymous[k.alg], k.key)
		}
	}
	for a := range numAlgorithms {
		src.withoutKID[a] = keyOrSet(src.staticKeys[a])
		src.anonymous[a] = keyOrSet(anonymous[a])
	}
	src.parser = newParser(src.allowed, []string{cfg.Audience}, cfg.Issuers, cfg.Leeway, o.now)
	src.staticKeyFunc = func(t *jwt.Token) (any, error) { return src.key(context.Background(), t) }

	if cfg.JWKSURL != "" {
		client, err := o.jwksClient(cfg.JWKSCAFile)
		if err != nil {
			return nil, fmt.Errorf("identity: %w", config.Prefix("jwks_ca_file", err))
		}
		src.client = client
		js, err := newJWKSSource(cfg.JWKSURL, client, cfg.JWKSUnknownKIDInterval, o.now, o.logger.Named("jwks"))
		if err != nil {
			return nil, err
		}
		src.jwks = js
		js.start(ctx, cfg.JWKSRefresh)
	}
	return src, nil
}

// newIdPSource builds the source of one IdP: keys from its discovery
// document or JWKS URL only, its audiences, token types and claim mapping.
func newIdPSource(ctx context.Context, c IdPConfig, o options) (*source, error) {
	var allowed algSet
	for _, name := range c.Algorithms {
		allowed.add(algorithmFromName(name))
	}
	src := &source{
		kind:        SourceIdP,
		issuers:     []string{c.Issuer},
		allowed:     allowed,
		maxLifetime: c.MaxLifetime,
		leeway:      c.Leeway,
		now:         o.now,
		userPath:    strings.Split(c.UserClaim, "."),
	}
	for _, t := range c.TokenTypes {
		src.types = append(src.types, normalizeType(t))
	}
	if c.AgentClaim != "" {
		src.agentPath = strings.Split(c.AgentClaim, ".")
	}
	for _, r := range c.RequiredClaims {
		src.required = append(src.required, strings.Split(r, "."))
	}
	src.parser = newParser(allowed, c.Audiences, src.issuers, c.Leeway, o.now)
	client, err := o.jwksClient(c.CAFile)
	if err != nil {
		return nil, config.Prefix("ca_file", err)
	}
	src.client = client
	log := o.logger.Named("idp").With(zap.String("issuer", c.Issuer))
	js, err := newJWKSSource(c.JWKSURL, client, c.JWKSUnknownKIDInterval, o.now, log)
	if err != nil {
		return nil, err
	}
	js.discovery, js.issuer = c.discoveryURL(), c.Issuer
	src.jwks = js
	js.start(ctx, c.JWKSRefresh)
	return src, nil
}

// jwksClient returns the client for key sets and discovery documents: the
// one given with WithHTTPClient (redirects refused), or a new one that
// trusts caFile besides the system roots.
func (o options) jwksClient(caFile string) (*http.Client, error) {
	if o.client == nil {
		return newJWKSClient(caFile)
	}
	c := *o.client
	c.CheckRedirect = outbound.RefuseRedirect
	return &c, nil
}

// newParser returns the JWT library's parser for one source: its
// algorithms, its audiences (aud must contain one), exp required, iat
// checked, leeway and clock, strict base64. A single issuer is checked by
// the library as well; several are checked by checkClaims, which checks
// membership for one issuer too.
func newParser(allowed algSet, audiences, issuers []string, leeway time.Duration, now func() time.Time) *jwt.Parser {
	var methods []string
	for a := algorithm(1); a < numAlgorithms; a++ {
		if allowed.has(a) {
			methods = append(methods, a.String())
		}
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithAudience(audiences...),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	}
	if len(issuers) == 1 {
		popts = append(popts, jwt.WithIssuer(issuers[0]))
	}
	return jwt.NewParser(popts...)
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

// Ready returns nil when the verifier can verify for every source: at once
// with static keys only, and once each key set has been fetched.
func (v *Verifier) Ready() error {
	var errs []error
	for _, src := range v.sources {
		if src.jwks == nil {
			continue
		}
		if err := src.jwks.ready(); err != nil {
			if src.kind == SourceIdP {
				err = fmt.Errorf("idp %s: %w", src.issuers[0], err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// TokenEndpoint returns the token endpoint that issuer's discovery
// document announced, where a token exchange for that IdP's tokens goes. It
// fails when issuer is not a configured IdP, when its keys are configured
// without discovery, and when the document has not been read (yet) or names
// no token endpoint.
func (v *Verifier) TokenEndpoint(issuer string) (string, error) {
	src, ok := v.idps[issuer]
	if !ok {
		return "", fmt.Errorf("token endpoint of %s: not a configured idp", issuer)
	}
	return src.jwks.tokenEndpoint()
}

// Close stops the key-set refreshes and waits for them. It is safe to call
// more than once. Verify keeps working on the keys already loaded.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		for _, src := range v.sources {
			if src.jwks != nil {
				src.jwks.close()
			}
			if src.client != nil {
				src.client.CloseIdleConnections()
			}
		}
	})
	return nil
}

// Verify checks raw and returns the Subject it names. raw is pre-parsed
// first (size, shape, header, claims without duplicate members and, with
// IdPs configured, the iss that picks the source), and only then parsed and
// verified by the JWT library with that source's keys and rules. Errors
// wrap ErrMissing or ErrInvalid and never contain raw.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Subject, error) {
	if len(raw) > v.maxSize {
		return nil, v.tooLarge
	}
	hdr, err := preparse(raw, v.maxSize, v.allowed, v.idps != nil)
	if err != nil {
		return nil, err
	}
	src := v.orchestrator
	if s, ok := v.idps[hdr.iss]; ok {
		src = s
	}
	if src == nil {
		// Only IdPs are configured, and none of them issued this token.
		return nil, errIssuer
	}
	if !src.allowed.has(hdr.alg) {
		return nil, errAlgorithmRefusals[hdr.alg]
	}
	if err := src.checkType(hdr); err != nil {
		return nil, err
	}
	claims := jwt.MapClaims{}
	kf := src.staticKeyFunc
	if src.jwks != nil {
		// Only a JWKS lookup can wait (for a fetch), so only it needs ctx.
		kf = func(t *jwt.Token) (any, error) { return src.key(ctx, t) }
	}
	tok, err := src.parser.ParseWithClaims(raw, claims, kf)
	if err != nil {
		return nil, classify(err, claims)
	}
	// The library decoded the header again; it must have seen what the
	// pre-parser saw.
	_, hasKID := tok.Header["kid"]
	typ, hasTyp := tok.Header["typ"]
	if tok.Method.Alg() != hdr.alg.String() || hasKID != hdr.hasKID || hasTyp != hdr.hasTyp || (hasTyp && typ != hdr.typ) {
		return nil, errHeaderMismatch
	}
	if err := src.checkClaims(claims); err != nil {
		return nil, err
	}
	sub := src.newSubject(claims, hdr)
	if src.kind == SourceIdP {
		sub.token = raw
		if v.fingerprint != nil {
			sub.Fingerprint = v.fingerprint(raw)
		}
	}
	return sub, nil
}

// checkType enforces an IdP's accepted token types (RFC 8725 section
// 3.11); a token without typ counts as JWT. The orchestrator's assertions
// are not typed.
func (s *source) checkType(hdr header) error {
	if s.types == nil {
		return nil
	}
	typ := TypeJWT
	if hdr.hasTyp {
		typ = normalizeType(hdr.typ)
	}
	if !slices.Contains(s.types, typ) {
		return errTokenType
	}
	return nil
}

// key chooses the verification key for t (the jwt.Keyfunc of Verify):
//   - with a kid: the static key with that id (it must be for this
//     algorithm), else the JWKS key with that kid (fetching the set again,
//     rate-limited, if the kid is unknown), else the static keys without id;
//   - without a kid: every static and JWKS key that can verify this
//     algorithm.
//
// Keys are only ever used with their one algorithm.
func (v *source) key(ctx context.Context, t *jwt.Token) (any, error) {
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

func (v *source) keyWithoutKID(ctx context.Context, alg algorithm) (any, error) {
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
// iat, aud, and iss for a single issuer): iss among the source's issuers, a
// user (a non-empty string sub, or the IdP's user claim), a well-formed
// agent (act, or the IdP's agent claim), an IdP's required claims, a string
// jti, and the lifetime limit. It runs only on claims of a token whose
// signature has been verified.
func (v *source) checkClaims(m jwt.MapClaims) error {
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
		if v.userPath == nil {
			return errMissingSub
		}
	case string:
		if sub == "" && v.userPath == nil {
			return errMissingSub
		}
	default:
		return errMalformedClaims
	}
	if v.userPath != nil {
		if u, _ := claimAt(m, v.userPath).(string); u == "" {
			return errMissingUser
		}
		// An e-mail address names a user only once the IdP has verified
		// it: an unverified one can be any address the account holder typed.
		if len(v.userPath) == 1 && v.userPath[0] == "email" && m["email_verified"] == false {
			return errEmailUnverified
		}
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
	if v.agentPath != nil {
		if a := claimAt(m, v.agentPath); a != nil {
			if s, ok := a.(string); !ok || s == "" {
				return errMalformedAgent
			}
		}
	}
	for _, path := range v.required {
		if claimAt(m, path) == nil {
			return errMissingRequired
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

// claimAt returns the claim at path (a name, or names into nested objects),
// or nil when there is none.
func claimAt(m map[string]any, path []string) any {
	var v any = m
	for _, name := range path {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		if v, ok = obj[name]; !ok {
			return nil
		}
	}
	return v
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
func (v *source) newSubject(m jwt.MapClaims, hdr header) *Subject {
	s := &Subject{Source: v.kind, Type: hdr.typ}
	if v.userPath != nil {
		s.User, _ = claimAt(m, v.userPath).(string)
	} else {
		s.User, _ = m["sub"].(string)
	}
	switch {
	case v.agentPath != nil:
		s.Agent, _ = claimAt(m, v.agentPath).(string)
	case v.kind == SourceOrchestrator:
		if act, ok := m["act"].(map[string]any); ok {
			s.Agent, _ = act["sub"].(string)
		}
	}
	s.Issuer, _ = m["iss"].(string)
	s.ID, _ = m["jti"].(string)
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
