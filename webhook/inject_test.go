package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// goldenCase admits one fixture review under one configuration.
type goldenCase struct {
	name   string // golden file name
	config string // testdata/config/<config>.yaml
	review string // testdata/reviews/<review>.json
	want   Outcome
}

var goldenCases = []goldenCase{
	{"basic-native", "native", "basic", OutcomeInjected},
	{"basic-fallback", "fallback", "basic", OutcomeInjected},
	{"multi-native", "native", "multi", OutcomeInjected},
	{"multi-fallback", "fallback", "multi", OutcomeInjected},
	{"existing-proxy", "native", "existing-proxy", OutcomeInjected},
	{"annotations", "native", "annotations", OutcomeInjected},
	{"extra-token", "native", "extra-token", OutcomeInjected},
	{"by-default", "by-default", "no-annotations", OutcomeInjected},
	{"opt-out", "by-default", "opt-out", OutcomeSkipped},
	{"not-annotated", "native", "not-annotated", OutcomeSkipped},
}

// goldenResponse is what a golden file holds: the response with its patch
// decoded, so that a diff reads as operations.
type goldenResponse struct {
	UID      string          `json:"uid"`
	Allowed  bool            `json:"allowed"`
	Status   *Status         `json:"status,omitempty"`
	Warnings []string        `json:"warnings,omitempty"`
	Patch    json.RawMessage `json:"patch,omitempty"`
}

func TestGoldenPatches(t *testing.T) {
	servers := map[string]*webhookServer{}
	for _, tc := range goldenCases {
		if servers[tc.config] == nil {
			servers[tc.config] = startServer(t, tc.config)
		}
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			ws := servers[tc.config]
			body := readReview(t, tc.review)
			resp := ws.post(t, body).Response
			compareGolden(t, tc.name, resp)

			var req Review
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatal(err)
			}
			if resp.UID != req.Request.UID {
				t.Errorf("got uid %q; want the request's %q", resp.UID, req.Request.UID)
			}
			if !resp.Allowed {
				t.Fatalf("got allowed=false (%+v); want true", resp.Status)
			}
			switch tc.want {
			case OutcomeSkipped:
				if resp.Patch != nil || resp.PatchType != "" {
					t.Errorf("got patch %s (type %q); want none for a pod that did not ask", resp.Patch, resp.PatchType)
				}
				return
			case OutcomeInjected:
				if resp.PatchType != PatchTypeJSON {
					t.Errorf("got patchType %q; want %q", resp.PatchType, PatchTypeJSON)
				}
			}
			patched, err := applyPatch(req.Request.Object, resp.Patch)
			if err != nil {
				t.Fatalf("apply patch: %v", err)
			}
			checkInjected(t, ws.srv.inj, req.Request.Object, patched)

			// Idempotence: the patched pod, admitted again (reinvocation),
			// needs nothing more.
			again := ws.post(t, withObject(t, body, patched, "again")).Response
			if !again.Allowed || again.Patch != nil {
				t.Errorf("re-admission: got allowed=%v patch=%s; want allowed and no patch", again.Allowed, again.Patch)
			}
		})
	}
}

// compareGolden compares resp with testdata/golden/name.json, or rewrites
// it with -update.
func compareGolden(t *testing.T, name string, resp *Response) {
	t.Helper()
	g := goldenResponse{UID: resp.UID, Allowed: resp.Allowed, Status: resp.Status, Warnings: resp.Warnings, Patch: resp.Patch}
	got, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "golden", name+".json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("response differs from %s (go test -update rewrites it):\n%s", path, cmp.Diff(string(want), string(got)))
	}
}

