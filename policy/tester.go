package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/util"
)

// ErrTestsFailed is wrapped by the error that refuses a policy whose own
// tests fail on reload.
var ErrTestsFailed = errors.New("policy tests failed")

// ErrNoTests is returned by Test when the paths hold no test rules.
var ErrNoTests = errors.New("no policy tests found")

// Test timeouts.
const (
	// testTimeout bounds one Rego test, as `opa test` does by default.
	testTimeout = 5 * time.Second
	// reloadTestTimeout bounds a whole test run before a reload, so that a
	// pathological test suite cannot hold the reload goroutine forever.
	reloadTestTimeout = 30 * time.Second
	// maxListedFailures bounds how many failing tests a reload error names.
	maxListedFailures = 5
)

// newTestRunner returns a runner that compiles with the engine's restricted
// capabilities, so tests see exactly the builtins the engine allows.
func newTestRunner(modules map[string]*ast.Module, store storage.Store) *tester.Runner {
	return tester.NewRunner().
		SetCompiler(newCompiler().WithEnablePrintStatements(true)).
		SetStore(store).
		SetModules(modules).
		SetTimeout(testTimeout).
		CapturePrintOutput(true)
}

// runReloadTests runs the policy's own tests and returns an error wrapping
// ErrTestsFailed, naming the failing tests, when any fails. A policy without
// tests passes.
func runReloadTests(ctx context.Context, modules map[string]*ast.Module, store storage.Store) error {
	ctx, cancel := context.WithTimeout(ctx, reloadTestTimeout)
	defer cancel()
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return fmt.Errorf("run policy tests: %w", err)
	}
	defer store.Abort(ctx, txn)
	ch, err := newTestRunner(modules, store).RunTests(ctx, txn)
	if err != nil {
		return fmt.Errorf("run policy tests: %w", explainCompileError(err))
	}
	var failed []string
	for r := range ch {
		if r.Fail || r.Error != nil {
			failed = append(failed, strings.TrimPrefix(r.Package, "data.")+"."+r.Name)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	sort.Strings(failed)
	n := len(failed)
	if n > maxListedFailures {
		failed = append(failed[:maxListedFailures], fmt.Sprintf("and %d more", n-maxListedFailures))
	}
	return fmt.Errorf("%w: %s", ErrTestsFailed, strings.Join(failed, ", "))
}

// Test runs the Rego unit tests (test_* rules) under paths with OPA's tester
// and writes a report like `opa test` does (only failures unless verbose). It
// compiles with the engine's capabilities, so a policy using a disabled
// builtin fails here as it would at load. passed is true when at least one
// test ran and none failed or errored; err reports what kept the tests from
// running (unreadable files, compile errors), or ErrNoTests.
//
// Each directory in paths is a policy set of its own, compiled and tested
// apart from the others (two example policies may well define the same
// package); the files among paths, if any, form one more set together. With
// more than one set, each set's report starts with a "== NAME" line.
func Test(ctx context.Context, paths []string, w io.Writer, verbose bool) (passed bool, err error) {
	sets := testSets(paths)
	if len(sets) == 1 {
		return testSet(ctx, sets[0], w, verbose)
	}
	passed = true
	var errs []error
	for _, set := range sets {
		fmt.Fprintf(w, "== %s\n", strings.Join(set, " "))
		ok, err := testSet(ctx, set, w, verbose)
		if err != nil {
			fmt.Fprintf(w, "error: %v\n", err)
			errs = append(errs, fmt.Errorf("%s: %w", strings.Join(set, " "), err))
		}
		passed = passed && ok && err == nil
	}
	return passed, errors.Join(errs...)
}

// testSets groups paths into policy sets: each directory alone, the files
// together (in the place of the first file).
func testSets(paths []string) [][]string {
	var sets [][]string
	files := -1
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			if files < 0 {
				files = len(sets)
				sets = append(sets, nil)
			}
			sets[files] = append(sets[files], p)
			continue
		}
		sets = append(sets, []string{p}) // a directory, or a path whose error the load reports
	}
	return sets
}

