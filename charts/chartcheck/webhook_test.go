package chartcheck

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

type mutatingConfig = admissionregv1.MutatingWebhookConfiguration

// serviceAccountPath is where the ServiceAccount admission plugin mounts a
// pod's API token.
const serviceAccountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// webhookProcess is `onbehalf webhook` serving the rendered configuration.
type webhookProcess struct {
	url    string
	client *http.Client
}

// startWebhook runs the binary with the chart's webhook configuration and
// TLS Secret, and a client that verifies it with the registration's
// caBundle against the Service's DNS name, as the API server does.
func startWebhook(t *testing.T, r *rendered) *webhookProcess {
	t.Helper()
	data, _ := webhookConfig(t, r)
	dir := t.TempDir()
	tlsSecret, ok := find[*corev1.Secret](r)[releaseNS+"/onbehalf-webhook-tls"]
	if !ok {
		t.Fatal("no webhook TLS Secret rendered")
	}
	var mwc *mutatingConfig
	for _, m := range find[*mutatingConfig](r) {
		mwc = m
	}
	if mwc == nil || len(mwc.Webhooks) != 1 {
		t.Fatal("want one MutatingWebhookConfiguration with one webhook")
	}
	wh := mwc.Webhooks[0]
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(wh.ClientConfig.CABundle) {
		t.Fatal("caBundle holds no certificate")
	}
	tlsDir := filepath.Join(dir, "tls")
	kubeletMount(t, tlsDir, map[string][]byte{"tls.crt": tlsSecret.Data["tls.crt"], "tls.key": tlsSecret.Data["tls.key"]}, 0o644)
	cfg := strings.ReplaceAll(string(data), "/etc/onbehalf/webhook-tls/", tlsDir+"/")
	cfgPath := filepath.Join(dir, "webhook.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runBin(t, "webhook", "--config", cfgPath, "--check"); code != 0 {
		t.Fatalf("webhook --check exited %d:\n%s", code, out)
	}

	addr, admin := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, onbehalfBin(t), "webhook", "--config", cfgPath, "--listen", addr)
	cmd.Env = append(cleanEnv(), "ONBEHALF_ADMIN_LISTEN="+admin)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := cmd.Wait(); err != nil && t.Failed() {
			t.Logf("webhook exited: %v", err)
		}
		if t.Failed() {
			t.Logf("webhook logs:\n%s", logs.String())
		}
	})
	// The name the API server verifies: the Service's DNS name, or the
	// registered URL's host.
	var serverName, path string
	if svc := wh.ClientConfig.Service; svc != nil {
		serverName, path = svc.Name+"."+svc.Namespace+".svc", *svc.Path
	} else {
		u, err := url.Parse(*wh.ClientConfig.URL)
		if err != nil {
			t.Fatal(err)
		}
		serverName, path = u.Hostname(), u.Path
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12},
	}}
	t.Cleanup(client.CloseIdleConnections)
	p := &webhookProcess{url: "https://" + addr + path, client: client}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook not healthy within 20s (last error %v)\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// admit sends pod as the API server would and returns the response.
func (p *webhookProcess) admit(t *testing.T, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	obj, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID(fmt.Sprintf("uid-%d", time.Now().UnixNano())),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: pod.Namespace,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: obj},
		},
	}
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.client.Post(p.url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /mutate: %d %s", resp.StatusCode, data)
	}
	var out admissionv1.AdmissionReview
	if err := strictJSON(data, &out); err != nil {
		t.Fatalf("response is not a strict AdmissionReview: %v\n%s", err, data)
	}
	if out.Response == nil || out.Response.UID != review.Request.UID {
		t.Fatalf("response does not answer uid %s: %s", review.Request.UID, data)
	}
	return out.Response
}

