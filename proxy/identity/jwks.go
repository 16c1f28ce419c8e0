package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// JWKS fetch limits.
const (
	// jwksFetchTimeout bounds one JWKS fetch end to end; requests waiting on
	// a fetch for an unknown kid wait at most this long.
	jwksFetchTimeout = 10 * time.Second
	// jwksMaxIdleConns keeps the one kept-alive JWKS connection (and a
	// spare) between refreshes.
	jwksMaxIdleConns = 2
	// maxJWKSBytes bounds the JWKS document. Real sets hold a handful of
	// keys in a few KiB; the limit keeps a hostile or broken server from
	// filling memory.
	maxJWKSBytes = 256 << 10
	// maxJWKSKeys bounds how many keys of a set are kept, which also bounds
	// the work for a token without kid.
	maxJWKSKeys = 64
	// maxDiscoveryBytes bounds an OpenID Connect discovery document; real
	// ones are a few KiB (Entra ID's is among the larger at about 2 KiB).
	maxDiscoveryBytes = 64 << 10
)

// newJWKSClient returns the HTTP client used to fetch a JWKS when none is
// given with WithHTTPClient (see package outbound): no proxy from the
// environment (the JWKS is fetched directly, never through whatever
// HTTPS_PROXY the pod inherits), system roots plus the PEM bundle caFile
// (if not empty), timeouts on every phase, and no redirects followed: a
// JWKS that moved must be reconfigured, not followed wherever a response
// points. The URL is the operator's, so the egress guard is not applied.
func newJWKSClient(caFile string) (*http.Client, error) {
	o := outbound.DefaultOptions()
	o.CAFile = caFile // New reports errors under jwks_ca_file
	o.ResponseHeaderTimeout = jwksFetchTimeout
	o.Timeout = jwksFetchTimeout
	o.MaxIdleConns = jwksMaxIdleConns
	o.CheckRedirect = outbound.RefuseRedirect
	return outbound.Client(o)
}

// jwksSource holds the keys of one JWKS URL. Keys live in a jwkset memory
// storage, looked up by keyfunc (which also enforces a JWK's alg member).
// Fetches are single-flight: the background refresh and unknown-kid
// refreshes share one in-flight fetch, and unknown kids cause at most one
// fetch per interval, measured on the verifier's clock.
//
// With a discovery URL, every fetch first reads the issuer's OpenID Connect
// discovery document for the current jwks_uri (and token_endpoint); when the
// document cannot be read, the last known jwks_uri is used.
type jwksSource struct {
	// discovery is the discovery document's URL, or "" when the key set's
	// URL is configured; issuer is what the document must name as its
	// issuer.
	discovery string
	issuer    string
	client    *http.Client
	store     *jwkset.MemoryJWKSet
	kf        keyfunc.Keyfunc
	now       func() time.Time
	interval  time.Duration
	logger    *zap.Logger

	ctx    context.Context // ends background work; cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	loaded atomic.Bool // a fetch has succeeded

	mu          sync.Mutex
	url         string // the key set's URL; "" until discovery finds it
	tokenURL    string // the discovery document's token_endpoint
	discovered  bool   // a discovery document has been read
	closed      bool
	lastUnknown time.Time     // start of the last unknown-kid fetch
	inflight    chan struct{} // closed when the running fetch ends; nil when none runs
}

func newJWKSSource(url string, client *http.Client, unknownKIDInterval time.Duration, now func() time.Time, logger *zap.Logger) (*jwksSource, error) {
	store := jwkset.NewMemoryStorage()
	ctx, cancel := context.WithCancel(context.Background())
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: store})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("jwks keyfunc: %w", err)
	}
	return &jwksSource{
		url:      url,
		client:   client,
		store:    store,
		kf:       kf,
		now:      now,
		interval: unknownKIDInterval,
		logger:   logger,
		ctx:      ctx,
		cancel:   cancel,
	}, nil
}

// start fetches the set once (bounded by ctx) and then refreshes it every
// refresh period until close. A failed first fetch is logged, not fatal: the
// issuer may come up after the sidecar, and Ready reports the state.
func (s *jwksSource) start(ctx context.Context, refresh time.Duration) {
	if err := s.fetch(ctx); err != nil {
		s.logger.Warn("jwks fetch failed; will retry", zap.String("url", s.source()), zap.Error(err))
	}
	s.wg.Add(1)
	go s.run(refresh)
}

func (s *jwksSource) run(refresh time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(refresh)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if ch := s.shared(); ch != nil {
				select {
				case <-ch:
				case <-s.ctx.Done():
					return
				}
			}
		}
	}
}

