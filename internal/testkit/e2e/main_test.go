//go:build integration

// Package e2e holds the end-to-end tests: the real sidecar on real sockets,
// driven by real clients (Go net/http, curl, Python requests, Node undici)
// and by raw connections for the adversarial cases. Run with
// `go test -tags integration ./internal/testkit/e2e/` (make test does).
package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the gRPC client process of grpc_test.go,
	// so that the client reads HTTPS_PROXY from a fresh environment.
	if os.Getenv(grpcClientEnv) == "1" {
		os.Exit(grpcClientMain())
	}
	code := m.Run()
	stopVault()
	if code == 0 {
		if err := goleak.Find(
			// Keep-alive connections of clients that tests dropped are
			// reaped asynchronously.
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	vaultOnce sync.Once
	vaultSrv  *vaulttest.Server
	vaultErr  error
)

// sharedVault starts one real Vault dev server for this test package (on
// first use) and returns it; TestMain stops it.
func sharedVault(t testing.TB) *vaulttest.Server {
	t.Helper()
	vaultOnce.Do(func() { vaultSrv, vaultErr = vaulttest.Start(vaulttest.Options{}) })
	if vaultErr != nil {
		t.Fatalf("start Vault: %v", vaultErr)
	}
	return vaultSrv
}

func stopVault() {
	if vaultSrv != nil {
		vaultSrv.Close()
	}
}

// errorBody is the sidecar's JSON error.
type errorBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	DecisionID string `json:"decision_id"`
	ConnectURL string `json:"connect_url"`
}

func readError(t testing.TB, resp *http.Response) errorBody {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", b, err)
	}
	// Every refusal names its code in the head too (curl shows no CONNECT
	// body).
	if got := resp.Header.Get("Onbehalf-Error"); got != e.Error {
		t.Errorf("Onbehalf-Error header %q; want %q, the body's code", got, e.Error)
	}
	return e
}

// repoRoot is the module root (tests run in internal/testkit/e2e).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// onbehalfBin returns the built binary (make test builds it first and
// exports ONBEHALF_BIN), building it into a temp dir otherwise.
func onbehalfBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("ONBEHALF_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return buildBinary(t)
}
