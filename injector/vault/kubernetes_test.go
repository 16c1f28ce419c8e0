//go:build integration

package vault

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// Kubernetes identity of the sidecar in these tests.
const (
	k8sNamespace = "agents"
	k8sSA        = "onbehalf"
	k8sUID       = "6a0c2f4e-sa-uid"
	k8sReviewer  = "reviewer-jwt-for-vault"
)

// tokenReviewer is a stand-in for the Kubernetes API's TokenReview endpoint
// (the only Kubernetes call Vault's auth method makes at login). It accepts
// the tokens it was told about and records every token Vault asked it to
// review, so the test can see which projected token each login presented.
type tokenReviewer struct {
	srv *httptest.Server

	mu       sync.Mutex
	valid    map[string]bool
	reviewed []string
}

func newTokenReviewer(t *testing.T) *tokenReviewer {
	t.Helper()
	tr := &tokenReviewer{valid: map[string]bool{}}
	tr.srv = httptest.NewTLSServer(http.HandlerFunc(tr.serve))
	t.Cleanup(tr.srv.Close)
	return tr
}

func (tr *tokenReviewer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" ||
		r.Header.Get("Authorization") != "Bearer "+k8sReviewer {
		http.Error(w, `{"kind":"Status","status":"Failure","code":401}`, http.StatusUnauthorized)
		return
	}
	var req struct {
		Spec struct {
			Token     string   `json:"token"`
			Audiences []string `json:"audiences"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	tr.mu.Lock()
	tr.reviewed = append(tr.reviewed, req.Spec.Token)
	ok := tr.valid[req.Spec.Token]
	tr.mu.Unlock()
	status := map[string]any{"authenticated": false}
	if ok {
		status = map[string]any{
			"authenticated": true,
			"user":          map[string]any{"username": "system:serviceaccount:" + k8sNamespace + ":" + k8sSA, "uid": k8sUID},
			"audiences":     req.Spec.Audiences,
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status,
	})
}

func (tr *tokenReviewer) allow(tok string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.valid[tok] = true
}

func (tr *tokenReviewer) lastReviewed() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.reviewed) == 0 {
		return ""
	}
	return tr.reviewed[len(tr.reviewed)-1]
}

// saToken mints a projected service-account token for the test identity.
func saToken(t *testing.T, key *ecdsa.PrivateKey, n int) string {
	t.Helper()
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": "https://kubernetes.default.svc",
		"sub": "system:serviceaccount:" + k8sNamespace + ":" + k8sSA,
		"aud": []string{"vault"},
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"jti": fmt.Sprintf("token-%d", n),
		"kubernetes.io": map[string]any{
			"namespace":      k8sNamespace,
			"serviceaccount": map[string]any{"name": k8sSA, "uid": k8sUID},
		},
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestKubernetesLoginRereadsProjectedToken(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	tr := newTokenReviewer(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WritePolicy("onbehalf-sidecar", sidecarPolicy(t)); err != nil {
		t.Fatal(err)
	}
	if err := srv.EnableAuth("kubernetes", "kubernetes"); err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tr.srv.Certificate().Raw})
	l := srv.Client().Logical()
	if _, err := l.WriteWithContext(ctx(t), "auth/kubernetes/config", map[string]any{
		"kubernetes_host":      tr.srv.URL,
		"kubernetes_ca_cert":   string(caPEM),
		"token_reviewer_jwt":   k8sReviewer,
		"disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteWithContext(ctx(t), "auth/kubernetes/role/sidecar", map[string]any{
		"bound_service_account_names":      []string{k8sSA},
		"bound_service_account_namespaces": []string{k8sNamespace},
		"audience":                         "vault",
		"token_policies":                   []string{"onbehalf-sidecar"},
		"token_ttl":                        "1h",
	}); err != nil {
		t.Fatal(err)
	}

	tok1, tok2 := saToken(t, key, 1), saToken(t, key, 2)
	tr.allow(tok1)
	tr.allow(tok2)
	tokFile := writeFile(t, "token", tok1)
	cfg := withTransit(DefaultConfig())
	cfg.Address = srv.Addr()
	cfg.Timeout = failTimeout
	cfg.Auth.Method = AuthKubernetes
	cfg.Auth.KubernetesRole = "sidecar"
	cfg.Auth.KubernetesTokenFile = tokFile
	s := open(t, cfg)
	if got := tr.lastReviewed(); got != tok1 {
		t.Fatalf("first login presented a token other than the projected one")
	}
	roundTrip(t, s)

	// The kubelet rotates the projected token; the Vault token is revoked.
	// The re-login must present the new file content.
	if err := os.WriteFile(tokFile, []byte(tok2), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteWithContext(ctx(t), "auth/token/revoke", map[string]any{"token": s.sess.current().client.Token()}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(reloginMinInterval)
	roundTrip(t, s)
	if got := s.sess.logins.Load(); got != 2 {
		t.Errorf("logins = %d; want 2", got)
	}
	if got := tr.lastReviewed(); got != tok2 {
		t.Errorf("re-login did not present the rotated projected token")
	}
}
