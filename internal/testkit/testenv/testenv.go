// Package testenv builds a complete, running sidecar environment on
// loopback for end-to-end tests and benchmarks: an interception CA, an
// orchestrator signing key, a recording TLS upstream, an embedded store
// holding a canary grant for alice, a fake DNS server, and the sidecar
// itself listening on real sockets. Nothing is mocked.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/injector/vault"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/dnstest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
	"github.com/onbehalf-dev/onbehalf/proxy/certs"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Fixed names of the environment.
const (
	Issuer   = "https://orchestrator.test"
	Audience = "onbehalf-test-sidecar"
	User     = "alice"
	Agent    = "agent-7"
	Provider = "chat"
	// APIHost is the routed upstream's name; the fake DNS resolves it to
	// 127.0.0.1. It is not "localhost", which some clients never proxy.
	APIHost = "api.chat.test"
	// CanaryToken is alice's access token: tests grep every output for it.
	CanaryToken = "canary-access-token-7f3e9b2c41d8"
	// CanaryRefresh is alice's refresh token.
	CanaryRefresh = "canary-refresh-token-a91c0d5e66b2"
)

// DefaultPolicy allows identified users on routes, except DELETE.
const DefaultPolicy = `package onbehalf.authz

default decision := {"allow": false, "reason": "no rule allowed this request"}

decision := {"allow": true, "reason": "identified user on a route"} if {
	input.subject.user != ""
	input.route.provider != ""
	input.attributes.request.http.method != "DELETE"
}

decision := {"allow": false, "reason": "agents may not delete"} if {
	input.attributes.request.http.method == "DELETE"
}
`

// Options tune an environment.
type Options struct {
	// Config edits the sidecar config before it starts.
	Config func(*sidecar.Config)
	// Upstream configures the recording upstream (names default to
	// APIHost, localhost and 127.0.0.1).
	Upstream upstreamtest.Options
	// DNS adds names to the fake DNS (APIHost → 127.0.0.1 is always there).
	DNS map[string][]netip.Addr
	// Dial replaces the egress guard's underlying dialer.
	Dial egress.DialFunc
	// TrustPEM are further CA certificates (PEM) the sidecar trusts for
	// upstream TLS and token endpoints, for test servers other than the
	// recording upstream (an IdP's and an app's authorization server, say).
	TrustPEM [][]byte
	// Policy replaces DefaultPolicy.
	Policy string
	// NoGrant leaves alice without a stored grant.
	NoGrant bool
	// WrapStore wraps the store the sidecar uses (to count or fail calls
	// in a test).
	WrapStore func(store.Store) store.Store
	// Vault, when set, makes the grant store a real Vault (KV v2 under
	// secret/, token auth with the root token); Transit turns on envelope
	// encryption with a derived key the environment creates.
	Vault   *vaulttest.Server
	Transit bool
	// Provider, when set, configures token refresh against this real OAuth
	// server, and alice's grant is a real one it issued (Token and
	// RefreshToken on Env hold it) instead of the canary.
	Provider *oauthtest.Server
}

// ProviderClientID and ProviderClientSecret register the sidecar at
// Options.Provider.
const (
	ProviderClientID     = "onbehalf-sidecar"
	ProviderClientSecret = "sidecar-client-secret-for-tests"
)

// Env is a running environment.
type Env struct {
	Dir      string
	Upstream *upstreamtest.Server
	DNS      *dnstest.Server
	Sidecar  *sidecar.Sidecar
	Config   sidecar.Config
	// Store is the test's own handle on the grant store the sidecars use.
	Store      store.Store
	CAPEM      []byte
	CAFile     string
	SigningKey any
	SigningAlg string
	AuditPath  string
	PolicyDir  string
	// Token and RefreshToken are alice's real tokens when Options.Provider
	// is set.
	Token, RefreshToken string

	opts  Options
	roots *x509.CertPool
	logs  *syncBuffer
	extra int
}