// checkInjected asserts the invariants of an injected pod.
func checkInjected(t *testing.T, in *Injector, original, patched []byte) {
	t.Helper()
	var p pod
	if err := json.Unmarshal(patched, &p); err != nil {
		t.Fatalf("patched pod does not decode: %v", err)
	}
	cfg := in.cfg
	sidecar, agents := in.split(&p)
	if sidecar == nil {
		t.Fatalf("no %s container in the patched pod", cfg.Sidecar.Name)
	}
	native := sidecar.list == "initContainers"
	if want := p.Metadata.Annotations[AnnotationInjected] == InjectedNative; native != want {
		t.Errorf("sidecar in %s; annotation %s=%q", sidecar.list, AnnotationInjected, p.Metadata.Annotations[AnnotationInjected])
	}
	if native && sidecar.index != 0 {
		t.Errorf("native sidecar at initContainers[%d]; want 0, before the pod's own init containers", sidecar.index)
	}
	if !native && (sidecar.list != "containers" || sidecar.index != 0) {
		t.Errorf("sidecar at %s[%d]; want containers[0]", sidecar.list, sidecar.index)
	}
	if a := p.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("automountServiceAccountToken: got %v; want false", a)
	}
	for _, v := range p.Spec.Volumes {
		if v.apiToken() {
			t.Errorf("volume %s still projects the API token", v.Name)
		}
	}
	proxyURL := "http://" + in.proxyAddr
	for _, r := range agents {
		for _, mnt := range r.c.VolumeMounts {
			if underServiceAccountPath(mnt.MountPath) {
				t.Errorf("container %s mounts %s at the service-account path", r.c.Name, mnt.Name)
			}
			if slices.Contains(sidecarOnlyVolumes, mnt.Name) {
				t.Errorf("agent container %s mounts the sidecar's %s", r.c.Name, mnt.Name)
			}
		}
		if r.list == "initContainers" && !native {
			continue
		}
		env := map[string]string{}
		for _, e := range r.c.Env {
			env[e.Name] = e.Value // the last one wins, as in the kubelet
			if len(e.ValueFrom) > 0 && (proxyVar(e.Name) || slices.Contains(cfg.Agent.CAEnv, e.Name)) {
				t.Errorf("container %s: %s still comes from valueFrom", r.c.Name, e.Name)
			}
		}
		for _, name := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
			if env[name] != proxyURL {
				t.Errorf("container %s: %s=%q; want %q", r.c.Name, name, env[name], proxyURL)
			}
		}
		for _, name := range []string{"ALL_PROXY", "all_proxy"} {
			if v, ok := env[name]; ok && v != proxyURL {
				t.Errorf("container %s: %s=%q; want %q", r.c.Name, name, v, proxyURL)
			}
		}
		if !strings.HasPrefix(env["NO_PROXY"], "localhost,127.0.0.1,::1") || env["NO_PROXY"] != env["no_proxy"] {
			t.Errorf("container %s: NO_PROXY=%q no_proxy=%q; want loopback first, both equal", r.c.Name, env["NO_PROXY"], env["no_proxy"])
		}
		bundle := cfg.Agent.TrustMountPath + "/" + TrustKey
		for _, name := range cfg.Agent.CAEnv {
			if env[name] != bundle {
				t.Errorf("container %s: %s=%q; want %q", r.c.Name, name, env[name], bundle)
			}
		}
		if !slices.ContainsFunc(r.c.VolumeMounts, func(m volumeMount) bool {
			return m.Name == volTrust && m.MountPath == cfg.Agent.TrustMountPath
		}) {
			t.Errorf("container %s does not mount the CA bundle", r.c.Name)
		}
	}

	// The sidecar's own hardening, read from the generic document.
	var doc map[string]any
	if err := json.Unmarshal(patched, &doc); err != nil {
		t.Fatal(err)
	}
	sc := s(m(doc, "spec"), sidecar.list)[sidecar.index].(map[string]any)
	sec := sc["securityContext"].(map[string]any)
	for key, want := range map[string]any{
		"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
		"privileged": false, "runAsUser": float64(cfg.Sidecar.RunAsUser),
	} {
		if sec[key] != want {
			t.Errorf("sidecar securityContext.%s: got %v; want %v", key, sec[key], want)
		}
	}
	if drop := m(sec, "capabilities")["drop"]; !cmp.Equal(drop, []any{"ALL"}) {
		t.Errorf("sidecar capabilities.drop: got %v; want [ALL]", drop)
	}
	if native && sc["restartPolicy"] != "Always" {
		t.Errorf("native sidecar restartPolicy: got %v; want Always", sc["restartPolicy"])
	}
	checkSidecarSecret(t, cfg.Sidecar.SidecarSecret, m(doc, "spec"), sc)

	// Fields the webhook does not know survive untouched.
	var orig map[string]any
	if err := json.Unmarshal(original, &orig); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"tolerations", "securityContext", "enableServiceLinks", "preemptionPolicy", "dnsPolicy"} {
		if diff := cmp.Diff(m(orig, "spec")[key], m(doc, "spec")[key]); diff != "" {
			t.Errorf("spec.%s changed:\n%s", key, diff)
		}
	}
	if diff := cmp.Diff(m(orig, "metadata")["ownerReferences"], m(doc, "metadata")["ownerReferences"]); diff != "" {
		t.Errorf("metadata.ownerReferences changed:\n%s", diff)
	}
}

