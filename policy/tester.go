package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
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

// Rule-name prefixes of Rego tests, as `opa test` has them.
const (
	testPrefix     = "test_"
	skipTestPrefix = "todo_test_"
)

// testResult is the outcome of one Rego test rule.
//
// The runner is the sidecar's own rather than OPA's tester package, which
// links the Go "testing" package into the production binary for its
// benchmarks. It keeps `opa test`'s semantics for what the policies here
// write: a rule named test_* passes when it is true, todo_test_* is
// skipped, rules sharing a name run apart as name#01, name#02; a
// parameterised rule (test_x[case]) is reported as an error rather than
// judged by different rules.
type testResult struct {
	loc      *ast.Location
	name     string // data.pkg.test_name
	duration time.Duration
	fail     bool
	skip     bool
	err      error
	output   []byte // what the test printed
	// failedAt is the last expression that failed, "file:row:" and the
	// expression, for a failing test.
	failedAt string
}

func (r *testResult) pass() bool { return !r.fail && !r.skip && r.err == nil }

func (r *testResult) outcome() string {
	switch {
	case r.skip:
		return "SKIPPED"
	case r.err != nil:
		return "ERROR"
	case r.fail:
		return "FAIL"
	}
	return "PASS"
}

// runTests compiles modules with the engine's capabilities (tests see
// exactly the builtins the engine allows) and runs their test rules one
// after another in source order, each bounded by testTimeout, reading data
// from store within txn. err reports a compile error; a test's own error
// is in its result.
func runTests(ctx context.Context, modules map[string]*ast.Module, store storage.Store, txn storage.Transaction) ([]*testResult, error) {
	compiler := newCompiler().
		WithEnablePrintStatements(true).
		WithStageAfterID(ast.StageRewriteRuleHeadRefs, ast.CompilerStageDefinition{
			Name:       "NumberDuplicateTests",
			MetricName: "number_duplicate_tests",
			Stage:      numberDuplicateTests,
		})
	if compiler.Compile(modules); compiler.Failed() {
		return nil, compiler.Errors
	}
	var results []*testResult
	for _, f := range slices.Sorted(maps.Keys(compiler.Modules)) {
		mod := compiler.Modules[f]
		for _, rule := range mod.Rules {
			name, ref, ok := testName(rule.Head)
			if !ok {
				continue
			}
			if err := ctx.Err(); err != nil {
				return results, err
			}
			path := regoTestPath(mod.Package.Path, ref)
			r := &testResult{loc: rule.Loc(), name: path.String()}
			switch {
			case strings.HasPrefix(name, skipTestPrefix):
				r.skip = true
			case len(ref) != len(rule.Head.Ref()) || rule.Head.DocKind() != ast.CompleteDoc:
				r.err = fmt.Errorf("%s is a parameterised test rule; onbehalf policy test runs complete rules only (write one rule per case, or run opa test)", r.name)
			default:
				runTest(ctx, compiler, store, txn, path, r)
			}
			results = append(results, r)
		}
	}
	return results, nil
}

// runTest evaluates one test rule into r; a failing test is evaluated once
// more with a tracer to find the expression it failed at.
func runTest(ctx context.Context, compiler *ast.Compiler, store storage.Store, txn storage.Transaction, path ast.Ref, r *testResult) {
	eval := func(tracer topdown.QueryTracer) (rego.ResultSet, []byte, time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, testTimeout)
		defer cancel()
		var printed bytes.Buffer
		opts := []func(*rego.Rego){
			rego.Compiler(compiler),
			rego.Store(store),
			rego.Transaction(txn),
			rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(path)))),
			rego.PrintHook(topdown.NewPrintHook(&printed)),
		}
		if tracer != nil {
			opts = append(opts, rego.QueryTracer(tracer))
		}
		start := time.Now()
		rs, err := rego.New(opts...).Eval(ast.WithCompiler(ctx, compiler))
		return rs, printed.Bytes(), time.Since(start), err
	}
	rs, printed, d, err := eval(nil)
	r.duration, r.output = d, printed
	switch {
	case err != nil:
		r.err = err
		return
	case len(rs) == 1 && len(rs[0].Expressions) == 1 && rs[0].Expressions[0].Value == true:
		return
	}
	r.fail = true
	trace := topdown.NewBufferTracer()
	if _, _, _, err := eval(trace); err != nil {
		return
	}
	// The last failed expression of a query (not the every that wraps the
	// one that failed within it) is where the test went false, as opa test
	// --explain=fails reports it.
	for _, e := range slices.Backward(*trace) {
		if e.Op != topdown.FailOp || e.Location == nil || e.QueryID == 0 {
			continue
		}
		expr, ok := e.Node.(*ast.Expr)
		if !ok {
			continue
		}
		if _, every := expr.Terms.(*ast.Every); every {
			continue
		}
		r.failedAt = fmt.Sprintf("%s:%d:\n  %s", e.Location.File, e.Location.Row, strings.TrimSpace(string(e.Location.Text)))
		return
	}
}

// testName returns the name of the test a rule defines (its first head
// term with a test prefix) and the head's ref up to it, or false when the
// rule is no test.
func testName(h *ast.Head) (string, ast.Ref, bool) {
	ref := h.Ref().GroundPrefix()
	for i, t := range ref {
		var n string
		switch v := t.Value.(type) {
		case ast.Var:
			n = string(v)
		case ast.String:
			n = string(v)
		}
		if strings.HasPrefix(n, testPrefix) || strings.HasPrefix(n, skipTestPrefix) {
			return n, ref[:i+1], true
		}
	}
	return "", nil, false
}

