//go:build integration

package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// TestIdentityFailures sends each identity attack of docs/security.md
// (invariant 8) through the real listener and checks the status and code,
// and that nothing reached the upstream.
func TestIdentityFailures(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	rsaPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPubDER})
	rsaFile := filepath.Join(t.TempDir(), "rsa.pub")
	if err := os.WriteFile(rsaFile, rsaPubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Identity.Keys = append(c.Identity.Keys, identity.KeyConfig{ID: "rsa", File: rsaFile})
	}})
	edKey := e.SigningKey.(ed25519.PrivateKey)
	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{
			"iss": testenv.Issuer, "aud": testenv.Audience, "sub": testenv.User,
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "act": map[string]any{"sub": testenv.Agent},
		}
		if edit != nil {
			edit(c)
		}
		return c
	}
	signEd := func(c jwt.MapClaims, kid string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(edKey)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	hsConfusion := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
		tok.Header["kid"] = "rsa"
		s, err := tok.SignedString(rsaPubPEM)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()

	tests := []struct {
		name     string
		headers  []string // assertion header values (each its own field)
		wantCode string
		want     int
	}{
		{"missing", nil, "identity_required", 401},
		{"alg none", []string{b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"alice","iss":"`+testenv.Issuer+`","aud":"`+testenv.Audience+`","exp":9999999999}`) + "."}, "identity_invalid", 401},
		{"HS256 with the RSA public key", []string{hsConfusion}, "identity_invalid", 401},
		{"expired", []string{signEd(claims(func(c jwt.MapClaims) {
			c["iat"] = now.Add(-time.Hour).Unix()
			c["exp"] = now.Add(-10 * time.Minute).Unix()
		}), "orchestrator")}, "identity_invalid", 401},
		{"future nbf", []string{signEd(claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(10 * time.Minute).Unix() }), "orchestrator")}, "identity_invalid", 401},
		{"wrong audience", []string{signEd(claims(func(c jwt.MapClaims) { c["aud"] = "another-sidecar" }), "orchestrator")}, "identity_invalid", 401},
		{"wrong issuer", []string{signEd(claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }), "orchestrator")}, "identity_invalid", 401},
		{"missing exp", []string{signEd(claims(func(c jwt.MapClaims) { delete(c, "exp") }), "orchestrator")}, "identity_invalid", 401},
		{"lifetime too long", []string{signEd(claims(func(c jwt.MapClaims) { c["exp"] = now.Add(48 * time.Hour).Unix() }), "orchestrator")}, "identity_invalid", 401},
		{"unknown kid", []string{signEd(claims(nil), "someone-else")}, "identity_invalid", 401},
		{"signed by another key", []string{func() string {
			_, other, _ := ed25519.GenerateKey(rand.Reader)
			tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims(nil))
			tok.Header["kid"] = "orchestrator"
			s, _ := tok.SignedString(other)
			return s
		}()}, "identity_invalid", 401},
		{"jku header", []string{func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims(nil))
			tok.Header["jku"] = "https://evil.test/jwks.json"
			s, _ := tok.SignedString(edKey)
			return s
		}()}, "identity_invalid", 401},
		{"oversized (32 KiB)", []string{signEd(claims(func(c jwt.MapClaims) { c["pad"] = strings.Repeat("a", 32<<10) }), "orchestrator")}, "identity_invalid", 401},
		{"oversized (1 MiB, beyond the head limit)", []string{strings.Repeat("a", 1<<20)}, "request_header_too_large", 431},
		{"duplicate header", []string{e.Assert(t, testenv.User), e.Assert(t, testenv.User)}, "identity_invalid", 401},
		{"malformed", []string{"not.a.jwt!"}, "identity_invalid", 401},
	}
	client := e.Client()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.Upstream.Reset()
			req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/whoami"), nil)
			for _, v := range tt.headers {
				req.Header.Add(identity.DefaultHeader, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.want {
				t.Errorf("status %d; want %d", resp.StatusCode, tt.want)
			}
			if got := readError(t, resp); got.Error != tt.wantCode {
				t.Errorf("code %q (%s); want %q", got.Error, got.Message, tt.wantCode)
			}
			if n := len(e.Upstream.Requests()); n != 0 {
				t.Errorf("%d requests reached the upstream; want 0", n)
			}
		})
	}
}

// TestIdentityDuplicateMembers sends correctly signed assertions whose
// header or claims repeat a member, at the top level or nested, through the
// real listener: each is refused with 401 identity_invalid and nothing
// reaches the upstream. encoding/json alone would keep the last member, so
// {"sub":"bob","sub":"alice"} would act as alice. The same claims without
// the duplicate pass, so the refusal is the duplicate's doing.
func TestIdentityDuplicateMembers(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	edKey := e.SigningKey.(ed25519.PrivateKey)
	now := time.Now().Unix()
	registered := fmt.Sprintf(`"iss":%q,"aud":%q,"iat":%d,"exp":%d`, testenv.Issuer, testenv.Audience, now, now+300)
	const hdr = `{"alg":"EdDSA","kid":"orchestrator","typ":"JWT"}`
	sign := func(header, claims string) string {
		b64 := base64.RawURLEncoding.EncodeToString
		signing := b64([]byte(header)) + "." + b64([]byte(claims))
		sig, err := jwt.SigningMethodEdDSA.Sign(signing, edKey)
		if err != nil {
			t.Fatal(err)
		}
		return signing + "." + b64(sig)
	}
	user, agent := fmt.Sprintf("%q", testenv.User), fmt.Sprintf("%q", testenv.Agent)

	tests := []struct {
		name, header, claims string
	}{
		{"sub twice, the user last", hdr, `{"sub":"bob","sub":` + user + `,"act":{"sub":` + agent + `},` + registered + `}`},
		{"sub twice, the user first", hdr, `{"sub":` + user + `,"sub":"bob","act":{"sub":` + agent + `},` + registered + `}`},
		{"sub twice, one escaped", hdr, `{"sub":"bob","s\u0075b":` + user + `,` + registered + `}`},
		{"act.sub twice", hdr, `{"sub":` + user + `,"act":{"sub":"other-agent","sub":` + agent + `},` + registered + `}`},
		{"sub twice in a nested act", hdr, `{"sub":` + user + `,"act":{"sub":` + agent + `,"act":{"sub":"a","sub":"b"}},` + registered + `}`},
		{"aud twice", hdr, `{"sub":` + user + `,"aud":"another-sidecar",` + registered + `}`},
		{"narrowing claim twice", hdr, `{"sub":` + user + `,"providers":["none"],"providers":["slack"],` + registered + `}`},
		{"member twice in an array of objects", hdr, `{"sub":` + user + `,"ctx":[{"a":1,"a":2}],` + registered + `}`},
		{"typ twice in the header", `{"alg":"EdDSA","kid":"orchestrator","typ":"JWT","typ":"JWT"}`, `{"sub":` + user + `,` + registered + `}`},
		{"member twice inside a header member", `{"alg":"EdDSA","kid":"orchestrator","x":{"a":1,"a":2}}`, `{"sub":` + user + `,` + registered + `}`},
	}
	client := e.Client()
	do := func(t *testing.T, assertion string) *http.Response {
		t.Helper()
		e.Upstream.Reset()
		req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/whoami"), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	t.Run("without duplicates", func(t *testing.T) {
		resp := do(t, sign(hdr, `{"sub":`+user+`,"act":{"sub":`+agent+`,"act":{"sub":"a"}},"ctx":[{"a":1},{"a":2}],`+registered+`}`))
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d; want 200", resp.StatusCode)
		}
		checkArrived(t, e, "/api/whoami")
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(t, sign(tt.header, tt.claims))
			if resp.StatusCode != 401 {
				t.Errorf("status %d; want 401", resp.StatusCode)
			}
			got := readError(t, resp)
			if got.Error != "identity_invalid" || !strings.Contains(got.Message, "duplicate") {
				t.Errorf("code %q (%s); want identity_invalid naming a duplicate member", got.Error, got.Message)
			}
			if n := len(e.Upstream.Requests()); n != 0 {
				t.Errorf("%d requests reached the upstream; want 0", n)
			}
		})
	}
}

// TestIdentityOnConnect covers the assertion carried on CONNECT.
func TestIdentityOnConnect(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) { c.Proxy.Unrouted = "tunnel" }})
	target := testenv.APIHost + ":" + itoa(e.Upstream.Port())

	t.Run("valid Proxy-Authorization identifies requests in the tunnel", func(t *testing.T) {
		e.Upstream.Reset()
		c := e.Client()
		c.Transport.(*http.Transport).ProxyConnectHeader = http.Header{"Proxy-Authorization": {"Bearer " + e.Assert(t, testenv.User)}}
		resp, err := c.Get(e.APIURL("/api/x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d; want 200", resp.StatusCode)
		}
		checkArrived(t, e, "/api/x")
	})
	t.Run("invalid Proxy-Authorization refuses the CONNECT", func(t *testing.T) {
		_, resp, err := e.Connect(target, "garbage.garbage.garbage")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 401 {
			t.Errorf("CONNECT status %d; want 401", resp.StatusCode)
		}
		if got := readError(t, resp); got.Error != "identity_invalid" {
			t.Errorf("code %q; want identity_invalid", got.Error)
		}
	})
	t.Run("blind tunnel without identity is 407", func(t *testing.T) {
		_, resp, err := e.Connect("unrouted.test:443", "")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusProxyAuthRequired {
			t.Errorf("CONNECT status %d; want 407", resp.StatusCode)
		}
		if got := resp.Header.Get("Proxy-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("Proxy-Authenticate %q; want a Bearer challenge", got)
		}
		if got := readError(t, resp); got.Error != "identity_required" {
			t.Errorf("code %q; want identity_required", got.Error)
		}
	})
}
