package policy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves goroutines behind: engines
// must stop their watchers and bundle downloaders on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
