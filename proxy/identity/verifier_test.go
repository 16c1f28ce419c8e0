package identity

import (
	"context"
	"crypto/elliptic"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

func TestVerifyStaticKeys(t *testing.T) {
	clock := newFakeClock()
	ed := newEd25519(t)
	p256 := newECDSA(t, elliptic.P256())
	p384 := newECDSA(t, elliptic.P384())
	rsaKey := testRSAKey()
	secret := []byte("0123456789abcdef0123456789abcdef-hs256-test-secret")

	cfg := testConfig(
		KeyConfig{ID: "ed", File: writeFile(t, "ed.pem", publicPEM(t, ed))},
		KeyConfig{ID: "p256", File: writeFile(t, "p256.pem", publicPEM(t, p256))},
		KeyConfig{ID: "p384", File: writeFile(t, "p384.pem", publicPEM(t, p384))},
		KeyConfig{ID: "rs256", File: writeFile(t, "rsa.pem", publicPEM(t, rsaKey))},
		KeyConfig{ID: "rs384", File: writeFile(t, "rsa.pem", publicPEM(t, rsaKey)), Algorithm: "RS384"},
		KeyConfig{ID: "rs512", File: writeFile(t, "rsa.pem", publicPEM(t, rsaKey)), Algorithm: "RS512"},
		KeyConfig{ID: "ps256", File: writeFile(t, "rsa.pem", publicPEM(t, rsaKey)), Algorithm: "PS256"},
		KeyConfig{ID: "hs", File: writeFile(t, "secret", append(secret, '\n')), Algorithm: "HS256"},
	)
	cfg.Algorithms = []string{"EdDSA", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "HS256"}
	v := newVerifier(t, cfg, WithNow(clock.Now))

	tests := []struct {
		alg, kid string
		key      any
	}{
		{"EdDSA", "ed", ed},
		{"ES256", "p256", p256},
		{"ES384", "p384", p384},
		{"RS256", "rs256", rsaKey},
		{"RS384", "rs384", rsaKey},
		{"RS512", "rs512", rsaKey},
		{"PS256", "ps256", rsaKey},
		{"HS256", "hs", secret},
	}
	for _, tt := range tests {
		t.Run(tt.alg, func(t *testing.T) {
			raw, err := Mint(tt.key, MintOptions{
				Issuer: testIssuer, Audience: testAudience, Subject: "alice", Agent: "agent-7",
				KeyID: tt.kid, Algorithm: tt.alg, Now: clock.Now(), TTL: 10 * time.Minute,
				Claims: map[string]any{"providers": []any{"slack"}, "task_id": "t-42"},
			})
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			got, err := v.Verify(context.Background(), raw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := &Subject{
				User: "alice", Agent: "agent-7", Issuer: testIssuer, ID: got.ID,
				Source: SourceOrchestrator, Type: "JWT",
				Expiry: clock.Now().Add(10 * time.Minute),
				Claims: map[string]any{"providers": []any{"slack"}, "task_id": "t-42"},
			}
			if got.ID == "" {
				t.Errorf("got empty ID; want Mint's random jti")
			}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(Subject{})); diff != "" {
				t.Errorf("Subject mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerifyKeyWithoutID(t *testing.T) {
	clock := newFakeClock()
	ed := newEd25519(t)
	v := newVerifier(t, testConfig(KeyConfig{File: writeFile(t, "ed.pem", publicPEM(t, ed))}), WithNow(clock.Now))
	for _, kid := range []string{"", "any-kid"} {
		raw, err := Mint(ed, MintOptions{Issuer: testIssuer, Audience: testAudience, Subject: "bob", KeyID: kid, Now: clock.Now()})
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(context.Background(), raw)
		if err != nil {
			t.Fatalf("kid %q: Verify: %v", kid, err)
		}
		if got.User != "bob" || got.Agent != "" {
			t.Errorf("kid %q: got user %q agent %q; want bob and no agent", kid, got.User, got.Agent)
		}
	}
}

func TestVerifySeveralIssuersAndAudiences(t *testing.T) {
	clock := newFakeClock()
	ed := newEd25519(t)
	cfg := testConfig(KeyConfig{ID: "ed", File: writeFile(t, "ed.pem", publicPEM(t, ed))})
	cfg.Issuers = []string{"https://a.test", "https://b.test"}
	v := newVerifier(t, cfg, WithNow(clock.Now))
	for _, tt := range []struct {
		iss     string
		aud     any
		wantErr error
	}{
		{"https://a.test", testAudience, nil},
		{"https://b.test", []any{"other", testAudience}, nil},
		{"https://c.test", testAudience, errIssuer},
		{"https://a.test", []any{"other"}, errAudience},
	} {
		raw := signToken(t, jwt.SigningMethodEdDSA, ed, map[string]any{"alg": "EdDSA", "kid": "ed"},
			with(claimsAt(clock.Now()), "iss", tt.iss, "aud", tt.aud))
		_, err := v.Verify(context.Background(), raw)
		if err != tt.wantErr {
			t.Errorf("iss %s aud %v: got %v; want %v", tt.iss, tt.aud, err, tt.wantErr)
		}
	}
}

// TestVerifyRefusals covers the adversarial identity cases of docs/security.md
// (invariant 8).
func TestVerifyRefusals(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	ed := newEd25519(t)
	p384 := newECDSA(t, elliptic.P384())
	rsaKey := testRSAKey()
	rsaPEM := publicPEM(t, rsaKey)
	keys := []KeyConfig{
		{ID: "ed", File: writeFile(t, "ed.pem", publicPEM(t, ed))},
		{ID: "rsa", File: writeFile(t, "rsa.pem", rsaPEM)},
		{ID: "p384", File: writeFile(t, "p384.pem", publicPEM(t, p384)), Algorithm: "ES384"},
	}
	strictCfg := testConfig(keys...)
	strictCfg.Algorithms = []string{"EdDSA", "ES256", "ES384", "RS256"}
	strict := newVerifier(t, strictCfg, WithNow(clock.Now))
	// lax also allows HS256, as a careless operator might: the key binding
	// must still stop algorithm confusion.
	laxCfg := testConfig(keys...)
	laxCfg.Algorithms = []string{"EdDSA", "ES256", "ES384", "RS256", "HS256"}
	lax := newVerifier(t, laxCfg, WithNow(clock.Now))

	hdr := map[string]any{"alg": "EdDSA", "kid": "ed"}
	good := claimsAt(now)
	edSign := func(h, c map[string]any) string { return signToken(t, jwt.SigningMethodEdDSA, ed, h, c) }
	valid := edSign(hdr, good)
	validParts := strings.Split(valid, ".")

	tests := []struct {
		name       string
		v          *Verifier
		raw        string
		wantErr    error // sentinel
		wantReason string
	}{
		{"alg none", strict, signToken(t, nil, nil, map[string]any{"alg": "none"}, good), ErrInvalid, "algorithm none not allowed"},
		{"alg none with kid", lax, signToken(t, nil, nil, map[string]any{"alg": "none", "kid": "ed"}, good), ErrInvalid, "algorithm none not allowed"},
		{"alg None", strict, signToken(t, nil, nil, map[string]any{"alg": "None"}, good), ErrInvalid, "unsupported algorithm"},
		{"HS256 with RSA public key PEM, HS256 not allowed", strict,
			signToken(t, jwt.SigningMethodHS256, rsaPEM, map[string]any{"alg": "HS256", "kid": "rsa"}, good), ErrInvalid, "algorithm HS256 not allowed"},
		{"HS256 with RSA public key PEM, kid of the RSA key", lax,
			signToken(t, jwt.SigningMethodHS256, rsaPEM, map[string]any{"alg": "HS256", "kid": "rsa"}, good), ErrInvalid, "key not usable with this algorithm"},
		{"HS256 with RSA public key PEM, no kid", lax,
			signToken(t, jwt.SigningMethodHS256, rsaPEM, map[string]any{"alg": "HS256"}, good), ErrInvalid, "no key for this algorithm"},
		{"HS384 not allowed", lax,
			signToken(t, jwt.SigningMethodHS384, rsaPEM, map[string]any{"alg": "HS384"}, good), ErrInvalid, "algorithm HS384 not allowed"},
		{"ES256 token for the P-384 key", strict,
			signToken(t, jwt.SigningMethodES384, p384, map[string]any{"alg": "ES256", "kid": "p384"}, good), ErrInvalid, "key not usable with this algorithm"},
		{"expired", strict, edSign(hdr, with(good, "iat", now.Add(-10*time.Minute).Unix(), "exp", now.Add(-time.Minute).Unix())), ErrInvalid, "token expired"},
		{"future nbf", strict, edSign(hdr, with(good, "nbf", now.Add(2*time.Minute).Unix())), ErrInvalid, "token not valid yet"},
		{"nbf within leeway", strict, edSign(hdr, with(good, "nbf", now.Add(10*time.Second).Unix())), nil, ""},
		{"iat in the future", strict, edSign(hdr, with(good, "iat", now.Add(2*time.Minute).Unix(), "exp", now.Add(5*time.Minute).Unix())), ErrInvalid, "token issued in the future"},
		{"wrong aud", strict, edSign(hdr, with(good, "aud", "agent-8")), ErrInvalid, "audience mismatch"},
		{"missing aud", strict, edSign(hdr, with(good, "aud", nil)), ErrInvalid, "missing aud claim"},
		{"wrong iss", strict, edSign(hdr, with(good, "iss", "https://evil.test")), ErrInvalid, "issuer mismatch"},
		{"missing iss", strict, edSign(hdr, with(good, "iss", nil)), ErrInvalid, "missing iss claim"},
		{"missing exp", strict, edSign(hdr, with(good, "exp", nil)), ErrInvalid, "missing exp claim"},
		{"missing sub", strict, edSign(hdr, with(good, "sub", nil)), ErrInvalid, "missing sub claim"},
		{"empty sub", strict, edSign(hdr, with(good, "sub", "")), ErrInvalid, "missing sub claim"},
		{"sub not a string", strict, edSign(hdr, with(good, "sub", 42)), ErrInvalid, "malformed claims"},
		{"act not an object", strict, edSign(hdr, with(good, "act", "agent-7")), ErrInvalid, "malformed act claim"},
		{"act without sub", strict, edSign(hdr, with(good, "act", map[string]any{"iss": "x"})), ErrInvalid, "malformed act claim"},
		{"exp not a number", strict, edSign(hdr, with(good, "exp", "tomorrow")), ErrInvalid, "malformed claims"},
		{"lifetime too long", strict, edSign(hdr, with(good, "exp", now.Add(time.Hour).Unix())), ErrInvalid, "token lifetime exceeds the maximum"},
		{"lifetime too long without iat", strict, edSign(hdr, with(good, "iat", nil, "exp", now.Add(time.Hour).Unix())), ErrInvalid, "token lifetime exceeds the maximum"},
		{"lifetime at the maximum without iat", strict, edSign(hdr, with(good, "iat", nil, "exp", now.Add(15*time.Minute).Unix())), nil, ""},
		{"1 MB garbage", strict, strings.Repeat("a", 1<<20), ErrInvalid, "assertion too large (limit 8192 bytes)"},
		{"1 MB token", strict, validParts[0] + "." + strings.Repeat("A", 1<<20) + "." + validParts[2], ErrInvalid, "assertion too large (limit 8192 bytes)"},
		{"empty", strict, "", ErrMissing, "empty assertion"},
		{"unknown kid", strict, edSign(map[string]any{"alg": "EdDSA", "kid": "nope"}, good), ErrInvalid, "unknown key id"},
		{"kid not a string", strict, edSign(map[string]any{"alg": "EdDSA", "kid": 7}, good), ErrInvalid, "malformed token: kid must be a non-empty string"},
		{"empty kid", strict, edSign(map[string]any{"alg": "EdDSA", "kid": ""}, good), ErrInvalid, "malformed token: kid must be a non-empty string"},
		{"jku header", strict, edSign(with(hdr, "jku", "https://evil.test/jwks"), good), ErrInvalid, "header jku not allowed"},
		{"x5u header", strict, edSign(with(hdr, "x5u", "https://evil.test/cert"), good), ErrInvalid, "header x5u not allowed"},
		{"jwk header", strict, edSign(with(hdr, "jwk", map[string]any{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}), good), ErrInvalid, "header jwk not allowed"},
		{"x5c header", strict, edSign(with(hdr, "x5c", []any{"MIIB"}), good), ErrInvalid, "header x5c not allowed"},
		{"crit header", strict, edSign(with(hdr, "crit", []any{"exp"}), good), ErrInvalid, "header crit not supported"},
		{"malformed base64 in header", strict, "ey!J." + validParts[1] + "." + validParts[2], ErrInvalid, "malformed token: bad base64url encoding"},
		{"malformed base64 in signature", strict, validParts[0] + "." + validParts[1] + ".a$b", ErrInvalid, "malformed token: bad base64url encoding"},
		{"impossible base64 length", strict, validParts[0] + ".AAAAA." + validParts[2], ErrInvalid, "malformed token: bad base64url encoding"},
		{"padded base64", strict, validParts[0] + "." + validParts[1] + "." + validParts[2] + "==", ErrInvalid, "malformed token: bad base64url encoding"},
		{"non-canonical signature bits", strict, validParts[0] + "." + validParts[1] + "." + flipLastBits(validParts[2]), ErrInvalid, "malformed token"},
		{"two segments", strict, validParts[0] + "." + validParts[1], ErrInvalid, "malformed token: want three base64url segments"},
		{"four segments", strict, valid + ".AAAA", ErrInvalid, "malformed token: want three base64url segments"},
		{"payload not JSON", strict, validParts[0] + "." + b64([]byte("not json")) + "." + validParts[2], ErrInvalid, "malformed token: claims are not a JSON object"},
		{"header not JSON", strict, b64([]byte(`{"alg":"EdDSA"`)) + "." + validParts[1] + "." + validParts[2], ErrInvalid, "malformed token: header is not a JSON object"},
		{"duplicate alg member", strict, b64([]byte(`{"alg":"EdDSA","alg":"HS256"}`)) + "." + validParts[1] + "." + validParts[2], ErrInvalid, "malformed token: duplicate header member"},
		{"escaped jku member", strict, b64([]byte(`{"alg":"EdDSA","\u006aku":"https://evil.test"}`)) + "." + validParts[1] + "." + validParts[2], ErrInvalid, "malformed token: escaped header member name"},
		{"tampered payload", strict, validParts[0] + "." + b64([]byte(`{"iss":"`+testIssuer+`","sub":"mallory","aud":"`+testAudience+`","exp":`+strconv.FormatInt(now.Add(time.Minute).Unix(), 10)+`}`)) + "." + validParts[2], ErrInvalid, "invalid signature"},
		{"signed by another key", strict, signToken(t, jwt.SigningMethodEdDSA, newEd25519(t), hdr, good), ErrInvalid, "invalid signature"},
		{"valid", strict, valid, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := tt.v.Verify(context.Background(), tt.raw)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("got error %v; want success", err)
				}
				if sub.User != "alice" {
					t.Errorf("got user %q; want alice", sub.User)
				}
				return
			}
			if sub != nil {
				t.Errorf("got subject %+v; want nil", sub)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v; want an error wrapping %v", err, tt.wantErr)
			}
			other := ErrMissing
			if tt.wantErr == ErrMissing {
				other = ErrInvalid
			}
			if errors.Is(err, other) {
				t.Errorf("error %v wraps both sentinels", err)
			}
			if got := Reason(err); got != tt.wantReason {
				t.Errorf("got reason %q; want %q", got, tt.wantReason)
			}
			assertNoTokenInError(t, err, tt.raw)
		})
	}
}

// TestVerifyDuplicateMembers shows that a correctly signed token with a
// duplicate member anywhere in its header or claims is refused: encoding/json
// would silently keep the last one ({"sub":"alice","sub":"bob"} is bob).
func TestVerifyDuplicateMembers(t *testing.T) {
	clock := newFakeClock()
	ed := newEd25519(t)
	v := newVerifier(t, testConfig(KeyConfig{ID: "ed", File: writeFile(t, "ed.pem", publicPEM(t, ed))}), WithNow(clock.Now))
	now := clock.Now().Unix()
	registered := fmt.Sprintf(`"iss":%q,"aud":%q,"iat":%d,"exp":%d`, testIssuer, testAudience, now, now+300)
	const hdr = `{"alg":"EdDSA","kid":"ed","typ":"JWT"}`
	tests := []struct {
		name, header, claims string
		wantErr              error
		wantUser, wantAgent  string
	}{
		{"no duplicates", hdr, `{"sub":"alice","act":{"sub":"agent-7","act":{"sub":"o"}},"ctx":[{"a":1},{"a":2}],` + registered + `}`, nil, "alice", "agent-7"},
		{"sub twice", hdr, `{"sub":"alice","sub":"bob",` + registered + `}`, errClaimsDuplicate, "", ""},
		{"sub twice, second escaped", hdr, `{"sub":"alice","s\u0075b":"bob",` + registered + `}`, errClaimsDuplicate, "", ""},
		{"iss twice", hdr, `{"sub":"alice",` + registered + `,"iss":"https://evil.test"}`, errClaimsDuplicate, "", ""},
		{"act.sub twice", hdr, `{"sub":"alice","act":{"sub":"agent-7","sub":"agent-9"},` + registered + `}`, errClaimsDuplicate, "", ""},
		{"sub twice in a nested act", hdr, `{"sub":"alice","act":{"sub":"agent-7","act":{"sub":"o","sub":"p"}},` + registered + `}`, errClaimsDuplicate, "", ""},
		{"narrowing claim twice", hdr, `{"sub":"alice","providers":["slack"],"providers":["slack","github"],` + registered + `}`, errClaimsDuplicate, "", ""},
		{"member twice in an array of objects", hdr, `{"sub":"alice","ctx":[{"a":1},{"a":1,"a":2}],` + registered + `}`, errClaimsDuplicate, "", ""},
		{"typ twice in the header", `{"alg":"EdDSA","kid":"ed","typ":"JWT","typ":"JWT"}`, `{"sub":"alice",` + registered + `}`, errHeaderDuplicate, "", ""},
		{"member twice inside a header member", `{"alg":"EdDSA","kid":"ed","x":{"a":1,"a":2}}`, `{"sub":"alice",` + registered + `}`, errHeaderDuplicate, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := signJSON(t, jwt.SigningMethodEdDSA, ed, tt.header, tt.claims)
			sub, err := v.Verify(context.Background(), raw)
			if err != tt.wantErr {
				t.Fatalf("got %v, %v; want error %v", sub, err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("got %v; want an error wrapping ErrInvalid", err)
				}
				assertNoTokenInError(t, err, raw)
				return
			}
			if sub.User != tt.wantUser || sub.Agent != tt.wantAgent {
				t.Errorf("got user %q agent %q; want %q and %q", sub.User, sub.Agent, tt.wantUser, tt.wantAgent)
			}
		})
	}
}

// assertNoTokenInError fails if err's text contains any part of raw that
// could identify it (any 8-byte run of one of its segments).
func assertNoTokenInError(t *testing.T, err error, raw string) {
	t.Helper()
	msg := err.Error()
	for _, seg := range strings.Split(raw, ".") {
		for i := 0; i+8 <= len(seg) && i < 4096; i += 4 {
			if strings.Contains(msg, seg[i:i+8]) {
				t.Fatalf("error %q contains part of the token", msg)
			}
		}
	}
}

// flipLastBits changes the unused low bits of the last base64url character,
// which a lenient decoder would ignore.
func flipLastBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[last^1])
}

