package sidecar

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/connect"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/journal"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/metrics"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
	"github.com/onbehalf-dev/onbehalf/proxy"
)

// tokenSource chooses, per provider, where a request's token comes from:
//
//   - a provider with an exchange section: token exchange with the IdP token
//     the request presented (oauth.Exchanger, with its own cache and
//     single-flight); when that gives no token and the provider's fallback
//     is "grant", the stored grant as below;
//   - a configured provider (token endpoint and client credentials): the
//     cache, then the stored grant, refreshed when about to expire;
//   - any other provider: the cache, then the stored grant as is (once
//     expired, the human must reconnect).
type tokenSource struct {
	exchangers map[string]*oauth.Exchanger
	grants     injector.Source // cache → (refresh | store)
	log        *zap.Logger
	metrics    *metrics.Metrics
}

func (t *tokenSource) Token(ctx context.Context, req injector.TokenRequest) (injector.Token, error) {
	if ex := t.exchangers[req.Provider]; ex != nil {
		tok, err := ex.Token(ctx, req)
		if err == nil || ex.Fallback() != oauth.FallbackGrant {
			return tok, err
		}
		if ctx.Err() != nil {
			return injector.Token{}, err
		}
		// The exchange's own failure was logged with its audit record;
		// a request without the IdP's token is ordinary.
		t.metrics.ExchangeFallback(req.Provider)
		if ce := t.log.Check(zap.DebugLevel, "no token by exchange; using the stored grant"); ce != nil {
			ce.Write(zap.String("provider", req.Provider), zap.String("user", req.User), zap.Error(err))
		}
	}
	tok, err := t.grants.Token(ctx, req.Provider, req.User)
	tok.Source = injector.SourceGrant
	return tok, err
}