// New starts an environment; everything stops when tb ends.
func New(tb testing.TB, o Options) *Env {
	tb.Helper()
	dir := tb.TempDir()
	e := &Env{Dir: dir, logs: &syncBuffer{}}

	if len(o.Upstream.Names) == 0 {
		o.Upstream.Names = []string{APIHost, "localhost", "127.0.0.1"}
	}
	up, err := upstreamtest.Start(o.Upstream)
	must(tb, err)
	tb.Cleanup(func() { up.Close() })
	e.Upstream = up

	table := map[string][]netip.Addr{APIHost: {netip.MustParseAddr("127.0.0.1")}}
	for k, v := range o.DNS {
		table[k] = v
	}
	dns, err := dnstest.Start(dnstest.Static(table))
	must(tb, err)
	tb.Cleanup(dns.Close)
	e.DNS = dns

	e.CAFile = filepath.Join(dir, "ca.pem")
	caKey := filepath.Join(dir, "ca-key.pem")
	must(tb, certs.InitCA(e.CAFile, caKey, certs.InitOptions{}))
	e.CAPEM, err = os.ReadFile(e.CAFile)
	must(tb, err)

	priv, pub, err := identity.GenerateKeyPair("EdDSA")
	must(tb, err)
	e.SigningKey, e.SigningAlg = priv, "EdDSA"
	pubFile := filepath.Join(dir, "orchestrator.pub")
	must(tb, os.WriteFile(pubFile, pub, 0o644))

	e.PolicyDir = filepath.Join(dir, "policy")
	must(tb, os.MkdirAll(e.PolicyDir, 0o755))
	pol := o.Policy
	if pol == "" {
		pol = DefaultPolicy
	}
	must(tb, os.WriteFile(filepath.Join(e.PolicyDir, "policy.rego"), []byte(pol), 0o644))

	e.opts = o
	scfg := store.EmbeddedConfig{Path: filepath.Join(dir, "grants.db"), KeyFile: filepath.Join(dir, "grants.key"), LockTimeout: store.DefaultLockTimeout}
	storeCfg := sidecar.StoreConfig{Backend: sidecar.BackendEmbedded, Embedded: scfg}
	if o.Vault != nil {
		storeCfg = e.vaultStoreConfig(tb, o.Vault, o.Transit)
	}
	e.Store, err = sidecar.OpenStore(context.Background(), storeCfg, zap.NewNop())
	must(tb, err)
	tb.Cleanup(func() { e.Store.Close() })
	if o.Provider != nil && !o.NoGrant {
		tok, err := o.Provider.IssueGrant(ProviderClientID, User, []string{"chat:write"})
		must(tb, err)
		e.Token, e.RefreshToken = tok.AccessToken, tok.RefreshToken
		e.putGrant(tb, User, tok.AccessToken, tok.RefreshToken, tok.Expiry)
	} else if !o.NoGrant {
		e.PutGrant(tb, User, CanaryToken, time.Now().Add(time.Hour))
	}

	e.AuditPath = filepath.Join(dir, "audit.log")
	cfg := sidecar.DefaultConfig()
	cfg.Proxy.Listen = "127.0.0.1:0"
	cfg.Proxy.ConnectURL = "https://connect.test"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.CA.Cert, cfg.CA.Key = e.CAFile, caKey
	cfg.Identity.Audience = Audience
	cfg.Identity.Issuers = []string{Issuer}
	cfg.Identity.Keys = []identity.KeyConfig{{ID: "orchestrator", File: pubFile}}
	cfg.Routes = []injector.RouteConfig{{Name: "chat-api", Host: APIHost, Port: up.Port(), Provider: Provider}}
	cfg.Policy.Paths = []string{e.PolicyDir}
	// The race detector and parallel test processes slow evaluation far
	// beyond production; a policy timeout here would be a false denial.
	cfg.Policy.Timeout = 2 * time.Second
	cfg.Store = storeCfg
	if o.Provider != nil {
		secretFile := filepath.Join(dir, "client-secret")
		must(tb, os.WriteFile(secretFile, []byte(ProviderClientSecret), 0o600))
		pc := oauth.DefaultProviderConfig()
		pc.TokenURL = o.Provider.TokenURL()
		pc.RevocationURL = o.Provider.RevokeURL()
		pc.UserinfoURL = o.Provider.UserinfoURL()
		pc.ClientID = ProviderClientID
		pc.ClientSecretFile = secretFile
		pc.AuthStyle = oauth.AuthStyleHeader
		pc.Scopes = []string{"chat:write"}
		cfg.Providers = map[string]oauth.ProviderConfig{Provider: pc}
	}
	cfg.Egress.Allow = []string{"127.0.0.1/32"}
	cfg.Audit.Sink = audit.SinkFile
	cfg.Audit.File.Path = e.AuditPath
	cfg.Audit.FingerprintKeyFile = filepath.Join(dir, "fingerprint.key")
	// Each replica has a journal of its own (AddSidecar numbers them).
	cfg.Refresh.Journal = sidecar.JournalConfig{Dir: filepath.Join(dir, "journal"), KeyFile: filepath.Join(dir, "journal.key")}
	cfg.Log.Level = "debug"
	if o.Config != nil {
		o.Config(&cfg)
	}
	e.Config = cfg

	e.roots = up.CertPool().Clone()
	for _, pem := range o.TrustPEM {
		e.roots.AppendCertsFromPEM(pem)
	}
	if o.Provider != nil {
		e.roots.AppendCertsFromPEM(o.Provider.CACertPEM())
	}
	e.Sidecar = e.startSidecar(tb, cfg, e.Store)
	return e
}

