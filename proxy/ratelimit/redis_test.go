//go:build integration

package ratelimit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/onbehalf-dev/onbehalf/internal/metrics"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/redistest"
)

func startRedis(t *testing.T) *redistest.Server {
	t.Helper()
	r, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func redisConfig(addr string, rules ...RuleConfig) Config {
	c := withRules(rules...)
	c.Store = StoreRedis
	c.Redis.Address = addr
	// The race detector and a loaded machine slow round trips far
	// beyond production's.
	c.Redis.Timeout = 2 * time.Second
	return c
}

// TestRedisSharedExact: three limiters (three replicas) on one Redis share
// their buckets: N concurrent requests spread over them against a limit
// of L → exactly L pass in all.
func TestRedisSharedExact(t *testing.T) {
	r := startRedis(t)
	const n, limit = 300, 50
	cfg := redisConfig(r.Addr(), RuleConfig{Name: "per-user", Rate: "50/h", By: []string{DimUser}},
		RuleConfig{Name: "loose", Rate: "100000/h"})
	var ls []*Limiter
	for range 3 {
		ls = append(ls, newLimiter(t, cfg))
	}
	var passed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ls[i%3].Check(context.Background(), time.Now(), &Request{User: "alice"}, nil) == nil {
				passed.Add(1)
			}
		}()
	}
	wg.Wait()
	if passed.Load() != limit {
		t.Fatalf("passed %d of %d across three replicas; want exactly %d", passed.Load(), n, limit)
	}
	// All or none: the loose rule's key holds only the passed requests'
	// tokens (its arrival time is 50 intervals ahead, not 300).
	c := r.Client()
	defer c.Close()
	if n, err := c.Exists(context.Background(), defaultKeyPrefix+"per-user:alice", defaultKeyPrefix+"loose").Result(); err != nil || n != 2 {
		t.Fatalf("keys in Redis: %d, %v; want both buckets", n, err)
	}
	ttl, err := c.PTTL(context.Background(), defaultKeyPrefix+"loose").Result()
	if want := 50 * 36 * time.Millisecond; err != nil || ttl > want || ttl < want-2*time.Second {
		t.Errorf("loose bucket expires in %v; want about %v (50 tokens of 36ms)", ttl, want)
	}
	// A refusal says how long until a token: one per 72 s.
	ref := ls[0].Check(context.Background(), time.Now(), &Request{User: "alice"}, nil)
	if ref == nil || ref.Key != "per-user:alice" || ref.RetryAfter < 70*time.Second || ref.RetryAfter > 73*time.Second {
		t.Errorf("refusal %+v; want per-user:alice, about 72s", ref)
	}
}

// TestRedisRefill: the shared buckets refill on Redis's clock.
func TestRedisRefill(t *testing.T) {
	r := startRedis(t)
	l := newLimiter(t, redisConfig(r.Addr(), RuleConfig{Name: "r", Rate: "5/s", Burst: 1, By: []string{DimUser}}))
	ctx := context.Background()
	if ref := l.Check(ctx, time.Now(), &Request{User: "a"}, nil); ref != nil {
		t.Fatal(ref)
	}
	ref := l.Check(ctx, time.Now(), &Request{User: "a"}, nil)
	if ref == nil || ref.RetryAfter != time.Second {
		t.Fatalf("second request: %+v; want refused, Retry-After 1s (200ms rounded up)", ref)
	}
	time.Sleep(250 * time.Millisecond)
	if ref := l.Check(ctx, time.Now(), &Request{User: "a"}, nil); ref != nil {
		t.Errorf("after 250ms: %+v; want allowed", ref)
	}
}

