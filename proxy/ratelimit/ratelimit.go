// Package ratelimit holds the sidecar's guardrails on volume: token buckets
// keyed by who does what — user, agent, route, provider, method, path
// prefix, MCP tool — declared in configuration (rules) or returned by
// policy with its decision, and the back-offs providers ask for (an API's
// 429 with Retry-After, or its rate-limit headers), remembered per user and
// provider.
//
// Buckets live in the sidecar's memory (x/time/rate limiters in bounded,
// sharded LRUs) or, for limits that must hold across the replicas of one
// agent deployment, in a shared Redis server (a GCRA script that takes
// from all of a request's buckets or none). When Redis cannot be reached
// the local buckets decide, logged and counted, until it answers again.
// Provider back-offs are always local: each replica learns them from the
// answers it relays.
//
// A Limiter is safe for concurrent use. Its clock is the caller's: every
// method takes the time, so tests drive refills with a fake clock.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/internal/metrics"
)

// Reasons a request is refused, as the onbehalf_rate_limited_total
// metric's reason label spells them.
const (
	// ReasonRule: a configured rule's bucket was empty.
	ReasonRule = "rule"
	// ReasonPolicy: a bucket the policy's decision named was empty.
	ReasonPolicy = "policy"
	// ReasonUpstream: the provider asked not to be called for this user
	// until later.
	ReasonUpstream = "upstream"
)

// Request is what a limit can be keyed by.
type Request struct {
	User, Agent string
	// Route and Provider are the matched route's name and provider;
	// empty for a request on an unrouted host.
	Route, Provider string
	Method          string
	// Path is the canonical path, without the query.
	Path string
	// Tools are the tools of the request's MCP tools/call messages, one
	// entry per message.
	Tools []string
}

// Refusal says why a request may not go now.
type Refusal struct {
	// Key is the bucket (or back-off) that refused it, as audited
	// (limit_key).
	Key string
	// Reason is ReasonRule, ReasonPolicy or ReasonUpstream.
	Reason string
	// RetryAfter is how long until the request could pass, at least a
	// second (Retry-After is in whole seconds).
	RetryAfter time.Duration
}

// Options carry what configuration cannot.
type Options struct {
	// Logger receives operational logs (Redis failures and recoveries).
	Logger *zap.Logger
	// Metrics counts fallbacks to local buckets and back-offs; nil counts
	// nothing.
	Metrics *metrics.Metrics
	// Providers are the rate-limit headers of each provider (by the name
	// routes use), beside Retry-After.
	Providers map[string]ProviderHeaders
}

// Limiter decides whether a request may go now.
type Limiter struct {
	cfg       Config
	rules     []*rule
	local     *local
	shared    *redisEngine // nil with StoreLocal
	blocks    *blocks
	providers map[string]ProviderHeaders
	log       *zap.Logger
	m         *metrics.Metrics
	// sharedDown holds the Unix nanoseconds until which the shared store
	// is not asked, after a failure.
	sharedDown atomic.Int64
}

// New builds a Limiter from cfg. With StoreRedis it connects lazily: an
// unreachable Redis does not keep the sidecar from starting.
func New(cfg Config, o Options) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Limiter{
		cfg:       cfg,
		local:     newLocal(cfg.MaxKeys),
		blocks:    newBlocks(cfg.MaxKeys),
		providers: o.Providers,
		log:       o.Logger,
		m:         o.Metrics,
	}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	l.log = l.log.Named("ratelimit")
	for _, rc := range cfg.Rules {
		l.rules = append(l.rules, compileRule(rc))
	}
	if cfg.Store == StoreRedis {
		var err error
		if l.shared, err = newRedis(cfg.Redis); err != nil {
			return nil, fmt.Errorf("rate limit store: %w", err)
		}
	}
	if l.m != nil {
		l.m.RegisterRateLimitBuckets(l.local.len, l.local.evicted.Load)
	}
	return l, nil
}

// Close releases the shared store's connections.
func (l *Limiter) Close() error {
	if l.shared != nil {
		return l.shared.close()
	}
	return nil
}

// Active reports whether any rule is configured; a Limiter without rules
// still applies policy limits and provider back-offs.
func (l *Limiter) Active() bool { return len(l.rules) > 0 }

