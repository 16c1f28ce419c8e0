package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkServeCacheHit sends small JSON POSTs through an intercepted,
// keep-alive tunnel with the assertion and the token both cached: the
// sidecar's steady state. The process runs client, sidecar and upstream, so
// cpu-µs/op is an upper bound on the sidecar's own CPU per request;
// BenchmarkDirect gives the client and upstream share to subtract.
func BenchmarkServeCacheHit(b *testing.B) { serveCacheHit(b, nil) }

// BenchmarkServeCacheHitLimited is BenchmarkServeCacheHit with two rate
// limits every request takes from (per user and route, per user and path
// prefix) and the provider back-off check: the limiter's share of a
// request is the difference.
func BenchmarkServeCacheHitLimited(b *testing.B) {
	serveCacheHit(b, func(c *sidecar.Config) {
		c.RateLimits.Rules = []ratelimit.RuleConfig{
			{Name: "per-user", Rate: "1000000000/s", By: []string{ratelimit.DimUser, ratelimit.DimRoute}},
			{Name: "posts", Rate: "1000000000/s", By: []string{ratelimit.DimUser, ratelimit.DimPath}, Methods: []string{"POST"}, Paths: []string{"/api"}},
		}
	})
}

func serveCacheHit(b *testing.B, edit func(*sidecar.Config)) {
	e := testenv.New(b, testenv.Options{Config: func(c *sidecar.Config) {
		c.Log.Level = "info"
		if edit != nil {
			edit(c)
		}
	}})
	client := e.Client()
	assertion := e.Assert(b, testenv.User)
	url := e.APIURL("/api/chat.postMessage")
	body := `{"channel":"general","text":"benchmark"}`
	do := func() {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set(identity.DefaultHeader, assertion)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	do() // warm: tunnel, leaf, assertion and token caches
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		do()
	}
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkDirect is the same workload straight to the upstream: the
// baseline for BenchmarkServeCacheHit.
func BenchmarkDirect(b *testing.B) {
	e := testenv.New(b, testenv.Options{})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfigFor(e)}}
	url := fmt.Sprintf("https://127.0.0.1:%d/api/chat.postMessage", e.Upstream.Port())
	body := `{"channel":"general","text":"benchmark"}`
	do := func() {
		resp, err := client.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	do()
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		do()
	}
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkMITMNewHost measures a first-seen host: CONNECT, a leaf signed
// for the new name, the TLS handshake and one request. Every iteration uses
// a host the sidecar has not seen (a wildcard route covers them all).
func BenchmarkMITMNewHost(b *testing.B) {
	e := testenv.New(b, testenv.Options{Config: func(c *sidecar.Config) {
		c.Log.Level = "info"
		c.Routes = append(c.Routes, injector.RouteConfig{Host: "*.hosts.test", Port: 443, Provider: testenv.Provider})
	}})
	b.ReportAllocs()
	i := 0
	start := cpuTime()
	for b.Loop() {
		i++
		host := fmt.Sprintf("h%d.hosts.test", i)
		tc, resp, err := e.DialTLSThroughProxy(host+":443", host, "")
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("tunnel to %s: %v", host, err)
		}
		tc.Close()
	}
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkServeScrub is BenchmarkServeCacheHit with JSON responses of 1
// and 64 KiB, with response scrubbing on (the default) and off: the
// difference in ns/op and cpu-µs/op is what scrubbing adds per response of
// that size (the responses hold no secret, the common case; finding one
// costs a copy of the marker).
func BenchmarkServeScrub(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		payload := []byte(`{"ok":true,"messages":[` + strings.Repeat(`{"type":"message","user":"U0123ABCD","text":"hello from the channel","ts":"1716281234.000200"},`, size/95) + `{}]}`)
		for _, on := range []bool{true, false} {
			name := fmt.Sprintf("%dKiB/scrub=%v", size>>10, on)
			b.Run(name, func(b *testing.B) {
				e := testenv.New(b, testenv.Options{
					Upstream: upstreamtest.Options{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						w.Header().Set("Content-Type", "application/json")
						w.Write(payload)
					})},
					Config: func(c *sidecar.Config) {
						c.Log.Level = "info"
						c.Proxy.ScrubResponses = on
					},
				})
				client := e.Client()
				assertion := e.Assert(b, testenv.User)
				url := e.APIURL("/api/conversations.history")
				do := func() {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					req.Header.Set(identity.DefaultHeader, assertion)
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
				do()
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				start := cpuTime()
				for b.Loop() {
					do()
				}
				b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}