func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// examplePod builds the pod a ReplicaSet would create from the example
// Deployment, after the ServiceAccount admission plugin mounted the API
// token (as it does when the service account allows it).
func examplePod(t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(examplesDir, "agent-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if !strings.Contains(doc, "kind: Deployment") {
			continue
		}
		dep = &appsv1.Deployment{}
		if err := yaml.UnmarshalStrict([]byte(doc), dep); err != nil {
			t.Fatalf("example Deployment: %v", err)
		}
	}
	if dep == nil {
		t.Fatal("no Deployment in the example")
	}
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: *dep.Spec.Template.ObjectMeta.DeepCopy(),
		Spec:       *dep.Spec.Template.Spec.DeepCopy(),
	}
	pod.GenerateName = dep.Name + "-7d9f8c6b5-"
	pod.Namespace = ns
	tok := "kube-api-access-4kq2x"
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: tok, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3607))}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
		}},
	}})
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: tok, MountPath: serviceAccountPath, ReadOnly: true})
	}
	return pod
}

func ptr[T any](v T) *T { return &v }

// applyPatch applies a response's JSON Patch to pod with evanphx/json-patch
// and decodes the result strictly.
func applyPatch(t *testing.T, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return applyPatchRaw(t, doc, resp)
}

// applyPatchRaw applies the patch to the object exactly as it was sent.
func applyPatchRaw(t *testing.T, doc []byte, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType: got %v; want JSONPatch", resp.PatchType)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decode patch: %v", err)
	}
	patched, err := patch.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch: %v\n%s", err, resp.Patch)
	}
	var out corev1.Pod
	if err := strictJSON(patched, &out); err != nil {
		t.Fatalf("patched pod does not decode strictly: %v\n%s", err, patched)
	}
	return &out
}