// startSidecar starts a sidecar with cfg on st (wrapped by
// Options.WrapStore) and stops it when tb ends.
func (e *Env) startSidecar(tb testing.TB, cfg sidecar.Config, st store.Store) *sidecar.Sidecar {
	tb.Helper()
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(e.logs), zap.DebugLevel))
	if e.opts.WrapStore != nil {
		st = e.opts.WrapStore(st)
	}
	sc, err := sidecar.New(context.Background(), cfg, sidecar.Options{
		Logger: logger, RootCAs: e.roots, Store: st, Version: "test",
		Resolver: e.DNS.Resolver(), Dial: e.opts.Dial,
	})
	must(tb, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("sidecar run: %v", err)
		}
	})
	return sc
}

// AddSidecar starts another replica: the same configuration (its own
// listeners, caches, audit file and store handle) on the same grant store.
func (e *Env) AddSidecar(tb testing.TB) *sidecar.Sidecar {
	tb.Helper()
	e.extra++
	cfg := e.Config
	cfg.Audit.File.Path = fmt.Sprintf("%s.%d", e.AuditPath, e.extra)
	cfg.Refresh.Journal.Dir = fmt.Sprintf("%s.%d", e.Config.Refresh.Journal.Dir, e.extra)
	st, err := sidecar.OpenStore(context.Background(), cfg.Store, zap.NewNop())
	must(tb, err)
	tb.Cleanup(func() { st.Close() })
	return e.startSidecar(tb, cfg, st)
}

// ClientFor is an agent client for another sidecar replica.
func (e *Env) ClientFor(sc *sidecar.Sidecar) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               http.ProxyURL(&url.URL{Scheme: "http", Host: sc.ProxyAddr()}),
			TLSClientConfig:     &tls.Config{RootCAs: e.CAPool()},
			MaxIdleConnsPerHost: 64,
		},
	}
}

