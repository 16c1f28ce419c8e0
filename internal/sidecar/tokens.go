package sidecar

import (
	"context"
	"crypto/x509"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/journal"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// tokenSource routes each provider to the refreshing source when the
// provider is configured (token endpoint and client credentials), and to the
// plain store source otherwise: such grants are injected as stored and,
// once expired, need the human to reconnect.
type tokenSource struct {
	refreshing *oauth.Source
	configured map[string]bool
	plain      *injector.StoreSource
}

func (t *tokenSource) Token(ctx context.Context, provider, user string) (injector.Token, error) {
	if t.configured[provider] {
		return t.refreshing.Token(ctx, provider, user)
	}
	return t.plain.Token(ctx, provider, user)
}

// recoverTimeout bounds the start-up replay of the refresh journal: a store
// that does not answer must not keep the sidecar from starting. What is
// not written by then is written in the background.
const recoverTimeout = 30 * time.Second

// buildTokens builds the providers and the token source chain:
// cache → (refresh | store). With providers configured it opens the refresh
// journal and writes what the previous run left in it to the store (before
// any request is served). It returns the refreshing source, which must be
// drained and closed at shutdown.
func (s *Sidecar) buildTokens(ctx context.Context, cfg Config, roots *x509.CertPool) (injector.Source, *oauth.Source, error) {
	providers, err := BuildProviders(ctx, cfg, roots, s.store)
	if err != nil {
		return nil, nil, err
	}
	configured := map[string]bool{}
	for name := range providers {
		configured[name] = true
	}
	s.providers = providers
	opts := oauth.Options{Logger: s.log.Named("oauth"), OnRefresh: s.auditRefresh, Refresh: cfg.Refresh.RefreshConfig}
	if len(providers) > 0 {
		jc := cfg.JournalConfig()
		if s.journal, err = journal.Open(jc.Dir, jc.KeyFile); err != nil {
			return nil, nil, fmt.Errorf("refresh.journal: %w", err)
		}
		opts.Journal = s.journal
	}
	refreshing := oauth.NewSource(s.store, providers, opts)
	s.refreshing = refreshing
	s.metrics.RegisterDeferredWrites(refreshing.Pending)
	if s.journal != nil {
		rctx, cancel := context.WithTimeout(ctx, recoverTimeout)
		n, err := refreshing.Recover(rctx)
		cancel()
		if n > 0 || err != nil {
			s.log.Info("refresh journal replayed", zap.Int("entries", n), zap.Int("waiting_for_store", refreshing.Pending()), zap.Error(err))
		}
	}
	src := &tokenSource{refreshing: refreshing, configured: configured, plain: injector.NewStoreSource(s.store)}
	cached := injector.NewCachedSource(src, cfg.TokenCache, nil).Observe(s.metrics.TokenCache)
	return cached, refreshing, nil
}

// BuildProviders builds every configured provider: presets resolved,
// client secrets read from their files or, with client_secret_vault, from
// the store when it is Vault. roots verify the token, revocation and
// identity endpoints.
func BuildProviders(ctx context.Context, cfg Config, roots *x509.CertPool, st any) (map[string]*oauth.Provider, error) {
	secrets, _ := st.(secretReader)
	names := make([]string, 0, len(cfg.Providers))
	for name := range cfg.Providers {
		names = append(names, name)
	}
	sort.Strings(names)
	client, err := oauth.NewHTTPClient(roots)
	if err != nil {
		return nil, err
	}
	providers := make(map[string]*oauth.Provider, len(names))
	for _, name := range names {
		pc := cfg.Providers[name]
		secret, err := clientSecret(ctx, pc, secrets)
		if err != nil {
			return nil, fmt.Errorf("providers.%s: %w", name, err)
		}
		p, err := oauth.NewProvider(name, pc, secret, client)
		if err != nil {
			return nil, fmt.Errorf("providers.%s: %w", name, err)
		}
		providers[name] = p
	}
	return providers, nil
}

// secretReader reads a secret kept in the grant store's backend (Vault KV),
// for client_secret_vault.
type secretReader interface {
	ReadSecret(ctx context.Context, path, field string) (string, error)
}

func clientSecret(ctx context.Context, pc oauth.ProviderConfig, secrets secretReader) (string, error) {
	if pc.ClientSecretFile != "" {
		return oauth.ReadSecretFile(pc.ClientSecretFile)
	}
	path, field, ok := cutRef(pc.ClientSecretVault)
	if !ok {
		return "", fmt.Errorf("client_secret_vault: want \"path#field\"")
	}
	if secrets == nil {
		return "", fmt.Errorf("client_secret_vault needs store.backend: vault")
	}
	return secrets.ReadSecret(ctx, path, field)
}

func cutRef(ref string) (string, string, bool) {
	for i := len(ref) - 1; i >= 0; i-- {
		if ref[i] == '#' {
			return ref[:i], ref[i+1:], i > 0 && i < len(ref)-1
		}
	}
	return "", "", false
}

// auditRefresh turns a token-endpoint call into a refresh audit record and
// a metric. The event carries no secret.
func (s *Sidecar) auditRefresh(ev oauth.RefreshEvent) {
	s.metrics.Refresh(ev.Provider, string(ev.Outcome))
	rec := &audit.Record{
		Event:           audit.EventRefresh,
		User:            ev.User,
		Provider:        ev.Provider,
		GrantGeneration: ev.Generation,
		DurationMS:      float64(ev.Duration.Microseconds()) / 1000,
		Extra: []zap.Field{
			zap.String(audit.ExtraOutcome, string(ev.Outcome)),
			zap.Bool(audit.ExtraRotated, ev.Rotated),
		},
	}
	if ev.Outcome == oauth.OutcomeRefreshLost {
		// Tells a grant lost to a fault apart from one the user or the
		// provider revoked (outcome invalid_grant).
		rec.Reason = string(oauth.OutcomeRefreshLost)
	}
	if ev.Err != nil {
		rec.Extra = append(rec.Extra, zap.String(audit.ExtraError, ev.Err.Error()))
	}
	if err := s.auditor.Write(rec); err != nil {
		s.metrics.AuditError()
		s.log.Error("audit record not written", zap.String("event", audit.EventRefresh), zap.Error(err))
	}
}

// UpstreamRoots is the trust used for APIs and token endpoints: the system
// roots (or base, when set) plus proxy.upstream.ca_file.
func UpstreamRoots(cfg Config, base *x509.CertPool) (*x509.CertPool, error) {
	return outbound.Roots(base, cfg.Proxy.Upstream.CAFile, "proxy.upstream.ca_file")
}

var _ injector.Source = (*tokenSource)(nil)
