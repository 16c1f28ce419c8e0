//go:build integration

package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/redistest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
)

// TestRateLimitReplicasRedis runs three `onbehalf serve` processes sharing
// one real Redis server: a per-user limit holds across them (exactly L of
// N requests spread over the replicas reach the API). Then Redis is killed:
// the replicas go on serving, each deciding with its own buckets, and say
// so in their logs and metrics.
func TestRateLimitReplicasRedis(t *testing.T) {
	const replicas, limit, n = 3, 7, 24
	rd, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	up, err := upstreamtest.Start(upstreamtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "upstream-ca.pem"), up.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
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

	type replica struct {
		proxyPort, adminPort int
		cmd                  *exec.Cmd
		logs                 *syncLog
	}
	var rs []*replica
	for i := 0; i < replicas; i++ {
		r := &replica{proxyPort: freePort(t), adminPort: freePort(t), logs: &syncLog{}}
		cfg := fmt.Sprintf(`
proxy:
  listen: 127.0.0.1:%d
  upstream: {ca_file: upstream-ca.pem}
admin: {listen: 127.0.0.1:%d}
ca: {cert: ca.pem, key: ca-key.pem}
identity:
  audience: sidecar-test
  issuers: [https://orchestrator.test]
  keys: [{id: orch, file: orch.pub}]
routes:
  - {name: chat-api, host: localhost, port: %d, provider: chat}
policy: {paths: [%s]}
store: {embedded: {path: grants-%d.db, key_file: grants-%d.key}}
refresh: {journal: {dir: journal-%d, key_file: journal-%d.key}}
egress: {allow: [127.0.0.1/32]}
audit:
  sink: file
  file: {path: audit-%d.log}
  fingerprint_key_file: fingerprint-%d.key
rate_limits:
  store: redis
  redis: {address: %q, timeout: 1s, retry_interval: 200ms}
  rules:
    - {name: per-user, rate: %d/h, by: [user]}
log: {level: info}
`, r.proxyPort, r.adminPort, up.Port(), filepath.Join(repoRoot(t), "examples", "policies", "default"), i, i, i, i, i, i, rd.Addr(), limit)
		path := filepath.Join(dir, fmt.Sprintf("onbehalf-%d.yaml", i))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		mustCLI("replica-canary-token-7c1e\n", "grants", "put", "--config", path, "--provider", "chat", "--user", "alice", "--access-token-file", "-", "--expiry", "1h")
		r.cmd = exec.Command(onbehalfBin(t), "serve", "--config", path)
		r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer r.cmd.Process.Kill()
		rs = append(rs, r)
	}
	for _, r := range rs {
		waitReadyLog(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", r.adminPort), r.logs)
	}
	assertion := strings.TrimSpace(mustCLI("", "assert", "--key", filepath.Join(dir, "orch.key"),
		"--iss", "https://orchestrator.test", "--aud", "sidecar-test", "--sub", "alice", "--kid", "orch"))
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	clients := make([]*http.Client, replicas)
	for i, r := range rs {
		proxyURL := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", r.proxyPort)}
		clients[i] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: pool},
		}}
	}
	get := func(i int) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, up.URL("localhost", "/api/users.list"), nil)
		req.Header.Set("Onbehalf-Assertion", assertion)
		resp, err := clients[i%replicas].Do(req)
		if err != nil {
			t.Errorf("replica %d: %v", i%replicas, err)
			return 0, ""
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Onbehalf-Error")
	}

	// 1. Concurrent requests spread over the replicas: exactly the limit
	// passes, across all three.
	var mu sync.Mutex
	statuses := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, e := get(i)
			mu.Lock()
			statuses[fmt.Sprint(code, e)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if statuses["200"] != limit || statuses["429rate_limited"] != n-limit {
		t.Fatalf("statuses %v; want %d × 200 and %d × 429 rate_limited across %d replicas", statuses, limit, n-limit, replicas)
	}
	if got := len(up.Requests()); got != limit {
		t.Errorf("the API received %d requests; want %d", got, limit)
	}

	// 2. Redis dies: every replica goes on serving, deciding with its own
	// buckets (full: they were not used while Redis answered), and logs
	// and counts the fallback.
	rd.Kill()
	for i := 0; i < 2*replicas; i++ {
		if code, e := get(i); code != 200 {
			t.Errorf("request %d with Redis down: %d %s; want 200 from the replica's own buckets", i, code, e)
		}
	}
	for i, r := range rs {
		if !strings.Contains(r.logs.String(), "the shared rate-limit store failed") {
			t.Errorf("replica %d did not log the fallback:\n%s", i, r.logs.String())
		}
		m := adminGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", r.adminPort))
		if !strings.Contains(m, "onbehalf_rate_limit_fallbacks_total 2") {
			t.Errorf("replica %d: %s; want 2 fallbacks", i, grepLines(m, "onbehalf_rate_limit_fallbacks_total"))
		}
	}

	for i, r := range rs {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		if err := r.cmd.Wait(); err != nil {
			t.Errorf("replica %d exited with %v\n%s", i, err, r.logs.String())
		}
		if strings.Contains(r.logs.String(), "replica-canary-token-7c1e") {
			t.Errorf("replica %d logged the token", i)
		}
	}
}

func adminGet(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// syncLog is a process's output, written by os/exec's copier while the
// test reads it.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitReadyLog(t *testing.T, u string, logs *syncLog) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sidecar not ready at %s\nlogs:\n%s", u, logs.String())
}
