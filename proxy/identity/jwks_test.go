package identity

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// jwksServer is an httptest TLS server publishing a JWKS that tests can
// replace, counting the fetches.
type jwksServer struct {
	srv    *httptest.Server
	hits   atomic.Int64
	body   atomic.Pointer[[]byte]
	status atomic.Int32
}

func newJWKSServer(t *testing.T, keys ...jwkset.JWKMarshal) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.status.Store(http.StatusOK)
	s.set(t, keys...)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks" {
			http.NotFound(w, r)
			return
		}
		s.hits.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(int(s.status.Load()))
		w.Write(*s.body.Load())
	}))
	// Handshakes refused on purpose (untrusted CA) are expected noise.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) url() string { return s.srv.URL + "/jwks" }

func (s *jwksServer) set(t *testing.T, keys ...jwkset.JWKMarshal) {
	t.Helper()
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	s.setRaw(b)
}

func (s *jwksServer) setRaw(b []byte) { s.body.Store(&b) }

// jwk returns the public JWK of priv with kid and (optionally) alg.
func jwk(t *testing.T, priv crypto.Signer, kid, alg string) jwkset.JWKMarshal {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(priv.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.ALG(alg)}})
	if err != nil {
		t.Fatal(err)
	}
	return j.Marshal()
}

// jwksVerifier builds a verifier on the server's JWKS with the fake clock.
func jwksVerifier(t *testing.T, s *jwksServer, clock *fakeClock, edit func(*Config)) *Verifier {
	t.Helper()
	cfg := testConfig()
	cfg.JWKSURL = s.url()
	if edit != nil {
		edit(&cfg)
	}
	return newVerifier(t, cfg, WithHTTPClient(s.srv.Client()), WithNow(clock.Now))
}