// scratch is a request's bucket list, pooled so that checking costs no
// allocation of its own.
type scratch struct{ bs []Bucket }

var scratches = sync.Pool{New: func() any { return &scratch{bs: make([]Bucket, 0, 8)} }}

// Check takes, for req, a token from the bucket of every rule it matches
// and from each of the policy's buckets, all or none, and returns nil; or
// says why it may not go now. A provider back-off for req's user is
// checked first and takes nothing.
func (l *Limiter) Check(ctx context.Context, now time.Time, req *Request, policy []Bucket) *Refusal {
	if req.Provider != "" {
		if until, ok := l.blocks.until(now, req.Provider, req.User); ok {
			return &Refusal{Key: upstreamKey(req.Provider, req.User), Reason: ReasonUpstream, RetryAfter: retryAfter(until.Sub(now))}
		}
	}
	if len(l.rules) == 0 && len(policy) == 0 {
		return nil
	}
	sc := scratches.Get().(*scratch)
	defer func() { clear(sc.bs); sc.bs = sc.bs[:0]; scratches.Put(sc) }()
	bs := sc.bs
	for _, r := range l.rules {
		bs = r.buckets(bs, req)
	}
	for _, b := range policy {
		b.reason = ReasonPolicy
		bs = append(bs, b)
	}
	sc.bs = bs
	if len(bs) == 0 {
		return nil
	}
	bs = merge(bs)
	v := l.take(ctx, now, bs)
	if v.ok {
		return nil
	}
	b := &bs[v.refused]
	return &Refusal{Key: b.Key, Reason: b.reason, RetryAfter: retryAfter(v.wait)}
}

// take asks the shared store when there is one and it is up, else the
// local buckets.
func (l *Limiter) take(ctx context.Context, now time.Time, bs []Bucket) verdict {
	if l.shared != nil && now.UnixNano() >= l.sharedDown.Load() {
		v, err := l.shared.take(ctx, now, bs)
		if err == nil {
			if l.sharedDown.Swap(0) != 0 {
				l.log.Info("the shared rate-limit store answers again; limits hold across replicas")
			}
			return v
		}
		// Until RetryInterval has passed, decide locally without asking.
		if l.sharedDown.Swap(now.Add(l.cfg.Redis.RetryInterval).UnixNano()) == 0 {
			l.log.Warn("the shared rate-limit store failed; limits hold per replica until it answers",
				zap.Duration("retry_interval", l.cfg.Redis.RetryInterval), zap.Error(err))
		}
		l.m.RateLimitFallback()
	} else if l.shared != nil {
		l.m.RateLimitFallback()
	}
	v, _ := l.local.take(ctx, now, bs)
	return v
}

// merge sorts bs by key and adds up the tokens of buckets with one key (a
// batch may call one tool several times), keeping the first one's rate.
func merge(bs []Bucket) []Bucket {
	if len(bs) == 1 {
		return bs
	}
	slices.SortStableFunc(bs, func(a, b Bucket) int { return strings.Compare(a.Key, b.Key) })
	out := bs[:1]
	for _, b := range bs[1:] {
		if last := &out[len(out)-1]; last.Key == b.Key {
			last.N += b.N
			continue
		}
		out = append(out, b)
	}
	return out
}

// retryAfter rounds d up to whole seconds, at least one.
func retryAfter(d time.Duration) time.Duration {
	return max(time.Second, (d + time.Second - 1).Truncate(time.Second))
}

// Observe reads an upstream answer for provider, relayed to user, for a
// back-off the provider asks for (see Backoff), and remembers it, capped
// at upstream.max_backoff. It returns the time until which the user's
// requests to provider will be refused, or false.
func (l *Limiter) Observe(now time.Time, provider, user string, status int, h http.Header) (time.Time, bool) {
	if !l.cfg.Upstream.Respect || provider == "" {
		return time.Time{}, false
	}
	until, ok := Backoff(now, status, h, l.providers[provider])
	if !ok {
		return time.Time{}, false
	}
	if limit := now.Add(l.cfg.Upstream.MaxBackoff); until.After(limit) {
		until = limit
	}
	l.blocks.set(provider, user, until)
	l.m.UpstreamBackoff(provider)
	return until, true
}

