package connect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// TestRevokeFromPage revokes from the apps page: the CSRF token is
// required; then the grant is gone, the provider revoked the tokens and
// the audit record has both outcomes.
func TestRevokeFromPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	if r := b.connect(e, e.linkURL("alice"), "alice"); r.status != http.StatusSeeOther {
		t.Fatalf("connect: status %d", r.status)
	}
	g := e.grant("alice")
	page := b.get(e.url + "/")
	action, fields := formFields(t, page.body, "revoke-form-acme")
	if action != "/apps/acme/revoke" || fields.Get("csrf") == "" {
		t.Fatalf("revoke form: action %q, csrf %q", action, fields.Get("csrf"))
	}

	bad := url.Values{"csrf": {"not-the-token"}}
	for _, form := range []url.Values{{}, bad} {
		if r := b.post(e.url+action, form); r.status != http.StatusForbidden {
			t.Errorf("revoke with csrf %q: status %d; want 403", form.Get("csrf"), r.status)
		}
	}
	if e.grant("alice") == nil {
		t.Fatal("grant revoked without a CSRF token")
	}
	// Another person's browser cannot revoke alice's grant.
	mallory := newBrowser(t, e.roots)
	mallory.startFlow(e, e.linkURL("mallory"))
	if r := mallory.post(e.url+action, fields); r.status != http.StatusForbidden {
		t.Errorf("revoke with alice's CSRF token in mallory's session: status %d; want 403", r.status)
	}

	r := b.post(e.url+action, fields)
	if r.status != http.StatusSeeOther || r.location() != "/?revoked=acme" {
		t.Fatalf("revoke: status %d to %q; want 303 to /?revoked=acme", r.status, r.location())
	}
	if e.grant("alice") != nil {
		t.Error("grant still stored")
	}
	if got := e.oauth.Stats().Revocations; got != 1 {
		t.Errorf("provider revocations: %d; want 1", got)
	}
	if _, _, active := e.oauth.Introspect(g.AccessToken); active {
		t.Error("access token still active at the provider")
	}
	rec := lastAuditRecord(t, e, "revoke")
	want := map[string]any{"outcome": "ok", "local": "deleted", "provider_revocation": "revoked", "actor": "user"}
	if diff := cmp.Diff(want, rec["extra"]); diff != "" || rec["user"] != "alice" || rec["token_fingerprint"] != e.audit.Fingerprinter().Token(g.AccessToken) {
		t.Errorf("revoke audit record %v (-want +got extra):\n%s", rec, diff)
	}
	page = b.get(e.url + "/?revoked=acme")
	if !strings.Contains(page.body, "no longer connected") || strings.Contains(page.body, `id="app-acme"`) {
		t.Errorf("apps page after revoking:\n%s", page.body)
	}
}

// TestAppsAPI covers the person's JSON API.
func TestAppsAPI(t *testing.T) {
	e := newEnv(t, envOptions{})
	if r := newBrowser(t, e.roots).get(e.url + "/api/apps"); r.status != http.StatusUnauthorized {
		t.Errorf("GET /api/apps without session: status %d; want 401", r.status)
	}
	b := newBrowser(t, e.roots)
	b.connect(e, e.linkURL("alice"), "alice")
	var apps appsResponse
	if err := json.Unmarshal([]byte(b.get(e.url+"/api/apps").body), &apps); err != nil {
		t.Fatal(err)
	}
	del := func(csrf, origin string) response {
		req, _ := http.NewRequest(http.MethodDelete, e.url+"/api/apps/acme", nil)
		if csrf != "" {
			req.Header.Set(headerCSRF, csrf)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		return b.do(req)
	}
	for _, tc := range []struct {
		name, csrf, origin string
		want               int
	}{
		{"no csrf header", "", "", http.StatusForbidden},
		{"wrong csrf header", "nope", "", http.StatusForbidden},
		{"another origin", apps.CSRFToken, "https://evil.example", http.StatusForbidden},
	} {
		if r := del(tc.csrf, tc.origin); r.status != tc.want {
			t.Errorf("%s: status %d; want %d", tc.name, r.status, tc.want)
		}
	}
	if e.grant("alice") == nil {
		t.Fatal("grant revoked by a refused request")
	}
	r := del(apps.CSRFToken, e.url)
	var res Result
	if err := json.Unmarshal([]byte(r.body), &res); err != nil || r.status != http.StatusOK {
		t.Fatalf("DELETE: status %d, body %s", r.status, r.body)
	}
	want := Result{Provider: testProvider, User: "alice", Local: LocalDeleted, ProviderRevocation: ProviderRevoked, GrantGeneration: 1}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("DELETE result (-want +got):\n%s", diff)
	}
	if r := del(apps.CSRFToken, ""); r.status != http.StatusNotFound {
		t.Errorf("second DELETE: status %d; want 404", r.status)
	}
}

