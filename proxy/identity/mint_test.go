package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func TestMintClaims(t *testing.T) {
	priv, _, err := GenerateKeyPair("EdDSA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	raw, err := Mint(priv, MintOptions{
		Issuer: testIssuer, Audience: testAudience, Subject: "alice", Agent: "agent-7", KeyID: "k1",
		TTL: 2 * time.Minute, Now: now, Claims: map[string]any{"task_id": "t-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("got %d segments; want 3", len(parts))
	}
	var hdr, claims map[string]any
	decodeSegment(t, parts[0], &hdr)
	decodeSegment(t, parts[1], &claims)
	if hdr["alg"] != "EdDSA" || hdr["kid"] != "k1" {
		t.Errorf("got header %v; want alg EdDSA, kid k1", hdr)
	}
	for name, want := range map[string]any{
		"iss": testIssuer, "sub": "alice", "aud": testAudience, "task_id": "t-1",
		"iat": float64(now.Unix()), "exp": float64(now.Add(2 * time.Minute).Unix()),
	} {
		if claims[name] != want {
			t.Errorf("claim %s: got %v; want %v", name, claims[name], want)
		}
	}
	if act, _ := claims["act"].(map[string]any); act["sub"] != "agent-7" {
		t.Errorf("got act %v; want {sub: agent-7}", claims["act"])
	}
	jti, _ := claims["jti"].(string)
	if len(jti) < 16 {
		t.Errorf("got jti %q; want a random id", jti)
	}
	again, err := Mint(priv, MintOptions{Issuer: testIssuer, Audience: testAudience, Subject: "alice", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	var claims2 map[string]any
	decodeSegment(t, strings.Split(again, ".")[1], &claims2)
	if claims2["jti"] == jti {
		t.Errorf("two tokens share jti %q", jti)
	}
	if _, ok := claims2["act"]; ok {
		t.Errorf("act set without an Agent")
	}
	if got, want := claims2["exp"], float64(now.Add(DefaultMintTTL).Unix()); got != want {
		t.Errorf("default ttl: got exp %v; want %v", got, want)
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestMintErrors(t *testing.T) {
	ed := newEd25519(t)
	ok := MintOptions{Issuer: testIssuer, Audience: testAudience, Subject: "alice"}
	tests := []struct {
		name string
		key  any
		edit func(*MintOptions)
		want string
	}{
		{"no issuer", ed, func(o *MintOptions) { o.Issuer = "" }, "issuer is required"},
		{"no audience", ed, func(o *MintOptions) { o.Audience = "" }, "audience is required"},
		{"no subject", ed, func(o *MintOptions) { o.Subject = "" }, "subject is required"},
		{"negative ttl", ed, func(o *MintOptions) { o.TTL = -time.Second }, "ttl must not be negative"},
		{"reserved claim", ed, func(o *MintOptions) { o.Claims = map[string]any{"sub": "mallory"} }, `claim "sub" is set by Mint itself`},
		{"reserved act", ed, func(o *MintOptions) { o.Claims = map[string]any{"act": "x"} }, `claim "act" is set by Mint itself`},
		{"wrong algorithm for key", ed, func(o *MintOptions) { o.Algorithm = "ES256" }, "Ed25519 key cannot sign with algorithm ES256"},
		{"alg none", ed, func(o *MintOptions) { o.Algorithm = "none" }, `unsupported algorithm "none"`},
		{"short secret", []byte("short"), nil, "5-byte secret cannot sign with algorithm HS256"},
		{"public key", ed.Public(), nil, "unsupported signing key type ed25519.PublicKey"},
		{"P-521 key", newECDSA(t, elliptic.P521()), nil, "unsupported signing key ECDSA P-521 key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			if tt.edit != nil {
				tt.edit(&o)
			}
			_, err := Mint(tt.key, o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadSigningKey(t *testing.T) {
	ed := newEd25519(t)
	p256 := newECDSA(t, elliptic.P256())
	rsaKey := testRSAKey()
	edPEM, err := MarshalPrivateKeyPEM(ed)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("z", 48)
	tests := []struct {
		name, file string
		data       []byte
		wantAlg    string
		wantErr    string
	}{
		{"PKCS#8 Ed25519", "ed.pem", edPEM, "EdDSA", ""},
		{"SEC 1 EC", "ec.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), "ES256", ""},
		{"PKCS#1 RSA", "rsa.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), "RS256", ""},
		{"secret", "secret", []byte(secret + "\r\n"), "HS256", ""},
		{"public key", "pub.pem", publicPEM(t, ed), "", "holds a public key"},
		{"short secret", "short", []byte("abc"), "", "at least 32 bytes"},
		{"broken PEM", "broken.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "", "parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, alg, err := LoadSigningKey(writeFile(t, tt.file, tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v; want an error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "zzzz") || strings.Contains(err.Error(), "AAAA") {
					t.Fatalf("error quotes the key file: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if alg != tt.wantAlg {
				t.Errorf("got alg %s; want %s", alg, tt.wantAlg)
			}
			switch k := key.(type) {
			case ed25519.PrivateKey, *ecdsa.PrivateKey, *rsa.PrivateKey:
			case []byte:
				if string(k) != secret {
					t.Errorf("secret not trimmed: got %d bytes; want %d", len(k), len(secret))
				}
			default:
				t.Errorf("got key type %T", key)
			}
		})
	}
}

// TestGenerateKeyPairRoundTrip mints with a generated key and verifies with
// the public PEM it returned, as the demo does.
func TestGenerateKeyPairRoundTrip(t *testing.T) {
	for _, alg := range []string{"EdDSA", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			priv, pubPEM, err := GenerateKeyPair(alg)
			if err != nil {
				t.Fatal(err)
			}
			privPEM, err := MarshalPrivateKeyPEM(priv)
			if err != nil {
				t.Fatal(err)
			}
			loaded, loadedAlg, err := LoadSigningKey(writeFile(t, "priv.pem", privPEM))
			if err != nil {
				t.Fatal(err)
			}
			if loadedAlg != alg {
				t.Errorf("got alg %s; want %s", loadedAlg, alg)
			}
			v := newVerifier(t, testConfig(KeyConfig{File: writeFile(t, "pub.pem", pubPEM)}))
			raw, err := Mint(loaded, MintOptions{Issuer: testIssuer, Audience: testAudience, Subject: "carol"})
			if err != nil {
				t.Fatal(err)
			}
			sub, err := v.Verify(context.Background(), raw)
			if err != nil {
				t.Fatal(err)
			}
			if sub.User != "carol" {
				t.Errorf("got user %q; want carol", sub.User)
			}
		})
	}
	if _, _, err := GenerateKeyPair("RS256"); err == nil {
		t.Error("GenerateKeyPair(RS256): got nil error; want unsupported")
	}
}
