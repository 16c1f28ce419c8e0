package connect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
)

// fakeMCP is an MCP server and its authorization server in one TLS
// server, each answer adjustable, for discovery's unit tests. The
// authorization server's issuer has a path (/tenant), so every discovery
// location the MCP specification lists is distinct.
type fakeMCP struct {
	srv *httptest.Server
	// hint names the metadata in the 401's challenge; otherwise discovery
	// must use the well-known location.
	hint string
	// scope is the challenge's scope parameter.
	scope string
	// probeStatus is the MCP endpoint's answer (401 by default).
	probeStatus int
	// asAt is the one metadata location the authorization server answers.
	asAt string
	// asMeta edits the authorization server metadata.
	asMeta func(m map[string]any)
	// regStatus is the registration endpoint's status (201 by default).
	regStatus     int
	regMethod     string
	registrations atomic.Int32
}

func newFakeMCP(t *testing.T) *fakeMCP {
	t.Helper()
	f := &fakeMCP{probeStatus: http.StatusUnauthorized, regStatus: http.StatusCreated, regMethod: "client_secret_post"}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	f.asAt = "/.well-known/oauth-authorization-server/tenant"
	return f
}

func (f *fakeMCP) resource() string { return f.srv.URL + "/mcp" }
func (f *fakeMCP) issuer() string   { return f.srv.URL + "/tenant" }

func fakeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeMCP) serve(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/mcp":
		ch := `Bearer realm="mcp"`
		if f.hint != "" {
			ch += `, resource_metadata="` + f.hint + `"`
		}
		if f.scope != "" {
			ch += `, scope="` + f.scope + `"`
		}
		w.Header().Set("WWW-Authenticate", ch)
		w.WriteHeader(f.probeStatus)
	case p == "/.well-known/oauth-protected-resource/mcp":
		fakeJSON(w, 200, map[string]any{"resource": f.resource(), "authorization_servers": []string{f.issuer()}, "scopes_supported": []string{"issues:read"}})
	case p == f.asAt:
		m := map[string]any{
			"issuer": f.issuer(), "authorization_endpoint": f.issuer() + "/authorize", "token_endpoint": f.issuer() + "/token",
			"registration_endpoint": f.issuer() + "/register", "revocation_endpoint": f.issuer() + "/revoke",
			"response_types_supported": []string{"code"}, "code_challenge_methods_supported": []string{"S256"},
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "none"},
		}
		if f.asMeta != nil {
			f.asMeta(m)
		}
		fakeJSON(w, 200, m)
	case p == "/tenant/register":
		f.registrations.Add(1)
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		if f.regStatus != http.StatusCreated {
			fakeJSON(w, f.regStatus, map[string]any{"error": "invalid_client_metadata", "error_description": "secret-looking-body-text"})
			return
		}
		fakeJSON(w, 201, map[string]any{"client_id": "dcr-1", "client_secret": "dcr-secret-1", "client_secret_expires_at": 0,
			"redirect_uris": req["redirect_uris"], "token_endpoint_auth_method": f.regMethod})
	default:
		http.NotFound(w, r)
	}
}