// TestRedisFallback: Redis killed mid-run → the replica decides with its
// own buckets, says so once in its logs and counts every such check; once
// Redis answers again, limits are shared again.
func TestRedisFallback(t *testing.T) {
	r := startRedis(t)
	var logs bytes.Buffer
	var mu sync.Mutex
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(lockedWriter{&mu, &logs}), zap.InfoLevel))
	m := metrics.New()
	cfg := redisConfig(r.Addr(), RuleConfig{Name: "r", Rate: "3/h", By: []string{DimUser}})
	cfg.Redis.Timeout = 200 * time.Millisecond
	cfg.Redis.RetryInterval = 300 * time.Millisecond
	l, err := New(cfg, Options{Logger: log, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	check := func() *Refusal { return l.Check(ctx, time.Now(), &Request{User: "alice"}, nil) }
	for i := 0; i < 3; i++ {
		if ref := check(); ref != nil {
			t.Fatalf("request %d: %+v", i+1, ref)
		}
	}
	if check() == nil {
		t.Fatal("4th request allowed by Redis; want refused")
	}
	if got := gather(t, m, "onbehalf_rate_limit_fallbacks_total"); got != 0 {
		t.Fatalf("fallbacks = %v before Redis died; want 0", got)
	}

	r.Kill()
	// The local buckets decide now: they start full (3), then refuse.
	start := time.Now()
	passed := 0
	for i := 0; i < 5; i++ {
		if check() == nil {
			passed++
		}
	}
	if passed != 3 {
		t.Errorf("with Redis down %d of 5 passed; want the local bucket's 3", passed)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("5 checks with Redis down took %v; only one per retry interval may wait for the timeout", d)
	}
	if got := gather(t, m, "onbehalf_rate_limit_fallbacks_total"); got != 5 {
		t.Errorf("fallbacks = %v; want 5", got)
	}
	mu.Lock()
	warned := strings.Count(logs.String(), "the shared rate-limit store failed")
	mu.Unlock()
	if warned != 1 {
		t.Errorf("logged the failure %d times; want once\n%s", warned, logs.String())
	}

	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(cfg.Redis.RetryInterval)
	// The new, empty Redis holds a full bucket again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if check() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request passed after Redis came back\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "the shared rate-limit store answers again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// BenchmarkCheckRedis is the shared engine's cost per request (one round
// trip to a Redis on loopback).
func BenchmarkCheckRedis(b *testing.B) {
	r, err := redistest.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	l := newLimiter(b, redisConfig(r.Addr(), RuleConfig{Name: "per-user", Rate: "1000000000/s", By: []string{DimUser}}))
	req := &Request{User: "alice"}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ref := l.Check(ctx, time.Now(), req, nil); ref != nil {
			b.Fatal(ref)
		}
	}
}

// redisACLCommands are the commands the limiter's ACL user needs: the
// script (EVALSHA, EVAL on a cache miss) and what it calls, the connection
// handshake, and PING.
const redisACLCommands = "-@all +evalsha +eval +time +get +set +hello +auth +ping"

// TestRedisACL runs the shared limits on a Redis whose default user is off
// and whose one ACL user may run only what the limiter needs, on its own
// keys: replicas that log in with redis.username and password_file share
// their buckets; a wrong password or a key prefix outside the user's keys
// falls back to local buckets, logged without the password.
func TestRedisACL(t *testing.T) {
	const password = "canary-redis-password-7f3a"
	r, err := redistest.StartWith(redistest.Options{
		User: "onbehalf", Password: password, KeyPattern: defaultKeyPrefix + "*",
		// What the limiter needs, as the README gives it.
		Commands: redisACLCommands,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "password"), filepath.Join(dir, "wrong")
	if err := os.WriteFile(good, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	limiter := func(passwordFile, prefix string) (*Limiter, *metrics.Metrics, func() string) {
		cfg := redisConfig(r.Addr(), RuleConfig{Name: "per-user", Rate: "5/h", By: []string{DimUser}})
		cfg.Redis.Username, cfg.Redis.PasswordFile = "onbehalf", passwordFile
		if prefix != "" {
			cfg.Redis.KeyPrefix = prefix
		}
		return loggedLimiter(t, cfg)
	}
	ctx := context.Background()
	check := func(l *Limiter, user string) bool { return l.Check(ctx, time.Now(), &Request{User: user}, nil) == nil }

	t.Run("shared", func(t *testing.T) {
		a, am, alogs := limiter(good, "")
		defer func() {
			if t.Failed() {
				t.Log(alogs())
			}
		}()
		b, bm, _ := limiter(good, "")
		passed := 0
		for i := range 20 {
			if check([]*Limiter{a, b}[i%2], "alice") {
				passed++
			}
		}
		if passed != 5 {
			t.Errorf("%d of 20 passed across two replicas; want the shared bucket's 5", passed)
		}
		if f := gather(t, am, "onbehalf_rate_limit_fallbacks_total") + gather(t, bm, "onbehalf_rate_limit_fallbacks_total"); f != 0 {
			t.Errorf("%v checks fell back; want 0", f)
		}
		c := r.Client()
		defer c.Close()
		if v, err := c.Get(ctx, defaultKeyPrefix+"per-user:alice").Result(); err != nil || v == "" {
			t.Errorf("bucket in Redis: %q, %v; want it", v, err)
		}
	})

	for _, tc := range []struct{ name, passwordFile, prefix string }{
		{"wrong password", bad, ""},
		{"keys outside the user's", good, "elsewhere:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, m, logs := limiter(tc.passwordFile, tc.prefix)
			out := expectFallback(t, l, m, logs, "the shared rate-limit store failed")
			if strings.Contains(out, password) || strings.Contains(out, "not-the-password") {
				t.Errorf("a password in the logs:\n%s", out)
			}
		})
	}
}

// loggedLimiter is a limiter with its own metrics and a log the test reads.
func loggedLimiter(t *testing.T, cfg Config) (*Limiter, *metrics.Metrics, func() string) {
	t.Helper()
	var logs bytes.Buffer
	var mu sync.Mutex
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(lockedWriter{&mu, &logs}), zap.InfoLevel))
	m := metrics.New()
	l, err := New(cfg, Options{Logger: log, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, m, func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
}

// TestRedisTLS runs the shared limits on a Redis that serves TLS only:
// replicas with redis.tls and the server's CA in redis.ca_file share their
// buckets; without the CA (system roots only) the certificate is refused,
// and a replica without tls cannot talk to it: both fall back to local
// buckets and say why.
func TestRedisTLS(t *testing.T) {
	r, err := redistest.StartWith(redistest.Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	ctx := context.Background()
	limiter := func(tls bool, caFile string) (*Limiter, *metrics.Metrics, func() string) {
		cfg := redisConfig(r.Addr(), RuleConfig{Name: "per-user", Rate: "5/h", By: []string{DimUser}})
		cfg.Redis.TLS, cfg.Redis.CAFile = tls, caFile
		cfg.Redis.Timeout = 500 * time.Millisecond
		return loggedLimiter(t, cfg)
	}
	check := func(l *Limiter, user string) bool { return l.Check(ctx, time.Now(), &Request{User: user}, nil) == nil }

	t.Run("shared", func(t *testing.T) {
		a, am, alogs := limiter(true, r.CAFile())
		b, bm, _ := limiter(true, r.CAFile())
		passed := 0
		for i := range 20 {
			if check([]*Limiter{a, b}[i%2], "alice") {
				passed++
			}
		}
		if passed != 5 {
			t.Errorf("%d of 20 passed across two replicas; want the shared bucket's 5\n%s", passed, alogs())
		}
		if f := gather(t, am, "onbehalf_rate_limit_fallbacks_total") + gather(t, bm, "onbehalf_rate_limit_fallbacks_total"); f != 0 {
			t.Errorf("%v checks fell back; want 0", f)
		}
	})
	for _, tc := range []struct {
		name    string
		tls     bool
		caFile  string
		wantLog string
	}{
		{"untrusted certificate", true, "", "certificate"},
		{"plain client", false, "", "the shared rate-limit store failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, m, logs := limiter(tc.tls, tc.caFile)
			expectFallback(t, l, m, logs, "the shared rate-limit store failed", tc.wantLog)
		})
	}
}

// expectFallback checks that a limiter whose Redis refuses it decides
// alone: 8 requests against a rule of 5/h, 5 pass on the local bucket,
// every check counted as a fallback, and the log says each of want. It
// returns the log.
func expectFallback(t *testing.T, l *Limiter, m *metrics.Metrics, logs func() string, want ...string) string {
	t.Helper()
	passed := 0
	for range 8 {
		if l.Check(context.Background(), time.Now(), &Request{User: "bob"}, nil) == nil {
			passed++
		}
	}
	if passed != 5 {
		t.Errorf("%d of 8 passed; want the local bucket's 5", passed)
	}
	if f := gather(t, m, "onbehalf_rate_limit_fallbacks_total"); f != 8 {
		t.Errorf("fallbacks = %v; want 8", f)
	}
	out := logs()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %q:\n%s", w, out)
		}
	}
	return out
}
