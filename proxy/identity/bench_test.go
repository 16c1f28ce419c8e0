package identity

import (
	"context"
	"crypto/elliptic"
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
			for b.Loop() {
				if _, err := preparse(bc.raw, bc.v.maxSize, bc.v.allowed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// libraryParser is golang-jwt alone with the options Verify uses: the
// baseline that the package's own cost is measured against.
func libraryParser(v *Verifier) *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods([]string{"EdDSA", "ES256", "HS256"}),
		jwt.WithAudience(testAudience), jwt.WithIssuer(testIssuer),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now), jwt.WithStrictDecoding(),
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
			for b.Loop() {
				if _, err := p.ParseWithClaims(bc.raw, jwt.MapClaims{}, kf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestVerifyAllocsOverLibrary pins the package's own allocation cost: Verify
// may allocate at most once more than golang-jwt parsing the same token on
// its own, and that one is the returned *Subject. Pre-parsing, key lookup,
// claim checks and Subject.Claims (the decoded map, reused) allocate
// nothing.
func TestVerifyAllocsOverLibrary(t *testing.T) {
	ctx := context.Background()
	for _, bc := range benchCases(t) {
		p := libraryParser(bc.v)
		kf := func(*jwt.Token) (any, error) { return bc.key, nil }
		lib := testing.AllocsPerRun(100, func() {
			if _, err := p.ParseWithClaims(bc.raw, jwt.MapClaims{}, kf); err != nil {
				t.Fatal(err)
			}
		})
		ours := testing.AllocsPerRun(100, func() {
			if _, err := bc.v.Verify(ctx, bc.raw); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("%s: library %v allocs, Verify %v allocs", bc.name, lib, ours)
		if ours > lib+1 {
			t.Errorf("%s: Verify allocates %v times, library alone %v; want at most one more", bc.name, ours, lib)
		}
	}
}
