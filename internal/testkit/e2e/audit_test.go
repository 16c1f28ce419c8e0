//go:build integration

package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// TestAuditFullDiskFailsClosed points the audit file at /dev/full: every
// write fails with ENOSPC. Injecting requests must be refused with 503
// audit_unavailable before the token leaves, and nothing reaches the API.
func TestAuditFullDiskFailsClosed(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Audit.File.Path = "/dev/full"
	}})
	req, _ := http.NewRequest(http.MethodPost, e.APIURL("/api/chat.postMessage"), nil)
	req.Header.Set(identity.DefaultHeader, e.Assert(t, testenv.User))
	resp, err := e.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readError(t, resp); resp.StatusCode != 503 || got.Error != "audit_unavailable" {
		t.Errorf("got %d %s; want 503 audit_unavailable", resp.StatusCode, got.Error)
	}
	if n := len(e.Upstream.Requests()); n != 0 {
		t.Errorf("%d requests reached the upstream; want 0", n)
	}
	// readiness reports the audit sink.
	r, err := http.Get("http://" + e.Sidecar.AdminAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d with a failing audit sink; want 503", r.StatusCode)
	}
}

// TestAuditFailOpen: with fail_closed off, a failing sink does not stop
// requests (the choice is the operator's, and documented).
func TestAuditFailOpen(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Audit.File.Path = "/dev/full"
		c.Audit.FailClosed = false
	}})
	req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/x"), nil)
	req.Header.Set(identity.DefaultHeader, e.Assert(t, testenv.User))
	resp, err := e.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d; want 200 in fail-open mode", resp.StatusCode)
	}
}

// TestAdminListenerIsReadOnly: the agent can reach the admin listener (it
// shares the pod's network namespace), so nothing there may change state:
// every endpoint answers GET only, pprof is off by default, and no grant,
// route or policy can be changed through it.
func TestAdminListenerIsReadOnly(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	base := "http://" + e.Sidecar.AdminAddr()
	for _, path := range []string{"/healthz", "/readyz", "/ca.pem", "/metrics"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			req, _ := http.NewRequest(method, base+path, strings.NewReader("x"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d; want 405", method, path, resp.StatusCode)
			}
		}
	}
	for _, path := range []string{"/debug/pprof/", "/grants", "/admin", "/policy", "/config"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d; want 404", path, resp.StatusCode)
		}
	}
	resp, err := http.Get(base + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "PRIVATE KEY") || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
		t.Errorf("/ca.pem serves %q; want the certificate only", b)
	}
}
