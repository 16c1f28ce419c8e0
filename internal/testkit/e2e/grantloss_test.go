//go:build integration

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/injector/vault"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
	"github.com/onbehalf-dev/onbehalf/proxy/certs"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// The fault tests of docs/security.md invariant 13: three `onbehalf serve`
// processes share one grant store (a real Vault that is killed and
// restarted, or one embedded store file whose lock is held) and refresh
// against the rotating test provider with reuse detection. Each case runs
// several times with different fault timings; every run checks that the
// provider detected no reuse, that the grant is usable on every replica
// once the fault ends, and that every request that reached the upstream
// carried a credential the provider issued for the user.

// Timing of the fault tests: short leases and timeouts so that a run takes
// seconds, with takeoverAfter far beyond every fault a run injects.
const (
	faultLeaseTTL      = time.Second
	faultTakeoverAfter = 20 * time.Second
	faultAnswer        = 30 * time.Second
	faultProviderWait  = time.Second // the providers' timeout
	faultClientTimeout = 3 * time.Second
	// faultTriggerTimeout bounds the request that starts a refresh. With
	// the store down it is answered after the journal and the immediate
	// store-write attempts (three lock timeouts and their back-off on the
	// embedded store, about 2 s): what the test checks is that it gets the
	// new token, not how fast, and on a loaded CI machine that took over
	// faultClientTimeout once.
	faultTriggerTimeout = 10 * time.Second
	faultRecoverWithin  = 15 * time.Second
	faultLoadInterval   = 40 * time.Millisecond
)

// faultEnv is a running fault-test world.
type faultEnv struct {
	t       *testing.T
	name    string
	dir     string
	prov    *oauthtest.Server
	up      *upstreamtest.Server
	vault   *vaulttest.Server  // nil with the embedded store
	cluster *vaulttest.Cluster // set with backendVaultHA
	vlogs   []*lockedBuffer    // the cluster nodes' output
	// cacheTTL is the sidecars' token cache bound (0: every request
	// reads the store).
	cacheTTL time.Duration
	// unavailable counts the 503 store_unavailable answers the HA runs
	// measured.
	unavailable int
	dbPath      string         // the embedded store's file
	st          store.Store    // the test's own handle on the store
	key         any            // the orchestrator's signing key
	roots       *x509.CertPool // trusts the sidecars' interception CA
	nodes       []*node
	summary     []string
}

