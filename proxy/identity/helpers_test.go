package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Every test closes what it starts: verifiers (their JWKS refresh
	// goroutine), httptest servers and idle client connections.
	goleak.VerifyTestMain(m)
}

const (
	testIssuer   = "https://orchestrator.test"
	testAudience = "agent-7"
)

// testStart is the fake clock's starting point. It is the real time so that
// certificates of httptest servers are valid; tests only move it forward.
var testStart = time.Now().Truncate(time.Second)

// fakeClock is a settable clock for WithNow.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: testStart} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testRSAKey is one 2048-bit RSA key shared by all tests (generating one is
// slow under the race detector).
var testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newECDSA(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publicPEM returns the PKIX PEM of priv's public key.
func publicPEM(t testing.TB, priv any) []byte {
	t.Helper()
	var pub any
	switch k := priv.(type) {
	case ed25519.PrivateKey:
		pub = k.Public()
	case *ecdsa.PrivateKey:
		pub = &k.PublicKey
	case *rsa.PrivateKey:
		pub = &k.PublicKey
	default:
		t.Fatalf("publicPEM: unsupported key %T", priv)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// writeFile writes data to a new file in a test directory and returns its
// path.
func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testConfig returns a valid configuration for the test issuer and audience
// with the given keys.
func testConfig(keys ...KeyConfig) Config {
	cfg := DefaultConfig()
	cfg.Audience = testAudience
	cfg.Issuers = []string{testIssuer}
	cfg.Keys = keys
	return cfg
}

// newVerifier builds a verifier and closes it when the test ends.
func newVerifier(t testing.TB, cfg Config, opts ...Option) *Verifier {
	t.Helper()
	v, err := New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// claimsAt returns a valid claim set issued at now.
func claimsAt(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer,
		"sub": "alice",
		"aud": testAudience,
		"iat": now.Unix(),
		"exp": now.Add(5 * time.Minute).Unix(),
		"jti": "jti-1",
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signToken builds a token from any header and claims, signed by method
// with key (method nil: empty signature). It lets tests produce tokens no
// well-behaved library would.
func signToken(t testing.TB, method jwt.SigningMethod, key any, hdr, claims map[string]any) string {
	t.Helper()
	hj, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	cj, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signing := b64(hj) + "." + b64(cj)
	if method == nil {
		return signing + "."
	}
	sig, err := method.Sign(signing, key)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64(sig)
}

// signJSON builds a token from header and claims JSON exactly as written
// (duplicate members and all), signed by method with key.
func signJSON(t testing.TB, method jwt.SigningMethod, key any, headerJSON, claimsJSON string) string {
	t.Helper()
	signing := b64([]byte(headerJSON)) + "." + b64([]byte(claimsJSON))
	sig, err := method.Sign(signing, key)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64(sig)
}

// with returns m with the given members replaced (a nil value deletes).
func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
			continue
		}
		out[k] = kv[i+1]
	}
	return out
}
