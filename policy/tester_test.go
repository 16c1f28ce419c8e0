package policy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTest(t *testing.T) {
	t.Run("failing", func(t *testing.T) {
		var out bytes.Buffer
		passed, err := Test(context.Background(), []string{"testdata/failing_tests"}, &out, false)
		if err != nil {
			t.Fatalf("Test: %v", err)
		}
		if passed {
			t.Errorf("passed = true; want false\n%s", out.String())
		}
		report := out.String()
		for _, want := range []string{"test_denies_everything: FAIL", "PASS: 1/2", "FAIL: 1/2"} {
			if !strings.Contains(report, want) {
				t.Errorf("report lacks %q:\n%s", want, report)
			}
		}
		if strings.Contains(report, "test_passes: PASS") {
			t.Errorf("non-verbose report lists passing tests:\n%s", report)
		}
	})
	t.Run("verbose", func(t *testing.T) {
		var out bytes.Buffer
		if _, err := Test(context.Background(), []string{"testdata/failing_tests"}, &out, true); err != nil {
			t.Fatalf("Test: %v", err)
		}
		if !strings.Contains(out.String(), "test_passes: PASS") {
			t.Errorf("verbose report lacks the passing test:\n%s", out.String())
		}
	})
	t.Run("no tests", func(t *testing.T) {
		passed, err := Test(context.Background(), []string{"testdata/decide"}, &bytes.Buffer{}, false)
		if passed || !errors.Is(err, ErrNoTests) {
			t.Errorf("Test = %v, %v; want false, ErrNoTests", passed, err)
		}
	})
	t.Run("disabled builtin", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "policy.rego"), "package onbehalf.authz\n\ndecision := true\n")
		writeFile(t, filepath.Join(dir, "policy_test.rego"), "package onbehalf.authz_test\n\ntest_runtime if opa.runtime()\n")
		passed, err := Test(context.Background(), []string{dir}, &bytes.Buffer{}, false)
		if passed || !errors.Is(err, ErrDisabledBuiltin) {
			t.Errorf("Test = %v, %v; want false and an error wrapping ErrDisabledBuiltin", passed, err)
		}
	})
	t.Run("failure line", func(t *testing.T) {
		var out bytes.Buffer
		if _, err := Test(context.Background(), []string{"testdata/failing_tests"}, &out, false); err != nil {
			t.Fatalf("Test: %v", err)
		}
		want := "FAILURES\n" + strings.Repeat("-", 80) + "\ndata.onbehalf.authz_test.test_denies_everything: FAIL ("
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks the failures section %q:\n%s", want, out.String())
		}
		if !strings.Contains(out.String(), "policy_test.rego:9:\n    not authz.decision.allow\n") {
			t.Errorf("report does not say where the test failed:\n%s", out.String())
		}
	})
	t.Run("opa test semantics", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "policy_test.rego"), `package onbehalf.semantics_test

test_same_name if true

# A second rule of one name runs as a test of its own: Rego alone would
# merge the two, and the first body would make the pair pass.
test_same_name if false

todo_test_later if false

test_prints if {
	print("hello from rego")
	true
}

test_not_true := 7

conflict := 1

conflict := 2 if true

test_error if conflict == 1

test_cases[name] if {
	some name in ["a", "b"]
}
`)
		var out bytes.Buffer
		passed, err := Test(context.Background(), []string{dir}, &out, true)
		if err != nil {
			t.Fatalf("Test: %v", err)
		}
		if passed {
			t.Errorf("passed = true; want false")
		}
		report := out.String()
		for _, want := range []string{
			"data.onbehalf.semantics_test.test_same_name: PASS",
			"data.onbehalf.semantics_test[\"test_same_name#01\"]: FAIL",
			"data.onbehalf.semantics_test.todo_test_later: SKIPPED\n",
			"data.onbehalf.semantics_test.test_prints: PASS",
			"\n  hello from rego\n",
			"data.onbehalf.semantics_test.test_not_true: FAIL",
			"data.onbehalf.semantics_test.test_error: ERROR",
			"conflicting values",
			"data.onbehalf.semantics_test.test_cases: ERROR",
			"parameterised test rule",
			"PASS: 2/7\nFAIL: 2/7\nSKIPPED: 1/7\nERROR: 2/7\n",
		} {
			if !strings.Contains(report, want) {
				t.Errorf("report lacks %q:\n%s", want, report)
			}
		}
	})
	t.Run("missing path", func(t *testing.T) {
		passed, err := Test(context.Background(), []string{"testdata/missing"}, &bytes.Buffer{}, false)
		if passed || err == nil {
			t.Errorf("Test = %v, %v; want false and an error", passed, err)
		}
	})
}

