//go:build integration

package chartcheck

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/yaml"
)

// Namespaces of the real-server test: the release, two agent namespaces
// and one the webhook does not watch.
const (
	agentsNS  = "agents"
	agentsNS2 = "agents-b"
	otherNS   = "elsewhere"
	// exampleAgent is the example Deployment's name.
	exampleAgent = "support-agent"
)

// helmTimeout bounds one Helm action (no waiting for pods: there is no
// kubelet).
const helmTimeout = 2 * time.Minute

// TestKubernetes installs the chart into a real kube-apiserver (with etcd,
// in the test's network namespace) with Helm's SDK, runs the webhook the
// release configures as `onbehalf webhook` on 127.0.0.1 — registered by
// URL (webhook.url) — and creates pods through the API: injection,
// refusals, failure policy, RBAC, the install notes' commands, upgrade
// and uninstall. There is no kubelet or controller manager: pods are
// admitted and stored but never run, and a Deployment's pods are created
// by the test from its pod template, as the ReplicaSet controller would.
func TestKubernetes(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()

	// What the example installs first: its namespace. The chart renders
	// into agent namespaces, which must exist.
	example := exampleObjects(t)
	for _, ns := range []*corev1.Namespace{example.ns, {ObjectMeta: metav1.ObjectMeta{Name: agentsNS2}}, {ObjectMeta: metav1.ObjectMeta{Name: otherNS}}} {
		if _, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// There is no controller manager to create the "default" service
	// account of each namespace, which pods use unless they name another.
	for _, ns := range []string{agentsNS, agentsNS2, otherNS} {
		createSA(t, c, ns, "default", nil)
	}
	installServiceMonitorCRD(t, c)

	webhookAddr := freeAddr(t)
	vals := kubeValues(t, "https://"+webhookAddr+"/mutate")
	h := newHelm(t, c)

	// Install.
	rel := h.install(t, vals)
	if rel.Info.Status != release.StatusDeployed {
		t.Fatalf("release status %s; want deployed", rel.Info.Status)
	}
	r := releaseRendered(t, rel, vals)
	t.Run("objects accepted", func(t *testing.T) { checkObjectsExist(t, c, r, true) })
	secretsBefore := generatedSecrets(t, c)

	// The webhook, as the release configures it.
	wh := startReleaseWebhook(t, c, webhookAddr)

	// The example agent: its service account and Deployment.
	createSA(t, c, agentsNS, example.sa.Name, example.sa.AutomountServiceAccountToken)
	dep, err := c.client.AppsV1().Deployments(agentsNS).Create(ctx, example.dep, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("deployment pod injected", func(t *testing.T) {
		pod := createFromTemplate(t, c, dep)
		checkIsolation(t, r, pod, true)
		if got := pod.Annotations["onbehalf.dev/injected"]; got != "native-sidecar" {
			t.Errorf("onbehalf.dev/injected=%q; want native-sidecar", got)
		}
		checkSidecarToken(t, pod)
	})

	t.Run("pod token removed", func(t *testing.T) {
		// A service account that automounts: the ServiceAccount admission
		// plugin mounts the API token, the webhook takes it away again.
		createSA(t, c, agentsNS2, "token-agent", nil)
		pod := agentPod(agentsNS2, "token-agent")
		got, err := c.client.CoreV1().Pods(agentsNS2).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkIsolation(t, r, got, true)
		checkSidecarToken(t, got)
		for _, v := range got.Spec.Volumes {
			if strings.HasPrefix(v.Name, "kube-api-access-") {
				t.Errorf("volume %s (the API token) is still in the pod", v.Name)
			}
		}
		// Without the webhook the plugin would have mounted the token:
		// the same pod outside the agent namespaces keeps it.
		createSA(t, c, otherNS, "token-agent", nil)
		plain, err := c.client.CoreV1().Pods(otherNS).Create(ctx, agentPod(otherNS, "token-agent"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(plain.Spec.Volumes, func(v corev1.Volume) bool { return strings.HasPrefix(v.Name, "kube-api-access-") }) {
			t.Error("outside the agent namespaces the pod has no API token volume: the test proves nothing")
		}
		if len(plain.Spec.InitContainers) != 0 || plain.Annotations["onbehalf.dev/injected"] != "" {
			t.Error("a pod outside the agent namespaces was injected")
		}
	})

	t.Run("unannotated pod untouched", func(t *testing.T) {
		pod := agentPod(agentsNS, "default")
		delete(pod.Annotations, "onbehalf.dev/inject")
		got, err := c.client.CoreV1().Pods(agentsNS).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Spec.InitContainers) != 0 || len(got.Spec.Containers) != 1 || got.Annotations["onbehalf.dev/injected"] != "" {
			t.Errorf("an unannotated pod was changed: %d init containers, %d containers", len(got.Spec.InitContainers), len(got.Spec.Containers))
		}
	})

	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			name string
			edit func(*corev1.Pod)
			want string
		}{
			{"hostNetwork", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "hostNetwork is set"},
			{"unknown annotation", func(p *corev1.Pod) { p.Annotations["onbehalf.dev/audiance"] = "support-agent" },
				`annotation onbehalf.dev/audiance: unknown (did you mean "onbehalf.dev/audience"?)`},
			{"inject typo", func(p *corev1.Pod) { p.Annotations["onbehalf.dev/inject"] = "ture" }, `must be "true" or "false", got "ture"`},
			{"privileged agent", func(p *corev1.Pod) { p.Spec.Containers[0].SecurityContext.Privileged = ptr(true) }, "container agent is privileged"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				pod := agentPod(agentsNS, "default")
				tc.edit(pod)
				_, err := c.client.CoreV1().Pods(agentsNS).Create(ctx, pod, metav1.CreateOptions{})
				var se *apierrors.StatusError
				if !errors.As(err, &se) || se.Status().Code != http.StatusForbidden {
					t.Fatalf("got %v; want the API server's 403", err)
				}
				msg := se.Status().Message
				for _, want := range []string{`admission webhook "inject.onbehalf.dev" denied the request: onbehalf: cannot inject the sidecar into pod agent-`, tc.want} {
					if !strings.Contains(msg, want) {
						t.Errorf("message %q lacks %q", msg, want)
					}
				}
			})
		}
	})

	t.Run("rbac", func(t *testing.T) { checkRBAC(t, c) })

	t.Run("install notes", func(t *testing.T) { checkNotes(t, c, rel, r) })

	// Upgrade: a changed value, the generated Secrets and certificates
	// kept (a new CA would break running agents, a new webhook CA the
	// registration).
	t.Run("upgrade keeps secrets", func(t *testing.T) {
		up := mergeValues(vals, map[string]any{"webhook": map[string]any{"timeoutSeconds": 7}})
		rel2 := h.upgrade(t, up)
		if rel2.Version != 2 || rel2.Info.Status != release.StatusDeployed {
			t.Fatalf("upgrade: version %d status %s; want 2 deployed", rel2.Version, rel2.Info.Status)
		}
		after := generatedSecrets(t, c)
		for name, data := range secretsBefore {
			if !bytes.Equal(after[name], data) {
				t.Errorf("%s changed on upgrade", name)
			}
		}
		mwc, err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "onbehalf-webhook", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := *mwc.Webhooks[0].TimeoutSeconds; got != 7 {
			t.Errorf("timeoutSeconds %d after upgrade; want 7", got)
		}
		// The webhook still serves with the kept certificate.
		pod, err := c.client.CoreV1().Pods(agentsNS).Create(ctx, agentPod(agentsNS, "default"), metav1.CreateOptions{})
		if err != nil || pod.Annotations["onbehalf.dev/injected"] == "" {
			t.Errorf("after upgrade: %v; want an injected pod", err)
		}
	})

	// The webhook down: failurePolicy Fail refuses annotated pods and
	// creates the others; Ignore creates annotated pods without the
	// sidecar.
	t.Run("webhook down", func(t *testing.T) {
		wh.stop()
		_, err := c.client.CoreV1().Pods(agentsNS).Create(ctx, agentPod(agentsNS, "default"), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), `failed calling webhook "inject.onbehalf.dev"`) {
			t.Errorf("failurePolicy Fail: got %v; want the annotated pod refused", err)
		}
		plain := agentPod(agentsNS, "default")
		delete(plain.Annotations, "onbehalf.dev/inject")
		if _, err := c.client.CoreV1().Pods(agentsNS).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
			t.Errorf("failurePolicy Fail: an unannotated pod was refused: %v", err)
		}
		h.upgrade(t, mergeValues(vals, map[string]any{"webhook": map[string]any{"failurePolicy": "Ignore"}}))
		got, err := c.client.CoreV1().Pods(agentsNS).Create(ctx, agentPod(agentsNS, "default"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("failurePolicy Ignore: %v; want the pod created", err)
		}
		if got.Annotations["onbehalf.dev/injected"] != "" || len(got.Spec.InitContainers) != 0 {
			t.Error("failurePolicy Ignore with the webhook down: the pod was injected")
		}
	})

	// Another URL (a DNS name now): the upgrade issues a certificate for
	// it, and the API server calls the webhook there.
	t.Run("upgrade to a new URL", func(t *testing.T) {
		addr := freeAddr(t)
		_, port, _ := strings.Cut(addr, ":")
		h.upgrade(t, mergeValues(vals, map[string]any{"webhook": map[string]any{"url": "https://localhost:" + port + "/mutate"}}))
		after := generatedSecrets(t, c)
		for _, name := range []string{releaseNS + "/onbehalf-webhook-tls", "caBundle"} {
			if bytes.Equal(after[name], secretsBefore[name]) {
				t.Errorf("%s unchanged: the new URL's host is not in the old certificate", name)
			}
		}
		for _, name := range []string{agentsNS + "/onbehalf-ca", agentsNS + "/onbehalf-audit", releaseNS + "/onbehalf-connect-session"} {
			if !bytes.Equal(after[name], secretsBefore[name]) {
				t.Errorf("%s changed with the webhook URL", name)
			}
		}
		startReleaseWebhook(t, c, "localhost:"+port)
		pod, err := c.client.CoreV1().Pods(agentsNS).Create(ctx, agentPod(agentsNS, "default"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Annotations["onbehalf.dev/injected"] != "native-sidecar" {
			t.Error("the pod was not injected through the new URL")
		}
	})

	t.Run("uninstall", func(t *testing.T) {
		h.uninstall(t)
		checkObjectsExist(t, c, r, false)
		// Helm's own release records go too.
		recs, err := c.client.CoreV1().Secrets(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs.Items) != 0 {
			t.Errorf("%d Helm release records left after uninstall", len(recs.Items))
		}
	})
}

// example holds the objects of examples/kubernetes/agent-deployment.yaml.
type example struct {
	ns  *corev1.Namespace
	sa  *corev1.ServiceAccount
	dep *appsv1.Deployment
}

func exampleObjects(t *testing.T) example {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(examplesDir, "agent-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ex example
	for _, doc := range releaseutil.SplitManifests(string(data)) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		var obj any
		switch tm.Kind {
		case "Namespace":
			ex.ns = &corev1.Namespace{}
			obj = ex.ns
		case "ServiceAccount":
			ex.sa = &corev1.ServiceAccount{}
			obj = ex.sa
		case "Deployment":
			ex.dep = &appsv1.Deployment{}
			obj = ex.dep
		default:
			t.Fatalf("example: unexpected kind %s", tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatal(err)
		}
	}
	if ex.ns == nil || ex.sa == nil || ex.dep == nil || ex.ns.Name != agentsNS || ex.dep.Name != exampleAgent {
		t.Fatal("the example lacks its namespace, service account or Deployment")
	}
	return ex
}

// kubeValues are the example values (Vault with Kubernetes auth, policies
// from the chart) with two agent namespaces, the webhook registered by
// URL, the connect server with an ingress, and a ServiceMonitor.
func kubeValues(t *testing.T, webhookURL string) map[string]any {
	t.Helper()
	vals, err := readValues(valueSet{files: []string{examplesDir + "/values.yaml", "testdata/values/kube.yaml"}})
	if err != nil {
		t.Fatal(err)
	}
	return mergeValues(vals, map[string]any{"webhook": map[string]any{"url": webhookURL}})
}

// mergeValues returns over coalesced onto a copy of base.
func mergeValues(base, over map[string]any) map[string]any {
	data, _ := yaml.Marshal(base)
	var cp map[string]any
	_ = yaml.Unmarshal(data, &cp)
	return chartutil.CoalesceTables(over, cp)
}

func createSA(t *testing.T, c *cluster, ns, name string, automount *bool) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, AutomountServiceAccountToken: automount}
	if _, err := c.client.CoreV1().ServiceAccounts(ns).Create(context.Background(), sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// installServiceMonitorCRD installs a minimal ServiceMonitor CRD (the
// fields the chart renders, with a structural schema, so that unknown
// fields are refused) and waits until it is served.
func installServiceMonitorCRD(t *testing.T, c *cluster) {
	t.Helper()
	data, err := os.ReadFile("testdata/crds/servicemonitor.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var u unstructured.Unstructured
	if err := yaml.Unmarshal(data, &u.Object); err != nil {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := c.dynamic.Resource(gvr).Create(context.Background(), &u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := c.dynamic.Resource(gvr).Get(ctx, u.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("ServiceMonitor CRD not established: %v", err)
	}
	c.mapper.Reset()
}

// helm runs Helm actions against the cluster (the Go SDK, as the helm
// command does, with release records in Secrets).
type helm struct {
	cfg *action.Configuration
	mu  sync.Mutex
	log bytes.Buffer
}

// newHelm returns Helm for the cluster; its debug log is shown if the test
// fails.
func newHelm(t *testing.T, c *cluster) *helm {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &c.kubeconfig
	ns := releaseNS
	flags.Namespace = &ns
	h := &helm{cfg: new(action.Configuration)}
	logf := func(format string, v ...any) {
		h.mu.Lock()
		defer h.mu.Unlock()
		fmt.Fprintf(&h.log, format+"\n", v...)
	}
	if err := h.cfg.Init(flags, releaseNS, "secret", logf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Logf("helm log:\n%s", h.log.String())
		}
	})
	return h
}

func (h *helm) install(t *testing.T, vals map[string]any) *release.Release {
	t.Helper()
	chrt, err := loadedChart()
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(h.cfg)
	in.ReleaseName, in.Namespace, in.CreateNamespace, in.Timeout = releaseName, releaseNS, true, helmTimeout
	rel, err := in.Run(chrt, vals)
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	return rel
}

func (h *helm) upgrade(t *testing.T, vals map[string]any) *release.Release {
	t.Helper()
	chrt, err := loadedChart()
	if err != nil {
		t.Fatal(err)
	}
	up := action.NewUpgrade(h.cfg)
	up.Namespace, up.Timeout = releaseNS, helmTimeout
	rel, err := up.Run(releaseName, chrt, vals)
	if err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	return rel
}

func (h *helm) uninstall(t *testing.T) {
	t.Helper()
	un := action.NewUninstall(h.cfg)
	un.Timeout = helmTimeout
	if _, err := un.Run(releaseName); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
}

// releaseRendered decodes the release's manifest strictly, as the render
// tests decode theirs.
func releaseRendered(t *testing.T, rel *release.Release, vals map[string]any) *rendered {
	t.Helper()
	r := &rendered{set: valueSet{name: "kube"}, values: vals, notes: rel.Info.Notes}
	docs := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	for _, k := range keys {
		if isEmptyDoc(docs[k]) {
			continue
		}
		obj, kind, err := decodeStrict([]byte(docs[k]))
		if err != nil {
			t.Fatalf("release manifest: %v", err)
		}
		r.objects = append(r.objects, object{source: "release", kind: kind, obj: obj, raw: []byte(docs[k])})
	}
	return r
}

// checkObjectsExist gets every object of the release from the server:
// after install all must exist; after uninstall only those Helm is told to
// keep (helm.sh/resource-policy: keep).
func checkObjectsExist(t *testing.T, c *cluster, r *rendered, installed bool) {
	t.Helper()
	kinds := map[string]bool{}
	for _, o := range r.objects {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(o.raw, &u.Object); err != nil {
			t.Fatal(err)
		}
		gvk := u.GroupVersionKind()
		kinds[gvk.Kind] = true
		mapping, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var ri = c.dynamic.Resource(mapping.Resource)
		var get func() error
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			get = func() error {
				_, err := ri.Namespace(u.GetNamespace()).Get(context.Background(), u.GetName(), metav1.GetOptions{})
				return err
			}
		} else {
			get = func() error { _, err := ri.Get(context.Background(), u.GetName(), metav1.GetOptions{}); return err }
		}
		err = get()
		id := fmt.Sprintf("%s %s/%s", gvk.Kind, u.GetNamespace(), u.GetName())
		keep := u.GetAnnotations()["helm.sh/resource-policy"] == "keep"
		switch {
		case (installed || keep) && err != nil:
			t.Errorf("%s: %v; want it on the server", id, err)
		case !installed && !keep && !apierrors.IsNotFound(err):
			t.Errorf("%s: got %v after uninstall; want it gone", id, err)
		}
	}
	if installed {
		for _, k := range []string{"NetworkPolicy", "PodDisruptionBudget", "ServiceMonitor", "MutatingWebhookConfiguration", "Ingress", "Deployment", "Secret"} {
			if !kinds[k] {
				t.Errorf("the release has no %s: the test value set should render one", k)
			}
		}
	}
}

// generatedSecrets returns the data of every Secret the chart generates.
func generatedSecrets(t *testing.T, c *cluster) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, id := range []struct{ ns, name string }{
		{releaseNS, "onbehalf-webhook-tls"},
		{releaseNS, "onbehalf-connect-session"},
		{agentsNS, "onbehalf-ca"}, {agentsNS2, "onbehalf-ca"},
		{agentsNS, "onbehalf-audit"}, {agentsNS2, "onbehalf-audit"},
	} {
		s, err := c.client.CoreV1().Secrets(id.ns).Get(context.Background(), id.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		keys := make([]string, 0, len(s.Data))
		for k := range s.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b bytes.Buffer
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%x\n", k, s.Data[k])
		}
		out[id.ns+"/"+id.name] = b.Bytes()
	}
	mwc, err := c.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "onbehalf-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out["caBundle"] = mwc.Webhooks[0].ClientConfig.CABundle
	// Both agent namespaces share one CA and one audit key.
	if !bytes.Equal(out[agentsNS+"/onbehalf-ca"], out[agentsNS2+"/onbehalf-ca"]) || !bytes.Equal(out[agentsNS+"/onbehalf-audit"], out[agentsNS2+"/onbehalf-audit"]) {
		t.Error("the agent namespaces got different CAs or audit keys")
	}
	return out
}

// releaseWebhook is `onbehalf webhook` run with the release's ConfigMap
// and TLS Secret, read back from the API server.
type releaseWebhook struct {
	stop func()
}

func startReleaseWebhook(t *testing.T, c *cluster, addr string) *releaseWebhook {
	t.Helper()
	ctx := context.Background()
	cm, err := c.client.CoreV1().ConfigMaps(releaseNS).Get(ctx, "onbehalf-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := c.client.CoreV1().Secrets(releaseNS).Get(ctx, "onbehalf-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	kubeletMount(t, tlsDir, map[string][]byte{"tls.crt": sec.Data["tls.crt"], "tls.key": sec.Data["tls.key"]}, 0o600)
	cfgPath := filepath.Join(dir, "webhook.yaml")
	cfg := strings.ReplaceAll(cm.Data["webhook.yaml"], "/etc/onbehalf/webhook-tls/", tlsDir+"/")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(onbehalfBin(t), "webhook", "--config", cfgPath, "--listen", addr)
	cmd.Env = append(cleanEnv(), "ONBEHALF_ADMIN_LISTEN="+freeAddr(t))
	proc := startProcess(t, dir, "webhook", cmd)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(sec.Data["ca.crt"])
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	// Verified as the API server verifies it: the registered URL's host.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
	}}
	waitHTTP(t, hc, "https://"+addr+"/healthz", 30*time.Second, filepath.Join(dir, "webhook.log"))
	hc.CloseIdleConnections()
	return &releaseWebhook{stop: proc.stop}
}

