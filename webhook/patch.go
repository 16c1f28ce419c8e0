package webhook

import (
	"encoding/json"
	"strings"
)

// PatchOp is one RFC 6902 JSON Patch operation. The webhook only adds,
// replaces and removes at paths it computed from the pod it was given; it
// never re-serializes the pod, so fields it does not know survive.
type PatchOp struct {
	Op   string `json:"op"`
	Path string `json:"path"`
	// Value is nil for "remove". A value of false is kept: omitempty on an
	// interface only drops a nil interface.
	Value any `json:"value,omitempty"`
}

// MarshalPatch encodes ops as a JSON Patch document. An empty list encodes
// as nil, which the response then omits.
func MarshalPatch(ops []PatchOp) ([]byte, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	return json.Marshal(ops)
}

// escapePointer escapes one JSON Pointer (RFC 6901) reference token:
// "onbehalf.dev/inject" becomes "onbehalf.dev~1inject".
func escapePointer(token string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(token)
}
