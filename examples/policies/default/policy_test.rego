package onbehalf.authz_test

import data.onbehalf.authz

# A GET by alice's agent on the Slack route: the policy allows it.
base := {
	"attributes": {
		"request": {"http": {
			"method": "GET",
			"host": "slack.com",
			"path": "/api/conversations.list?limit=10",
			"scheme": "https",
			"headers": {"accept": "application/json"},
		}},
		"source": {"address": "127.0.0.1:51234"},
	},
	"parsed_path": ["api", "conversations.list"],
	"parsed_query": {"limit": ["10"]},
	"subject": {"user": "alice", "agent": "agent-7", "issuer": "https://orchestrator.example", "claims": {}},
	"route": {"provider": "slack", "host": "slack.com", "name": "slack"},
	"time": "2026-06-18T09:00:00Z",
}

with_request(method, segments) := object.union(base, {
	"attributes": {"request": {"http": {"method": method, "path": concat("/", ["", concat("/", segments)])}}},
	"parsed_path": segments,
})

test_allows_user_on_route if {
	d := authz.decision with input as base
	d.allow
	d.reason == "user alice may use slack"
}

test_denies_without_user if {
	d := authz.decision with input as object.union(base, {"subject": {"user": ""}})
	not d.allow
	d.reason == "no verified user: the request carries no valid assertion"
}

test_denies_without_route if {
	d := authz.decision with input as object.union(base, {"route": null})
	not d.allow
	d.reason == "no route for host slack.com"
}

test_providers_claim_allows_listed_provider if {
	d := authz.decision with input as object.union(base, {"subject": {"claims": {"providers": ["github", "slack"]}}})
	d.allow
}

test_providers_claim_denies_other_provider if {
	d := authz.decision with input as object.union(base, {"subject": {"claims": {"providers": ["github"]}}})
	not d.allow
	d.reason == "provider slack is not among the providers the assertion allows"
}

test_providers_claim_of_wrong_type_denies if {
	d := authz.decision with input as object.union(base, {"subject": {"claims": {"providers": "slack"}}})
	not d.allow
}

test_delete_on_admin_path_denied if {
	d := authz.decision with input as with_request("DELETE", ["orgs", "acme", "members", "bob"])
	not d.allow
	d.reason == "DELETE on admin path /orgs/acme/members/bob is not allowed"
}

test_delete_on_admin_path_denied_whatever_the_case if {
	d := authz.decision with input as with_request("delete", ["repos", "acme", "app", "Hooks", "1"])
	not d.allow
}

test_delete_elsewhere_allowed if {
	d := authz.decision with input as with_request("DELETE", ["api", "chat.delete"])
	d.allow
}

test_get_on_admin_path_allowed if {
	d := authz.decision with input as with_request("GET", ["orgs", "acme", "members"])
	d.allow
}

test_several_reasons_joined if {
	d := authz.decision with input as object.union(base, {"route": null, "subject": {"user": ""}})
	not d.allow
	d.reason == "no route for host slack.com; no verified user: the request carries no valid assertion"
}
