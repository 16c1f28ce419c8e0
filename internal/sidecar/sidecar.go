package sidecar

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/journal"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/injector/vault"
	"github.com/onbehalf-dev/onbehalf/internal/metrics"
	"github.com/onbehalf-dev/onbehalf/internal/tracing"
	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy"
	"github.com/onbehalf-dev/onbehalf/proxy/certs"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// shutdownGrace is how long in-flight requests get to finish when the
// sidecar stops; Kubernetes' default termination grace is 30 s, so this
// leaves room for the rest of the pod.
const shutdownGrace = 10 * time.Second

// Options carry what a configuration file cannot: test hooks and
// in-process overrides.
type Options struct {
	// Logger receives operational logs; nil means a logger built from
	// Config.Log.
	Logger *zap.Logger
	// RootCAs replaces the system roots for upstream TLS (demo, tests).
	RootCAs *x509.CertPool
	// Store replaces the configured grant store (tests); the sidecar does
	// not close it.
	Store store.Store
	// Version is reported in the start record.
	Version string
	// Resolver replaces the egress guard's DNS resolver (tests).
	Resolver *net.Resolver
	// Dial replaces the egress guard's underlying dialer, called only
	// with addresses the guard allowed (tests record instead of dialling).
	Dial egress.DialFunc
}

// Sidecar is a built, listening sidecar.
type Sidecar struct {
	cfg      Config
	log      *zap.Logger
	version  string
	proxy    *proxy.Server
	admin    *http.Server
	store    store.Store
	ownStore bool
	policy   *policy.Engine
	auditor  *audit.Auditor
	verifier *identity.Verifier
	ca       *certs.CA
	guard    *egress.Guard
	metrics  *metrics.Metrics
	tracing  *tracing.Provider
	// refreshing is drained at shutdown so a refresh in flight is stored,
	// then closed; journal holds what it could not store.
	refreshing *oauth.Source
	// stopFeed stops following the store's change feed (nil when not).
	stopFeed func()
	journal  *journal.Journal
	// uses notes grant uses in the store's activity records; nil when the
	// store keeps none.
	uses *injector.UseRecorder
	// tokens chooses each request's token source; its exchanges in flight
	// are waited for at shutdown.
	tokens    *tokenSource
	providers map[string]*oauth.Provider
	limiter   *ratelimit.Limiter
	proxyLn   net.Listener
	adminLn   net.Listener
}

