//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/net/html"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/connect"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/chromium"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/mcptest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// mcpByURL is the provider name of the MCP server configured by its URL
// alone.
const mcpByURL = "issues-mcp"

// mcpConnectEnv is a sidecar and a connect server sharing a store, an MCP
// server (the go-sdk one, requiring tokens issued for its URL) known to
// both only by its URL, and the test authorization server with dynamic
// client registration, which the MCP server's metadata names.
type mcpConnectEnv struct {
	*testenv.Env
	as       *oauthtest.Server
	mcp      *mcptest.Server
	resource string
	connect  *connect.Server
	base     string
	linkKey  any
	audit    string
}

// mcpConnectOptions tune an mcpConnectEnv.
type mcpConnectOptions struct {
	// extra are further providers.
	extra map[string]oauth.ProviderConfig
	// trustPEM are further CAs the connect server trusts for MCP servers.
	trustPEM [][]byte
	// vault puts the grants and registrations in the shared real Vault,
	// with the Transit envelope.
	vault bool
}

// newMCPConnectEnv starts the environment.
func newMCPConnectEnv(t *testing.T, o mcpConnectOptions) *mcpConnectEnv {
	t.Helper()
	extra, trustPEM := o.extra, o.trustPEM
	m := &mcpConnectEnv{}
	// The MCP server is the environment's upstream; it is built once the
	// authorization server is up, which needs the upstream's port for the
	// resource indicator it accepts.
	var srv *mcptest.Server
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { srv.Handler().ServeHTTP(w, r) })
	caFile := filepath.Join(t.TempDir(), "as-ca.pem")
	to := testenv.Options{
		NoGrant:  true,
		Upstream: upstreamtest.Options{Handler: handler},
		Config: func(c *sidecar.Config) {
			m.resource = fmt.Sprintf("https://%s:%d%s", testenv.APIHost, c.Routes[0].Port, mcptest.PathMCP)
			m.as = testenv.StartProvider(t, oauthtest.Options{
				Registration: &oauthtest.Registration{Scopes: []string{"issues:read"}},
				Resources:    []string{m.resource},
			})
			srv = mcptest.New(mcptest.Options{Verify: mcptest.Introspector(m.as, true), AuthorizationServers: []string{m.as.Issuer()}})
			t.Cleanup(srv.Close)
			if err := os.WriteFile(caFile, m.as.CACertPEM(), 0o644); err != nil {
				t.Fatal(err)
			}
			// The sidecar refreshes at the discovered token endpoint,
			// whose TLS it must trust.
			c.Proxy.Upstream.CAFile = caFile
			pc := oauth.DefaultProviderConfig()
			pc.MCPServer = m.resource
			pc.Scopes = []string{"issues:read"}
			c.Providers = map[string]oauth.ProviderConfig{mcpByURL: pc}
			for name, pc := range extra {
				c.Providers[name] = pc
			}
			// No route of its own: the MCP server's URL is its route.
			c.Routes = nil
			c.Policy.Paths = []string{mcpToolsPolicy(t, mcpByURL)}
			// No token cache: each request reads the grant, so an
			// expired one is refreshed at the next call.
			c.TokenCache.TTL = 0
		},
	}
	if o.vault {
		to.Vault, to.Transit = sharedVault(t), true
	}
	e := testenv.New(t, to)
	m.Env, m.mcp = e, srv

	dir := t.TempDir()
	var pub []byte
	var err error
	m.linkKey, pub, err = identity.GenerateKeyPair("EdDSA")
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(dir, "link.pub")
	if err := os.WriteFile(pubFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := connect.DefaultConfig()
	cfg.Listen = ln.Addr().String()
	cfg.ExternalURL = "http://" + ln.Addr().String()
	cfg.SessionKeyFile = filepath.Join(dir, "session.key")
	cfg.Links.Issuers = []string{"https://orchestrator.test"}
	cfg.Links.Keys = []identity.KeyConfig{{File: pubFile}}
	m.base = cfg.ExternalURL

	// The connect server's providers and MCP client, built as
	// connect-server builds them, with the test's DNS.
	roots, err := sidecar.UpstreamRoots(e.Config, m.Upstream.CertPool().Clone())
	if err != nil {
		t.Fatal(err)
	}
	for _, pem := range trustPEM {
		roots.AppendCertsFromPEM(pem)
	}
	providers, err := sidecar.BuildProviders(context.Background(), e.Config, roots, e.Store)
	if err != nil {
		t.Fatal(err)
	}
	mcpClient, err := connect.NewMCPClient(e.Config.Egress, roots, egress.WithResolver(e.DNS.Resolver()))
	if err != nil {
		t.Fatal(err)
	}
	ac := audit.DefaultConfig()
	m.audit = filepath.Join(dir, "connect-audit.log")
	ac.Sink, ac.File.Path = audit.SinkFile, m.audit
	aud, err := audit.New(ac, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lv, err := connect.NewLinkVerifier(context.Background(), cfg.Links)
	if err != nil {
		t.Fatal(err)
	}
	m.connect, err = connect.New(cfg, connect.Deps{
		Store: e.Store, Providers: providers, Audit: aud, LinkVerifier: lv, MCPClient: mcpClient,
	})
	if err != nil {
		t.Fatal(err)
	}
	go m.connect.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.connect.Shutdown(ctx)
		lv.Close()
		aud.Close()
	})
	return m
}