// testSet runs the tests of one policy set.
func testSet(ctx context.Context, paths []string, w io.Writer, verbose bool) (passed bool, err error) {
	s, err := loadFiles(paths)
	if err != nil {
		return false, err
	}
	store := inmem.NewFromObjectWithOpts(s.data, inmem.OptReturnASTValuesOnRead(true))
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return false, fmt.Errorf("run policy tests: %w", err)
	}
	defer store.Abort(ctx, txn)
	ch, err := newTestRunner(s.modules, store).RunTests(ctx, txn)
	if err != nil {
		return false, fmt.Errorf("compile policy: %w", explainCompileError(err))
	}

	var results []*tester.Result
	passed = true
	for r := range ch {
		results = append(results, r)
		if r.Fail || r.Error != nil {
			passed = false
		}
	}
	if len(results) == 0 {
		return false, ErrNoTests
	}
	// The runner delivers results as tests finish; report them in source
	// order so the output is stable.
	sort.SliceStable(results, func(i, j int) bool {
		a, b := results[i].Location, results[j].Location
		if a == nil || b == nil {
			return a != nil
		}
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Row < b.Row
	})
	replay := make(chan *tester.Result, len(results))
	for _, r := range results {
		replay <- r
	}
	close(replay)
	if err := (tester.PrettyReporter{Output: w, Verbose: verbose, FailureLine: true}).Report(replay); err != nil {
		return false, fmt.Errorf("report policy tests: %w", err)
	}
	return passed, nil
}

// EvalFile loads the policy cfg names (files, or a bundle: ctx bounds the
// wait for the first download), evaluates it once against inputJSON and
// returns the decision. inputJSON may be any JSON object, an Input or an
// opa-envoy-plugin input alike. cfg.Watch is ignored.
func EvalFile(ctx context.Context, cfg Config, inputJSON []byte) (Decision, error) {
	var raw any
	if err := util.NewJSONDecoder(bytes.NewReader(inputJSON)).Decode(&raw); err != nil {
		return Decision{}, fmt.Errorf("parse input: %w", err)
	}
	input, err := ast.InterfaceToValue(raw)
	if err != nil {
		return Decision{}, fmt.Errorf("parse input: %w", err)
	}
	if _, ok := input.(ast.Object); !ok {
		return Decision{}, errors.New("parse input: not a JSON object")
	}

	cfg.Watch = false
	e, err := New(ctx, cfg, Options{})
	if err != nil {
		return Decision{}, err
	}
	defer e.Close()
	select {
	case <-e.attempted:
	case <-ctx.Done():
	}
	if e.cur.Load() == nil {
		if err := e.lastError(); err != nil {
			return Decision{}, fmt.Errorf("%w: %w", ErrNotReady, err)
		}
		return Decision{}, fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
	}
	p := e.cur.Load()
	d, outcome := p.evalReport(ctx, input, e.cfg.Timeout)
	switch outcome {
	case outcomeFailed:
		return d, fmt.Errorf("%w: %s", ErrEval, d.Reason)
	case outcomeUndefined:
		return d, &UndefinedError{Query: e.cfg.Query, Defined: p.decisionRules}
	}
	return d, nil
}

// ErrEval is returned by EvalFile when the policy could not decide (an
// evaluation error or a timeout).
var ErrEval = errors.New("policy evaluation failed")

// UndefinedError is returned by EvalFile when the query has no value for the
// input. Defined lists the policy's decision and allow rules, which the
// query may have meant to name.
type UndefinedError struct {
	Query   string
	Defined []string
}

func (e *UndefinedError) Error() string {
	msg := "query " + e.Query + " is undefined for this input"
	var others []string
	for _, d := range e.Defined {
		if d != e.Query {
			others = append(others, d)
		}
	}
	if len(others) > 0 {
		msg += "; this policy defines " + strings.Join(others, ", ") + " — pass --query"
	}
	return msg
}
