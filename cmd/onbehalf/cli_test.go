package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/onbehalf-dev/onbehalf/audit"
)

// TestHelpShowsPlainBoolFlags walks every command's help: boolean flags
// render as --flag, not --flag[=true|false].
func TestHelpShowsPlainBoolFlags(t *testing.T) {
	root := newRootCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		var out bytes.Buffer
		c.SetOut(&out)
		if err := c.Help(); err != nil {
			t.Fatalf("%s --help: %v", c.CommandPath(), err)
		}
		if strings.Contains(out.String(), "[=true|false]") {
			t.Errorf("%s --help shows [=true|false]:\n%s", c.CommandPath(), out.String())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)

	// The flags still parse as booleans.
	serve, _, err := root.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--check"}, {"--check=true"}, {"--check=false"}} {
		if err := serve.ParseFlags(args); err != nil {
			t.Errorf("serve %v: %v", args, err)
		}
	}
	if got, _ := serve.Flags().GetBool("check"); got {
		t.Errorf("after --check=false, check = %v; want false", got)
	}
}

func TestVersionCommand(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"onbehalf " + version, "commit", "go1."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output %q lacks %q", out.String(), want)
		}
	}
}

func TestAssertRefusesUserIDTheStoreRefuses(t *testing.T) {
	for _, sub := range []string{"alice smith", "../bob", "-alice", "al/ice"} {
		if got := run(context.Background(), []string{"assert", "--key", "unused.pem", "--iss", "https://o", "--aud", "a", "--sub", sub}); got != exitUsage {
			t.Errorf("assert --sub %q: exit %d; want %d", sub, got, exitUsage)
		}
	}
}

// TestAuditVerifyFromHash: a trail whose first records were deleted fails
// verification and says why; --from-hash with the hash of the record before
// the cut lets the rest verify.
func TestAuditVerifyFromHash(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "audit.log")
	cfg := audit.DefaultConfig()
	cfg.Sink = audit.SinkFile
	cfg.File.Path = full
	a, err := audit.New(cfg, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var hashes []string
	for i := range 5 {
		r := &audit.Record{Event: audit.EventRequest, DecisionID: fmt.Sprintf("d%d", i), User: "alice"}
		if err := a.Write(r); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, r.PrevHash)
	}
	a.Close()
	b, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.SplitAfter(string(b), "\n")
	cut := filepath.Join(dir, "cut.log")
	if err := os.WriteFile(cut, []byte(strings.Join(ls[2:], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	verify := func(args ...string) (string, int) {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"audit", "verify"}, args...))
		code := exitOK
		if err := root.ExecuteContext(context.Background()); err != nil {
			code = exitError
		}
		return out.String(), code
	}
	out, code := verify(cut)
	if code == exitOK || !strings.Contains(out, "deleted") || !strings.Contains(out, "--from-hash") {
		t.Errorf("head cut: exit %d, %q; want a failure that names the deletion and --from-hash", code, out)
	}
	// The prev_hash of the third record is the hash of the second.
	out, code = verify("--from-hash", hashes[2], cut)
	if code != exitOK || !strings.Contains(out, "continues from the --from-hash record") {
		t.Errorf("with --from-hash: exit %d, %q; want it to verify", code, out)
	}
}

// TestGrantChangesAudited: `grants put` and `grants revoke` are audited.
// While another process (a sidecar) holds the audit file, both go to the
// command line's own trail beside it, one chain across runs, and `audit
// verify --trails` checks the sidecar's trail and that one, each on its own.
func TestGrantChangesAudited(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "audit.log")
	cfgFile := filepath.Join(dir, "onbehalf.yaml")
	cfgYAML := fmt.Sprintf(`store:
  backend: embedded
  embedded:
    path: %s
    key_file: %s
audit:
  sink: file
  file:
    path: %s
  fingerprint_key_file: %s
`, filepath.Join(dir, "grants.db"), filepath.Join(dir, "grants.key"), base, filepath.Join(dir, "fingerprint.key"))
	if err := os.WriteFile(cfgFile, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("cli-canary-access-token-81f2"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (string, int) {
		t.Helper()
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		if err := root.ExecuteContext(context.Background()); err != nil {
			return out.String() + err.Error(), exitError
		}
		return out.String(), exitOK
	}
	// The sidecar holds the audit file (and its lock) all along.
	acfg := audit.DefaultConfig()
	acfg.Sink = audit.SinkFile
	acfg.File.Path = base
	sidecarAudit, err := audit.New(acfg, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sidecarAudit.Close()
	if err := sidecarAudit.Write(&audit.Record{Event: audit.EventStart}); err != nil {
		t.Fatal(err)
	}

	for _, user := range []string{"alice", "bob"} {
		if out, code := cli("grants", "put", "-c", cfgFile, "--provider", "chat", "--force", "--user", user, "--access-token-file", tokenFile); code != exitOK {
			t.Fatalf("grants put %s: %s", user, out)
		}
	}
	if out, code := cli("grants", "revoke", "-c", cfgFile, "--provider", "chat", "--user", "alice"); code != exitOK {
		t.Fatalf("grants revoke: %s", out)
	}
	trail := audit.WriterTrail(base, "cli")
	b, err := os.ReadFile(trail)
	if err != nil {
		t.Fatalf("the command line's trail: %v", err)
	}
	for _, want := range []string{`"event":"grant_put","user":"alice"`, `"event":"grant_put","user":"bob"`, `"event":"revoke"`, `"via":"cli"`, `"token_fingerprint":"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s:\n%s", trail, want, b)
		}
	}
	if strings.Contains(string(b), "cli-canary-access-token") {
		t.Error("the token is in the audit trail")
	}
	if rep, err := audit.Verify([]string{trail}); err != nil || rep.Records != 3 || rep.Start != audit.StartChain {
		t.Errorf("the command line's trail: %+v, %v; want one chain of 3 records across the runs", rep, err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "audit-*.log"))
	if len(matches) != 0 {
		t.Errorf("per-process trails written: %v; want one named trail", matches)
	}
	out, code := cli("audit", "verify", "--trails", base)
	if code != exitOK || !strings.Contains(out, trail+": ok: 3 records") || !strings.Contains(out, base+": ok: 1 records") {
		t.Errorf("audit verify --trails: exit %d\n%s", code, out)
	}
}
