package identity

import (
	"context"
	"crypto/elliptic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// benchCase is one algorithm's verifier and a token for it.
type benchCase struct {
	name string
	v    *Verifier
	raw  string
	key  any // the verification key, for the library-only baseline
}

func benchCases(tb testing.TB) []benchCase {
	tb.Helper()
	clock := newFakeClock()
	ed := newEd25519(tb)
	p256 := newECDSA(tb, elliptic.P256())
	secret := []byte("benchmark-secret-of-at-least-32-bytes!")
	cfg := testConfig(
		KeyConfig{ID: "ed", File: writeFile(tb, "ed.pem", publicPEM(tb, ed))},
		KeyConfig{ID: "p256", File: writeFile(tb, "p256.pem", publicPEM(tb, p256))},
		KeyConfig{ID: "hs", File: writeFile(tb, "secret", secret), Algorithm: "HS256"},
	)
	cfg.Algorithms = []string{"EdDSA", "ES256", "HS256"}
	v := newVerifier(tb, cfg, WithNow(clock.Now))
	mint := func(key any, kid string) string {
		raw, err := Mint(key, MintOptions{
			Issuer: testIssuer, Audience: testAudience, Subject: "alice", Agent: "agent-7", KeyID: kid,
			Now: clock.Now(), TTL: 10 * time.Minute,
			Claims: map[string]any{"providers": []any{"slack"}, "task_id": "t-42"},
		})
		if err != nil {
			tb.Fatal(err)
		}
		return raw
	}
	return []benchCase{
		{"EdDSA", v, mint(ed, "ed"), ed.Public()},
		{"ES256", v, mint(p256, "p256"), &p256.PublicKey},
		{"HS256", v, mint(secret, "hs"), secret},
	}
}

// BenchmarkVerifyAssertion is the sidecar's cache-miss path: Verify keeps
// no cache (proxy/idcache.go does), so every iteration pre-parses, decodes,
// looks up the key, checks the signature and the claims, as for an
// assertion seen for the first time.
func BenchmarkVerifyAssertion(b *testing.B) {
	ctx := context.Background()
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				if _, err := bc.v.Verify(ctx, bc.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPreparse is the pre-parser alone, on the tokens of
// BenchmarkVerifyAssertion: its share of the cache-miss path.
func BenchmarkPreparse(b *testing.B) {
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				if _, err := preparse(bc.raw, bc.v.maxSize, bc.v.allowed, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// reportCPU starts measuring the process's CPU time and returns the
// function that reports it per iteration as cpu-ns/op. On a machine shared
// with other work, wall-clock ns/op counts the time the benchmark waited for
// a core; CPU time does not.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op") }
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// libraryParser is golang-jwt alone with the options Verify uses: the
// baseline that the package's own cost is measured against.
func libraryParser(v *Verifier) *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods([]string{"EdDSA", "ES256", "HS256"}),
		jwt.WithAudience(testAudience), jwt.WithIssuer(testIssuer),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(v.orchestrator.leeway),
		jwt.WithTimeFunc(v.orchestrator.now), jwt.WithStrictDecoding(),
	)
}

// BenchmarkVerifyLibraryBaseline parses the same tokens with golang-jwt
// alone (MapClaims, a key function returning the key), for comparison with
// BenchmarkVerifyAssertion.
func BenchmarkVerifyLibraryBaseline(b *testing.B) {
	for _, bc := range benchCases(b) {
		p := libraryParser(bc.v)
		kf := func(*jwt.Token) (any, error) { return bc.key, nil }
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				if _, err := p.ParseWithClaims(bc.raw, jwt.MapClaims{}, kf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
