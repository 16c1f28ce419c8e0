package ratelimit

import (
	"fmt"
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Where buckets live (Config.Store).
const (
	// StoreLocal keeps buckets in each sidecar's memory: a limit holds per
	// replica. The default.
	StoreLocal = "local"
	// StoreRedis keeps buckets in one Redis server that every replica
	// shares: a limit holds across the replicas, and falls back to the
	// local buckets while Redis cannot be reached.
	StoreRedis = "redis"
)

// Dimensions a rule's buckets can be keyed by (RuleConfig.By).
const (
	DimUser     = "user"
	DimAgent    = "agent"
	DimRoute    = "route"
	DimProvider = "provider"
	DimMethod   = "method"
	DimPath     = "path"
	DimTool     = "tool"
)

var dimensions = []string{DimUser, DimAgent, DimRoute, DimProvider, DimMethod, DimPath, DimTool}

// numDimensions is len(dimensions), as a constant.
const numDimensions = 7

// Key namespaces: a rule's keys start with its name, a policy's with
// "policy", a provider's back-off with "upstream"; no rule may take those
// names.
const (
	nsPolicy   = "policy"
	nsUpstream = "upstream"
)

// Config configures rate limits (the rate_limits section).
type Config struct {
	// Rules are the configured limits. A request takes a token from the
	// bucket of every rule it matches, and is refused (429 rate_limited)
	// when any of them is empty; then it takes none.
	Rules []RuleConfig `yaml:"rules"`
	// Store is StoreLocal or StoreRedis.
	Store string `yaml:"store"`
	// Redis configures the shared store.
	Redis RedisConfig `yaml:"redis"`
	// MaxKeys bounds the buckets kept in memory. Past it, the least
	// recently used bucket is dropped; a bucket that has refilled is the
	// same as none, so only a bucket still in use loses its state.
	MaxKeys int `yaml:"max_keys"`
	// Upstream configures how the sidecar follows a provider's own rate
	// limiting.
	Upstream UpstreamConfig `yaml:"upstream"`
}

// RuleConfig is one configured limit: which requests it counts (the match
// fields; an empty one matches everything) and what its buckets are keyed
// by.
type RuleConfig struct {
	// Name identifies the rule in bucket keys, audit records (limit_key)
	// and errors: lower-case letters, digits, ".", "_" and "-".
	Name string `yaml:"name"`
	// Rate is "COUNT/PERIOD" (see ParseRate): "60/m", "1000/h".
	Rate string `yaml:"rate"`
	// Burst is how many requests may go at once; 0 means the rate's count.
	Burst int `yaml:"burst"`
	// By lists what each bucket is for: user, agent, route, provider,
	// method, path (the matched prefix of Paths) and tool (an MCP
	// tools/call's tool). Empty means one bucket for everything the rule
	// matches.
	By []string `yaml:"by"`
	// Routes and Providers restrict the rule to these route names and
	// providers.
	Routes    []string `yaml:"routes"`
	Providers []string `yaml:"providers"`
	// Methods restricts the rule to these HTTP methods.
	Methods []string `yaml:"methods"`
	// Paths restricts the rule to these path prefixes, matched on segment
	// boundaries like route paths.
	Paths []string `yaml:"paths"`
	// Tools restricts the rule to MCP tools/call messages whose tool
	// matches one of these patterns ("*" matches any run of characters).
	// A rule with tools, or keyed by tool, counts each tools/call message
	// of a request (a batch may hold several) and ignores other requests.
	Tools []string `yaml:"tools"`
}

// RedisConfig locates the shared Redis server.
type RedisConfig struct {
	// Address is host:port of a standalone Redis server (or the primary
	// a Sentinel-managed address resolves to).
	Address string `yaml:"address"`
	// Username and PasswordFile authenticate (Redis 6 ACLs; PasswordFile
	// alone for requirepass). The password is read from the file at start.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// DB is the logical database.
	DB int `yaml:"db"`
	// TLS connects over TLS, verified against the system roots plus CAFile.
	TLS    bool   `yaml:"tls"`
	CAFile string `yaml:"ca_file"`
	// KeyPrefix starts every key the sidecar writes.
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds one check (dial included). A check that fails or
	// times out is decided by the local buckets.
	Timeout time.Duration `yaml:"timeout"`
	// RetryInterval is how long the sidecar decides locally after a
	// failed check before it asks Redis again, so that a dead Redis does
	// not cost every request a timeout.
	RetryInterval time.Duration `yaml:"retry_interval"`
}

// UpstreamConfig configures respect for the provider's own limits.
type UpstreamConfig struct {
	// Respect makes the sidecar remember, per user and provider, when an
	// API answered 429 or 503 with Retry-After (or said through its
	// provider's rate-limit headers that the quota is spent), and refuse
	// that user's further requests to that provider with 429 rate_limited
	// until then, instead of letting the agent keep hitting the API as the
	// user. On by default.
	Respect bool `yaml:"respect"`
	// MaxBackoff caps how long one answer can make the sidecar refuse: an
	// API asking for longer is believed for this long.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Defaults, each with the reason for its value.
const (
	// defaultMaxKeys: a sidecar serves one agent deployment; users ×
	// rules stays in the hundreds or thousands. Ten thousand buckets take
	// about 2.5 MB at worst.
	defaultMaxKeys = 10_000
	// defaultRedisTimeout: a Redis beside the sidecars answers in well
	// under a millisecond; one taking 50 ms is in trouble, and every
	// request waits for it.
	defaultRedisTimeout = 50 * time.Millisecond
	// defaultRetryInterval: long enough that a dead Redis costs one
	// timeout a second, short enough that shared limits return quickly.
	defaultRetryInterval = time.Second
	// defaultKeyPrefix names the sidecar's keys in a shared Redis.
	defaultKeyPrefix = "onbehalf:rl:"
	// defaultMaxBackoff: provider quotas reset within an hour (GitHub's
	// primary limit, most per-hour quotas); an answer asking for longer is
	// more likely wrong than meant.
	defaultMaxBackoff = time.Hour
)

// DefaultConfig returns the defaults: no rules, local buckets, provider
// back-offs respected.
func DefaultConfig() Config {
	return Config{
		Store:   StoreLocal,
		MaxKeys: defaultMaxKeys,
		Redis: RedisConfig{
			KeyPrefix:     defaultKeyPrefix,
			Timeout:       defaultRedisTimeout,
			RetryInterval: defaultRetryInterval,
		},
		Upstream: UpstreamConfig{Respect: true, MaxBackoff: defaultMaxBackoff},
	}
}

// maxNameLen bounds a rule's name, which is in every key of the rule.
const maxNameLen = 64

// Validate reports every problem in c with its path.
func (c Config) Validate() error {
	var p config.Problems
	names := map[string]int{}
	for i, r := range c.Rules {
		at := fmt.Sprintf("rules[%d]", i)
		if j, dup := names[r.Name]; dup && r.Name != "" {
			p.Addf(at+".name", "duplicates rules[%d]", j)
		}
		names[r.Name] = i
		p.Add(at, r.Validate())
	}
	switch c.Store {
	case StoreLocal:
	case StoreRedis:
		p.Add("redis", c.Redis.Validate())
	default:
		p.Addf("store", "must be %q or %q, got %q", StoreLocal, StoreRedis, c.Store)
	}
	if c.MaxKeys < 16 || c.MaxKeys > 10_000_000 {
		p.Addf("max_keys", "must be between 16 and 10000000")
	}
	if c.Upstream.MaxBackoff < time.Second || c.Upstream.MaxBackoff > 24*time.Hour {
		p.Addf("upstream.max_backoff", "must be between 1s and 24h")
	}
	return p.Err()
}

// Validate reports every problem in r.
func (r RuleConfig) Validate() error {
	var p config.Problems
	switch {
	case r.Name == "":
		p.Addf("name", "required: it names the rule's buckets in audit records")
	case r.Name == nsPolicy || r.Name == nsUpstream:
		p.Addf("name", "%q is reserved (policy limits and provider back-offs use it)", r.Name)
	case !validName(r.Name):
		p.Addf("name", "must be 1 to %d lower-case letters, digits, \".\", \"_\" or \"-\", got %q", maxNameLen, r.Name)
	}
	rt, err := ParseRate(r.Rate)
	if err != nil {
		p.Addf("rate", "%v, got %q", err, r.Rate)
	}
	if r.Burst < 0 || (err == nil && r.Burst > maxRateCount) {
		p.Addf("burst", "must be between 0 (the rate's count, %d) and %d", rt.Count, maxRateCount)
	}
	seen := map[string]bool{}
	for i, d := range r.By {
		at := fmt.Sprintf("by[%d]", i)
		switch {
		case !slices.Contains(dimensions, d):
			p.Addf(at, "must be one of %s, got %q%s", strings.Join(dimensions, ", "), d, config.Suggest(d, dimensions))
		case seen[d]:
			p.Addf(at, "%q appears twice", d)
		case d == DimPath && len(r.Paths) == 0:
			p.Addf(at, "keying by path needs paths: the bucket is the matched prefix's")
		}
		seen[d] = true
	}
	for i, m := range r.Methods {
		if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t/") {
			p.Addf(fmt.Sprintf("methods[%d]", i), "must be an HTTP method in upper case, got %q", m)
		}
	}
	for i, pre := range r.Paths {
		if !strings.HasPrefix(pre, "/") || strings.ContainsAny(pre, "?#") {
			p.Addf(fmt.Sprintf("paths[%d]", i), "must be an absolute path prefix without query, got %q", pre)
		}
	}
	for i, t := range r.Tools {
		if _, err := path.Match(t, ""); t == "" || err != nil {
			p.Addf(fmt.Sprintf("tools[%d]", i), "must be a tool name or a pattern with *, got %q", t)
		}
	}
	for i, rn := range r.Routes {
		if rn == "" {
			p.Addf(fmt.Sprintf("routes[%d]", i), "must name a route")
		}
	}
	for i, pn := range r.Providers {
		if pn == "" {
			p.Addf(fmt.Sprintf("providers[%d]", i), "must name a provider")
		}
	}
	return p.Err()
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// Validate reports every problem in c.
func (c RedisConfig) Validate() error {
	var p config.Problems
	if c.Address == "" {
		p.Addf("address", "required with store: redis (host:port)")
	} else if _, _, err := net.SplitHostPort(c.Address); err != nil {
		p.Addf("address", "must be host:port, got %q", c.Address)
	}
	if c.PasswordFile != "" {
		if _, err := os.Stat(c.PasswordFile); err != nil {
			p.Addf("password_file", "cannot read: %v", err)
		}
	}
	if c.CAFile != "" {
		if !c.TLS {
			p.Addf("ca_file", "only used with tls: true")
		} else if _, err := os.Stat(c.CAFile); err != nil {
			p.Addf("ca_file", "cannot read: %v", err)
		}
	}
	if c.DB < 0 {
		p.Addf("db", "must not be negative")
	}
	if c.Timeout < time.Millisecond || c.Timeout > 5*time.Second {
		p.Addf("timeout", "must be between 1ms and 5s: every limited request waits for it")
	}
	if c.RetryInterval < 10*time.Millisecond || c.RetryInterval > time.Minute {
		p.Addf("retry_interval", "must be between 10ms and 1m")
	}
	if c.KeyPrefix == "" {
		p.Addf("key_prefix", "required: it keeps the sidecar's keys apart from others in the same Redis")
	}
	return p.Err()
}