// node is one sidecar process.
type node struct {
	i          int
	cfg        string
	proxyPort  int
	adminPort  int
	journalDir string
	cmd        *exec.Cmd
	logs       *lockedBuffer
	client     *http.Client
	stopped    bool
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newFaultEnv starts the provider, the upstream, the store and three
// sidecar processes.
func newFaultEnv(t *testing.T, backend string) *faultEnv {
	t.Helper()
	return newFaultEnvCache(t, backend, 0)
}

// newFaultEnvCache is newFaultEnv with the sidecars' token cache bounded by
// cacheTTL instead of off.
func newFaultEnvCache(t *testing.T, backend string, cacheTTL time.Duration) *faultEnv {
	t.Helper()
	f := &faultEnv{t: t, name: backend, dir: t.TempDir(), cacheTTL: cacheTTL}
	f.prov = testenv.StartProvider(t, oauthtest.Options{})
	up, err := upstreamtest.Start(upstreamtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	f.up = up

	must(t, certs.InitCA(f.path("ca.pem"), f.path("ca-key.pem"), certs.InitOptions{}))
	caPEM, err := os.ReadFile(f.path("ca.pem"))
	must(t, err)
	priv, pub, err := identity.GenerateKeyPair("EdDSA")
	must(t, err)
	f.key = priv
	must(t, os.WriteFile(f.path("orch.pub"), pub, 0o644))
	// The sidecars trust the upstream's and the provider's CAs.
	must(t, os.WriteFile(f.path("upstream-ca.pem"), append(slices.Clone(up.CACertPEM()), f.prov.CACertPEM()...), 0o644))
	must(t, os.WriteFile(f.path("client-secret"), []byte(testenv.ProviderClientSecret), 0o600))
	must(t, os.MkdirAll(f.path("policy"), 0o755))
	must(t, os.WriteFile(f.path("policy", "policy.rego"), []byte(testenv.DefaultPolicy), 0o644))
	f.roots = x509.NewCertPool()
	f.roots.AppendCertsFromPEM(caPEM)

	storeYAML := ""
	switch backend {
	case sidecar.BackendVault:
		v, err := vaulttest.Start(vaulttest.Options{Persistent: true})
		if err != nil {
			t.Fatalf("start Vault: %v", err)
		}
		t.Cleanup(func() { v.Close() })
		f.vault = v
		must(t, os.WriteFile(f.path("vault-token"), []byte(v.RootToken()), 0o600))
		storeYAML = fmt.Sprintf("store:\n  backend: vault\n  vault:\n    address: %s\n    timeout: 2s\n    auth: {method: token, token_file: vault-token}\n", v.Addr())
		vc := vault.DefaultConfig()
		vc.Address, vc.Timeout = v.Addr(), 2*time.Second
		vc.Auth.Method, vc.Auth.TokenFile = vault.AuthToken, f.path("vault-token")
		f.st, err = sidecar.OpenStore(context.Background(), sidecar.StoreConfig{Backend: sidecar.BackendVault, Vault: vc}, zap.NewNop())
		must(t, err)
	case backendVaultHA:
		f.startCluster()
		addrs := f.cluster.Addrs()
		storeYAML = fmt.Sprintf("store:\n  backend: vault\n  vault:\n    addresses: [%s]\n    timeout: 2s\n    auth: {method: token, token_file: vault-token}\n", strings.Join(addrs, ", "))
		vc := vault.DefaultConfig()
		vc.Addresses, vc.Timeout = addrs, 2*time.Second
		vc.Auth.Method, vc.Auth.TokenFile = vault.AuthToken, f.path("vault-token")
		f.st, err = sidecar.OpenStore(context.Background(), sidecar.StoreConfig{Backend: sidecar.BackendVault, Vault: vc}, zap.NewNop())
		must(t, err)
	default:
		f.dbPath = f.path("grants.db")
		storeYAML = "store:\n  embedded: {path: grants.db, key_file: grants.key, lock_timeout: 500ms}\n"
		ec := store.EmbeddedConfig{Path: f.dbPath, KeyFile: f.path("grants.key"), LockTimeout: 2 * time.Second}
		f.st, err = store.OpenEmbedded(ec)
		must(t, err)
	}
	t.Cleanup(func() { f.st.Close() })

	tok, err := f.prov.IssueGrant(testenv.ProviderClientID, testenv.User, []string{"chat:write"})
	must(t, err)
	_, err = f.st.Put(context.Background(), &store.Grant{
		Provider: testenv.Provider, User: testenv.User, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		TokenType: "Bearer", Expiry: tok.Expiry, Scopes: []string{"chat:write"}, Status: store.StatusActive,
		ConnectedAt: time.Now(), IssuedAt: time.Now(), Generation: 1,
	}, 0)
	must(t, err)

	bin := onbehalfBin(t)
	for i := range 3 {
		n := &node{i: i, proxyPort: freePort(t), adminPort: freePort(t), journalDir: f.path(fmt.Sprintf("journal-%d", i)), logs: &lockedBuffer{}}
		n.cfg = f.path(fmt.Sprintf("onbehalf-%d.yaml", i))
		must(t, os.WriteFile(n.cfg, []byte(f.config(n, storeYAML)), 0o600))
		n.client = &http.Client{
			Timeout: faultClientTimeout,
			Transport: &http.Transport{
				Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", n.proxyPort)}),
				TLSClientConfig: &tls.Config{RootCAs: f.roots},
			},
		}
		f.nodes = append(f.nodes, n)
		f.start(n, bin)
	}
	t.Cleanup(func() {
		for _, n := range f.nodes {
			f.kill(n)
			if t.Failed() {
				t.Logf("sidecar %d output:\n%s", n.i, tail(n.logs.String(), 20000))
			}
		}
	})
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tail returns the end of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func (f *faultEnv) path(parts ...string) string {
	return filepath.Join(append([]string{f.dir}, parts...)...)
}

// config is node n's configuration file.
func (f *faultEnv) config(n *node, storeYAML string) string {
	return fmt.Sprintf(`proxy:
  listen: 127.0.0.1:%d
  connect_url: https://connect.test
  upstream: {ca_file: upstream-ca.pem}
admin: {listen: 127.0.0.1:%d}
ca: {cert: ca.pem, key: ca-key.pem}
identity:
  audience: %s
  issuers: [%s]
  keys: [{id: orch, file: orch.pub}]
token_cache: {ttl: %s}
routes:
  - host: localhost
    port: %d
    provider: %s
providers:
  %s:
    token_url: %s
    client_id: %s
    client_secret_file: client-secret
    auth_style: header
    scopes: [chat:write]
    timeout: %s
refresh:
  lease_ttl: %s
  takeover_after: %s
  answer_deadline: %s
  journal: {dir: %s, key_file: journal.key}
policy: {paths: [policy], timeout: 2s}
%segress: {allow: [127.0.0.1/32, "::1/128"]}
audit:
  sink: file
  file: {path: audit-%d.log}
  fingerprint_key_file: fingerprint.key
log: {level: debug}
`, n.proxyPort, n.adminPort, testenv.Audience, testenv.Issuer, f.cacheTTL, f.up.Port(), testenv.Provider, testenv.Provider,
		f.prov.TokenURL(), testenv.ProviderClientID, faultProviderWait, faultLeaseTTL, faultTakeoverAfter, faultAnswer,
		n.journalDir, storeYAML, n.i)
}

// start runs node n's process and waits until it answers /healthz.
func (f *faultEnv) start(n *node, bin string) {
	f.t.Helper()
	n.cmd = exec.Command(bin, "serve", "--config", n.cfg)
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	n.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	must(f.t, n.cmd.Start())
	n.stopped = false
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.adminPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("sidecar %d not healthy; output:\n%s", n.i, n.logs.String())
}

// kill sends SIGKILL to node n's process (also when stopped) and reaps it.
func (f *faultEnv) kill(n *node) {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// signal sends sig to node n's process.
func (f *faultEnv) signal(n *node, sig syscall.Signal) {
	f.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		f.t.Fatalf("signal %v to sidecar %d: %v", sig, n.i, err)
	}
	n.stopped = sig == syscall.SIGSTOP
}

// result is one request's outcome.
type result struct {
	node   int
	sent   time.Time
	at     time.Time
	status int
	code   string
}

// load sends requests as alice to the given nodes until stopped.
type load struct {
	f      *faultEnv
	mu     sync.Mutex
	res    []result
	active map[int]bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

func (f *faultEnv) startLoad() *load {
	l := &load{f: f, stop: make(chan struct{}), active: map[int]bool{}}
	assertion, err := identity.Mint(f.key, identity.MintOptions{Issuer: testenv.Issuer, Audience: testenv.Audience,
		Subject: testenv.User, Agent: testenv.Agent, TTL: 5 * time.Minute, Algorithm: "EdDSA", KeyID: "orch"})
	must(f.t, err)
	for _, n := range f.nodes {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-time.After(faultLoadInterval):
				}
				l.mu.Lock()
				on := l.active[n.i]
				l.mu.Unlock()
				if !on {
					continue
				}
				l.record(f.request(n, assertion, fmt.Sprintf("/api/fault/%d/%d", n.i, i)))
			}
		})
	}
	return l
}

