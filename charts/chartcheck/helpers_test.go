package chartcheck

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

// binTimeout bounds building the binary from the main module (a cold
// build compiles OPA, Vault's client and the rest: about a minute on two
// cores).
const binTimeout = 5 * time.Minute

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	if code, done := enterNetns(); done {
		os.Exit(code)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// onbehalfBin returns $ONBEHALF_BIN, or a binary built from ../.. once.
func onbehalfBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("ONBEHALF_BIN"); p != "" {
			if _, err := os.Stat(p); err != nil {
				binErr = fmt.Errorf("ONBEHALF_BIN=%s: %w", p, err)
				return
			}
			binPath = p
			return
		}
		binDir, binErr = os.MkdirTemp("", "chartcheck-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "onbehalf")
		ctx, cancel := context.WithTimeout(context.Background(), binTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", binPath, "./cmd/onbehalf")
		cmd.Dir = filepath.Join("..", "..")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			binErr = fmt.Errorf("build onbehalf: %w\n%s", err, out.String())
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// runBin runs the onbehalf binary and returns its combined output and exit
// code.
func runBin(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, onbehalfBin(t), args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		t.Fatalf("run %v: %v", args, err)
	}
	return string(out), 0
}

// cleanEnv is the environment without ONBEHALF_* overrides, which would
// change what the configuration says.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ONBEHALF_") {
			env = append(env, kv)
		}
	}
	return env
}
