package proxy_test

import (
	"crypto/tls"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
)

func tlsConfigFor(e *testenv.Env) *tls.Config {
	return &tls.Config{RootCAs: e.Upstream.CertPool()}
}
