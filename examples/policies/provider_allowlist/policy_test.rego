package onbehalf.authz_test

import data.onbehalf.authz

request(user, provider) := {
	"attributes": {
		"request": {"http": {"method": "GET", "host": "api.example", "path": "/", "scheme": "https", "headers": {}}},
		"source": {"address": "127.0.0.1:40000"},
	},
	"parsed_path": [""],
	"parsed_query": {},
	"subject": {"user": user, "agent": "agent-7", "issuer": "https://orchestrator.example", "claims": {}},
	"route": {"provider": provider, "host": "api.example", "name": provider},
	"time": "2026-06-18T09:00:00Z",
}

test_listed_provider_allowed if {
	d := authz.decision with input as request("alice", "slack")
	d.allow
	d.reason == "provider slack is on alice's allow-list"
}

test_everyone_provider_allowed if {
	d := authz.decision with input as request("bob", "github")
	d.allow
}

test_unlisted_provider_denied if {
	d := authz.decision with input as request("bob", "slack")
	not d.allow
	d.reason == "user bob is not allowed to use provider slack"
}

test_unknown_user_gets_only_everyone if {
	authz.decision.allow with input as request("carol", "github")
	not authz.decision.allow with input as request("carol", "google")
}

test_empty_user_denied if {
	d := authz.decision with input as request("", "github")
	not d.allow
	d.reason == "no verified user: the request carries no valid assertion"
}

test_no_route_denied if {
	d := authz.decision with input as object.union(request("alice", "slack"), {"route": null})
	not d.allow
	d.reason == "no route for host api.example"
}

test_data_can_be_replaced if {
	d := authz.decision with input as request("dave", "slack")
		with data.provider_allowlist as {"everyone": [], "users": {"dave": ["slack"]}}
	d.allow
}
