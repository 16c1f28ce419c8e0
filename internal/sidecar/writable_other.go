//go:build !unix

package sidecar

// writable reports whether this process may create files in dir; without
// access(2) the sidecar's own attempt at start is the test.
func writable(string) bool { return true }
