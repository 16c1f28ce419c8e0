package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// waitTimeout bounds every wait for something asynchronous (a reload, a
// bundle poll); the operations themselves take milliseconds to a second.
const waitTimeout = 15 * time.Second

// testConfig returns a file-based configuration for paths, without watching.
func testConfig(paths ...string) Config {
	cfg := DefaultConfig()
	cfg.Paths = paths
	cfg.Watch = false
	return cfg
}

// newEngine builds an engine and closes it when the test ends.
func newEngine(t *testing.T, cfg Config, o Options) *Engine {
	t.Helper()
	e, err := New(context.Background(), cfg, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeFile writes content to path, creating parent directories.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes content next to path and renames it over path, as
// editors do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// input builds the policy input for a GET of target by alice's agent on the
// Slack route.
func input(t testing.TB, method, target string) *Input {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	return NewInput(r, InputArgs{
		Source:  "127.0.0.1:51234",
		Subject: Subject{User: "alice", Agent: "agent-7", Issuer: "https://orchestrator.example"},
		Route:   &Route{Provider: "slack", Host: "slack.com", Name: "slack"},
		Scheme:  "https",
		Now:     time.Date(2026, 6, 18, 9, 0, 0, 0, time.UTC),
	})
}

// events records OnReload events.
type events struct {
	mu  sync.Mutex
	evs []ReloadEvent
}

func (r *events) record(ev ReloadEvent) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

func (r *events) all() []ReloadEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ReloadEvent(nil), r.evs...)
}

