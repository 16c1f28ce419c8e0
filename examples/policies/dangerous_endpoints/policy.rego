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
#   - Add entries to `dangerous`: provider (the route's provider), method
#     ("*" for any), path as a list of lower-case glob patterns, one per
#     segment ("*" is one segment, "admin.*" matches "admin.users.list", a
#     final "**" matches any remaining segments), and why, which becomes the
#     deny reason.
#   - Test: onbehalf policy test examples/policies/dangerous_endpoints
package onbehalf.authz

dangerous := [
	{"provider": "github", "method": "DELETE", "path": ["repos", "*", "*"], "why": "deleting a repository"},
	{"provider": "github", "method": "PATCH", "path": ["repos", "*", "*"], "why": "changing repository settings"},
	{"provider": "github", "method": "POST", "path": ["repos", "*", "*", "transfer"], "why": "transferring a repository"},
	{"provider": "github", "method": "*", "path": ["repos", "*", "*", "branches", "*", "protection"], "why": "changing branch protection"},
	{"provider": "github", "method": "PATCH", "path": ["orgs", "*"], "why": "changing organisation settings"},
	{"provider": "github", "method": "*", "path": ["orgs", "*", "hooks"], "why": "changing organisation webhooks"},
	{"provider": "github", "method": "*", "path": ["orgs", "*", "hooks", "*"], "why": "changing organisation webhooks"},
	{"provider": "github", "method": "PUT", "path": ["orgs", "*", "memberships", "*"], "why": "changing organisation membership"},
	{"provider": "github", "method": "DELETE", "path": ["orgs", "*", "members", "*"], "why": "removing organisation members"},
	{"provider": "slack", "method": "*", "path": ["api", "admin.*"], "why": "calling Slack admin methods"},
	{"provider": "microsoft", "method": "DELETE", "path": ["v1.0", "users", "*"], "why": "deleting a directory user"},
	{"provider": "microsoft", "method": "*", "path": ["v1.0", "directoryroles", "**"], "why": "changing directory roles"},
]

user := input.subject.user if input.subject.user != ""

route := input.route if is_object(input.route)

method := upper(input.attributes.request.http.method)

# The path segments, lower case, without empty ones.
segments := [lower(s) | some s in input.parsed_path; s != ""]

# matches(pattern, segments) holds when each pattern segment globs the
# corresponding path segment. A final "**" matches any remaining segments.
matches(pattern, segs) if {
	count(pattern) == count(segs)
	every i, p in pattern {
		glob.match(p, ["/"], segs[i])
	}
}

matches(pattern, segs) if {
	pattern[count(pattern) - 1] == "**"
	prefix := array.slice(pattern, 0, count(pattern) - 1)
	count(segs) >= count(prefix)
	every i, p in prefix {
		glob.match(p, ["/"], segs[i])
	}
}

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains msg if {
	not route
	msg := sprintf("no route for host %s", [input.attributes.request.http.host])
}

deny contains msg if {
	input.subject.agent != ""
	some d in dangerous
	d.provider == route.provider
	d.method in {"*", method}
	matches(d.path, segments)
	msg := sprintf("agents may not act on %s endpoints: %s", [d.provider, d.why])
}

decision := {"allow": false, "reason": concat("; ", sort(deny))} if {
	count(deny) > 0
} else := {"allow": true, "reason": "allowed"}
