package identity

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// problems returns the "path: message" lines of a validation error, sorted.
func problems(err error) []string {
	var out []string
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if !errors.As(e, &fe) {
			out = append(out, "not a FieldError: "+e.Error())
			continue
		}
		out = append(out, fe.Error())
	}
	slices.Sort(out)
	return out
}

func TestConfigYAML(t *testing.T) {
	f, err := os.Open("testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := DefaultConfig()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := Config{
		Header:     "X-Onbehalf-Assertion",
		Audience:   "agent-7",
		Issuers:    []string{"https://orchestrator.example", "https://backup-orchestrator.example"},
		Algorithms: []string{"EdDSA", "ES256"},
		Keys: []KeyConfig{
			{ID: "orch-2026", File: "/etc/onbehalf/keys/orchestrator.pub.pem"},
			{File: "/etc/onbehalf/keys/legacy.pub.pem", Algorithm: "ES256"},
		},
		JWKSURL:                "https://orchestrator.example/.well-known/jwks.json",
		JWKSCAFile:             "/etc/onbehalf/ca/orchestrator-ca.pem",
		JWKSRefresh:            10 * time.Minute,
		JWKSUnknownKIDInterval: time.Minute,
		Leeway:                 10 * time.Second,
		MaxLifetime:            5 * time.Minute,
		MaxSize:                4096,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := DefaultConfig()
	if c.Header != "Onbehalf-Assertion" || c.JWKSRefresh != 5*time.Minute || c.JWKSUnknownKIDInterval != 30*time.Second ||
		c.Leeway != 30*time.Second || c.MaxLifetime != 15*time.Minute || c.MaxSize != 8192 {
		t.Errorf("got defaults %+v", c)
	}
	if diff := cmp.Diff([]string{"EdDSA", "ES256", "RS256"}, c.Algorithms); diff != "" {
		t.Errorf("default algorithms (-want +got):\n%s", diff)
	}
	c.Algorithms[0] = "HS256"
	if DefaultConfig().Algorithms[0] != "EdDSA" {
		t.Errorf("DefaultConfig shares its algorithms slice")
	}
	want := []string{"audience: required", "issuers: at least one issuer is required", "keys or jwks_url is required"}
	if diff := cmp.Diff(want, problems(DefaultConfig().Validate())); diff != "" {
		t.Errorf("DefaultConfig().Validate() problems (-want +got):\n%s", diff)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	c := Config{
		Header:     "Authorization",
		Issuers:    []string{"https://a", "", "https://a"},
		Algorithms: []string{"none", "HS512", "EdDSA", "EdDSA"},
		Keys: []KeyConfig{
			{ID: "k"},
			{ID: "k", File: "x.pem", Algorithm: "HS256"},
			{File: "y.pem", Algorithm: "none"},
		},
		JWKSURL:     "ftp://keys.example/jwks",
		JWKSRefresh: 100 * time.Millisecond,
		Leeway:      10 * time.Minute,
		MaxLifetime: 2 * time.Hour,
		MaxSize:     10,
	}
	want := []string{
		"algorithms[0]: none is never allowed",
		`algorithms[1]: unsupported algorithm "HS512" (want one of EdDSA, ES256, ES384, RS256, RS384, RS512, PS256, HS256)`,
		"algorithms[3]: duplicate algorithm EdDSA",
		"audience: required",
		"header: Authorization cannot carry the assertion",
		`issuers[1]: must not be empty`,
		`issuers[2]: duplicate issuer "https://a"`,
		"jwks_refresh: must be at least 1s",
		"jwks_unknown_kid_interval: must be at least 1s",
		"jwks_url: must be an http or https URL",
		"keys[0].file: required",
		"keys[1].algorithm: HS256 is not listed in algorithms",
		`keys[1].id: duplicate key id "k"`,
		"keys[2].algorithm: none is never allowed",
		"leeway: must be between 0s and 5m0s",
		"max_lifetime: must be more than 0s and at most 1h0m0s",
		"max_size: must be between 256 and 65536 bytes",
	}
	if diff := cmp.Diff(want, problems(c.Validate())); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestConfigValidateJWKS(t *testing.T) {
	tests := []struct {
		url, ca string
		want    []string
	}{
		{"https://keys.example/jwks.json", "/ca.pem", nil},
		{"http://127.0.0.1:8080/jwks", "", nil},
		{"http://127.0.0.1:8080/jwks", "/ca.pem", []string{"jwks_ca_file: only used with an https jwks_url"}},
		{"https://user:pw@keys.example/jwks", "", []string{"jwks_url: must not carry credentials"}},
		{"https:///jwks", "", []string{"jwks_url: must name a host"}},
		{"https://keys.example/jwks#x", "", []string{"jwks_url: must not have a fragment"}},
		{"", "/ca.pem", []string{"jwks_ca_file: set without jwks_url", "keys or jwks_url is required"}},
	}
	for _, tt := range tests {
		c := testConfig()
		c.JWKSURL, c.JWKSCAFile = tt.url, tt.ca
		if diff := cmp.Diff(tt.want, problems(c.Validate())); diff != "" {
			t.Errorf("url %q ca %q: problems (-want +got):\n%s", tt.url, tt.ca, diff)
		}
	}
}

func TestConfigValidateHeader(t *testing.T) {
	for _, tt := range []struct {
		header string
		ok     bool
	}{
		{"Onbehalf-Assertion", true},
		{"x-agent-assertion", true},
		{"", false},
		{"bad header", false},
		{"proxy-authorization", false},
		{"cookie", false},
	} {
		c := testConfig(KeyConfig{File: "k.pem"})
		c.Header = tt.header
		if err := c.Validate(); (err == nil) != tt.ok {
			t.Errorf("header %q: got %v; want ok=%v", tt.header, err, tt.ok)
		}
	}
}

// TestNewKeyProblems shows that key files are checked at New, every problem
// reported with its path, and that no key material leaks into the message.
func TestNewKeyProblems(t *testing.T) {
	ed := newEd25519(t)
	edPub := publicPEM(t, ed)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	edPriv, err := MarshalPrivateKeyPEM(ed)
	if err != nil {
		t.Fatal(err)
	}
	p521 := newECDSA(t, elliptic.P521())
	rsaPKCS1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&testRSAKey().PublicKey)})
	two := append(append([]byte{}, edPub...), edPub...)

	cfg := testConfig(
		KeyConfig{File: writeFile(t, "missing", nil) + ".nope"},
		KeyConfig{File: writeFile(t, "priv.pem", edPriv)},
		KeyConfig{File: writeFile(t, "rsa-public-as-secret.pem", publicPEM(t, testRSAKey())), Algorithm: "HS256"},
		KeyConfig{File: writeFile(t, "small.pem", publicPEM(t, small))},
		KeyConfig{File: writeFile(t, "short-secret", []byte("too-short\n")), Algorithm: "HS256"},
		KeyConfig{File: writeFile(t, "ed-as-es256.pem", edPub), Algorithm: "ES256"},
		KeyConfig{File: writeFile(t, "p521.pem", publicPEM(t, p521))},
		KeyConfig{File: writeFile(t, "secret-without-alg", []byte(strings.Repeat("s", 40)))},
		KeyConfig{File: writeFile(t, "two.pem", two)},
		KeyConfig{File: writeFile(t, "rsa-pkcs1.pem", rsaPKCS1), Algorithm: "RS256"},
	)
	cfg.Algorithms = []string{"EdDSA", "ES256", "RS256", "HS256"}
	_, err = New(context.Background(), cfg)
	if err == nil {
		t.Fatal("New succeeded; want key problems")
	}
	got := problems(errors.Unwrap(err))
	want := []string{
		"keys[0].file: open " + cfg.Keys[0].File + ": no such file or directory",
		"keys[1].file: holds a private key; the verifier needs only the public key",
		"keys[2].file: holds a PEM block; an HS256 secret must be a random secret, never a public or private key",
		"keys[3].file: RSA key has 1024 bits; at least 2048 required",
		"keys[4].file: HS256 secret must be at least 32 bytes, got 9",
		"keys[5].file: Ed25519 key cannot be used with algorithm ES256",
		"keys[6].file: unsupported key type ECDSA P-521 key (want Ed25519, ECDSA P-256/P-384 or RSA)",
		"keys[7].file: not a PEM public key (an HMAC secret needs algorithm: HS256)",
		"keys[8].file: holds more than one PEM block; give one key per file",
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if strings.Contains(err.Error(), "BEGIN") || strings.Contains(err.Error(), "ssss") {
		t.Errorf("error quotes key material: %v", err)
	}
}

// TestConfigIdPsYAML decodes IdP entries with the project's strict decoder:
// each entry starts from DefaultIdPConfig.
func TestConfigIdPsYAML(t *testing.T) {
	b, err := os.ReadFile("testdata/idps.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := DefaultConfig()
	if err := config.Decode(b, &got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	entra := DefaultIdPConfig()
	entra.Issuer = "https://login.example.com/tenant-1/v2.0"
	entra.Audiences = []string{"api://agent-7"}
	entra.TokenTypes = []string{"at+jwt"}
	entra.UserClaim, entra.AgentClaim = "oid", "azp"
	entra.RequiredClaims = []string{"tid"}
	okta := DefaultIdPConfig()
	okta.Issuer = "https://acme.okta.example"
	okta.Audiences = []string{"0oa-agent-7"}
	okta.MaxLifetime = time.Hour
	if diff := cmp.Diff([]IdPConfig{entra, okta}, got.IdPs); diff != "" {
		t.Errorf("idps (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if idp, ok := got.IdP("https://acme.okta.example"); !ok || idp.MaxLifetime != time.Hour {
		t.Errorf("IdP lookup = %+v, %v", idp, ok)
	}
}

func TestConfigValidateIdPs(t *testing.T) {
	good := DefaultIdPConfig()
	good.Issuer, good.Audiences = "https://idp.example", []string{"agent-app"}

	t.Run("IdPs alone", func(t *testing.T) {
		c := DefaultConfig()
		c.IdPs = []IdPConfig{good}
		if err := c.Validate(); err != nil {
			t.Errorf("Validate: %v", err)
		}
	})
	t.Run("a partial orchestrator section is still checked", func(t *testing.T) {
		c := DefaultConfig()
		c.Audience = "agent-7"
		c.IdPs = []IdPConfig{good}
		want := []string{"issuers: at least one issuer is required", "keys or jwks_url is required"}
		if diff := cmp.Diff(want, problems(c.Validate())); diff != "" {
			t.Errorf("problems (-want +got):\n%s", diff)
		}
	})
	t.Run("every problem", func(t *testing.T) {
		c := testConfig(KeyConfig{File: "k.pem"})
		bad := IdPConfig{
			Issuer:         "http://idp.example",
			DiscoveryURL:   "https://idp.example/.well-known/openid-configuration?x=1",
			JWKSURL:        "https://user:pw@idp.example/keys",
			CAFile:         "/ca.pem",
			Audiences:      []string{"a", "", "a"},
			TokenTypes:     []string{"JWT", "application/jwt", "saml2"},
			Algorithms:     []string{"HS256", "none", "RS256", "RS256", "ES512"},
			UserClaim:      "",
			AgentClaim:     "act..sub",
			RequiredClaims: []string{"a.b.c.d.e"},
			Leeway:         time.Hour,
			MaxLifetime:    48 * time.Hour,
		}
		c.IdPs = []IdPConfig{good, bad, good, {Issuer: testIssuer}}
		want := []string{
			"idps[1].agent_claim: must be a claim name or a dotted path of claim names (act.sub)",
			"idps[1].algorithms[0]: HS256 needs a shared secret; an IdP publishes public keys",
			"idps[1].algorithms[1]: none is never allowed",
			"idps[1].algorithms[3]: duplicate algorithm RS256",
			`idps[1].algorithms[4]: unsupported algorithm "ES512" (want one of EdDSA, ES256, ES384, RS256, RS384, RS512, PS256)`,
			`idps[1].audiences[1]: must not be empty`,
			`idps[1].audiences[2]: duplicate audience "a"`,
			"idps[1].ca_file: only used with https URLs",
			"idps[1].discovery_url: must not have a query or fragment",
			"idps[1].discovery_url: set together with jwks_url; give one",
			"idps[1].issuer: must be https (http is allowed only on loopback addresses)",
			"idps[1].jwks_refresh: must be at least 1s",
			"idps[1].jwks_unknown_kid_interval: must be at least 1s",
			"idps[1].jwks_url: must not carry credentials",
			"idps[1].leeway: must be between 0s and 5m0s",
			"idps[1].max_lifetime: must be more than 0s and at most 24h0m0s",
			"idps[1].required_claims[0]: must be a claim name or a dotted path of claim names",
			"idps[1].token_types[1]: duplicate token type application/jwt",
			`idps[1].token_types[2]: unknown token type "saml2" (want JWT, at+jwt or oauth-id-jag+jwt)`,
			"idps[1].user_claim: required",
			`idps[2].issuer: duplicate issuer "https://idp.example"`,
			"idps[3].algorithms: at least one algorithm is required",
			"idps[3].audiences: at least one audience is required",
			`idps[3].issuer: "https://orchestrator.test" is also an orchestrator issuer; a token must name one source`,
			"idps[3].jwks_refresh: must be at least 1s",
			"idps[3].jwks_unknown_kid_interval: must be at least 1s",
			"idps[3].max_lifetime: must be more than 0s and at most 24h0m0s",
			"idps[3].token_types: at least one token type is required",
			"idps[3].user_claim: required",
		}
		if diff := cmp.Diff(want, problems(c.Validate())); diff != "" {
			t.Errorf("problems (-want +got):\n%s", diff)
		}
	})
}
