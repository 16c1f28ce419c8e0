//go:build integration

package vault

import (
	"errors"
	"strings"
	"testing"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

func TestTLSWithCAFile(t *testing.T) {
	srv := startVault(t, vaulttest.Options{TLS: true})
	cfg := withTransit(tokenConfig(t, srv))
	if !strings.HasPrefix(cfg.Address, "https://") || cfg.CAFile == "" {
		t.Fatalf("test server is not TLS: %s", cfg.Address)
	}
	s := open(t, cfg)
	roundTrip(t, s)

	// Without the CA the server is not trusted: never a fallback to no
	// verification.
	cfg.CAFile = ""
	s2, err := Open(ctx(t), cfg, Options{})
	if err == nil {
		s2.Close()
		t.Fatal("Open without the server's CA succeeded; want a certificate error")
	}
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Open without CA: err = %v; want ErrUnavailable naming the certificate problem", err)
	}
}