// New builds every component from cfg and opens the listeners, so that the
// egress guard knows the sidecar's own addresses before the first request.
// On error everything already opened is closed again.
func New(ctx context.Context, cfg Config, o Options) (_ *Sidecar, err error) {
	s := &Sidecar{cfg: cfg, version: o.Version, metrics: metrics.New()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.log = o.Logger
	if s.log == nil {
		if s.log, err = NewLogger(cfg.Log); err != nil {
			return nil, err
		}
	}

	if s.ca, err = certs.LoadCA(cfg.CA.Cert, cfg.CA.Key); err != nil {
		return nil, fmt.Errorf("interception CA: %w", err)
	}
	issuer := certs.NewIssuer(s.ca, certs.IssuerOptions{Capacity: cfg.CA.CacheSize, ExactNames: cfg.CA.LeafNames == LeafNamesExact})
	s.metrics.RegisterCertCache(issuer.Len, issuer.Signings)

	auditOpts := audit.Options{
		Logger: s.log.Named("audit"),
		Lost:   func(string, error) { s.metrics.AuditError() }, // the auditor logs it
	}
	if s.auditor, err = audit.New(cfg.Audit, auditOpts); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if s.verifier, err = identity.New(ctx, cfg.Identity,
		identity.WithLogger(s.log.Named("identity")),
		identity.WithFingerprint(s.auditor.Fingerprinter().Token)); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	routes, err := injector.NewTable(cfg.EffectiveRoutes())
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	if s.policy, err = policy.New(ctx, cfg.Policy, policy.Options{Logger: s.log, OnReload: s.auditReload}); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if o.Store != nil {
		s.store = o.Store
	} else {
		if s.store, err = OpenStore(ctx, cfg.Store, s.log); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		s.ownStore = true
	}
	var gopts []egress.Option
	if o.Resolver != nil {
		gopts = append(gopts, egress.WithResolver(o.Resolver))
	}
	if o.Dial != nil {
		gopts = append(gopts, egress.WithDialer(o.Dial))
	}
	roots, err := UpstreamRoots(cfg, o.RootCAs)
	if err != nil {
		return nil, err
	}
	tokens, _, err := s.buildTokens(ctx, cfg, roots)
	if err != nil {
		return nil, err
	}
	s.tokens = tokens
	if s.guard, err = egress.New(cfg.Egress, gopts...); err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}

	if s.proxyLn, err = net.Listen("tcp", cfg.Proxy.Listen); err != nil {
		return nil, fmt.Errorf("proxy listener: %w", err)
	}
	s.guard.DenyListener(s.proxyLn.Addr())
	if cfg.Admin.Listen != "" {
		if s.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			return nil, fmt.Errorf("admin listener: %w", err)
		}
		s.guard.DenyListener(s.adminLn.Addr())
	}

	if s.tracing, err = tracing.New(ctx, cfg.Tracing, o.Version); err != nil {
		return nil, err
	}
	var tracer trace.Tracer
	if cfg.Tracing.Endpoint != "" {
		tracer = s.tracing.Tracer("github.com/onbehalf-dev/onbehalf/proxy")
	}
	var uses proxy.UseRecorder
	if as, ok := s.store.(store.ActivityStore); ok {
		s.uses = injector.NewUseRecorder(as, injector.UseOptions{Logger: s.log.Named("uses"), Observe: s.metrics.UseRecord})
		uses = s.uses
	}
	if s.limiter, err = ratelimit.New(cfg.RateLimits, ratelimit.Options{
		Logger:    s.log,
		Metrics:   s.metrics,
		Providers: rateLimitHeaders(cfg.Providers),
	}); err != nil {
		return nil, fmt.Errorf("rate limits: %w", err)
	}
	s.proxy, err = proxy.New(cfg.Proxy, proxy.Deps{
		Logger:          s.log,
		Identity:        s.verifier,
		AssertionHeader: cfg.Identity.Header,
		Routes:          routes,
		Policy:          s.policy,
		Tokens:          tokens,
		Audit:           s.auditor,
		AuditFailClosed: cfg.Audit.FailClosed,
		Fingerprint:     s.auditor.Fingerprinter().Token,
		Dialer:          s.guard,
		Certs:           issuer,
		RootCAs:         o.RootCAs,
		Metrics:         s.metrics,
		Tracer:          tracer,
		Uses:            uses,
		Limiter:         s.limiter,
	})
	if err != nil {
		return nil, err
	}
	s.admin = &http.Server{
		Handler:           s.adminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          zap.NewStdLog(s.log.Named("admin")),
	}
	return s, nil
}

// OpenStore opens the grant store c describes.
func OpenStore(ctx context.Context, c StoreConfig, log *zap.Logger) (store.Store, error) {
	switch c.Backend {
	case BackendEmbedded:
		return store.OpenEmbedded(c.Embedded)
	case BackendVault:
		return vault.Open(ctx, c.Vault, vault.Options{Logger: log.Named("vault")})
	}
	return nil, fmt.Errorf("unsupported store backend %q", c.Backend)
}

// ProxyAddr is the proxy listener's address.
func (s *Sidecar) ProxyAddr() string { return s.proxyLn.Addr().String() }

// AdminAddr is the admin listener's address, or "" when disabled.
func (s *Sidecar) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

// CloseIdleConnections closes idle pooled upstream connections. Leak
// checks call it before comparing resource counts with a baseline.
func (s *Sidecar) CloseIdleConnections() {
	s.proxy.CloseIdleConnections()
	for _, p := range s.providers {
		p.CloseIdleConnections()
	}
}

// CACertPEM is the interception CA certificate agents must trust.
func (s *Sidecar) CACertPEM() []byte { return s.ca.CertPEM() }

