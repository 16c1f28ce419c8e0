//go:build integration

package e2e

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestMetricsGolden runs a scripted set of requests and compares the
// onbehalf_* metric families (name, type, label names and the label values
// that must be bounded) with testdata/metrics.golden.
func TestMetricsGolden(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	assertion := e.Assert(t, testenv.User)
	c := e.Client()
	send := func(method, url, assertion string) {
		req, _ := http.NewRequest(method, url, nil)
		if assertion != "" {
			req.Header.Set(identity.DefaultHeader, assertion)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		resp.Body.Close()
		// The sidecar records a request after answering it; wait for the
		// audit record (written after the metrics) before scraping.
		e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
	}
	send("GET", e.APIURL("/api/ok"), assertion)
	send("GET", e.APIURL("/api/ok"), assertion) // token cache hit
	send("GET", e.APIURL("/api/anon"), "")
	send("DELETE", e.APIURL("/api/x"), assertion)
	send("GET", e.APIURL("/api/bob"), e.Assert(t, "bob")) // grant_missing

	resp, err := http.Get("http://" + e.Sidecar.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for name, mf := range families {
		if !strings.HasPrefix(name, "onbehalf_") {
			continue
		}
		labels := map[string]bool{}
		values := map[string]map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
				if lp.GetName() == "revision" {
					continue // differs per run
				}
				if values[lp.GetName()] == nil {
					values[lp.GetName()] = map[string]bool{}
				}
				values[lp.GetName()][lp.GetValue()] = true
			}
		}
		line := fmt.Sprintf("%s %s {%s}", name, strings.ToLower(mf.GetType().String()), strings.Join(sortedKeys(labels), ","))
		for _, l := range sortedKeys(labels) {
			if v := values[l]; len(v) > 0 {
				line += fmt.Sprintf(" %s=[%s]", l, strings.Join(sortedKeys(v), ","))
			}
		}
		lines = append(lines, line)
	}
	sort.Strings(lines)
	got := strings.Join(lines, "\n") + "\n"

	// Bounded labels: no user, host or path an agent chooses.
	for _, forbidden := range []string{"alice", "bob", "/api/", testenv.APIHost + ":"} {
		if strings.Contains(got, forbidden) {
			t.Errorf("a metric label carries %q", forbidden)
		}
	}
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("metrics differ from %s (run with -update after checking):\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
