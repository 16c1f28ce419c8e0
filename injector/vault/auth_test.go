//go:build integration

package vault

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// sidecarPolicy is the documented least-privilege policy,
// examples/vault/onbehalf-sidecar.hcl: the tests prove it suffices.
func sidecarPolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/vault/onbehalf-sidecar.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// appRoleServer starts a Vault with the sidecar policy and an AppRole role
// "sidecar" with the given token TTLs, and returns it with a store config
// for that role (prefix "onbehalf", Transit on) and the secret id file.
func appRoleServer(t *testing.T, ttl, maxTTL time.Duration) (*vaulttest.Server, Config, string) {
	t.Helper()
	srv := startVault(t, vaulttest.Options{})
	if err := srv.WritePolicy("onbehalf-sidecar", sidecarPolicy(t)); err != nil {
		t.Fatal(err)
	}
	roleID, secretID, err := srv.EnableAppRole("sidecar", "onbehalf-sidecar")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client().Logical().WriteWithContext(ctx(t), "auth/approle/role/sidecar", map[string]any{
		"token_ttl":     int(ttl / time.Second),
		"token_max_ttl": int(maxTTL / time.Second),
	}); err != nil {
		t.Fatal(err)
	}
	sidFile := writeFile(t, "secret-id", secretID)
	cfg := withTransit(DefaultConfig())
	cfg.Address = srv.Addr()
	cfg.Timeout = failTimeout
	cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: roleID, SecretIDFile: sidFile, AppRoleMount: "approle"}
	return srv, cfg, sidFile
}

// lookupToken returns the token's lookup data as root sees it.
func lookupToken(t *testing.T, srv *vaulttest.Server, tok string) map[string]any {
	t.Helper()
	sec, err := srv.Client().Logical().WriteWithContext(ctx(t), "auth/token/lookup", map[string]any{"token": tok})
	if err != nil || sec == nil {
		t.Fatalf("lookup token: %v", err)
	}
	return sec.Data
}