func mintAt(t *testing.T, clock *fakeClock, key any, kid string) string {
	t.Helper()
	raw, err := Mint(key, MintOptions{Issuer: testIssuer, Audience: testAudience, Subject: "alice", KeyID: kid, Now: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func wantHits(t *testing.T, s *jwksServer, want int64) {
	t.Helper()
	if got := s.hits.Load(); got != want {
		t.Fatalf("got %d JWKS fetches; want %d", got, want)
	}
}

func TestJWKSRotation(t *testing.T) {
	clock := newFakeClock()
	a, b, c := newEd25519(t), newECDSA(t, elliptic.P256()), newEd25519(t)
	s := newJWKSServer(t, jwk(t, a, "a", ""))
	v := jwksVerifier(t, s, clock, nil)
	wantHits(t, s, 1)
	if err := v.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	ctx := context.Background()

	if _, err := v.Verify(ctx, mintAt(t, clock, a, "a")); err != nil {
		t.Fatalf("key a: %v", err)
	}
	wantHits(t, s, 1)

	// A new kid appears: the first token naming it triggers one fetch.
	s.set(t, jwk(t, a, "a", ""), jwk(t, b, "b", "ES256"))
	if _, err := v.Verify(ctx, mintAt(t, clock, b, "b")); err != nil {
		t.Fatalf("key b after rotation: %v", err)
	}
	wantHits(t, s, 2)

	// Rotating again within the interval: the new kid is not fetched yet.
	s.set(t, jwk(t, c, "c", ""))
	if _, err := v.Verify(ctx, mintAt(t, clock, c, "c")); err != errUnknownKID {
		t.Fatalf("key c within the interval: got %v; want %v", err, errUnknownKID)
	}
	wantHits(t, s, 2)

	clock.Advance(31 * time.Second)
	if _, err := v.Verify(ctx, mintAt(t, clock, c, "c")); err != nil {
		t.Fatalf("key c after the interval: %v", err)
	}
	wantHits(t, s, 3)
	// The fetched set replaced the old one: a is gone.
	if _, err := v.Verify(ctx, mintAt(t, clock, a, "a")); err != errUnknownKID {
		t.Fatalf("removed key a: got %v; want %v", err, errUnknownKID)
	}
	wantHits(t, s, 3)
}

func TestJWKSUnknownKIDFlood(t *testing.T) {
	clock := newFakeClock()
	known := newEd25519(t)
	attacker := newEd25519(t)
	s := newJWKSServer(t, jwk(t, known, "known", ""))
	v := jwksVerifier(t, s, clock, nil)
	wantHits(t, s, 1)

	flood := func(round int) {
		t.Helper()
		const n = 200
		var wg sync.WaitGroup
		var wrong atomic.Int64
		for i := range n {
			raw := mintAt(t, clock, attacker, fmt.Sprintf("flood-%d-%d", round, i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := v.Verify(context.Background(), raw); err != errUnknownKID {
					wrong.Add(1)
				}
			}()
		}
		wg.Wait()
		if w := wrong.Load(); w != 0 {
			t.Fatalf("round %d: %d of %d flood tokens were not refused as unknown key id", round, w, n)
		}
	}
	flood(1)
	wantHits(t, s, 2)
	flood(2)
	wantHits(t, s, 2)
	clock.Advance(29 * time.Second)
	flood(3)
	wantHits(t, s, 2)
	clock.Advance(2 * time.Second)
	flood(4)
	wantHits(t, s, 3)

	// The known key still works throughout, without fetching.
	if _, err := v.Verify(context.Background(), mintAt(t, clock, known, "known")); err != nil {
		t.Fatalf("known key: %v", err)
	}
	wantHits(t, s, 3)
}

func TestJWKSAlgMember(t *testing.T) {
	clock := newFakeClock()
	rsaKey := testRSAKey()
	mislabeled := newECDSA(t, elliptic.P256())
	noAlg := newECDSA(t, elliptic.P256())
	ed := newEd25519(t)
	s := newJWKSServer(t,
		jwk(t, rsaKey, "ps", "PS256"),
		jwk(t, mislabeled, "mis", "ES384"),
		jwk(t, noAlg, "noalg", ""),
		jwk(t, ed, "ed", ""),
	)
	v := jwksVerifier(t, s, clock, func(c *Config) {
		c.Algorithms = []string{"EdDSA", "ES256", "ES384", "RS256", "PS256"}
	})
	ctx := context.Background()
	tests := []struct {
		name    string
		raw     string
		wantErr error
	}{
		{"PS256 key, PS256 token", mintAlg(t, clock, rsaKey, "ps", "PS256"), nil},
		{"PS256 key, RS256 token", mintAlg(t, clock, rsaKey, "ps", "RS256"), errKeyAlg},
		{"ES384-labelled P-256 key, ES256 token", mintAlg(t, clock, mislabeled, "mis", "ES256"), errKeyAlg},
		{"key without alg, ES256 token", mintAlg(t, clock, noAlg, "noalg", "ES256"), nil},
		{"no kid, EdDSA", mintAlg(t, clock, ed, "", "EdDSA"), nil},
		{"no kid, ES256 from the key without alg", mintAlg(t, clock, noAlg, "", "ES256"), nil},
		{"no kid, ES256 from the ES384-labelled key", mintAlg(t, clock, mislabeled, "", "ES256"), errSignature},
		{"no kid, RS256 with the PS256-only key", mintAlg(t, clock, rsaKey, "", "RS256"), errNoKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := v.Verify(ctx, tt.raw); err != tt.wantErr {
				t.Errorf("got %v; want %v", err, tt.wantErr)
			}
		})
	}
}

func mintAlg(t *testing.T, clock *fakeClock, key any, kid, alg string) string {
	t.Helper()
	raw, err := Mint(key, MintOptions{Issuer: testIssuer, Audience: testAudience, Subject: "alice", KeyID: kid, Algorithm: alg, Now: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestJWKSRefusesUnsafeKeys publishes keys no verifier should use: a
// symmetric key (anyone reading the set could sign), a private key, an
// encryption key and a short RSA key.
func TestJWKSRefusesUnsafeKeys(t *testing.T) {
	clock := newFakeClock()
	secret := []byte(strings.Repeat("k", 32))
	private := newECDSA(t, elliptic.P256())
	privJWK, err := jwkset.NewJWKFromKey(private, jwkset.JWKOptions{
		Marshal: jwkset.JWKMarshalOptions{Private: true}, Metadata: jwkset.JWKMetadataOptions{KID: "priv"},
	})
	if err != nil {
		t.Fatal(err)
	}
	enc := newECDSA(t, elliptic.P256())
	encJWK := jwk(t, enc, "enc", "")
	encJWK.USE = jwkset.UseEnc
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := newEd25519(t)
	s := newJWKSServer(t,
		jwkset.JWKMarshal{KTY: jwkset.KtyOct, KID: "sym", ALG: jwkset.AlgHS256, K: b64(secret)},
		privJWK.Marshal(),
		encJWK,
		jwk(t, small, "small", ""),
		jwk(t, good, "good", ""),
	)
	v := jwksVerifier(t, s, clock, func(c *Config) {
		c.Algorithms = []string{"EdDSA", "ES256", "RS256", "HS256"}
	})
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		raw  string
	}{
		{"symmetric key", mintAlg(t, clock, secret, "sym", "HS256")},
		{"private key", mintAlg(t, clock, private, "priv", "ES256")},
		{"encryption key", mintAlg(t, clock, enc, "enc", "ES256")},
		{"1024-bit RSA key", signToken(t, jwt.SigningMethodRS256, small, map[string]any{"alg": "RS256", "kid": "small"}, claimsAt(clock.Now()))},
	} {
		if _, err := v.Verify(ctx, tt.raw); err != errUnknownKID {
			t.Errorf("%s: got %v; want %v", tt.name, err, errUnknownKID)
		}
	}
	if _, err := v.Verify(ctx, mintAlg(t, clock, good, "good", "EdDSA")); err != nil {
		t.Errorf("good key: %v", err)
	}
	if _, err := v.Verify(ctx, mintAlg(t, clock, secret, "", "HS256")); err != errNoKey {
		t.Errorf("HS256 without kid: got %v; want %v", err, errNoKey)
	}
}

// TestJWKSDefaultClient fetches over TLS with the default client: the CA
// comes from jwks_ca_file, and proxy variables from the environment are
// ignored (a proxy on a closed port would fail every fetch).
func TestJWKSDefaultClient(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("https_proxy", "http://127.0.0.1:1")
	t.Setenv("NO_PROXY", "")
	clock := newFakeClock()
	key := newEd25519(t)
	s := newJWKSServer(t, jwk(t, key, "k", ""))
	caFile := writeFile(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}))

	cfg := testConfig()
	cfg.JWKSURL = s.url()
	cfg.JWKSCAFile = caFile
	v := newVerifier(t, cfg, WithNow(clock.Now))
	if err := v.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if _, err := v.Verify(context.Background(), mintAt(t, clock, key, "k")); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	// Without the CA the server is not trusted: nothing is loaded.
	cfg.JWKSCAFile = ""
	untrusted := newVerifier(t, cfg, WithNow(clock.Now))
	if err := untrusted.Ready(); err == nil {
		t.Fatal("Ready without the CA: got nil; want an error")
	}
	if _, err := untrusted.Verify(context.Background(), mintAt(t, clock, key, "k")); err != errUnknownKID {
		t.Fatalf("Verify without the CA: got %v; want %v", err, errUnknownKID)
	}

	cfg.JWKSCAFile = writeFile(t, "not-a-ca.pem", []byte("nothing here"))
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "jwks_ca_file: ") {
		t.Fatalf("New with a bad CA file: got %v; want a jwks_ca_file problem", err)
	}
}

func TestJWKSRedirectNotFollowed(t *testing.T) {
	clock := newFakeClock()
	key := newEd25519(t)
	var realHits atomic.Int64
	body, _ := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk(t, key, "k", "")}})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/real" {
			realHits.Add(1)
			w.Write(body)
			return
		}
		http.Redirect(w, r, "/real", http.StatusFound)
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.JWKSURL = srv.URL + "/jwks"
	v := newVerifier(t, cfg, WithHTTPClient(srv.Client()), WithNow(clock.Now))
	if err := v.Ready(); err == nil {
		t.Error("Ready after a redirect: got nil; want an error")
	}
	if _, err := v.Verify(context.Background(), mintAt(t, clock, key, "k")); err != errUnknownKID {
		t.Errorf("got %v; want %v", err, errUnknownKID)
	}
	if n := realHits.Load(); n != 0 {
		t.Errorf("redirect target fetched %d times; want 0", n)
	}
}

