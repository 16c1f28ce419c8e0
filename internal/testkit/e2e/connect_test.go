//go:build integration

package e2e

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/connect"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/chromium"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// cacheBound is the sidecars' token cache bound in the connect test: how
// long a revoked grant may still be injected.
const cacheBound = time.Second

// TestConnectThenAgentThenRevoke is the whole story across components, in
// a real headless browser: alice opens a connect link, confirms, approves
// at the provider; the grant is stored; an agent's request through a
// sidecar carries the new token; alice revokes from her apps page; the
// provider saw the revocation; a second sidecar stops injecting within the
// cache bound.
func TestConnectThenAgentThenRevoke(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	e := testenv.New(t, testenv.Options{Provider: prov, NoGrant: true, Config: func(c *sidecar.Config) {
		c.TokenCache.TTL = cacheBound
	}})
	second := e.AddSidecar(t)

	// The connect server, on the same store as the sidecars.
	dir := t.TempDir()
	linkKey, linkPub, err := identity.GenerateKeyPair("EdDSA")
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(dir, "link.pub")
	if err := os.WriteFile(pubFile, linkPub, 0o644); err != nil {
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
	pc := e.Config.Providers[testenv.Provider]
	pc.AuthorizationURL = prov.AuthURL()
	client, err := oauth.NewHTTPClient(prov.CertPool())
	if err != nil {
		t.Fatal(err)
	}
	provider, err := oauth.NewProvider(testenv.Provider, pc, testenv.ProviderClientSecret, client)
	if err != nil {
		t.Fatal(err)
	}
	ac := audit.DefaultConfig()
	ac.Sink, ac.File.Path = audit.SinkFile, filepath.Join(dir, "connect-audit.log")
	aud, err := audit.New(ac, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer aud.Close()
	lv, err := connect.NewLinkVerifier(context.Background(), cfg.Links)
	if err != nil {
		t.Fatal(err)
	}
	defer lv.Close()
	srv, err := connect.New(cfg, connect.Deps{
		Store: e.Store, Providers: map[string]*oauth.Provider{testenv.Provider: provider},
		Audit: aud, LinkVerifier: lv,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()

	// The agent gets grant_missing with a connect URL before alice connects.
	assertion := e.Assert(t, testenv.User)
	if code, body := get(t, e.Client(), e, assertion); code != 401 || body.Error != "grant_missing" {
		t.Fatalf("before connecting: %d %s; want grant_missing", code, body.Error)
	}

	// Alice connects in the browser.
	link, err := connect.MintLink(linkKey, connect.LinkOptions{Issuer: "https://orchestrator.test", User: testenv.User, Provider: testenv.Provider})
	if err != nil {
		t.Fatal(err)
	}
	b := chromium.NewBrowser(t, chromium.Trust{URL: prov.URL(), Roots: prov.CertPool()})
	if _, err := b.Connect(connect.LinkURL(cfg.ExternalURL, testenv.Provider, link), testenv.User, testenv.User); err != nil {
		t.Fatalf("connect in the browser: %v", err)
	}
	g, _, err := e.Store.Get(context.Background(), testenv.Provider, testenv.User)
	if err != nil {
		t.Fatalf("grant not stored: %v", err)
	}

	// Both sidecars now inject alice's new token.
	for i, c := range []*http.Client{e.Client(), e.ClientFor(second)} {
		e.Upstream.Reset()
		if code, body := get(t, c, e, assertion); code != 200 {
			t.Fatalf("sidecar %d after connecting: %d %s", i+1, code, body.Error)
		}
		if got := e.Upstream.Requests()[0].Header.Get("Authorization"); got != "Bearer "+g.AccessToken {
			t.Errorf("sidecar %d did not inject the connected token", i+1)
		}
	}

	// Alice revokes from her apps page.
	if _, err := b.Revoke(cfg.ExternalURL+"/", testenv.Provider); err != nil {
		t.Fatalf("revoke in the browser: %v", err)
	}
	revoked := time.Now()
	if prov.Stats().Revocations == 0 {
		t.Error("the provider saw no revocation")
	}
	if _, _, active := prov.Introspect(g.AccessToken); active {
		t.Error("the access token is still active at the provider")
	}
	// The second sidecar stops injecting within the cache bound.
	for {
		code, body := get(t, e.ClientFor(second), e, assertion)
		if code == 401 && body.Error == "grant_missing" {
			break
		}
		if time.Since(revoked) > cacheBound+time.Second {
			t.Fatalf("second sidecar still answers %d %s %v after the revocation; bound %v", code, body.Error, time.Since(revoked), cacheBound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(string(e.AuditRaw(t)), `"error_code":"grant_missing"`) {
		t.Error("no audit record of the refused request")
	}

	// Canary: the connect and revoke paths leave no secret in any trail
	// or log.
	connectTrail, err := os.ReadFile(ac.File.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{`"event":"connect"`, `"event":"revoke"`} {
		if !strings.Contains(string(connectTrail), ev) {
			t.Errorf("the connect server's trail has no %s record", ev)
		}
	}
	secrets := map[string]string{"access token": g.AccessToken, "refresh token": g.RefreshToken, "connect link": link,
		"client secret": testenv.ProviderClientSecret, "assertion": assertion}
	for where, out := range map[string][]byte{"connect trail": connectTrail, "sidecar trail": e.AuditRaw(t), "sidecar logs": e.Logs()} {
		for what, secret := range secrets {
			if strings.Contains(string(out), secret) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
	}
}
