package policy

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestParseDecision(t *testing.T) {
	long := strings.Repeat("é", maxReasonBytes)
	tests := []struct {
		name string
		in   any
		want Decision
	}{
		{"true", true, Decision{Allow: true}},
		{"false", false, Decision{Reason: ReasonDenied}},
		{"object allow", map[string]any{"allow": true}, Decision{Allow: true}},
		{"object allow with reason", map[string]any{"allow": true, "reason": "ok"}, Decision{Allow: true, Reason: "ok"}},
		{"object deny", map[string]any{"allow": false, "reason": "no"}, Decision{Reason: "no"}},
		{"object deny without reason", map[string]any{"allow": false}, Decision{Reason: ReasonDenied}},
		{"report only", map[string]any{"allow": false, "reason": "r", "report_only": true}, Decision{Reason: "r", ReportOnly: true}},
		{"extras", map[string]any{"allow": true, "task_id": "T-1", "n": json.Number("3")},
			Decision{Allow: true, Extra: map[string]any{"task_id": "T-1", "n": json.Number("3")}}},
		{"missing allow", map[string]any{"reason": "r", "report_only": true}, Decision{Reason: ReasonError + ": decision object has no boolean allow"}},
		{"allow not boolean", map[string]any{"allow": "true"}, Decision{Reason: ReasonError + ": decision object has no boolean allow"}},
		{"reason not string", map[string]any{"allow": false, "reason": []any{"a"}}, Decision{Reason: ReasonError + ": decision reason is not a string"}},
		{"report_only not boolean", map[string]any{"allow": false, "report_only": 1}, Decision{Reason: ReasonError + ": decision report_only is not a boolean"}},
		{"string", "allow", Decision{Reason: ReasonError + ": decision is a string, not a boolean or an object"}},
		{"number", json.Number("1"), Decision{Reason: ReasonError + ": decision is a number, not a boolean or an object"}},
		{"array", []any{true}, Decision{Reason: ReasonError + ": decision is an array, not a boolean or an object"}},
		{"null", nil, Decision{Reason: ReasonError + ": decision is null, not a boolean or an object"}},
		{"long reason", map[string]any{"allow": false, "reason": long}, Decision{Reason: truncate(long, maxReasonBytes)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseDecision(tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseDecision(%v) mismatch (-want +got):\n%s", tt.in, diff)
			}
			if !got.Allow && got.Reason == "" {
				t.Errorf("parseDecision(%v) denies without a reason", tt.in)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	for _, s := range []string{"short", strings.Repeat("a", 2000), strings.Repeat("日本", 500)} {
		got := truncate(s, maxReasonBytes)
		if len(got) > maxReasonBytes || !utf8.ValidString(got) {
			t.Errorf("truncate(%d bytes) = %d bytes, valid UTF-8 %v; want at most %d valid bytes", len(s), len(got), utf8.ValidString(got), maxReasonBytes)
		}
		if len(s) <= maxReasonBytes && got != s {
			t.Errorf("truncate(%q) = %q; want it unchanged", s, got)
		}
	}
}
