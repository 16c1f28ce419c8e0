package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// idpServer is an httptest TLS server acting as an OpenID Connect issuer:
// a discovery document and a JWKS that tests can replace.
type idpServer struct {
	srv       *httptest.Server
	jwks      *jwksServer // only its body and hits are used
	docIssuer atomic.Pointer[string]
	docHits   atomic.Int64
}

func newIdPServer(t *testing.T, keys ...jwkset.JWKMarshal) *idpServer {
	t.Helper()
	s := &idpServer{jwks: &jwksServer{}}
	s.jwks.set(t, keys...)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case discoveryPath:
			s.docHits.Add(1)
			iss := s.srv.URL
			if p := s.docIssuer.Load(); p != nil {
				iss = *p
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{
				"issuer":         iss,
				"jwks_uri":       s.srv.URL + "/keys",
				"token_endpoint": s.srv.URL + "/token",
			})
		case "/keys":
			s.jwks.hits.Add(1)
			w.Header().Set("Content-Type", "application/jwk-set+json")
			w.Write(*s.jwks.body.Load())
		default:
			http.NotFound(w, r)
		}
	}))
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *idpServer) issuer() string { return s.srv.URL }

// idpConfig returns an IdP entry for s accepting audience "agent-app".
func (s *idpServer) idpConfig(edit func(*IdPConfig)) IdPConfig {
	c := DefaultIdPConfig()
	c.Issuer = s.issuer()
	c.Audiences = []string{"agent-app"}
	if edit != nil {
		edit(&c)
	}
	return c
}

// idpOnly returns an identity config with only IdPs.
func idpOnly(idps ...IdPConfig) Config {
	cfg := DefaultConfig()
	cfg.IdPs = idps
	return cfg
}

// idpClaims returns valid ID-token claims from iss for alice at now.
func idpClaims(iss string, now time.Time) map[string]any {
	return map[string]any{
		"iss": iss, "sub": "00u1alice", "aud": "agent-app",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "idp-jti-1",
		"email": "alice@example.com", "email_verified": true, "azp": "agent-app",
		"groups": []any{"eng"},
	}
}

func signWith(t *testing.T, key crypto.Signer, kid, typ string, claims map[string]any) string {
	t.Helper()
	hdr := map[string]any{"alg": "RS256", "kid": kid}
	method := jwt.SigningMethod(jwt.SigningMethodRS256)
	if _, ok := key.Public().(*ecdsa.PublicKey); ok {
		hdr["alg"], method = "ES256", jwt.SigningMethodES256
	}
	if typ != "" {
		hdr["typ"] = typ
	}
	return signToken(t, method, key, hdr, claims)
}

