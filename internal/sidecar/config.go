// Package sidecar assembles the onbehalf sidecar from its components: it
// defines the configuration file, builds every part from it, and runs the
// proxy and admin listeners. The serve command, the demo and the end-to-end
// tests all start the sidecar through this package, so they exercise the
// same wiring.
package sidecar

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/connect"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/injector/vault"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/internal/tracing"
	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// Config is the sidecar's configuration file.
type Config struct {
	Proxy    proxy.Config           `yaml:"proxy"`
	Admin    AdminConfig            `yaml:"admin"`
	CA       CAConfig               `yaml:"ca"`
	Identity identity.Config        `yaml:"identity"`
	Routes   []injector.RouteConfig `yaml:"routes"`
	// TokenCache bounds how long access tokens are served from memory.
	TokenCache injector.CacheConfig `yaml:"token_cache"`
	// Providers configure token refresh per provider name (the name routes
	// and grants use). A route whose provider is not listed injects the
	// stored token as is.
	Providers map[string]oauth.ProviderConfig `yaml:"providers"`
	// Refresh configures the refresh protocol shared by the providers:
	// lease, takeover and answer timing, and the journal of refreshed
	// tokens.
	Refresh RefreshConfig `yaml:"refresh"`
	Policy  policy.Config `yaml:"policy"`
	Store   StoreConfig   `yaml:"store"`
	Egress  egress.Config `yaml:"egress"`
	Audit   audit.Config  `yaml:"audit"`
	// RateLimits are the limits on how often the agent may act: token
	// buckets per user, agent, route, method, path or MCP tool, shared
	// across replicas through Redis when configured, and the back-offs
	// providers ask for.
	RateLimits ratelimit.Config `yaml:"rate_limits"`
	Log        LogConfig        `yaml:"log"`
	// Tracing exports OpenTelemetry spans over OTLP/HTTP; off when no
	// endpoint is set.
	Tracing tracing.Config `yaml:"tracing"`
	// Connect configures `onbehalf connect-server`, which may share this
	// file; the sidecar ignores it.
	Connect connect.Config `yaml:"connect"`
	// ConnectAudit, when set, is the connect server's audit configuration
	// instead of the audit section: two processes cannot write one audit
	// file, so a connect server sharing a host and this file with a sidecar
	// needs its own.
	ConnectAudit *audit.Config `yaml:"connect_audit"`
}

// AdminConfig configures the admin listener (/healthz, /readyz, /ca.pem,
// /metrics, and optionally /debug/pprof/).
type AdminConfig struct {
	// Listen is the admin address; empty disables the listener.
	Listen string `yaml:"listen"`
	// Pprof serves /debug/pprof/ on the admin listener.
	Pprof bool `yaml:"pprof"`
}

// CAConfig names the interception CA files (created by `onbehalf ca init`).
type CAConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CacheSize bounds the leaf-certificate cache.
	CacheSize int `yaml:"cache_size"`
	// LeafNames is what a leaf certificate names: LeafNamesWildcard (the
	// default) lets the tenants of one service (acme.atlassian.net,
	// globex.atlassian.net) share one *.atlassian.net leaf, so a new one
	// costs no signing; LeafNamesExact signs a leaf for each host, for
	// agents whose clients refuse wildcards.
	LeafNames string `yaml:"leaf_names"`
}

// The values of ca.leaf_names.
const (
	LeafNamesWildcard = "wildcard"
	LeafNamesExact    = "exact"
)

// StoreConfig selects and configures the grant store.
type StoreConfig struct {
	// Backend is "embedded" (a local bbolt file) or "vault".
	Backend  string               `yaml:"backend"`
	Embedded store.EmbeddedConfig `yaml:"embedded"`
	// Vault configures the production store (KV v2, optional Transit).
	Vault vault.Config `yaml:"vault"`
}

