//go:build integration

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the harness's upstream child, as
// the loadbench binary does.
func TestMain(m *testing.M) {
	if os.Getenv(upstreamDirEnv) != "" {
		os.Exit(upstreamMain())
	}
	os.Exit(m.Run())
}

// smokeTimeout bounds the whole smoke run; it takes seconds.
const smokeTimeout = 3 * time.Minute

// repoRoot is the module root (the test runs in tools/loadbench).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// onbehalfBinary is $ONBEHALF_BIN (make test builds it), or a fresh build.
func onbehalfBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ONBEHALF_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	bin := filepath.Join(t.TempDir(), "onbehalf")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/onbehalf")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build onbehalf: %v\n%s", err, out)
	}
	return bin
}

// TestSmoke runs the harness end to end in smoke mode, the way make bench
// runs it but with a few hundred requests per phase: the real onbehalf
// binary, the upstream child, every phase. It checks that every phase of
// direct and onbehalf ran with no failed request (the upstream answers 200
// only when the token was injected) and that the table was printed and
// written. It asserts nothing about timing.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), smokeTimeout)
	defer cancel()
	out := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(out, []byte("# Benchmarks\n\nHand-written prose stays.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{
		"--smoke",
		// A rate a loaded CI machine keeps up with even directly: the
		// smoke run checks the phases work, and "fell behind" would be
		// a timing result.
		"--rate", "100",
		"--onbehalf", onbehalfBinary(t),
		"--policy", filepath.Join(repoRoot(t), "examples", "policies", "default"),
		"--write", out,
	}, &stdout, &stderr)
	report := stdout.String()
	if code != 0 {
		t.Fatalf("loadbench exited %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), report)
	}
	for _, want := range []string{
		"| setup | req/s at saturation |",
		"| direct | ",
		"| onbehalf | ",
		"| setup | first-seen hosts/s |",
		"CPU per request at saturation",
		"| onbehalf | first-seen host | ",
		"Smoke run",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	// Every phase ran: nothing was skipped, nothing failed.
	for _, bad := range []string{"not run", "fails", "failed"} {
		if strings.Contains(report, bad) {
			t.Errorf("report says %q:\n%s", bad, report)
		}
	}
	for _, absent := range []string{"| squid |", "| mitmproxy |"} {
		if strings.Contains(report, absent) {
			t.Errorf("smoke mode ran a competitor (%s)", absent)
		}
	}
	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(written)
	if !strings.HasPrefix(doc, "# Benchmarks\n\nHand-written prose stays.\n") || !strings.Contains(doc, beginMarker) ||
		!strings.Contains(doc, endMarker) || !strings.Contains(doc, "| onbehalf | ") {
		t.Errorf("written file:\n%s", doc)
	}
}

// TestSmokeUsers runs the many-users workload end to end in smoke mode: a
// few dozen users, each with a grant and an assertion of their own, on the
// embedded store and on a real Vault, each user's request accepted by the
// upstream only with that user's token. It checks that every case ran with
// no failed request and that the table was printed and written beside the
// one-user table. It asserts nothing about timing.
func TestSmokeUsers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), smokeTimeout)
	defer cancel()
	out := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(out, []byte("# Benchmarks\n\n"+beginMarker+"\nthe one-user table\n"+endMarker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{
		"--smoke", "--users", "30",
		"--rate", "100", // as in TestSmoke: a rate a loaded machine keeps
		"--onbehalf", onbehalfBinary(t),
		"--policy", filepath.Join(repoRoot(t), "examples", "policies", "default"),
		"--vault-policy", filepath.Join(repoRoot(t), "examples", "vault", "onbehalf-sidecar.hcl"),
		"--write", out,
	}, &stdout, &stderr)
	report := stdout.String()
	if code != 0 {
		t.Fatalf("loadbench exited %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), report)
	}
	for _, want := range []string{
		"| store | users | spread |",
		"| embedded | 1 | one | ",
		"| embedded | 30 | uniform | ",
		"| embedded | 30 | zipf | ",
		"| vault | 1 | one | ",
		"| vault | 30 | uniform | ",
		"| vault | 30 | zipf | ",
		"Smoke run",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	for _, bad := range []string{"fails", "failed"} {
		if strings.Contains(report, bad) {
			t.Errorf("report says %q:\n%s", bad, report)
		}
	}
	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(written)
	if !strings.Contains(doc, "the one-user table") || !strings.Contains(doc, beginUsersMarker) ||
		!strings.Contains(doc, endUsersMarker) || !strings.Contains(doc, "| vault | 30 | zipf | ") {
		t.Errorf("written file:\n%s", doc)
	}
}

// TestSmokeVersus runs the side-by-side workload for each feature with two
// short rounds: two onbehalf instances, with and without the feature,
// taking turns, every request succeeding. It asserts nothing about timing.
func TestSmokeVersus(t *testing.T) {
	for _, feat := range []string{"scrub", "rate-limits"} {
		t.Run(feat, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), smokeTimeout)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, []string{
				"--versus", feat, "--rounds", "2", "--duration", "300ms",
				"--rate", "100", // as in TestSmoke: a rate a loaded machine keeps
				"--onbehalf", onbehalfBinary(t),
				"--policy", filepath.Join(repoRoot(t), "examples", "policies", "default"),
			}, &stdout, &stderr)
			report := stdout.String()
			if code != 0 {
				t.Fatalf("loadbench exited %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), report)
			}
			for _, want := range []string{
				"### " + feat + " on and off",
				"| round | off req/s | on req/s | on ÷ off |",
				"| 1 | ", "| 2 | ", "| all | ",
				"| off | ", "| on | ",
				"Added p50 at 100 req/s",
			} {
				if !strings.Contains(report, want) {
					t.Errorf("report lacks %q:\n%s", want, report)
				}
			}
		})
	}
}
