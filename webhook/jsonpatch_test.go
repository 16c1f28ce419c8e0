package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// applyPatch applies an RFC 6902 document (add, remove and replace, the
// operations the webhook emits) to doc, the way the API server does: each
// operation in order, failing on a path that does not exist. It is a test
// helper; the chart tests apply the same patches with evanphx/json-patch.
func applyPatch(doc, patch []byte) ([]byte, error) {
	var root any
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("decode document: %w", err)
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(patch, &ops); err != nil {
		return nil, fmt.Errorf("decode patch: %w", err)
	}
	for i, op := range ops {
		var value any
		if op.Op != "remove" {
			if op.Value == nil {
				return nil, fmt.Errorf("op %d: %s without value", i, op.Op)
			}
			d := json.NewDecoder(bytes.NewReader(op.Value))
			d.UseNumber()
			if err := d.Decode(&value); err != nil {
				return nil, fmt.Errorf("op %d: value: %w", i, err)
			}
		}
		var err error
		root, err = applyOp(root, op.Op, op.Path, value)
		if err != nil {
			return nil, fmt.Errorf("op %d (%s %s): %w", i, op.Op, op.Path, err)
		}
	}
	return json.Marshal(root)
}

func applyOp(root any, op, path string, value any) (any, error) {
	if path == "" {
		if op == "remove" {
			return nil, fmt.Errorf("cannot remove the root")
		}
		return value, nil
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("path must start with /")
	}
	tokens := strings.Split(path[1:], "/")
	for i, t := range tokens {
		tokens[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(t)
	}
	parent := root
	for _, t := range tokens[:len(tokens)-1] {
		switch p := parent.(type) {
		case map[string]any:
			next, ok := p[t]
			if !ok {
				return nil, fmt.Errorf("no member %q", t)
			}
			parent = next
		case []any:
			i, err := index(t, len(p), false)
			if err != nil {
				return nil, err
			}
			parent = p[i]
		default:
			return nil, fmt.Errorf("cannot descend into %T at %q", parent, t)
		}
	}
	last := tokens[len(tokens)-1]
	switch p := parent.(type) {
	case map[string]any:
		_, exists := p[last]
		switch op {
		case "add":
			p[last] = value
		case "replace":
			if !exists {
				return nil, fmt.Errorf("replace: no member %q", last)
			}
			p[last] = value
		case "remove":
			if !exists {
				return nil, fmt.Errorf("remove: no member %q", last)
			}
			delete(p, last)
		default:
			return nil, fmt.Errorf("unsupported op %q", op)
		}
		return root, nil
	case []any:
		var updated []any
		switch op {
		case "add":
			i, err := index(last, len(p), true)
			if err != nil {
				return nil, err
			}
			updated = append(append(append([]any{}, p[:i]...), value), p[i:]...)
		case "replace":
			i, err := index(last, len(p), false)
			if err != nil {
				return nil, err
			}
			p[i] = value
			return root, nil
		case "remove":
			i, err := index(last, len(p), false)
			if err != nil {
				return nil, err
			}
			updated = append(append([]any{}, p[:i]...), p[i+1:]...)
		default:
			return nil, fmt.Errorf("unsupported op %q", op)
		}
		// Arrays are values: write the new one back into its parent.
		parentPath := "/" + strings.Join(escapeAll(tokens[:len(tokens)-1]), "/")
		if len(tokens) == 1 {
			return updated, nil
		}
		return applyOp(root, "replace", parentPath, updated)
	default:
		return nil, fmt.Errorf("cannot address into %T", parent)
	}
}

func escapeAll(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		out[i] = escapePointer(t)
	}
	return out
}

// index parses an array index token; "-" (append) only when adding.
func index(t string, n int, adding bool) (int, error) {
	if t == "-" && adding {
		return n, nil
	}
	if t == "" || (len(t) > 1 && t[0] == '0') {
		return 0, fmt.Errorf("bad array index %q", t)
	}
	i, err := strconv.Atoi(t)
	if err != nil || i < 0 {
		return 0, fmt.Errorf("bad array index %q", t)
	}
	limit := n - 1
	if adding {
		limit = n
	}
	if i > limit {
		return 0, fmt.Errorf("index %d out of range (length %d)", i, n)
	}
	return i, nil
}

func TestApplyPatch(t *testing.T) {
	doc := `{"a":{"b/c":[1,2,3]},"l":[],"m":{"x~y":1}}`
	tests := []struct {
		name, patch, want, wantErr string
	}{
		{"add member", `[{"op":"add","path":"/n","value":{"k":true}}]`, `{"a":{"b/c":[1,2,3]},"l":[],"m":{"x~y":1},"n":{"k":true}}`, ""},
		{"add escaped", `[{"op":"add","path":"/a/b~1c/0","value":0}]`, `{"a":{"b/c":[0,1,2,3]},"l":[],"m":{"x~y":1}}`, ""},
		{"append", `[{"op":"add","path":"/l/-","value":"x"},{"op":"add","path":"/l/-","value":"y"}]`, `{"a":{"b/c":[1,2,3]},"l":["x","y"],"m":{"x~y":1}}`, ""},
		{"remove in order", `[{"op":"remove","path":"/a/b~1c/2"},{"op":"remove","path":"/a/b~1c/0"}]`, `{"a":{"b/c":[2]},"l":[],"m":{"x~y":1}}`, ""},
		{"replace tilde", `[{"op":"replace","path":"/m/x~0y","value":false}]`, `{"a":{"b/c":[1,2,3]},"l":[],"m":{"x~y":false}}`, ""},
		{"replace missing", `[{"op":"replace","path":"/zz","value":1}]`, "", "no member"},
		{"index past end", `[{"op":"add","path":"/l/1","value":1}]`, "", "out of range"},
		{"remove missing", `[{"op":"remove","path":"/a/b~1c/3"}]`, "", "out of range"},
		{"leading zero", `[{"op":"remove","path":"/a/b~1c/01"}]`, "", "bad array index"},
		{"missing parent", `[{"op":"add","path":"/q/r","value":1}]`, "", "no member"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyPatch([]byte(doc), []byte(tc.patch))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %s; want %s", got, tc.want)
			}
		})
	}
}