// TestAdminAPI covers the admin API's authentication, listing and
// revocation.
func TestAdminAPI(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := newBrowser(t, e.roots)
	b.connect(e, e.linkURL("alice"), "alice")
	g := e.grant("alice")
	call := func(method, path, token string) response {
		req, _ := http.NewRequest(method, e.url+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return b.do(req)
	}
	for _, tok := range []string{"", "wrong", testAdminToken + "x", testAdminToken[:len(testAdminToken)-1]} {
		if r := call(http.MethodGet, "/admin/api/grants", tok); r.status != http.StatusUnauthorized {
			t.Errorf("list with token %q: status %d; want 401", tok, r.status)
		}
		if r := call(http.MethodDelete, "/admin/api/grants/acme/alice", tok); r.status != http.StatusUnauthorized {
			t.Errorf("revoke with token %q: status %d; want 401", tok, r.status)
		}
	}
	// The person's session is no admin credential.
	if r := call(http.MethodGet, "/admin/api/grants", ""); r.status != http.StatusUnauthorized {
		t.Errorf("list with the person's cookie: status %d; want 401", r.status)
	}
	r := call(http.MethodGet, "/admin/api/grants?provider=acme", testAdminToken)
	var list struct{ Grants []store.View }
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || r.status != http.StatusOK {
		t.Fatalf("list: status %d, body %s", r.status, r.body)
	}
	if len(list.Grants) != 1 || list.Grants[0].User != "alice" || list.Grants[0].ProviderAccount != "alice" {
		t.Errorf("list = %+v; want alice's grant", list.Grants)
	}
	if r := call(http.MethodGet, "/admin/api/grants?provider=Bad!", testAdminToken); r.status != http.StatusBadRequest {
		t.Errorf("list with a bad provider: status %d; want 400", r.status)
	}
	if r := call(http.MethodDelete, "/admin/api/grants/acme/bad..user", testAdminToken); r.status != http.StatusBadRequest {
		t.Errorf("revoke a bad user name: status %d; want 400", r.status)
	}
	r = call(http.MethodDelete, "/admin/api/grants/acme/alice", testAdminToken)
	if r.status != http.StatusOK || e.grant("alice") != nil {
		t.Errorf("revoke: status %d, grant left %v; want 200 and no grant", r.status, e.grant("alice") != nil)
	}
	if rec := lastAuditRecord(t, e, "revoke"); extra(rec, "actor") != ActorAdmin {
		t.Errorf("revoke audit record %v; want actor admin", rec)
	}
	e.assertNoSecret([]string{r.body}, g.AccessToken, g.RefreshToken, testAdminToken)
}

// flakyRevocation is a TLS server in front of the OAuth test server's
// revocation endpoint that answers 503 to the first fail requests (all of
// them when fail is negative).
type flakyRevocation struct {
	srv   *httptest.Server
	fail  atomic.Int64
	calls atomic.Int64
}

func newFlakyRevocation(t *testing.T, e *testEnv, fail int64) *flakyRevocation {
	t.Helper()
	f := &flakyRevocation{}
	f.fail.Store(fail)
	target, _ := url.Parse(e.oauth.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: e.oauth.CertPool()}}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		if n := f.fail.Load(); n != 0 {
			f.fail.Add(-1)
			writeJSONError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try later")
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// revokerEnv returns a new environment, with revokerEnvOn applied.
func revokerEnv(t *testing.T, revocationURL string, extra *x509.Certificate) (*testEnv, *oauth.Provider, *store.Grant) {
	t.Helper()
	return revokerEnvOn(t, newEnv(t, envOptions{}), revocationURL, extra)
}

// TestRevokerRetriesProviderFailure checks that a provider failing
// transiently does not stop the local revocation and is retried until it
// succeeds, each outcome audited.
func TestRevokerRetriesProviderFailure(t *testing.T) {
	e := newEnv(t, envOptions{})
	f := newFlakyRevocation(t, e, 2)
	_, p, g := revokerEnvOn(t, e, f.srv.URL+"/revoke", f.srv.Certificate())
	r := NewRevoker(e.store, map[string]*oauth.Provider{testProvider: p}, e.audit, zap.NewNop(),
		RetryConfig{Interval: 20 * time.Millisecond, MaxAttempts: 5})
	defer r.Close()

	res, err := r.Revoke(context.Background(), testProvider, "alice", "cli")
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	want := Result{Provider: testProvider, User: "alice", Local: LocalDeleted, ProviderRevocation: ProviderQueued, GrantGeneration: 3}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("Revoke result (-want +got):\n%s", diff)
	}
	if e.grant("alice") != nil {
		t.Error("grant still stored while the provider fails")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if r.Pending() != 0 {
		t.Errorf("Pending after Drain: %d", r.Pending())
	}
	if _, _, active := e.oauth.Introspect(g.AccessToken); active {
		t.Error("access token still active at the provider")
	}
	rec := lastAuditRecord(t, e, "revoke")
	if extra(rec, "provider_revocation") != ProviderRevoked || extra(rec, "attempt") != 2.0 || extra(rec, "actor") != "cli" {
		t.Errorf("last revoke audit record %v; want revoked on the second retry", rec)
	}
	if n := auditRecords(t, e, "revoke"); n != 2 {
		t.Errorf("revoke audit records: %d; want 2 (queued, then revoked)", n)
	}
	if got := f.calls.Load(); got != 3 {
		t.Errorf("revocation requests: %d; want 3 (two failures, one success)", got)
	}
}

// TestRevokerOutcomes covers the provider outcomes that are not retried.
func TestRevokerOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(t *testing.T, e *testEnv) (revocationURL string, extra *x509.Certificate)
		retry      RetryConfig
		wantResult string
		wantAudit  string // provider_revocation of the last record
		wantCalls  func(e *testEnv) bool
	}{
		{
			name:       "no revocation endpoint",
			setup:      func(*testing.T, *testEnv) (string, *x509.Certificate) { return "", nil },
			wantResult: ProviderUnsupported, wantAudit: ProviderUnsupported,
		},
		{
			name: "refused (invalid_client)",
			setup: func(t *testing.T, e *testEnv) (string, *x509.Certificate) {
				e.oauth.SetInvalidClient(true)
				return e.oauth.RevokeURL(), nil
			},
			retry:      RetryConfig{Interval: 10 * time.Millisecond, MaxAttempts: 3},
			wantResult: ProviderFailed, wantAudit: ProviderFailed,
		},
		{
			name: "transient failure without retries",
			setup: func(t *testing.T, e *testEnv) (string, *x509.Certificate) {
				f := newFlakyRevocation(t, e, -1)
				return f.srv.URL + "/revoke", f.srv.Certificate()
			},
			wantResult: ProviderFailed, wantAudit: ProviderFailed,
		},
		{
			name: "transient failure until attempts run out",
			setup: func(t *testing.T, e *testEnv) (string, *x509.Certificate) {
				f := newFlakyRevocation(t, e, -1)
				return f.srv.URL + "/revoke", f.srv.Certificate()
			},
			retry:      RetryConfig{Interval: 10 * time.Millisecond, MaxAttempts: 2},
			wantResult: ProviderQueued, wantAudit: ProviderFailed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			u, cert := tc.setup(t, e)
			_, p, _ := revokerEnvOn(t, e, u, cert)
			r := NewRevoker(e.store, map[string]*oauth.Provider{testProvider: p}, e.audit, zap.NewNop(), tc.retry)
			defer r.Close()
			res, err := r.Revoke(context.Background(), testProvider, "alice", ActorAdmin)
			if err != nil || res.Local != LocalDeleted || res.ProviderRevocation != tc.wantResult {
				t.Errorf("Revoke = %+v, %v; want deleted locally, provider %s", res, err, tc.wantResult)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := r.Drain(ctx); err != nil {
				t.Fatalf("Drain: %v", err)
			}
			if e.grant("alice") != nil {
				t.Error("grant still stored")
			}
			if got := extra(lastAuditRecord(t, e, "revoke"), "provider_revocation"); got != tc.wantAudit {
				t.Errorf("last revoke record: provider_revocation %v; want %s", got, tc.wantAudit)
			}
		})
	}
}

