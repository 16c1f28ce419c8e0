package main

import "github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"

// authority is a throwaway ECDSA P-256 CA (internal/testkit/testpki) for the
// harness's upstream and for squid's interception.
type authority = testpki.CA

// newAuthority creates a CA named cn.
func newAuthority(cn string) (*authority, error) { return testpki.NewCA(cn) }
