// Package metrics defines the sidecar's Prometheus metrics. Every label
// set is bounded: routes and providers come from configuration, decisions
// and error codes from fixed lists; no user id, path or host an agent can
// choose ever becomes a label.
//
// A *Metrics is safe for concurrent use; a nil *Metrics records nothing,
// so components can take one optionally.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "onbehalf"

// Stages of the request pipeline, as the stage label spells them.
const (
	StageIdentity = "identity"
	StagePolicy   = "policy"
	StageToken    = "token"
	StageUpstream = "upstream"
)

// latencyBuckets span 100 µs to 10 s: in-process stages sit at the low end,
// upstream calls at the high end.
var latencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Metrics holds the sidecar's collectors.
type Metrics struct {
	reg *prometheus.Registry

	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	stage         *prometheus.HistogramVec
	stages        map[string]prometheus.Observer // the stage histogram of each Stage* constant
	tokenCache    *prometheus.CounterVec
	feedReads     *prometheus.CounterVec
	refreshes     *prometheus.CounterVec
	grantsLost    *prometheus.CounterVec
	exchanges     *prometheus.CounterVec
	fallbacks     *prometheus.CounterVec
	storeErrors   prometheus.Counter
	auditErrors   prometheus.Counter
	policyReloads *prometheus.CounterVec
	policyInfo    *prometheus.GaugeVec
	tunnels       prometheus.Gauge
	scrubbed      prometheus.Counter
	useRecords    *prometheus.CounterVec
	websockets    prometheus.Gauge
	h2Closed      *prometheus.CounterVec
	rl            *rateLimitMetrics
}