// agentPod is a minimal agent pod asking for injection.
func agentPod(ns, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "agent-", Namespace: ns,
			Annotations: map[string]string{"onbehalf.dev/inject": "true"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			SecurityContext:    &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(10001))},
			Containers: []corev1.Container{{
				Name: "agent", Image: "registry.example.com/agent:1",
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false)},
			}},
		},
	}
}

// createFromTemplate creates the pod the ReplicaSet controller would
// create from dep's template, and returns it as the API server stored it.
func createFromTemplate(t *testing.T, c *cluster, dep *appsv1.Deployment) *corev1.Pod {
	t.Helper()
	tmpl := dep.Spec.Template.DeepCopy()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: dep.Name + "-7d9f8c6b5-", Namespace: dep.Namespace,
			Labels: tmpl.Labels, Annotations: tmpl.Annotations,
		},
		Spec: tmpl.Spec,
	}
	got, err := c.client.CoreV1().Pods(dep.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create a pod from %s's template: %v", dep.Name, err)
	}
	return got
}

// checkSidecarToken: the sidecar alone mounts a projected token for Vault's
// audience.
func checkSidecarToken(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	var vol *corev1.Volume
	for i, v := range pod.Spec.Volumes {
		if v.Name == "onbehalf-vault-token" {
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Projected == nil || len(vol.Projected.Sources) != 1 || vol.Projected.Sources[0].ServiceAccountToken == nil ||
		vol.Projected.Sources[0].ServiceAccountToken.Audience != "vault" {
		t.Fatalf("no projected Vault token volume: %+v", vol)
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, ctr := range list {
			mounts := slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == vol.Name })
			if mounts != (ctr.Name == "onbehalf") {
				t.Errorf("container %s mounts the Vault token: %v", ctr.Name, mounts)
			}
		}
	}
}