func TestDecide(t *testing.T) {
	e := newEngine(t, testConfig("testdata/decide"), Options{})
	if !e.Status().Ready {
		t.Fatalf("Status().Ready = false; want true (LastError %q)", e.Status().LastError)
	}
	rev := e.Revision()
	tests := []struct {
		name string
		want Decision
	}{
		{"bool_allow", Decision{Allow: true}},
		{"bool_deny", Decision{Reason: ReasonDenied}},
		{"object_allow", Decision{Allow: true, Reason: "fine", Extra: map[string]any{"rule": "r1"}}},
		{"object_deny", Decision{Reason: "nope"}},
		{"deny_without_reason", Decision{Reason: ReasonDenied}},
		{"report_only", Decision{Reason: "would deny", ReportOnly: true}},
		{"no_allow", Decision{Reason: ReasonError + ": decision object has no boolean allow"}},
		{"allow_string", Decision{Reason: ReasonError + ": decision object has no boolean allow"}},
		{"string", Decision{Reason: ReasonError + ": decision is a string, not a boolean or an object"}},
		{"report_only_string", Decision{Reason: ReasonError + ": decision report_only is not a boolean"}},
		{"nothing_matches", Decision{Reason: ReasonUndefined}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.Decide(context.Background(), input(t, "GET", "https://slack.com/api/x?case="+tt.name))
			tt.want.Revision = rev
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide mismatch (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("eval_error", func(t *testing.T) {
		got := e.Decide(context.Background(), input(t, "GET", "https://slack.com/api/x?case=conflict"))
		if got.Allow || got.ReportOnly {
			t.Errorf("Decide = %+v; want a plain deny", got)
		}
		if !strings.HasPrefix(got.Reason, ReasonError+": ") || !strings.Contains(got.Reason, "conflict") {
			t.Errorf("Reason = %q; want %q followed by the conflict error", got.Reason, ReasonError+": ")
		}
	})

	t.Run("nil_input", func(t *testing.T) {
		got := e.Decide(context.Background(), nil)
		if got.Allow || !strings.HasPrefix(got.Reason, ReasonError) {
			t.Errorf("Decide(nil) = %+v; want a deny with a policy error", got)
		}
	})
}

func TestDecideTimeout(t *testing.T) {
	cfg := testConfig("testdata/slow")
	cfg.Timeout = 5 * time.Millisecond
	e := newEngine(t, cfg, Options{})

	start := time.Now()
	got := e.Decide(context.Background(), input(t, "GET", "https://slack.com/"))
	took := time.Since(start)
	if got.Allow || got.Reason != ReasonTimeout {
		t.Errorf("Decide = %+v; want a deny with reason %q", got, ReasonTimeout)
	}
	// The policy would run for many minutes; the deadline must stop it.
	if took > 2*time.Second {
		t.Errorf("Decide took %s; want it stopped near the %s deadline", took, cfg.Timeout)
	}

	t.Run("caller_deadline", func(t *testing.T) {
		cfg.Timeout = time.Second
		e := newEngine(t, cfg, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		if got := e.Decide(ctx, input(t, "GET", "https://slack.com/")); got.Allow || got.Reason != ReasonTimeout {
			t.Errorf("Decide = %+v; want a deny with reason %q", got, ReasonTimeout)
		}
	})

	t.Run("caller_canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if got := e.Decide(ctx, input(t, "GET", "https://slack.com/")); got.Allow || got.Reason != ReasonCanceled {
			t.Errorf("Decide = %+v; want a deny with reason %q", got, ReasonCanceled)
		}
	})
}

// TestDecideInputHasNoCredentials sends every kind of credential header
// through Decide and checks that none reaches the policy: the policy echoes
// its whole input back in the decision.
func TestDecideInputHasNoCredentials(t *testing.T) {
	e := newEngine(t, testConfig("testdata/decide"), Options{})
	const canary = "CANARY-SECRET-7f3a"
	r := httptest.NewRequest("POST", "https://slack.com/api/chat.postMessage?case=echo", strings.NewReader("{}"))
	r.Header.Set("Authorization", "Bearer "+canary+"-authz")
	r.Header.Set("Proxy-Authorization", "Bearer "+canary+"-proxy")
	r.Header.Set("Cookie", "session="+canary+"-cookie")
	r.Header.Set("Set-Cookie", "session="+canary+"-setcookie")
	r.Header.Set("Onbehalf-Assertion", canary+"-default-assertion")
	r.Header.Set("X-Task-Assertion", canary+"-assertion")
	r.Header.Set("X-Api-Key", canary+"-apikey")
	r.Header.Set("Content-Type", "application/json")
	in := NewInput(r, InputArgs{
		Subject:         Subject{User: "alice", Claims: map[string]any{"task_id": "T-1"}},
		Route:           &Route{Provider: "slack", Host: "slack.com"},
		AssertionHeader: "X-Task-Assertion",
		DropHeaders:     []string{"x-api-key"},
	})
	d := e.Decide(context.Background(), in)
	if !d.Allow {
		t.Fatalf("Decide = %+v; want allow", d)
	}
	seen, err := json.Marshal(d.Extra["input"])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(seen), canary) {
		t.Errorf("policy input contains a credential: %s", seen)
	}
	if !strings.Contains(string(seen), `"content-type":"application/json"`) {
		t.Errorf("policy input lacks the ordinary content-type header: %s", seen)
	}
}

func TestDecideNotLoaded(t *testing.T) {
	var evs events
	e := newEngine(t, testConfig("testdata/httpsend"), Options{OnReload: evs.record})
	st := e.Status()
	if st.Ready || st.Revision != "" {
		t.Errorf("Status = %+v; want not ready, no revision", st)
	}
	if want := "policy uses disabled builtin http.send"; !strings.Contains(st.LastError, want) {
		t.Errorf("Status().LastError = %q; want it to contain %q", st.LastError, want)
	}
	if got := e.Decide(context.Background(), input(t, "GET", "https://slack.com/")); got.Allow || got.Reason != ReasonNotLoaded {
		t.Errorf("Decide = %+v; want a deny with reason %q", got, ReasonNotLoaded)
	}
	select {
	case <-e.Ready():
		t.Error("Ready() is closed; want it open until a policy loads")
	default:
	}
	got := evs.all()
	if len(got) != 1 || !errors.Is(got[0].Err, ErrDisabledBuiltin) {
		t.Fatalf("OnReload events = %+v; want one wrapping ErrDisabledBuiltin", got)
	}
	if !strings.HasPrefix(got[0].Source, "files:") {
		t.Errorf("event Source = %q; want a files: source", got[0].Source)
	}
}

func TestDisabledBuiltins(t *testing.T) {
	tests := []struct {
		builtin string
		module  string
		query   string
	}{
		{"http.send", `decision := {"allow": http.send({"method": "GET", "url": "http://127.0.0.1:1"}).status_code == 200}`, ""},
		{"net.lookup_ip_addr", `decision := {"allow": count(net.lookup_ip_addr("localhost")) > 0}`, ""},
		{"opa.runtime", `decision := {"allow": opa.runtime().env.HOME != ""}`, ""},
		{"http.send", `decision := true`, `http.send({"method": "GET", "url": "http://127.0.0.1:1"})`},
	}
	for _, tt := range tests {
		t.Run(tt.builtin, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "policy.rego"), "package onbehalf.authz\n\n"+tt.module+"\n")
			cfg := testConfig(dir)
			if tt.query != "" {
				cfg.Query = tt.query
			}
			e := newEngine(t, cfg, Options{})
			if e.Status().Ready {
				t.Fatalf("policy using %s loaded; want it refused", tt.builtin)
			}
			err := e.lastError()
			if !errors.Is(err, ErrDisabledBuiltin) {
				t.Fatalf("load error = %v; want one wrapping ErrDisabledBuiltin", err)
			}
			if want := "policy uses disabled builtin " + tt.builtin; !strings.Contains(err.Error(), want) {
				t.Errorf("load error = %q; want it to contain %q", err, want)
			}
		})
	}
}

