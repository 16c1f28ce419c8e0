package identity

import (
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// DefaultHeader is the request header that carries the assertion.
const DefaultHeader = "Onbehalf-Assertion"

// Defaults and bounds of the configuration.
const (
	// defaultJWKSRefresh is how often the JWKS is fetched in the background:
	// rotations are announced ahead of use, and an unknown kid triggers an
	// earlier fetch anyway.
	defaultJWKSRefresh = 5 * time.Minute
	// defaultUnknownKIDInterval spaces JWKS fetches caused by unknown kids,
	// so a flood of made-up kids costs the issuer one request per interval.
	defaultUnknownKIDInterval = 30 * time.Second
	// minJWKSInterval is the shortest refresh or unknown-kid interval: less
	// than a second between fetches hammers the issuer for no gain.
	minJWKSInterval = time.Second
	// defaultLeeway absorbs clock skew between the orchestrator and the
	// sidecar.
	defaultLeeway = 30 * time.Second
	// maxLeeway caps the leeway: beyond a few minutes it stops being skew
	// and starts extending every assertion's life.
	maxLeeway = 5 * time.Minute
	// defaultMaxLifetime is the longest exp-iat accepted: assertions are
	// minted per task step and should be short-lived bearer credentials.
	defaultMaxLifetime = 15 * time.Minute
	// maxMaxLifetime is the largest max_lifetime that can be configured. An
	// assertion is a bearer credential held by a prompt-injectable agent;
	// orchestrators re-mint rather than hand out long-lived ones.
	maxMaxLifetime = time.Hour
	// defaultMaxSize bounds the assertion: a signed JWT with a few narrowing
	// claims is 0.5–2 KiB; 8 KiB is the common per-header limit of servers.
	defaultMaxSize = 8192
	// minMaxSize is the smallest max_size that fits a real signed token.
	minMaxSize = 256
	// maxMaxSize keeps max_size below typical total header limits (64 KiB).
	maxMaxSize = 64 << 10
)

// defaultAlgorithms are the algorithms accepted when the configuration names
// none: modern asymmetric signatures only.
var defaultAlgorithms = []string{"EdDSA", "ES256", "RS256"}

// Config configures assertion verification. The zero value is not usable;
// start from DefaultConfig.
type Config struct {
	// Header is the request header carrying the assertion.
	Header string `yaml:"header"`
	// Audience is this sidecar's audience; the token's aud must contain it.
	Audience string `yaml:"audience"`
	// Issuers lists the accepted iss values.
	Issuers []string `yaml:"issuers"`
	// Algorithms is the alg allow-list (EdDSA, ES256, ES384, RS256, RS384,
	// RS512, PS256, HS256). "none" is never accepted.
	Algorithms []string `yaml:"algorithms"`
	// Keys are static verification keys.
	Keys []KeyConfig `yaml:"keys"`
	// JWKSURL is an http(s) URL serving the issuer's JSON Web Key Set.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSCAFile is an extra PEM CA bundle trusted for an https JWKSURL, in
	// addition to the system roots.
	JWKSCAFile string `yaml:"jwks_ca_file"`
	// JWKSRefresh is the background JWKS refresh period.
	JWKSRefresh time.Duration `yaml:"jwks_refresh"`
	// JWKSUnknownKIDInterval is the least time between two JWKS fetches
	// caused by tokens naming an unknown kid.
	JWKSUnknownKIDInterval time.Duration `yaml:"jwks_unknown_kid_interval"`
	// Leeway is the clock-skew allowance for exp, nbf and iat.
	Leeway time.Duration `yaml:"leeway"`
	// MaxLifetime is the longest accepted exp-iat (or exp-now without iat).
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// MaxSize is the largest accepted assertion, in bytes. It applies to
	// IdP tokens too: the size is checked before anything says whose token
	// it is.
	MaxSize int `yaml:"max_size"`
	// IdPs are OpenID Connect issuers whose tokens are accepted beside (or
	// instead of) the orchestrator's assertions, each with its own keys,
	// audiences, token types and claim mapping. A token is matched to its
	// issuer by its iss claim before any signature work.
	IdPs []IdPConfig `yaml:"idps"`
}

// KeyConfig is one static verification key.
type KeyConfig struct {
	// ID is the kid this key answers to. A key without an ID is tried for
	// tokens without a kid and for kids no other key claims.
	ID string `yaml:"id"`
	// File is a PEM public key (Ed25519, ECDSA P-256/P-384, RSA of at least
	// 2048 bits) or, with Algorithm HS256, a file holding a shared secret of
	// at least 32 bytes.
	File string `yaml:"file"`
	// Algorithm is the one algorithm this key verifies. Empty means: EdDSA
	// for Ed25519, ES256/ES384 for P-256/P-384, RS256 for RSA.
	Algorithm string `yaml:"algorithm"`
}

// DefaultConfig returns a Config with every default filled in. Audience,
// Issuers and a key source (or at least one IdP) must still be set.
func DefaultConfig() Config {
	return Config{
		Header:                 DefaultHeader,
		Algorithms:             slices.Clone(defaultAlgorithms),
		JWKSRefresh:            defaultJWKSRefresh,
		JWKSUnknownKIDInterval: defaultUnknownKIDInterval,
		Leeway:                 defaultLeeway,
		MaxLifetime:            defaultMaxLifetime,
		MaxSize:                defaultMaxSize,
	}
}

// reservedHeaders may not carry the assertion: they are credentials of
// their own, hop-by-hop, or framing.
var reservedHeaders = []string{
	"Authorization", "Proxy-Authorization", "Proxy-Authenticate", "Proxy-Connection",
	"Cookie", "Host", "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding",
	"Upgrade", "Content-Length",
}

// Validate reports every problem with c at once, as an errors.Join of
// *config.FieldError with paths relative to this component. It reads no
// files; New does.
func (c Config) Validate() error {
	var p config.Problems
	switch {
	case c.Header == "":
		p.Addf("header", "required")
	case !httpguts.ValidHeaderFieldName(c.Header):
		p.Addf("header", "%q is not a valid header name", c.Header)
	case slices.Contains(reservedHeaders, http.CanonicalHeaderKey(c.Header)):
		p.Addf("header", "%s cannot carry the assertion", http.CanonicalHeaderKey(c.Header))
	}
	// The orchestrator's section may be left out entirely when IdPs name
	// the users; any part of it given asks for all of it.
	orchestrator := c.orchestrated() || len(c.IdPs) == 0
	if orchestrator && c.Audience == "" {
		p.Addf("audience", "required")
	}
	if orchestrator && len(c.Issuers) == 0 {
		p.Addf("issuers", "at least one issuer is required")
	}
	for i, iss := range c.Issuers {
		switch {
		case iss == "":
			p.Addf(idx("issuers", i), "must not be empty")
		case slices.Index(c.Issuers, iss) < i:
			p.Addf(idx("issuers", i), "duplicate issuer %q", iss)
		}
	}
	allowed := validateAlgorithms(&p, c.Algorithms, true)
	for i, k := range c.Keys {
		path := idx("keys", i)
		if k.File == "" {
			p.Addf(path+".file", "required")
		}
		if k.Algorithm != "" {
			a := algorithmFromName(k.Algorithm)
			switch {
			case a == algNone:
				p.Addf(path+".algorithm", "none is never allowed")
			case !a.configurable():
				p.Addf(path+".algorithm", "unsupported algorithm %q", k.Algorithm)
			case !allowed.has(a):
				p.Addf(path+".algorithm", "%s is not listed in algorithms", k.Algorithm)
			}
		}
		if k.ID != "" {
			for j := range i {
				if c.Keys[j].ID == k.ID {
					p.Addf(path+".id", "duplicate key id %q", k.ID)
					break
				}
			}
		}
	}
	if orchestrator && len(c.Keys) == 0 && c.JWKSURL == "" {
		p.Addf("", "keys or jwks_url is required")
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		switch {
		case err != nil:
			p.Addf("jwks_url", "not a URL")
		case u.Scheme != "https" && u.Scheme != "http":
			p.Addf("jwks_url", "must be an http or https URL")
		case u.Host == "":
			p.Addf("jwks_url", "must name a host")
		case u.User != nil:
			p.Addf("jwks_url", "must not carry credentials")
		case u.Fragment != "":
			p.Addf("jwks_url", "must not have a fragment")
		}
		if err == nil && u.Scheme == "http" && c.JWKSCAFile != "" {
			p.Addf("jwks_ca_file", "only used with an https jwks_url")
		}
		if c.JWKSRefresh < minJWKSInterval {
			p.Addf("jwks_refresh", "must be at least %s", minJWKSInterval)
		}
		if c.JWKSUnknownKIDInterval < minJWKSInterval {
			p.Addf("jwks_unknown_kid_interval", "must be at least %s", minJWKSInterval)
		}
	} else if c.JWKSCAFile != "" {
		p.Addf("jwks_ca_file", "set without jwks_url")
	}
	if c.Leeway < 0 || c.Leeway > maxLeeway {
		p.Addf("leeway", "must be between 0s and %s", maxLeeway)
	}
	if c.MaxLifetime <= 0 || c.MaxLifetime > maxMaxLifetime {
		p.Addf("max_lifetime", "must be more than 0s and at most %s", maxMaxLifetime)
	}
	if c.MaxSize < minMaxSize || c.MaxSize > maxMaxSize {
		p.Addf("max_size", "must be between %d and %d bytes", minMaxSize, maxMaxSize)
	}
	for i, idp := range c.IdPs {
		path := idx("idps", i)
		p.Add(path, idp.Validate())
		if idp.Issuer == "" {
			continue
		}
		if slices.Contains(c.Issuers, idp.Issuer) {
			p.Addf(path+".issuer", "%q is also an orchestrator issuer; a token must name one source", idp.Issuer)
		}
		if slices.IndexFunc(c.IdPs[:i], func(o IdPConfig) bool { return o.Issuer == idp.Issuer }) >= 0 {
			p.Addf(path+".issuer", "duplicate issuer %q", idp.Issuer)
		}
	}
	return p.Err()
}

// orchestrated reports whether any part of the orchestrator's section is
// set.
func (c Config) orchestrated() bool {
	return c.Audience != "" || len(c.Issuers) > 0 || len(c.Keys) > 0 || c.JWKSURL != ""
}

// IdP returns the IdP entry for issuer, if there is one.
func (c Config) IdP(issuer string) (IdPConfig, bool) {
	for _, idp := range c.IdPs {
		if idp.Issuer == issuer {
			return idp, true
		}
	}
	return IdPConfig{}, false
}

// validateAlgorithms checks an algorithms allow-list (config key
// "algorithms") into p and returns the valid ones as a set. withHMAC says
// whether HS256 may be listed: only orchestrator keys, which are shared
// secrets, can use it; an IdP publishes public keys.
func validateAlgorithms(p *config.Problems, names []string, withHMAC bool) algSet {
	want := "EdDSA, ES256, ES384, RS256, RS384, RS512, PS256"
	if withHMAC {
		want += ", HS256"
	}
	var allowed algSet
	if len(names) == 0 {
		p.Addf("algorithms", "at least one algorithm is required")
	}
	for i, name := range names {
		a := algorithmFromName(name)
		switch {
		case a == algNone:
			p.Addf(idx("algorithms", i), "none is never allowed")
		case a == algHS256 && !withHMAC:
			p.Addf(idx("algorithms", i), "HS256 needs a shared secret; an IdP publishes public keys")
		case !a.configurable():
			p.Addf(idx("algorithms", i), "unsupported algorithm %q (want one of %s)", name, want)
		case allowed.has(a):
			p.Addf(idx("algorithms", i), "duplicate algorithm %s", name)
		default:
			allowed.add(a)
		}
	}
	return allowed
}

// allowedSet returns the validated allow-list as a set.
func (c Config) allowedSet() algSet {
	var s algSet
	for _, name := range c.Algorithms {
		if a := algorithmFromName(name); a.configurable() {
			s.add(a)
		}
	}
	return s
}

func idx(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// CheckFiles loads every file c names the way New does — each static key
// (parsed, and checked against algorithms) and the JWKS CA bundle — and
// reports each one that is missing, unreadable or unfit, with its key path.
// It fetches nothing. Call it on a configuration that validates.
func (c Config) CheckFiles() error {
	var p config.Problems
	allowed := c.allowedSet()
	for i, k := range c.Keys {
		if k.File == "" {
			continue // Validate reports it
		}
		_, alg, err := loadVerificationKey(k.File, k.Algorithm)
		switch {
		case err != nil:
			p.Addf(idx("keys", i)+".file", "%s", fileProblem(k.File, err))
		case !allowed.has(alg):
			p.Addf(idx("keys", i)+".file", "%s holds a key for %s, which is not listed in algorithms", k.File, alg)
		}
	}
	if c.JWKSCAFile != "" {
		if _, err := newJWKSClient(c.JWKSCAFile); err != nil {
			p.Addf("jwks_ca_file", "%s", fileProblem(c.JWKSCAFile, err))
		}
	}
	for i, idp := range c.IdPs {
		if idp.CAFile == "" {
			continue
		}
		if _, err := newJWKSClient(idp.CAFile); err != nil {
			p.Addf(idx("idps", i)+".ca_file", "%s", fileProblem(idp.CAFile, err))
		}
	}
	return p.Err()
}

// fileProblem describes err about the file at path, naming the path once.
func fileProblem(path string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return path + ": " + err.Error()
}