// on turns the load on (or off) for nodes.
func (l *load) on(on bool, nodes ...*node) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range nodes {
		l.active[n.i] = on
	}
}

func (l *load) record(r result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res = append(l.res, r)
}

func (l *load) end() []result {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.res)
}

// firstOK returns the time of the first 200 on node after t0, or zero.
func (l *load) firstOK(node int, t0 time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.res {
		if r.node == node && r.status == 200 && r.at.After(t0) {
			return r.at
		}
	}
	return time.Time{}
}

// request sends one request through node n, with n's client.
func (f *faultEnv) request(n *node, assertion, path string) result {
	return f.requestWith(n, n.client, assertion, path)
}

// requestWith sends one request through node n with client.
func (f *faultEnv) requestWith(n *node, client *http.Client, assertion, path string) result {
	req, _ := http.NewRequest(http.MethodGet, f.up.URL("localhost", path), nil)
	req.Header.Set(identity.DefaultHeader, assertion)
	req.Header.Set("Authorization", "Bearer agent-invented") // must be replaced, never forwarded
	sent := time.Now()
	resp, err := client.Do(req)
	r := result{node: n.i, sent: sent, at: time.Now()}
	if err != nil {
		r.code = "client gave up" // faultClientTimeout, while the sidecar waits for a peer's refresh
		return r
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.status = resp.StatusCode
	if r.status != 200 {
		var e errorBody
		if jsonErr := json.Unmarshal(body, &e); jsonErr == nil {
			r.code = e.Error
		}
	}
	return r
}

// expire makes alice's access token expired in the store and at the
// provider, so the next request refreshes.
func (f *faultEnv) expire() *store.Grant {
	f.t.Helper()
	ctx := context.Background()
	g, v, err := f.st.Get(ctx, testenv.Provider, testenv.User)
	must(f.t, err)
	must(f.t, f.prov.ExpireAccessToken(g.AccessToken))
	g.Expiry = time.Now().Add(-time.Minute)
	_, err = f.st.Put(ctx, g, v)
	must(f.t, err)
	return g
}

// trigger sends one request through n in the background (it starts the
// refresh there) and returns its result's channel.
func (f *faultEnv) trigger(n *node) <-chan result {
	assertion, err := identity.Mint(f.key, identity.MintOptions{Issuer: testenv.Issuer, Audience: testenv.Audience,
		Subject: testenv.User, Agent: testenv.Agent, TTL: 5 * time.Minute, Algorithm: "EdDSA", KeyID: "orch"})
	must(f.t, err)
	client := *n.client // the same connections, a longer wait
	client.Timeout = faultTriggerTimeout
	ch := make(chan result, 1)
	go func() { ch <- f.requestWith(n, &client, assertion, "/api/fault/trigger") }()
	return ch
}

// lockStore holds the embedded store's file lock, as another process
// stuck in a transaction would, until the returned function is called.
func (f *faultEnv) lockStore() func() {
	db, err := bolt.Open(f.dbPath, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		f.t.Errorf("lock the store file: %v", err)
		return func() {}
	}
	return func() { db.Close() }
}

// storeDown makes the store unreachable (Vault killed, or the embedded
// file locked) and returns the function that brings it back.
func (f *faultEnv) storeDown() (up func()) {
	if f.vault != nil {
		f.vault.Stop()
		return func() {
			if err := f.vault.Restart(); err != nil {
				f.t.Errorf("restart Vault: %v", err)
			}
		}
	}
	return f.lockStore()
}

// run is one fault run: alice's token is expired, fault runs (it starts the
// refresh on node 0 and injects the fault; it returns when the fault has
// ended), then every node must answer 200 within faultRecoverWithin. The
// run's checks follow.
func (f *faultEnv) run(name string, fault func(t *testing.T, l *load) (recovered time.Time)) {
	f.t.Run(name, func(t *testing.T) {
		old := f.expire()
		before := f.prov.Stats()
		f.up.Reset()
		l := f.startLoad()
		defer func() {
			if l != nil {
				l.end() // the run ended early
			}
			if t.Failed() {
				f.heal()
			}
		}()
		recovered := fault(t, l)
		l.on(true, f.nodes...)
		deadline := recovered.Add(faultRecoverWithin)
		var firstOK time.Duration
		for _, n := range f.nodes {
			for l.firstOK(n.i, recovered).IsZero() {
				if time.Now().After(deadline) {
					t.Errorf("sidecar %d: no 200 within %s after the fault ended", n.i, faultRecoverWithin)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		for _, n := range f.nodes[1:] {
			if at := l.firstOK(n.i, recovered); !at.IsZero() && (firstOK == 0 || at.Sub(recovered) < firstOK) {
				firstOK = at.Sub(recovered)
			}
		}
		time.Sleep(200 * time.Millisecond) // a few more requests on every node
		res := l.end()
		l = nil
		after := f.prov.Stats()
		reuse := after.ReuseDetections - before.ReuseDetections
		refreshes := after.Refreshes - before.Refreshes

		if reuse != 0 {
			t.Errorf("the provider detected %d reuses of a refresh token; want 0", reuse)
		}
		g, _, err := f.st.Get(context.Background(), testenv.Provider, testenv.User)
		if err != nil || g.Status != store.StatusActive || g.Generation <= old.Generation || g.RefreshToken == old.RefreshToken {
			t.Errorf("stored grant after the run: %v, %v; want active, a newer generation, a rotated refresh token", g, err)
		}
		ok, gaveUp := 0, 0
		codes := map[string]int{}
		for _, r := range res {
			switch {
			case r.status == 200:
				ok++
			case r.status == 0:
				gaveUp++
				codes[r.code]++
			default:
				codes[fmt.Sprintf("%d %s", r.status, r.code)]++
			}
		}
		// Every request that reached the upstream carried a credential the
		// provider issued to alice, never the agent's own or none; requests
		// answered with an error reached nothing.
		forwarded := f.up.Requests()
		for _, r := range forwarded {
			bearer, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if user, issued := f.prov.IssuedTo(bearer); !found || !issued || user != testenv.User {
				t.Errorf("the upstream got a request with credential %q (issued to %q: %v); want one the provider issued to alice", redactTok(bearer), user, issued)
			}
		}
		trig := 0
		for _, r := range forwarded {
			if strings.HasSuffix(r.Path, "/trigger") {
				trig++
			}
		}
		// A request whose client gave up waiting may still be forwarded
		// once the token is there (with it); one answered with an error
		// never is.
		if n := len(forwarded) - trig; n < ok || n > ok+gaveUp {
			t.Errorf("upstream got %d load requests; clients got %d answers 200 and gave up on %d; want between %d and %d", n, ok, gaveUp, ok, ok+gaveUp)
		}
		line := fmt.Sprintf("%-8s %-44s reuse=%d refreshes=%d requests=%d ok=%d first-200-after-recovery=%s errors=%v",
			f.name, name, reuse, refreshes, len(res), ok, firstOK.Round(time.Millisecond), codes)
		f.summary = append(f.summary, line)
		t.Log(line)
		if reuse == 0 {
			f.waitJournalsEmpty(t)
		}
	})
}

// heal undoes what a failed run may have left behind, so the next run
// starts from a working world: the provider answering, every sidecar
// running, the store up.
func (f *faultEnv) heal() {
	f.prov.Resume()
	f.prov.OnRotate(nil)
	for _, n := range f.nodes {
		if n.cmd == nil {
			f.start(n, onbehalfBin(f.t))
		} else if n.stopped {
			f.signal(n, syscall.SIGCONT)
		}
	}
	if f.vault != nil {
		if err := f.vault.Restart(); err != nil {
			f.t.Errorf("restart Vault: %v", err)
		}
	}
	if f.cluster != nil {
		f.healCluster()
	}
}

// waitJournalsEmpty waits until no sidecar's journal holds an entry: every
// refreshed grant reached the store.
func (f *faultEnv) waitJournalsEmpty(t *testing.T) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for _, n := range f.nodes {
			des, _ := os.ReadDir(n.journalDir)
			for _, de := range des {
				if strings.HasSuffix(de.Name(), ".entry") {
					left = append(left, fmt.Sprintf("%d/%s", n.i, de.Name()))
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("journal entries left after the run: %v", left)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func redactTok(s string) string {
	if len(s) > 8 {
		return s[:8] + "…"
	}
	return s
}

// onRotate runs fn once, at the first rotation at the provider (before its
// answer is written), and returns a channel closed after fn.
func (f *faultEnv) onRotate(fn func()) <-chan struct{} {
	done := make(chan struct{})
	var once sync.Once
	f.prov.OnRotate(func(string) {
		once.Do(func() {
			fn()
			close(done)
		})
	})
	f.t.Cleanup(func() { f.prov.OnRotate(nil) })
	return done
}

// awaitFault waits for ch or fails the run after d.
func awaitFault[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s did not happen within %s", what, d)
	}
	var zero T
	return zero
}

// TestGrantSurvivesFaults runs the fault matrix on a real Vault and on the
// embedded store. See docs/security.md, invariant 13.
func TestGrantSurvivesFaults(t *testing.T) {
	for _, backend := range []string{sidecar.BackendVault, sidecar.BackendEmbedded} {
		t.Run(backend, func(t *testing.T) {
			f := newFaultEnv(t, backend)
			a, b, c := f.nodes[0], f.nodes[1], f.nodes[2]
			outages := []time.Duration{100 * time.Millisecond, 1500 * time.Millisecond, 5 * time.Second}
			if backend == sidecar.BackendEmbedded {
				outages = []time.Duration{100 * time.Millisecond, 3 * time.Second}
			}

			// (a) The store goes away the moment the provider rotated,
			// before the holder could write; the next requests land on the
			// other replicas. Then it comes back.
			for _, down := range outages {
				f.run(fmt.Sprintf("a/store down at rotation for %s", down), func(t *testing.T, l *load) time.Time {
					var bringBack func()
					rotated := f.onRotate(func() { bringBack = f.storeDown() })
					trig := f.trigger(a)
					awaitFault(t, rotated, 10*time.Second, "the rotation")
					if r := awaitFault(t, trig, 10*time.Second, "the holder's answer"); r.status != 200 {
						t.Errorf("holder's request with the store down: %d %s; want 200 with the journalled token", r.status, r.code)
					}
					l.on(true, b, c)
					time.Sleep(down)
					bringBack()
					return time.Now()
				})
			}

			// (b) The holder of the unsaved tokens is killed (kill -9)
			// while the store is down, and restarted once it is back (a
			// sidecar does not start without its store): at once, or after
			// its lease ran out.
			for _, late := range []time.Duration{0, 2 * faultLeaseTTL} {
				f.run(fmt.Sprintf("b/holder killed with unsaved tokens, back %s after the store", late), func(t *testing.T, l *load) time.Time {
					var bringBack func()
					rotated := f.onRotate(func() { bringBack = f.storeDown() })
					trig := f.trigger(a)
					awaitFault(t, rotated, 10*time.Second, "the rotation")
					if r := awaitFault(t, trig, 10*time.Second, "the holder's answer"); r.status != 200 {
						t.Errorf("holder's request with the store down: %d %s; want 200 with the journalled token", r.status, r.code)
					}
					f.kill(a) // the tokens are in its journal only
					l.on(true, b, c)
					time.Sleep(time.Second)
					bringBack()
					recovered := time.Now()
					time.Sleep(late)
					f.start(a, onbehalfBin(t))
					return recovered
				})
			}

			// (c) The token endpoint stalls longer than the refresh timeout
			// (and than several lease lifetimes), then answers.
			for _, stall := range []time.Duration{2 * time.Second, 5 * time.Second} {
				f.run(fmt.Sprintf("c/token endpoint stalled for %s", stall), func(t *testing.T, l *load) time.Time {
					f.prov.Stall()
					trig := f.trigger(a)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					must(t, f.prov.WaitStalled(ctx, 1))
					l.on(true, a, b, c)
					if r := awaitFault(t, trig, 10*time.Second, "the holder's answer"); r.status != 503 || r.code != "provider_unavailable" {
						t.Errorf("request during the stall: %d %s; want 503 provider_unavailable after the provider timeout", r.status, r.code)
					}
					time.Sleep(stall)
					f.prov.Resume()
					return time.Now()
				})
			}

			// (d) The lease holder is stopped (SIGSTOP) right after the
			// provider rotated, past its lease, then continued.
			pauses := []time.Duration{2500 * time.Millisecond, 5 * time.Second}
			if backend == sidecar.BackendEmbedded {
				pauses = pauses[:1]
			}
			for _, pause := range pauses {
				f.run(fmt.Sprintf("d/holder stopped for %s after the rotation", pause), func(t *testing.T, l *load) time.Time {
					rotated := f.onRotate(func() { f.signal(a, syscall.SIGSTOP) })
					f.trigger(a)
					awaitFault(t, rotated, 10*time.Second, "the rotation")
					l.on(true, b, c)
					time.Sleep(pause)
					f.signal(a, syscall.SIGCONT)
					return time.Now()
				})
			}
			for _, line := range f.summary {
				t.Log(line)
			}
		})
	}
}
