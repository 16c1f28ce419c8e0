# A policy whose decision is picked by the request's ?case= query parameter,
# to exercise every shape of decision the engine must handle.
package onbehalf.authz

case := input.parsed_query["case"][0]

decision := true if case == "bool_allow"

decision := false if case == "bool_deny"

decision := {"allow": true, "reason": "fine", "rule": "r1"} if case == "object_allow"

decision := {"allow": false, "reason": "nope"} if case == "object_deny"

decision := {"allow": false} if case == "deny_without_reason"

decision := {"allow": false, "reason": "would deny", "report_only": true} if case == "report_only"

decision := {"reason": "no allow"} if case == "no_allow"

decision := {"allow": "yes"} if case == "allow_string"

decision := "allow" if case == "string"

decision := {"allow": false, "report_only": "yes"} if case == "report_only_string"

# Two complete definitions with different values: an evaluation error.
decision := {"allow": true} if case == "conflict"

decision := {"allow": false} if case == "conflict"

# Echo what the policy sees, for the credential-header test.
decision := {"allow": true, "input": input} if case == "echo"

# Any other case: no rule applies and the decision is undefined.