func TestRunTestsOnReload(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		e := newEngine(t, testConfig("testdata/failing_tests"), Options{})
		if e.Status().Ready {
			t.Fatal("policy with a failing test loaded; want it refused")
		}
		err := e.lastError()
		if !errors.Is(err, ErrTestsFailed) || !strings.Contains(err.Error(), "onbehalf.authz_test.test_denies_everything") {
			t.Errorf("load error = %v; want ErrTestsFailed naming test_denies_everything", err)
		}
	})
	t.Run("off", func(t *testing.T) {
		cfg := testConfig("testdata/failing_tests")
		cfg.RunTestsOnReload = false
		e := newEngine(t, cfg, Options{})
		if !e.Status().Ready {
			t.Fatalf("Status = %+v; want ready when tests are not run", e.Status())
		}
	})
}

// TestHotReload walks a watched directory through a new policy, a broken
// one, one using a disabled builtin, one whose tests fail, and a fix.
func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	writeFile(t, file, "package onbehalf.authz\n\ndecision := {\"allow\": true, \"reason\": \"v1\"}\n")
	cfg := testConfig(dir)
	cfg.Watch = true
	var evs events
	e := newEngine(t, cfg, Options{OnReload: evs.record})

	decide := func() Decision {
		return e.Decide(context.Background(), input(t, "GET", "https://slack.com/api/x"))
	}
	rev1 := e.Revision()
	if d := decide(); !d.Allow || d.Reason != "v1" || d.Revision != rev1 {
		t.Fatalf("Decide = %+v; want allow v1 at revision %s", d, rev1)
	}

	// A new valid policy is applied.
	replaceFile(t, file, "package onbehalf.authz\n\ndecision := {\"allow\": false, \"reason\": \"v2\"}\n")
	waitFor(t, "the v2 policy", func() bool { return e.Revision() != rev1 })
	rev2 := e.Revision()
	if d := decide(); d.Allow || d.Reason != "v2" || d.Revision != rev2 {
		t.Fatalf("Decide = %+v; want deny v2 at revision %s", d, rev2)
	}

	// Broken, disabled builtin, failing test: each is refused and v2 stays.
	refusals := []struct {
		name, file, content, want string
	}{
		{"syntax error", "policy.rego", "package onbehalf.authz\n\ndecision := {\"allow\": \n", "rego_parse_error"},
		{"disabled builtin", "policy.rego", "package onbehalf.authz\n\ndecision := {\"allow\": http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"}).status_code == 200}\n", "policy uses disabled builtin http.send"},
		{"failing test", "policy_test.rego", "package onbehalf.authz_test\n\nimport data.onbehalf.authz\n\ntest_allows if authz.decision.allow\n", "policy tests failed: onbehalf.authz_test.test_allows"},
	}
	for _, r := range refusals {
		if r.file == "policy_test.rego" {
			replaceFile(t, file, "package onbehalf.authz\n\ndecision := {\"allow\": false, \"reason\": \"v2\"}\n")
		}
		writeFile(t, filepath.Join(dir, r.file), r.content)
		waitFor(t, r.name+" to be refused", func() bool { return strings.Contains(e.Status().LastError, r.want) })
		st := e.Status()
		if !st.Ready || st.Revision != rev2 {
			t.Errorf("after %s: Status = %+v; want ready at revision %s", r.name, st, rev2)
		}
		if d := decide(); d.Reason != "v2" {
			t.Errorf("after %s: Decide = %+v; want the last good policy (v2)", r.name, d)
		}
	}

	// Fixing the test applies the policy and clears the error.
	writeFile(t, filepath.Join(dir, "policy_test.rego"), "package onbehalf.authz_test\n\nimport data.onbehalf.authz\n\ntest_denies if not authz.decision.allow\n")
	waitFor(t, "the fixed policy", func() bool { return e.Revision() != rev2 })
	if st := e.Status(); st.LastError != "" || !st.Ready {
		t.Errorf("Status = %+v; want ready without error", st)
	}

	// A new subdirectory is watched too; data files load at their path.
	writeFile(t, filepath.Join(dir, "users", "data.json"), `{"admins": ["alice"]}`)
	replaceFile(t, file, "package onbehalf.authz\n\ndecision := {\"allow\": input.subject.user in data.users.admins, \"reason\": \"v3\"}\n")
	waitFor(t, "the v3 policy", func() bool { return decide().Reason == "v3" })
	if d := decide(); !d.Allow {
		t.Errorf("Decide = %+v; want allow from data.users.admins", d)
	}
	writeFile(t, filepath.Join(dir, "users", "data.json"), `{"admins": ["bob"]}`)
	waitFor(t, "the new data", func() bool { return !decide().Allow })

	var sawErr, sawOK int
	for _, ev := range evs.all() {
		if ev.Err != nil {
			sawErr++
		} else {
			sawOK++
		}
		if ev.Time.IsZero() || ev.Source == "" {
			t.Errorf("event %+v lacks a time or a source", ev)
		}
	}
	if sawErr < 3 || sawOK < 5 {
		t.Errorf("OnReload saw %d failures and %d loads; want at least 3 and 5", sawErr, sawOK)
	}
}