// New registers the collectors (plus Go runtime and process collectors) in
// a fresh registry.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "requests_total",
		Help: "Requests handled, by route (empty when none matched), decision (allow, deny, would_deny), error code (ok when none) and the protocol the agent spoke (http/1.1, h2, grpc, websocket).",
	}, []string{"route", "decision", "code", "protocol"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "request_duration_seconds",
		Help:    "Time from reading a request to finishing its response, by route.",
		Buckets: latencyBuckets,
	}, []string{"route"})
	m.stage = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "stage_duration_seconds",
		Help:    "Time spent in each pipeline stage: identity, policy, token (cache, store and refresh), upstream (until response headers).",
		Buckets: latencyBuckets,
	}, []string{"stage"})
	m.tokenCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "token_cache_total",
		Help: "Token cache lookups by result (hit, miss).",
	}, []string{"result"})
	m.feedReads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "change_feed_reads_total",
		Help: "Reads of the grant store's change feed by result: ok, missing (no feed: cached tokens are served for the token cache TTL only), failed.",
	}, []string{"result"})
	m.refreshes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "refreshes_total",
		Help: "Token endpoint calls by provider and outcome, and the later writes of tokens whose store write was deferred (outcomes persisted, dropped).",
	}, []string{"provider", "outcome"})
	m.grantsLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "grants_lost_total",
		Help: "Grants marked reconnect_required because the provider refused a refresh token that an earlier attempt may have spent (refresh outcome refresh_lost): lost to a fault, not revoked by the user.",
	}, []string{"provider"})
	m.exchanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "exchanges_total",
		Help: "Token exchanges (RFC 8693 at the IdP, then RFC 7523 at the app) by provider and outcome (exchanged, refused, unavailable, misconfigured).",
	}, []string{"provider", "outcome"})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "exchange_fallbacks_total",
		Help: "Requests whose token came from the stored grant because the provider's exchange gave none (fallback: grant), by provider.",
	}, []string{"provider"})
	m.storeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "store_errors_total",
		Help: "Requests that failed because the grant store was unavailable.",
	})
	m.auditErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "audit_errors_total",
		Help: "Audit records no sink accepted.",
	})
	m.policyReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "policy_reloads_total",
		Help: "Policy loads by result (ok, error).",
	}, []string{"result"})
	m.policyInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "policy_info",
		Help: "The policy revision being served (value 1; only the current revision is present).",
	}, []string{"revision"})
	m.tunnels = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "tunnels_open",
		Help: "Open CONNECT tunnels (intercepted and blind).",
	})
	m.scrubbed = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "scrubbed_total",
		Help: "Secrets replaced in responses before they reached the agent (an API echoing a credential); each request's audit record says how many.",
	})
	m.useRecords = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "grant_use_records_total",
		Help: "Notes of a grant's last use (at most one per grant a minute) by result: written to the store, dropped (queue full), failed.",
	}, []string{"result"})
	// Every result is present from the start (at 0): the notes are written
	// in the background, and a series that appears only after the first
	// write would make rates jump.
	for _, r := range []string{"written", "dropped", "failed"} {
		m.useRecords.WithLabelValues(r)
	}
	m.websockets = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "websockets_open",
		Help: "Open WebSocket connections relayed to routed hosts.",
	})
	m.h2Closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "h2_connections_closed_total",
		Help: "HTTP/2 connections from agents the sidecar closed for abuse, by reason (rapid_reset).",
	}, []string{"reason"})
	m.rl = newRateLimitMetrics(m.reg)
	// The pipeline's stages are known: resolve their histograms once
	// rather than hashing the label on every request.
	m.stages = map[string]prometheus.Observer{}
	for _, name := range []string{StageIdentity, StagePolicy, StageToken, StageUpstream} {
		m.stages[name] = m.stage.WithLabelValues(name)
	}
	m.reg.MustRegister(m.requests, m.duration, m.stage, m.tokenCache, m.feedReads, m.refreshes, m.grantsLost, m.exchanges, m.fallbacks,
		m.storeErrors, m.auditErrors, m.policyReloads, m.policyInfo, m.tunnels, m.scrubbed, m.useRecords, m.websockets, m.h2Closed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the collectors live (served on /metrics).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request records a finished request; protocol is what the agent spoke
// (empty means http/1.1).
func (m *Metrics) Request(route, decision, code, protocol string, d time.Duration) {
	if m == nil {
		return
	}
	if code == "" {
		code = "ok"
	}
	if protocol == "" {
		protocol = "http/1.1"
	}
	m.requests.WithLabelValues(route, decision, code, protocol).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// WebSocketOpened and WebSocketClosed track relayed WebSocket connections.
func (m *Metrics) WebSocketOpened() {
	if m != nil {
		m.websockets.Inc()
	}
}

// WebSocketClosed is WebSocketOpened's pair.
func (m *Metrics) WebSocketClosed() {
	if m != nil {
		m.websockets.Dec()
	}
}

// H2Closed counts an agent HTTP/2 connection closed for abuse.
func (m *Metrics) H2Closed(reason string) {
	if m != nil {
		m.h2Closed.WithLabelValues(reason).Inc()
	}
}

// Stage records the time one pipeline stage took.
func (m *Metrics) Stage(stage string, d time.Duration) {
	if m == nil {
		return
	}
	o, ok := m.stages[stage]
	if !ok {
		o = m.stage.WithLabelValues(stage)
	}
	o.Observe(d.Seconds())
}

// TokenCache records a cache lookup.
func (m *Metrics) TokenCache(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.tokenCache.WithLabelValues("hit").Inc()
	} else {
		m.tokenCache.WithLabelValues("miss").Inc()
	}
}

// Change-feed read results (ChangeFeedRead).
const (
	FeedOK      = "ok"
	FeedMissing = "missing"
	FeedFailed  = "failed"
)

// ChangeFeedRead records one read of the change feed by result (FeedOK,
// FeedMissing, FeedFailed).
func (m *Metrics) ChangeFeedRead(result string) {
	if m == nil {
		return
	}
	m.feedReads.WithLabelValues(result).Inc()
}

// Refresh records a token endpoint call (or the later write of its
// tokens) by outcome; a lost grant (outcome "refresh_lost") also counts in
// grants_lost_total.
func (m *Metrics) Refresh(provider, outcome string) {
	if m == nil {
		return
	}
	m.refreshes.WithLabelValues(provider, outcome).Inc()
	if outcome == OutcomeRefreshLost {
		m.grantsLost.WithLabelValues(provider).Inc()
	}
}

// OutcomeRefreshLost is the refresh outcome of a grant lost to a fault
// (oauth.OutcomeRefreshLost).
const OutcomeRefreshLost = "refresh_lost"

// RegisterDeferredWrites exposes how many refreshed grants wait for the
// grant store (journalled, written in the background).
func (m *Metrics) RegisterDeferredWrites(n func() int) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "refresh_writes_pending",
		Help: "Refreshed grants the grant store has not taken yet; they are journalled and written in the background. Non-zero for long means the store is down.",
	}, func() float64 { return float64(n()) }))
}

