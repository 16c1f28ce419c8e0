package sidecar

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/proxy/certs"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// checkDir writes a complete set of files for an embedded-store sidecar
// into dir and returns its configuration.
func checkDir(t *testing.T, dir string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.CA.Cert, cfg.CA.Key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := certs.InitCA(cfg.CA.Cert, cfg.CA.Key, certs.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "orchestrator.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), 0o644)
	cfg.Identity.Issuers = []string{"https://orchestrator.example.com"}
	cfg.Identity.Audience = "onbehalf-sidecar"
	cfg.Identity.Keys = []identity.KeyConfig{{ID: "o", File: filepath.Join(dir, "orchestrator.pub")}}
	cfg.Routes = []injector.RouteConfig{{Host: "api.example.com", Provider: "example"}}
	writeFile(t, filepath.Join(dir, "policy", "policy.rego"), "package onbehalf.authz\n\ndecision := {\"allow\": true}\n", 0o644)
	cfg.Policy.Paths = []string{filepath.Join(dir, "policy")}
	cfg.Policy.RunTestsOnReload = false
	cfg.Store.Embedded.Path = filepath.Join(dir, "grants.db")
	cfg.Store.Embedded.KeyFile = filepath.Join(dir, "grants.key")
	writeFile(t, cfg.Store.Embedded.KeyFile, strings.Repeat("k", 32), 0o600)
	cfg.Audit.FingerprintKeyFile = filepath.Join(dir, "fingerprint.key")
	writeFile(t, cfg.Audit.FingerprintKeyFile, strings.Repeat("f", 48), 0o600)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration invalid: %v", err)
	}
	return cfg
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFilesComplete(t *testing.T) {
	dir := t.TempDir()
	cfg := checkDir(t, dir)
	if err := CheckFiles(context.Background(), cfg); err != nil {
		t.Fatalf("got %v; want every file to load", err)
	}
	// Key files the sidecar creates may be missing where it can create
	// them, directories included.
	cfg.Store.Embedded.KeyFile = filepath.Join(dir, "new", "grants.key")
	cfg.Audit.FingerprintKeyFile = filepath.Join(dir, "new", "fingerprint.key")
	if err := CheckFiles(context.Background(), cfg); err != nil {
		t.Fatalf("got %v; want missing creatable key files accepted", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "new" {
			t.Error("CheckFiles created a directory")
		}
	}
}

// TestCheckFilesReportsEach breaks every file at once and expects one
// problem per file, each with its key path.
func TestCheckFilesReportsEach(t *testing.T) {
	dir := t.TempDir()
	cfg := checkDir(t, dir)
	if err := os.Remove(cfg.CA.Key); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg.CA.Cert, "not a certificate", 0o644)
	writeFile(t, cfg.Identity.Keys[0].File, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", 0o644)
	writeFile(t, filepath.Join(dir, "policy", "broken.rego"), "package onbehalf.authz\n\nallow if {\n", 0o644)
	writeFile(t, cfg.Store.Embedded.KeyFile, "short", 0o600)
	writeFile(t, cfg.Audit.FingerprintKeyFile, "short", 0o600)
	cfg.Proxy.Upstream.CAFile = filepath.Join(dir, "missing-upstream-ca.pem")
	cfg.RateLimits.Store = "redis"
	cfg.RateLimits.Redis.PasswordFile = filepath.Join(dir, "missing-redis-password")

	err := CheckFiles(context.Background(), cfg)
	if err == nil {
		t.Fatal("got nil; want every broken file reported")
	}
	got := err.Error()
	for _, want := range []string{
		"ca.key: " + cfg.CA.Key + ": no such file or directory",
		"identity.keys[0].file: " + cfg.Identity.Keys[0].File + ": ",
		"proxy.upstream.ca_file: " + cfg.Proxy.Upstream.CAFile + ": no such file or directory",
		"policy.paths: no policy loaded: ",
		"store.embedded.key_file: key file " + cfg.Store.Embedded.KeyFile,
		"audit.fingerprint_key_file: ",
		"rate_limits.redis.password_file: ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("got:\n%s\nwant a line containing %q", got, want)
		}
	}
	if strings.Contains(got, "ca: ") {
		t.Errorf("got:\n%s\nwant no certificate check while the key is missing", got)
	}
	if n := len(config.Flatten(err)); n != 7 {
		t.Errorf("got %d problems:\n%s\nwant 7", n, got)
	}
}

func TestCheckFilesCAMismatch(t *testing.T) {
	dir := t.TempDir()
	cfg := checkDir(t, dir)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg.CA.Key, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), 0o600)
	err = CheckFiles(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "ca: load CA: key "+cfg.CA.Key) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("got %v; want the mismatched key reported", err)
	}
}

