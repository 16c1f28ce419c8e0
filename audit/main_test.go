package audit

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind (the
// buffered flusher must stop on Close).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