// checkRBAC asks the API server (SubjectAccessReview) what the chart's
// service accounts and the example agent's may do: the webhook and the
// connect server talk to no Kubernetes API, and the agent's account is
// only the identity Vault checks. None may read Secrets, write pods or
// change the webhook registration.
func checkRBAC(t *testing.T, c *cluster) {
	ctx := context.Background()
	accounts := []struct{ ns, name string }{
		{releaseNS, "onbehalf-webhook"},
		{releaseNS, "onbehalf-connect"},
		{agentsNS, "onbehalf-sidecar"},
	}
	denied := []authorizationv1.ResourceAttributes{
		{Namespace: agentsNS, Verb: "get", Resource: "secrets", Name: "onbehalf-ca"},
		{Namespace: agentsNS, Verb: "list", Resource: "secrets"},
		{Namespace: releaseNS, Verb: "get", Resource: "secrets", Name: "onbehalf-webhook-tls"},
		{Namespace: releaseNS, Verb: "list", Resource: "secrets"},
		{Namespace: agentsNS, Verb: "create", Resource: "pods"},
		{Namespace: agentsNS, Verb: "patch", Resource: "pods"},
		{Namespace: agentsNS, Verb: "delete", Resource: "pods"},
		{Namespace: agentsNS, Verb: "create", Resource: "pods", Subresource: "exec"},
		{Namespace: agentsNS, Verb: "update", Resource: "configmaps", Name: "onbehalf-sidecar"},
		{Namespace: agentsNS, Verb: "create", Resource: "serviceaccounts", Subresource: "token", Name: "onbehalf-sidecar"},
		{Namespace: agentsNS, Verb: "update", Group: "apps", Resource: "deployments"},
		{Verb: "update", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "onbehalf-webhook"},
		{Verb: "delete", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "onbehalf-webhook"},
	}
	review := func(user string, groups []string, ra *authorizationv1.ResourceAttributes, nra *authorizationv1.NonResourceAttributes) bool {
		t.Helper()
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups, ResourceAttributes: ra, NonResourceAttributes: nra}}
		got, err := c.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got.Status.Allowed
	}
	// Controls: the review distinguishes (an administrator may, and the
	// accounts may read the version, which every client may).
	if !review("chartcheck-admin", []string{"system:masters", "system:authenticated"}, &denied[0], nil) {
		t.Fatal("system:masters may not read a Secret: the reviews below prove nothing")
	}
	for _, a := range accounts {
		user := "system:serviceaccount:" + a.ns + ":" + a.name
		groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + a.ns, "system:authenticated"}
		if !review(user, groups, nil, &authorizationv1.NonResourceAttributes{Path: "/version", Verb: "get"}) {
			t.Errorf("%s may not GET /version: the reviews do not evaluate RBAC as expected", user)
		}
		for _, ra := range denied {
			if review(user, groups, &ra, nil) {
				t.Errorf("%s may %s %s %s/%s", user, ra.Verb, ra.Resource+"/"+ra.Subresource, ra.Namespace, ra.Name)
			}
		}
	}
	// The token the sidecar gets (audience vault) is useless against the
	// API server.
	tr, err := c.client.CoreV1().ServiceAccounts(agentsNS).CreateToken(ctx, "onbehalf-sidecar", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"vault"}, ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if code := c.bearerStatus(t, "/api", tr.Status.Token); code != http.StatusUnauthorized {
		t.Errorf("the Vault-audience token: GET /api answered %d; want 401", code)
	}
}

