# Per-user allow-lists of providers.
#
# What it enforces
#   A user may reach a provider only when the provider is on their list in
#   data.provider_allowlist.users, or on the list everyone gets
#   (data.provider_allowlist.everyone). Requests without a verified user or
#   without a route are denied. Everything else about the request (method,
#   path) is left to other rules: combine with ../read_only or
#   ../dangerous_endpoints for finer control.
#
# How to adapt it
#   - Edit data.json, or generate it from your directory (group membership,
#     HR system) and ship it in a bundle next to this policy. Data files load
#     under data at their directory's path, so data.json here becomes
#     data.provider_allowlist.
#   - To deny by default for everyone, make "everyone" an empty list.
#   - Test: onbehalf policy test examples/policies/provider_allowlist
package onbehalf.authz

allowlist := data.provider_allowlist

user := input.subject.user if input.subject.user != ""

route := input.route if is_object(input.route)

# The providers this user may use.
user_providers contains p if some p in allowlist.users[user]

user_providers contains p if some p in allowlist.everyone

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains msg if {
	not route
	msg := sprintf("no route for host %s", [input.attributes.request.http.host])
}

deny contains msg if {
	not route.provider in user_providers
	msg := sprintf("user %s is not allowed to use provider %s", [user, route.provider])
}

decision := {"allow": false, "reason": concat("; ", sort(deny))} if {
	count(deny) > 0
} else := {"allow": true, "reason": sprintf("provider %s is on %s's allow-list", [route.provider, user])}