func TestReplacedEnvIsRecorded(t *testing.T) {
	ws := startServer(t, "native")
	body := readReview(t, "existing-proxy")
	resp := ws.post(t, body).Response
	patched, err := applyPatch(reviewObject(t, body), resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	var p pod
	if err := json.Unmarshal(patched, &p); err != nil {
		t.Fatal(err)
	}
	// http_proxy already pointed at the sidecar: it is kept, not counted.
	want := "agent/ALL_PROXY,agent/HTTPS_PROXY,agent/HTTP_PROXY,agent/NO_PROXY,agent/SSL_CERT_FILE,agent/https_proxy"
	if got := p.Metadata.Annotations[AnnotationReplacedEnv]; got != want {
		t.Errorf("%s: got %q; want %q", AnnotationReplacedEnv, got, want)
	}
	if len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "agent/HTTPS_PROXY") {
		t.Errorf("warnings: got %q; want one naming agent/HTTPS_PROXY", resp.Warnings)
	}
	// MODEL, a variable the webhook does not manage, is untouched.
	if !slices.ContainsFunc(p.Spec.Containers[0].Env, func(e envVar) bool { return e.Name == "MODEL" && e.Value == "large" }) {
		t.Errorf("MODEL lost from %+v", p.Spec.Containers[0].Env)
	}
}

func TestExplicitTokenWarns(t *testing.T) {
	ws := startServer(t, "native")
	resp := ws.post(t, readReview(t, "extra-token")).Response
	if !resp.Allowed {
		t.Fatalf("got refused: %+v", resp.Status)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `aws-iam-token`) || !strings.Contains(resp.Warnings[0], `"sts.amazonaws.com"`) {
		t.Errorf("warnings: got %q; want one about aws-iam-token for sts.amazonaws.com", resp.Warnings)
	}
}

