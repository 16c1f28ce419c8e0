//go:build !linux

package outbound_test

import "testing"

// blackholeAddr needs Linux's handling of a full accept queue; elsewhere it
// returns an address whose connects are refused at once, and the dial
// timeout case fails there rather than pass without testing anything.
func blackholeAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:1"
}
