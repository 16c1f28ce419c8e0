package connect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/html"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Test fixtures.
const (
	testProvider     = "acme"
	testClientID     = "onbehalf-connect"
	testClientSecret = "connect-client-secret-0123456789"
	testIssuer       = "https://orchestrator.test"
	testAdminToken   = "admin-token-0123456789-0123456789-abcdef"
)

var testScopes = []string{"chat:write", "files:read"}

// testClock is the server's clock: real time plus an offset a test can
// advance to expire states and sessions.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// envOptions adjust newEnv.
type envOptions struct {
	// noLinks leaves links unconfigured (OIDC only).
	noLinks bool
	// idp enables OIDC sign-in with this identity provider.
	idp *testIDP
	// shared reuses another environment's OAuth server, store, audit
	// trail and link key: a second replica.
	shared *testEnv
	// revocationURL overrides the provider's revocation endpoint.
	revocationURL string
	// configure adjusts the configuration before New.
	configure func(*Config)
	// presets adds a provider per preset name, named after it, whose
	// endpoints are the OAuth test server's: the pages then show the
	// preset's display name and scope descriptions.
	presets []string
}

// testEnv is one connect server on a loopback port with the real OAuth
// test server as provider, an embedded store and a file audit trail.
type testEnv struct {
	t         *testing.T
	dir       string
	oauth     *oauthtest.Server
	provider  *oauth.Provider
	store     *store.Embedded
	audit     *audit.Auditor
	auditPath string
	logs      *observer.ObservedLogs
	linkKey   any
	srv       *Server
	url       string
	clock     *testClock
	cfg       Config
	idp       *testIDP
	roots     *x509.CertPool
}

