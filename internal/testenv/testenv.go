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
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
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
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/dnstest"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/upstreamtest"
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
	// Policy replaces DefaultPolicy.
	Policy string
	// NoGrant leaves alice without a stored grant.
	NoGrant bool
	// WrapStore wraps the embedded store the sidecar uses (to count or
	// fail calls in a test).
	WrapStore func(store.Store) store.Store
}

// Env is a running environment.
type Env struct {
	Dir        string
	Upstream   *upstreamtest.Server
	DNS        *dnstest.Server
	Sidecar    *sidecar.Sidecar
	Config     sidecar.Config
	Store      *store.Embedded
	CAPEM      []byte
	CAFile     string
	SigningKey any
	SigningAlg string
	AuditPath  string
	PolicyDir  string

	logs *syncBuffer
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

	scfg := store.EmbeddedConfig{Path: filepath.Join(dir, "grants.db"), KeyFile: filepath.Join(dir, "grants.key"), LockTimeout: store.DefaultLockTimeout}
	e.Store, err = store.OpenEmbedded(scfg)
	must(tb, err)
	tb.Cleanup(func() { e.Store.Close() })
	if !o.NoGrant {
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
	cfg.Store.Embedded = scfg
	cfg.Egress.Allow = []string{"127.0.0.1/32"}
	cfg.Audit.Sink = audit.SinkFile
	cfg.Audit.File.Path = e.AuditPath
	cfg.Audit.FingerprintKeyFile = filepath.Join(dir, "fingerprint.key")
	cfg.Log.Level = "debug"
	if o.Config != nil {
		o.Config(&cfg)
	}
	e.Config = cfg

	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(e.logs), zap.DebugLevel))
	var st store.Store = e.Store
	if o.WrapStore != nil {
		st = o.WrapStore(st)
	}
	sc, err := sidecar.New(context.Background(), cfg, sidecar.Options{
		Logger: logger, RootCAs: up.CertPool(), Store: st, Version: "test",
		Resolver: dns.Resolver(), Dial: o.Dial,
	})
	must(tb, err)
	e.Sidecar = sc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("sidecar run: %v", err)
		}
	})
	return e
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
	g := &store.Grant{
		Provider: Provider, User: user, AccessToken: tok, RefreshToken: CanaryRefresh,
		TokenType: "Bearer", Expiry: expiry, Scopes: []string{"chat:write"},
		Status: store.StatusActive, ConnectedAt: time.Now().UTC(), Generation: 1,
	}
	_, ver, err := e.Store.Get(context.Background(), Provider, user)
	if err == nil {
		g.Generation = 2
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

// AuditRecords reads the audit file (the sidecar writes one line per
// record, with durability "write" by default).
func (e *Env) AuditRecords(tb testing.TB) []map[string]any {
	tb.Helper()
	b, err := os.ReadFile(e.AuditPath)
	must(tb, err)
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

// AuditRaw returns the audit file's bytes.
func (e *Env) AuditRaw(tb testing.TB) []byte {
	b, err := os.ReadFile(e.AuditPath)
	must(tb, err)
	return b
}

// RecordFor returns the request record with the given decision id.
func (e *Env) RecordFor(tb testing.TB, decisionID string) map[string]any {
	tb.Helper()
	for _, r := range e.AuditRecords(tb) {
		if r["event"] == audit.EventRequest && r["decision_id"] == decisionID {
			return r
		}
	}
	tb.Fatalf("no audit request record with decision_id %q", decisionID)
	return nil
}

// WaitRecord polls until the request record for decisionID is written: the
// sidecar writes it after the response, so a fast client can look first.
func (e *Env) WaitRecord(tb testing.TB, decisionID string) map[string]any {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range e.AuditRecords(tb) {
			if r["event"] == audit.EventRequest && r["decision_id"] == decisionID {
				return r
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatalf("no audit request record with decision_id %q after 5s", decisionID)
	return nil
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