// newMCPServer returns a connect server on an embedded store whose one
// provider is the fake MCP server by its URL (mod edits its configuration).
func newMCPServer(t *testing.T, f *fakeMCP, mod func(*oauth.ProviderConfig)) (*Server, *oauth.Provider, *store.Embedded) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenEmbedded(store.EmbeddedConfig{Path: filepath.Join(dir, "g.db"), KeyFile: filepath.Join(dir, "g.key"), LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pc := oauth.DefaultProviderConfig()
	pc.MCPServer = f.resource()
	secret := ""
	if mod != nil {
		mod(&pc)
		if pc.ClientSecretFile != "" {
			secret = "ops-secret"
		}
	}
	client, err := NewMCPClient(egress.Config{Allow: []string{"127.0.0.1/32"}}, f.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := oauth.NewProvider("issues", pc, secret, client)
	if err != nil {
		t.Fatal(err)
	}
	// Only what discovery uses: the store, the redirect URI, the clock,
	// the logger and the MCP client.
	s := &Server{st: st, providers: map[string]*oauth.Provider{"issues": p}, redirectURI: "https://connect.example/callback",
		log: zap.NewNop(), now: time.Now, mcpClient: client}
	return s, p, st
}

// TestMCPDiscoveryFallbacks: no resource_metadata in the challenge (the
// well-known location is used) and an authorization server found only by
// OpenID Connect discovery appended to its issuer; the client registered
// with client_secret_post is stored and reused.
func TestMCPDiscoveryFallbacks(t *testing.T) {
	f := newFakeMCP(t)
	f.asAt = "/tenant/.well-known/openid-configuration"
	s, p, st := newMCPServer(t, f, nil)
	ctx := context.Background()
	rp, merr := s.mcpProvider(ctx, p)
	if merr != nil {
		t.Fatalf("mcpProvider: %v", merr)
	}
	reg, _, err := st.Registration(ctx, "issues")
	if err != nil {
		t.Fatal(err)
	}
	if reg.Issuer != f.issuer() || reg.TokenEndpoint != f.issuer()+"/token" || reg.ClientID != "dcr-1" ||
		reg.ClientSecret != "dcr-secret-1" || reg.AuthMethod != store.AuthMethodPost || !reg.Dynamic ||
		reg.RedirectURI != "https://connect.example/callback" || strings.Join(reg.Scopes, " ") != "issues:read" {
		t.Errorf("stored %v", reg)
	}
	if got := rp.AuthCodeURL("s", "c", s.redirectURI, nil, nil); !strings.Contains(got, "resource=") || !strings.HasPrefix(got, f.issuer()+"/authorize?") {
		t.Errorf("authorization URL %s; want the discovered endpoint with resource", got)
	}
	if _, merr := s.mcpProvider(ctx, p); merr != nil || f.registrations.Load() != 1 {
		t.Errorf("second connection: %v, %d registrations; want the stored one reused", merr, f.registrations.Load())
	}
}

func TestMCPDiscoveryRefusals(t *testing.T) {
	tests := []struct {
		name string
		mod  func(f *fakeMCP)
		cfg  func(*oauth.ProviderConfig)
		code string
	}{
		{"no 401", func(f *fakeMCP) { f.probeStatus = http.StatusOK }, nil, mcpProbeFailed},
		{"server failing", func(f *fakeMCP) { f.probeStatus = http.StatusBadGateway }, nil, mcpUnavailable},
		{"http metadata URL", func(f *fakeMCP) { f.hint = "http://127.0.0.1/.well-known/oauth-protected-resource/mcp" }, nil, mcpNotHTTPS},
		// 127.0.0.2 is loopback but outside the allow-list: the guard
		// refuses it, and a broken guard would still not leave the host.
		{"metadata at a forbidden address", func(f *fakeMCP) {
			f.hint = strings.Replace(f.srv.URL, "127.0.0.1", "127.0.0.2", 1) + "/.well-known/oauth-protected-resource/mcp"
		}, nil, mcpForbiddenAddress},
		{"no metadata", func(f *fakeMCP) { f.hint = f.srv.URL + "/nowhere" }, nil, mcpNoMetadata},
		{"no authorization server metadata", func(f *fakeMCP) { f.asAt = "/elsewhere" }, nil, mcpASMetadata},
		{"wrong issuer", func(f *fakeMCP) { f.asMeta = func(m map[string]any) { m["issuer"] = "https://other.example" } }, nil, mcpASMetadata},
		{"no S256", func(f *fakeMCP) {
			f.asMeta = func(m map[string]any) { m["code_challenge_methods_supported"] = []string{"plain"} }
		}, nil, mcpASMetadata},
		{"http token endpoint", func(f *fakeMCP) {
			f.asMeta = func(m map[string]any) { m["token_endpoint"] = "http://127.0.0.1/token" }
		}, nil, mcpNotHTTPS},
		{"no registration endpoint", func(f *fakeMCP) { f.asMeta = func(m map[string]any) { delete(m, "registration_endpoint") } }, nil, mcpNoRegistration},
		{"registration refused", func(f *fakeMCP) { f.regStatus = http.StatusBadRequest }, nil, mcpRegistrationFailed},
		{"registration failing", func(f *fakeMCP) { f.regStatus = http.StatusInternalServerError }, nil, mcpRegistrationFailed},
		{"unusable auth method", func(f *fakeMCP) { f.regMethod = "private_key_jwt" }, nil, mcpRegistrationFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeMCP(t)
			tt.mod(f)
			s, p, st := newMCPServer(t, f, tt.cfg)
			_, merr := s.mcpProvider(context.Background(), p)
			if merr == nil || merr.code != tt.code {
				t.Fatalf("mcpProvider: %v; want %s", merr, tt.code)
			}
			if strings.Contains(merr.Error(), "secret-looking-body-text") || strings.Contains(merr.Error(), "dcr-secret-1") {
				t.Errorf("error %q quotes a response body", merr)
			}
			if page := merr.message().text; !strings.Contains(page, tt.code) {
				t.Errorf("page text %q does not name %s", page, tt.code)
			}
			if _, _, err := st.Registration(context.Background(), "issues"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("registration stored after a refusal: %v", err)
			}
		})
	}
}

// TestMCPOperatorClient: with a client the operator registered, discovery
// stores the endpoints and that client, and registers nothing.
func TestMCPOperatorClient(t *testing.T) {
	f := newFakeMCP(t)
	s, p, st := newMCPServer(t, f, func(c *oauth.ProviderConfig) {
		c.ClientID, c.ClientSecretFile, c.AuthStyle = "ops", "/run/secret", oauth.AuthStyleHeader
	})
	rp, merr := s.mcpProvider(context.Background(), p)
	if merr != nil {
		t.Fatal(merr)
	}
	reg, _, err := st.Registration(context.Background(), "issues")
	if err != nil || reg.Dynamic || reg.ClientID != "ops" || reg.ClientSecret != "" || reg.AuthMethod != store.AuthMethodBasic {
		t.Errorf("stored %v, %v; want the operator's client without its secret", reg, err)
	}
	if f.registrations.Load() != 0 || rp.OAuth2Config().ClientSecret != "ops-secret" {
		t.Errorf("%d registrations, secret kept %t", f.registrations.Load(), rp.OAuth2Config().ClientSecret == "ops-secret")
	}
}

// TestMCPClassifyFetch: refusals by the egress guard (recorded by the
// transport, or in the error) and by the go-sdk's own check of IP
// literals are destination_forbidden; a timeout is unavailable; anything
// else is left to the caller. Pure error values: no address is dialled.
func TestMCPClassifyFetch(t *testing.T) {
	guard := &egress.ForbiddenError{Host: "10.0.0.1:443", Reason: "private address"}
	tests := []struct {
		name     string
		recorded error
		err      error
		want     string
	}{
		{"recorded by the transport", guard, errors.New("GetAuthServerMeta: flattened"), mcpForbiddenAddress},
		{"in the error", nil, fmt.Errorf("dial: %w", guard), mcpForbiddenAddress},
		{"sdk ip literal check", nil, errors.New(`metadataURL: URL "https://10.0.0.1/x" refers to a non-public address`), mcpForbiddenAddress},
		{"timeout", nil, fmt.Errorf("get: %w", context.DeadlineExceeded), mcpUnavailable},
		{"other", nil, errors.New("bad content type"), ""},
	}
	for _, tt := range tests {
		fl := &fetchLog{forbidden: tt.recorded}
		got := fl.classify(tt.err)
		switch {
		case tt.want == "" && got != nil:
			t.Errorf("%s: %v; want nil", tt.name, got)
		case tt.want != "" && (got == nil || got.code != tt.want):
			t.Errorf("%s: %v; want %s", tt.name, got, tt.want)
		}
	}
}

// TestMCPScopeChoice: without configured scopes the challenge's scope wins
// over the metadata's scopes_supported, as the MCP specification says;
// configured scopes win over both.
func TestMCPScopeChoice(t *testing.T) {
	for _, tt := range []struct {
		name, challenge string
		configured      []string
		want            string
	}{
		{"challenge", "issues:read issues:write", nil, "issues:read issues:write"},
		{"metadata", "", nil, "issues:read"},
		{"configured", "issues:write", []string{"repo"}, "repo"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeMCP(t)
			f.hint = f.srv.URL + "/.well-known/oauth-protected-resource/mcp"
			f.scope = tt.challenge
			s, p, st := newMCPServer(t, f, func(c *oauth.ProviderConfig) { c.Scopes = tt.configured })
			if _, merr := s.mcpProvider(context.Background(), p); merr != nil {
				t.Fatal(merr)
			}
			reg, _, err := st.Registration(context.Background(), "issues")
			if err != nil || strings.Join(reg.Scopes, " ") != tt.want {
				t.Errorf("scopes %v (%v); want %s", reg.Scopes, err, tt.want)
			}
		})
	}
}