// TestVerifyOversizeDoesNoWork shows that an oversize assertion is refused
// before anything reads it: refusing it allocates nothing.
func TestVerifyOversizeDoesNoWork(t *testing.T) {
	ed := newEd25519(t)
	v := newVerifier(t, testConfig(KeyConfig{File: writeFile(t, "ed.pem", publicPEM(t, ed))}))
	huge := strings.Repeat("eyJhbGciOiJFZERTQSJ9.", 1<<20/21)
	allocs := testing.AllocsPerRun(20, func() {
		// Compare by identity: Reason would allocate in errors.As.
		if _, err := v.Verify(context.Background(), huge); err != v.tooLarge {
			t.Fatalf("got %v; want %v", err, v.tooLarge)
		}
	})
	if allocs != 0 {
		t.Errorf("got %v allocations refusing a 1 MB assertion; want 0", allocs)
	}
}

func TestVerifySubjectClaims(t *testing.T) {
	clock := newFakeClock()
	ed := newEd25519(t)
	v := newVerifier(t, testConfig(KeyConfig{ID: "ed", File: writeFile(t, "ed.pem", publicPEM(t, ed))}), WithNow(clock.Now))
	c := with(claimsAt(clock.Now()),
		"act", map[string]any{"sub": "agent-9", "act": map[string]any{"sub": "orchestrator"}},
		"nbf", clock.Now().Unix(),
		"providers", []any{"slack", "github"},
		"channels", []any{"#eng"},
		"task_id", "t-1",
		"n", 3,
	)
	raw := signToken(t, jwt.SigningMethodEdDSA, ed, map[string]any{"alg": "EdDSA", "kid": "ed", "typ": "JWT"}, c)
	got, err := v.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	want := &Subject{
		User: "alice", Agent: "agent-9", Issuer: testIssuer, ID: "jti-1",
		Source: SourceOrchestrator, Type: "JWT",
		Expiry: clock.Now().Add(5 * time.Minute),
		Claims: map[string]any{"providers": []any{"slack", "github"}, "channels": []any{"#eng"}, "task_id": "t-1", "n": float64(3)},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(Subject{})); diff != "" {
		t.Errorf("Subject mismatch (-want +got):\n%s", diff)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	clock := newFakeClock()
	ed := newEd25519(t)
	v := newVerifier(t, testConfig(KeyConfig{ID: "ed", File: writeFile(t, "ed.pem", publicPEM(t, ed))}), WithNow(clock.Now))
	raw, err := Mint(ed, MintOptions{Issuer: testIssuer, Audience: testAudience, Subject: "alice", KeyID: "ed", Now: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			for range 20 {
				if _, err := v.Verify(context.Background(), raw); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Verify: %v", err)
		}
	}
}