// checkNotes runs the install notes' kubectl commands (the pinned kubectl)
// against the cluster: the patch puts the annotation on the pod template,
// the pod created from it is injected, and the listing shows it.
func checkNotes(t *testing.T, c *cluster, rel *release.Release, r *rendered) {
	ctx := context.Background()
	kubectl := toolBin(t, "ONBEHALF_KUBECTL_BIN", "kubectl", "kubectl")
	var cmds []string
	for _, line := range strings.Split(rel.Info.Notes, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "kubectl ") {
			cmds = append(cmds, strings.ReplaceAll(l, "YOUR-AGENT", exampleAgent))
		}
	}
	if len(cmds) != 2 || !strings.Contains(cmds[0], " patch deployment/") || !strings.Contains(cmds[1], " get pods ") {
		t.Fatalf("the notes' commands: %q; want a patch and a listing", cmds)
	}
	// The example's agent before the operator opts it in.
	dep := exampleObjects(t).dep
	dep.Name = exampleAgent
	dep.Namespace = agentsNS2
	delete(dep.Spec.Template.Annotations, "onbehalf.dev/inject")
	cmds[0] = strings.Replace(cmds[0], "-n "+agentsNS+" ", "-n "+agentsNS2+" ", 1)
	cmds[1] = strings.Replace(cmds[1], "-n "+agentsNS+" ", "-n "+agentsNS2+" ", 1)
	createSA(t, c, agentsNS2, "onbehalf-sidecar", ptr(false))
	if _, err := c.client.AppsV1().Deployments(agentsNS2).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	run := func(cmdline string) string {
		t.Helper()
		cmd := exec.Command("bash", "-c", cmdline)
		cmd.Env = append(cleanEnv(), "KUBECONFIG="+c.kubeconfig, "PATH="+filepath.Dir(kubectl)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmdline, err, out)
		}
		return string(out)
	}
	if resolved, err := exec.Command("bash", "-c", "command -v kubectl").Output(); err == nil && !strings.HasPrefix(string(resolved), filepath.Dir(kubectl)) {
		t.Logf("kubectl on PATH is %s; the test puts the pinned one first", bytes.TrimSpace(resolved))
	}
	if out := run(cmds[0]); !strings.Contains(out, "patched") {
		t.Errorf("%s: %s; want the deployment patched", cmds[0], out)
	}
	patched, err := c.client.AppsV1().Deployments(agentsNS2).Get(ctx, exampleAgent, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := patched.Spec.Template.Annotations["onbehalf.dev/inject"]; got != "true" {
		t.Fatalf("after the notes' patch the pod template has onbehalf.dev/inject=%q; want true", got)
	}
	if patched.Annotations["onbehalf.dev/inject"] != "" {
		t.Error("the notes' patch annotated the Deployment object itself")
	}
	pod := createFromTemplate(t, c, patched)
	checkIsolation(t, r, pod, true)
	out := run(cmds[1])
	if want := pod.Name + "\tnative-sidecar"; !strings.Contains(out, want) {
		t.Errorf("%s:\n%s\nwant a line %q", cmds[1], out, want)
	}
}
