//go:build integration

package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
)

// clientTimeout bounds each external client process.
const clientTimeout = 60 * time.Second

// checkArrived asserts that the upstream's last request carried exactly the
// injected credential and nothing the agent must not pass on.
func checkArrived(t *testing.T, e *testenv.Env, wantPath string) {
	t.Helper()
	reqs := e.Upstream.Requests()
	if len(reqs) == 0 {
		t.Fatal("nothing arrived upstream")
	}
	got := reqs[len(reqs)-1]
	if got.Path != wantPath {
		t.Errorf("upstream path %q; want %q", got.Path, wantPath)
	}
	if auth := got.Header.Values("Authorization"); len(auth) != 1 || auth[0] != "Bearer "+testenv.CanaryToken {
		t.Errorf("upstream Authorization = %q; want exactly the injected token", redactAll(auth))
	}
	for name := range got.Header {
		lower := strings.ToLower(name)
		if strings.HasPrefix(lower, "proxy-") || lower == "onbehalf-assertion" {
			t.Errorf("upstream received header %q", name)
		}
	}
	if got.ServerName != testenv.APIHost {
		t.Errorf("upstream SNI %q; want %q", got.ServerName, testenv.APIHost)
	}
}

func redactAll(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		switch {
		case strings.Contains(v, testenv.CanaryToken):
			out[i] = "Bearer <canary>"
		default:
			out[i] = v
		}
	}
	return out
}

// agentEnv is the environment an agent process gets.
func agentEnv(e *testenv.Env, assertion string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"HTTPS_PROXY=" + e.ProxyURL().String(),
		"https_proxy=" + e.ProxyURL().String(),
		"NO_PROXY=", "no_proxy=",
		"ONBEHALF_CA=" + e.CAFile,
		"ONBEHALF_ASSERTION=" + assertion,
	}
	return env
}

func runClient(t *testing.T, env []string, dir string, name string, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}

// TestExampleAgents runs each example agent in examples/agents as a real
// process against the real sidecar listener.
func TestExampleAgents(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	root := repoRoot(t)
	agents := filepath.Join(root, "examples", "agents")
	goAgent := filepath.Join(t.TempDir(), "go-agent")
	build := exec.Command("go", "build", "-o", goAgent, "./examples/agents/go")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build Go agent: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(agents, "node", "node_modules", "undici")); err != nil {
		t.Fatalf("the Node agent's dependencies are missing: run `make agents` (npm ci in examples/agents/node): %v", err)
	}

	tests := []struct {
		name string
		cmd  []string
	}{
		{"python-requests", []string{"/usr/bin/python3", filepath.Join(agents, "python", "agent.py")}},
		{"node-undici", []string{"node", filepath.Join(agents, "node", "agent.mjs")}},
		{"go-net-http", []string{goAgent}},
		{"curl", []string{filepath.Join(agents, "curl", "agent.sh")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.Upstream.Reset()
			path := "/api/" + tt.name
			args := append(tt.cmd[1:], e.APIURL(path), `{"text":"hello from `+tt.name+`"}`)
			out, _ := runClient(t, agentEnv(e, e.Assert(t, testenv.User)), agents, tt.cmd[0], args...)
			if !strings.Contains(out, `"authorization_scheme":"Bearer"`) {
				t.Errorf("agent output %q; want the upstream's echo", out)
			}
			checkArrived(t, e, path)
			if body := e.Upstream.Requests()[0].Body; !bytes.Contains(body, []byte("hello from "+tt.name)) {
				t.Errorf("upstream body %q; want the agent's JSON", body)
			}
		})
	}
}

// TestClientsReplaceCredentials sends requests that carry the agent's own
// Authorization and proxy headers from each kind of client: the upstream
// must see only the injected token.
func TestClientsReplaceCredentials(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	assertion := e.Assert(t, testenv.User)

	t.Run("go-net-http", func(t *testing.T) {
		e.Upstream.Reset()
		c := e.Client()
		c.Transport.(*http.Transport).ProxyConnectHeader = http.Header{"Proxy-Authorization": {"Bearer " + assertion}}
		req, _ := http.NewRequest(http.MethodPost, e.APIURL("/api/go"), strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer agent-invented")
		req.Header.Set("Proxy-Secret", "x")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d; want 200", resp.StatusCode)
		}
		checkArrived(t, e, "/api/go")
	})

	t.Run("curl", func(t *testing.T) {
		e.Upstream.Reset()
		// HTTP/1.1: HTTP/2 has no Connection header (curl drops it, and
		// X-Hop is then an ordinary header).
		runClient(t, agentEnv(e, assertion), t.TempDir(), "curl", "--http1.1", "--silent", "--show-error", "--fail-with-body",
			"-x", e.ProxyURL().String(), "--cacert", e.CAFile,
			"--proxy-header", "Proxy-Authorization: Bearer "+assertion,
			"-H", "Authorization: Bearer agent-invented",
			"-H", "Onbehalf-Assertion: "+assertion,
			"-H", "Connection: X-Hop", "-H", "X-Hop: 1",
			"--data", `{"a":1}`, e.APIURL("/api/curl"))
		checkArrived(t, e, "/api/curl")
		if h := e.Upstream.Requests()[0].Header.Get("X-Hop"); h != "" {
			t.Errorf("header named in Connection arrived upstream: X-Hop=%q", h)
		}
	})

	t.Run("python-requests", func(t *testing.T) {
		e.Upstream.Reset()
		script := `
import os, requests
r = requests.post(os.environ["URL"], json={"a": 1},
    headers={"Authorization": "Bearer agent-invented", "Onbehalf-Assertion": os.environ["ONBEHALF_ASSERTION"]},
    proxies={"https": os.environ["HTTPS_PROXY"]}, verify=os.environ["ONBEHALF_CA"], timeout=30)
r.raise_for_status()
print(r.text)
`
		env := append(agentEnv(e, assertion), "URL="+e.APIURL("/api/python"))
		runClient(t, env, t.TempDir(), "/usr/bin/python3", "-c", script)
		checkArrived(t, e, "/api/python")
	})
}