// rule is a compiled RuleConfig.
type rule struct {
	name      string
	rate      Rate
	by        []string
	routes    []string
	providers []string
	methods   []string
	paths     []string
	tools     []string
	// perTool: the rule counts tools/call messages, not requests.
	perTool bool
}

func compileRule(c RuleConfig) *rule {
	rt, _ := ParseRate(c.Rate) // validated
	if c.Burst > 0 {
		rt.Burst = c.Burst
	}
	r := &rule{
		name: c.Name, rate: rt, by: c.By, routes: c.Routes, providers: c.Providers,
		methods: c.Methods, paths: slices.Clone(c.Paths), tools: c.Tools,
	}
	r.perTool = len(c.Tools) > 0 || slices.Contains(c.By, DimTool)
	// Longest prefix first, so that a path is counted under its most
	// specific prefix.
	slices.SortStableFunc(r.paths, func(a, b string) int { return len(b) - len(a) })
	return r
}

// buckets appends the buckets r counts req in.
func (r *rule) buckets(bs []Bucket, req *Request) []Bucket {
	if len(r.routes) > 0 && !slices.Contains(r.routes, req.Route) ||
		len(r.providers) > 0 && !slices.Contains(r.providers, req.Provider) ||
		len(r.methods) > 0 && !slices.Contains(r.methods, req.Method) {
		return bs
	}
	prefix := ""
	if len(r.paths) > 0 {
		if prefix = matchPrefix(r.paths, req.Path); prefix == "" {
			return bs
		}
	}
	if !r.perTool {
		return append(bs, Bucket{Key: r.key(req, prefix, ""), Rate: r.rate, N: 1, reason: ReasonRule})
	}
	for _, tool := range req.Tools {
		if len(r.tools) > 0 && !matchTool(r.tools, tool) {
			continue
		}
		bs = append(bs, Bucket{Key: r.key(req, prefix, tool), Rate: r.rate, N: 1, reason: ReasonRule})
	}
	return bs
}

// key is the rule's name and the values of what it is keyed by, joined by
// ":" (each value escaped so that two keys are equal only when every value
// is).
func (r *rule) key(req *Request, prefix, tool string) string {
	if len(r.by) == 0 {
		return r.name
	}
	n := len(r.name)
	var vals [numDimensions]string
	for i, d := range r.by {
		var v string
		switch d {
		case DimUser:
			v = req.User
		case DimAgent:
			v = req.Agent
		case DimRoute:
			v = req.Route
		case DimProvider:
			v = req.Provider
		case DimMethod:
			v = req.Method
		case DimPath:
			v = prefix
		case DimTool:
			v = tool
		}
		if len(v) > maxKeyPart {
			v = keyPart(v)
		}
		vals[i] = v
		n += 1 + len(v) + 2*specials(v)
	}
	// One allocation: values are escaped as they are written.
	var b strings.Builder
	b.Grow(n)
	b.WriteString(r.name)
	for _, v := range vals[:len(r.by)] {
		b.WriteByte(':')
		writeEscaped(&b, v)
	}
	return b.String()
}

// specials counts the bytes of v that keys escape (":" and "%").
func specials(v string) int {
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] == ':' || v[i] == '%' {
			n++
		}
	}
	return n
}

// writeEscaped writes v to b with ":" and "%" percent-encoded, as keyPart
// does.
func writeEscaped(b *strings.Builder, v string) {
	start := 0
	for i := 0; i < len(v); i++ {
		var esc string
		switch v[i] {
		case ':':
			esc = "%3A"
		case '%':
			esc = "%25"
		default:
			continue
		}
		b.WriteString(v[start:i])
		b.WriteString(esc)
		start = i + 1
	}
	b.WriteString(v[start:])
}

// maxKeyPart bounds one value in a key; longer values (a tool name an
// agent made up) are replaced by a hash, so that keys stay small.
const maxKeyPart = 128