// TestHotReloadConfigMap swaps policies the way the kubelet updates a mounted
// ConfigMap: files are symlinks through a hidden ..data link that is replaced
// by a rename.
func TestHotReloadConfigMap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, reason string) {
		writeFile(t, filepath.Join(dir, name, "policy.rego"), "package onbehalf.authz\n\ndecision := {\"allow\": true, \"reason\": \""+reason+"\"}\n")
	}
	version("..2026_06_18_v1", "v1")
	if err := os.Symlink("..2026_06_18_v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "policy.rego"), filepath.Join(dir, "policy.rego")); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dir)
	cfg.Watch = true
	e := newEngine(t, cfg, Options{})
	decide := func() Decision { return e.Decide(context.Background(), input(t, "GET", "https://slack.com/")) }
	if d := decide(); d.Reason != "v1" {
		t.Fatalf("Decide = %+v; want v1 (hidden directories must not load twice)", d)
	}

	version("..2026_06_18_v2", "v2")
	if err := os.Symlink("..2026_06_18_v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_06_18_v1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the v2 policy", func() bool { return decide().Reason == "v2" })
}

// TestHotReloadFilePath watches a policy named by file rather than by
// directory.
func TestHotReloadFilePath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "authz.rego")
	writeFile(t, file, "package onbehalf.authz\n\ndecision := true\n")
	writeFile(t, filepath.Join(dir, "other.rego"), "package other\n\nx := 1\n")
	cfg := testConfig(file)
	cfg.Watch = true
	e := newEngine(t, cfg, Options{})
	rev := e.Revision()
	if !e.Decide(context.Background(), input(t, "GET", "https://slack.com/")).Allow {
		t.Fatal("Decide denied; want allow")
	}
	replaceFile(t, file, "package onbehalf.authz\n\ndecision := false\n")
	waitFor(t, "the new policy", func() bool { return e.Revision() != rev })
	if e.Decide(context.Background(), input(t, "GET", "https://slack.com/")).Allow {
		t.Error("Decide allowed; want the new policy's deny")
	}
}

