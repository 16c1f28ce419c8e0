//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// countingStore counts grant reads on a real store.
type countingStore struct {
	store.Store
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, provider, user string) (*store.Grant, store.Version, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, provider, user)
}

const policyDecide = `package onbehalf.authz

default decision := {"allow": false, "reason": "nothing matched"}

decision := {"allow": true, "reason": "reads are fine"} if input.attributes.request.http.method == "GET"

decision := {"allow": false, "reason": "posting is audited only", "report_only": true} if input.attributes.request.http.method == "POST"

decision := {"allow": false, "reason": "never delete"} if input.attributes.request.http.method == "DELETE"
`

func TestPolicyThroughProxy(t *testing.T) {
	cs := &countingStore{}
	e := testenv.New(t, testenv.Options{
		Policy:    policyDecide,
		WrapStore: func(s store.Store) store.Store { cs.Store = s; return cs },
		Config:    func(c *sidecar.Config) { c.TokenCache.TTL = 0 },
	})
	assertion := e.Assert(t, testenv.User)
	do := func(method string) (*http.Response, errorBody, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, e.APIURL("/api/x"), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := e.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		if resp.StatusCode >= 400 {
			body = readError(t, resp)
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, body, e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
	}

	t.Run("allow", func(t *testing.T) {
		resp, _, rec := do("GET")
		if resp.StatusCode != 200 || rec["decision"] != "allow" || rec["reason"] != "reads are fine" {
			t.Errorf("got %d, record decision %v reason %v", resp.StatusCode, rec["decision"], rec["reason"])
		}
	})
	t.Run("report only", func(t *testing.T) {
		resp, _, rec := do("POST")
		if resp.StatusCode != 200 || rec["decision"] != "would_deny" {
			t.Errorf("got %d, record decision %v; want 200 and would_deny", resp.StatusCode, rec["decision"])
		}
	})
	t.Run("deny reaches neither store nor upstream", func(t *testing.T) {
		e.Upstream.Reset()
		before := cs.gets.Load()
		resp, body, rec := do("DELETE")
		if resp.StatusCode != 403 || body.Error != "policy_denied" || !strings.Contains(body.Message, "never delete") {
			t.Errorf("got %d %s %q; want 403 policy_denied with the reason", resp.StatusCode, body.Error, body.Message)
		}
		if rec["decision"] != "deny" || rec["policy_revision"] == "" {
			t.Errorf("record: decision %v revision %v", rec["decision"], rec["policy_revision"])
		}
		if n := cs.gets.Load() - before; n != 0 {
			t.Errorf("%d store reads for a denied request; want 0", n)
		}
		if n := len(e.Upstream.Requests()); n != 0 {
			t.Errorf("%d upstream requests for a denied request; want 0", n)
		}
	})
	t.Run("undefined denies", func(t *testing.T) {
		writePolicy(t, e, "package onbehalf.authz\n\nother := true\n")
		waitFor(t, func() bool { _, body, _ := do("GET"); return body.Error == "policy_denied" })
		_, body, _ := do("GET")
		if !strings.Contains(body.Message, "undefined") {
			t.Errorf("message %q; want it to say the policy was undefined", body.Message)
		}
	})
	t.Run("broken policy keeps the last good one", func(t *testing.T) {
		writePolicy(t, e, policyDecide)
		waitFor(t, func() bool { r, _, _ := do("GET"); return r.StatusCode == 200 })
		writePolicy(t, e, "package onbehalf.authz\n\ndecision := {\n") // does not compile
		waitFor(t, func() bool { return strings.Contains(readyz(t, e), "last reload failed") })
		if r, _, _ := do("GET"); r.StatusCode != 200 {
			t.Errorf("status %d after a broken reload; want the last good policy (200)", r.StatusCode)
		}
	})
	t.Run("policy using http.send is refused", func(t *testing.T) {
		writePolicy(t, e, "package onbehalf.authz\n\ndecision := {\"allow\": true} if {\n\thttp.send({\"method\": \"GET\", \"url\": \"https://127.0.0.1:1/\"})\n}\n")
		waitFor(t, func() bool { return strings.Contains(readyz(t, e), "http.send") })
		if r, _, _ := do("GET"); r.StatusCode != 200 {
			t.Errorf("status %d; want the last good policy still serving", r.StatusCode)
		}
	})
}

func TestPolicyTimeoutDenies(t *testing.T) {
	slow := `package onbehalf.authz

decision := {"allow": true} if {
	count([x | some a in numbers.range(1, 400); some b in numbers.range(1, 400); x := a * b]) > 0
}
`
	e := testenv.New(t, testenv.Options{Policy: slow, Config: func(c *sidecar.Config) { c.Policy.Timeout = time.Millisecond }})
	req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/x"), nil)
	req.Header.Set(identity.DefaultHeader, e.Assert(t, testenv.User))
	resp, err := e.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readError(t, resp)
	if resp.StatusCode != 403 || body.Error != "policy_denied" || !strings.Contains(body.Message, "timeout") {
		t.Errorf("got %d %s %q; want 403 policy_denied (timeout)", resp.StatusCode, body.Error, body.Message)
	}
	if n := len(e.Upstream.Requests()); n != 0 {
		t.Errorf("%d upstream requests; want 0", n)
	}
}

func writePolicy(t *testing.T, e *testenv.Env, src string) {
	t.Helper()
	path := filepath.Join(e.PolicyDir, "policy.rego")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func readyz(t *testing.T, e *testenv.Env) string {
	t.Helper()
	resp, err := http.Get("http://" + e.Sidecar.AdminAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("/readyz is not JSON: %s", b)
	}
	return string(b)
}

// waitFor polls cond for up to 10 s (file watching and reload are
// asynchronous).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("condition not met within 10s")
}