// TestJWKSFailedRefreshKeepsKeys: a broken or oversized set does not
// remove the keys already loaded.
func TestJWKSFailedRefreshKeepsKeys(t *testing.T) {
	clock := newFakeClock()
	key := newEd25519(t)
	s := newJWKSServer(t, jwk(t, key, "k", ""))
	v := jwksVerifier(t, s, clock, nil)
	ctx := context.Background()
	for i, breakIt := range []func(){
		func() { s.status.Store(http.StatusInternalServerError) },
		func() { s.status.Store(http.StatusOK); s.setRaw([]byte(`{"keys": [`)) },
		func() { s.setRaw([]byte(`{"keys":[` + strings.Repeat(`{"kty":"x"},`, maxJWKSBytes/12) + `{}]}`)) },
		func() { s.setRaw([]byte(`{"not_keys":[]}`)) },
	} {
		breakIt()
		clock.Advance(time.Minute)
		before := s.hits.Load()
		if _, err := v.Verify(ctx, mintAt(t, clock, newEd25519(t), "other")); err != errUnknownKID {
			t.Fatalf("case %d: unknown kid: got %v; want %v", i, err, errUnknownKID)
		}
		if s.hits.Load() != before+1 {
			t.Fatalf("case %d: unknown kid did not trigger a fetch", i)
		}
		if _, err := v.Verify(ctx, mintAt(t, clock, key, "k")); err != nil {
			t.Fatalf("case %d: loaded key after a failed refresh: %v", i, err)
		}
	}
}