// TestConvergence covers pods that are partly injected: a second webhook
// added a container after ours, or the sidecar was lost from a copied
// spec. Only what is missing is patched.
func TestConvergence(t *testing.T) {
	ws := startServer(t, "native")
	body := readReview(t, "basic")
	first := ws.post(t, body).Response
	injected, err := applyPatch(reviewObject(t, body), first.Patch)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(pod map[string]any)
		wantOps []string // op + path of each operation
	}{
		{
			name: "container added later",
			edit: func(pod map[string]any) {
				spec := m(pod, "spec")
				spec["containers"] = append(s(spec, "containers"), map[string]any{
					"name": "log-shipper", "image": "registry.example.com/fluent-bit:3",
					"env":          []any{map[string]any{"name": "HTTPS_PROXY", "value": "http://elsewhere:3128"}},
					"volumeMounts": []any{map[string]any{"name": "kube-api-access-zz", "mountPath": serviceAccountPath}},
				})
				spec["volumes"] = append(s(spec, "volumes"), map[string]any{"name": "kube-api-access-zz", "projected": map[string]any{
					"sources": []any{map[string]any{"serviceAccountToken": map[string]any{"path": "token"}}}}})
			},
			wantOps: []string{
				"remove /spec/containers/1/volumeMounts/0",
				"replace /spec/containers/1/env/0",
				"add /spec/containers/1/env/-", "add /spec/containers/1/env/-", "add /spec/containers/1/env/-",
				"add /spec/containers/1/env/-", "add /spec/containers/1/env/-", "add /spec/containers/1/env/-",
				"add /spec/containers/1/env/-", "add /spec/containers/1/env/-", "add /spec/containers/1/env/-",
				"add /spec/containers/1/env/-", "add /spec/containers/1/env/-",
				"add /spec/containers/1/volumeMounts/-",
				"remove /spec/volumes/6",
				"add /metadata/annotations/onbehalf.dev~1replaced-env",
			},
		},
		{
			name: "sidecar lost",
			edit: func(pod map[string]any) {
				delete(m(pod, "spec"), "initContainers")
			},
			wantOps: []string{"add /spec/initContainers"},
		},
		{
			name: "automount turned back on",
			edit: func(pod map[string]any) {
				m(pod, "spec")["automountServiceAccountToken"] = true
			},
			wantOps: []string{"add /spec/automountServiceAccountToken"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var obj map[string]any
			if err := json.Unmarshal(injected, &obj); err != nil {
				t.Fatal(err)
			}
			tc.edit(obj)
			data, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			resp := ws.post(t, withObject(t, body, data, "converge")).Response
			if !resp.Allowed {
				t.Fatalf("got refused: %+v", resp.Status)
			}
			var ops []PatchOp
			if err := json.Unmarshal(resp.Patch, &ops); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, op := range ops {
				got = append(got, op.Op+" "+op.Path)
			}
			if diff := cmp.Diff(tc.wantOps, got); diff != "" {
				t.Errorf("operations (-want +got):\n%s", diff)
			}
			patched, err := applyPatch(data, resp.Patch)
			if err != nil {
				t.Fatal(err)
			}
			checkInjected(t, ws.srv.inj, data, patched)
			if again := ws.post(t, withObject(t, body, patched, "again")).Response; again.Patch != nil {
				t.Errorf("third admission: got patch %s; want none", again.Patch)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	ws := startServer(t, "native")
	basic := readReview(t, "basic")
	agent := func(pod map[string]any) map[string]any { return s(m(pod, "spec"), "containers")[0].(map[string]any) }
	setAnn := func(k, v string) func(map[string]any) {
		return func(pod map[string]any) { m(pod, "metadata")["annotations"].(map[string]any)[k] = v }
	}
	tests := []struct {
		name string
		edit func(pod map[string]any)
		want []string // substrings of the message
	}{
		{"host network", func(p map[string]any) { m(p, "spec")["hostNetwork"] = true }, []string{"hostNetwork"}},
		{"host PID", func(p map[string]any) { m(p, "spec")["hostPID"] = true }, []string{"hostPID"}},
		{"shared process namespace", func(p map[string]any) { m(p, "spec")["shareProcessNamespace"] = true }, []string{"shareProcessNamespace"}},
		{"privileged agent", func(p map[string]any) {
			agent(p)["securityContext"] = map[string]any{"privileged": true}
		}, []string{"container agent is privileged"}},
		{"agent as the sidecar's user (pod level)", func(p map[string]any) {
			m(m(p, "spec"), "securityContext")["runAsUser"] = 65532
		}, []string{"container agent runs as user 65532"}},
		{"agent as the sidecar's user (container level)", func(p map[string]any) {
			agent(p)["securityContext"] = map[string]any{"runAsUser": 65532}
		}, []string{"container agent runs as user 65532"}},
		{"agent on the proxy port", func(p map[string]any) {
			agent(p)["ports"] = []any{map[string]any{"containerPort": 15080}}
		}, []string{"uses port 15080"}},
		{"reserved container name", func(p map[string]any) { agent(p)["name"] = "onbehalf" }, []string{`container name "onbehalf" is reserved`}},
		{"reserved volume name", func(p map[string]any) {
			spec := m(p, "spec")
			spec["volumes"] = append(s(spec, "volumes"), map[string]any{"name": "onbehalf-secret", "emptyDir": map[string]any{}})
		}, []string{`volume name "onbehalf-secret" is reserved`}},
		{"agent mounts the sidecar's secret", func(p map[string]any) {
			m(p, "metadata")["annotations"].(map[string]any)[AnnotationInjected] = InjectedNative
			agent(p)["volumeMounts"] = append(agent(p)["volumeMounts"].([]any), map[string]any{"name": "onbehalf-secret", "mountPath": "/steal"})
		}, []string{"container agent mounts onbehalf-secret, which only the sidecar may mount"}},
		{"trust path taken", func(p map[string]any) {
			agent(p)["volumeMounts"] = append(agent(p)["volumeMounts"].([]any), map[string]any{"name": "certs", "mountPath": "/etc/onbehalf/trust"})
		}, []string{"already mounts something at /etc/onbehalf/trust"}},
		{"inject typo", setAnn(AnnotationInject, "ture"), []string{`onbehalf.dev/inject must be "true" or "false", got "ture"`}},
		{"bad config name", setAnn(AnnotationConfig, "../etc"), []string{"annotation onbehalf.dev/config: must be a ConfigMap name"}},
		{"bad policy name", setAnn(AnnotationPolicy, "Policies"), []string{"annotation onbehalf.dev/policy"}},
		{"bad audience", setAnn(AnnotationAudience, "two words"), []string{"annotation onbehalf.dev/audience"}},
		{"resources not JSON", setAnn(AnnotationResources, "cpu=1"), []string{"annotation onbehalf.dev/resources: must be JSON"}},
		{"resources unknown field", setAnn(AnnotationResources, `{"request":{"cpu":"1"}}`), []string{"annotation onbehalf.dev/resources: must be JSON"}},
		{"resources bad quantity", setAnn(AnnotationResources, `{"limits":{"memory":"lots"},"requests":{"gpu":"1"}}`),
			[]string{`limits.memory: must be a Kubernetes quantity`, `requests.gpu: unknown resource`}},
		{"misspelt annotation", setAnn("onbehalf.dev/audiance", "support-agent"),
			[]string{`annotation onbehalf.dev/audiance: unknown (did you mean "onbehalf.dev/audience"?); known: onbehalf.dev/inject, `}},
		{"unknown annotation", setAnn("onbehalf.dev/token", "x"), []string{"annotation onbehalf.dev/token: unknown; known: "}},
		{"several problems at once", func(p map[string]any) {
			m(p, "spec")["hostPID"] = true
			agent(p)["securityContext"] = map[string]any{"privileged": true}
		}, []string{"hostPID", "privileged"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := ws.post(t, editPod(t, basic, tc.edit)).Response
			if resp.Allowed || resp.Patch != nil {
				t.Fatalf("got allowed=%v patch=%s; want a refusal", resp.Allowed, resp.Patch)
			}
			if resp.Status == nil || resp.Status.Code != 403 || resp.Status.Reason != "Forbidden" {
				t.Fatalf("got status %+v; want 403 Forbidden", resp.Status)
			}
			for _, w := range tc.want {
				if !strings.Contains(resp.Status.Message, w) {
					t.Errorf("message %q lacks %q", resp.Status.Message, w)
				}
			}
			if !strings.HasPrefix(resp.Status.Message, "onbehalf: cannot inject the sidecar into pod agent-7-6d5f9c7b8-*: ") {
				t.Errorf("message %q does not name the pod", resp.Status.Message)
			}
		})
	}
}

func TestAdmitIgnoresOtherRequests(t *testing.T) {
	in, err := NewInjector(loadTestConfig(t, "native", newTestPKI(t)))
	if err != nil {
		t.Fatal(err)
	}
	obj := reviewObject(t, readReview(t, "basic"))
	pods := GroupVersionKind{Version: "v1", Kind: "Pod"}
	tests := []struct {
		name string
		req  Request
		want Outcome
	}{
		{"update", Request{Kind: pods, Operation: "UPDATE", Object: obj}, OutcomeIgnored},
		{"subresource", Request{Kind: pods, Operation: "CREATE", SubResource: "ephemeralcontainers", Object: obj}, OutcomeIgnored},
		{"deployment", Request{Kind: GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, Operation: "CREATE", Object: obj}, OutcomeIgnored},
		{"not JSON", Request{Kind: pods, Operation: "CREATE", Object: json.RawMessage(`"pod"`)}, OutcomeInvalid},
		{"no containers", Request{Kind: pods, Operation: "CREATE", Object: json.RawMessage(`{"metadata":{},"spec":{}}`)}, OutcomeInvalid},
		{"pod", Request{Kind: pods, Operation: "CREATE", Object: obj}, OutcomeInjected},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := in.Admit(&tc.req); got.Outcome != tc.want {
				t.Errorf("got %s (%v); want %s", got.Outcome, got.Err, tc.want)
			}
		})
	}
}

// checkSidecarSecret asserts that the operator's sidecar Secret, when
// configured, is a secret volume mounted read-only at
// SidecarSecretMountPath in the sidecar (checkInjected already asserts that
// no agent mounts it), and that nothing is mounted there otherwise.
func checkSidecarSecret(t *testing.T, name string, spec, sidecar map[string]any) {
	t.Helper()
	var mounted bool
	for _, v := range sidecar["volumeMounts"].([]any) {
		mnt := v.(map[string]any)
		if mnt["name"] != volSidecarSecret {
			continue
		}
		mounted = true
		if mnt["mountPath"] != SidecarSecretMountPath || mnt["readOnly"] != true {
			t.Errorf("sidecar mounts %s at %v (readOnly %v); want %s read-only", volSidecarSecret, mnt["mountPath"], mnt["readOnly"], SidecarSecretMountPath)
		}
	}
	var secretName any
	for _, v := range s(spec, "volumes") {
		if vol := v.(map[string]any); vol["name"] == volSidecarSecret {
			secretName = m(vol, "secret")["secretName"]
		}
	}
	switch {
	case name == "" && (mounted || secretName != nil):
		t.Errorf("no sidecar_secret configured, but the pod has %s (mounted %v, secret %v)", volSidecarSecret, mounted, secretName)
	case name != "" && (!mounted || secretName != name):
		t.Errorf("sidecar_secret %s: sidecar mounts it %v, volume's secretName %v; want mounted from %s", name, mounted, secretName, name)
	}
}