// Exchange records a token exchange.
func (m *Metrics) Exchange(provider, outcome string) {
	if m == nil {
		return
	}
	m.exchanges.WithLabelValues(provider, outcome).Inc()
}

// ExchangeFallback records a request served from the stored grant after
// its provider's exchange gave no token.
func (m *Metrics) ExchangeFallback(provider string) {
	if m == nil {
		return
	}
	m.fallbacks.WithLabelValues(provider).Inc()
}

// StoreError counts a request failed by the store.
func (m *Metrics) StoreError() {
	if m != nil {
		m.storeErrors.Inc()
	}
}

// Scrubbed counts n secrets replaced in a response.
func (m *Metrics) Scrubbed(n int) {
	if m != nil {
		m.scrubbed.Add(float64(n))
	}
}

// AuditError counts a record no sink accepted.
func (m *Metrics) AuditError() {
	if m != nil {
		m.auditErrors.Inc()
	}
}

// PolicyReload records a policy load and, on success, the revision served.
func (m *Metrics) PolicyReload(revision string, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.policyReloads.WithLabelValues("error").Inc()
		return
	}
	m.policyReloads.WithLabelValues("ok").Inc()
	m.policyInfo.Reset()
	m.policyInfo.WithLabelValues(revision).Set(1)
}

// UseRecord counts a note of a grant's use by result (written, dropped,
// failed).
func (m *Metrics) UseRecord(result string) {
	if m == nil {
		return
	}
	m.useRecords.WithLabelValues(result).Inc()
}

// TunnelOpened and TunnelClosed track open tunnels.
func (m *Metrics) TunnelOpened() {
	if m != nil {
		m.tunnels.Inc()
	}
}

// TunnelClosed is the counterpart of TunnelOpened.
func (m *Metrics) TunnelClosed() {
	if m != nil {
		m.tunnels.Dec()
	}
}

// RegisterTokenCache exposes the token cache's size and the lookups that
// went past it to the grant store (or refresh): stats returns entries,
// estimated bytes and lookups so far.
func (m *Metrics) RegisterTokenCache(stats func() (entries int, bytes int64, lookups uint64)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "token_cache_entries",
			Help: "Access tokens in the token cache.",
		}, func() float64 { n, _, _ := stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "token_cache_bytes",
			Help: "Estimated memory of the tokens in the token cache (bounded by token_cache.max_bytes).",
		}, func() float64 { _, b, _ := stats(); return float64(b) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: "grant_lookups_total",
			Help: "Token lookups that went past the token cache to the stored grant (one grant store read each, plus a refresh when due); concurrent misses for one grant share one.",
		}, func() float64 { _, _, l := stats(); return float64(l) }),
	)
}

// RegisterCertCache exposes the leaf-certificate cache size and signings.
func (m *Metrics) RegisterCertCache(size func() int, signings func() uint64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "cert_cache_entries",
			Help: "Leaf certificates in the interception cache.",
		}, func() float64 { return float64(size()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: "cert_signings_total",
			Help: "Leaf certificates signed.",
		}, func() float64 { return float64(signings()) }),
	)
}