func TestIdPVerify(t *testing.T) {
	clock := newFakeClock()
	rsaKey := testRSAKey()
	s := newIdPServer(t, jwk(t, rsaKey, "idp-1", "RS256"))
	iss := s.issuer()
	now := clock.Now()
	base := idpClaims(iss, now)

	tests := []struct {
		name    string
		edit    func(*IdPConfig)
		typ     string
		claims  map[string]any
		want    *Subject // User, Agent, Type checked
		wantErr error
	}{
		{name: "ID token, typ JWT", typ: "JWT", claims: base, want: &Subject{User: "00u1alice", Type: "JWT"}},
		{name: "ID token without typ", claims: base, want: &Subject{User: "00u1alice"}},
		{name: "typ in lower case", typ: "jwt", claims: base, want: &Subject{User: "00u1alice", Type: "jwt"}},
		{name: "access token refused by default", typ: "at+jwt", claims: base, wantErr: errTokenType},
		{name: "ID-JAG refused by default", typ: "oauth-id-jag+jwt", claims: base, wantErr: errTokenType},
		{name: "unknown typ", typ: "secevent+jwt", claims: base, wantErr: errTokenType},
		{
			name: "access token allowed", typ: "at+jwt", claims: base,
			edit: func(c *IdPConfig) { c.TokenTypes = []string{"at+jwt"} },
			want: &Subject{User: "00u1alice", Type: "at+jwt"},
		},
		{
			name: "access token with application/ prefix", typ: "application/at+jwt", claims: base,
			edit: func(c *IdPConfig) { c.TokenTypes = []string{"at+jwt"} },
			want: &Subject{User: "00u1alice", Type: "application/at+jwt"},
		},
		{
			name: "ID token refused where only access tokens are", typ: "JWT", claims: base,
			edit:    func(c *IdPConfig) { c.TokenTypes = []string{"at+jwt"} },
			wantErr: errTokenType,
		},
		{
			name: "ID token without typ refused where only access tokens are", claims: base,
			edit:    func(c *IdPConfig) { c.TokenTypes = []string{"at+jwt"} },
			wantErr: errTokenType,
		},
		{name: "wrong audience", claims: with(base, "aud", "another-app"), wantErr: errAudience},
		{
			name: "one of several audiences", claims: with(base, "aud", []any{"x", "api://agents"}),
			edit: func(c *IdPConfig) { c.Audiences = []string{"agent-app", "api://agents"} },
			want: &Subject{User: "00u1alice"},
		},
		{name: "expired", claims: with(base, "iat", now.Add(-2*time.Hour).Unix(), "exp", now.Add(-time.Hour).Unix()), wantErr: errExpired},
		{name: "lifetime over the maximum", claims: with(base, "exp", now.Add(2*time.Hour).Unix()), wantErr: errLifetime},
		{name: "no exp", claims: with(base, "exp", nil), wantErr: errMissingExp},
		{name: "no sub", claims: with(base, "sub", nil), wantErr: errMissingUser},
		{name: "sub not a string", claims: with(base, "sub", 7), wantErr: errMalformedClaims},
		{
			name: "user from email", claims: base,
			edit: func(c *IdPConfig) { c.UserClaim = "email" },
			want: &Subject{User: "alice@example.com"},
		},
		{
			name: "unverified email refused", claims: with(base, "email_verified", false),
			edit:    func(c *IdPConfig) { c.UserClaim = "email" },
			wantErr: errEmailUnverified,
		},
		{
			name: "user from oid", claims: with(base, "oid", "7d1c-oid"),
			edit: func(c *IdPConfig) { c.UserClaim = "oid" },
			want: &Subject{User: "7d1c-oid"},
		},
		{
			name: "user claim missing", claims: base,
			edit:    func(c *IdPConfig) { c.UserClaim = "oid" },
			wantErr: errMissingUser,
		},
		{
			name: "user claim empty", claims: with(base, "oid", ""),
			edit:    func(c *IdPConfig) { c.UserClaim = "oid" },
			wantErr: errMissingUser,
		},
		{
			name: "user claim not a string", claims: with(base, "oid", []any{"a"}),
			edit:    func(c *IdPConfig) { c.UserClaim = "oid" },
			wantErr: errMissingUser,
		},
		{
			name: "agent from act.sub", claims: with(base, "act", map[string]any{"sub": "agent-7"}),
			want: &Subject{User: "00u1alice", Agent: "agent-7"},
		},
		{name: "malformed act", claims: with(base, "act", "agent-7"), wantErr: errMalformedAct},
		{
			name: "agent from azp", claims: base,
			edit: func(c *IdPConfig) { c.AgentClaim = "azp" },
			want: &Subject{User: "00u1alice", Agent: "agent-app"},
		},
		{
			name: "agent from client_id", claims: with(base, "client_id", "agent-9"),
			edit: func(c *IdPConfig) { c.AgentClaim = "client_id" },
			want: &Subject{User: "00u1alice", Agent: "agent-9"},
		},
		{
			name: "agent claim absent", claims: base,
			edit: func(c *IdPConfig) { c.AgentClaim = "client_id" },
			want: &Subject{User: "00u1alice"},
		},
		{
			name: "agent claim not a string", claims: with(base, "azp", 9),
			edit:    func(c *IdPConfig) { c.AgentClaim = "azp" },
			wantErr: errMalformedAgent,
		},
		{
			name: "required claims present", claims: with(base, "ctx", map[string]any{"tenant": "t1"}),
			edit: func(c *IdPConfig) { c.RequiredClaims = []string{"email", "ctx.tenant"} },
			want: &Subject{User: "00u1alice"},
		},
		{
			name: "required claim missing", claims: base,
			edit:    func(c *IdPConfig) { c.RequiredClaims = []string{"ctx.tenant"} },
			wantErr: errMissingRequired,
		},
		{
			name: "required claim null", claims: with(base, "tid", nil),
			edit:    func(c *IdPConfig) { c.RequiredClaims = []string{"tid"} },
			wantErr: errMissingRequired,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, idpOnly(s.idpConfig(tt.edit)), WithHTTPClient(s.srv.Client()), WithNow(clock.Now),
				WithFingerprint(func(string) string { return "fp" }))
			raw := signWith(t, rsaKey, "idp-1", tt.typ, tt.claims)
			got, err := v.Verify(context.Background(), raw)
			if tt.wantErr != nil {
				if err != tt.wantErr {
					t.Fatalf("got %v; want %v", err, tt.wantErr)
				}
				assertNoTokenInError(t, err, raw)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.User != tt.want.User || got.Agent != tt.want.Agent || got.Type != tt.want.Type {
				t.Errorf("got user %q agent %q type %q; want %q %q %q", got.User, got.Agent, got.Type, tt.want.User, tt.want.Agent, tt.want.Type)
			}
			if got.Source != SourceIdP || got.Issuer != iss || got.ID != "idp-jti-1" || got.Fingerprint != "fp" {
				t.Errorf("got source %q issuer %q id %q fingerprint %q; want idp, %s, idp-jti-1, fp", got.Source, got.Issuer, got.ID, got.Fingerprint, iss)
			}
			if got.Token() != raw {
				t.Errorf("Subject.Token() is not the presented token")
			}
			if diff := cmp.Diff([]any{"eng"}, got.Claims["groups"]); diff != "" {
				t.Errorf("groups claim (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIdPSideBySide verifies tokens of the orchestrator and two IdPs with
// one verifier: each token is checked with its own issuer's keys and rules,
// and a token cannot borrow another issuer's name.
func TestIdPSideBySide(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	orch := newEd25519(t)
	keyA, keyB := testRSAKey(), newECDSA(t, elliptic.P256())
	a := newIdPServer(t, jwk(t, keyA, "a-1", "RS256"))
	b := newIdPServer(t, jwk(t, keyB, "b-1", "ES256"))
	cfg := testConfig(KeyConfig{ID: "orch", File: writeFile(t, "orch.pem", publicPEM(t, orch))})
	cfg.IdPs = []IdPConfig{
		a.idpConfig(nil),
		b.idpConfig(func(c *IdPConfig) {
			c.UserClaim, c.AgentClaim = "email", "azp"
			c.TokenTypes = []string{"at+jwt"}
			c.Audiences = []string{"https://sidecar.example"}
		}),
	}
	// One client trusting both servers (each has its own httptest CA).
	client := a.srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig.RootCAs.AddCert(b.srv.Certificate())
	v := newVerifier(t, cfg, WithHTTPClient(client), WithNow(clock.Now))
	if err := v.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	ctx := context.Background()

	fromOrch := signToken(t, jwt.SigningMethodEdDSA, orch, map[string]any{"alg": "EdDSA", "kid": "orch"}, claimsAt(now))
	fromA := signWith(t, keyA, "a-1", "JWT", idpClaims(a.issuer(), now))
	fromB := signWith(t, keyB, "b-1", "at+jwt", with(idpClaims(b.issuer(), now), "aud", "https://sidecar.example"))
	for _, tt := range []struct {
		raw                 string
		user, agent, source string
	}{
		{fromOrch, "alice", "", SourceOrchestrator},
		{fromA, "00u1alice", "", SourceIdP},
		{fromB, "alice@example.com", "agent-app", SourceIdP},
	} {
		sub, err := v.Verify(ctx, tt.raw)
		if err != nil {
			t.Fatalf("Verify %s: %v", tt.user, err)
		}
		if sub.User != tt.user || sub.Agent != tt.agent || sub.Source != tt.source {
			t.Errorf("got %v; want user %q agent %q source %s", sub, tt.user, tt.agent, tt.source)
		}
		if tt.source == SourceOrchestrator && sub.Token() != "" {
			t.Errorf("an orchestrator subject keeps its assertion")
		}
	}

	refusals := []struct {
		name string
		raw  string
		want error
	}{
		// A's key signing a token that names B: B's keys do not know it.
		{"A's key, B's name", signWith(t, keyA, "a-1", "at+jwt", with(idpClaims(b.issuer(), now), "aud", "https://sidecar.example")), errUnknownKID},
		{"A's key, B's name, no kid", signToken(t, jwt.SigningMethodRS256, keyA, map[string]any{"alg": "RS256", "typ": "at+jwt"}, with(idpClaims(b.issuer(), now), "aud", "https://sidecar.example")), errNoKey},
		// The orchestrator's key signing a token that names an IdP.
		{"orchestrator's key, A's name", signToken(t, jwt.SigningMethodEdDSA, orch, map[string]any{"alg": "EdDSA", "kid": "orch"}, idpClaims(a.issuer(), now)), errUnknownKID},
		// An IdP's key signing a token that names the orchestrator.
		{"A's key, orchestrator's name", signWith(t, keyA, "a-1", "", claimsAt(now)), errUnknownKID},
		// An issuer nobody configured goes to the orchestrator's rules,
		// whose keys do not know A's kid.
		{"unknown issuer", signWith(t, keyA, "a-1", "", with(idpClaims(a.issuer(), now), "iss", "https://other.example")), errUnknownKID},
		{"A's token at B's audience rules", signWith(t, keyA, "a-1", "JWT", with(idpClaims(a.issuer(), now), "aud", "https://sidecar.example")), errAudience},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := v.Verify(ctx, tt.raw); err != tt.want {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
}

// TestIdPOnlyRefusesOtherIssuers checks a verifier without an orchestrator
// section: a token naming no configured IdP is refused before any key work.
func TestIdPOnlyRefusesOtherIssuers(t *testing.T) {
	clock := newFakeClock()
	key := testRSAKey()
	s := newIdPServer(t, jwk(t, key, "k", "RS256"))
	v := newVerifier(t, idpOnly(s.idpConfig(nil)), WithHTTPClient(s.srv.Client()), WithNow(clock.Now))
	raw := signWith(t, key, "k", "", claimsAt(clock.Now()))
	if _, err := v.Verify(context.Background(), raw); err != errIssuer {
		t.Fatalf("got %v; want %v", err, errIssuer)
	}
}

// TestIdPDuplicateMembers checks invariant 16 on IdP tokens: duplicate
// members in the header or the claims are refused like in assertions, a
// duplicate iss included (it would pick one issuer's keys and name
// another).
func TestIdPDuplicateMembers(t *testing.T) {
	clock := newFakeClock()
	key := testRSAKey()
	s := newIdPServer(t, jwk(t, key, "k", "RS256"))
	v := newVerifier(t, idpOnly(s.idpConfig(nil)), WithHTTPClient(s.srv.Client()), WithNow(clock.Now))
	now := clock.Now().Unix()
	iss := s.issuer()
	claims := func(extra string) string {
		return fmt.Sprintf(`{"iss":%q,"sub":"alice","aud":"agent-app","iat":%d,"exp":%d%s}`, iss, now, now+600, extra)
	}
	for _, tt := range []struct {
		name, header, claims string
		want                 error
	}{
		{"clean", `{"alg":"RS256","kid":"k"}`, claims(""), nil},
		{"sub twice", `{"alg":"RS256","kid":"k"}`, claims(`,"sub":"mallory"`), errClaimsDuplicate},
		{"iss twice", `{"alg":"RS256","kid":"k"}`, claims(`,"iss":"https://orchestrator.test"`), errClaimsDuplicate},
		{"email twice, one escaped", `{"alg":"RS256","kid":"k"}`, claims(`,"email":"a@x","em\u0061il":"m@x"`), errClaimsDuplicate},
		{"typ twice", `{"alg":"RS256","kid":"k","typ":"at+jwt","typ":"JWT"}`, claims(""), errHeaderDuplicate},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), signJSON(t, jwt.SigningMethodRS256, key, tt.header, tt.claims))
			if err != tt.want {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
}

// TestIdPDiscovery checks the discovery document: its issuer must be the
// configured one, and its token endpoint is what TokenEndpoint returns.
func TestIdPDiscovery(t *testing.T) {
	clock := newFakeClock()
	key := testRSAKey()

	t.Run("keys and token endpoint", func(t *testing.T) {
		s := newIdPServer(t, jwk(t, key, "k", "RS256"))
		v := newVerifier(t, idpOnly(s.idpConfig(nil)), WithHTTPClient(s.srv.Client()), WithNow(clock.Now))
		if err := v.Ready(); err != nil {
			t.Fatalf("Ready: %v", err)
		}
		if got, err := v.TokenEndpoint(s.issuer()); err != nil || got != s.srv.URL+"/token" {
			t.Errorf("TokenEndpoint = %q, %v; want %s/token", got, err, s.srv.URL)
		}
		if _, err := v.TokenEndpoint("https://other.example"); err == nil {
			t.Errorf("TokenEndpoint of an unknown issuer: no error")
		}
		if _, err := v.Verify(context.Background(), signWith(t, key, "k", "", idpClaims(s.issuer(), clock.Now()))); err != nil {
			t.Errorf("Verify: %v", err)
		}
	})

	t.Run("another issuer's document", func(t *testing.T) {
		s := newIdPServer(t, jwk(t, key, "k", "RS256"))
		other := "https://attacker.example"
		s.docIssuer.Store(&other)
		core, logs := observer.New(zap.WarnLevel)
		v := newVerifier(t, idpOnly(s.idpConfig(nil)), WithHTTPClient(s.srv.Client()), WithNow(clock.Now), WithLogger(zap.New(core)))
		if err := v.Ready(); err == nil || !strings.Contains(err.Error(), s.issuer()) {
			t.Errorf("Ready = %v; want an error naming the issuer", err)
		}
		if s.jwks.hits.Load() != 0 {
			t.Errorf("the key set was fetched from a document naming another issuer")
		}
		if logs.FilterMessageSnippet("jwks fetch failed").Len() != 1 {
			t.Errorf("got logs %v; want one fetch failure", logs.All())
		}
		if _, err := v.TokenEndpoint(s.issuer()); err == nil {
			t.Errorf("TokenEndpoint without a valid document: no error")
		}
		_, err := v.Verify(context.Background(), signWith(t, key, "k", "", idpClaims(s.issuer(), clock.Now())))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Verify = %v; want a refusal", err)
		}
	})

	t.Run("jwks_url instead of discovery", func(t *testing.T) {
		s := newIdPServer(t, jwk(t, key, "k", "RS256"))
		v := newVerifier(t, idpOnly(s.idpConfig(func(c *IdPConfig) { c.JWKSURL = s.srv.URL + "/keys" })), WithHTTPClient(s.srv.Client()), WithNow(clock.Now))
		if s.docHits.Load() != 0 {
			t.Errorf("discovery document read although jwks_url is set")
		}
		if _, err := v.Verify(context.Background(), signWith(t, key, "k", "", idpClaims(s.issuer(), clock.Now()))); err != nil {
			t.Errorf("Verify: %v", err)
		}
		if _, err := v.TokenEndpoint(s.issuer()); err == nil {
			t.Errorf("TokenEndpoint without discovery: no error")
		}
	})
}

// TestIdPKeyRotation rotates the IdP's keys behind its discovery document
// while tokens are verified: a new kid is picked up with one refetch, and a
// removed key stops verifying once the set has been fetched again.
func TestIdPKeyRotation(t *testing.T) {
	clock := newFakeClock()
	oldKey, newKey := testRSAKey(), newECDSA(t, elliptic.P256())
	s := newIdPServer(t, jwk(t, oldKey, "2026-01", "RS256"))
	v := newVerifier(t, idpOnly(s.idpConfig(nil)), WithHTTPClient(s.srv.Client()), WithNow(clock.Now))
	ctx := context.Background()
	mint := func(key crypto.Signer, kid string) string {
		return signWith(t, key, kid, "JWT", idpClaims(s.issuer(), clock.Now()))
	}
	if _, err := v.Verify(ctx, mint(oldKey, "2026-01")); err != nil {
		t.Fatalf("old key: %v", err)
	}
	s.jwks.set(t, jwk(t, oldKey, "2026-01", "RS256"), jwk(t, newKey, "2026-02", "ES256"))
	if _, err := v.Verify(ctx, mint(newKey, "2026-02")); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	if got := s.jwks.hits.Load(); got != 2 {
		t.Errorf("got %d key-set fetches; want 2", got)
	}
	s.jwks.set(t, jwk(t, newKey, "2026-02", "ES256"))
	clock.Advance(31 * time.Second)
	// A token naming an unknown kid brings the new set; the old key is
	// gone from it.
	if _, err := v.Verify(ctx, mint(newKey, "2026-03")); err != errUnknownKID {
		t.Fatalf("unknown kid: got %v; want %v", err, errUnknownKID)
	}
	if _, err := v.Verify(ctx, mint(oldKey, "2026-01")); err != errUnknownKID {
		t.Fatalf("removed key: got %v; want %v", err, errUnknownKID)
	}
	if _, err := v.Verify(ctx, mint(newKey, "2026-02")); err != nil {
		t.Fatalf("new key: %v", err)
	}
}

// TestSubjectNeverPrintsToken formats an IdP subject every way a log line
// might and looks for the token.
func TestSubjectNeverPrintsToken(t *testing.T) {
	clock := newFakeClock()
	key := testRSAKey()
	s := newIdPServer(t, jwk(t, key, "k", "RS256"))
	v := newVerifier(t, idpOnly(s.idpConfig(nil)), WithHTTPClient(s.srv.Client()), WithNow(clock.Now))
	raw := signWith(t, key, "k", "", idpClaims(s.issuer(), clock.Now()))
	sub, err := v.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(raw, ".")
	core, logs := observer.New(zap.DebugLevel)
	zap.New(core).Info("subject", zap.Any("sub", sub), zap.Any("value", *sub), zap.Stringer("str", sub))
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x"} {
		outputs = append(outputs, fmt.Sprintf(verb, sub), fmt.Sprintf(verb, *sub), fmt.Sprintf(verb, []any{sub, *sub}))
	}
	b, _ := json.Marshal(sub)
	outputs = append(outputs, string(b))
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		outputs = append(outputs, string(b))
	}
	for _, out := range outputs {
		if strings.Contains(out, parts[1]) || strings.Contains(out, parts[2]) {
			t.Fatalf("output shows the token: %s", out)
		}
	}
	if !strings.Contains(fmt.Sprint(sub), "00u1alice") {
		t.Errorf("String lost the user: %s", sub)
	}
}