func TestRevisionIsContentHash(t *testing.T) {
	a := newEngine(t, testConfig("testdata/decide"), Options{})
	b := newEngine(t, testConfig("testdata/decide"), Options{})
	c := newEngine(t, testConfig("testdata/slow"), Options{})
	if a.Revision() == "" || a.Revision() != b.Revision() {
		t.Errorf("revisions %q and %q of the same files; want equal and non-empty", a.Revision(), b.Revision())
	}
	if a.Revision() == c.Revision() {
		t.Errorf("revision %q for different policies; want different", a.Revision())
	}
	if len(a.Revision()) != revisionLen {
		t.Errorf("len(Revision()) = %d; want %d", len(a.Revision()), revisionLen)
	}
	st := a.Status()
	if want := (Status{Ready: true, Revision: a.Revision()}); !cmp.Equal(st, want, cmpopts.IgnoreFields(Status{}, "LoadedAt")) || st.LoadedAt.IsZero() {
		t.Errorf("Status = %+v; want %+v with a load time", st, want)
	}
}

func TestNewInvalidConfig(t *testing.T) {
	_, err := New(context.Background(), Config{}, Options{})
	if err == nil || !strings.Contains(err.Error(), "one of paths or bundle.url is required") {
		t.Errorf("New(Config{}) error = %v; want the missing source reported", err)
	}
}

// TestDecideConcurrentWithReload decides from many goroutines while the
// policy is swapped underneath (run with -race).
func TestDecideConcurrentWithReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	writeFile(t, file, "package onbehalf.authz\n\ndecision := {\"allow\": true, \"reason\": \"a\"}\n")
	cfg := testConfig(dir)
	// Four deciding goroutines and a compiling one share two cores under
	// the race detector: give each decision room.
	cfg.Timeout = 2 * time.Second
	e := newEngine(t, cfg, Options{})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			in := input(t, "GET", "https://slack.com/api/x")
			for ctx.Err() == nil {
				if d := e.Decide(context.Background(), in); d.Reason != "a" && d.Reason != "b" {
					t.Errorf("Decide = %+v; want reason a or b", d)
					return
				}
			}
		})
	}
	for i := range 10 {
		reason := []string{"a", "b"}[i%2]
		writeFile(t, file, "package onbehalf.authz\n\ndecision := {\"allow\": true, \"reason\": \""+reason+"\"}\n")
		if err := e.reloadFiles(context.Background()); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	cancel()
	wg.Wait()
}

func TestUndefinedQueryWarns(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.rego"), "package onbehalf.authz_typo\n\ndecision := true\n")
	e := newEngine(t, testConfig(dir), Options{})
	if p := e.cur.Load(); p == nil || !p.queryUndefined {
		t.Errorf("queryUndefined not set for a policy that does not define %s", DefaultQuery)
	}
	d := newEngine(t, testConfig("testdata/decide"), Options{})
	if p := d.cur.Load(); p == nil || p.queryUndefined {
		t.Errorf("queryUndefined set for a policy that defines %s", DefaultQuery)
	}
}

func ExampleEngine_Decide() {
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.Paths = []string{"../examples/policies/default"}
	cfg.Watch = false
	e, err := New(ctx, cfg, Options{})
	if err != nil {
		panic(err)
	}
	defer e.Close()

	r, _ := http.NewRequest("DELETE", "https://api.github.com/orgs/acme/members/bob", nil)
	r.Header.Set("Authorization", "Bearer never-seen-by-policy")
	in := NewInput(r, InputArgs{
		Subject: Subject{User: "alice", Agent: "agent-7", Claims: map[string]any{"providers": []any{"github"}}},
		Route:   &Route{Provider: "github", Host: "api.github.com", Name: "github"},
	})
	d := e.Decide(ctx, in)
	fmt.Println(d.Allow, d.Reason)
	// Output:
	// false DELETE on admin path /orgs/acme/members/bob is not allowed
}