// revokerEnvOn returns a provider whose revocation endpoint is
// revocationURL (trusting extra as well as the OAuth server's CA), and
// stores for alice a grant with real tokens from the OAuth server.
func revokerEnvOn(t *testing.T, e *testEnv, revocationURL string, extra *x509.Certificate) (*testEnv, *oauth.Provider, *store.Grant) {
	t.Helper()
	pc := e.provider.Config()
	pc.RevocationURL = revocationURL
	roots := e.oauth.CertPool()
	if extra != nil {
		roots.AddCert(extra)
	}
	client, err := oauth.NewHTTPClient(roots)
	if err != nil {
		t.Fatal(err)
	}
	p, err := oauth.NewProvider(testProvider, pc, testClientSecret, client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	tok, err := e.oauth.IssueGrant(testClientID, "alice", testScopes)
	if err != nil {
		t.Fatal(err)
	}
	g := &store.Grant{Provider: testProvider, User: "alice", AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		TokenType: "Bearer", Expiry: tok.Expiry, Scopes: testScopes, Status: store.StatusActive, Generation: 3}
	if _, err := e.store.Put(context.Background(), g, 0); err != nil {
		t.Fatal(err)
	}
	return e, p, g
}

// TestRevokerCloseAndResume: a provider revocation queued when the
// revoking process stops stays in the store, and the next process takes it
// up: the tokens do not stay valid at the provider because of a restart.
func TestRevokerCloseAndResume(t *testing.T) {
	e := newEnv(t, envOptions{})
	f := newFlakyRevocation(t, e, -1)
	_, p, g := revokerEnvOn(t, e, f.srv.URL+"/revoke", f.srv.Certificate())
	providers := map[string]*oauth.Provider{testProvider: p}
	r := NewRevoker(e.store, providers, e.audit, zap.NewNop(), RetryConfig{Interval: time.Hour, MaxAttempts: 3})
	res, err := r.Revoke(context.Background(), testProvider, "alice", ActorUser)
	if err != nil || res.ProviderRevocation != ProviderQueued {
		t.Fatalf("Revoke = %+v, %v; want queued", res, err)
	}
	if r.Pending() != 1 {
		t.Errorf("Pending: %d; want 1", r.Pending())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if r.Pending() != 0 {
		t.Errorf("Pending after Close: %d; want 0", r.Pending())
	}
	queued, err := e.store.ListRevocations(context.Background())
	if err != nil || len(queued) != 1 || queued[0].AccessToken != g.AccessToken || queued[0].User != "alice" || queued[0].Attempt != 0 {
		t.Fatalf("queue in the store after Close = %v, %v; want alice's revocation with its tokens", queued, err)
	}
	if rec := lastAuditRecord(t, e, "revoke"); extra(rec, "provider_revocation") != ProviderQueued {
		t.Errorf("last revoke record %v; want only the queued one (nothing abandoned)", rec)
	}

	// The next start: the provider works again.
	f.fail.Store(0)
	r2 := NewRevoker(e.store, providers, e.audit, zap.NewNop(), RetryConfig{Interval: 20 * time.Millisecond, MaxAttempts: 3})
	defer r2.Close()
	queued[0].Due = time.Now() // due at once
	if err := e.store.PutRevocation(context.Background(), queued[0]); err != nil {
		t.Fatal(err)
	}
	if n, err := r2.Resume(context.Background()); n != 1 || err != nil {
		t.Fatalf("Resume = %d, %v; want 1", n, err)
	}
	if n, _ := r2.Resume(context.Background()); n != 0 {
		t.Errorf("second Resume took up %d; want 0 (already held)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r2.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, active := e.oauth.Introspect(g.AccessToken); active {
		t.Error("access token still active at the provider after the resumed revocation")
	}
	rec := lastAuditRecord(t, e, "revoke")
	if extra(rec, "provider_revocation") != ProviderRevoked || extra(rec, "actor") != ActorUser {
		t.Errorf("last revoke record %v; want the resumed revocation revoked", rec)
	}
	if left, err := e.store.ListRevocations(context.Background()); err != nil || len(left) != 0 {
		t.Errorf("queue in the store after the revocation = %v, %v; want empty", left, err)
	}
}

// unqueueableStore refuses to store queued revocations.
type unqueueableStore struct{ store.Store }

func (unqueueableStore) PutRevocation(context.Context, *store.Revocation) error {
	return fmt.Errorf("test: %w", store.ErrUnavailable)
}

// TestRevokerCloseAbandonsUnstored: a queued revocation the store could not
// take is abandoned at Close, logged and audited as failed.
func TestRevokerCloseAbandonsUnstored(t *testing.T) {
	e := newEnv(t, envOptions{})
	f := newFlakyRevocation(t, e, -1)
	_, p, _ := revokerEnvOn(t, e, f.srv.URL+"/revoke", f.srv.Certificate())
	r := NewRevoker(unqueueableStore{e.store}, map[string]*oauth.Provider{testProvider: p}, e.audit, zap.NewNop(),
		RetryConfig{Interval: time.Hour, MaxAttempts: 3})
	if res, err := r.Revoke(context.Background(), testProvider, "alice", ActorUser); err != nil || res.ProviderRevocation != ProviderQueued {
		t.Fatalf("Revoke = %+v, %v; want queued", res, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rec := lastAuditRecord(t, e, "revoke")
	if extra(rec, "provider_revocation") != ProviderFailed || extra(rec, "outcome") != "partial" {
		t.Errorf("last revoke record %v; want the abandoned provider revocation", rec)
	}
}

// TestRevokerReplicasClaim: two replicas resuming the same stored queue
// revoke each grant once.
func TestRevokerReplicasClaim(t *testing.T) {
	e := newEnv(t, envOptions{})
	f := newFlakyRevocation(t, e, -1)
	_, p, _ := revokerEnvOn(t, e, f.srv.URL+"/revoke", f.srv.Certificate())
	providers := map[string]*oauth.Provider{testProvider: p}
	first := NewRevoker(e.store, providers, e.audit, zap.NewNop(), RetryConfig{Interval: time.Hour, MaxAttempts: 3})
	if _, err := first.Revoke(context.Background(), testProvider, "alice", ActorUser); err != nil {
		t.Fatal(err)
	}
	first.Close()
	queued, err := e.store.ListRevocations(context.Background())
	if err != nil || len(queued) != 1 {
		t.Fatalf("queue = %v, %v", queued, err)
	}
	queued[0].Due = time.Now()
	if err := e.store.PutRevocation(context.Background(), queued[0]); err != nil {
		t.Fatal(err)
	}
	f.fail.Store(0)
	before := f.calls.Load()
	var replicas []*Revoker
	for range 2 {
		r := NewRevoker(e.store, providers, e.audit, zap.NewNop(), RetryConfig{Interval: 20 * time.Millisecond, MaxAttempts: 3})
		defer r.Close()
		if n, err := r.Resume(context.Background()); n != 1 || err != nil {
			t.Fatalf("Resume = %d, %v", n, err)
		}
		replicas = append(replicas, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, r := range replicas {
		if err := r.Drain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.calls.Load() - before; n != 1 {
		t.Errorf("revocation requests after the restart: %d; want 1", n)
	}
}

// TestRevokerNotFound checks revoking a grant that does not exist.
func TestRevokerNotFound(t *testing.T) {
	e := newEnv(t, envOptions{})
	res, err := e.srv.Revoker().Revoke(context.Background(), testProvider, "nobody", ActorAdmin)
	if !errors.Is(err, store.ErrNotFound) || res.Local != LocalNotFound || res.ProviderRevocation != ProviderSkipped {
		t.Errorf("Revoke = %+v, %v; want not_found and skipped", res, err)
	}
	if rec := lastAuditRecord(t, e, "revoke"); extra(rec, "outcome") != "not_found" {
		t.Errorf("revoke audit record %v; want outcome not_found", rec)
	}
	if _, err := e.srv.Revoker().Revoke(context.Background(), "Bad", "alice", ActorAdmin); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("Revoke with a bad provider name: %v; want ErrInvalidName", err)
	}
}

// TestRevokeWaitsForRefresh checks that a revocation waits for a refresh
// in flight (which holds the grant's lease), so that the refresh cannot
// write the grant back after it was deleted.
func TestRevokeWaitsForRefresh(t *testing.T) {
	e, p, _ := revokerEnv(t, "", nil)
	ctx := context.Background()
	l, err := e.store.AcquireLease(ctx, testProvider, "alice", store.LeaseRequest{Holder: "sidecar-1", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRevoker(e.store, map[string]*oauth.Provider{testProvider: p}, e.audit, zap.NewNop(), RetryConfig{})
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		_, err := r.Revoke(ctx, testProvider, "alice", ActorUser)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Revoke returned while the refresh lease was held: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if e.grant("alice") == nil {
		t.Fatal("grant deleted under a refresh in flight")
	}
	if err := e.store.ReleaseLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Revoke: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Revoke did not finish after the lease was released")
	}
	if e.grant("alice") != nil {
		t.Error("grant still stored")
	}
}
