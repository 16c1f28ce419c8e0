package chartcheck

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// webhookSettings is the part of the rendered webhook configuration that
// names what a sidecar mounts.
type webhookSettings struct {
	NativeSidecar bool `json:"native_sidecar"`
	Sidecar       struct {
		Image           string `json:"image"`
		ConfigMap       string `json:"config_map"`
		ConfigKey       string `json:"config_key"`
		PolicyConfigMap string `json:"policy_config_map"`
		CASecret        string `json:"ca_secret"`
		AuditSecret     string `json:"audit_secret"`
		SidecarSecret   string `json:"sidecar_secret"`
		VaultToken      struct {
			Enabled bool   `json:"enabled"`
			Path    string `json:"path"`
		} `json:"vault_token"`
	} `json:"sidecar"`
	Agent struct {
		TrustConfigMap string `json:"trust_config_map"`
	} `json:"agent"`
}

// webhookConfig returns the rendered webhook.yaml and its settings.
func webhookConfig(t *testing.T, r *rendered) ([]byte, webhookSettings) {
	t.Helper()
	cm, ok := find[*corev1.ConfigMap](r)[releaseNS+"/onbehalf-webhook"]
	if !ok {
		t.Fatalf("no webhook ConfigMap among %v", names(find[*corev1.ConfigMap](r)))
	}
	data := []byte(cm.Data["webhook.yaml"])
	var s webhookSettings
	if err := yaml.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return data, s
}