func TestEvalFile(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Paths = []string{"../examples/policies/default"}

	in, err := os.ReadFile("testdata/default_input.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := EvalFile(context.Background(), cfg, in)
	if err != nil {
		t.Fatalf("EvalFile: %v", err)
	}
	if !d.Allow || d.Reason != "user alice may use slack" || d.Revision == "" {
		t.Errorf("EvalFile = %+v; want allow for alice on slack, with a revision", d)
	}

	tests := []struct {
		name  string
		cfg   Config
		input string
		want  error
	}{
		{"invalid JSON", cfg, `{"attributes":`, nil},
		{"not an object", cfg, `[1, 2]`, nil},
		{"policy refused", testConfig("testdata/httpsend"), `{}`, ErrNotReady},
		{"invalid config", Config{}, `{}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EvalFile(context.Background(), tt.cfg, []byte(tt.input))
			if err == nil {
				t.Fatal("EvalFile error = nil; want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("EvalFile error = %v; want one wrapping %v", err, tt.want)
			}
		})
	}
}

func TestEvalFileUndefinedNamesOtherRules(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Paths = []string{"../examples/policies/envoy"}
	in, err := os.ReadFile("testdata/default_input.json")
	if err != nil {
		t.Fatal(err)
	}
	_, err = EvalFile(context.Background(), cfg, in)
	var ue *UndefinedError
	if !errors.As(err, &ue) {
		t.Fatalf("EvalFile error = %v; want an UndefinedError", err)
	}
	if want := []string{"data.envoy.authz.allow"}; !slices.Equal(ue.Defined, want) {
		t.Errorf("Defined = %v; want %v", ue.Defined, want)
	}
	if !strings.Contains(err.Error(), "this policy defines data.envoy.authz.allow — pass --query") {
		t.Errorf("error %q gives no hint to pass --query", err)
	}

	// The same policy under the query it defines decides.
	cfg.Query = "data.envoy.authz.allow"
	if _, err := EvalFile(context.Background(), cfg, in); err != nil {
		t.Errorf("EvalFile with --query data.envoy.authz.allow: %v", err)
	}
}

func TestEvalFileTimeoutIsAnError(t *testing.T) {
	cfg := testConfig("testdata/slow")
	cfg.Timeout = 10 * time.Millisecond
	_, err := EvalFile(context.Background(), cfg, []byte(`{}`))
	if !errors.Is(err, ErrEval) {
		t.Errorf("EvalFile of a policy that times out: err = %v; want ErrEval", err)
	}
}

// TestSeveralDirectoriesAreTestedApart runs two example policies that
// define the same package: compiled together they conflict.
func TestSeveralDirectoriesAreTestedApart(t *testing.T) {
	var out strings.Builder
	dirs := []string{"../examples/policies/default", "../examples/policies/read_only"}
	passed, err := Test(context.Background(), dirs, &out, false)
	if err != nil || !passed {
		t.Fatalf("Test(%v) = %v, %v; want both sets passing\n%s", dirs, passed, err, out.String())
	}
	for _, d := range dirs {
		if !strings.Contains(out.String(), "== "+d+"\n") {
			t.Errorf("output has no header for %s:\n%s", d, out.String())
		}
	}
	// A failing set fails the run but the others still run.
	out.Reset()
	passed, err = Test(context.Background(), []string{"testdata/failing_tests", dirs[0]}, &out, false)
	if passed {
		t.Errorf("Test with a failing set passed:\n%s", out.String())
	}
	if err != nil {
		t.Errorf("Test with a failing set: err = %v; want nil (tests failing is not an error)", err)
	}
	if !strings.Contains(out.String(), "== "+dirs[0]) {
		t.Errorf("the set after a failing one did not run:\n%s", out.String())
	}
}
