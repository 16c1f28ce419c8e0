# Narrowing from the assertion's claims: task id, providers, read-only.
#
# What it enforces
#   The orchestrator that mints the assertion knows what the task is for and
#   can narrow what the agent may do beyond the user's own grants:
#     - "task_id" (string): required whenever an agent acts, so that every
#       audited request is tied to a task. It is returned in the decision
#       (the audit record can carry decision extras).
#     - "providers" (list of provider names): when present, only those
#       providers' routes may be used.
#     - "read_only" (boolean): when true, only GET, HEAD and OPTIONS.
#     - "hosts" (list of host globs, e.g. "*.slack.com"): when present, only
#       matching destination hosts.
#   A claim can only narrow: absent claims add no permission, and a claim of
#   the wrong type denies.
#
# How to adapt it
#   - Mint assertions with the claims (with the orchestrator's JWT library
#     or `onbehalf assert`), e.g. a payload of
#       {"sub": "alice", "act": {"sub": "agent-7"}, "task_id": "T-1234",
#        "providers": ["slack"], "read_only": true}
#     The sidecar passes the narrowing claims as input.subject.claims.
#   - Add narrowing claims of your own the same way: one deny rule each.
#   - Test: onbehalf policy test examples/policies/task_claims
package onbehalf.authz

claims := input.subject.claims

user := input.subject.user if input.subject.user != ""

route := input.route if is_object(input.route)

method := upper(input.attributes.request.http.method)

host := input.attributes.request.http.host

task_id := claims.task_id if {
	is_string(claims.task_id)
	claims.task_id != ""
}

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains msg if {
	not route
	msg := sprintf("no route for host %s", [host])
}

deny contains "the assertion names no task (claim task_id)" if {
	input.subject.agent != ""
	not task_id
}

deny contains msg if {
	"providers" in object.keys(claims)
	not route.provider in claims.providers
	msg := sprintf("task %s may not use provider %s", [object.get(claims, "task_id", "?"), object.get(route, "provider", "none")])
}

deny contains msg if {
	claims.read_only != false
	claims.read_only != true
	msg := "claim read_only must be a boolean"
}

deny contains msg if {
	claims.read_only == true
	not method in {"GET", "HEAD", "OPTIONS"}
	msg := sprintf("task is read-only: %s is not allowed", [method])
}

deny contains msg if {
	"hosts" in object.keys(claims)
	not host_allowed
	msg := sprintf("task may not reach host %s", [host])
}

host_allowed if {
	some pattern in claims.hosts
	glob.match(pattern, ["."], host)
}

decision := {"allow": false, "reason": concat("; ", sort(deny)), "task_id": object.get(claims, "task_id", "")} if {
	count(deny) > 0
} else := {"allow": true, "reason": sprintf("within task %s", [task_id]), "task_id": task_id} if {
	task_id
} else := {"allow": true, "reason": "allowed"}