// RefreshConfig is the refresh section: the protocol's timing and the
// journal.
type RefreshConfig struct {
	oauth.RefreshConfig `yaml:",inline"`
	// Journal is where refreshed tokens wait, durable, until the grant
	// store holds them.
	Journal JournalConfig `yaml:"journal"`
}

// JournalConfig locates the refresh journal (package injector/journal).
// Each sidecar replica needs a directory of its own that survives its
// restarts (in Kubernetes, an emptyDir of the pod).
type JournalConfig struct {
	// Dir is the journal directory (created 0700). Empty means
	// "onbehalf-journal" beside the embedded store's database, or in the
	// configuration file's directory with Vault.
	Dir string `yaml:"dir"`
	// KeyFile holds the 32-byte key that seals the entries (created when
	// missing). Empty means the embedded store's key file, or
	// "onbehalf-journal.key" beside Dir with Vault.
	KeyFile string `yaml:"key_file"`
}

// defaultJournalDir is the journal directory's name when none is set.
const defaultJournalDir = "onbehalf-journal"

// JournalConfig returns the journal's location: Refresh.Journal with the
// defaults filled in.
func (c Config) JournalConfig() JournalConfig {
	j := c.Refresh.Journal
	embedded := c.Store.Backend == BackendEmbedded
	if j.Dir == "" {
		j.Dir = defaultJournalDir
		if embedded {
			j.Dir = filepath.Join(filepath.Dir(c.Store.Embedded.Path), defaultJournalDir)
		}
	}
	if j.KeyFile == "" {
		j.KeyFile = filepath.Join(filepath.Dir(filepath.Clean(j.Dir)), defaultJournalDir+".key")
		if embedded {
			j.KeyFile = c.Store.Embedded.KeyFile
		}
	}
	return j
}

// LogConfig configures operational logs (not the audit trail).
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or console.
	Format string `yaml:"format"`
}

// maxTokenCacheTTL caps the token cache: revocation must take effect
// everywhere within minutes at worst.
const maxTokenCacheTTL = 5 * time.Minute

// minTokenCacheBytes is the smallest token_cache.max_bytes: below it a
// cache holds too few tokens of common sizes to be worth having, and a
// value in the hundreds is likely a unit mistake.
const minTokenCacheBytes = 64 << 10

// Store backends.
const (
	BackendEmbedded = "embedded"
	BackendVault    = "vault"
)

// DefaultConfig returns the defaults every file starts from.
func DefaultConfig() Config {
	return Config{
		Proxy:      proxy.DefaultConfig(),
		Admin:      AdminConfig{Listen: "127.0.0.1:9090"},
		CA:         CAConfig{CacheSize: 1024, LeafNames: LeafNamesWildcard},
		Identity:   identity.DefaultConfig(),
		TokenCache: injector.DefaultCacheConfig(),
		Refresh:    RefreshConfig{RefreshConfig: oauth.DefaultRefreshConfig()},
		Policy:     policy.DefaultConfig(),
		Store:      StoreConfig{Backend: BackendEmbedded, Embedded: store.DefaultEmbeddedConfig(), Vault: vault.DefaultConfig()},
		Egress:     egress.DefaultConfig(),
		Audit:      audit.DefaultConfig(),
		RateLimits: ratelimit.DefaultConfig(),
		Log:        LogConfig{Level: "info", Format: "json"},
		Connect:    connect.DefaultConfig(),
		Tracing:    tracing.DefaultConfig(),
	}
}

// Load reads path over the defaults, applies ONBEHALF_* environment
// overrides, then override (flags; may be nil), resolves relative file
// paths against the file's directory, and validates. Every problem is
// reported at once.
func Load(path string, environ []string, override func(*Config)) (Config, error) {
	return load(path, environ, override, Config.Validate)
}

// LoadConnect reads path like Load but validates only what the connect
// server uses: the connect, store, providers, audit (or connect_audit) and
// log sections.
func LoadConnect(path string, environ []string, override func(*Config)) (Config, error) {
	return load(path, environ, override, Config.ValidateConnect)
}