func TestCheckFilesVaultCredential(t *testing.T) {
	dir := t.TempDir()
	cfg := checkDir(t, dir)
	cfg.Store.Backend = BackendVault
	cfg.Store.Vault.Address = "https://vault.example.com:8200"
	cfg.Store.Vault.Auth.KubernetesRole = "agents"
	cfg.Store.Vault.Auth.KubernetesTokenFile = filepath.Join(dir, "vault", "token")
	cfg.Store.Vault.CAFile = filepath.Join(dir, "vault-ca.pem")
	writeFile(t, cfg.Store.Vault.CAFile, "no certificate here", 0o644)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration invalid: %v", err)
	}
	err := CheckFiles(context.Background(), cfg)
	if err == nil {
		t.Fatal("got nil; want the missing token and the empty CA bundle reported")
	}
	for _, want := range []string{
		"store.vault.auth.kubernetes_token_file: " + cfg.Store.Vault.Auth.KubernetesTokenFile + ": no such file or directory",
		"store.vault.ca_file: " + cfg.Store.Vault.CAFile + ": no PEM certificate",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got:\n%v\nwant a line containing %q", err, want)
		}
	}
	writeFile(t, cfg.Store.Vault.Auth.KubernetesTokenFile, "\n", 0o644)
	if err := CheckFiles(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "kubernetes_token_file: "+cfg.Store.Vault.Auth.KubernetesTokenFile+" is empty") {
		t.Errorf("got %v; want the empty token reported", err)
	}
}

func TestCheckFilesUncreatableKey(t *testing.T) {
	if os.Geteuid() == 0 {
		// Root may write into a read-only directory; a file stands in
		// for the directory instead.
		dir := t.TempDir()
		cfg := checkDir(t, dir)
		writeFile(t, filepath.Join(dir, "notadir"), "x", 0o644)
		cfg.Audit.FingerprintKeyFile = filepath.Join(dir, "notadir", "fingerprint.key")
		err := CheckFiles(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "audit.fingerprint_key_file: "+cfg.Audit.FingerprintKeyFile+": not a directory") {
			t.Errorf("got %v; want the uncreatable key reported", err)
		}
		return
	}
	dir := t.TempDir()
	cfg := checkDir(t, dir)
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	cfg.Audit.FingerprintKeyFile = filepath.Join(ro, "fingerprint.key")
	err := CheckFiles(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), ro+" is not writable") {
		t.Errorf("got %v; want the read-only directory reported", err)
	}
}

// TestCheckFilesJournal: with providers, the refresh journal's directory
// and key are checked like the files New opens.
func TestCheckFilesJournal(t *testing.T) {
	dir := t.TempDir()
	cfg := checkDir(t, dir)
	writeFile(t, filepath.Join(dir, "client-secret"), "s3cret-value", 0o600)
	pc := oauth.DefaultProviderConfig()
	pc.TokenURL, pc.ClientID, pc.ClientSecretFile, pc.AuthStyle = "https://auth.example.com/token", "id", filepath.Join(dir, "client-secret"), oauth.AuthStyleHeader
	cfg.Providers = map[string]oauth.ProviderConfig{"example": pc}
	// Missing but creatable: fine (the embedded store's key seals it).
	if err := CheckFiles(context.Background(), cfg); err != nil {
		t.Fatalf("got %v; want a creatable journal accepted", err)
	}
	if _, err := os.Stat(cfg.JournalConfig().Dir); err == nil {
		t.Error("CheckFiles created the journal directory")
	}
	// A directory others can read, and a short key.
	cfg.Refresh.Journal = JournalConfig{Dir: filepath.Join(dir, "journal"), KeyFile: filepath.Join(dir, "journal.key")}
	if err := os.Mkdir(cfg.Refresh.Journal.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg.Refresh.Journal.KeyFile, "short", 0o600)
	err := CheckFiles(context.Background(), cfg)
	for _, want := range []string{"refresh.journal.dir: " + cfg.Refresh.Journal.Dir + " is accessible to group or others", "refresh.journal.key_file: "} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v; want a line containing %q", err, want)
		}
	}
	// A file where the directory should be.
	cfg.Refresh.Journal.Dir = cfg.Refresh.Journal.KeyFile
	if err := CheckFiles(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("got %v; want the file reported as not a directory", err)
	}
}
