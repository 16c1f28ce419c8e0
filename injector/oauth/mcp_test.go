package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

func TestCanonicalResource(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"https://mcp.example.com/mcp", "https://mcp.example.com/mcp", ""},
		{"HTTPS://MCP.Example.COM:443/mcp", "https://mcp.example.com/mcp", ""},
		{"https://mcp.example.com:8443", "https://mcp.example.com:8443", ""},
		{"https://[::1]:8443/x", "https://[::1]:8443/x", ""},
		{"http://mcp.example.com/mcp", "", "https"},
		{"https://user@mcp.example.com/mcp", "", "user information"},
		{"https://mcp.example.com/mcp?x=1", "", "query"},
		{"https://mcp.example.com/mcp#frag", "", "fragment"},
		{"https://mcp.example.com:0/mcp", "", "port"},
		{"mcp.example.com/mcp", "", "absolute"},
		{"https://mcp.example.com/" + strings.Repeat("a", maxResourceLen), "", "at most"},
	}
	for _, tt := range tests {
		got, err := CanonicalResource(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("CanonicalResource(%q) = %q, %v; want an error about %s", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CanonicalResource(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// mcpConfig returns a valid configuration of an MCP server known by its
// URL, with a client registered dynamically.
func mcpConfig() ProviderConfig {
	c := DefaultProviderConfig()
	c.MCPServer = "https://mcp.example.com/mcp"
	return c
}

func TestMCPConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(c *ProviderConfig)
		want []string
	}{
		{"dynamic", func(*ProviderConfig) {}, nil},
		{"operator confidential client", func(c *ProviderConfig) {
			c.ClientID, c.ClientSecretFile, c.AuthStyle = "ops", "/run/secret", AuthStyleParams
		}, nil},
		{"operator public client", func(c *ProviderConfig) { c.ClientID = "ops" }, nil},
		{"not https", func(c *ProviderConfig) { c.MCPServer = "http://mcp.example.com/mcp" }, []string{"mcp_server"}},
		{"endpoints are discovered", func(c *ProviderConfig) {
			c.TokenURL, c.AuthorizationURL, c.Preset = "https://as/token", "https://as/authorize", "github"
		}, []string{"authorization_url", "preset", "token_url"}},
		{"secret without client", func(c *ProviderConfig) { c.ClientSecretFile = "/run/secret" }, []string{"auth_style", "client_id"}},
		{"secret without style", func(c *ProviderConfig) { c.ClientID, c.ClientSecretFile = "ops", "/run/secret" }, []string{"auth_style"}},
		{"public client with style", func(c *ProviderConfig) { c.ClientID, c.AuthStyle = "ops", AuthStyleHeader }, []string{"auth_style"}},
		{"pkce off", func(c *ProviderConfig) { c.PKCE = ptr(false) }, []string{"pkce"}},
		{"resource parameter", func(c *ProviderConfig) { c.AuthParams = map[string]string{"resource": "https://x"} }, []string{"auth_params.resource"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mcpConfig()
			tt.mod(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v; want nil", err)
				}
				return
			}
			if diff := cmp.Diff(tt.want, problemPaths(t, err)); diff != "" {
				t.Errorf("problem paths (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

func TestMCPRoutes(t *testing.T) {
	c := mcpConfig()
	c.MCPServer = "https://MCP.example.com:8443/v1/mcp"
	got := c.Routes("issues")
	want := []injector.RouteConfig{{Host: "mcp.example.com", Port: 8443, Paths: []string{"/v1/mcp"}, Provider: "issues", MCP: true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

// tokenRecorder is a token, authorization and revocation endpoint that
// records the forms and client credentials it received.
type tokenRecorder struct {
	mu    sync.Mutex
	forms []url.Values
	basic []string
}

func (r *tokenRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_ = req.ParseForm()
	user, pass, _ := req.BasicAuth()
	r.mu.Lock()
	r.forms = append(r.forms, req.PostForm)
	r.basic = append(r.basic, user+":"+pass)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"access_token":"at","refresh_token":"rt2","token_type":"Bearer","expires_in":3600}`))
}

func newMCPProvider(t *testing.T, mod func(*ProviderConfig), secret string) (*Provider, *httptest.Server, *tokenRecorder) {
	t.Helper()
	rec := &tokenRecorder{}
	srv := httptest.NewTLSServer(rec)
	t.Cleanup(srv.Close)
	c := mcpConfig()
	if mod != nil {
		mod(&c)
	}
	client := srv.Client()
	client.Transport.(*http.Transport).Proxy = nil
	p, err := NewProvider("issues", c, secret, client)
	if err != nil {
		t.Fatal(err)
	}
	return p, srv, rec
}

func registration(srv *httptest.Server, method string) *store.Registration {
	return &store.Registration{
		Provider: "issues", Resource: "https://mcp.example.com/mcp", Issuer: srv.URL,
		AuthorizationEndpoint: srv.URL + "/authorize", TokenEndpoint: srv.URL + "/token", RevocationEndpoint: srv.URL + "/revoke",
		ClientID: "dcr-client", ClientSecret: "dcr-secret", AuthMethod: method, Dynamic: true,
		Scopes: []string{"issues:read"}, RedirectURI: "https://connect.example/callback",
	}
}

// TestMCPProviderRequests shows that an MCP server's provider sends its
// URL as RFC 8707 resource in the authorization request, the code
// exchange and every refresh, authenticating as the registered client.
func TestMCPProviderRequests(t *testing.T) {
	tmpl, srv, rec := newMCPProvider(t, nil, "")
	if tmpl.Resolved() || !tmpl.IsMCP() {
		t.Fatalf("template: resolved %t, MCP %t; want unresolved MCP", tmpl.Resolved(), tmpl.IsMCP())
	}
	p, err := tmpl.WithRegistration(registration(srv, store.AuthMethodBasic))
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(p.AuthCodeURL("st", "challenge", "https://connect.example/callback", nil, map[string]string{"resource": "https://evil"}))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("resource") != "https://mcp.example.com/mcp" || q.Get("client_id") != "dcr-client" ||
		q.Get("code_challenge_method") != "S256" || q.Get("scope") != "issues:read" || u.Path != "/authorize" {
		t.Errorf("authorization URL %s; want resource, the registered client, S256 and the registered scope", u)
	}
	ctx := context.Background()
	if _, err := p.Exchange(ctx, "code", "verifier", "https://connect.example/callback"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.refresh(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, f := range rec.forms {
		if f.Get("resource") != "https://mcp.example.com/mcp" || rec.basic[i] != "dcr-client:dcr-secret" {
			t.Errorf("token request %d: resource %q, basic %q; want the MCP URL and the registered client", i, f.Get("resource"), rec.basic[i])
		}
	}
	if got := rec.forms[0].Get("code_verifier"); got != "verifier" {
		t.Errorf("code_verifier = %q; want it sent", got)
	}
}

// TestMCPPublicClient: a client registered with
// token_endpoint_auth_method none sends its id and no secret.
func TestMCPPublicClient(t *testing.T) {
	tmpl, srv, rec := newMCPProvider(t, nil, "")
	reg := registration(srv, store.AuthMethodNone)
	reg.ClientSecret = ""
	p, err := tmpl.WithRegistration(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.refresh(context.Background(), "rt"); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if f := rec.forms[0]; f.Get("client_id") != "dcr-client" || f.Has("client_secret") || rec.basic[0] != ":" {
		t.Errorf("public client sent form %v and basic %q; want client_id only", f, rec.basic[0])
	}
}

func TestMCPWithRegistrationRefusals(t *testing.T) {
	dyn, srv, _ := newMCPProvider(t, nil, "")
	ops, _, _ := newMCPProvider(t, func(c *ProviderConfig) {
		c.ClientID, c.ClientSecretFile, c.AuthStyle = "ops", "/run/secret", AuthStyleHeader
	}, "ops-secret")
	other := registration(srv, store.AuthMethodBasic)
	other.Resource = "https://other.example.com/mcp"
	static := registration(srv, store.AuthMethodBasic)
	static.Dynamic, static.ClientID, static.ClientSecret = false, "ops", ""
	tests := []struct {
		name string
		p    *Provider
		reg  *store.Registration
		ok   bool
	}{
		{"other resource", dyn, other, false},
		{"dynamic registration, operator client configured", ops, registration(srv, store.AuthMethodBasic), false},
		{"operator registration, dynamic configured", dyn, static, false},
		{"operator registration", ops, static, true},
	}
	for _, tt := range tests {
		p, err := tt.p.WithRegistration(tt.reg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v; want ok %t", tt.name, err, tt.ok)
		}
		if err == nil && p.OAuth2Config().ClientSecret != "ops-secret" {
			t.Errorf("%s: the operator's secret was not kept", tt.name)
		}
	}
}

// memRegs is a RegistrationStore in memory, counting reads.
type memRegs struct {
	mu    sync.Mutex
	reg   *store.Registration
	ver   store.Version
	reads int
	err   error
}

func (m *memRegs) Registration(context.Context, string) (*store.Registration, store.Version, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if m.err != nil {
		return nil, 0, m.err
	}
	if m.reg == nil {
		return nil, 0, store.ErrNotFound
	}
	return m.reg.Clone(), m.ver, nil
}

func (m *memRegs) PutRegistration(_ context.Context, r *store.Registration, _ store.Version) (store.Version, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reg, m.ver = r.Clone(), m.ver+1
	return m.ver, nil
}

func (m *memRegs) DeleteRegistration(context.Context, string) error { return errors.ErrUnsupported }

func TestMCPResolve(t *testing.T) {
	tmpl, srv, _ := newMCPProvider(t, nil, "")
	regs := &memRegs{}
	ctx := context.Background()
	if _, err := tmpl.Resolve(ctx, regs); !errors.Is(err, ErrNotRegistered) || !errors.Is(err, injector.ErrProviderMisconfigured) {
		t.Errorf("Resolve without a registration: %v; want ErrNotRegistered and provider misconfigured", err)
	}
	regs.PutRegistration(ctx, registration(srv, store.AuthMethodPost), 0)
	p1, err := tmpl.Resolve(ctx, regs)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := tmpl.Resolve(ctx, regs)
	if err != nil || p2 != p1 || regs.reads != 2 {
		t.Errorf("second Resolve: same %t, reads %d, %v; want the cached provider without a read", p2 == p1, regs.reads, err)
	}
	if got := p1.Config().TokenURL; got != srv.URL+"/token" {
		t.Errorf("token URL %q; want the registration's", got)
	}
	// The connect server replaced the registration: Forget makes the next
	// Resolve read it.
	r := registration(srv, store.AuthMethodPost)
	r.ClientID = "dcr-client-2"
	regs.PutRegistration(ctx, r, 1)
	tmpl.Forget()
	p3, err := tmpl.Resolve(ctx, regs)
	if err != nil || p3.OAuth2Config().ClientID != "dcr-client-2" {
		t.Errorf("after Forget: %v, %v; want the new client", p3, err)
	}
	if cfg := p3.Config(); !slices.Equal(cfg.Scopes, []string{"issues:read"}) || cfg.Timeout != DefaultProviderConfig().Timeout {
		t.Errorf("resolved config %+v lost the template's settings", cfg)
	}
	// A resolved provider (any other) resolves to itself.
	if p, err := p3.Resolve(ctx, nil); err != nil || p != p3 {
		t.Errorf("Resolve of a resolved provider: %v, %v", p, err)
	}
}