// LoadGrants reads path like Load but validates only what grant
// administration uses: the store, providers, audit (or connect_audit) and
// log sections.
func LoadGrants(path string, environ []string, override func(*Config)) (Config, error) {
	return load(path, environ, override, func(c Config) error {
		var p config.Problems
		c.validateStore(&p)
		c.validateProviders(&p)
		if c.ConnectAudit != nil {
			p.Add("connect_audit", c.ConnectAudit.Validate())
		} else {
			p.Add("audit", c.Audit.Validate())
		}
		c.validateLog(&p)
		return p.Err()
	})
}

func load(path string, environ []string, override func(*Config), validate func(Config) error) (Config, error) {
	cfg := DefaultConfig()
	loadErr := config.Load(path, &cfg, environ)
	var fe *config.FieldError
	if loadErr != nil && !errors.As(loadErr, &fe) {
		return cfg, loadErr // unreadable file: nothing to validate
	}
	if override != nil {
		override(&cfg)
	}
	cfg.ResolvePaths(filepath.Dir(path))
	// Decoding problems and validation problems are reported together, so
	// one run lists everything to fix.
	return cfg, errors.Join(loadErr, validate(cfg))
}

// ConnectAuditConfig is the audit configuration the connect server uses.
func (c Config) ConnectAuditConfig() audit.Config {
	if c.ConnectAudit != nil {
		return *c.ConnectAudit
	}
	return c.Audit
}

// ValidateConnect reports every problem in the sections the connect
// server reads.
func (c Config) ValidateConnect() error {
	var p config.Problems
	p.Add("connect", c.Connect.Validate())
	c.validateStore(&p)
	c.validateProviders(&p)
	if c.ConnectAudit != nil {
		p.Add("connect_audit", c.ConnectAudit.Validate())
	} else {
		p.Add("audit", c.Audit.Validate())
	}
	c.validateLog(&p)
	return p.Err()
}

// ResolvePaths makes every relative file path in c relative to dir, the
// way Prometheus and most daemons read paths in their config files.
func (c *Config) ResolvePaths(dir string) {
	if d, err := filepath.Abs(dir); err == nil {
		dir = d
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.CA.Cert)
	abs(&c.CA.Key)
	abs(&c.Proxy.Upstream.CAFile)
	abs(&c.Identity.JWKSCAFile)
	for i := range c.Identity.Keys {
		abs(&c.Identity.Keys[i].File)
	}
	for i := range c.Policy.Paths {
		abs(&c.Policy.Paths[i])
	}
	abs(&c.Policy.Bundle.PublicKeyFile)
	// The journal's defaults follow the store's paths, relative or not.
	c.Refresh.Journal = c.JournalConfig()
	abs(&c.Refresh.Journal.Dir)
	abs(&c.Refresh.Journal.KeyFile)
	abs(&c.Store.Embedded.Path)
	abs(&c.Store.Embedded.KeyFile)
	abs(&c.Store.Vault.CAFile)
	abs(&c.RateLimits.Redis.PasswordFile)
	abs(&c.RateLimits.Redis.CAFile)
	abs(&c.Store.Vault.Auth.TokenFile)
	abs(&c.Store.Vault.Auth.SecretIDFile)
	abs(&c.Store.Vault.Auth.KubernetesTokenFile)
	abs(&c.Audit.File.Path)
	abs(&c.Audit.FingerprintKeyFile)
	for i := range c.Identity.IdPs {
		abs(&c.Identity.IdPs[i].CAFile)
	}
	for name, pc := range c.Providers {
		abs(&pc.ClientSecretFile)
		if pc.Exchange != nil {
			x := *pc.Exchange
			abs(&x.ClientSecretFile)
			pc.Exchange = &x
		}
		c.Providers[name] = pc
	}
	abs(&c.Tracing.CAFile)
	if c.Connect.SessionKeyFile == connect.DefaultSessionKeyFile {
		// Unset: the generated cookie key goes with the other local state,
		// beside the grant store's key, not next to the configuration
		// file (which may sit in a checked-out repository).
		c.Connect.SessionKeyFile = filepath.Join(filepath.Dir(c.Store.Embedded.KeyFile), connect.DefaultSessionKeyFile)
	}
	c.Connect.ResolvePaths(dir)
	if c.ConnectAudit != nil {
		abs(&c.ConnectAudit.File.Path)
		abs(&c.ConnectAudit.FingerprintKeyFile)
	}
}

