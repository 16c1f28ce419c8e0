# Read-only by default, with named write endpoints allowed.
#
# What it enforces
#   Reads (GET, HEAD, OPTIONS) are allowed on every route. Any other method
#   is a write, allowed only when it matches one of the route provider's
#   named write endpoints in data.read_only.write_endpoints: same method and
#   a path matching the endpoint's glob ("*" matches within one segment).
#   This is an allow-list, so it matches strictly: a write whose path has an
#   empty segment ("/repos//app/issues", or a trailing slash) matches no
#   endpoint. Requests without a verified user or a route are denied.
#
#   Report mode: with data.read_only.report_only set to true, denials carry
#   "report_only": true. The sidecar then lets the request through and
#   audits it as would_deny, so the list of write endpoints can be tuned on
#   real traffic before it is enforced.
#
# How to adapt it
#   - List the writes your agents need in data.json, per provider name (the
#     provider of the route in the sidecar configuration).
#   - Note that some APIs read with POST (GraphQL, Slack's Web API accepts
#     both): name those endpoints as writes if agents need them.
#   - Test: onbehalf policy test examples/policies/read_only
package onbehalf.authz

safe_methods := {"GET", "HEAD", "OPTIONS"}

method := upper(input.attributes.request.http.method)

user := input.subject.user if input.subject.user != ""

route := input.route if is_object(input.route)

# Referencing data.read_only (not all of data) keeps the rule independent of
# the policy's own tests, which also live under data.
report_only := object.get(data.read_only, "report_only", false)

path := concat("/", ["", concat("/", input.parsed_path)])

# The path of a write may not contain empty segments (see above).
strict_path := path if not "" in input.parsed_path

# A write endpoint named for the route's provider matches the request.
named_write if {
	some endpoint in data.read_only.write_endpoints[route.provider]
	upper(endpoint.method) == method
	glob.match(endpoint.path, ["/"], strict_path)
}

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains msg if {
	not route
	msg := sprintf("no route for host %s", [input.attributes.request.http.host])
}

deny contains msg if {
	route
	not method in safe_methods
	not named_write
	msg := sprintf("%s %s is a write that is not a named write endpoint of %s", [method, path, route.provider])
}

decision := {"allow": false, "reason": concat("; ", sort(deny)), "report_only": report_only} if {
	count(deny) > 0
} else := {"allow": true, "reason": "read, or a named write endpoint"}