// kubeletMount writes files into dir the way the kubelet's atomic writer
// lays out a ConfigMap or Secret volume: a timestamped directory, a ..data
// symlink to it, and one symlink per key.
func kubeletMount(t *testing.T, dir string, files map[string][]byte, mode os.FileMode) {
	t.Helper()
	ts := "..2026_01_02_03_04_05.000000001"
	if err := os.MkdirAll(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, ts, name), data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// sidecarMounts lays out, under root, what the webhook mounts into a
// sidecar in namespace ns, from the rendered objects (and stand-ins for the
// objects the operator provides), and returns the config file's path with
// its absolute paths moved under root.
func sidecarMounts(t *testing.T, r *rendered, ns, root string) string {
	t.Helper()
	_, s := webhookConfig(t, r)
	cms := find[*corev1.ConfigMap](r)
	secrets := find[*corev1.Secret](r)

	cm, ok := cms[ns+"/"+s.Sidecar.ConfigMap]
	if !ok {
		t.Fatalf("the webhook mounts ConfigMap %s/%s, which the chart does not render", ns, s.Sidecar.ConfigMap)
	}
	configFiles := map[string][]byte{}
	for k, v := range cm.Data {
		configFiles[k] = []byte(strings.ReplaceAll(strings.ReplaceAll(v,
			"/etc/onbehalf/", root+"/etc/onbehalf/"),
			"/var/run/secrets/vault/", root+"/var/run/secrets/vault/"))
	}
	kubeletMount(t, filepath.Join(root, "etc/onbehalf/config"), configFiles, 0o644)

	if s.Sidecar.PolicyConfigMap != "" {
		policy := map[string][]byte{}
		if pm, ok := cms[ns+"/"+s.Sidecar.PolicyConfigMap]; ok {
			for k, v := range pm.Data {
				policy[k] = []byte(v)
			}
		} else if r.values["policy"].(map[string]any)["existingConfigMap"] == s.Sidecar.PolicyConfigMap {
			// The operator's ConfigMap: the project's default policy.
			data, err := os.ReadFile(filepath.Join(chartDir, "files", "default-policy.rego"))
			if err != nil {
				t.Fatal(err)
			}
			policy["policy.rego"] = data
		} else {
			t.Fatalf("the webhook mounts policy ConfigMap %s/%s, which nobody provides", ns, s.Sidecar.PolicyConfigMap)
		}
		kubeletMount(t, filepath.Join(root, "etc/onbehalf/policy"), policy, 0o644)
	}

	secretFiles := map[string][]byte{}
	if ca, ok := secrets[ns+"/"+s.Sidecar.CASecret]; ok {
		checkInterceptionCA(t, ca.Data["ca.crt"], ca.Data["ca.key"])
		secretFiles["ca.crt"], secretFiles["ca.key"] = ca.Data["ca.crt"], ca.Data["ca.key"]
	} else {
		secretFiles["ca.crt"], secretFiles["ca.key"] = newCA(t)
	}
	if s.Sidecar.AuditSecret != "" {
		if a, ok := secrets[ns+"/"+s.Sidecar.AuditSecret]; ok {
			if len(a.Data["fingerprint.key"]) < 32 {
				t.Errorf("fingerprint.key: %d bytes; want at least 32", len(a.Data["fingerprint.key"]))
			}
			secretFiles["fingerprint.key"] = a.Data["fingerprint.key"]
		} else {
			secretFiles["fingerprint.key"] = []byte(strings.Repeat("k", 48))
		}
	}
	kubeletMount(t, filepath.Join(root, "etc/onbehalf/secret"), secretFiles, 0o644)
	if s.Sidecar.SidecarSecret != "" {
		// The operator's Secret: a stand-in key for each file the
		// configuration names under its mount.
		files := map[string][]byte{}
		for _, v := range cm.Data {
			for _, m := range sidecarSecretRef.FindAllStringSubmatch(v, -1) {
				files[m[1]] = []byte("stand-in secret of " + m[1] + "\n")
			}
		}
		if len(files) == 0 {
			t.Errorf("the webhook mounts Secret %s/%s, but the sidecar configuration names no file in it", ns, s.Sidecar.SidecarSecret)
		}
		kubeletMount(t, filepath.Join(root, "etc/onbehalf/sidecar-secret"), files, 0o644)
	}
	if s.Sidecar.VaultToken.Enabled {
		kubeletMount(t, filepath.Join(root, filepath.Dir(s.Sidecar.VaultToken.Path)),
			map[string][]byte{filepath.Base(s.Sidecar.VaultToken.Path): []byte("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")}, 0o644)
	}
	key := s.Sidecar.ConfigKey
	if key == "" {
		key = "onbehalf.yaml"
	}
	return filepath.Join(root, "etc/onbehalf/config", key)
}

// sidecarSecretRef matches a file of the operator's sidecar Secret named in
// the rendered sidecar configuration.
var sidecarSecretRef = regexp.MustCompile(`/etc/onbehalf/sidecar-secret/([-._a-zA-Z0-9]+)`)

// checkInterceptionCA asserts what the sidecar requires of its CA: an ECDSA
// P-256 CA certificate, valid now, with the matching key.
func checkInterceptionCA(t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatal("interception CA: not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		t.Fatalf("interception CA key: %v", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !ok || pub.Curve != elliptic.P256():
		t.Errorf("interception CA: got %T; want ECDSA P-256", cert.PublicKey)
	case !pub.Equal(&key.PublicKey):
		t.Error("interception CA: key does not match the certificate")
	case !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0:
		t.Error("interception CA: not a CA allowed to sign certificates")
	case time.Now().Before(cert.NotBefore) || time.Now().After(cert.NotAfter):
		t.Error("interception CA: not valid now")
	}
}

// newCA stands in for a CA the operator provides.
func newCA(t *testing.T) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "corp interception CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// TestSidecarConfigChecks lays out each agent namespace's sidecar mounts and
// runs `onbehalf serve --check` on the rendered configuration.
func TestSidecarConfigChecks(t *testing.T) {
	for _, set := range valueSets {
		t.Run(set.name, func(t *testing.T) {
			r := render(t, set)
			for _, ns := range agentNamespaces(r) {
				root := t.TempDir()
				cfg := sidecarMounts(t, r, ns, root)
				out, code := runBin(t, "serve", "--config", cfg, "--check")
				if code != 0 {
					t.Errorf("%s: serve --check exited %d:\n%s", ns, code, out)
				}
				// interceptionCA.leafNames reaches the sidecar.
				want := "wildcard"
				if ca, ok := r.values["interceptionCA"].(map[string]any); ok && ca["leafNames"] != nil {
					want = ca["leafNames"].(string)
				}
				if data, err := os.ReadFile(cfg); err != nil || !strings.Contains(string(data), "leaf_names: "+want+"\n") {
					t.Errorf("%s: rendered config lacks leaf_names: %s (%v)", ns, want, err)
				}
				// The check loads the mounted files: without the CA key
				// (a Secret lacking a key) it names it.
				if err := os.Remove(filepath.Join(root, "etc/onbehalf/secret/ca.key")); err != nil {
					t.Fatal(err)
				}
				out, code = runBin(t, "serve", "--config", cfg, "--check")
				if code != 2 || !strings.Contains(out, "ca.key: "+filepath.Join(root, "etc/onbehalf/secret/ca.key")) {
					t.Errorf("%s: serve --check without the CA key exited %d; want 2 naming ca.key:\n%s", ns, code, out)
				}
			}
		})
	}
}

// agentNamespaces lists the namespaces the webhook is registered for.
func agentNamespaces(r *rendered) []string {
	for _, m := range find[*mutatingConfig](r) {
		for _, e := range m.Webhooks[0].NamespaceSelector.MatchExpressions {
			if e.Key == "kubernetes.io/metadata.name" {
				return e.Values
			}
		}
	}
	return nil
}
