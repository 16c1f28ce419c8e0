package webhook

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzAdmit feeds arbitrary pod objects to the injector. It must never
// panic, and whenever it injects, its patch must apply to the object it was
// given and the patched pod must need no further patch (idempotence).
func FuzzAdmit(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "reviews", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(reviewObject(f, data))
	}
	f.Add([]byte(`{"metadata":{"annotations":{"onbehalf.dev/inject":"true"}},"spec":{"containers":[{"name":"a","env":null}],"volumes":null}}`))
	cfg := DefaultConfig()
	cfg.Sidecar.Image, cfg.TLS.CertFile, cfg.TLS.KeyFile = "onbehalf:1", "/c", "/k"
	cfg.Sidecar.PolicyConfigMap, cfg.Sidecar.AuditSecret = "policy", "audit"
	native, err := NewInjector(cfg)
	if err != nil {
		f.Fatal(err)
	}
	cfg.NativeSidecar, cfg.InjectByDefault = false, true
	fallback, err := NewInjector(cfg)
	if err != nil {
		f.Fatal(err)
	}
	pods := GroupVersionKind{Version: "v1", Kind: "Pod"}
	f.Fuzz(func(t *testing.T, obj []byte) {
		for _, in := range []*Injector{native, fallback} {
			res := in.Admit(&Request{Kind: pods, Operation: "CREATE", Object: obj})
			switch res.Outcome {
			case OutcomeDenied, OutcomeInvalid:
				if res.Err == nil {
					t.Fatalf("%s without an error", res.Outcome)
				}
				continue
			case OutcomeInjected:
			default:
				continue
			}
			if !canonicalKeys(obj) {
				// encoding/json matches keys case-insensitively; the API
				// server only ever sends the canonical spelling.
				continue
			}
			patch, err := MarshalPatch(res.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := applyPatch(obj, patch)
			if err != nil {
				t.Fatalf("patch does not apply: %v\nobject: %s\npatch: %s", err, obj, patch)
			}
			again := in.Admit(&Request{Kind: pods, Operation: "CREATE", Object: patched})
			if again.Outcome != OutcomeUnchanged {
				t.Fatalf("re-admission: got %s (%v, %d ops); want unchanged\nobject: %s", again.Outcome, again.Err, len(again.Patch), patched)
			}
		}
	})
}

// knownKeys are the JSON names the pod structs decode.
var knownKeys = func() map[string]string {
	keys := map[string]string{}
	var walk func(t reflect.Type)
	seen := map[reflect.Type]bool{}
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			keys[strings.ToLower(name)] = name
			walk(t.Field(i).Type)
		}
	}
	walk(reflect.TypeFor[pod]())
	return keys
}()

// canonicalKeys reports whether no key in obj is a case variant of a key
// the pod structs decode.
func canonicalKeys(obj []byte) bool {
	var doc any
	if json.Unmarshal(obj, &doc) != nil {
		return false
	}
	var ok func(v any) bool
	ok = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if want, known := knownKeys[strings.ToLower(k)]; known && want != k {
					return false
				}
				if !ok(child) {
					return false
				}
			}
		case []any:
			for _, child := range v {
				if !ok(child) {
					return false
				}
			}
		}
		return true
	}
	return ok(doc)
}
