package ratelimit

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/internal/metrics"
)

var t0 = time.Date(2026, 6, 18, 6, 0, 0, 0, time.UTC)

func newLimiter(t testing.TB, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg, Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func withRules(rules ...RuleConfig) Config {
	c := DefaultConfig()
	c.Rules = rules
	return c
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		err  bool
	}{
		{in: "60/m", want: Rate{60, time.Minute, 60}},
		{in: "10/s", want: Rate{10, time.Second, 10}},
		{in: "1000/h", want: Rate{1000, time.Hour, 1000}},
		{in: "5000/d", want: Rate{5000, 24 * time.Hour, 5000}},
		{in: "5/10s", want: Rate{5, 10 * time.Second, 5}},
		{in: " 3 / minute ", want: Rate{3, time.Minute, 3}},
		{in: "60", err: true},
		{in: "0/m", err: true},
		{in: "-1/m", err: true},
		{in: "x/m", err: true},
		{in: "60/fortnight", err: true},
		{in: "60/0s", err: true},
		{in: "60/8d", err: true},
		{in: "60/200h", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("ParseRate(%q): err = %v; want error %v", tt.in, err, tt.err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseRate(%q) = %+v; want %+v", tt.in, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.Rules = []RuleConfig{
		{Name: "ok", Rate: "60/m", By: []string{"user", "tool"}},
		{Name: "ok", Rate: "60/m"},
		{Name: "Bad Name", Rate: "60", By: []string{"usr"}},
		{Name: "policy", Rate: "1/s", By: []string{"path"}, Methods: []string{"post"}, Tools: []string{"["}},
		{Name: "p", Rate: "1/s", Paths: []string{"api"}},
	}
	c.Store = StoreRedis
	c.Redis.Timeout = 0
	c.MaxKeys = 1
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate: nil; want errors")
	}
	for _, want := range []string{
		"rules[1].name: duplicates rules[0]",
		`rules[2].name: must be 1 to 64 lower-case letters`,
		"rules[2].rate: must be COUNT/PERIOD",
		`rules[2].by[0]: must be one of user, agent, route, provider, method, path, tool, got "usr" (did you mean "user"?)`,
		`rules[3].name: "policy" is reserved`,
		"rules[3].by[0]: keying by path needs paths",
		`rules[3].methods[0]: must be an HTTP method in upper case, got "post"`,
		`rules[4].paths[0]: must be an absolute path prefix`,
		`rules[3].tools[0]: must be a tool name or a pattern`,
		"redis.address: required with store: redis",
		"redis.timeout: must be between 1ms and 5s",
		"max_keys: must be between 16",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v\nwant it to contain %q", err, want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v; want nil", err)
	}
}

// TestExactUnderConcurrency: N requests racing for a bucket of L tokens
// (no refill within the test: the clock stands still) → exactly L pass.
func TestExactUnderConcurrency(t *testing.T) {
	const n, limit = 1000, 137
	l := newLimiter(t, withRules(
		RuleConfig{Name: "per-user", Rate: "137/h", By: []string{DimUser}},
		// A second, looser rule every request also takes from: all or
		// none must hold across both.
		RuleConfig{Name: "all", Rate: "1000000/h"},
	))
	var passed, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if r := l.Check(context.Background(), t0, &Request{User: "alice"}, nil); r != nil {
				if r.Key != "per-user:alice" || r.Reason != ReasonRule {
					t.Errorf("refusal = %+v; want key per-user:alice, reason rule", r)
				}
				refused.Add(1)
				return
			}
			passed.Add(1)
		}()
	}
	close(start)
	wg.Wait()
	if passed.Load() != limit || refused.Load() != n-limit {
		t.Fatalf("passed %d, refused %d; want %d, %d", passed.Load(), refused.Load(), limit, n-limit)
	}
	// The loose rule took a token only for the requests that passed.
	b := l.local.bucket("all", Rate{1000000, time.Hour, 1000000})
	if got := b.lim.TokensAt(t0); got != 1000000-limit {
		t.Errorf("tokens left in the loose rule = %v; want %d (only passed requests take)", got, 1000000-limit)
	}
	// Another user has a bucket of their own.
	if r := l.Check(context.Background(), t0, &Request{User: "bob"}, nil); r != nil {
		t.Errorf("bob: %+v; want allowed", r)
	}
}

