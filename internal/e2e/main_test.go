//go:build integration

// Package e2e holds the end-to-end tests: the real sidecar on real sockets,
// driven by real clients (Go net/http, curl, Python requests, Node undici)
// and by raw connections for the adversarial cases. Run with
// `go test -tags integration ./internal/e2e/` (make test does).
package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The HTTP/2 client transport's connection reader and keep-alive
		// conns of clients that tests closed idle are reaped asynchronously.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
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
	return e
}

// repoRoot is the module root (tests run in internal/e2e).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
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
