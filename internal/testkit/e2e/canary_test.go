//go:build integration

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// TestCanaryNeverLeaks drives the sidecar through its success path and
// every error path it can reach here, then searches every response the
// agent received, every operational log line (at debug level) and every
// audit record for the access token, the refresh token and the assertions.
func TestCanaryNeverLeaks(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Routes[0].Paths = []string{"/api/"}
		c.TokenCache.TTL = 0 // the test changes the grant between requests
	}})
	secrets := map[string]string{
		"access token":  testenv.CanaryToken,
		"refresh token": testenv.CanaryRefresh,
	}
	assertion := e.Assert(t, testenv.User)
	secrets["assertion"] = assertion
	// The signature part alone must not leak either.
	secrets["assertion signature"] = assertion[strings.LastIndexByte(assertion, '.')+1:]
	expired := e.Assert(t, testenv.User, func(o *identity.MintOptions) { o.Now = time.Now().Add(-time.Hour) })
	secrets["expired assertion"] = expired
	foreign := e.Assert(t, testenv.User, func(o *identity.MintOptions) { o.Audience = "someone-else" })
	secrets["foreign assertion"] = foreign

	var seen bytes.Buffer // everything the agent received
	client := e.Client()
	do := func(name, method, url string, hdr map[string]string) {
		req, _ := http.NewRequest(method, url, strings.NewReader(`{"x":1}`))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintf(&seen, "%s: client error %v\n", name, err)
			return
		}
		dump, _ := httputil.DumpResponse(resp, true)
		resp.Body.Close()
		seen.Write(dump)
	}
	a := identity.DefaultHeader
	do("allowed", "POST", e.APIURL("/api/post"), map[string]string{a: assertion, "Authorization": "Bearer " + testenv.CanaryToken})
	do("no assertion", "POST", e.APIURL("/api/post"), nil)
	do("expired assertion", "POST", e.APIURL("/api/post"), map[string]string{a: expired})
	do("foreign audience", "POST", e.APIURL("/api/post"), map[string]string{a: foreign})
	do("policy denied", "DELETE", e.APIURL("/api/post"), map[string]string{a: assertion})
	do("no route for path", "GET", e.APIURL("/admin"), map[string]string{a: assertion})
	do("bad path", "GET", e.APIURL("/api/%2e%2e/admin"), map[string]string{a: assertion})
	do("unrouted host", "GET", "https://unrouted.test/", map[string]string{a: assertion})
	do("plain http", "GET", "http://"+testenv.APIHost+"/api/x", map[string]string{a: assertion})
	do("oversized header", "GET", e.APIURL("/api/x"), map[string]string{a: assertion, "X-Big": strings.Repeat("b", 70<<10)})

	// Grant gone, then expired: grant_missing and reconnect_required.
	bob := e.Assert(t, "bob")
	secrets["bob's assertion"] = bob
	do("grant missing", "GET", e.APIURL("/api/x"), map[string]string{a: bob})
	e.PutGrant(t, testenv.User, testenv.CanaryToken, time.Now().Add(-time.Minute))
	do("token expired", "GET", e.APIURL("/api/x"), map[string]string{a: assertion})
	// Upstream gone: upstream_unreachable.
	e.PutGrant(t, testenv.User, testenv.CanaryToken, time.Now().Add(time.Hour))
	e.Upstream.Close()
	do("upstream down", "GET", e.APIURL("/api/x"), map[string]string{a: assertion})

	// Sanity: the battery reached the paths it means to.
	for _, code := range []string{"identity_required", "identity_invalid", "policy_denied", "no_route", "bad_request", "grant_missing", "reconnect_required", "upstream_unreachable", "request_header_too_large"} {
		if !bytes.Contains(seen.Bytes(), []byte(`"error":"`+code+`"`)) {
			t.Errorf("no response carried %s; the battery missed a path", code)
		}
	}
	if !bytes.Contains(seen.Bytes(), []byte(`"authorization_scheme":"Bearer"`)) {
		t.Error("the allowed request did not succeed")
	}

	outputs := map[string][]byte{
		"responses to the agent": seen.Bytes(),
		"operational logs":       e.Logs(),
		"audit trail":            e.AuditRaw(t),
	}
	if len(e.Logs()) == 0 {
		t.Error("no operational logs captured; the search would prove nothing")
	}
	for where, out := range outputs {
		for what, secret := range secrets {
			if bytes.Contains(out, []byte(secret)) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
	}
}

// TestCanaryRefreshPath drives the refresh paths (a successful rotation, a
// provider outage, invalid_grant) and searches responses, logs and the audit
// trail for every token involved, old and new.
func TestCanaryRefreshPath(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	e := testenv.New(t, testenv.Options{Provider: prov, Config: func(c *sidecar.Config) { c.TokenCache.TTL = 0 }})
	assertion := e.Assert(t, testenv.User)
	var seen bytes.Buffer
	do := func() {
		req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/x"), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := e.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		dump, _ := httputil.DumpResponse(resp, true)
		resp.Body.Close()
		seen.Write(dump)
	}
	secrets := map[string]string{"old access token": e.Token, "old refresh token": e.RefreshToken, "assertion": assertion, "client secret": testenv.ProviderClientSecret}

	e.SetExpiry(t, testenv.User, time.Now().Add(-time.Minute))
	do() // refresh + rotation
	g, _, err := e.Store.Get(context.Background(), testenv.Provider, testenv.User)
	if err != nil || g.Generation != 2 {
		t.Fatalf("refresh did not happen: %v %v", g, err)
	}
	secrets["new access token"], secrets["new refresh token"] = g.AccessToken, g.RefreshToken

	e.SetExpiry(t, testenv.User, time.Now().Add(-time.Minute))
	// A provider's own 503 (a 502 or 504 from a gateway would leave the
	// refresh token's fate unknown, and the lease to run out).
	prov.FailNext(1, http.StatusServiceUnavailable)
	do() // provider_unavailable
	prov.RevokeUser(testenv.User)
	do() // invalid_grant → reconnect_required

	for _, code := range []string{"provider_unavailable", "reconnect_required"} {
		if !bytes.Contains(seen.Bytes(), []byte(code)) {
			t.Errorf("no response carried %s", code)
		}
	}
	if !bytes.Contains(e.AuditRaw(t), []byte(`"event":"refresh"`)) {
		t.Error("no refresh audit record")
	}
	for where, out := range map[string][]byte{"responses": seen.Bytes(), "logs": e.Logs(), "audit trail": e.AuditRaw(t)} {
		for what, secret := range secrets {
			if bytes.Contains(out, []byte(secret)) {
				t.Errorf("the %s appears in the %s", what, where)
			}
		}
	}
}