// TestRefillFakeClock drives refills with the caller's clock.
func TestRefillFakeClock(t *testing.T) {
	l := newLimiter(t, withRules(RuleConfig{Name: "r", Rate: "60/m", Burst: 10, By: []string{DimUser}}))
	req := &Request{User: "alice"}
	now := t0
	for i := 0; i < 10; i++ {
		if r := l.Check(context.Background(), now, req, nil); r != nil {
			t.Fatalf("request %d of the burst refused: %+v", i+1, r)
		}
	}
	r := l.Check(context.Background(), now, req, nil)
	if r == nil {
		t.Fatal("11th request allowed; want refused (burst 10)")
	}
	if r.RetryAfter != time.Second {
		t.Errorf("RetryAfter = %v; want 1s (one token a second)", r.RetryAfter)
	}
	// 999 ms later: still no whole token.
	if r := l.Check(context.Background(), now.Add(999*time.Millisecond), req, nil); r == nil {
		t.Error("after 999ms: allowed; want refused")
	}
	now = now.Add(time.Second)
	if r := l.Check(context.Background(), now, req, nil); r != nil {
		t.Errorf("after 1s: %+v; want allowed", r)
	}
	if r := l.Check(context.Background(), now, req, nil); r == nil {
		t.Error("second request after 1s: allowed; want refused")
	}
	// After a long pause the bucket is full again, never fuller.
	now = now.Add(time.Hour)
	n := 0
	for l.Check(context.Background(), now, req, nil) == nil {
		n++
	}
	if n != 10 {
		t.Errorf("after an hour %d requests passed; want the burst, 10", n)
	}
}