// checkIsolation asserts the injected pod's isolation: one sidecar, no API
// token anywhere, the Vault token and the CA key mounted into the sidecar
// only, every agent container pointed at the sidecar, and every object it
// mounts rendered by the chart (or named by the operator).
func checkIsolation(t *testing.T, r *rendered, pod *corev1.Pod, wantNative bool) {
	t.Helper()
	_, s := webhookConfig(t, r)
	var sidecar *corev1.Container
	var agents []corev1.Container
	for i, c := range pod.Spec.InitContainers {
		if c.Name == "onbehalf" {
			sidecar = &pod.Spec.InitContainers[i]
			continue
		}
		agents = append(agents, c)
	}
	for i, c := range pod.Spec.Containers {
		if c.Name == "onbehalf" {
			if sidecar != nil {
				t.Fatal("two sidecars")
			}
			sidecar = &pod.Spec.Containers[i]
			continue
		}
		agents = append(agents, c)
	}
	if sidecar == nil {
		t.Fatal("no sidecar")
	}
	native := sidecar.RestartPolicy != nil && *sidecar.RestartPolicy == corev1.ContainerRestartPolicyAlways
	if native != wantNative || (native && pod.Spec.InitContainers[0].Name != "onbehalf") || (!native && pod.Spec.Containers[0].Name != "onbehalf") {
		t.Errorf("native sidecar: got %v; want %v", native, wantNative)
	}
	if sidecar.Image != s.Sidecar.Image {
		t.Errorf("sidecar image %q; want %q", sidecar.Image, s.Sidecar.Image)
	}
	sc := sidecar.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || sc.RunAsUser == nil {
		t.Errorf("sidecar securityContext not hardened: %+v", sc)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false")
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken != nil && src.ServiceAccountToken.Audience == "" {
					t.Errorf("volume %s still projects the API token", v.Name)
				}
			}
		}
	}
	sidecarOnly := map[string]bool{}
	for _, m := range sidecar.VolumeMounts {
		if m.Name != "onbehalf-trust" {
			sidecarOnly[m.Name] = true
		}
	}
	if s.Sidecar.VaultToken.Enabled && !sidecarOnly["onbehalf-vault-token"] {
		t.Error("the sidecar lacks its Vault token")
	}
	for _, c := range agents {
		if sc != nil && sc.RunAsUser != nil && c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil && *c.SecurityContext.RunAsUser == *sc.RunAsUser {
			t.Errorf("agent %s runs as the sidecar's user", c.Name)
		}
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(m.MountPath, serviceAccountPath) {
				t.Errorf("agent %s mounts a token at %s", c.Name, m.MountPath)
			}
			if sidecarOnly[m.Name] {
				t.Errorf("agent %s mounts the sidecar's %s", c.Name, m.Name)
			}
			if v := vols[m.Name]; v.Projected != nil {
				for _, src := range v.Projected.Sources {
					if src.ServiceAccountToken != nil {
						t.Errorf("agent %s mounts a service-account token (%s)", c.Name, m.Name)
					}
				}
			}
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["HTTPS_PROXY"] != "http://127.0.0.1:15080" || env["https_proxy"] != env["HTTPS_PROXY"] {
			t.Errorf("agent %s: HTTPS_PROXY=%q https_proxy=%q", c.Name, env["HTTPS_PROXY"], env["https_proxy"])
		}
		if env["SSL_CERT_FILE"] != "/etc/onbehalf/trust/ca.pem" {
			t.Errorf("agent %s: SSL_CERT_FILE=%q", c.Name, env["SSL_CERT_FILE"])
		}
	}

	// Every ConfigMap and Secret the pod mounts exists in its namespace.
	cms, secrets := find[*corev1.ConfigMap](r), find[*corev1.Secret](r)
	provided := map[string]bool{}
	if pol, ok := r.values["policy"].(map[string]any); ok {
		if v, _ := pol["existingConfigMap"].(string); v != "" {
			provided[v] = true
		}
	}
	if ca, ok := r.values["interceptionCA"].(map[string]any); ok {
		if v, _ := ca["existingSecret"].(string); v != "" {
			provided[v] = true
		}
	}
	if a, ok := r.values["audit"].(map[string]any); ok {
		if v, _ := a["existingSecret"].(string); v != "" {
			provided[v] = true
		}
	}
	if sc, ok := r.values["sidecar"].(map[string]any); ok {
		if v, _ := sc["secretName"].(string); v != "" {
			provided[v] = true
		}
	}
	check := func(kind, name string, exists bool) {
		if !exists && !provided[name] {
			t.Errorf("the pod mounts %s %s/%s, which the chart does not render", kind, pod.Namespace, name)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil {
			_, ok := cms[pod.Namespace+"/"+v.ConfigMap.Name]
			check("ConfigMap", v.ConfigMap.Name, ok)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					_, ok := secrets[pod.Namespace+"/"+src.Secret.Name]
					check("Secret", src.Secret.Name, ok)
				}
			}
		}
		if v.Secret != nil {
			_, ok := secrets[pod.Namespace+"/"+v.Secret.SecretName]
			check("Secret", v.Secret.SecretName, ok)
			if !sidecarOnly[v.Name] {
				t.Errorf("secret volume %s is not the sidecar's", v.Name)
			}
		}
	}
	sidecarValues, _ := r.values["sidecar"].(map[string]any)
	if sn, _ := sidecarValues["secretName"].(string); sn != "" {
		if v, ok := vols["onbehalf-sidecar-secret"]; !ok || v.Secret == nil || v.Secret.SecretName != sn || !sidecarOnly[v.Name] {
			t.Errorf("sidecar.secretName %s: the sidecar does not mount it as onbehalf-sidecar-secret", sn)
		}
	}
}