// Run serves until ctx is done, then shuts down gracefully and releases
// everything. It returns the first listener error, if any.
func (s *Sidecar) Run(ctx context.Context) error {
	defer s.close()
	s.auditLifecycle(audit.EventStart)
	s.log.Info("sidecar started",
		zap.String("proxy", s.ProxyAddr()),
		zap.String("admin", s.AdminAddr()),
		zap.String("policy_revision", s.policy.Revision()),
		zap.Stringer("config", s.cfg))

	errc := make(chan error, 2)
	go func() { errc <- s.proxy.Serve(s.proxyLn) }()
	if s.adminLn != nil {
		go func() {
			err := s.admin.Serve(s.adminLn)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = s.admin.Shutdown(sctx)
	if serr := s.proxy.Shutdown(sctx); err == nil && serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
		err = serr
	}
	if s.refreshing != nil {
		_ = s.refreshing.Drain(sctx)
	}
	if s.uses != nil {
		s.uses.Close(sctx)
	}
	if s.tokens != nil {
		s.tokens.wait(sctx)
	}
	s.auditLifecycle(audit.EventStop)
	s.log.Info("sidecar stopped")
	return err
}

func (s *Sidecar) close() {
	if s.proxyLn != nil {
		s.proxyLn.Close()
	}
	if s.adminLn != nil {
		s.adminLn.Close()
	}
	if s.stopFeed != nil {
		s.stopFeed()
	}
	if s.refreshing != nil {
		// Heartbeats and deferred writes stop; tokens still waiting stay
		// in the journal, their leases run out.
		s.refreshing.Close()
	}
	if s.journal != nil {
		s.journal.Close()
	}
	if s.policy != nil {
		s.policy.Close()
	}
	if s.verifier != nil {
		s.verifier.Close()
	}
	if s.uses != nil {
		// After Run this returns at once; on a failed New it stops the
		// writer before the store closes.
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		s.uses.Close(ctx)
		cancel()
	}
	if s.limiter != nil {
		_ = s.limiter.Close()
	}
	if s.store != nil && s.ownStore {
		s.store.Close()
	}
	if s.auditor != nil {
		s.auditor.Close()
	}
	if s.tracing != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		_ = s.tracing.Shutdown(ctx)
	}
}

func (s *Sidecar) auditLifecycle(event string) {
	rec := &audit.Record{Event: event}
	rec.PolicyRevision = s.policy.Revision()
	rec.Extra = []zap.Field{
		zap.String(audit.ExtraVersion, s.version),
		zap.String(audit.ExtraConfigHash, configHash(s.cfg)),
		zap.String("proxy", s.ProxyAddr()),
	}
	if err := s.auditor.Write(rec); err != nil {
		s.log.Error("audit record not written", zap.String("event", event), zap.Error(err))
	}
}

func (s *Sidecar) auditReload(ev policy.ReloadEvent) {
	s.metrics.PolicyReload(ev.Revision, ev.Err)
	if s.auditor == nil {
		return
	}
	rec := &audit.Record{Event: audit.EventPolicyReload, PolicyRevision: ev.Revision}
	if ev.Err != nil {
		rec.ErrorCode = "policy_invalid"
		rec.Reason = ev.Err.Error()
	}
	if err := s.auditor.Write(rec); err != nil {
		s.log.Error("audit record not written", zap.String("event", audit.EventPolicyReload), zap.Error(err))
	}
}

// configHash identifies the configuration a sidecar started with, for the
// start record: the first 16 hex digits of the SHA-256 of its JSON form.
// The configuration holds file paths, never secrets.
func configHash(c Config) string {
	b, err := json.Marshal(c)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// rateLimitHeaders returns the rate-limit headers of each configured
// provider (its own, or its preset's).
func rateLimitHeaders(providers map[string]oauth.ProviderConfig) map[string]ratelimit.ProviderHeaders {
	out := map[string]ratelimit.ProviderHeaders{}
	for name, pc := range providers {
		r, _ := pc.Resolve() // validated
		if h := r.RateLimitHeaders; h != nil {
			out[name] = ratelimit.ProviderHeaders{Remaining: h.Remaining, Reset: h.Reset, ResetFormat: h.ResetFormat}
		}
	}
	return out
}