func TestRuleMatching(t *testing.T) {
	l := newLimiter(t, withRules(
		RuleConfig{Name: "slack-post", Rate: "1/h", By: []string{DimUser, DimPath},
			Routes: []string{"slack"}, Methods: []string{"POST"}, Paths: []string{"/api/chat.postMessage", "/api"}},
		RuleConfig{Name: "tools", Rate: "2/h", By: []string{DimUser, DimTool}, Tools: []string{"create_*"}},
	))
	ctx := context.Background()
	tests := []struct {
		name    string
		req     Request
		refused string // key refusing the second identical request; "" = none
	}{
		{"other route", Request{User: "a", Route: "github", Method: "POST", Path: "/api/chat.postMessage"}, ""},
		{"GET", Request{User: "a", Route: "slack", Method: "GET", Path: "/api/chat.postMessage"}, ""},
		{"outside the paths", Request{User: "a", Route: "slack", Method: "POST", Path: "/apix"}, ""},
		{"most specific prefix", Request{User: "a", Route: "slack", Method: "POST", Path: "/api/chat.postMessage"}, "slack-post:a:/api/chat.postMessage"},
		{"other prefix", Request{User: "a", Route: "slack", Method: "POST", Path: "/api/users.list"}, "slack-post:a:/api"},
		{"tool not matched", Request{User: "a", Tools: []string{"list_issues"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := l.Check(ctx, t0, &tt.req, nil); r != nil {
				t.Fatalf("first: %+v; want allowed", r)
			}
			r := l.Check(ctx, t0, &tt.req, nil)
			got := ""
			if r != nil {
				got = r.Key
			}
			if got != tt.refused {
				t.Errorf("second: refused by %q; want %q", got, tt.refused)
			}
		})
	}
	// A batch calling one tool twice takes two tokens at once.
	batch := &Request{User: "b", Tools: []string{"create_issue", "create_issue"}}
	if r := l.Check(ctx, t0, batch, nil); r != nil {
		t.Fatalf("batch of 2 with burst 2: %+v; want allowed", r)
	}
	if r := l.Check(ctx, t0, &Request{User: "b", Tools: []string{"create_issue"}}, nil); r == nil || r.Key != "tools:b:create_issue" {
		t.Errorf("third call: %+v; want refused by tools:b:create_issue", r)
	}
}

func TestKeyEscaping(t *testing.T) {
	l := newLimiter(t, withRules(RuleConfig{Name: "r", Rate: "1/h", By: []string{DimUser, DimAgent}}))
	ctx := context.Background()
	// "a:b" + "c" and "a" + "b:c" must not share a bucket.
	if r := l.Check(ctx, t0, &Request{User: "a:b", Agent: "c"}, nil); r != nil {
		t.Fatal(r)
	}
	if r := l.Check(ctx, t0, &Request{User: "a", Agent: "b:c"}, nil); r != nil {
		t.Errorf("a / b:c refused by %q; want a bucket of its own", r.Key)
	}
	long := strings.Repeat("x", 500)
	_ = l.Check(ctx, t0, &Request{User: long}, nil)
	r := l.Check(ctx, t0, &Request{User: long}, nil)
	if r == nil || len(r.Key) > 64 || !strings.HasPrefix(r.Key, "r:sha256-") {
		t.Errorf("long user: refusal %+v; want a short hashed key", r)
	}
}

func TestPolicyBuckets(t *testing.T) {
	dec := func(s string) map[string]any {
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	got, err := PolicyBuckets(dec(`{"limit": {"key": "alice:slack:chat.postMessage", "rate": "60/m", "burst": 10}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Bucket{{Key: "policy:alice:slack:chat.postMessage", Rate: Rate{60, time.Minute, 10}, N: 1, reason: ReasonPolicy}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(Bucket{})); diff != "" {
		t.Errorf("PolicyBuckets (-want +got):\n%s", diff)
	}
	if got, err := PolicyBuckets(dec(`{"limits": [{"key": "a", "rate": "1/s"}, {"key": "b", "rate": "2/s"}]}`)); err != nil || len(got) != 2 {
		t.Errorf("limits: %v, %v; want two buckets", got, err)
	}
	if got, err := PolicyBuckets(dec(`{"other": 1}`)); err != nil || got != nil {
		t.Errorf("no limit: %v, %v; want nil, nil", got, err)
	}
	for _, bad := range []string{
		`{"limit": "60/m"}`,
		`{"limit": {"key": "", "rate": "60/m"}}`,
		`{"limit": {"key": "k", "rate": "sixty"}}`,
		`{"limit": {"key": "k", "rate": "60/m", "burst": 0}}`,
		`{"limit": {"key": "k", "rate": "60/m", "burst": 1.5}}`,
		`{"limit": {"key": "k", "rate": "60/m", "per": "m"}}`,
		`{"limit": {"key": "k\n", "rate": "60/m"}}`,
		`{"limits": {"key": "k", "rate": "60/m"}}`,
	} {
		if _, err := PolicyBuckets(dec(bad)); err == nil {
			t.Errorf("PolicyBuckets(%s): nil error; want one", bad)
		}
	}
}

func TestPolicyLimitRefuses(t *testing.T) {
	l := newLimiter(t, DefaultConfig())
	pb := []Bucket{{Key: "policy:alice:post", Rate: Rate{1, time.Minute, 1}, N: 1, reason: ReasonPolicy}}
	if r := l.Check(context.Background(), t0, &Request{User: "alice"}, pb); r != nil {
		t.Fatal(r)
	}
	r := l.Check(context.Background(), t0.Add(time.Second), &Request{User: "alice"}, pb)
	if r == nil || r.Reason != ReasonPolicy || r.Key != "policy:alice:post" || r.RetryAfter != 59*time.Second {
		t.Errorf("refusal = %+v; want policy:alice:post, policy, 59s", r)
	}
	// The policy may change the key's rate between decisions; the tokens
	// refill at the new rate from then on (none are refunded).
	pb[0].Rate = Rate{100, time.Minute, 100}
	if r := l.Check(context.Background(), t0.Add(2*time.Second), &Request{User: "alice"}, pb); r == nil || r.RetryAfter != time.Second {
		t.Errorf("just after the rate was raised: %+v; want refused for 1s", r)
	}
	if r := l.Check(context.Background(), t0.Add(3*time.Second), &Request{User: "alice"}, pb); r != nil {
		t.Errorf("after the rate was raised: %+v; want allowed", r)
	}
}

func TestBackoff(t *testing.T) {
	gh := ProviderHeaders{Remaining: "X-RateLimit-Remaining", Reset: "X-RateLimit-Reset", ResetFormat: ResetEpochSeconds}
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	tests := []struct {
		name   string
		status int
		h      http.Header
		ph     ProviderHeaders
		want   time.Duration // 0 = no back-off
	}{
		{"429 seconds", 429, h("Retry-After", "30"), ProviderHeaders{}, 30 * time.Second},
		{"503 date", 503, h("Retry-After", t0.Add(2*time.Minute).Format(http.TimeFormat)), ProviderHeaders{}, 2 * time.Minute},
		{"429 without Retry-After", 429, h(), ProviderHeaders{}, 0},
		{"200 with Retry-After", 200, h("Retry-After", "30"), ProviderHeaders{}, 0},
		{"429 garbage", 429, h("Retry-After", "soon"), ProviderHeaders{}, 0},
		{"429 past date", 429, h("Retry-After", t0.Add(-time.Minute).Format(http.TimeFormat)), ProviderHeaders{}, 0},
		{"github spent", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1781763300"), gh, 15 * time.Minute},
		{"github left", 200, h("X-RateLimit-Remaining", "1", "X-RateLimit-Reset", "1781763300"), gh, 0},
		{"github 403 spent", 403, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1781763300"), gh, 15 * time.Minute},
		{"later of both", 429, h("Retry-After", "60", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1781763300"), gh, 15 * time.Minute},
		{"headers not declared", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1781763300"), ProviderHeaders{}, 0},
		{"delta format", 200, h("RateLimit-Remaining", "0", "RateLimit-Reset", "7"), ProviderHeaders{Remaining: "RateLimit-Remaining", Reset: "RateLimit-Reset", ResetFormat: ResetDeltaSeconds}, 7 * time.Second},
	}
	if got := time.Unix(1781763300, 0).Sub(t0); got != 15*time.Minute {
		t.Fatalf("test constant: reset is %v after t0; want 15m", got)
	}
	for _, tt := range tests {
		until, ok := Backoff(t0, tt.status, tt.h, tt.ph)
		var got time.Duration
		if ok {
			got = until.Sub(t0)
		}
		if got != tt.want {
			t.Errorf("%s: back-off %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestObserveBlocksUserAndProvider(t *testing.T) {
	m := metrics.New()
	cfg := DefaultConfig()
	cfg.Upstream.MaxBackoff = 10 * time.Minute
	l, err := New(cfg, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	alice := &Request{User: "alice", Provider: "slack", Route: "slack"}
	if _, ok := l.Observe(t0, "slack", "alice", 429, http.Header{"Retry-After": {"30"}}); !ok {
		t.Fatal("Observe(429, Retry-After: 30) = false")
	}
	r := l.Check(ctx, t0.Add(10*time.Second), alice, nil)
	if r == nil || r.Reason != ReasonUpstream || r.Key != "upstream:slack:alice" || r.RetryAfter != 20*time.Second {
		t.Errorf("alice 10s later: %+v; want refused by upstream:slack:alice for 20s", r)
	}
	for _, other := range []*Request{{User: "bob", Provider: "slack"}, {User: "alice", Provider: "github"}} {
		if r := l.Check(ctx, t0.Add(10*time.Second), other, nil); r != nil {
			t.Errorf("%+v: %+v; want allowed (back-offs are per user and provider)", other, r)
		}
	}
	if r := l.Check(ctx, t0.Add(30*time.Second), alice, nil); r != nil {
		t.Errorf("alice 30s later: %+v; want allowed", r)
	}
	// A provider asking for a day is believed for max_backoff.
	until, _ := l.Observe(t0, "slack", "alice", 503, http.Header{"Retry-After": {"86400"}})
	if got := until.Sub(t0); got != 10*time.Minute {
		t.Errorf("capped back-off = %v; want 10m", got)
	}
	if got := gather(t, m, "onbehalf_upstream_backoffs_total"); got != 2 {
		t.Errorf("onbehalf_upstream_backoffs_total = %v; want 2", got)
	}
	// Respect off: nothing is remembered.
	cfg.Upstream.Respect = false
	l2, _ := New(cfg, Options{})
	if _, ok := l2.Observe(t0, "slack", "alice", 429, http.Header{"Retry-After": {"30"}}); ok {
		t.Error("Observe with respect: false = true")
	}
}

func TestBoundedKeys(t *testing.T) {
	cfg := withRules(RuleConfig{Name: "r", Rate: "1/h", By: []string{DimUser}})
	cfg.MaxKeys = 64
	l := newLimiter(t, cfg)
	for i := 0; i < 10_000; i++ {
		_ = l.Check(context.Background(), t0, &Request{User: "u" + strings.Repeat("x", i%50) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26))}, nil)
	}
	if n := l.local.len(); n > 64 {
		t.Errorf("buckets held = %d; want at most max_keys 64", n)
	}
	if l.local.evicted.Load() == 0 {
		t.Error("evicted = 0; want evictions past max_keys")
	}
}

// BenchmarkCheck measures the limiter on the request path: one rule keyed
// by user and route, a pool of users, in parallel.
func BenchmarkCheck(b *testing.B) {
	l := newLimiter(b, withRules(RuleConfig{Name: "per-user", Rate: "1000000000/s", By: []string{DimUser, DimRoute}}))
	users := make([]Request, 256)
	for i := range users {
		// The route's name as the sidecar names an unnamed route
		// (provider:host:port): a value that needs escaping.
		users[i] = Request{User: "user-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Route: "slack:slack.com:443", Provider: "slack", Method: "POST", Path: "/api/chat.postMessage"}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		now := t0
		for pb.Next() {
			if r := l.Check(ctx, now, &users[i%len(users)], nil); r != nil {
				b.Fatal(r)
			}
			i++
		}
	})
}

// BenchmarkCheckNoRules is the cost on a sidecar with no limits
// configured: the provider back-off lookup only.
func BenchmarkCheckNoRules(b *testing.B) {
	l := newLimiter(b, DefaultConfig())
	req := &Request{User: "alice", Route: "slack", Provider: "slack"}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if r := l.Check(ctx, t0, req, nil); r != nil {
			b.Fatal(r)
		}
	}
}

// gather returns the sum of the samples of the metric name in m.
func gather(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			if c := s.GetCounter(); c != nil {
				sum += c.GetValue()
			}
		}
	}
	return sum
}
