// Package demo is `onbehalf demo`: a self-contained, end-to-end run of the
// whole story on loopback, with no set-up. A local OAuth provider issues a
// real grant for alice, the grant is stored in the embedded store, a local
// TLS API stands in for an app, the sidecar runs in-process, and an agent
// calls the API through it. Every step checks what actually happened and
// the run fails if any step did not behave.
package demo

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/proxy/certs"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Names used throughout the demo.
const (
	user      = "alice"
	agent     = "agent-7"
	provider  = "demo-chat"
	clientID  = "onbehalf-demo"
	issuer    = "https://orchestrator.demo.localhost"
	audience  = "onbehalf-demo-sidecar"
	apiHost   = "localhost"
	agentFake = "Bearer token-the-agent-made-up"
)

// cacheTTL is the demo sidecar's token cache bound: how long a revoked
// grant may still be injected (production default: 10s).
const cacheTTL = time.Second

// requestTimeout bounds each agent request in the demo.
const requestTimeout = 10 * time.Second

// policy is the demo's Rego: the agent may read and post messages for the
// user, but never delete anything.
const policy = `package onbehalf.authz

# The demo policy: an identified user's agent may use the demo chat API,
# except for deleting anything.

default decision := {"allow": false, "reason": "no rule allowed this request"}

decision := {"allow": true, "reason": "agent acts for an identified user"} if {
	input.subject.user != ""
	input.route.provider == "demo-chat"
	input.attributes.request.http.method != "DELETE"
}

decision := {"allow": false, "reason": "agents may not delete"} if {
	input.attributes.request.http.method == "DELETE"
}
`

// Options tune a run.
type Options struct {
	// Dir keeps the demo's files (CA, keys, store, audit log); empty means a
	// temporary directory removed afterwards.
	Dir string
	// Verbose sends the sidecar's operational logs to the output too.
	Verbose bool
}

