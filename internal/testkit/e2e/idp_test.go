//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/idptest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// The IdP world of the end-to-end tests: the agent's client at the IdP (the
// ID tokens' audience, which the sidecar exchanges with), and the notes
// app, whose authorization server accepts ID-JAGs and whose API is the
// recording upstream under another name.
const (
	idpAgentClient = "agent-app"
	idpAgentSecret = "agent-app-secret-for-e2e"
	notesClient    = "onbehalf-notes"
	notesSecret    = "notes-client-secret-for-e2e"
	notesProvider  = "notes"
	notesHost      = "api.notes.test"
	// notesGrantToken is alice's stored notes grant, for the fallback.
	notesGrantToken = "canary-notes-grant-token-5d2e81"
)

var notesScopes = []string{"notes.read", "notes.write"}

// idpEnv is a running sidecar with the orchestrator and an IdP as identity
// sources, the chat route on stored grants and the notes route on token
// exchange.
type idpEnv struct {
	*testenv.Env
	idp *idptest.IdP
	as  *idptest.AppAS
}

// idpOptions tune newIdPEnv.
type idpOptions struct {
	fallback   string   // the notes exchange's fallback; "" means refuse
	tokenTypes []string // the IdP's accepted typ values; nil means JWT and at+jwt
	notesGrant bool     // give alice a stored notes grant
	ttl        time.Duration
	// slowMachine allows the slow TLS handshakes of hundreds of
	// simultaneous tunnels (and as many upstream connections) under the
	// race detector on a shared machine.
	slowMachine bool
	// quiet logs at info instead of debug (benchmarks).
	quiet bool
}