// close stops background work and waits for it.
func (s *jwksSource) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// ready returns nil once a fetch has succeeded.
func (s *jwksSource) ready() error {
	if s.loaded.Load() {
		return nil
	}
	return errors.New("jwks not loaded yet")
}

// shared returns the channel of the in-flight fetch, starting one if none
// runs, or nil after close.
func (s *jwksSource) shared() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sharedLocked()
}

func (s *jwksSource) sharedLocked() <-chan struct{} {
	if s.closed {
		return nil
	}
	if s.inflight != nil {
		return s.inflight
	}
	ch := make(chan struct{})
	s.inflight = ch
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.fetch(s.ctx); err != nil && s.ctx.Err() == nil {
			s.logger.Warn("jwks refresh failed; keeping the previous keys", zap.String("url", s.source()), zap.Error(err))
		}
		s.mu.Lock()
		s.inflight = nil
		s.mu.Unlock()
		close(ch)
	}()
	return ch
}

// refreshForUnknownKID waits for a fetch that may bring a new kid: the one
// already running, or a new one if the last unknown-kid fetch started at
// least an interval ago. It reports whether a fetch completed, so that the
// caller should look again.
func (s *jwksSource) refreshForUnknownKID(ctx context.Context) bool {
	s.mu.Lock()
	var ch <-chan struct{} = s.inflight
	if ch == nil {
		now := s.now()
		if !s.lastUnknown.IsZero() && now.Sub(s.lastUnknown) < s.interval {
			s.mu.Unlock()
			return false
		}
		s.lastUnknown = now
		ch = s.sharedLocked()
	}
	s.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// source names where the keys come from, for logs: the discovery URL, or
// the key set's URL.
func (s *jwksSource) source() string {
	if s.discovery != "" {
		return s.discovery
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// tokenEndpoint returns the token_endpoint of the last discovery document.
func (s *jwksSource) tokenEndpoint() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.discovery == "":
		return "", errors.New("token endpoint: keys are configured without discovery; configure the token endpoint")
	case !s.discovered:
		return "", errors.New("token endpoint: discovery document not read yet")
	case s.tokenURL == "":
		return "", errors.New("token endpoint: the discovery document names none")
	}
	return s.tokenURL, nil
}

// discoveryDoc is what this package reads from an OpenID Connect discovery
// document.
type discoveryDoc struct {
	Issuer        string `json:"issuer"`
	JWKSURI       string `json:"jwks_uri"`
	TokenEndpoint string `json:"token_endpoint"`
}

// discover reads the discovery document and records its jwks_uri and
// token_endpoint. The document must name exactly the configured issuer
// (OpenID Connect Discovery 1.0, section 4.3), so a document served for
// another issuer cannot substitute its keys, and its URLs must be https
// (or http on loopback).
func (s *jwksSource) discover(ctx context.Context) error {
	body, err := s.get(ctx, s.discovery, "application/json", maxDiscoveryBytes)
	if err != nil {
		return fmt.Errorf("fetch discovery document: %w", err)
	}
	var doc discoveryDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("decode discovery document: %w", err)
	}
	switch {
	case doc.Issuer != s.issuer:
		return errors.New("discovery document names another issuer")
	case doc.JWKSURI == "":
		return errors.New("discovery document has no jwks_uri")
	}
	if msg := checkFetchURL(doc.JWKSURI); msg != "" {
		return fmt.Errorf("discovery document: jwks_uri %s", msg)
	}
	tokenURL := doc.TokenEndpoint
	if tokenURL != "" && checkFetchURL(tokenURL) != "" {
		tokenURL = "" // unusable; TokenEndpoint says there is none
	}
	s.mu.Lock()
	s.url, s.tokenURL, s.discovered = doc.JWKSURI, tokenURL, true
	s.mu.Unlock()
	return nil
}

// get fetches url and returns its body, bounded by limit bytes.
func (s *jwksSource) get(ctx context.Context, url, accept string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("unexpected status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("document larger than %d bytes", limit)
	}
	return body, nil
}