// mcpToolsPolicy returns a policy directory with the example policy
// examples/policies/mcp_tools and data naming provider's read-only tools.
func mcpToolsPolicy(t *testing.T, provider string) string {
	t.Helper()
	dir := t.TempDir()
	rego, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "policies", "mcp_tools", "policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf(`{"mcp_tools": {"report_only": false, "destructive_patterns": ["delete_*", "*_admin"],
		"read_only": {%q: ["whoami", "search_issues"]}, "users": {}, "resource_prefixes": {}}}`, provider)
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), rego, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// link returns a connect link for user to connect provider.
func (m *mcpConnectEnv) link(t *testing.T, user, provider string) string {
	t.Helper()
	raw, err := connect.MintLink(m.linkKey, connect.LinkOptions{Issuer: "https://orchestrator.test", User: user, Provider: provider})
	if err != nil {
		t.Fatal(err)
	}
	return connect.LinkURL(m.base, provider, raw)
}

// mcpSession is an agent's Go SDK client session for user through the
// sidecar, holding only an assertion.
func (m *mcpConnectEnv) mcpSession(t *testing.T, user string) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		Proxy:              http.ProxyURL(m.ProxyURL()),
		TLSClientConfig:    &tls.Config{RootCAs: m.CAPool()},
		ProxyConnectHeader: http.Header{"Proxy-Authorization": {"Bearer " + m.Assert(t, user)}},
	}}
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e-agent", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: m.resource, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect through the sidecar as %s: %v\nlogs: %s", user, err, m.Logs())
	}
	t.Cleanup(func() { cs.Close(); hc.CloseIdleConnections() })
	return cs
}

// TestMCPConnectByURL connects people to an MCP server the configuration
// names only by its URL, in a real headless browser: the connect server
// probes the server, reads its RFC 9728 metadata, the authorization
// server's RFC 8414 metadata, registers a client (RFC 7591) and runs code +
// PKCE with the server's URL as resource; the Go SDK's MCP client then
// calls tools through the sidecar with the grant, the sidecar refreshes it
// at the discovered token endpoint as the registered client, for the same
// resource, and a second person's connection reuses the registration.
func TestMCPConnectByURL(t *testing.T) {
	for _, tt := range []struct {
		name  string
		vault bool
	}{{"embedded", false}, {"vault-transit", true}} {
		t.Run(tt.name, func(t *testing.T) { testMCPConnectByURL(t, newMCPConnectEnv(t, mcpConnectOptions{vault: tt.vault})) })
	}
}

func testMCPConnectByURL(t *testing.T, m *mcpConnectEnv) {
	ctx := context.Background()
	regs := m.Store.(store.RegistrationStore)

	b := chromium.NewBrowser(t, chromium.Trust{URL: m.as.URL(), Roots: m.as.CertPool()})
	if _, err := b.Connect(m.link(t, testenv.User, mcpByURL), testenv.User, testenv.User); err != nil {
		t.Fatalf("connect alice in the browser: %v\nlogs: %s", err, m.Logs())
	}
	reg, _, err := regs.Registration(ctx, mcpByURL)
	if err != nil {
		t.Fatalf("no registration stored: %v", err)
	}
	if !reg.Dynamic || reg.Resource != m.resource || reg.Issuer != m.as.Issuer() || reg.ClientSecret == "" ||
		reg.AuthMethod != store.AuthMethodBasic || reg.RedirectURI != m.base+"/callback" {
		t.Errorf("registration %v; want a dynamic client_secret_basic client for %s at %s", reg, m.resource, m.as.Issuer())
	}
	if got := m.as.Stats().Registrations; got != 1 {
		t.Errorf("registrations at the authorization server = %d; want 1", got)
	}
	g, _, err := m.Store.Get(ctx, mcpByURL, testenv.User)
	if err != nil {
		t.Fatalf("alice's grant not stored: %v", err)
	}
	ti, ok := m.as.IntrospectToken(g.AccessToken)
	if !ok || len(ti.Audience) != 1 || ti.Audience[0] != m.resource {
		t.Fatalf("alice's token audience %v (active %t); want exactly [%s]", ti.Audience, ok, m.resource)
	}

	// The agent's MCP client, holding no token, calls a tool as alice.
	cs := m.mcpSession(t, testenv.User)
	callWhoami := func(cs *mcp.ClientSession, want string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "whoami"})
		if err != nil {
			t.Fatalf("whoami: %v\nlogs: %s", err, m.Logs())
		}
		if got := toolText(t, res); got != "you are "+want {
			t.Errorf("whoami = %q; want you are %s", got, want)
		}
	}
	callWhoami(cs, testenv.User)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "delete_repository", Arguments: map[string]any{"name": "acme/api"}}); err == nil {
		t.Error("delete_repository was not refused")
	}

	// The access token runs out: the sidecar refreshes at the discovered
	// token endpoint as the registered client, for the same resource
	// (the MCP server refuses a token for anything else).
	before := m.as.Stats().Refreshes
	if err := m.as.ExpireAccessToken(g.AccessToken); err != nil {
		t.Fatal(err)
	}
	cur, ver, err := m.Store.Get(ctx, mcpByURL, testenv.User)
	if err != nil {
		t.Fatal(err)
	}
	cur.Expiry = time.Now().Add(-time.Minute)
	if _, err := m.Store.Put(ctx, cur, ver); err != nil {
		t.Fatal(err)
	}
	cs2 := m.mcpSession(t, testenv.User)
	callWhoami(cs2, testenv.User)
	if got := m.as.Stats().Refreshes; got != before+1 {
		t.Errorf("refreshes = %d; want %d", got, before+1)
	}
	g2, _, err := m.Store.Get(ctx, mcpByURL, testenv.User)
	if err != nil {
		t.Fatal(err)
	}
	if g2.AccessToken == g.AccessToken || g2.Generation <= g.Generation {
		t.Errorf("grant not refreshed: generation %d → %d", g.Generation, g2.Generation)
	}
	if ti, ok := m.as.IntrospectToken(g2.AccessToken); !ok || len(ti.Audience) != 1 || ti.Audience[0] != m.resource {
		t.Errorf("refreshed token audience %v (active %t); want [%s]", ti.Audience, ok, m.resource)
	}

	// Bob connects in a browser of his own: the registration is reused.
	b2 := chromium.NewBrowser(t, chromium.Trust{URL: m.as.URL(), Roots: m.as.CertPool()})
	bobLink := m.link(t, "bob", mcpByURL)
	// The confirmation page says where the person signs in: a host
	// nobody configured, which the MCP server's metadata named.
	if err := b2.Open(bobLink, "confirm"); err != nil {
		t.Fatal(err)
	}
	if got, err := b2.Text("sign-in-at"); err != nil || "https://"+got != m.as.URL() {
		t.Errorf("sign-in host on the confirmation page %q (%v); want %s", got, err, m.as.URL())
	}
	if _, err := b2.Connect(bobLink, "bob", "bob"); err != nil {
		t.Fatalf("connect bob in the browser: %v", err)
	}
	if got := m.as.Stats().Registrations; got != 1 {
		t.Errorf("registrations after bob connected = %d; want still 1", got)
	}
	reg2, _, err := regs.Registration(ctx, mcpByURL)
	if err != nil || reg2.ClientID != reg.ClientID {
		t.Errorf("registration after bob: %v, %v; want client %s unchanged", reg2, err, reg.ClientID)
	}
	callWhoami(m.mcpSession(t, "bob"), "bob")

	// Alice revokes from her apps page: the grant is gone and its tokens
	// are revoked at the discovered revocation endpoint, as the
	// registered client.
	revocations := m.as.Stats().Revocations
	if _, err := b.Revoke(m.base+"/", mcpByURL); err != nil {
		t.Fatalf("revoke in the browser: %v", err)
	}
	if _, _, err := m.Store.Get(ctx, mcpByURL, testenv.User); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("alice's grant after revoking: %v; want none", err)
	}
	if got := m.as.Stats().Revocations; got <= revocations {
		t.Error("the authorization server saw no revocation")
	}
	if _, ok := m.as.IntrospectToken(g2.AccessToken); ok {
		t.Error("alice's access token is still active after revoking")
	}

	// Canary: no token or client secret in any trail or log.
	trail, err := os.ReadFile(m.audit)
	if err != nil {
		t.Fatal(err)
	}
	for what, secret := range map[string]string{"access token": g.AccessToken, "refresh token": g.RefreshToken,
		"refreshed token": g2.AccessToken, "client secret": reg.ClientSecret} {
		for where, out := range map[string][]byte{"connect trail": trail, "sidecar trail": m.AuditRaw(t), "sidecar logs": m.Logs()} {
			if strings.Contains(string(out), secret) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
	}
	for _, want := range []string{`"outcome":"registered"`, `"outcome":"ok"`} {
		if !strings.Contains(string(trail), want) {
			t.Errorf("the connect trail has no %s record", want)
		}
	}
}

// TestMCPConnectBadMetadata refuses MCP servers whose metadata would lead
// the connect server astray, each with a stable error code on the page and
// in the audit trail, and nothing stored: metadata for another resource,
// an authorization server that is not https, and one at an address the
// egress guard refuses (127.0.0.2, outside the test's allow-list: no
// packet leaves loopback even if the guard were broken).
func TestMCPConnectBadMetadata(t *testing.T) {
	type meta struct{ resource, issuer string }
	var mu sync.Mutex
	bad := map[string]*meta{}
	srv, err := upstreamtest.Start(upstreamtest.Options{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		if strings.HasPrefix(r.URL.Path, "/.well-known/oauth-protected-resource/") {
			name = strings.TrimPrefix(r.URL.Path, "/.well-known/oauth-protected-resource/")
			mu.Lock()
			md := bad[name]
			mu.Unlock()
			if md == nil {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"resource": md.resource, "authorization_servers": []string{md.issuer}})
			return
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer resource_metadata="https://%s/.well-known/oauth-protected-resource/%s"`, r.Host, name))
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	mcpURL := func(name string) string { return srv.URL("127.0.0.1", "/"+name) }
	extra := map[string]oauth.ProviderConfig{}
	for _, name := range []string{"wrong-resource", "http-issuer", "private-issuer"} {
		pc := oauth.DefaultProviderConfig()
		pc.MCPServer = mcpURL(name)
		extra[name] = pc
	}
	m := newMCPConnectEnv(t, mcpConnectOptions{extra: extra, trustPEM: [][]byte{srv.CACertPEM()}})
	_, asPort, _ := net.SplitHostPort(strings.TrimPrefix(m.as.Issuer(), "https://"))
	mu.Lock()
	bad["wrong-resource"] = &meta{resource: "https://other.mcp.test/mcp", issuer: m.as.Issuer()}
	bad["http-issuer"] = &meta{resource: mcpURL("http-issuer"), issuer: "http://127.0.0.1:" + asPort}
	bad["private-issuer"] = &meta{resource: mcpURL("private-issuer"), issuer: "https://127.0.0.2:" + asPort}
	mu.Unlock()

	want := map[string]string{
		"wrong-resource": "mcp_resource_mismatch",
		"http-issuer":    "mcp_not_https",
		"private-issuer": "mcp_destination_forbidden",
	}
	regs := m.Store.(store.RegistrationStore)
	for name, code := range want {
		t.Run(name, func(t *testing.T) {
			status, page := m.openConnect(t, "carol", name)
			if status != http.StatusBadGateway || !strings.Contains(page, code) || !strings.Contains(page, "Nothing was connected or stored") {
				t.Errorf("page %d %q; want 502 naming %s", status, page, code)
			}
			if _, _, err := regs.Registration(context.Background(), name); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("registration of %s: %v; want none stored", name, err)
			}
			if _, _, err := m.Store.Get(context.Background(), name, "carol"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("grant of %s: %v; want none stored", name, err)
			}
		})
	}
	if got := m.as.Stats().Registrations; got != 0 {
		t.Errorf("registrations at the authorization server = %d; want 0", got)
	}
	trail, err := os.ReadFile(m.audit)
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range want {
		if !strings.Contains(string(trail), `"error_code":"`+code+`"`) {
			t.Errorf("the connect trail has no record with error_code %s", code)
		}
	}
}