func newIdPEnv(t testing.TB, o idpOptions) *idpEnv {
	t.Helper()
	idp, err := idptest.StartIdP(idptest.IdPOptions{Clients: []idptest.Client{{ID: idpAgentClient, Secret: idpAgentSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	as, err := idptest.StartAppAS(idptest.AppASOptions{IdP: idp, Clients: []idptest.AppClient{{ID: notesClient, Secret: notesSecret, Scopes: notesScopes}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Close)
	if err := idp.AllowApp(idpAgentClient, as.Issuer(), notesClient); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	idpCA := write("idp-ca.pem", idp.CACertPEM())
	notesSecretFile := write("notes-secret", []byte(notesSecret))
	agentSecretFile := write("agent-secret", []byte(idpAgentSecret))
	fallback := o.fallback
	if fallback == "" {
		fallback = oauth.FallbackRefuse
	}
	types := o.tokenTypes
	if types == nil {
		types = []string{identity.TypeJWT, identity.TypeAccessToken}
	}

	e := testenv.New(t, testenv.Options{
		Upstream: upstreamNames(testenv.APIHost, notesHost),
		DNS:      map[string][]netip.Addr{notesHost: {netip.MustParseAddr("127.0.0.1")}},
		TrustPEM: [][]byte{idp.CACertPEM(), as.CACertPEM()},
		Config: func(c *sidecar.Config) {
			ic := identity.DefaultIdPConfig()
			ic.Issuer = idp.Issuer()
			ic.Audiences = []string{idpAgentClient}
			ic.TokenTypes = types
			ic.CAFile = idpCA
			ic.AgentClaim = "azp"
			// Rotation is noticed within a second, not five minutes.
			ic.JWKSRefresh = time.Second
			c.Identity.IdPs = []identity.IdPConfig{ic}

			pc := oauth.DefaultProviderConfig()
			pc.TokenURL = as.TokenURL()
			pc.ClientID = notesClient
			pc.ClientSecretFile = notesSecretFile
			pc.AuthStyle = oauth.AuthStyleHeader
			pc.Scopes = notesScopes
			x := oauth.DefaultExchangeConfig()
			x.Issuer = idp.Issuer() // token endpoint from the discovery document
			x.ClientID = idpAgentClient
			x.ClientSecretFile = agentSecretFile
			x.AuthStyle = oauth.AuthStyleParams
			x.Audience = as.Issuer()
			x.Resource = "https://" + notesHost + "/"
			x.Fallback = fallback
			pc.Exchange = &x
			c.Providers = map[string]oauth.ProviderConfig{notesProvider: pc}
			port := c.Routes[0].Port
			c.Routes = append(c.Routes, injector.RouteConfig{Name: "notes-api", Host: notesHost, Port: port, Provider: notesProvider})
			if o.ttl != 0 {
				c.TokenCache.TTL = o.ttl
			}
			if o.quiet {
				c.Log.Level = "info"
			}
			if o.slowMachine {
				c.Proxy.Limits.HandshakeTimeout = time.Minute
				c.Proxy.Limits.ReadHeaderTimeout = time.Minute
				c.Proxy.Upstream.DialTimeout = time.Minute
				c.Proxy.Upstream.TLSHandshakeTimeout = time.Minute
			}
		},
	})
	if o.notesGrant {
		g := &store.Grant{
			Provider: notesProvider, User: testenv.User, AccessToken: notesGrantToken, RefreshToken: "canary-notes-refresh-7a1c",
			TokenType: "Bearer", Expiry: time.Now().Add(time.Hour), Scopes: notesScopes,
			Status: store.StatusActive, ConnectedAt: time.Now().UTC(), Generation: 1,
		}
		if _, err := e.Store.Put(context.Background(), g, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitIdPReady(t, e)
	return &idpEnv{Env: e, idp: idp, as: as}
}

// upstreamNames returns upstream options serving the given names and the
// loopback ones.
func upstreamNames(names ...string) upstreamtest.Options {
	return upstreamtest.Options{Names: append(names, "localhost", "127.0.0.1")}
}

// waitIdPReady waits for /readyz: the IdP's discovery document and keys
// are fetched at start.
func waitIdPReady(t testing.TB, e *testenv.Env) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + e.Sidecar.AdminAddr() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *idpEnv) notesURL(path string) string { return e.Upstream.URL(notesHost, path) }

// idToken mints alice's ID token for the agent's client.
func (e *idpEnv) idToken(t testing.TB, edit func(*idptest.TokenOptions)) string {
	t.Helper()
	o := idptest.TokenOptions{Audience: idpAgentClient, Claims: map[string]any{"azp": idpAgentClient, "email": "alice@example.com"}}
	if edit != nil {
		edit(&o)
	}
	tok, err := e.idp.IDToken(testenv.User, o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// jti returns a token's jti, read without verification.
func jti(t testing.TB, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		JTI string `json:"jti"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.JTI
}

// checkExchanged asserts that the upstream's last request carried exactly
// one bearer token that the notes app issued for alice, and neither the
// IdP token nor anything the agent must not pass on.
func (e *idpEnv) checkExchanged(t *testing.T, idTok, wantPath string) {
	t.Helper()
	reqs := e.Upstream.Requests()
	if len(reqs) == 0 {
		t.Fatal("nothing arrived upstream")
	}
	got := reqs[len(reqs)-1]
	if got.Path != wantPath || got.ServerName != notesHost {
		t.Errorf("upstream got %s (SNI %s); want %s on %s", got.Path, got.ServerName, wantPath, notesHost)
	}
	auth := got.Header.Values("Authorization")
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		t.Fatalf("upstream Authorization has %d values; want one bearer token", len(auth))
	}
	user, scopes, client, active := e.as.Introspect(context.Background(), strings.TrimPrefix(auth[0], "Bearer "))
	if !active || user != testenv.User || client != notesClient || strings.Join(scopes, " ") != strings.Join(notesScopes, " ") {
		t.Errorf("the injected token is not the notes app's token for alice: user %q scopes %v client %q active %v", user, scopes, client, active)
	}
	for name, vs := range got.Header {
		lower := strings.ToLower(name)
		if strings.HasPrefix(lower, "proxy-") || lower == "onbehalf-assertion" {
			t.Errorf("upstream received header %q", name)
		}
		for _, v := range vs {
			if strings.Contains(v, idTok) || strings.Contains(v, strings.Split(idTok, ".")[2]) {
				t.Errorf("upstream received the IdP token in %s", name)
			}
		}
	}
	if bytes.Contains(got.Body, []byte(strings.Split(idTok, ".")[2])) {
		t.Errorf("upstream received the IdP token in the body")
	}
}

// checkNoIdPToken greps the sidecar's logs and audit trail for the IdP
// token's signature and payload.
func (e *idpEnv) checkNoIdPToken(t *testing.T, toks ...string) {
	t.Helper()
	outputs := map[string][]byte{"logs": e.Logs(), "audit": e.AuditRaw(t)}
	for _, tok := range toks {
		parts := strings.Split(tok, ".")
		for name, out := range outputs {
			if bytes.Contains(out, []byte(parts[1])) || bytes.Contains(out, []byte(parts[2])) {
				t.Errorf("the IdP token appears in the %s", name)
			}
		}
	}
}

// waitPathRecord waits for the request record for path: the sidecar
// writes it after the response, so an agent can be done first.
func waitPathRecord(t *testing.T, e *testenv.Env, path string) map[string]any {
	t.Helper()
	return e.WaitRequestRecord(t, func(r map[string]any) bool { return r["path"] == path })
}

// runAgent runs an example agent and returns its output and whether it
// succeeded.
func runAgent(t *testing.T, env []string, dir string, cmd []string) (stdout, stderr string, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Env, c.Dir = env, dir
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	if err != nil && ctx.Err() != nil {
		t.Fatalf("%v: timed out", cmd)
	}
	return out.String(), errOut.String(), err == nil
}

// exampleAgents returns the example agents to run (the Go one built once).
func exampleAgents(t *testing.T) (dir string, agents map[string][]string) {
	t.Helper()
	root := repoRoot(t)
	dir = filepath.Join(root, "examples", "agents")
	if _, err := os.Stat(filepath.Join(dir, "node", "node_modules", "undici")); err != nil {
		t.Fatalf("the Node agent's dependencies are missing: run `make agents`: %v", err)
	}
	return dir, map[string][]string{
		"curl":            {filepath.Join(dir, "curl", "agent.sh")},
		"python-requests": {"/usr/bin/python3", filepath.Join(dir, "python", "agent.py")},
		"node-undici":     {"node", filepath.Join(dir, "node", "agent.mjs")},
	}
}

// TestIdPTokenExchange has real agents (curl, Python requests, Node undici)
// present alice's ID token from the IdP: the sidecar verifies it, exchanges
// it for an ID-JAG at the IdP and that for the notes app's token, and
// injects that token; the IdP token reaches neither the API nor a log.
func TestIdPTokenExchange(t *testing.T) {
	e := newIdPEnv(t, idpOptions{})
	dir, agents := exampleAgents(t)
	var presented []string
	for name, cmd := range agents {
		t.Run(name, func(t *testing.T) {
			e.Upstream.Reset()
			idTok := e.idToken(t, nil)
			presented = append(presented, idTok)
			path := "/v1/notes/" + name
			out, errOut, ok := runAgent(t, agentEnv(e.Env, idTok), dir, append(cmd, e.notesURL(path), `{"text":"from `+name+`"}`))
			if !ok {
				t.Fatalf("agent failed: %s %s", out, errOut)
			}
			e.checkExchanged(t, idTok, path)
			rec := waitPathRecord(t, e.Env, path)
			if rec["user"] != testenv.User || rec["agent"] != idpAgentClient || rec["issuer"] != e.idp.Issuer() ||
				rec["identity_source"] != "idp" || rec["identity_jti"] != jti(t, idTok) || rec["identity_fingerprint"] == nil ||
				rec["token_source"] != "exchange" || rec["grant_generation"] != nil || rec["decision"] != "allow" {
				t.Errorf("request record %v", rec)
			}
		})
	}
	// Go net/http presenting the IdP token once, on CONNECT
	// (Proxy-Authorization: Bearer): requests in the tunnel are alice's and
	// get the exchanged token.
	t.Run("go-net-http-connect", func(t *testing.T) {
		e.Upstream.Reset()
		idTok := e.idToken(t, nil)
		presented = append(presented, idTok)
		client := e.Client()
		defer client.CloseIdleConnections()
		client.Transport.(*http.Transport).ProxyConnectHeader = http.Header{"Proxy-Authorization": {"Bearer " + idTok}}
		resp, err := client.Post(e.notesURL("/v1/notes/connect"), "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		e.checkExchanged(t, idTok, "/v1/notes/connect")
		if rec := waitPathRecord(t, e.Env, "/v1/notes/connect"); rec["identity_jti"] != jti(t, idTok) || rec["token_source"] != "exchange" {
			t.Errorf("request record %v", rec)
		}
	})

	// The chat route still injects alice's stored grant for the same IdP
	// token: a provider without exchange ignores how the user was named.
	e.Upstream.Reset()
	req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/chat"), nil)
	req.Header.Set(identity.DefaultHeader, e.idToken(t, nil))
	resp, err := e.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat route: status %d", resp.StatusCode)
	}
	checkArrived(t, e.Env, "/api/chat")

	var exchanges []map[string]any
	for _, r := range e.AuditRecords(t) {
		if r["event"] == "exchange" {
			exchanges = append(exchanges, r)
		}
	}
	// The token cache bounds how often alice's token is exchanged: the
	// agents ran within its 10 seconds or just past them.
	if n := len(exchanges); n < 1 || n > 3 || exchanges[0]["extra"].(map[string]any)["outcome"] != "exchanged" {
		t.Errorf("exchange records %v; want one to three successful ones", exchanges)
	}
	if got := e.idp.Stats().Exchanges; got != int64(len(exchanges)) {
		t.Errorf("the IdP issued %d ID-JAGs; the audit trail records %d exchanges", got, len(exchanges))
	}
	e.checkNoIdPToken(t, presented...)
}

// TestIdPFallbackToGrant: with fallback grant, a request whose exchange
// gives no token (the app does not accept JWT bearer grants, or the
// identity is an orchestrator assertion) gets alice's stored notes grant,
// from each real agent.
func TestIdPFallbackToGrant(t *testing.T) {
	e := newIdPEnv(t, idpOptions{fallback: oauth.FallbackGrant, notesGrant: true})
	e.as.SetJWTBearer(false)
	dir, agents := exampleAgents(t)
	for name, assertion := range map[string]string{
		"app without exchange":   e.idToken(t, nil),
		"orchestrator assertion": e.Assert(t, testenv.User),
	} {
		for agent, cmd := range agents {
			t.Run(name+"/"+agent, func(t *testing.T) {
				e.Upstream.Reset()
				path := "/v1/notes/" + strings.ReplaceAll(name, " ", "-") + "/" + agent
				out, errOut, ok := runAgent(t, agentEnv(e.Env, assertion), dir, append(cmd, e.notesURL(path)))
				if !ok {
					t.Fatalf("agent failed: %s %s", out, errOut)
				}
				reqs := e.Upstream.Requests()
				if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer "+notesGrantToken {
					t.Fatalf("upstream did not get the stored grant's token")
				}
				if rec := waitPathRecord(t, e.Env, path); rec["token_source"] != "grant" || rec["grant_generation"] != 1.0 {
					t.Errorf("record %v; want token_source grant", rec)
				}
			})
		}
	}
	// Only the IdP token is ever exchanged, and nothing is cached from a
	// refused exchange.
	if s := e.as.Stats(); s.Refusals != int64(len(agents)) {
		t.Errorf("app refusals %d; want %d", s.Refusals, len(agents))
	}
}

// TestIdPExchangeRefused: without fallback, a refused exchange (the IdP's
// policy refuses alice) and a request without an IdP token are answered
// 403 exchange_denied, and nothing reaches the API.
func TestIdPExchangeRefused(t *testing.T) {
	e := newIdPEnv(t, idpOptions{notesGrant: true})
	e.idp.Deny(testenv.User, true)
	dir, agents := exampleAgents(t)
	idTok := e.idToken(t, nil)
	for name, assertion := range map[string]string{"idp policy refuses": idTok, "orchestrator assertion": e.Assert(t, testenv.User)} {
		for agent, cmd := range agents {
			t.Run(name+"/"+agent, func(t *testing.T) {
				e.Upstream.Reset()
				out, errOut, ok := runAgent(t, agentEnv(e.Env, assertion), dir, append(cmd, e.notesURL("/v1/notes")))
				if ok {
					t.Fatalf("agent succeeded: %s", out)
				}
				if !strings.Contains(out, `"error":"exchange_denied"`) {
					t.Errorf("agent output %q %q; want the exchange_denied body", out, errOut)
				}
				if agent != "curl" && !strings.Contains(errOut, "HTTP 403 exchange_denied") {
					t.Errorf("agent stderr %q; want HTTP 403 exchange_denied", errOut)
				}
				if n := len(e.Upstream.Requests()); n != 0 {
					t.Errorf("%d requests reached the API", n)
				}
			})
		}
	}
	// Request records are written after the answers: wait for all six.
	records := e.WaitRequestRecords(t, 2*len(agents), func(r map[string]any) bool { return r["path"] == "/v1/notes" })
	var refused int
	for _, r := range records {
		switch r["event"] {
		case "exchange":
			if x := r["extra"].(map[string]any); x["outcome"] != "refused" || x["step"] != "idp" || r["identity_jti"] != jti(t, idTok) {
				t.Errorf("exchange record %v", r)
			}
			refused++
		case "request":
			if r["path"] == "/v1/notes" && (r["error_code"] != "exchange_denied" || r["status"] != 403.0 || r["token_fingerprint"] != nil) {
				t.Errorf("request record %v", r)
			}
		}
	}
	// Refusals are not cached: each request asked the IdP again.
	if refused != len(agents) {
		t.Errorf("%d refused exchanges audited; want %d", refused, len(agents))
	}
	e.checkNoIdPToken(t, idTok)
}

// TestIdPTokensRefused presents IdP tokens the sidecar must refuse, from a
// Python agent: expired, for another audience, of a type the IdP entry does
// not accept, signed by an unknown key, naming an unknown issuer.
func TestIdPTokensRefused(t *testing.T) {
	e := newIdPEnv(t, idpOptions{tokenTypes: []string{identity.TypeJWT}})
	dir, agents := exampleAgents(t)
	accessToken, err := e.idp.AccessToken(testenv.User, idptest.TokenOptions{Audience: idpAgentClient, Claims: map[string]any{"client_id": idpAgentClient}})
	if err != nil {
		t.Fatal(err)
	}
	jag, err := e.idp.Sign(idptest.TypeIDJAG, map[string]any{
		"iss": e.idp.Issuer(), "sub": testenv.User, "aud": idpAgentClient, "client_id": idpAgentClient,
		"iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix(), "jti": "jag-1",
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	other, err := idptest.StartIdP(idptest.IdPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	foreign, err := other.IDToken(testenv.User, idptest.TokenOptions{Audience: idpAgentClient})
	if err != nil {
		t.Fatal(err)
	}
	// The other IdP's key, under this IdP's name.
	forged, err := other.Sign("JWT", map[string]any{
		"iss": e.idp.Issuer(), "sub": testenv.User, "aud": idpAgentClient, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{
		"expired":           e.idToken(t, func(o *idptest.TokenOptions) { o.IssuedAt = time.Now().Add(-2 * time.Hour) }),
		"wrong audience":    e.idToken(t, func(o *idptest.TokenOptions) { o.Audience = "another-app" }),
		"access token":      accessToken,
		"ID-JAG":            jag,
		"unknown issuer":    foreign,
		"another's key":     forged,
		"lifetime too long": e.idToken(t, func(o *idptest.TokenOptions) { o.TTL = 48 * time.Hour }),
	}
	cmd := agents["python-requests"]
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			e.Upstream.Reset()
			out, errOut, ok := runAgent(t, agentEnv(e.Env, tok), dir, append(cmd, e.notesURL("/v1/notes")))
			if ok || !strings.Contains(errOut, "HTTP 401 identity_invalid") {
				t.Errorf("got ok=%v %q %q; want HTTP 401 identity_invalid", ok, out, errOut)
			}
			if n := len(e.Upstream.Requests()); n != 0 {
				t.Errorf("%d requests reached the API", n)
			}
		})
	}
	if s := e.idp.Stats(); s.TokenRequests != 0 {
		t.Errorf("%d exchange requests for refused identities", s.TokenRequests)
	}
	e.checkNoIdPToken(t, accessToken, jag, foreign, forged)
}

// TestIdPExchangeStorm sends 300 concurrent requests for alice, each with
// an IdP token, while the IdP is slow: one exchange serves them all.
//
// The 300 tunnels are opened first (requests without identity, answered
// 401 on a connection that stays open), so that the storm itself measures
// the exchange's single flight and not 300 TLS handshakes competing for a
// shared, race-instrumented machine.
func TestIdPExchangeStorm(t *testing.T) {
	const storm = 300
	e := newIdPEnv(t, idpOptions{slowMachine: true})
	client := e.Client()
	client.Timeout = time.Minute
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = storm
	defer client.CloseIdleConnections()
	all := func(assertion string) map[int]int {
		var mu sync.Mutex
		statuses := map[int]int{}
		var wg sync.WaitGroup
		for range storm {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, e.notesURL("/v1/notes"), nil)
				if assertion != "" {
					req.Header.Set(identity.DefaultHeader, assertion)
				}
				code := 0
				resp, err := client.Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
					if assertion != "" && code != http.StatusOK {
						t.Logf("request: %d %s", code, b)
					}
				} else {
					t.Logf("request: %v", err)
				}
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		return statuses
	}
	if got := all(""); got[http.StatusUnauthorized] != storm {
		t.Fatalf("opening the tunnels: statuses %v; want %d × 401", got, storm)
	}
	e.idp.SetLatency(300 * time.Millisecond)
	if got := all(e.idToken(t, nil)); got[http.StatusOK] != storm {
		t.Fatalf("storm: statuses %v; want %d × 200", got, storm)
	}
	if s, a := e.idp.Stats(), e.as.Stats(); s.TokenRequests != 1 || a.TokenRequests != 1 {
		t.Errorf("%d token requests at the IdP and %d at the app; want 1 each", s.TokenRequests, a.TokenRequests)
	}
	if n := len(e.Upstream.Requests()); n != storm {
		t.Errorf("%d requests reached the API; want %d", n, storm)
	}
}

// TestIdPKeyRotation rotates the IdP's signing key while requests flow: a
// token under the new kid is accepted at once (one JWKS fetch), and once
// the old key is removed from the JWKS a token it signed is refused.
func TestIdPKeyRotation(t *testing.T) {
	e := newIdPEnv(t, idpOptions{})
	client := e.Client()
	send := func(tok string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, e.notesURL("/v1/notes"), nil)
		req.Header.Set(identity.DefaultHeader, tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, readError(t, resp).Error
	}
	// Requests keep flowing throughout.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failures []int
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		bg := e.Client()
		defer bg.CloseIdleConnections()
		for ctx.Err() == nil {
			// A fresh token each time, signed by whatever key is current.
			tok := e.idToken(t, nil)
			req, _ := http.NewRequest(http.MethodGet, e.notesURL("/v1/background"), nil)
			req.Header.Set(identity.DefaultHeader, tok)
			resp, err := bg.Do(req)
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				mu.Lock()
				failures = append(failures, resp.StatusCode)
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	oldKID := e.idp.KeyIDs()[0]
	oldTok := e.idToken(t, nil)
	// Tokens signed by the old key, each presented once after its removal
	// (a token seen before is served from the verified-subject cache).
	var laterOld []string
	for range 100 {
		laterOld = append(laterOld, e.idToken(t, nil))
	}
	if status, code := send(oldTok); status != http.StatusOK {
		t.Fatalf("old key before rotation: %d %s", status, code)
	}
	jwksBefore := e.idp.Stats().JWKSRequests
	newKID, err := e.idp.RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	newTok := e.idToken(t, nil)
	if status, code := send(newTok); status != http.StatusOK {
		t.Fatalf("new key %s: %d %s", newKID, status, code)
	}
	if e.idp.Stats().JWKSRequests == jwksBefore {
		t.Errorf("the new kid was accepted without a JWKS fetch")
	}
	e.idp.RemoveKey(oldKID)
	// The background refresh (every second here) brings the set without
	// the old key.
	for i := 0; ; i++ {
		if i == len(laterOld) {
			t.Fatalf("tokens of the removed key still accepted after %d tries", i)
		}
		status, code := send(laterOld[i])
		if status == http.StatusUnauthorized && code == "identity_invalid" {
			break
		}
		if status != http.StatusOK {
			t.Fatalf("token of the removed key: %d %s", status, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status, code := send(e.idToken(t, nil)); status != http.StatusOK {
		t.Fatalf("new key after removal: %d %s", status, code)
	}
	stop()
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("requests during the rotation failed: %v", failures)
	}
}

// BenchmarkIdPTokenPaths compares the steady state of three requests
// through the sidecar, each a small JSON POST on a keep-alive tunnel with
// the identity and the token cached: an orchestrator assertion on a route
// with a stored grant (the baseline, as BenchmarkServeCacheHit), an IdP
// token on that route, and an IdP token on a route whose token comes from
// exchange. The process runs client, sidecar and upstream; cpu-µs/op is
// their sum.
func BenchmarkIdPTokenPaths(b *testing.B) {
	e := newIdPEnv(b, idpOptions{quiet: true, ttl: 5 * time.Minute})
	body := `{"channel":"general","text":"benchmark"}`
	for _, bc := range []struct {
		name, url, assertion string
	}{
		{"grant/orchestrator-assertion", e.APIURL("/api/chat.postMessage"), e.Assert(b, testenv.User)},
		{"grant/idp-token", e.APIURL("/api/chat.postMessage"), e.idToken(b, nil)},
		{"exchange/idp-token", e.notesURL("/v1/notes"), e.idToken(b, nil)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client := e.Client()
			defer client.CloseIdleConnections()
			do := func() {
				req, _ := http.NewRequest(http.MethodPost, bc.url, strings.NewReader(body))
				req.Header.Set(identity.DefaultHeader, bc.assertion)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			do() // warm: tunnel, leaf, identity and token caches (the exchange)
			e.Upstream.Reset()
			b.ReportAllocs()
			start := cpuTimeNow()
			for b.Loop() {
				do()
			}
			b.ReportMetric(float64((cpuTimeNow()-start).Microseconds())/float64(b.N), "cpu-µs/op")
			e.Upstream.Reset()
		})
	}
	if n := e.idp.Stats().Exchanges; n != 1 {
		b.Errorf("%d exchanges; want 1 (the warm-up)", n)
	}
}

// cpuTimeNow is this process's user+system CPU time.
func cpuTimeNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
