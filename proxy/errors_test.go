package proxy

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/onbehalf-dev/onbehalf/injector"
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

// TestClassifyExchange: a refused token exchange, or a request without the
// IdP token a provider's exchange needs, is exchange_denied (403); a failing
// or misconfigured exchange keeps the provider codes (503), so agents retry
// the one and not the other.
func TestClassifyExchange(t *testing.T) {
	for _, tt := range []struct {
		err    error
		code   Code
		status int
	}{
		{fmt.Errorf("exchange notes/alice: token exchange at the idp: status 400, error %q: %w", "access_denied", injector.ErrExchangeDenied), CodeExchangeDenied, http.StatusForbidden},
		{fmt.Errorf("exchange notes/alice: %w", injector.ErrNoSubjectToken), CodeExchangeDenied, http.StatusForbidden},
		{fmt.Errorf("exchange notes/alice: %w", injector.ErrProviderUnavailable), CodeProviderUnavailable, http.StatusServiceUnavailable},
		{fmt.Errorf("exchange notes/alice: %w", injector.ErrProviderMisconfigured), CodeProviderMisconfig, http.StatusServiceUnavailable},
	} {
		e := classify(tt.err)
		if e.Code != tt.code || e.Code.Status() != tt.status {
			t.Errorf("classify(%v) = %s (%d); want %s (%d)", tt.err, e.Code, e.Code.Status(), tt.code, tt.status)
		}
	}
	if a, b := classify(fmt.Errorf("x: %w", injector.ErrNoSubjectToken)).Message, classify(fmt.Errorf("x: %w", injector.ErrExchangeDenied)).Message; a == b {
		t.Errorf("both refusals say %q; the missing IdP token needs its own message", a)
	}
}