// TestWebhookInjectsExampleAgent runs the rendered webhook and admits the
// example agent in each agent namespace.
func TestWebhookInjectsExampleAgent(t *testing.T) {
	cases := map[string]bool{ // value set -> native sidecar expected
		"vault-kubernetes": true,
		"bundle":           true,
		"native-off":       false,
		"old-cluster":      false,
		"webhook-url":      true,
		"ha-redis":         true,
	}
	for _, set := range valueSets {
		wantNative, ok := cases[set.name]
		if !ok {
			continue
		}
		t.Run(set.name, func(t *testing.T) {
			r := render(t, set)
			p := startWebhook(t, r)
			for _, ns := range agentNamespaces(r) {
				pod := examplePod(t, ns)
				resp := p.admit(t, pod)
				if !resp.Allowed {
					t.Fatalf("%s: refused: %+v", ns, resp.Result)
				}
				patched := applyPatch(t, pod, resp)
				checkIsolation(t, r, patched, wantNative)
				if got := patched.Annotations["onbehalf.dev/injected"]; got == "" {
					t.Error("no onbehalf.dev/injected annotation")
				}
				// Idempotence through the real types: admitting the
				// patched pod again changes nothing.
				again := p.admit(t, patched)
				if !again.Allowed || len(again.Patch) != 0 {
					t.Errorf("%s: re-admission: allowed=%v patch=%s; want no patch", ns, again.Allowed, again.Patch)
				}
				// Opt-out: the same pod annotated "false" is left alone.
				out := pod.DeepCopy()
				out.Annotations["onbehalf.dev/inject"] = "false"
				if resp := p.admit(t, out); !resp.Allowed || len(resp.Patch) != 0 {
					t.Errorf("%s: opt-out: allowed=%v patch=%s; want untouched", ns, resp.Allowed, resp.Patch)
				}
				// A privileged agent is refused, not admitted without
				// isolation.
				priv := pod.DeepCopy()
				priv.Spec.Containers[0].SecurityContext.Privileged = ptr(true)
				if resp := p.admit(t, priv); resp.Allowed || resp.Result == nil || resp.Result.Code != 403 {
					t.Errorf("%s: privileged agent: allowed=%v result=%+v; want 403", ns, resp.Allowed, resp.Result)
				}
			}
		})
	}
}

// TestWebhookFixtures holds the main module's webhook fixtures to the real
// API types: every review decodes strictly as an admission.k8s.io/v1
// AdmissionReview carrying a strict corev1.Pod, and every golden patch,
// applied with evanphx/json-patch, yields a strict corev1.Pod with no API
// token in any agent container.
func TestWebhookFixtures(t *testing.T) {
	dir := filepath.Join("..", "..", "webhook", "testdata")
	reviews, err := filepath.Glob(filepath.Join(dir, "reviews", "*.json"))
	if err != nil || len(reviews) == 0 {
		t.Fatalf("no reviews in %s (%v)", dir, err)
	}
	pods := map[string][]byte{}
	for _, f := range reviews {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var review admissionv1.AdmissionReview
		if err := strictJSON(data, &review); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		var pod corev1.Pod
		if err := strictJSON(review.Request.Object.Raw, &pod); err != nil {
			t.Errorf("%s: object: %v", f, err)
			continue
		}
		pods[strings.TrimSuffix(filepath.Base(f), ".json")] = review.Request.Object.Raw
	}
	// Golden file -> the review it answers (webhook/inject_test.go).
	goldens := map[string]string{
		"basic-native": "basic", "basic-fallback": "basic", "multi-native": "multi", "multi-fallback": "multi",
		"existing-proxy": "existing-proxy", "annotations": "annotations", "extra-token": "extra-token",
		"by-default": "no-annotations",
	}
	for golden, review := range goldens {
		t.Run(golden, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, "golden", golden+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var g struct {
				Patch json.RawMessage `json:"patch"`
			}
			if err := json.Unmarshal(data, &g); err != nil {
				t.Fatal(err)
			}
			raw := pods[review]
			if raw == nil {
				t.Fatalf("no review %s", review)
			}
			pt := admissionv1.PatchTypeJSONPatch
			patched := applyPatchRaw(t, raw, &admissionv1.AdmissionResponse{Patch: g.Patch, PatchType: &pt})
			for _, list := range [][]corev1.Container{patched.Spec.InitContainers, patched.Spec.Containers} {
				for _, c := range list {
					for _, m := range c.VolumeMounts {
						if strings.HasPrefix(m.MountPath, serviceAccountPath) {
							t.Errorf("container %s mounts %s", c.Name, m.MountPath)
						}
						if c.Name != "onbehalf" && (m.Name == "onbehalf-vault-token" || m.Name == "onbehalf-secret") {
							t.Errorf("agent %s mounts %s", c.Name, m.Name)
						}
					}
				}
			}
		})
	}
}