// Validate reports every problem in c with its path.
func (c Config) Validate() error {
	var p config.Problems
	p.Add("proxy", c.Proxy.Validate())
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			p.Addf("admin.listen", "must be host:port, got %q", c.Admin.Listen)
		}
		if c.Admin.Listen == c.Proxy.Listen {
			p.Addf("admin.listen", "must differ from proxy.listen")
		}
	}
	if c.CA.Cert == "" {
		p.Addf("ca.cert", "required: the interception CA certificate (create one with `onbehalf ca init`)")
	}
	if c.CA.Key == "" {
		p.Addf("ca.key", "required: the interception CA private key")
	}
	if c.CA.CacheSize < 1 {
		p.Addf("ca.cache_size", "must be at least 1")
	}
	if c.CA.LeafNames != LeafNamesWildcard && c.CA.LeafNames != LeafNamesExact {
		p.Addf("ca.leaf_names", "must be %q or %q", LeafNamesWildcard, LeafNamesExact)
	}
	p.Add("identity", c.Identity.Validate())
	if routes := c.EffectiveRoutes(); len(routes) == 0 {
		p.Addf("routes", "at least one route is required (or a provider with a preset): without routes nothing is ever injected")
	} else if _, err := injector.NewTable(c.Routes); err != nil {
		p.Add("routes", err)
	} else if t, err := injector.NewTable(routes); err != nil {
		p.Add("providers", fmt.Errorf("preset default routes: %w", err))
	} else {
		c.validateLimitRoutes(&p, t.Names(), routes)
	}
	if c.TokenCache.TTL < 0 || c.TokenCache.TTL > maxTokenCacheTTL {
		p.Addf("token_cache.ttl", "must be between 0 (no cache) and %s: it bounds how long a revoked grant keeps working", maxTokenCacheTTL)
	}
	if c.TokenCache.MaxEntries < 1 {
		p.Addf("token_cache.max_entries", "must be at least 1")
	}
	if c.TokenCache.MaxBytes < minTokenCacheBytes {
		p.Addf("token_cache.max_bytes", "must be at least %d (64 KiB)", minTokenCacheBytes)
	}
	c.validateProviders(&p)
	c.validateRefresh(&p)
	c.validateExchanges(&p)
	p.Add("policy", c.Policy.Validate())
	c.validateStore(&p)
	p.Add("egress", c.Egress.Validate())
	p.Add("audit", c.Audit.Validate())
	p.Add("rate_limits", c.RateLimits.Validate())
	p.Add("tracing", c.Tracing.Validate())
	c.validateLog(&p)
	return p.Err()
}

// validateLimitRoutes checks that the routes and providers rate-limit
// rules name exist: a misspelt one would make its rule match nothing.
func (c Config) validateLimitRoutes(p *config.Problems, names []string, routes []injector.RouteConfig) {
	var providers []string
	for _, r := range routes {
		providers = append(providers, r.Provider)
	}
	for i, r := range c.RateLimits.Rules {
		for j, rn := range r.Routes {
			if rn != "" && !slices.Contains(names, rn) {
				p.Addf(fmt.Sprintf("rate_limits.rules[%d].routes[%d]", i, j), "no route is named %q (routes: %s)%s", rn, strings.Join(names, ", "), config.Suggest(rn, names))
			}
		}
		for j, pn := range r.Providers {
			if pn != "" && !slices.Contains(providers, pn) {
				p.Addf(fmt.Sprintf("rate_limits.rules[%d].providers[%d]", i, j), "no route has provider %q%s", pn, config.Suggest(pn, providers))
			}
		}
	}
}

