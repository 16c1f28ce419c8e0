# Default onbehalf policy: the one the example sidecar configuration loads.
#
# What it enforces
#   1. The request must come with a verified acting user (input.subject.user,
#      taken from the signed assertion).
#   2. The destination must have a route (input.route): onbehalf injects
#      credentials only on routes, and this policy refuses everything else.
#   3. When the assertion narrows the providers the task may use (claim
#      "providers", a list of provider names), the route's provider must be
#      one of them. Without the claim, every routed provider is allowed.
#   4. DELETE on an admin-like path (any path segment in admin_segments, in
#      any case) is denied: agents do not remove members, hooks, keys or
#      settings.
#   Every deny carries a reason; several reasons are joined with "; ".
#
# How to adapt it
#   - Edit admin_segments to match the admin surfaces of your providers.
#   - Add `deny contains msg if { ... }` rules: any deny wins over the allow.
#   - Set `report_only` in the decision (see ../read_only) to roll a stricter
#     version out in report mode first.
#   - Test: onbehalf policy test examples/policies/default
package onbehalf.authz

# Path segments that mark administrative endpoints, compared in lower case.
admin_segments := {
	"admin", "admins", "administration",
	"settings", "orgs", "organizations",
	"members", "memberships", "teams",
	"hooks", "webhooks", "keys",
}

# The verified user, defined only when the assertion named one.
user := input.subject.user if input.subject.user != ""

# The matched route, defined only when there is one (input.route is null
# otherwise).
route := input.route if is_object(input.route)

method := upper(input.attributes.request.http.method)

# The request path without its query, for messages.
path := concat("/", ["", concat("/", input.parsed_path)])

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains msg if {
	not route
	msg := sprintf("no route for host %s", [input.attributes.request.http.host])
}

deny contains msg if {
	allowed := input.subject.claims.providers
	not route.provider in allowed
	msg := sprintf("provider %s is not among the providers the assertion allows", [route.provider])
}

deny contains msg if {
	method == "DELETE"
	some segment in input.parsed_path
	lower(segment) in admin_segments
	msg := sprintf("DELETE on admin path %s is not allowed", [path])
}

decision := {"allow": false, "reason": concat("; ", sort(deny))} if {
	count(deny) > 0
} else := {"allow": true, "reason": sprintf("user %s may use %s", [user, route.provider])}
