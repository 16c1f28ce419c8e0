package oauth

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkTokenValid measures the common path: the stored access token is
// far from expiry, so Token costs one store read.
func BenchmarkTokenValid(b *testing.B) {
	e := newEnv(b)
	e.seed(testUser, time.Now().Add(time.Hour))
	s := e.source(e.st, e.provider(nil), Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Token(ctx, testProvider, testUser); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRefreshStorm measures stormCallers concurrent Token calls for a
// grant whose access token has expired, spread over one or three replicas
// (Sources with their own store handles on one database file). Each
// iteration is one storm and must cost exactly one refresh at the provider.
// It reports the storm's wall time next to one bare provider round trip
// (a refresh of another grant, measured in the same iteration), with the
// provider answering at once and with 50ms of added latency (a realistic
// remote token endpoint). The last two cases make the provider answer in
// 1s: with a 1s lease the holder's heartbeat renews it three times during
// the refresh, with the default 15s lease never; the storm must take the
// same time either way (the heartbeat runs beside the refresh, not in its
// path).
func BenchmarkRefreshStorm(b *testing.B) {
	for _, bc := range []struct {
		replicas int
		latency  time.Duration
		lease    time.Duration
	}{
		{1, 0, 0}, {3, 0, 0}, {1, 50 * time.Millisecond, 0}, {3, 50 * time.Millisecond, 0},
		{3, time.Second, DefaultLeaseTTL}, {3, time.Second, time.Second},
	} {
		replicas := bc.replicas
		name := fmt.Sprintf("replicas=%d/latency=%s", replicas, bc.latency)
		if bc.lease != 0 {
			name += "/lease=" + bc.lease.String()
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b)
			e.srv.SetLatency(bc.latency)
			e.seedExpired(testUser)
			bare := e.seed("bench-roundtrip", time.Now().Add(time.Hour)).RefreshToken
			roundTripper := e.provider(nil)
			sources := make([]*Source, replicas)
			for i := range sources {
				st := e.st
				if i > 0 {
					st = e.openStore()
				}
				sources[i] = e.source(st, e.provider(func(c *ProviderConfig, _ *string) { c.Timeout = 5 * time.Second }),
					Options{Refresh: RefreshConfig{LeaseTTL: bc.lease}})
			}
			ctx := context.Background()
			var storm, roundTrip time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i > 0 {
					b.StopTimer()
					e.expireStored(testUser)
					b.StartTimer()
				}
				start := time.Now()
				var wg sync.WaitGroup
				errs := make(chan error, stormCallers)
				for c := range stormCallers {
					wg.Go(func() {
						if _, err := sources[c%replicas].Token(ctx, testProvider, testUser); err != nil {
							errs <- err
						}
					})
				}
				wg.Wait()
				storm += time.Since(start)
				close(errs)
				for err := range errs {
					b.Fatalf("Token: %v", err)
				}

				b.StopTimer()
				start = time.Now()
				tok, err := roundTripper.refresh(ctx, bare)
				roundTrip += time.Since(start)
				if err != nil {
					b.Fatalf("bare refresh: %v", err)
				}
				bare = tok.RefreshToken
				b.StartTimer()
			}
			b.StopTimer()
			if st := e.srv.Stats(); st.Refreshes != int64(2*b.N) || st.ReuseDetections != 0 {
				b.Fatalf("provider stats = %+v; want %d refreshes (one per storm plus the bare ones), no reuse", st, 2*b.N)
			}
			n := float64(b.N)
			b.ReportMetric(float64(storm.Microseconds())/n/1000, "storm-ms")
			b.ReportMetric(float64(roundTrip.Microseconds())/n/1000, "roundtrip-ms")
			b.ReportMetric(float64(storm)/float64(roundTrip), "storm/roundtrip")
		})
	}
}

// BenchmarkRefreshSingle measures one Token call that refreshes: store
// read, lease, re-read, provider round trip, compare-and-swap write and
// lease release. It is the floor of BenchmarkRefreshStorm.
func BenchmarkRefreshSingle(b *testing.B) {
	e := newEnv(b)
	e.seedExpired(testUser)
	s := e.source(e.st, e.provider(nil), Options{})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 {
			b.StopTimer()
			e.expireStored(testUser)
			b.StartTimer()
		}
		if _, err := s.Token(ctx, testProvider, testUser); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if st := e.srv.Stats(); st.Refreshes != int64(b.N) {
		b.Fatalf("refreshes = %d; want %d", st.Refreshes, b.N)
	}
}

// BenchmarkAuthCodeURL measures building an authorization URL (one per
// connect attempt) for a preset with authorization parameters.
func BenchmarkAuthCodeURL(b *testing.B) {
	c := presetConfig("google")
	p, err := NewProvider("google", c, "secret-value", nil)
	if err != nil {
		b.Fatal(err)
	}
	extra := map[string]string{"login_hint": "alice@example.com"}
	b.ReportAllocs()
	for b.Loop() {
		if p.AuthCodeURL("state-0123456789", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "https://connect.example/cb", nil, extra) == "" {
			b.Fatal("empty URL")
		}
	}
}

// BenchmarkResolve measures resolving a preset-based configuration, done
// once per provider at start and on every Validate.
func BenchmarkResolve(b *testing.B) {
	c := presetConfig("microsoft")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Resolve(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAccount measures one identity lookup against the test server
// over a kept-alive TLS connection.
func BenchmarkAccount(b *testing.B) {
	e := newEnv(b)
	tok := e.seed(testUser, time.Now().Add(time.Hour))
	p := e.provider(func(c *ProviderConfig, _ *string) { c.AccountField = "preferred_username" })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if acct, err := p.Account(ctx, tok.AccessToken); err != nil || acct != testUser {
			b.Fatalf("Account = %q, %v", acct, err)
		}
	}
}