// fetch downloads the set (after the discovery document, when there is
// one) and replaces the stored keys with its acceptable ones. On any error
// the previous keys stay.
func (s *jwksSource) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	if s.discovery != "" {
		if err := s.discover(ctx); err != nil {
			s.mu.Lock()
			known := s.url != ""
			s.mu.Unlock()
			if !known {
				return err
			}
			s.logger.Warn("discovery failed; using the last known jwks_uri", zap.String("url", s.discovery), zap.Error(err))
		}
	}
	s.mu.Lock()
	url := s.url
	s.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("fetch jwks: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch jwks: unexpected status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("fetch jwks: read body: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return fmt.Errorf("fetch jwks: document larger than %d bytes", maxJWKSBytes)
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("decode jwks: %w", err)
	}
	if set.Keys == nil {
		return errors.New("decode jwks: no keys member")
	}
	keys := make([]jwkset.JWK, 0, min(len(set.Keys), maxJWKSKeys))
	for i, m := range set.Keys {
		if len(keys) == maxJWKSKeys {
			s.logger.Warn("jwks has too many keys; ignoring the rest", zap.Int("kept", maxJWKSKeys), zap.Int("total", len(set.Keys)))
			break
		}
		jwk, err := acceptJWK(m)
		if err != nil {
			s.logger.Warn("jwks key ignored", zap.Int("index", i), zap.String("kid", m.KID), zap.Error(err))
			continue
		}
		keys = append(keys, jwk)
	}
	if err := s.store.KeyReplaceAll(ctx, keys); err != nil {
		return fmt.Errorf("store jwks: %w", err)
	}
	s.loaded.Store(true)
	s.logger.Debug("jwks refreshed", zap.String("url", url), zap.Int("keys", len(keys)))
	return nil
}

// acceptJWK turns one member of a JWKS into a verification key, or says why
// it is not one. A set is public: symmetric keys and private key material in
// it are refused (whoever can read the set could sign with them), as are
// encryption keys and key types or sizes this package does not verify with.
func acceptJWK(m jwkset.JWKMarshal) (jwkset.JWK, error) {
	switch {
	case m.KTY == jwkset.KtyOct:
		return jwkset.JWK{}, errors.New("symmetric key in a public key set")
	case m.D != "" || m.P != "" || m.Q != "" || m.K != "":
		return jwkset.JWK{}, errors.New("private key material in a public key set")
	case m.USE != "" && m.USE != jwkset.UseSig:
		return jwkset.JWK{}, errors.New("not a signature key (use)")
	case len(m.KEYOPS) > 0 && !slices.Contains(m.KEYOPS, jwkset.KeyOpsVerify):
		return jwkset.JWK{}, errors.New("key_ops excludes verify")
	}
	jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
	if err != nil {
		return jwkset.JWK{}, err
	}
	switch k := jwk.Key().(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if n := k.Curve.Params().Name; n != "P-256" && n != "P-384" {
			return jwkset.JWK{}, fmt.Errorf("unsupported curve %s", n)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return jwkset.JWK{}, fmt.Errorf("RSA key has %d bits; at least %d required", k.N.BitLen(), minRSABits)
		}
	default:
		return jwkset.JWK{}, fmt.Errorf("unsupported key type %T", k)
	}
	return jwk, nil
}

// keyByID returns the key for t's kid, fetching the set again (rate-limited)
// when the kid is unknown. It returns errUnknownKID when no key has that
// kid and errKeyAlg when the key cannot verify alg.
func (s *jwksSource) keyByID(ctx context.Context, t *jwt.Token, alg algorithm) (any, error) {
	key, err := s.lookup(ctx, t, alg)
	if err == errUnknownKID && s.refreshForUnknownKID(ctx) {
		key, err = s.lookup(ctx, t, alg)
	}
	return key, err
}

func (s *jwksSource) lookup(ctx context.Context, t *jwt.Token, alg algorithm) (any, error) {
	key, err := s.kf.KeyfuncCtx(ctx)(t)
	switch {
	case errors.Is(err, jwkset.ErrKeyNotFound):
		return nil, errUnknownKID
	case err != nil:
		// keyfunc refuses a key whose alg member differs from the token's.
		return nil, errKeyAlg
	case !keyFits(alg, key):
		return nil, errKeyAlg
	}
	return key, nil
}

// keysFor returns the keys of the set that can verify alg, for tokens that
// carry no kid. A key with an alg member only verifies that alg.
func (s *jwksSource) keysFor(ctx context.Context, alg algorithm) []jwt.VerificationKey {
	all, err := s.store.KeyReadAll(ctx)
	if err != nil {
		return nil
	}
	var out []jwt.VerificationKey
	for _, j := range all {
		if a := j.Marshal().ALG; a != "" && string(a) != alg.String() {
			continue
		}
		if k := j.Key(); keyFits(alg, k) {
			out = append(out, k)
		}
	}
	return out
}
