# Dangerous endpoints are denied for agents.
#
# What it enforces
#   When an agent acts (input.subject.agent is set: the assertion's act.sub),
#   requests to endpoints that are hard to undo (deleting a repository,
#   changing organisation settings or membership, org webhooks, branch
#   protection, Slack admin methods, deleting directory users) are denied,
#   whatever the user's own grant would permit. A person using the sidecar
#   directly (no agent) is not restricted by this policy. Everything else is
#   allowed for a verified user on a route.
#
#   Matching ignores empty path segments and case, so "/repos/o/r/" and
#   "/REPOS/o/r" cannot slip past a rule written for "/repos/o/r".
#
# How to adapt it
#   - Add entries to `dangerous`, under the route's provider name: method
#     ("*" for any, "write" for any but GET, HEAD and OPTIONS), path as a
#     lower-case glob ("*" matches within one segment, so "/api/admin.*"
#     matches "/api/admin.users.list"; "**" matches across segments;
#     "{,/**}" also matches everything below), and why, which becomes the
#     deny reason.
#   - Test: onbehalf policy test examples/policies/dangerous_endpoints
package onbehalf.authz

# Endpoints agents may not call, per provider.
dangerous := {
	"github": [
		{"method": "DELETE", "path": "/repos/*/*", "why": "deleting a repository"},
		{"method": "PATCH", "path": "/repos/*/*", "why": "changing repository settings"},
		{"method": "POST", "path": "/repos/*/*/transfer", "why": "transferring a repository"},
		{"method": "write", "path": "/repos/*/*/branches/*/protection{,/**}", "why": "changing branch protection"},
		{"method": "PATCH", "path": "/orgs/*", "why": "changing organisation settings"},
		{"method": "write", "path": "/orgs/*/hooks{,/**}", "why": "changing organisation webhooks"},
		{"method": "PUT", "path": "/orgs/*/memberships/*", "why": "changing organisation membership"},
		{"method": "DELETE", "path": "/orgs/*/members/*", "why": "removing organisation members"},
	],
	"slack": [{"method": "*", "path": "/api/admin.*", "why": "calling Slack admin methods"}],
	"microsoft": [
		{"method": "DELETE", "path": "/v1.0/users/*", "why": "deleting a directory user"},
		{"method": "write", "path": "/v1.0/directoryroles/**", "why": "changing directory roles"},
	],
}

user := input.subject.user if input.subject.user != ""

route := input.route if is_object(input.route)

method := upper(input.attributes.request.http.method)

# The path, lower case, with empty segments dropped: "/REPOS//o/r/" is
# matched as "/repos/o/r". This is a deny-list, so variants that an API may
# treat alike must not slip past it.
normalized_path := concat("/", ["", concat("/", [lower(s) | some s in input.parsed_path; s != ""])])

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains msg if {
	not route
	msg := sprintf("no route for host %s", [input.attributes.request.http.host])
}

# The method selectors the request answers to, computed once per decision.
method_selectors contains method

method_selectors contains "*"

method_selectors contains "write" if not method in {"GET", "HEAD", "OPTIONS"}

deny contains msg if {
	input.subject.agent != ""
	some d in dangerous[route.provider]
	d.method in method_selectors
	glob.match(d.path, ["/"], normalized_path)
	msg := sprintf("agents may not act on %s endpoints: %s", [route.provider, d.why])
}

decision := {"allow": false, "reason": concat("; ", sort(deny))} if {
	count(deny) > 0
} else := {"allow": true, "reason": "allowed"}
