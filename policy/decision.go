package policy

import (
	"fmt"
	"unicode/utf8"
)

// Reasons the engine gives when it denies on its own account rather than the
// policy's. They are stable: audit consumers may match on them (the error
// variant is ReasonError followed by ": " and the error text).
const (
	ReasonNotLoaded = "policy not loaded"
	ReasonUndefined = "policy undefined"
	ReasonTimeout   = "policy timeout"
	ReasonCanceled  = "policy canceled"
	ReasonError     = "policy error"
	// ReasonDenied is the reason given when a policy denies without saying
	// why, so that every deny in the audit trail carries a reason.
	ReasonDenied = "denied by policy"
)

// maxReasonBytes caps Decision.Reason. The reason lands in every audit record
// and in logs; a policy that builds it from request data must not be able to
// inflate those records without bound.
const maxReasonBytes = 1024

// Decision is the outcome of one policy evaluation.
type Decision struct {
	// Allow is true only when the policy allowed the request. It is false on
	// any error, undefined result or timeout.
	Allow bool `json:"allow"`
	// Reason explains the decision; it is never empty on a deny.
	Reason string `json:"reason,omitempty"`
	// ReportOnly asks the caller to let a denied request through and audit
	// it as would_deny (report mode for safe roll-out). It is set only from a
	// well-formed decision object, never on an engine error.
	ReportOnly bool `json:"report_only,omitempty"`
	// Extra holds the decision object's other fields, if any.
	Extra map[string]any `json:"extra,omitempty"`
	// Revision is the revision of the policy that decided (empty when no
	// policy was loaded), for the audit record's policy_revision.
	Revision string `json:"revision,omitempty"`
}

// deny returns a deny decision with reason.
func deny(reason string) Decision {
	return Decision{Reason: reason}
}

// parseDecision turns a query result into a Decision. A boolean is the allow
// bit. An object must carry a boolean "allow"; "reason" must be a string and
// "report_only" a boolean when present; other fields go to Extra. Anything
// else is a deny whose reason names the problem.
func parseDecision(v any) Decision {
	switch v := v.(type) {
	case bool:
		if v {
			return Decision{Allow: true}
		}
		return deny(ReasonDenied)
	case map[string]any:
		allow, ok := v["allow"].(bool)
		if !ok {
			return deny(ReasonError + ": decision object has no boolean allow")
		}
		d := Decision{Allow: allow}
		if r, present := v["reason"]; present {
			s, ok := r.(string)
			if !ok {
				return deny(ReasonError + ": decision reason is not a string")
			}
			d.Reason = truncate(s, maxReasonBytes)
		}
		if ro, present := v["report_only"]; present {
			b, ok := ro.(bool)
			if !ok {
				return deny(ReasonError + ": decision report_only is not a boolean")
			}
			d.ReportOnly = b
		}
		for k, x := range v {
			switch k {
			case "allow", "reason", "report_only":
				continue
			}
			if d.Extra == nil {
				d.Extra = make(map[string]any, len(v)-1)
			}
			d.Extra[k] = x
		}
		if !d.Allow && d.Reason == "" {
			d.Reason = ReasonDenied
		}
		return d
	}
	return deny(fmt.Sprintf("%s: decision is %s, not a boolean or an object", ReasonError, kindOf(v)))
}

// kindOf names the JSON kind of a query result, with its article.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "a number"
}

// truncate shortens s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
