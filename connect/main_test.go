package connect

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: servers, the
// revoker's retry loop and HTTP connections all end with their tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