func (c Config) validateProviders(p *config.Problems) {
	for name, pc := range c.Providers {
		if err := store.ValidateProvider(name); err != nil {
			p.Addf("providers."+name, "%v", err)
		}
		p.Add("providers."+name, pc.Validate())
	}
}

// validateRefresh checks the refresh section, and each provider's timeout
// against its answer deadline.
func (c Config) validateRefresh(p *config.Problems) {
	p.Add("refresh", c.Refresh.RefreshConfig.Validate())
	for name, pc := range c.Providers {
		if msg := c.Refresh.CheckTimeout(pc); msg != "" {
			p.Addf("providers."+name+".timeout", "%s", msg)
		}
	}
	j := c.JournalConfig()
	if c.Store.Backend == BackendEmbedded && filepath.Clean(j.Dir) == filepath.Clean(c.Store.Embedded.Path) {
		p.Addf("refresh.journal.dir", "must not be the embedded store's database file")
	}
	if filepath.Clean(j.KeyFile) == filepath.Clean(j.Dir) {
		p.Addf("refresh.journal.key_file", "must not be the journal directory")
	}
}

// validateExchanges checks what a provider's exchange section needs from
// the identity section: its issuer is a configured IdP, and without a
// token_url that IdP's keys come by discovery (whose document names the
// token endpoint).
func (c Config) validateExchanges(p *config.Problems) {
	names := make([]string, 0, len(c.Providers))
	for name := range c.Providers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		x := c.Providers[name].Exchange
		if x == nil || x.Issuer == "" {
			continue
		}
		path := "providers." + name + ".exchange"
		idp, ok := c.Identity.IdP(x.Issuer)
		switch {
		case !ok:
			p.Addf(path+".issuer", "%q is not one of identity.idps: only an IdP's tokens can be exchanged", x.Issuer)
		case x.TokenURL == "" && idp.JWKSURL != "":
			p.Addf(path+".token_url", "required: the IdP's keys are configured by jwks_url, so no discovery document names its token endpoint")
		}
	}
}

func (c Config) validateStore(p *config.Problems) {
	switch c.Store.Backend {
	case BackendEmbedded:
		p.Add("store.embedded", c.Store.Embedded.Validate())
	case BackendVault:
		p.Add("store.vault", c.Store.Vault.Validate())
	default:
		p.Addf("store.backend", "must be %q or %q, got %q", BackendEmbedded, BackendVault, c.Store.Backend)
	}
}

func (c Config) validateLog(p *config.Problems) {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		p.Addf("log.format", "must be json or console, got %q", c.Log.Format)
	}
}

// EffectiveRoutes are the configured routes plus, for every provider
// configured from a preset that no route names, the preset's default
// routes (docs/providers.md lists them).
func (c Config) EffectiveRoutes() []injector.RouteConfig {
	named := map[string]bool{}
	for _, r := range c.Routes {
		named[r.Provider] = true
	}
	routes := append([]injector.RouteConfig(nil), c.Routes...)
	names := make([]string, 0, len(c.Providers))
	for name := range c.Providers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !named[name] {
			routes = append(routes, c.Providers[name].Routes(name)...)
		}
	}
	return routes
}

// String describes the config for start-up logs without any secret (the
// file holds paths to secrets, never secrets).
func (c Config) String() string {
	return fmt.Sprintf("proxy=%s admin=%s routes=%d store=%s audit=%s", c.Proxy.Listen, c.Admin.Listen, len(c.Routes), c.Store.Backend, c.Audit.Sink)
}