// vaultStoreConfig points a Vault store at v with a token file holding the
// root token, enabling Transit with a derived key when asked.
func (e *Env) vaultStoreConfig(tb testing.TB, v *vaulttest.Server, transit bool) sidecar.StoreConfig {
	tb.Helper()
	tokenFile := filepath.Join(e.Dir, "vault-token")
	must(tb, os.WriteFile(tokenFile, []byte(v.RootToken()), 0o600))
	vc := vault.DefaultConfig()
	vc.Address = v.Addr()
	ns := newDecisionNS()
	vc.Prefix = "onbehalf-" + ns // one namespace per environment
	vc.Auth.Method = vault.AuthToken
	vc.Auth.TokenFile = tokenFile
	if transit {
		key := "grants-" + ns
		must(tb, v.EnableTransit(key))
		vc.Transit.Enabled = true
		vc.Transit.Key = key
	}
	return sidecar.StoreConfig{Backend: sidecar.BackendVault, Vault: vc}
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// PutGrant stores (or replaces) user's grant with access token tok.
func (e *Env) PutGrant(tb testing.TB, user, tok string, expiry time.Time) {
	tb.Helper()
	e.putGrant(tb, user, tok, CanaryRefresh, expiry)
}

// SetExpiry moves user's stored access-token expiry.
func (e *Env) SetExpiry(tb testing.TB, user string, expiry time.Time) {
	tb.Helper()
	g, ver, err := e.Store.Get(context.Background(), Provider, user)
	must(tb, err)
	g.Expiry = expiry
	_, err = e.Store.Put(context.Background(), g, ver)
	must(tb, err)
}

func (e *Env) putGrant(tb testing.TB, user, tok, refresh string, expiry time.Time) {
	tb.Helper()
	g := &store.Grant{
		Provider: Provider, User: user, AccessToken: tok, RefreshToken: refresh,
		TokenType: "Bearer", Expiry: expiry, Scopes: []string{"chat:write"},
		Status: store.StatusActive, ConnectedAt: time.Now().UTC(), Generation: 1,
	}
	old, ver, err := e.Store.Get(context.Background(), Provider, user)
	if err == nil {
		g.Generation = old.Generation + 1
	}
	if _, err := e.Store.Put(context.Background(), g, ver); err != nil {
		tb.Fatal(err)
	}
}

// Assert mints an assertion for user with the environment's key; extra
// options edit the MintOptions.
func (e *Env) Assert(tb testing.TB, user string, edit ...func(*identity.MintOptions)) string {
	tb.Helper()
	o := identity.MintOptions{Issuer: Issuer, Audience: Audience, Subject: user, Agent: Agent, TTL: 5 * time.Minute, Algorithm: e.SigningAlg, KeyID: "orchestrator"}
	for _, f := range edit {
		f(&o)
	}
	tok, err := identity.Mint(e.SigningKey, o)
	must(tb, err)
	return tok
}

// ProxyURL is the sidecar's proxy URL.
func (e *Env) ProxyURL() *url.URL { return &url.URL{Scheme: "http", Host: e.Sidecar.ProxyAddr()} }

// CAPool holds the sidecar's CA.
func (e *Env) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(e.CAPEM)
	return p
}

// Client is an agent's client: proxied through the sidecar, trusting its
// CA, with keep-alive.
func (e *Env) Client() *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			Proxy:           http.ProxyURL(e.ProxyURL()),
			TLSClientConfig: &tls.Config{RootCAs: e.CAPool()},
		},
	}
}

// APIURL is https://APIHost:port + path.
func (e *Env) APIURL(path string) string { return e.Upstream.URL(APIHost, path) }

// Logs returns the sidecar's operational logs so far.
func (e *Env) Logs() []byte { return e.logs.Bytes() }

// AuditRecords reads the audit trail, its rotated files oldest first and
// then the active one (the sidecar writes one line per record, with
// durability "write" by default; a long run passes the 100 MB rotation
// size). Only complete lines are read: Linux does not make a read of a
// regular file atomic with a write to it, so a read while the sidecar
// appends a batch can end inside a record, and a line without its newline
// is still being written.
func (e *Env) AuditRecords(tb testing.TB) []map[string]any {
	tb.Helper()
	b := e.auditTrail(tb)
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			tb.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// AuditRaw returns the audit trail's bytes, rotated files first.
func (e *Env) AuditRaw(tb testing.TB) []byte {
	tb.Helper()
	return e.auditTrail(tb)
}

// auditTrail returns the complete lines of the audit trail's files, oldest
// first. A rotation between listing the files and reading them renames
// one away: then it looks again.
func (e *Env) auditTrail(tb testing.TB) []byte {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		paths, err := audit.RotatedFiles(e.AuditPath)
		must(tb, err)
		var all []byte
		renamed := false
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if errors.Is(err, fs.ErrNotExist) && attempt < 3 {
				renamed = true
				break
			}
			must(tb, err)
			all = append(all, b[:bytes.LastIndexByte(b, '\n')+1]...)
		}
		if !renamed {
			return all
		}
	}
}

// WaitRecord waits for the request record for decisionID: the sidecar
// writes it after the response, so a fast client can look first.
func (e *Env) WaitRecord(tb testing.TB, decisionID string) map[string]any {
	tb.Helper()
	return e.WaitRequestRecord(tb, func(r map[string]any) bool { return r["decision_id"] == decisionID })
}

// WaitRequestRecord waits for a request record that satisfies match and
// returns the first one (see WaitRequestRecords).
func (e *Env) WaitRequestRecord(tb testing.TB, match func(map[string]any) bool) map[string]any {
	tb.Helper()
	var rec map[string]any
	e.WaitRequestRecords(tb, 1, func(r map[string]any) bool {
		ok := match(r)
		if ok && rec == nil {
			rec = r
		}
		return ok
	})
	return rec
}

