package chartcheck

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../onbehalf"
	examplesDir = "../../examples/kubernetes"
	releaseName = "onbehalf"
	releaseNS   = "onbehalf"
)

// valueSet is one way to install the chart. The rendered sidecar
// configuration of each must pass `onbehalf serve --check`.
type valueSet struct {
	name string
	// files are values files, later ones over earlier ones.
	files []string
	// kube is the cluster version the chart is rendered for.
	kube string
	// apis are API versions the cluster serves besides the built-in ones.
	apis []string
}

var valueSets = []valueSet{
	{name: "minimal", files: []string{"testdata/values/minimal.yaml"}, kube: "v1.31.0"},
	{name: "webhook-url", files: []string{"testdata/values/minimal.yaml", "testdata/values/webhook-url.yaml"}, kube: "v1.34.0"},
	{name: "cert-manager", files: []string{"testdata/values/cert-manager.yaml"}, kube: "v1.30.2",
		apis: []string{"cert-manager.io/v1", "monitoring.coreos.com/v1"}},
	{name: "cert-manager-issuer", files: []string{"testdata/values/cert-manager.yaml", "testdata/values/cert-manager-issuer.yaml"}, kube: "v1.33.1",
		apis: []string{"monitoring.coreos.com/v1"}},
	{name: "vault-kubernetes", files: []string{examplesDir + "/values.yaml"}, kube: "v1.31.0"},
	{name: "bundle", files: []string{examplesDir + "/values.yaml", examplesDir + "/values-bundle.yaml"}, kube: "v1.32.0"},
	{name: "native-off", files: []string{examplesDir + "/values.yaml", "testdata/values/native-off.yaml"}, kube: "v1.28.4"},
	{name: "old-cluster", files: []string{examplesDir + "/values.yaml"}, kube: "v1.27.3"},
	{name: "connect-ingress", files: []string{"testdata/values/connect-ingress.yaml"}, kube: "v1.31.0"},
	{name: "idps", files: []string{"testdata/values/minimal.yaml", "testdata/values/idps.yaml"}, kube: "v1.31.0"},
	{name: "ha-redis", files: []string{"testdata/values/minimal.yaml", "testdata/values/ha-redis.yaml"}, kube: "v1.33.1"},
}

// rendered is one value set's output.
type rendered struct {
	set       valueSet
	values    map[string]any
	manifests map[string]string // template path -> text
	objects   []object
	notes     string
}

// object is one decoded manifest.
type object struct {
	source string
	kind   string
	obj    runtime.Object
	raw    []byte
}

var (
	renderOnce  sync.Map // name -> *renderResult
	loadedChart = sync.OnceValues(func() (*chart.Chart, error) { return loader.Load(chartDir) })
)

type renderResult struct {
	once sync.Once
	r    *rendered
	err  error
}

// render renders (once per test binary) the chart for set.
func render(t *testing.T, set valueSet) *rendered {
	t.Helper()
	v, _ := renderOnce.LoadOrStore(set.name, &renderResult{})
	res := v.(*renderResult)
	res.once.Do(func() { res.r, res.err = doRender(set) })
	if res.err != nil {
		t.Fatalf("render %s: %v", set.name, res.err)
	}
	return res.r
}

func readValues(set valueSet) (map[string]any, error) {
	vals := map[string]any{}
	for _, f := range set.files {
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			return nil, err
		}
		vals = chartutil.CoalesceTables(v.AsMap(), vals)
	}
	return vals, nil
}