// wait waits for exchanges in flight, until ctx ends: their audit records
// are written before the auditor closes.
func (t *tokenSource) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		for _, ex := range t.exchangers {
			ex.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// grantSource routes each provider to the refreshing source when the
// provider is configured (token endpoint and client credentials), and to the
// plain store source otherwise.
type grantSource struct {
	refreshing *oauth.Source
	configured map[string]bool
	plain      *injector.StoreSource
}

func (g *grantSource) Token(ctx context.Context, provider, user string) (injector.Token, error) {
	if g.configured[provider] {
		return g.refreshing.Token(ctx, provider, user)
	}
	return g.plain.Token(ctx, provider, user)
}

// feedRead returns what is told each read of the change feed: metrics, and
// a log line when reading starts or stops working (not one per read).
func (s *Sidecar) feedRead() func(error) {
	log := s.log.Named("changes")
	last := ""
	return func(err error) {
		result := metrics.FeedOK
		switch {
		case errors.Is(err, store.ErrNotFound):
			result = metrics.FeedMissing
		case err != nil:
			result = metrics.FeedFailed
		}
		s.metrics.ChangeFeedRead(result)
		if result == last {
			return
		}
		last = result
		switch result {
		case metrics.FeedOK:
			log.Info("following the grant store's change feed: cached tokens are kept until they expire, and revocations seen within seconds")
		case metrics.FeedMissing:
			log.Warn("the grant store has no change feed (no connect server has started on it): cached tokens are kept for the token cache TTL only")
		default:
			log.Warn("cannot read the grant store's change feed: cached tokens are kept for the token cache TTL only until it can", zap.Error(err))
		}
	}
}

// recoverTimeout bounds the start-up replay of the refresh journal: a store
// that does not answer must not keep the sidecar from starting. What is
// not written by then is written in the background.
const recoverTimeout = 30 * time.Second

// buildTokens builds the providers, their exchangers and the token source
// chain: exchange → cache → (refresh | store). With providers configured it
// opens the refresh journal and writes what the previous run left in it to
// the store (before any request is served). It returns the refreshing
// source, which must be drained and closed at shutdown.
func (s *Sidecar) buildTokens(ctx context.Context, cfg Config, roots *x509.CertPool) (*tokenSource, *oauth.Source, error) {
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
	grants := &grantSource{refreshing: refreshing, configured: configured, plain: injector.NewStoreSource(s.store)}
	cached := injector.NewCachedSource(grants, cfg.TokenCache, nil).Observe(s.metrics.TokenCache)
	if feed, ok := s.store.(store.ChangeFeed); ok && cfg.TokenCache.TTL > 0 {
		s.stopFeed = cached.FollowChanges(ctx, feed, injector.FeedOptions{OnRead: s.feedRead()})
	}
	s.metrics.RegisterTokenCache(func() (int, int64, uint64) {
		st := cached.Stats()
		return st.Entries, st.Bytes, st.Lookups
	})
	exchangers, err := s.buildExchangers(cfg, providers)
	if err != nil {
		return nil, nil, err
	}
	return &tokenSource{exchangers: exchangers, grants: cached, log: s.log.Named("exchange"), metrics: s.metrics}, refreshing, nil
}

// buildExchangers builds the exchanger of every provider with an exchange
// section. Exchanged tokens are cached within the token cache's bounds, and
// an IdP's token endpoint, when not configured, comes from its discovery
// document.
func (s *Sidecar) buildExchangers(cfg Config, providers map[string]*oauth.Provider) (map[string]*oauth.Exchanger, error) {
	secrets, _ := s.store.(secretReader)
	ttl := cfg.TokenCache.TTL
	if ttl <= 0 {
		ttl = -1 // the token cache is off: so is the exchange cache
	}
	out := map[string]*oauth.Exchanger{}
	for name, p := range providers {
		xc := p.Config().Exchange
		if xc == nil {
			continue
		}
		secret, err := clientSecret(context.Background(), xc.ClientSecretFile, xc.ClientSecretVault, secrets)
		if err != nil {
			return nil, fmt.Errorf("providers.%s.exchange: %w", name, err)
		}
		ex, err := oauth.NewExchanger(p, secret, oauth.ExchangeOptions{
			TokenEndpoint: s.verifier.TokenEndpoint,
			CacheTTL:      ttl,
			CacheEntries:  cfg.TokenCache.MaxEntries,
			OnExchange:    s.auditExchange,
		})
		if err != nil {
			return nil, fmt.Errorf("providers.%s.exchange: %w", name, err)
		}
		out[name] = ex
	}
	return out, nil
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
	var mcpClient *http.Client
	providers := make(map[string]*oauth.Provider, len(names))
	for _, name := range names {
		pc := cfg.Providers[name]
		c, secret := client, ""
		if pc.IsMCP() {
			// An MCP server's token endpoint was discovered, not
			// configured: its dials pass the egress guard.
			if mcpClient == nil {
				if mcpClient, err = MCPClient(cfg, roots); err != nil {
					return nil, err
				}
			}
			c = mcpClient
		}
		if pc.ClientSecretFile != "" || pc.ClientSecretVault != "" || !pc.IsMCP() {
			if secret, err = clientSecret(ctx, pc.ClientSecretFile, pc.ClientSecretVault, secrets); err != nil {
				return nil, fmt.Errorf("providers.%s: %w", name, err)
			}
		}
		p, err := oauth.NewProvider(name, pc, secret, c)
		if err != nil {
			return nil, fmt.Errorf("providers.%s: %w", name, err)
		}
		providers[name] = p
	}
	return providers, nil
}

// MCPClient returns the HTTP client for what MCP servers' metadata names:
// their authorization servers' token, revocation and registration
// endpoints, and (for the connect server) the discovery documents. Unlike
// configured endpoints these are chosen by a remote server, so every dial
// passes an egress guard built from cfg.Egress; roots verify TLS.
func MCPClient(cfg Config, roots *x509.CertPool) (*http.Client, error) {
	c, err := connect.NewMCPClient(cfg.Egress, roots)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	return c, nil
}

// secretReader reads a secret kept in the grant store's backend (Vault KV),
// for client_secret_vault.
type secretReader interface {
	ReadSecret(ctx context.Context, path, field string) (string, error)
}

func clientSecret(ctx context.Context, file, vaultRef string, secrets secretReader) (string, error) {
	if file != "" {
		return oauth.ReadSecretFile(file)
	}
	path, field, ok := cutRef(vaultRef)
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

// auditExchange turns a token exchange into an exchange audit record and a
// metric. The event carries no secret.
func (s *Sidecar) auditExchange(ev oauth.ExchangeEvent) {
	s.metrics.Exchange(ev.Provider, string(ev.Outcome))
	rec := &audit.Record{
		Event:       audit.EventExchange,
		User:        ev.User,
		Provider:    ev.Provider,
		IdentityJTI: ev.IdentityJTI,
		TokenSource: injector.SourceExchange,
		DurationMS:  float64(ev.Duration.Microseconds()) / 1000,
		Extra: []zap.Field{
			zap.String(audit.ExtraOutcome, string(ev.Outcome)),
			zap.String(audit.ExtraStep, ev.Step),
		},
	}
	if ev.Err != nil {
		rec.Extra = append(rec.Extra, zap.String(audit.ExtraError, ev.Err.Error()))
		s.log.Warn("token exchange failed", zap.String("provider", ev.Provider), zap.String("user", ev.User),
			zap.String("outcome", string(ev.Outcome)), zap.Error(ev.Err))
	}
	if err := s.auditor.Write(rec); err != nil {
		s.metrics.AuditError()
		s.log.Error("audit record not written", zap.String("event", audit.EventExchange), zap.Error(err))
	}
}

// UpstreamRoots is the trust used for APIs and token endpoints: the system
// roots (or base, when set) plus proxy.upstream.ca_file.
func UpstreamRoots(cfg Config, base *x509.CertPool) (*x509.CertPool, error) {
	return outbound.Roots(base, cfg.Proxy.Upstream.CAFile, "proxy.upstream.ca_file")
}

var (
	_ proxy.TokenSource = (*tokenSource)(nil)
	_ injector.Source   = (*grantSource)(nil)
)
