//go:build integration

package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// TestGrantUseRecorded: injected requests note the grant's last use and
// agent in the store's activity record, once for a burst of requests
// (throttled to one write a minute), and refused requests note nothing.
func TestGrantUseRecorded(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	as, ok := e.Store.(store.ActivityStore)
	if !ok {
		t.Fatalf("%T keeps no activity records", e.Store)
	}
	get := func(user string, method string) int {
		t.Helper()
		req, _ := http.NewRequest(method, e.APIURL("/api/chat.postMessage"), nil)
		req.Header.Set(identity.DefaultHeader, e.Assert(t, user))
		resp, err := e.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(testenv.User, http.MethodDelete); code != http.StatusForbidden {
		t.Fatalf("DELETE: %d; want the policy's 403", code)
	}
	if code := get("bob", http.MethodGet); code != http.StatusUnauthorized {
		t.Fatalf("bob without a grant: %d; want 401", code)
	}
	start := time.Now()
	for range 5 {
		if code := get(testenv.User, http.MethodGet); code != http.StatusOK {
			t.Fatalf("alice: %d; want 200", code)
		}
	}
	// The note is written in the background: wait for the counter, which
	// moves once the store has it.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(scrape(t, e, "onbehalf_grant_use_records_total"), `result="written"} 1`) {
		if time.Now().After(deadline) {
			t.Fatalf("no use note written within 10s:\n%s", scrape(t, e, "onbehalf_grant_use_records_total"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	a, err := as.Activity(context.Background(), testenv.Provider, testenv.User)
	if err != nil {
		t.Fatalf("alice's activity: %v", err)
	}
	if a.LastUsedBy != testenv.Agent || a.LastUsedAt.Before(start.Add(-time.Second)) || a.LastUsedAt.After(time.Now()) {
		t.Errorf("alice's activity %+v; want %s just now", a, testenv.Agent)
	}
	if _, err := as.Activity(context.Background(), testenv.Provider, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bob's activity after a refusal: %v; want none", err)
	}
	if got := scrape(t, e, "onbehalf_grant_use_records_total"); !strings.Contains(got, `result="written"} 1`) || !strings.Contains(got, `result="dropped"} 0`) {
		t.Errorf("use notes:\n%s\nwant exactly one written for the burst", got)
	}
}

// scrape returns the /metrics lines of the metric name.
func scrape(t *testing.T, e *testenv.Env, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.Sidecar.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