func capabilities(set valueSet) (*chartutil.Capabilities, error) {
	kv, err := chartutil.ParseKubeVersion(set.kube)
	if err != nil {
		return nil, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	caps.APIVersions = append(caps.APIVersions, set.apis...)
	return caps, nil
}

func doRender(set valueSet) (*rendered, error) {
	chrt, err := loadedChart()
	if err != nil {
		return nil, err
	}
	vals, err := readValues(set)
	if err != nil {
		return nil, err
	}
	caps, err := capabilities(set)
	if err != nil {
		return nil, err
	}
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNS, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValuesWithSchemaValidation(chrt, vals, opts, caps, false)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	out, err := engine.Render(chrt, rv)
	if err != nil {
		return nil, err
	}
	r := &rendered{set: set, values: vals, manifests: map[string]string{}}
	for path, text := range out {
		if strings.HasSuffix(path, "NOTES.txt") {
			r.notes = text
			continue
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		r.manifests[path] = text
	}
	paths := make([]string, 0, len(r.manifests))
	for p := range r.manifests {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		docs := releaseutil.SplitManifests(r.manifests[p])
		keys := make([]string, 0, len(docs))
		for k := range docs {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		for _, k := range keys {
			doc := docs[k]
			if isEmptyDoc(doc) {
				continue
			}
			obj, kind, err := decodeStrict([]byte(doc))
			if err != nil {
				return nil, fmt.Errorf("%s: %w\n%s", p, err, doc)
			}
			r.objects = append(r.objects, object{source: p, kind: kind, obj: obj, raw: []byte(doc)})
		}
	}
	return r, nil
}

// dump writes the rendered manifests under $CHARTCHECK_DUMP/<set>/, for a
// person to read; without the variable it does nothing.
func dump(t *testing.T, r *rendered) {
	dir := os.Getenv("CHARTCHECK_DUMP")
	if dir == "" {
		return
	}
	var b strings.Builder
	for _, p := range names(r.manifests) {
		fmt.Fprintf(&b, "# Source: %s\n%s\n---\n", p, r.manifests[p])
	}
	b.WriteString("# NOTES.txt\n" + r.notes)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, r.set.name+".yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func isEmptyDoc(doc string) bool {
	for line := range strings.SplitSeq(doc, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// kinds maps apiVersion/kind to the Go type a manifest must decode into.
// A kind missing here is a failure: the chart renders nothing unchecked.
var kinds = map[string]func() runtime.Object{
	"v1/ConfigMap":      func() runtime.Object { return &corev1.ConfigMap{} },
	"v1/Secret":         func() runtime.Object { return &corev1.Secret{} },
	"v1/Service":        func() runtime.Object { return &corev1.Service{} },
	"v1/ServiceAccount": func() runtime.Object { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment": func() runtime.Object {
		return &appsv1.Deployment{}
	},
	"policy/v1/PodDisruptionBudget":      func() runtime.Object { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy": func() runtime.Object { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":       func() runtime.Object { return &networkingv1.Ingress{} },
	"cert-manager.io/v1/Issuer":          func() runtime.Object { return &cmv1.Issuer{} },
	"cert-manager.io/v1/Certificate":     func() runtime.Object { return &cmv1.Certificate{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() runtime.Object {
		return &monv1.ServiceMonitor{}
	},
	"admissionregistration.k8s.io/v1/MutatingWebhookConfiguration": func() runtime.Object {
		return &admissionregv1.MutatingWebhookConfiguration{}
	},
}

// decodeStrict decodes one YAML manifest into its API type, refusing
// unknown and duplicate fields.
func decodeStrict(doc []byte) (runtime.Object, string, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, "", fmt.Errorf("not YAML: %w", err)
	}
	key := tm.APIVersion + "/" + tm.Kind
	newObj, ok := kinds[key]
	if !ok {
		return nil, "", fmt.Errorf("unknown kind %s", key)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, "", fmt.Errorf("%s: %w", key, err)
	}
	return obj, tm.Kind, nil
}

func TestLint(t *testing.T) {
	for _, set := range valueSets {
		t.Run(set.name, func(t *testing.T) {
			vals, err := readValues(set)
			if err != nil {
				t.Fatal(err)
			}
			kv, err := chartutil.ParseKubeVersion(set.kube)
			if err != nil {
				t.Fatal(err)
			}
			res := lint.AllWithKubeVersion(chartDir, vals, releaseNS, kv)
			for _, m := range res.Messages {
				// INFO is advice (an icon); warnings and errors fail, as
				// with helm lint --strict.
				if m.Severity > support.InfoSev {
					t.Errorf("lint: %s", m)
				}
			}
		})
	}
}

// TestDefaultsRefused: the default values lack what every install must
// give, and the schema names each missing value before anything renders.
func TestDefaultsRefused(t *testing.T) {
	chrt, err := loadedChart()
	if err != nil {
		t.Fatal(err)
	}
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNS, Revision: 1, IsInstall: true}
	_, err = chartutil.ToRenderValuesWithSchemaValidation(chrt, map[string]any{}, opts, chartutil.DefaultCapabilities, false)
	if err == nil {
		t.Fatal("the default values passed the schema; want them refused")
	}
	for _, want := range []string{
		"at '/identity/issuers': minItems: got 0, want 1",
		"at '/identity/keys': minItems: got 0, want 1",
		"at '/identity/jwksUrl': minLength: got 0, want 1",
		"at '/routes': minItems: got 0, want 1",
		"at '/providers': minProperties: got 0, want 1",
		"at '/store/vault/address': minLength: got 0, want 1",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("schema error lacks %q:\n%v", want, err)
		}
	}
	// Each value the schema names, once given, is no longer named.
	vals, err := chartutil.ReadValuesFile("testdata/values/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chartutil.ToRenderValuesWithSchemaValidation(chrt, vals.AsMap(), opts, chartutil.DefaultCapabilities, false); err != nil {
		t.Errorf("the minimal values were refused: %v", err)
	}
	// The lint a user runs first says the same.
	res := lint.AllWithKubeVersion(chartDir, map[string]any{}, releaseNS, nil)
	var found bool
	for _, m := range res.Messages {
		if m.Severity == support.ErrorSev && strings.Contains(m.Err.Error(), "/identity/issuers") {
			found = true
		}
	}
	if !found {
		t.Errorf("helm lint with the default values: got %v; want the schema error", res.Messages)
	}
}

func TestRenderDecodesStrictly(t *testing.T) {
	for _, set := range valueSets {
		t.Run(set.name, func(t *testing.T) {
			r := render(t, set)
			dump(t, r)
			if len(r.objects) == 0 {
				t.Fatal("nothing rendered")
			}
			if r.notes == "" {
				t.Error("NOTES.txt rendered empty")
			}
			seen := map[string]string{}
			for _, o := range r.objects {
				acc, err := metaOf(o.obj)
				if err != nil {
					t.Fatal(err)
				}
				if acc.GetName() == "" {
					t.Errorf("%s %s: no name", o.source, o.kind)
				}
				if o.kind != "MutatingWebhookConfiguration" && acc.GetNamespace() == "" {
					t.Errorf("%s %s/%s: no namespace", o.source, o.kind, acc.GetName())
				}
				id := o.kind + " " + acc.GetNamespace() + "/" + acc.GetName()
				if prev, dup := seen[id]; dup {
					t.Errorf("%s rendered twice (%s and %s)", id, prev, o.source)
				}
				seen[id] = o.source
				if acc.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
					t.Errorf("%s lacks the standard labels", id)
				}
			}
		})
	}
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	type metaObject interface{ GetObjectMeta() metav1.Object }
	if m, ok := obj.(metaObject); ok {
		return m.GetObjectMeta(), nil
	}
	if m, ok := obj.(metav1.Object); ok {
		return m, nil
	}
	return nil, fmt.Errorf("%T has no object metadata", obj)
}

// find returns the decoded objects of type T, by namespace/name.
func find[T runtime.Object](r *rendered) map[string]T {
	out := map[string]T{}
	for _, o := range r.objects {
		if v, ok := o.obj.(T); ok {
			acc, _ := metaOf(o.obj)
			out[acc.GetNamespace()+"/"+acc.GetName()] = v
		}
	}
	return out
}

func names[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestChartDefaultPolicyIsTheExample keeps the chart's copy of the default
// policy equal to examples/policies/default.
func TestChartDefaultPolicyIsTheExample(t *testing.T) {
	chrt, err := loadedChart()
	if err != nil {
		t.Fatal(err)
	}
	var inChart []byte
	for _, f := range chrt.Files {
		if f.Name == "files/default-policy.rego" {
			inChart = f.Data
		}
	}
	example, err := readFile(filepath.Join("..", "..", "examples", "policies", "default", "policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inChart, example) {
		t.Error("charts/onbehalf/files/default-policy.rego differs from examples/policies/default/policy.rego: copy it over")
	}
}