// openConnect opens a connect link for user and provider with a plain
// HTTP client keeping cookies, and returns the status and text of the page
// the connect server shows (the confirmation, or why it cannot connect).
func (m *mcpConnectEnv) openConnect(t *testing.T, user, provider string) (int, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp, err := c.Get(m.link(t, user, provider))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestMCPConnectIssuerMixUp refuses a callback whose RFC 9207 iss names
// another authorization server than the one the MCP server's metadata
// named: nothing is stored, and the refusal is audited.
func TestMCPConnectIssuerMixUp(t *testing.T) {
	m := newMCPConnectEnv(t, mcpConnectOptions{})
	c, callback := m.flowToCallback(t, "dave")
	resp, err := c.Get(callback + "&iss=" + url.QueryEscape("https://attacker.example"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "Nothing was connected") {
		t.Errorf("callback with another issuer: %d %s; want the refusal page", resp.StatusCode, body)
	}
	if _, _, err := m.Store.Get(context.Background(), mcpByURL, "dave"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("grant after a mix-up: %v; want none", err)
	}
	trail, err := os.ReadFile(m.audit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(trail), `"error_code":"issuer_mismatch"`) {
		t.Error("the connect trail has no issuer_mismatch record")
	}
}

// flowToCallback runs a connection of the MCP server for user with a plain
// HTTP client, up to the authorization server's redirect back: the link,
// the confirmation, the consent (approved as user). It returns the client
// (with the session cookie) and the callback URL, not yet opened.
func (m *mcpConnectEnv) flowToCallback(t *testing.T, user string) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{
		Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: m.as.CertPool()}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// step sends req and checks the answer's status.
	step := func(req *http.Request, want int) (*http.Response, string) {
		t.Helper()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d; want %d\n%s", req.Method, req.URL.Path, resp.StatusCode, want, body)
		}
		return resp, string(body)
	}
	get := func(u string) *http.Request {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	post := func(u string, form url.Values) *http.Request {
		req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return req
	}
	resp, _ := step(get(m.link(t, user, mcpByURL)), http.StatusSeeOther)
	_, page := step(get(resolveURL(t, m.base+"/", resp.Header.Get("Location"))), http.StatusOK)
	action, fields := pageForm(t, page, "confirm-form")
	resp, _ = step(post(resolveURL(t, m.base+"/", action), fields), http.StatusSeeOther)
	authURL := resp.Header.Get("Location")
	_, page = step(get(authURL), http.StatusOK)
	action, fields = pageForm(t, page, "consent")
	fields.Set("user", user)
	fields.Set("approve", "yes")
	resp, _ = step(post(resolveURL(t, authURL, action), fields), http.StatusSeeOther)
	return c, resp.Header.Get("Location")
}

func resolveURL(t *testing.T, base, ref string) string {
	t.Helper()
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	return r.String()
}

// pageForm returns the action and the input fields of the form with id in
// page.
func pageForm(t *testing.T, page, id string) (string, url.Values) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	attr := func(n *html.Node, key string) string {
		for _, a := range n.Attr {
			if a.Key == key {
				return a.Val
			}
		}
		return ""
	}
	var form *html.Node
	vals := url.Values{}
	var walk func(n *html.Node, in bool)
	walk = func(n *html.Node, in bool) {
		if n.Type == html.ElementNode && n.Data == "form" && attr(n, "id") == id {
			form, in = n, true
		}
		if in && n.Type == html.ElementNode && n.Data == "input" && attr(n, "name") != "" {
			vals.Add(attr(n, "name"), attr(n, "value"))
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, in)
		}
	}
	walk(doc, false)
	if form == nil {
		t.Fatalf("no form %q in page:\n%s", id, page)
	}
	return attr(form, "action"), vals
}