// Run runs the demo, printing what happens to out. It returns an error when
// any step did not behave as expected.
func Run(ctx context.Context, out io.Writer, o Options) (err error) {
	r := &runner{out: out}
	dir := o.Dir
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	} else {
		if dir, err = os.MkdirTemp("", "onbehalf-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	r.say("onbehalf demo — everything runs on this machine, on loopback.\n")

	files, err := writeFiles(dir)
	if err != nil {
		return err
	}
	// The app's sign-in service and the app itself, on TLS certificates
	// from a demo CA the sidecar is told to trust (as
	// proxy.upstream.ca_file would in a real deployment).
	appCert, appRoots, err := appCertificate(files)
	if err != nil {
		return fmt.Errorf("demo app certificate: %w", err)
	}
	prov, err := startAuthServer(appCert, clientID, clientSecret, "https://localhost/callback")
	if err != nil {
		return fmt.Errorf("start demo OAuth provider: %w", err)
	}
	defer prov.Close()
	api, err := startChatAPI(appCert, prov)
	if err != nil {
		return fmt.Errorf("start demo API: %w", err)
	}
	defer api.Close()
	r.step("a local OAuth provider and a TLS chat API are running", true,
		"provider %s, API https://%s:%d", prov.URL(), apiHost, api.Port())

	// Alice connects the app once: a real authorization-code + PKCE grant.
	// The client stands in for the connect server, so it is built the same
	// way (package outbound), trusting the demo CA only.
	ao := outbound.DefaultOptions()
	ao.Roots = appRoots
	ao.HTTP2 = false
	ao.Timeout = requestTimeout
	ao.CheckRedirect = outbound.FollowRedirects(outbound.DefaultMaxRedirects)
	appClient, err := outbound.Client(ao)
	if err != nil {
		return fmt.Errorf("demo app client: %w", err)
	}
	defer appClient.CloseIdleConnections()
	tok, err := prov.IssueGrant(ctx, appClient, user, []string{"chat:read", "chat:write"})
	if err != nil {
		return fmt.Errorf("issue alice's grant: %w", err)
	}
	st, err := store.OpenEmbedded(store.EmbeddedConfig{Path: files.db, KeyFile: files.storeKey, LockTimeout: store.DefaultLockTimeout})
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Put(ctx, &store.Grant{
		Provider: provider, User: user, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		TokenType: "Bearer", Expiry: tok.Expiry, Scopes: []string{"chat:read", "chat:write"},
		Status: store.StatusActive, ConnectedAt: time.Now().UTC(), ProviderAccount: user, Generation: 1,
	}, 0); err != nil {
		return fmt.Errorf("store alice's grant: %w", err)
	}
	fp, err := audit.LoadFingerprinter(files.fingerprintKey)
	if err != nil {
		return err
	}
	r.step("alice connected the chat app; her grant is sealed in the embedded store", true,
		"the agent never sees it: token fingerprint %s", fp.Token(tok.AccessToken))

	// The sidecar.
	cfg := sidecarConfig(files, api.Port(), prov.TokenURL())
	logger := zap.NewNop()
	if o.Verbose {
		logger, _ = sidecar.NewLogger(sidecar.LogConfig{Level: "debug", Format: "console"})
	}
	sc, err := sidecar.New(ctx, cfg, sidecar.Options{Logger: logger, RootCAs: appRoots, Store: st, Version: "demo"})
	if err != nil {
		return fmt.Errorf("start sidecar: %w", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sc.Run(runCtx) }()
	running := true
	defer func() {
		if running {
			stop()
			<-done
		}
	}()
	r.step("the sidecar is listening", true, "proxy %s, admin %s", sc.ProxyAddr(), sc.AdminAddr())

	key, alg, err := identity.LoadSigningKey(files.orchestratorKey)
	if err != nil {
		return err
	}
	assertion, err := identity.Mint(key, identity.MintOptions{
		Issuer: issuer, Audience: audience, Subject: user, Agent: agent,
		TTL: 5 * time.Minute, Algorithm: alg,
	})
	if err != nil {
		return err
	}
	ag, err := newAgent(sc.ProxyAddr(), sc.CACertPEM())
	if err != nil {
		return err
	}
	endpoint := api.URL(apiHost, "/api/chat.postMessage")

	// 1. The agent acts as alice.
	resp, body := ag.do(ctx, http.MethodPost, endpoint, assertion, `{"channel":"general","text":"Good morning from alice's agent"}`)
	last := api.LastHeader()
	injected := last.Get("Authorization") == "Bearer "+tok.AccessToken
	clean := last.Get(identity.DefaultHeader) == "" && last.Get("Proxy-Authorization") == ""
	r.step("an agent request with alice's assertion arrives at the API with alice's own token", resp == 200 && injected && clean,
		"status %d, API says %s; the agent's own Authorization was replaced, the assertion removed", resp, strings.TrimSpace(body))

	// 2. Overnight alice's access token expired. The sidecar refreshes it
	// with her refresh token (the provider rotates it) and the agent
	// never notices.
	if err := expireGrant(ctx, st); err != nil {
		return err
	}
	if err := prov.ExpireAccessToken(tok.AccessToken); err != nil {
		return err
	}
	time.Sleep(cacheTTL) // let the sidecar's cached copy lapse
	resp, _ = ag.do(ctx, http.MethodPost, endpoint, assertion, `{"channel":"general","text":"still me, the next morning"}`)
	g, _, gerr := st.Get(ctx, provider, user)
	refreshed := gerr == nil && g.AccessToken != tok.AccessToken && g.RefreshToken != tok.RefreshToken && g.Generation == 2
	fresh := ""
	if gerr == nil {
		fresh = fp.Token(g.AccessToken)
	}
	r.step("alice's expired token is refreshed once, rotated, stored, and used", resp == 200 && refreshed && prov.Refreshes() == 1,
		"status %d; provider refreshes %d; new token fingerprint %s, grant generation %d", resp, prov.Refreshes(), fresh, generation(g))

	// 3. No assertion: refused before anything leaves.
	before := api.Received()
	resp, body = ag.do(ctx, http.MethodPost, endpoint, "", `{"text":"who am I?"}`)
	r.step("a request without an assertion is refused, and nothing reaches the API", resp == 401 && errorCode(body) == "identity_required" && api.Received() == before,
		"status %d %s", resp, errorCode(body))

	// 4. Policy says no.
	resp, body = ag.do(ctx, http.MethodDelete, api.URL(apiHost, "/api/chat.delete"), assertion, "")
	r.step("policy refuses a delete, before any grant is read", resp == 403 && errorCode(body) == "policy_denied" && api.Received() == before,
		"status %d %s: %s", resp, errorCode(body), errorMessage(body))

	// 5. A host with no route.
	code, why, cerr := ag.connectStatus(ctx, "https://unrouted.localhost/", assertion)
	if cerr != nil {
		why = cerr.Error()
	}
	r.step("a request to a host without a route is refused at CONNECT", code == 403 && why == "no_route",
		"CONNECT answered %d %s", code, why)

	// 6. Revocation in one move: the sidecar stops injecting within its
	// token cache bound.
	if err := st.Delete(ctx, provider, user); err != nil {
		return err
	}
	time.Sleep(cacheTTL)
	resp, body = ag.do(ctx, http.MethodPost, endpoint, assertion, `{"text":"still there?"}`)
	r.step(fmt.Sprintf("after alice's grant is revoked, the agent is told she must reconnect (within the %s token cache bound)", cacheTTL),
		resp == 401 && errorCode(body) == "grant_missing",
		"status %d %s, connect_url %s", resp, errorCode(body), connectURLOf(body))

	// Stop the sidecar so the audit trail is complete, then read it.
	stop()
	running = false
	if err := <-done; err != nil {
		return err
	}
	return r.auditSummary(files.auditLog, o.Dir == "")
}

type demoFiles struct {
	dir, caCert, caKey, appCACert, appCAKey, orchestratorKey, orchestratorPub, db, storeKey, auditLog, fingerprintKey, policyDir, clientSecret string
}

// clientSecret is the demo provider's client secret for the sidecar.
const clientSecret = "demo-client-secret-not-for-production"

// expireGrant moves alice's stored access token expiry into the past, as a
// night would.
func expireGrant(ctx context.Context, st store.Store) error {
	g, ver, err := st.Get(ctx, provider, user)
	if err != nil {
		return err
	}
	g.Expiry = time.Now().Add(-time.Minute)
	_, err = st.Put(ctx, g, ver)
	return err
}

func generation(g *store.Grant) int64 {
	if g == nil {
		return 0
	}
	return g.Generation
}

func writeFiles(dir string) (demoFiles, error) {
	f := demoFiles{
		dir:             dir,
		caCert:          filepath.Join(dir, "ca.pem"),
		caKey:           filepath.Join(dir, "ca-key.pem"),
		appCACert:       filepath.Join(dir, "app-ca.pem"),
		appCAKey:        filepath.Join(dir, "app-ca-key.pem"),
		orchestratorKey: filepath.Join(dir, "orchestrator.key"),
		orchestratorPub: filepath.Join(dir, "orchestrator.pub"),
		db:              filepath.Join(dir, "grants.db"),
		storeKey:        filepath.Join(dir, "grants.key"),
		auditLog:        filepath.Join(dir, "audit.log"),
		fingerprintKey:  filepath.Join(dir, "fingerprint.key"),
		policyDir:       filepath.Join(dir, "policy"),
		clientSecret:    filepath.Join(dir, "client-secret"),
	}
	if err := os.WriteFile(f.clientSecret, []byte(clientSecret), 0o600); err != nil {
		return f, err
	}
	if err := certs.InitCA(f.caCert, f.caKey, certs.InitOptions{CommonName: "onbehalf demo CA", Force: true}); err != nil {
		return f, err
	}
	priv, pub, err := identity.GenerateKeyPair("EdDSA")
	if err != nil {
		return f, err
	}
	privPEM, err := identity.MarshalPrivateKeyPEM(priv)
	if err != nil {
		return f, err
	}
	if err := os.WriteFile(f.orchestratorKey, privPEM, 0o600); err != nil {
		return f, err
	}
	if err := os.WriteFile(f.orchestratorPub, pub, 0o644); err != nil {
		return f, err
	}
	if err := os.MkdirAll(f.policyDir, 0o755); err != nil {
		return f, err
	}
	if err := os.WriteFile(filepath.Join(f.policyDir, "demo.rego"), []byte(policy), 0o644); err != nil {
		return f, err
	}
	return f, nil
}

// appCertificate makes the demo apps' TLS certificate for localhost, signed
// by a demo CA of its own (the sidecar's interception CA code does the work),
// and returns the pool that trusts it.
func appCertificate(f demoFiles) (tls.Certificate, *x509.CertPool, error) {
	if err := certs.InitCA(f.appCACert, f.appCAKey, certs.InitOptions{CommonName: "onbehalf demo apps CA", Force: true}); err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err := certs.LoadCA(f.appCACert, f.appCAKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := certs.NewIssuer(ca, certs.IssuerOptions{}).Leaf(apiHost)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	return *leaf, roots, nil
}

func sidecarConfig(f demoFiles, apiPort int, tokenURL string) sidecar.Config {
	cfg := sidecar.DefaultConfig()
	cfg.Proxy.Listen = "127.0.0.1:0"
	cfg.Proxy.ConnectURL = "https://connect.demo.localhost"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.CA.Cert, cfg.CA.Key = f.caCert, f.caKey
	cfg.Identity.Audience = audience
	cfg.Identity.Issuers = []string{issuer}
	cfg.Identity.Keys = []identity.KeyConfig{{ID: "orchestrator", File: f.orchestratorPub}}
	cfg.Routes = []injector.RouteConfig{{Host: apiHost, Port: apiPort, Paths: []string{"/api/"}, Provider: provider}}
	cfg.Policy.Paths = []string{f.policyDir}
	cfg.TokenCache.TTL = cacheTTL
	pc := oauth.DefaultProviderConfig()
	pc.TokenURL = tokenURL
	pc.ClientID = clientID
	pc.ClientSecretFile = f.clientSecret
	pc.AuthStyle = oauth.AuthStyleHeader
	pc.Scopes = []string{"chat:read", "chat:write"}
	cfg.Providers = map[string]oauth.ProviderConfig{provider: pc}
	cfg.Store.Embedded = store.EmbeddedConfig{Path: f.db, KeyFile: f.storeKey, LockTimeout: store.DefaultLockTimeout}
	// The demo API is on loopback, which the egress guard refuses unless
	// told otherwise; a real deployment leaves this list empty.
	cfg.Egress.Allow = []string{"127.0.0.1/32", "::1/128"}
	cfg.Audit.Sink = audit.SinkFile
	cfg.Audit.File.Path = f.auditLog
	cfg.Audit.FingerprintKeyFile = f.fingerprintKey
	cfg.Log.Level = "warn"
	return cfg
}

// agentClient is what an agent does: route through the sidecar and trust its
// CA. It holds no secret, only the assertion it is handed per request.
type agentClient struct {
	client *http.Client
	proxy  *url.URL
	roots  *x509.CertPool
}

func newAgent(proxyAddr string, caPEM []byte) (*agentClient, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("demo: sidecar CA is not PEM")
	}
	pu := &url.URL{Scheme: "http", Host: proxyAddr}
	return &agentClient{
		proxy: pu,
		roots: roots,
		client: &http.Client{
			Timeout: requestTimeout,
			Transport: &http.Transport{
				Proxy:           http.ProxyURL(pu),
				TLSClientConfig: &tls.Config{RootCAs: roots},
			},
		},
	}, nil
}

func (a *agentClient) do(ctx context.Context, method, target, assertion, body string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, method, target, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", agentFake)
	req.Header.Set("Content-Type", "application/json")
	if assertion != "" {
		req.Header.Set(identity.DefaultHeader, assertion)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

// connectStatus returns the status the sidecar answered to the CONNECT for
// target and the code in its Onbehalf-Error header (the Go client reports a
// refused CONNECT as an error).
func (a *agentClient) connectStatus(ctx context.Context, target, assertion string) (int, string, error) {
	u, _ := url.Parse(target)
	tr := &http.Transport{
		Proxy:              http.ProxyURL(a.proxy),
		TLSClientConfig:    &tls.Config{RootCAs: a.roots},
		ProxyConnectHeader: http.Header{"Proxy-Authorization": {"Bearer " + assertion}},
		OnProxyConnectResponse: func(_ context.Context, _ *url.URL, _ *http.Request, resp *http.Response) error {
			return &connectStatusError{code: resp.StatusCode, why: resp.Header.Get("Onbehalf-Error")}
		},
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	_, err := (&http.Client{Transport: tr, Timeout: requestTimeout}).Do(req)
	var cs *connectStatusError
	if errors.As(err, &cs) {
		return cs.code, cs.why, nil
	}
	return 0, "", err
}

type connectStatusError struct {
	code int
	why  string
}

func (e *connectStatusError) Error() string { return fmt.Sprintf("CONNECT answered %d", e.code) }

func errorCode(body string) string    { return field(body, "error") }
func errorMessage(body string) string { return field(body, "message") }
func connectURLOf(body string) string { return field(body, "connect_url") }

func field(body, name string) string {
	var m map[string]any
	if json.Unmarshal([]byte(body), &m) != nil {
		return ""
	}
	s, _ := m[name].(string)
	return s
}

// runner prints steps and remembers failures.
type runner struct {
	out    io.Writer
	n      int
	failed []string
}

func (r *runner) say(format string, args ...any) { fmt.Fprintf(r.out, format, args...) }

func (r *runner) step(what string, ok bool, format string, args ...any) {
	r.n++
	mark := "ok  "
	if !ok {
		mark = "FAIL"
		r.failed = append(r.failed, what)
	}
	fmt.Fprintf(r.out, "%s %d. %s\n        %s\n", mark, r.n, what, fmt.Sprintf(format, args...))
}

// auditSummary prints the audit trail, checks its hash chain and that every
// request record names alice, and reports the run's outcome.
func (r *runner) auditSummary(path string, temporary bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	where := path
	if temporary {
		where += ", in a temporary directory removed when the demo ends: run with --dir DIR to keep it"
	}
	r.say("\nThe audit trail (%s), one record per request, each naming the human:\n", where)
	var recs []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("audit record is not JSON: %w", err)
		}
		recs = append(recs, rec)
	}
	// Records are written when requests end, and a refusal's record can
	// overtake the record of a request that started earlier: list them in
	// the order the requests started, as the steps above ran.
	started := func(rec map[string]any) time.Time {
		s, _ := rec["time"].(string)
		t, _ := time.Parse(time.RFC3339Nano, s)
		return t
	}
	slices.SortStableFunc(recs, func(a, b map[string]any) int { return started(a).Compare(started(b)) })
	var named, requests int
	for _, rec := range recs {
		ev, _ := rec["event"].(string)
		if ev == audit.EventRefresh {
			extra, _ := rec["extra"].(map[string]any)
			r.say("  %-10s user=%-6v provider=%v outcome=%v rotated=%v generation=%v\n", ev, rec["user"], rec["provider"], extra["outcome"], extra["rotated"], rec["grant_generation"])
			continue
		}
		if ev != audit.EventRequest {
			continue
		}
		requests++
		if rec["user"] == user {
			named++
		}
		r.say("  %-10s user=%-6v agent=%-8v %-6v %-22v decision=%-5v status=%v %v\n",
			ev, orDash(rec["user"]), orDash(rec["agent"]), rec["method"], rec["host"], rec["decision"], rec["status"], orDash(rec["error_code"]))
	}
	if err := sc.Err(); err != nil {
		return err
	}
	rep, err := audit.Verify([]string{path})
	detail := fmt.Sprintf("%d records, seq %d..%d", rep.Records, rep.FirstSeq, rep.LastSeq)
	if err != nil {
		detail = err.Error()
	}
	r.step("the audit trail's hash chain verifies", err == nil && rep.Broken == nil, "%s", detail)
	// The unauthenticated request cannot name a user; every other one must.
	r.step("every identified request's record names alice", requests >= 6 && named >= requests-1,
		"%d request records, %d name alice", requests, named)
	if len(r.failed) > 0 {
		return fmt.Errorf("demo: %d step(s) did not behave: %s", len(r.failed), strings.Join(r.failed, "; "))
	}
	r.say("\nAll %d steps behaved as expected.\n", r.n)
	return nil
}

func orDash(v any) any {
	if v == nil || v == "" {
		return "-"
	}
	return v
}
