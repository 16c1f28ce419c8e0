//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/freeport"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
)

// cli runs the onbehalf binary and returns stdout, stderr and the exit code.
func cli(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, onbehalfBin(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run onbehalf %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// freePort picks a port a child process is told to bind (see freeport).
func freePort(t *testing.T) int {
	t.Helper()
	port, err := freeport.Pick(1)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// TestServeBinary runs the real binary the way an operator would: create
// the CA and keys with the CLI, plant a grant with `grants put`, start
// `serve`, call an API with curl, revoke the grant while the sidecar runs,
// stop it with SIGTERM and verify the audit trail.
func TestServeBinary(t *testing.T) {
	up, err := upstreamtest.Start(upstreamtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	dir := t.TempDir()
	upCA := filepath.Join(dir, "upstream-ca.pem")
	os.WriteFile(upCA, up.CACertPEM(), 0o644)
	proxyPort, adminPort := freePort(t), freePort(t)
	config := fmt.Sprintf(`
proxy:
  listen: 127.0.0.1:%d
  connect_url: https://connect.test
  upstream: {ca_file: upstream-ca.pem}
admin: {listen: 127.0.0.1:%d}
ca: {cert: ca.pem, key: ca-key.pem}
identity:
  audience: sidecar-test
  issuers: [https://orchestrator.test]
  keys: [{id: orch, file: orch.pub}]
token_cache: {ttl: 1s}
routes:
  - host: localhost
    port: %d
    provider: chat
policy: {paths: [%s]}
store: {embedded: {path: grants.db, key_file: grants.key}}
egress: {allow: [127.0.0.1/32, "::1/128"]}
audit:
  sink: file
  file: {path: audit.log}
  fingerprint_key_file: fingerprint.key
log: {level: debug}
`, proxyPort, adminPort, up.Port(), filepath.Join(repoRoot(t), "examples", "policies", "default"))
	cfgPath := filepath.Join(dir, "onbehalf.yaml")
	os.WriteFile(cfgPath, []byte(config), 0o600)

	mustCLI := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, stdin, args...)
		if code != 0 {
			t.Fatalf("onbehalf %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	mustCLI("", "ca", "init", "--dir", dir)
	mustCLI("", "assert", "keygen", "--private", filepath.Join(dir, "orch.key"), "--public", filepath.Join(dir, "orch.pub"))
	mustCLI("cli-canary-token-5d2a\n", "grants", "put", "--config", cfgPath, "--provider", "chat", "--user", "alice", "--access-token-file", "-", "--expiry", "1h", "--scopes", "chat:write")
	if out := mustCLI("", "grants", "list", "--config", cfgPath); !strings.Contains(out, "alice") || strings.Contains(out, "cli-canary") {
		t.Fatalf("grants list: %q", out)
	}
	assertion := strings.TrimSpace(mustCLI("", "assert", "--key", filepath.Join(dir, "orch.key"),
		"--iss", "https://orchestrator.test", "--aud", "sidecar-test", "--sub", "alice", "--act", "agent-7", "--kid", "orch",
		"--claim", "providers=chat,github"))

	var logs bytes.Buffer
	serve := exec.Command(onbehalfBin(t), "serve", "--config", cfgPath)
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer serve.Process.Kill()
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort), &logs)

	curl := func(extra ...string) (string, int) {
		args := append([]string{"--silent", "--show-error", "-o", "-", "-w", "\n%{http_code}",
			"-x", fmt.Sprintf("http://127.0.0.1:%d", proxyPort),
			"--cacert", filepath.Join(dir, "ca.pem"),
			"-H", "Onbehalf-Assertion: " + assertion,
			"-H", "Authorization: Bearer agent-invented"}, extra...)
		args = append(args, up.URL("localhost", "/api/chat.postMessage"))
		out, err := exec.Command("curl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		s := strings.TrimSpace(string(out))
		i := strings.LastIndexByte(s, '\n')
		var code int
		fmt.Sscan(s[i+1:], &code)
		return s[:i+1], code
	}
	if body, code := curl("--data", `{"text":"hi"}`); code != 200 {
		t.Fatalf("curl through the sidecar: %d %s\nlogs:\n%s", code, body, logs.String())
	}
	got := up.Requests()
	if len(got) != 1 || got[0].Header.Get("Authorization") != "Bearer cli-canary-token-5d2a" || got[0].Header.Get("Onbehalf-Assertion") != "" {
		t.Fatalf("upstream did not get exactly the injected token")
	}

	// Revoke while the sidecar runs (the embedded store is shared): the
	// sidecar stops injecting within its token cache bound (1s here).
	mustCLI("", "grants", "revoke", "--config", cfgPath, "--provider", "chat", "--user", "alice")
	revoked := time.Now()
	for {
		body, code := curl()
		if code == 401 && strings.Contains(body, `"grant_missing"`) && strings.Contains(body, "https://connect.test/connect/chat") {
			break
		}
		if time.Since(revoked) > 3*time.Second {
			t.Fatalf("still %d %s %v after revoking; want grant_missing within the 1s cache bound", code, body, time.Since(revoked))
		}
		time.Sleep(100 * time.Millisecond)
	}

	serve.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- serve.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	out := mustCLI("", "audit", "verify", filepath.Join(dir, "audit.log"))
	if !strings.HasPrefix(out, "ok:") {
		t.Errorf("audit verify: %q", out)
	}
	for _, leak := range []string{"cli-canary-token-5d2a", assertion} {
		if strings.Contains(logs.String(), leak) {
			t.Error("a secret appears in the sidecar's logs")
		}
		b, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
		if bytes.Contains(b, []byte(leak)) {
			t.Error("a secret appears in the audit trail")
		}
	}

	// Tampering with the trail is caught.
	b, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	os.WriteFile(filepath.Join(dir, "audit.log"), bytes.Replace(b, []byte(`"user":"alice"`), []byte(`"user":"mallory"`), 1), 0o600)
	if out, _, code := cli(t, "", "audit", "verify", filepath.Join(dir, "audit.log")); code != 1 || !strings.Contains(out, "BROKEN") {
		t.Errorf("audit verify after tampering: exit %d %q; want exit 1 naming the break", code, out)
	}
}

func waitReady(t *testing.T, url string, logs *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sidecar not ready at %s\nlogs:\n%s", url, logs.String())
}

// TestConfigErrors: a broken config exits 2 and names every problem.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yaml")
	os.WriteFile(path, []byte(`
proxy:
  listne: 127.0.0.1:1
  unrouted: maybe
identity:
  audience: ""
routes:
  - host: "*"
    provider: Bad Name
store:
  backend: floppy
`), 0o600)
	_, errOut, code := cli(t, "", "serve", "--config", path)
	if code != 2 {
		t.Fatalf("exit %d; want 2\n%s", code, errOut)
	}
	for _, want := range []string{"proxy.listne: unknown key", "proxy.unrouted", "identity.audience", "routes[0].host", "routes[0].provider", "store.backend", "ca.cert"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, errOut)
		}
	}
	if _, errOut, code := cli(t, "", "serve", "--config", filepath.Join(dir, "missing.yaml")); code != 2 {
		t.Errorf("missing config: exit %d; want 2\n%s", code, errOut)
	}
	// The example configuration, laid out as in the repository: --check
	// names each file `make run` has not created yet, then passes.
	example, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "onbehalf.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "examples", "policies"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(repoRoot(t), "examples", "policies", "default"), filepath.Join(root, "examples", "policies", "default")); err != nil {
		t.Fatal(err)
	}
	exampleCfg := filepath.Join(root, "examples", "onbehalf.yaml")
	if err := os.WriteFile(exampleCfg, example, 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = cli(t, "", "serve", "--check", "--config", exampleCfg)
	if code != 2 {
		t.Errorf("--check without the CA and keys: exit %d; want 2\n%s", code, errOut)
	}
	for _, want := range []string{"ca.cert: ", "ca.key: ", "identity.keys[0].file: "} {
		if !strings.Contains(errOut, want) {
			t.Errorf("--check without the CA and keys: stderr does not mention %q:\n%s", want, errOut)
		}
	}
	state := filepath.Join(root, ".onbehalf")
	if _, errOut, code := cli(t, "", "ca", "init", "--dir", state); code != 0 {
		t.Fatalf("ca init: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := cli(t, "", "assert", "keygen", "--private", filepath.Join(state, "orchestrator.key"), "--public", filepath.Join(state, "orchestrator.pub")); code != 0 {
		t.Fatalf("assert keygen: exit %d\n%s", code, errOut)
	}
	if out, errOut, code := cli(t, "", "serve", "--check", "--config", exampleCfg); code != 0 || !strings.Contains(out, "is valid") {
		t.Errorf("--check on the example config: exit %d\n%s%s", code, out, errOut)
	}
	if _, _, code := cli(t, "", "serve", "--check", "--config", path); code != 2 {
		t.Errorf("--check on a broken config: exit %d; want 2", code)
	}
}

// TestHelpEverywhere: every command answers --help.
func TestHelpEverywhere(t *testing.T) {
	cmds := [][]string{
		{}, {"serve"}, {"demo"}, {"assert"}, {"assert", "keygen"}, {"ca"}, {"ca", "init"},
		{"grants"}, {"grants", "list"}, {"grants", "put"}, {"grants", "revoke"},
		{"audit"}, {"audit", "verify"}, {"policy"}, {"policy", "test"}, {"policy", "eval"},
	}
	for _, c := range cmds {
		out, errOut, code := cli(t, "", append(c, "--help")...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("onbehalf %s --help: exit %d\n%s%s", strings.Join(c, " "), code, out, errOut)
		}
	}
	if _, _, code := cli(t, "", "serve", "--no-such-flag"); code != 2 {
		t.Errorf("unknown flag: exit %d; want 2", code)
	}
}

// TestDemo runs `onbehalf demo`, which exits 0 only when every step
// behaved.
func TestDemo(t *testing.T) {
	out, errOut, code := cli(t, "", "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "All ") || strings.Contains(out, "FAIL") {
		t.Errorf("demo output:\n%s", out)
	}
	if !strings.Contains(out, "CONNECT answered 403 no_route") {
		t.Errorf("demo does not say why the CONNECT was refused:\n%s", out)
	}
	if !strings.Contains(out, "run with --dir DIR to keep it") {
		t.Errorf("demo names its temporary audit file without saying it is gone afterwards:\n%s", out)
	}
	// The audit summary lists the records in the order the steps ran.
	order := []string{"identity_required", "policy_denied", "no_route", "grant_missing"}
	last := -1
	for _, code := range order {
		i := strings.Index(out[strings.Index(out, "The audit trail"):], " "+code)
		if i < 0 {
			t.Errorf("audit summary lists no %s record:\n%s", code, out)
		}
		if i < last {
			t.Errorf("audit summary lists %s out of step order:\n%s", code, out)
		}
		last = i
	}
	// --dir keeps the files, in a directory it creates.
	dir := filepath.Join(t.TempDir(), "kept")
	out, errOut, code = cli(t, "", "demo", "--dir", dir)
	if code != 0 {
		t.Fatalf("demo --dir: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, "to keep it") {
		t.Errorf("demo --dir says to use --dir:\n%s", out)
	}
	if out, _, code := cli(t, "", "audit", "verify", filepath.Join(dir, "audit.log")); code != 0 || !strings.HasPrefix(out, "ok:") {
		t.Errorf("the kept audit trail does not verify: %s", out)
	}
}

// TestGrantsCLIOnVault: grants put, list and revoke against a real Vault.
func TestGrantsCLIOnVault(t *testing.T) {
	v := sharedVault(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	os.WriteFile(tokenFile, []byte(v.RootToken()), 0o600)
	cfgPath := filepath.Join(dir, "onbehalf.yaml")
	prefix := fmt.Sprintf("cli-%d", time.Now().UnixNano())
	connectAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	pub := filepath.Join(dir, "orchestrator.pub")
	if out, errOut, code := cli(t, "", "assert", "keygen", "--private", filepath.Join(dir, "orchestrator.key"), "--public", pub); code != 0 {
		t.Fatalf("keygen: %s%s", out, errOut)
	}
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
routes: [{host: api.github.com, provider: github}]
store:
  backend: vault
  vault:
    address: %s
    prefix: %s
    auth: {method: token, token_file: vault-token}
audit: {sink: file, file: {path: audit.log}}
connect:
  listen: %s
  external_url: http://%s
  session_key_file: session.key
  links:
    issuers: [https://orchestrator.example.com]
    keys: [{id: orchestrator, file: %s}]
`, v.Addr(), prefix, connectAddr, connectAddr, pub)), 0o600)

	// The store's change feed: the connect server creates it when it
	// starts; the CLI records a replaced grant once and a revoked one
	// before and after it goes.
	feed := func() (seq float64, users []string) {
		t.Helper()
		sec, err := v.Client().Logical().Read("secret/data/" + prefix + "/changes")
		if err != nil {
			t.Fatal(err)
		}
		if sec == nil {
			return -1, nil
		}
		data, _ := sec.Data["data"].(map[string]any)
		n, _ := data["seq"].(json.Number)
		f, _ := n.Float64()
		list, _ := data["changes"].([]any)
		for _, c := range list {
			m, _ := c.(map[string]any)
			users = append(users, fmt.Sprint(m["provider"], "/", m["user"]))
		}
		return f, users
	}
	cs := exec.Command(onbehalfBin(t), "connect-server", "--config", cfgPath)
	var csLogs lockedBuffer
	cs.Stdout, cs.Stderr = &csLogs, &csLogs
	if err := cs.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if seq, _ := feed(); seq == 0 {
			break
		}
		if time.Now().After(deadline) {
			cs.Process.Kill()
			cs.Wait()
			t.Fatalf("the connect server did not create the change feed; logs:\n%s", csLogs.String())
		}
	}
	cs.Process.Signal(syscall.SIGTERM)
	cs.Wait()

	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, stdin, append(args, "--config", cfgPath)...)
		if code != 0 {
			t.Fatalf("onbehalf %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	run("vault-cli-canary-7a1\n", "grants", "put", "--provider", "github", "--user", "alice", "--access-token-file", "-", "--scopes", "repo")
	run("vault-cli-canary-7a2\n", "grants", "put", "--provider", "github", "--user", "alice", "--access-token-file", "-")
	out := run("", "grants", "list")
	if !strings.Contains(out, "github") || !strings.Contains(out, "alice") || strings.Contains(out, "canary") {
		t.Errorf("grants list:\n%s", out)
	}
	if !listedGeneration(out, 2) {
		t.Errorf("replacing the grant did not bump its generation to 2:\n%s", out)
	}
	if out := run("", "grants", "revoke", "--provider", "github", "--user", "alice"); !strings.Contains(out, "local deleted") {
		t.Errorf("grants revoke: %s", out)
	}
	if out := run("", "grants", "list"); strings.Contains(out, "alice") {
		t.Errorf("grant still listed after revoke:\n%s", out)
	}
	if seq, users := feed(); seq != 3 || fmt.Sprint(users) != "[github/alice github/alice github/alice]" {
		t.Errorf("change feed after put, replace and revoke: seq %v, changes %v; want 3 changes of github/alice", seq, users)
	}
	// The revocation is audited, and no token reached the trail.
	b, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	if strings.Contains(string(b), "canary") || !strings.Contains(string(b), `"event":"revoke"`) {
		t.Errorf("audit trail: %s", b)
	}
}

// listedGeneration reports whether `grants list` shows github/alice at
// generation gen.
func listedGeneration(list string, gen int) bool {
	for line := range strings.SplitSeq(list, "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == "github" && f[1] == "alice" {
			for _, x := range f {
				if x == fmt.Sprint(gen) {
					return true
				}
			}
		}
	}
	return false
}

// TestConnectServerPortInUse: the connect server binds before it opens
// anything, so a port in use fails cleanly — no "started" line and no audit
// file or session key left behind — and its default session key goes with
// the store's files, not beside the configuration.
func TestConnectServerPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o700)
	pub := filepath.Join(dir, "orchestrator.pub")
	if out, errOut, code := cli(t, "", "assert", "keygen", "--private", filepath.Join(dir, "orchestrator.key"), "--public", pub); code != 0 {
		t.Fatalf("keygen: %s%s", out, errOut)
	}
	cfgPath := filepath.Join(dir, "onbehalf.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
connect:
  listen: %s
  external_url: http://127.0.0.1:7080
  links:
    issuers: [https://orchestrator.example.com]
    keys:
      - id: orchestrator
        file: %s
store:
  embedded:
    path: state/grants.db
    key_file: state/grants.key
audit:
  sink: file
  file:
    path: state/audit.log
  fingerprint_key_file: state/fingerprint.key
`, busy.Addr(), pub)), 0o600)

	out, errOut, code := cli(t, "", "connect-server", "--config", cfgPath)
	if code == 0 {
		t.Fatal("connect-server on a port in use exited 0")
	}
	if !strings.Contains(errOut, "listen on "+busy.Addr().String()) || strings.Contains(out+errOut, "started") {
		t.Errorf("connect-server on a port in use said:\n%s%s\nwant the listen error and no \"started\"", out, errOut)
	}
	for _, left := range []string{"audit.log", "grants.db", "onbehalf-connect-session.key"} {
		if _, err := os.Stat(filepath.Join(state, left)); err == nil {
			t.Errorf("a failed start left %s behind", left)
		}
	}

	// Started for real, it creates its session key beside the store's key
	// file, and nothing beside the configuration.
	addr := busy.Addr().String()
	busy.Close()
	cmd := exec.Command(onbehalfBin(t), "connect-server", "--config", cfgPath, "--listen", addr)
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(state, "onbehalf-connect-session.key")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session key in %s after start; logs:\n%s", state, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 {
		t.Errorf("files beside the configuration: %v; want only the config, the two orchestrator keys and state/", names)
	}
}