// regoTestPath is the data path of the test rule pkg and ref name, with every
// key a string: a renamed duplicate (name#01) is no valid Rego variable.
func regoTestPath(pkg, ref ast.Ref) ast.Ref {
	path := pkg.Copy()
	for _, t := range ref {
		if v, ok := t.Value.(ast.Var); ok {
			t = ast.StringTerm(string(v))
		}
		path = append(path, t)
	}
	return path
}

// numberDuplicateTests renames the second and later test rules of one name
// in a package to name#01, name#02, …, so each runs and is reported on its
// own (Rego would otherwise merge them into one rule that any body makes
// true).
func numberDuplicateTests(c *ast.Compiler) *ast.Error {
	seen := map[string]int{}
	for _, f := range slices.Sorted(maps.Keys(c.Modules)) {
		mod := c.Modules[f]
		for _, rule := range mod.Rules {
			name, ref, ok := testName(rule.Head)
			if !ok || !strings.HasPrefix(name, testPrefix) {
				continue
			}
			key := mod.Package.Path.Extend(ref).String()
			k := seen[key]
			seen[key]++
			if k == 0 {
				continue
			}
			renamed := fmt.Sprintf("%s#%02d", name, k)
			head := rule.Head.Ref()
			rest := head[len(ref):]
			ref = ref.Copy()
			if len(ref) == 1 {
				ref[0] = ast.VarTerm(renamed)
			} else {
				ref[len(ref)-1] = ast.StringTerm(renamed)
			}
			rule.Head.SetRef(append(ref, rest...))
		}
	}
	return nil
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
	results, err := runTests(ctx, modules, store, txn)
	if err != nil {
		return fmt.Errorf("run policy tests: %w", explainCompileError(err))
	}
	var failed []string
	for _, r := range results {
		if r.fail || r.err != nil {
			failed = append(failed, strings.TrimPrefix(r.name, "data."))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	slices.Sort(failed)
	n := len(failed)
	if n > maxListedFailures {
		failed = append(failed[:maxListedFailures], fmt.Sprintf("and %d more", n-maxListedFailures))
	}
	return fmt.Errorf("%w: %s", ErrTestsFailed, strings.Join(failed, ", "))
}

// Test runs the Rego unit tests (test_* rules) under paths and writes a
// report like `opa test` does (only failures unless verbose, each failure
// with the expression it failed at). It compiles with the engine's
// capabilities, so a policy using a disabled builtin fails here as it would
// at load. passed is true when at least one test ran and none failed or
// errored; err reports what kept the tests from running (unreadable files,
// compile errors), or ErrNoTests.
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
	results, err := runTests(ctx, s.modules, store, txn)
	if err != nil {
		return false, fmt.Errorf("compile policy: %w", explainCompileError(err))
	}
	if len(results) == 0 {
		return false, ErrNoTests
	}
	passed = true
	for _, r := range results {
		passed = passed && (r.pass() || r.skip)
	}
	if err := writeReport(w, results, verbose); err != nil {
		return false, fmt.Errorf("report policy tests: %w", err)
	}
	return passed, nil
}

// writeReport writes results the way `opa test` does: each failing,
// erroring or skipped test (every test when verbose) under its file and
// line with what it printed, then where each failing test failed, then the
// counts.
func writeReport(w io.Writer, results []*testResult, verbose bool) error {
	var b bytes.Buffer
	rule := strings.Repeat("-", 80) + "\n"
	counts := map[string]int{}
	var failures []*testResult
	lastFile, listed := "", false
	for _, r := range results {
		counts[r.outcome()]++
		if r.fail && r.err == nil {
			failures = append(failures, r)
		}
		if r.pass() && !verbose {
			continue
		}
		listed = true
		if r.loc != nil {
			if lastFile != "" && lastFile != r.loc.File {
				b.WriteByte('\n')
			}
			fmt.Fprintf(&b, "%s:%d:\n", r.loc.File, r.loc.Row)
			lastFile = r.loc.File
		}
		if r.skip {
			fmt.Fprintf(&b, "%s: %s\n", r.name, r.outcome())
		} else {
			fmt.Fprintf(&b, "%s: %s (%s)\n", r.name, r.outcome(), r.duration)
		}
		if out := strings.TrimSpace(string(r.output)); out != "" {
			fmt.Fprintf(&b, "\n%s\n\n", indent(out, "  "))
		}
		if r.err != nil {
			fmt.Fprintf(&b, "  %v\n", r.err)
		}
	}
	if len(failures) > 0 {
		b.WriteString(rule + "FAILURES\n" + rule)
		for _, r := range failures {
			fmt.Fprintf(&b, "%s: %s (%s)\n", r.name, r.outcome(), r.duration)
			if r.failedAt != "" {
				fmt.Fprintf(&b, "\n%s\n", indent(r.failedAt, "  "))
			}
			b.WriteByte('\n')
		}
	}
	if listed {
		b.WriteString(rule)
	}
	total := len(results)
	for _, o := range []string{"PASS", "FAIL", "SKIPPED", "ERROR"} {
		if n := counts[o]; n > 0 {
			fmt.Fprintf(&b, "%s: %d/%d\n", o, n, total)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// indent prefixes every line of s with prefix.
func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
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
