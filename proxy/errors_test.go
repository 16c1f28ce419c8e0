package proxy

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// TestClassifyInvalidUserID: a verified assertion naming a user id the
// store refuses is an identity problem (401), not an unreachable upstream.
func TestClassifyInvalidUserID(t *testing.T) {
	err := fmt.Errorf("read grant slack: %w", store.ValidateUser("alice smith"))
	e := classify(err)
	if e.Code != CodeIdentityInvalid || e.Code.Status() != http.StatusUnauthorized {
		t.Errorf("classify(%v) = %s (%d); want %s (401)", err, e.Code, e.Code.Status(), CodeIdentityInvalid)
	}
}
