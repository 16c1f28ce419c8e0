package oauth

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/idptest"
)

// Names of the exchange tests' world.
const (
	xAgentClient = "agent-app"
	xAgentSecret = "agent-app-secret-for-tests"
	xAppClient   = "onbehalf-notes"
	xAppSecret   = "notes-client-secret-for-tests"
	xProvider    = "notes"
)

var xScopes = []string{"notes.read", "notes.write"}

// xworld is an IdP, an app's authorization server that trusts it, and a
// provider configured to exchange at both.
type xworld struct {
	idp    *idptest.IdP
	as     *idptest.AppAS
	cfg    ProviderConfig
	client *http.Client
	events chan ExchangeEvent
}

func newXWorld(t testing.TB, edit func(*ExchangeConfig)) *xworld {
	t.Helper()
	idp, err := idptest.StartIdP(idptest.IdPOptions{Clients: []idptest.Client{{ID: xAgentClient, Secret: xAgentSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	as, err := idptest.StartAppAS(idptest.AppASOptions{IdP: idp, Clients: []idptest.AppClient{{ID: xAppClient, Secret: xAppSecret, Scopes: xScopes}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Close)
	if err := idp.AllowApp(xAgentClient, as.Issuer(), xAppClient); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(idp.CACertPEM())
	roots.AppendCertsFromPEM(as.CACertPEM())
	cfg := DefaultProviderConfig()
	cfg.TokenURL = as.TokenURL()
	cfg.ClientID = xAppClient
	cfg.ClientSecretFile = "unused"
	cfg.AuthStyle = AuthStyleHeader
	cfg.Scopes = xScopes
	x := DefaultExchangeConfig()
	x.Issuer = idp.Issuer()
	x.TokenURL = idp.TokenURL()
	x.ClientID = xAgentClient
	x.ClientSecretFile = "unused"
	x.AuthStyle = AuthStyleParams
	x.Audience = as.Issuer()
	x.Resource = "https://api.notes.test/"
	if edit != nil {
		edit(&x)
	}
	cfg.Exchange = &x
	client, err := NewHTTPClient(roots)
	if err != nil {
		t.Fatal(err)
	}
	w := &xworld{idp: idp, as: as, cfg: cfg, client: client, events: make(chan ExchangeEvent, 1000)}
	t.Cleanup(w.client.CloseIdleConnections)
	return w
}

func (w *xworld) exchanger(t testing.TB, o ExchangeOptions) *Exchanger {
	t.Helper()
	p, err := NewProvider(xProvider, w.cfg, xAppSecret, w.client)
	if err != nil {
		t.Fatal(err)
	}
	if o.OnExchange == nil {
		o.OnExchange = func(ev ExchangeEvent) { w.events <- ev }
	}
	e, err := NewExchanger(p, xAgentSecret, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Wait)
	return e
}

// request returns the token request of user presenting tok.
func (w *xworld) request(user, typ, tok string) injector.TokenRequest {
	return injector.TokenRequest{Provider: xProvider, User: user, Identity: injector.SubjectToken{Issuer: w.idp.Issuer(), Type: typ, Value: tok}}
}

func (w *xworld) idToken(t testing.TB, user string) string {
	t.Helper()
	tok, err := w.idp.IDToken(user, idptest.TokenOptions{Audience: xAgentClient})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (w *xworld) event(t *testing.T) ExchangeEvent {
	t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case <-time.After(testTimeout):
		t.Fatal("no exchange event")
	}
	return ExchangeEvent{}
}

// TestExchangeToken runs the exchange end to end: the token comes from the
// app's authorization server for the presented user, is cached within the
// bound, and is exchanged again after it.
func TestExchangeToken(t *testing.T) {
	w := newXWorld(t, nil)
	now := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	e := w.exchanger(t, ExchangeOptions{CacheTTL: time.Minute, Now: func() time.Time { return *clock.Load() }})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	for _, typ := range []string{"JWT", ""} {
		req := w.request(testUser, typ, w.idToken(t, testUser))
		req.Identity.ID = "jti-1"
		tok, err := e.Token(ctx, req)
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if tok.Source != injector.SourceExchange || tok.Generation != 0 || time.Until(tok.Expiry) < 50*time.Minute {
			t.Errorf("got %v; want an exchanged token valid for about an hour", tok)
		}
		user, scopes, client, active := w.as.Introspect(ctx, tok.Value)
		if !active || user != testUser || client != xAppClient || strings.Join(scopes, " ") != "notes.read notes.write" {
			t.Errorf("introspect: %q %v %q %v", user, scopes, client, active)
		}
	}
	// The second call was served from the cache.
	if s := w.idp.Stats(); s.Exchanges != 1 {
		t.Errorf("got %d exchanges at the idp; want 1", s.Exchanges)
	}
	ev := w.event(t)
	if ev.Outcome != ExchangeOK || ev.Step != "as" || ev.User != testUser || ev.Provider != xProvider || ev.IdentityJTI != "jti-1" || ev.Err != nil {
		t.Errorf("event %+v", ev)
	}

	// Past the cache bound: exchanged again.
	later := now.Add(61 * time.Second)
	clock.Store(&later)
	if _, err := e.Token(ctx, w.request(testUser, "JWT", w.idToken(t, testUser))); err != nil {
		t.Fatal(err)
	}
	if s := w.idp.Stats(); s.Exchanges != 2 {
		t.Errorf("got %d exchanges at the idp; want 2", s.Exchanges)
	}
	// Another user has a token of their own.
	bob, err := e.Token(ctx, w.request("bob", "JWT", w.idToken(t, "bob")))
	if err != nil {
		t.Fatal(err)
	}
	if user, _, _, _ := w.as.Introspect(ctx, bob.Value); user != "bob" {
		t.Errorf("bob's token is for %q", user)
	}
}

// TestExchangeAccessToken exchanges an RFC 9068 access token.
func TestExchangeAccessToken(t *testing.T) {
	w := newXWorld(t, nil)
	e := w.exchanger(t, ExchangeOptions{})
	at, err := w.idp.AccessToken(testUser, idptest.TokenOptions{Audience: "https://sidecar.test", Claims: map[string]any{"client_id": xAgentClient}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Token(context.Background(), w.request(testUser, "at+jwt", at)); err != nil {
		t.Fatalf("Token: %v", err)
	}
	// Presented as an ID token, the IdP refuses it.
	e2 := w.exchanger(t, ExchangeOptions{})
	if _, err := e2.Token(context.Background(), w.request("carol", "JWT", at)); !errors.Is(err, injector.ErrExchangeDenied) {
		t.Errorf("access token as an ID token: got %v; want ErrExchangeDenied", err)
	}
}

// TestExchangeStorm sends concurrent requests for one user: they share one
// exchange, and every one of them gets its token.
func TestExchangeStorm(t *testing.T) {
	w := newXWorld(t, nil)
	e := w.exchanger(t, ExchangeOptions{})
	// Slow enough that every caller arrives while the exchange runs.
	w.idp.SetLatency(200 * time.Millisecond)
	req := w.request(testUser, "JWT", w.idToken(t, testUser))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var wg sync.WaitGroup
	tokens := make([]string, stormCallers)
	errs := make([]error, stormCallers)
	for i := range stormCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := e.Token(ctx, req)
			tokens[i], errs[i] = tok.Value, err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("caller %d got another token", i)
		}
	}
	if s, a := w.idp.Stats(), w.as.Stats(); s.TokenRequests != 1 || a.TokenRequests != 1 {
		t.Errorf("got %d idp and %d app token requests; want 1 each", s.TokenRequests, a.TokenRequests)
	}
}

// TestExchangeCallerGivesUp cancels the caller that started an exchange:
// the exchange still completes for the others and is cached.
func TestExchangeCallerGivesUp(t *testing.T) {
	w := newXWorld(t, nil)
	e := w.exchanger(t, ExchangeOptions{})
	w.idp.SetLatency(300 * time.Millisecond)
	req := w.request(testUser, "JWT", w.idToken(t, testUser))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.Token(ctx, req)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, injector.ErrProviderUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: got %v", err)
	}
	if _, err := e.Token(context.Background(), req); err != nil {
		t.Fatalf("second caller: %v", err)
	}
	e.Wait()
	if s := w.idp.Stats(); s.TokenRequests != 1 {
		t.Errorf("got %d idp token requests; want 1 (the first exchange completed and was shared or cached)", s.TokenRequests)
	}
}

// TestExchangeNeedsTheIdPToken refuses requests whose identity is not a
// token of the exchanging IdP, without any network call.
func TestExchangeNeedsTheIdPToken(t *testing.T) {
	w := newXWorld(t, nil)
	e := w.exchanger(t, ExchangeOptions{})
	for name, req := range map[string]injector.TokenRequest{
		"orchestrator assertion": {Provider: xProvider, User: testUser},
		"another idp":            {Provider: xProvider, User: testUser, Identity: injector.SubjectToken{Issuer: "https://other-idp.test", Value: "x.y.z"}},
	} {
		_, err := e.Token(context.Background(), req)
		if !errors.Is(err, injector.ErrNoSubjectToken) || !errors.Is(err, injector.ErrExchangeDenied) {
			t.Errorf("%s: got %v; want ErrNoSubjectToken", name, err)
		}
	}
	if s := w.idp.Stats(); s.TokenRequests != 0 {
		t.Errorf("got %d idp token requests; want none", s.TokenRequests)
	}
}

// TestExchangeFailures maps each way the exchange can fail to its sentinel
// and event, and checks that no error or event text holds a token.
func TestExchangeFailures(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(*ExchangeConfig)
		disturb  func(w *xworld)
		sentinel error
		outcome  ExchangeOutcome
		step     string
	}{
		{"idp policy refuses the user", nil, func(w *xworld) { w.idp.Deny(testUser, true) }, injector.ErrExchangeDenied, ExchangeRefused, "idp"},
		{"unknown app at the idp", func(c *ExchangeConfig) { c.Audience = "https://unknown-as.test" }, nil, injector.ErrExchangeDenied, ExchangeRefused, "idp"},
		{"idp unavailable", nil, func(w *xworld) { w.idp.FailNext(1, http.StatusServiceUnavailable) }, injector.ErrProviderUnavailable, ExchangeUnavailable, "idp"},
		{"wrong client secret at the idp", func(c *ExchangeConfig) { c.ClientID = "unknown-client" }, nil, injector.ErrProviderMisconfigured, ExchangeMisconfigured, "idp"},
		{"app without jwt bearer", nil, func(w *xworld) { w.as.SetJWTBearer(false) }, injector.ErrProviderMisconfigured, ExchangeMisconfigured, "as"},
		{"app failing", nil, func(w *xworld) { w.as.FailNext(1, http.StatusBadGateway) }, injector.ErrProviderUnavailable, ExchangeUnavailable, "as"},
		{"scope beyond the client's", func(c *ExchangeConfig) { c.Scopes = []string{"notes.read", "notes.admin"} }, nil, injector.ErrExchangeDenied, ExchangeRefused, "as"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newXWorld(t, tt.edit)
			if tt.disturb != nil {
				tt.disturb(w)
			}
			e := w.exchanger(t, ExchangeOptions{})
			idTok := w.idToken(t, testUser)
			_, err := e.Token(context.Background(), w.request(testUser, "JWT", idTok))
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("got %v; want %v", err, tt.sentinel)
			}
			for _, other := range []error{injector.ErrExchangeDenied, injector.ErrProviderUnavailable, injector.ErrProviderMisconfigured} {
				if other != tt.sentinel && errors.Is(err, other) {
					t.Errorf("error %v also wraps %v", err, other)
				}
			}
			ev := w.event(t)
			if ev.Outcome != tt.outcome || ev.Step != tt.step {
				t.Errorf("event outcome %s step %s; want %s %s", ev.Outcome, ev.Step, tt.outcome, tt.step)
			}
			for _, text := range []string{err.Error(), ev.Err.Error()} {
				if strings.Contains(text, idTok[len(idTok)-20:]) || strings.Contains(text, xAgentSecret) || strings.Contains(text, xAppSecret) {
					t.Errorf("error text holds a secret: %s", text)
				}
			}
			// Nothing is cached after a failure.
			if _, ok := e.cached(exchangeKey{user: testUser, provider: xProvider, scopes: e.scopeKey}); ok {
				t.Errorf("a failed exchange left a cached token")
			}
		})
	}
}

// TestExchangeDiscoveredEndpoint takes the IdP's token endpoint from the
// TokenEndpoint option when the configuration names none.
func TestExchangeDiscoveredEndpoint(t *testing.T) {
	w := newXWorld(t, func(c *ExchangeConfig) { c.TokenURL = "" })
	var asked atomic.Int32
	e := w.exchanger(t, ExchangeOptions{TokenEndpoint: func(issuer string) (string, error) {
		asked.Add(1)
		if issuer != w.idp.Issuer() {
			return "", errors.New("unknown issuer")
		}
		return w.idp.TokenURL(), nil
	}})
	if _, err := e.Token(context.Background(), w.request(testUser, "JWT", w.idToken(t, testUser))); err != nil {
		t.Fatal(err)
	}
	if asked.Load() != 1 {
		t.Errorf("TokenEndpoint asked %d times; want 1", asked.Load())
	}
	failing := w.exchanger(t, ExchangeOptions{TokenEndpoint: func(string) (string, error) { return "", errors.New("discovery document not read yet") }})
	if _, err := failing.Token(context.Background(), w.request(testUser, "JWT", w.idToken(t, testUser))); !errors.Is(err, injector.ErrProviderUnavailable) {
		t.Errorf("without a discovered endpoint: got %v; want ErrProviderUnavailable", err)
	}
}

func TestExchangeConfigValidate(t *testing.T) {
	good := DefaultExchangeConfig()
	good.Issuer, good.ClientID, good.ClientSecretFile = "https://idp.test", "agent-app", "/s"
	good.AuthStyle, good.Audience = AuthStyleHeader, "https://as.test"
	if err := good.Validate(); err != nil {
		t.Errorf("good config: %v", err)
	}
	bad := ExchangeConfig{
		TokenURL: "http://idp.example/token", ClientSecretFile: "/a", ClientSecretVault: "b#c",
		AuthStyle: "auto", Resource: "ftp://x", Scopes: []string{"a", "", "a"}, Fallback: "maybe", Timeout: time.Hour,
	}
	want := []string{
		"audience: required: the app's authorization server (its issuer identifier)",
		`auth_style: must be "header" or "params"`,
		"client_id: required",
		"client_secret_vault: must not be set together with client_secret_file",
		`fallback: must be "refuse" or "grant"`,
		"issuer: required: the issuer of the identity provider whose tokens are exchanged",
		"resource: must be an https URL",
		"scopes[1]: must be a non-empty RFC 6749 scope token",
		`scopes[2]: duplicate scope "a"`,
		"timeout: must be between 0 (the provider's timeout) and 20s",
		"token_url: must be https (http is allowed only on loopback addresses)",
	}
	if diff := cmp.Diff(want, fieldProblems(bad.Validate())); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	// The provider's validation includes the exchange section.
	pc := DefaultProviderConfig()
	pc.TokenURL, pc.ClientID, pc.ClientSecretFile, pc.AuthStyle = "https://as.test/token", "c", "/s", AuthStyleHeader
	pc.Exchange = &ExchangeConfig{Fallback: FallbackGrant}
	if got := fieldProblems(pc.Validate()); len(got) == 0 || !strings.HasPrefix(got[0], "exchange.") {
		t.Errorf("provider problems %v; want the exchange section's", got)
	}
}

// fieldProblems returns the sorted "path: message" lines of err.
func fieldProblems(err error) []string {
	var out []string
	for _, e := range config.Flatten(err) {
		out = append(out, e.Error())
	}
	slices.Sort(out)
	return out
}
