package metrics

import "github.com/prometheus/client_golang/prometheus"

// rateLimitMetrics are the collectors of the guardrails on volume and
// visibility: rate limits, provider back-offs and MCP lists shaped by
// policy.
type rateLimitMetrics struct {
	limited   *prometheus.CounterVec
	fallbacks prometheus.Counter
	backoffs  *prometheus.CounterVec
	hidden    *prometheus.CounterVec
}

// Reasons of onbehalf_rate_limited_total (ratelimit.Reason*).
var rateLimitReasons = []string{"rule", "policy", "upstream"}

// MCP list kinds of onbehalf_mcp_hidden_total.
var mcpListKinds = []string{"tools", "prompts", "resources"}

func newRateLimitMetrics(reg *prometheus.Registry) *rateLimitMetrics {
	r := &rateLimitMetrics{
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "rate_limited_total",
			Help: "Requests refused with 429 rate_limited, by route (empty when none matched) and reason: rule (a configured limit), policy (a limit the policy's decision named), upstream (the provider asked not to be called for the user until later).",
		}, []string{"route", "reason"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "rate_limit_fallbacks_total",
			Help: "Rate-limit checks decided by this replica's own buckets because the shared store (Redis) failed or is being left to recover; non-zero means limits held per replica, not across them.",
		}),
		backoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "upstream_backoffs_total",
			Help: "Answers in which a provider asked not to be called again for a while (429 or 503 with Retry-After, or its rate-limit headers saying the quota is spent), by provider.",
		}, []string{"provider"}),
		hidden: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "mcp_hidden_total",
			Help: "Tools, prompts and resources removed from MCP list responses because policy would refuse calling them, by kind.",
		}, []string{"kind"}),
	}
	for _, reason := range rateLimitReasons {
		r.limited.WithLabelValues("", reason)
	}
	for _, kind := range mcpListKinds {
		r.hidden.WithLabelValues(kind)
	}
	reg.MustRegister(r.limited, r.fallbacks, r.backoffs, r.hidden)
	return r
}

// RateLimited counts a request refused with 429 rate_limited.
func (m *Metrics) RateLimited(route, reason string) {
	if m != nil {
		m.rl.limited.WithLabelValues(route, reason).Inc()
	}
}

// RateLimitFallback counts a check decided locally because the shared
// store could not be used.
func (m *Metrics) RateLimitFallback() {
	if m != nil {
		m.rl.fallbacks.Inc()
	}
}

// UpstreamBackoff counts a provider's request to back off.
func (m *Metrics) UpstreamBackoff(provider string) {
	if m != nil {
		m.rl.backoffs.WithLabelValues(provider).Inc()
	}
}

// MCPHidden counts n items of kind (tools, prompts, resources) removed
// from an MCP list response.
func (m *Metrics) MCPHidden(kind string, n int) {
	if m != nil && n > 0 {
		m.rl.hidden.WithLabelValues(kind).Add(float64(n))
	}
}

// RegisterRateLimitBuckets exposes how many rate-limit buckets this
// replica holds and how many it dropped to stay within max_keys.
func (m *Metrics) RegisterRateLimitBuckets(size func() int, evicted func() uint64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "rate_limit_buckets",
			Help: "Rate-limit buckets held in this replica's memory.",
		}, func() float64 { return float64(size()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: "rate_limit_evictions_total",
			Help: "Rate-limit buckets dropped to stay within rate_limits.max_keys; a dropped bucket that was not full starts full again when next used.",
		}, func() float64 { return float64(evicted()) }),
	)
}