// keyPart escapes ":" and "%" in v, and hashes a long v.
func keyPart(v string) string {
	if len(v) > maxKeyPart {
		sum := sha256.Sum256([]byte(v))
		return "sha256-" + hex.EncodeToString(sum[:12])
	}
	if specials(v) == 0 {
		return v
	}
	return keyEscaper.Replace(v)
}

// keyEscaper escapes the values of keys. Built once: route names, which
// keys often hold, contain ":" by default ("provider:host:port"), and a
// replacer costs far more to build than to use.
var keyEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// upstreamKey names a provider back-off in audit records.
func upstreamKey(provider, user string) string {
	return nsUpstream + ":" + keyPart(provider) + ":" + keyPart(user)
}

// matchPrefix returns the longest prefix in paths (sorted longest first)
// that p is under, on a segment boundary, or "".
func matchPrefix(paths []string, p string) string {
	for _, pre := range paths {
		if pre == "/" || p == pre || strings.HasPrefix(p, pre) && (strings.HasSuffix(pre, "/") || p[len(pre)] == '/') {
			return pre
		}
	}
	return ""
}

func matchTool(patterns []string, tool string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, tool); ok {
			return true
		}
	}
	return false
}

// Policy limits: a decision may carry "limit": {"key", "rate", "burst"}
// or "limits": [ … ]. maxPolicyKey bounds a key the policy builds from
// request data; maxPolicyLimits the buckets one decision may name.
const (
	maxPolicyKey    = 256
	maxPolicyLimits = 16
)

// errPolicyLimit wraps every malformed limit in a decision.
var errPolicyLimit = errors.New("decision limit")

// PolicyBuckets reads the limits a policy decision carries in its extra
// fields ("limit", an object, or "limits", a list of them): each a "key"
// (a non-empty string of at most 256 printable characters), a "rate"
// (ParseRate) and optionally a "burst" (a positive whole number). A
// malformed limit is an error: the decision cannot be applied as the policy
// meant it.
func PolicyBuckets(extra map[string]any) ([]Bucket, error) {
	var raw []any
	if v, ok := extra["limit"]; ok {
		raw = append(raw, v)
	}
	if v, ok := extra["limits"]; ok {
		list, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%w: limits must be a list of objects", errPolicyLimit)
		}
		raw = append(raw, list...)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	if len(raw) > maxPolicyLimits {
		return nil, fmt.Errorf("%w: at most %d limits per decision", errPolicyLimit, maxPolicyLimits)
	}
	out := make([]Bucket, 0, len(raw))
	for _, v := range raw {
		b, err := policyBucket(v)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func policyBucket(v any) (Bucket, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Bucket{}, fmt.Errorf("%w: a limit must be an object with key and rate", errPolicyLimit)
	}
	for k := range obj {
		if k != "key" && k != "rate" && k != "burst" {
			return Bucket{}, fmt.Errorf("%w: unknown field %q (key, rate, burst)", errPolicyLimit, k)
		}
	}
	key, _ := obj["key"].(string)
	if key == "" || len(key) > maxPolicyKey || !printable(key) {
		return Bucket{}, fmt.Errorf("%w: key must be a string of 1 to %d printable characters", errPolicyLimit, maxPolicyKey)
	}
	rs, _ := obj["rate"].(string)
	rt, err := ParseRate(rs)
	if err != nil {
		return Bucket{}, fmt.Errorf("%w: rate %w", errPolicyLimit, err)
	}
	if b, present := obj["burst"]; present {
		n, ok := wholeNumber(b)
		if !ok || n < 1 || n > maxRateCount {
			return Bucket{}, fmt.Errorf("%w: burst must be a whole number from 1 to %d", errPolicyLimit, maxRateCount)
		}
		rt.Burst = n
	}
	return Bucket{Key: nsPolicy + ":" + key, Rate: rt, N: 1, reason: ReasonPolicy}, nil
}

// wholeNumber reads a JSON number as policy decisions carry them
// (json.Number from OPA, or a float or int).
func wholeNumber(v any) (int, bool) {
	switch n := v.(type) {
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return int(i), err == nil && i <= maxRateCount
	case float64:
		return int(n), n == float64(int(n))
	case int:
		return n, true
	case int64:
		return int(n), true
	}
	return 0, false
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}