// auditWait bounds how long a test waits for request records: they are
// written within milliseconds of the answer, but a loaded CI machine can
// hold the sidecar's last goroutines back for seconds.
const auditWait = 10 * time.Second

// WaitRequestRecords polls until at least n request records satisfy match,
// then returns every record in the audit trail. The sidecar writes a
// request's record after its answer, so a client can be done before the
// record is; a test that counts records must wait for them. It fails the
// test after auditWait.
func (e *Env) WaitRequestRecords(tb testing.TB, n int, match func(map[string]any) bool) []map[string]any {
	tb.Helper()
	got := 0
	return e.WaitAudit(tb, func(records []map[string]any) bool {
		got = 0
		for _, r := range records {
			if r["event"] == audit.EventRequest && match(r) {
				got++
			}
		}
		return got >= n
	}, func() string { return fmt.Sprintf("%d matching request records; want %d", got, n) })
}

// WaitAudit polls the audit trail until done holds for its records and
// returns them; after auditWait it fails the test with what's message.
func (e *Env) WaitAudit(tb testing.TB, done func([]map[string]any) bool, what func() string) []map[string]any {
	tb.Helper()
	deadline := time.Now().Add(auditWait)
	for {
		records := e.AuditRecords(tb)
		if done(records) {
			return records
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", auditWait, what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a concurrency-safe bytes.Buffer for captured logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// DialTLSThroughProxy opens a CONNECT tunnel to target through the sidecar
// and completes a TLS handshake with serverName (may differ from target to
// test SNI binding). proxyAuth, when set, is sent as Proxy-Authorization.
func (e *Env) DialTLSThroughProxy(target, serverName, proxyAuth string) (*tls.Conn, *http.Response, error) {
	c, resp, err := e.Connect(target, proxyAuth)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, resp, err
	}
	tc := tls.Client(c, &tls.Config{RootCAs: e.CAPool(), ServerName: serverName, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, resp, err
	}
	return tc, resp, nil
}

// Connect sends CONNECT target over a new connection to the proxy and
// returns the connection and the proxy's answer.
func (e *Env) Connect(target, proxyAuth string) (net.Conn, *http.Response, error) {
	c, err := net.DialTimeout("tcp", e.Sidecar.ProxyAddr(), 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if proxyAuth != "" {
		req += "Proxy-Authorization: Bearer " + proxyAuth + "\r\n"
	}
	if _, err := c.Write([]byte(req + "\r\n")); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if br.Buffered() > 0 && resp.StatusCode == http.StatusOK {
		c.Close()
		return nil, resp, fmt.Errorf("proxy sent %d unexpected bytes after 200", br.Buffered())
	}
	_ = c.SetDeadline(time.Time{})
	return c, resp, nil
}

// StartProvider starts a real OAuth server with the sidecar's client
// registered; it stops when tb ends.
func StartProvider(tb testing.TB, o oauthtest.Options) *oauthtest.Server {
	tb.Helper()
	o.Clients = append(o.Clients, oauthtest.Client{
		ID: ProviderClientID, Secret: ProviderClientSecret,
		RedirectURIs: []string{"http://127.0.0.1/callback"}, Scopes: []string{"chat:write", "chat:read"},
	})
	p, err := oauthtest.Start(o)
	must(tb, err)
	tb.Cleanup(p.Close)
	return p
}

// newDecisionNS returns a random name for per-environment namespaces in a
// shared Vault.
func newDecisionNS() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IssueGrant has Options.Provider issue user a real grant and stores it.
func (e *Env) IssueGrant(tb testing.TB, user string) {
	tb.Helper()
	tok, err := e.opts.Provider.IssueGrant(ProviderClientID, user, []string{"chat:write"})
	must(tb, err)
	e.putGrant(tb, user, tok.AccessToken, tok.RefreshToken, tok.Expiry)
}

// TrySetExpiry is SetExpiry for goroutines other than the test's: it
// retries when the sidecar wrote the grant in between, and returns errors
// instead of failing the test.
func (e *Env) TrySetExpiry(user string, expiry time.Time) error {
	var err error
	for range 5 {
		var g *store.Grant
		var ver store.Version
		g, ver, err = e.Store.Get(context.Background(), Provider, user)
		if err != nil {
			return err
		}
		g.Expiry = expiry
		if _, err = e.Store.Put(context.Background(), g, ver); err == nil || !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return err
}