func TestAppRoleRenewalThenRelogin(t *testing.T) {
	const ttl, maxTTL = 3 * time.Second, 8 * time.Second
	srv, cfg, _ := appRoleServer(t, ttl, maxTTL)
	s := open(t, cfg)
	start := time.Now()
	first := s.sess.current().client.Token()
	roundTrip(t, s)

	// Past the token's first TTL the same token still works: the lifetime
	// watcher renewed it.
	time.Sleep(ttl + 500*time.Millisecond)
	if got := s.sess.logins.Load(); got != 1 {
		t.Fatalf("logins after %s = %d; want 1 (the token should have been renewed, not replaced)", time.Since(start), got)
	}
	if s.sess.renewals.Load() < 1 {
		t.Errorf("renewals = 0 after %s; want at least 1", time.Since(start))
	}
	if s.sess.current().client.Token() != first {
		t.Errorf("token changed before its max TTL")
	}
	data := lookupToken(t, srv, first)
	if data["last_renewal_time"] == nil {
		t.Errorf("token lookup shows no renewal: %v", data["last_renewal_time"])
	}
	roundTrip(t, s)

	// At the max TTL renewal ends and the session logs in again; requests
	// keep working throughout.
	deadline := time.Now().Add(maxTTL + 5*time.Second)
	for s.sess.logins.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no re-login %s after start (max TTL %s)", time.Since(start), maxTTL)
		}
		if _, _, err := s.Get(ctx(t), "slack", "alice"); err != nil {
			t.Fatalf("Get at %s: %v", time.Since(start), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if s.sess.current().client.Token() == first {
		t.Errorf("re-login kept the old token")
	}
	roundTrip(t, s)
}

func TestAppRoleReloginAfterRevokeRereadsSecretID(t *testing.T) {
	srv, cfg, sidFile := appRoleServer(t, time.Hour, 2*time.Hour)
	s := open(t, cfg)
	roundTrip(t, s)
	old := s.sess.current().client.Token()

	// Rotate the secret id: a new one in the file, the old one destroyed,
	// so the re-login works only if the file is read again.
	oldSID, _ := os.ReadFile(sidFile)
	l := srv.Client().Logical()
	sec, err := l.WriteWithContext(ctx(t), "auth/approle/role/sidecar/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sidFile, []byte(sec.Data["secret_id"].(string)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteWithContext(ctx(t), "auth/approle/role/sidecar/secret-id/destroy", map[string]any{"secret_id": string(oldSID)}); err != nil {
		t.Fatal(err)
	}
	// Revoke the store's token; a re-login is allowed once
	// reloginMinInterval has passed since the last login.
	if _, err := l.WriteWithContext(ctx(t), "auth/token/revoke", map[string]any{"token": old}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(reloginMinInterval)
	if _, _, err := s.Get(ctx(t), "slack", "alice"); err != nil {
		t.Fatalf("Get after the token was revoked: %v; want success after re-login", err)
	}
	if got := s.sess.logins.Load(); got != 2 {
		t.Errorf("logins = %d; want 2", got)
	}
	if s.sess.current().client.Token() == old {
		t.Errorf("still using the revoked token")
	}
	roundTrip(t, s)
	if err := s.Ping(ctx(t)); err != nil {
		t.Errorf("Ping after re-login: %v", err)
	}
}

func TestPermissionDeniedDoesNotLoopLogins(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	if err := srv.WritePolicy("nothing", `path "secret/data/elsewhere/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	roleID, secretID, err := srv.EnableAppRole("weak", "nothing")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Address = srv.Addr()
	cfg.Timeout = failTimeout
	cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: roleID, SecretIDFile: writeFile(t, "sid", secretID), AppRoleMount: "approle"}
	s := open(t, cfg)

	// Right after login a denial is the policy's: no re-login.
	for range 5 {
		_, _, err := s.Get(ctx(t), "slack", "alice")
		if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("Get without permission: err = %v; want ErrUnavailable saying permission denied", err)
		}
	}
	if got := s.sess.logins.Load(); got != 1 {
		t.Errorf("logins after denied requests right after login = %d; want 1", got)
	}
	// Later, one denial buys one re-login; the retried request is denied
	// again and the burst that follows does not log in again.
	time.Sleep(reloginMinInterval)
	for range 5 {
		if _, _, err := s.Get(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Get without permission: err = %v; want ErrUnavailable", err)
		}
	}
	if got := s.sess.logins.Load(); got != 2 {
		t.Errorf("logins after a burst of denials = %d; want 2", got)
	}
}

func TestTokenFileRereadAtLogin(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	mk := func() string {
		sec, err := srv.Client().Logical().WriteWithContext(ctx(t), "auth/token/create", map[string]any{
			"policies": []string{"root"}, "ttl": "1h",
		})
		if err != nil {
			t.Fatal(err)
		}
		return sec.Auth.ClientToken
	}
	tok1, tok2 := mk(), mk()
	cfg := tokenConfig(t, srv)
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte(tok1), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = failTimeout
	s := open(t, cfg)
	roundTrip(t, s)
	if d := lookupToken(t, srv, tok1); d["renewable"] != true {
		t.Fatalf("test token not renewable: %v", d["renewable"])
	}
	// An agent rotates the file and the old token is revoked: the next
	// denied request re-reads the file.
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte(tok2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client().Logical().WriteWithContext(ctx(t), "auth/token/revoke", map[string]any{"token": tok1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(reloginMinInterval)
	roundTrip(t, s)
	if got := s.sess.current().client.Token(); got != tok2 {
		t.Errorf("store did not switch to the rotated token file")
	}
	var ttl json.Number
	if d := lookupToken(t, srv, tok2); d != nil {
		ttl, _ = d["ttl"].(json.Number)
	}
	if ttl == "" {
		t.Errorf("rotated token lookup has no ttl")
	}
}

func TestExpiringTokenFileDoesNotSpin(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	const ttl = 3 * time.Second
	sec, err := srv.Client().Logical().WriteWithContext(ctx(t), "auth/token/create", map[string]any{
		"policies": []string{"root"}, "ttl": "3s", "renewable": false,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := tokenConfig(t, srv)
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte(sec.Auth.ClientToken), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = failTimeout
	s := open(t, cfg)
	roundTrip(t, s)
	// The file is never refreshed: near expiry the watcher ends, the
	// session re-reads the same token (still valid for a moment), and once
	// it has expired logins fail. Logins must stay rare throughout.
	time.Sleep(ttl + 2*time.Second)
	if got := s.sess.logins.Load(); got > 3 {
		t.Errorf("logins within %s of a non-renewable %s token = %d; want at most 3 (no login spin)", ttl+2*time.Second, ttl, got)
	}
	err = s.Ping(ctx(t))
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "login failing") {
		t.Errorf("Ping with an expired token file: err = %v; want ErrUnavailable saying login failing", err)
	}
	// A fresh token in the file is picked up by the backing-off login loop.
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte(srv.RootToken()), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(loginBackoffMax + 5*time.Second)
	for s.Ping(ctx(t)) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover after the token file was fixed: %v", s.Ping(ctx(t)))
		}
		time.Sleep(100 * time.Millisecond)
	}
	roundTrip(t, s)
}