// newEnv starts an environment and stops it when the test ends.
func newEnv(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	e := &testEnv{t: t, dir: t.TempDir(), clock: &testClock{}, idp: o.idp}
	ctx := context.Background()
	if o.shared != nil {
		s := o.shared
		e.oauth, e.store, e.audit, e.auditPath, e.linkKey = s.oauth, s.store, s.audit, s.auditPath, s.linkKey
	} else {
		var err error
		e.oauth, err = oauthtest.Start(oauthtest.Options{Clients: []oauthtest.Client{{
			ID: testClientID, Secret: testClientSecret,
			RedirectURIs: []string{"http://127.0.0.1/callback"},
			Scopes:       testScopes,
		}}})
		if err != nil {
			t.Fatalf("start oauth server: %v", err)
		}
		t.Cleanup(e.oauth.Close)
		e.store, err = store.OpenEmbedded(store.EmbeddedConfig{
			Path: filepath.Join(e.dir, "grants.db"), KeyFile: filepath.Join(e.dir, "grants.key"), LockTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
		t.Cleanup(func() { e.store.Close() })
		e.auditPath = filepath.Join(e.dir, "audit.log")
		ac := audit.DefaultConfig()
		ac.Sink = audit.SinkFile
		ac.File.Path = e.auditPath
		e.audit, err = audit.New(ac, audit.Options{})
		if err != nil {
			t.Fatalf("audit: %v", err)
		}
		t.Cleanup(func() { e.audit.Close() })
		var pubPEM []byte
		e.linkKey, pubPEM, err = identity.GenerateKeyPair("EdDSA")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, "link.pub"), pubPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.roots = e.oauth.CertPool()
	if o.idp != nil {
		e.roots.AddCert(o.idp.srv.Certificate())
	}

	pc := oauth.DefaultProviderConfig()
	pc.TokenURL = e.oauth.TokenURL()
	pc.AuthorizationURL = e.oauth.AuthURL()
	pc.RevocationURL = e.oauth.RevokeURL()
	if o.revocationURL != "" {
		pc.RevocationURL = o.revocationURL
	}
	pc.UserinfoURL = e.oauth.UserinfoURL()
	pc.ClientID = testClientID
	pc.ClientSecretFile = "unused: the secret is passed to NewProvider"
	pc.Scopes = testScopes
	pc.AuthStyle = oauth.AuthStyleHeader
	client, err := oauth.NewHTTPClient(e.oauth.CertPool())
	if err != nil {
		t.Fatalf("provider client: %v", err)
	}
	e.provider, err = oauth.NewProvider(testProvider, pc, testClientSecret, client)
	if err != nil {
		t.Fatalf("new provider: %v", err)
	}
	t.Cleanup(e.provider.CloseIdleConnections)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + ln.Addr().String()
	cfg := DefaultConfig()
	cfg.Listen = ln.Addr().String()
	cfg.ExternalURL = e.url
	cfg.SessionKeyFile = filepath.Join(e.dir, "session.key")
	if o.shared != nil {
		cfg.SessionKeyFile = o.shared.cfg.SessionKeyFile // replicas share the key
	}
	cfg.Admin.TokenFile = filepath.Join(e.dir, "admin.token")
	if err := os.WriteFile(cfg.Admin.TokenFile, []byte(testAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !o.noLinks {
		cfg.Links.Issuers = []string{testIssuer}
		pub := filepath.Join(e.dir, "link.pub")
		if o.shared != nil {
			pub = filepath.Join(o.shared.dir, "link.pub")
		}
		cfg.Links.Keys = []identity.KeyConfig{{File: pub}}
	}
	if o.idp != nil {
		secretFile := filepath.Join(e.dir, "oidc.secret")
		if err := os.WriteFile(secretFile, []byte(o.idp.secret), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.OIDC.Issuer = o.idp.issuer()
		cfg.OIDC.ClientID = o.idp.clientID
		cfg.OIDC.ClientSecretFile = secretFile
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	e.cfg = cfg

	providers := map[string]*oauth.Provider{testProvider: e.provider}
	for _, name := range o.presets {
		ppc := pc
		ppc.Preset = name
		ppc.Scopes = nil
		p, err := oauth.NewProvider(name, ppc, testClientSecret, client)
		if err != nil {
			t.Fatalf("new provider %s: %v", name, err)
		}
		t.Cleanup(p.CloseIdleConnections)
		providers[name] = p
	}

	core, logs := observer.New(zap.DebugLevel)
	e.logs = logs
	d := Deps{
		Store:     e.store,
		Providers: providers,
		Audit:     e.audit,
		Logger:    zap.New(core),
		Now:       e.clock.now,
	}
	if cfg.Links.Enabled() {
		v, err := NewLinkVerifier(ctx, cfg.Links)
		if err != nil {
			t.Fatalf("link verifier: %v", err)
		}
		t.Cleanup(func() { v.Close() })
		d.LinkVerifier = v
	}
	if o.idp != nil {
		d.OIDCClient = o.idp.srv.Client()
	}
	e.srv, err = New(cfg, d)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// link mints a connect link for user and provider, valid for ttl.
func (e *testEnv) link(user, provider string, ttl time.Duration) string {
	e.t.Helper()
	raw, err := MintLink(e.linkKey, LinkOptions{Issuer: testIssuer, User: user, Provider: provider, TTL: ttl})
	if err != nil {
		e.t.Fatalf("MintLink: %v", err)
	}
	return raw
}

// linkURL mints a link and returns the URL a person opens.
func (e *testEnv) linkURL(user string) string {
	return LinkURL(e.url, testProvider, e.link(user, testProvider, 0))
}

// agentLinkURL mints a link naming the agent that asks.
func (e *testEnv) agentLinkURL(user, agent string) string {
	e.t.Helper()
	raw, err := MintLink(e.linkKey, LinkOptions{Issuer: testIssuer, User: user, Provider: testProvider, Agent: agent})
	if err != nil {
		e.t.Fatalf("MintLink: %v", err)
	}
	return LinkURL(e.url, testProvider, raw)
}

// grant returns the stored grant of user at the test provider, or nil.
func (e *testEnv) grant(user string) *store.Grant {
	e.t.Helper()
	g, _, err := e.store.Get(context.Background(), testProvider, user)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("get grant: %v", err)
	}
	return g
}

// auditText returns the audit file's content.
func (e *testEnv) auditText() string {
	e.t.Helper()
	b, err := os.ReadFile(e.auditPath)
	if err != nil {
		e.t.Fatalf("read audit: %v", err)
	}
	return string(b)
}

// logText returns every log entry with its fields, as text.
func (e *testEnv) logText() string {
	var b strings.Builder
	for _, en := range e.logs.All() {
		b.WriteString(en.Message)
		for k, v := range en.ContextMap() {
			b.WriteString(" " + k + "=")
			b.WriteString(fmt.Sprint(v))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// assertNoSecret fails when any secret appears in the logs, the audit
// trail or one of the extra texts.
func (e *testEnv) assertNoSecret(extra []string, secrets ...string) {
	e.t.Helper()
	texts := map[string]string{"logs": e.logText(), "audit": e.auditText()}
	for i, x := range extra {
		texts[fmt.Sprintf("response %d", i)] = x
	}
	for _, s := range secrets {
		if len(s) < 8 {
			continue
		}
		for where, text := range texts {
			if strings.Contains(text, s) {
				e.t.Errorf("a secret (%d bytes, starting %.4s) appears in %s", len(s), s, where)
			}
		}
	}
}

// browser is a Go HTTP client with a cookie jar that does not follow
// redirects, so that each step of a flow can be looked at.
type browser struct {
	t      *testing.T
	client *http.Client
	jar    *cookiejar.Jar
}

func newBrowser(t *testing.T, roots *x509.CertPool) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &browser{t: t, jar: jar, client: &http.Client{
		Jar:           jar,
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   string
}

// location returns the response's redirect target.
func (r response) location() string { return r.header.Get("Location") }

func (b *browser) do(req *http.Request) response {
	b.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (b *browser) get(rawURL string) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(rawURL string, form url.Values) response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, rawURL, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// cookies returns the browser's cookies for u.
func (b *browser) cookies(u string) []*http.Cookie {
	pu, err := url.Parse(u)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.jar.Cookies(pu)
}

// setCookies replaces the browser's cookies for u.
func (b *browser) setCookies(u string, cs []*http.Cookie) {
	pu, err := url.Parse(u)
	if err != nil {
		b.t.Fatal(err)
	}
	b.jar.SetCookies(pu, cs)
}

// resolve makes ref absolute against base.
func resolve(t *testing.T, base, ref string) string {
	t.Helper()
	bu, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	ru, err := url.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	return bu.ResolveReference(ru).String()
}

// openConfirm opens a connect link and follows the redirect to the
// confirmation page, which it returns with its form's fields.
func (b *browser) openConfirm(e *testEnv, linkURL string) (response, string, url.Values) {
	b.t.Helper()
	r := b.get(linkURL)
	if r.status != http.StatusSeeOther {
		b.t.Fatalf("open link: status %d; want 303\n%s", r.status, r.body)
	}
	if strings.Contains(r.location(), "link=") {
		b.t.Fatalf("open link: redirect keeps the link in the URL: %s", r.location())
	}
	r = b.get(resolve(b.t, e.url, r.location()))
	if r.status != http.StatusOK {
		b.t.Fatalf("confirmation page: status %d; want 200\n%s", r.status, r.body)
	}
	action, fields := formFields(b.t, r.body, "confirm-form")
	return r, action, fields
}

// startFlow opens a link, confirms, and returns the provider's
// authorization URL the server redirected to.
func (b *browser) startFlow(e *testEnv, linkURL string) string {
	b.t.Helper()
	_, action, fields := b.openConfirm(e, linkURL)
	r := b.post(resolve(b.t, e.url, action), fields)
	if r.status != http.StatusSeeOther {
		b.t.Fatalf("confirm: status %d; want 303\n%s", r.status, r.body)
	}
	return r.location()
}

// consent approves the authorization at the OAuth test server's consent
// page as user and returns the callback URL it redirects to.
func (b *browser) consent(e *testEnv, authURL, user string) string {
	b.t.Helper()
	r := b.get(authURL)
	if r.status != http.StatusOK {
		b.t.Fatalf("consent page: status %d; want 200\n%s", r.status, r.body)
	}
	action, fields := formFields(b.t, r.body, "consent")
	fields.Set("user", user)
	fields.Set("approve", "yes")
	r = b.post(resolve(b.t, authURL, action), fields)
	if r.status != http.StatusSeeOther {
		b.t.Fatalf("approve: status %d; want 303\n%s", r.status, r.body)
	}
	return r.location()
}

// connect runs the whole flow for linkURL, approving as account, and
// returns the callback's response.
func (b *browser) connect(e *testEnv, linkURL, account string) response {
	b.t.Helper()
	cb := b.consent(e, b.startFlow(e, linkURL), account)
	return b.get(cb)
}

// formFields returns the action and fields of the form with id (the first
// form when id is empty) in page. Submit buttons are left out.
func formFields(t *testing.T, page, id string) (string, url.Values) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parse page: %v", err)
	}
	var form *html.Node
	var find func(n *html.Node)
	find = func(n *html.Node) {
		if form != nil {
			return
		}
		if n.Type == html.ElementNode && n.Data == "form" && (id == "" || attr(n, "id") == id) {
			form = n
			return
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			find(c)
		}
	}
	find(doc)
	if form == nil {
		t.Fatalf("no form %q in page:\n%s", id, page)
	}
	vals := url.Values{}
	var collect func(n *html.Node)
	collect = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "input" && attr(n, "type") != "submit" && attr(n, "name") != "" {
			vals.Add(attr(n, "name"), attr(n, "value"))
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			collect(c)
		}
	}
	collect(form)
	return attr(form, "action"), vals
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// follow requests rawURL and follows redirects (at most ten), returning
// the final response and the URL it came from.
func (b *browser) follow(rawURL string) (response, string) {
	b.t.Helper()
	for range 10 {
		r := b.get(rawURL)
		if r.status < 300 || r.status > 399 {
			return r, rawURL
		}
		rawURL = resolve(b.t, rawURL, r.location())
	}
	b.t.Fatalf("too many redirects, last to %s", rawURL)
	return response{}, ""
}