// TestJWKSPeriodicRefresh shows the background refresh picking up a new key
// while unknown-kid fetches are held back by the interval.
func TestJWKSPeriodicRefresh(t *testing.T) {
	clock := newFakeClock()
	oldKey, newKey := newEd25519(t), newEd25519(t)
	s := newJWKSServer(t, jwk(t, oldKey, "old", ""))
	v := jwksVerifier(t, s, clock, func(c *Config) {
		c.JWKSRefresh = time.Second
		c.JWKSUnknownKIDInterval = time.Hour
	})
	ctx := context.Background()
	// Use up the unknown-kid allowance (the fake clock never reaches the
	// next one).
	if _, err := v.Verify(ctx, mintAt(t, clock, newKey, "not-yet")); err != errUnknownKID {
		t.Fatalf("got %v; want %v", err, errUnknownKID)
	}
	s.set(t, jwk(t, oldKey, "old", ""), jwk(t, newKey, "new", ""))
	after := s.hits.Load()
	deadline := time.Now().Add(10 * time.Second)
	for s.hits.Load() == after {
		if time.Now().After(deadline) {
			t.Fatal("no background refresh within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The fetch has been served; wait until its keys are stored.
	for {
		_, err := v.Verify(ctx, mintAt(t, clock, newKey, "new"))
		if err == nil {
			break
		}
		if err != errUnknownKID || time.Now().After(deadline) {
			t.Fatalf("new key after background refresh: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJWKSClose(t *testing.T) {
	clock := newFakeClock()
	key := newEd25519(t)
	s := newJWKSServer(t, jwk(t, key, "k", ""))
	v := jwksVerifier(t, s, clock, nil)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Loaded keys still verify; unknown kids no longer fetch.
	if _, err := v.Verify(context.Background(), mintAt(t, clock, key, "k")); err != nil {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := v.Verify(context.Background(), mintAt(t, clock, key, "other")); err != errUnknownKID {
		t.Fatalf("unknown kid after Close: got %v; want %v", err, errUnknownKID)
	}
	wantHits(t, s, 1)
}

// TestJWKSWaitHonoursContext: a request waiting for an unknown-kid fetch
// gives up when its context ends.
func TestJWKSWaitHonoursContext(t *testing.T) {
	clock := newFakeClock()
	key := newEd25519(t)
	release := make(chan struct{})
	var slow atomic.Bool
	body, _ := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk(t, key, "k", "")}})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			<-release
		}
		w.Write(body)
	}))
	defer srv.Close()
	defer close(release)
	cfg := testConfig()
	cfg.JWKSURL = srv.URL + "/jwks"
	v := newVerifier(t, cfg, WithHTTPClient(srv.Client()), WithNow(clock.Now))
	slow.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := v.Verify(ctx, mintAt(t, clock, key, "other"))
	if err != errUnknownKID {
		t.Fatalf("got %v; want %v", err, errUnknownKID)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Verify waited %s; want about 100ms", d)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("context: %v", ctx.Err())
	}
}
