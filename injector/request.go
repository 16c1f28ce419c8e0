package injector

import (
	"fmt"
	"io"
)

// TokenRequest asks for the token of one request: the provider of its
// route, the acting user, and the identity token the request presented when
// it came from an IdP.
type TokenRequest struct {
	Provider string
	User     string
	// Identity is the IdP token the request's identity was verified from,
	// which a token exchange presents to that IdP. Its zero value means the
	// identity came from an orchestrator assertion.
	Identity SubjectToken
}

// SubjectToken is a verified IdP token as a token exchange needs it (RFC
// 8693 subject_token). fmt never prints its Value (see Format).
type SubjectToken struct {
	// Issuer is the token's verified iss.
	Issuer string
	// Type is the typ header it was presented with ("JWT", "at+jwt",
	// "oauth-id-jag+jwt", or "" without one).
	Type string
	// ID is its jti, or "", for the audit trail.
	ID string
	// Value is the token itself: a bearer credential, never logged or
	// forwarded.
	Value string
}

// String describes t without its value.
func (t SubjectToken) String() string {
	v := ""
	if t.Value != "" {
		v = "REDACTED"
	}
	return fmt.Sprintf("SubjectToken{issuer: %q, type: %q, id: %q, value: %s}", t.Issuer, t.Type, t.ID, v)
}

// Format makes every fmt verb print String, so that a request printed by
// mistake never shows the token.
func (t SubjectToken) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, t.String()) }
