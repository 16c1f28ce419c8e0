package onbehalf.authz_test

import data.onbehalf.authz

post(method, query, headers, claims) := {
	"attributes": {
		"request": {"http": {
			"method": "POST",
			"host": "slack.com",
			"path": concat("", ["/api/", method]),
			"scheme": "https",
			"headers": headers,
		}},
		"source": {"address": "127.0.0.1:40000"},
	},
	"parsed_path": ["api", method],
	"parsed_query": query,
	"subject": {"user": "alice", "agent": "agent-7", "issuer": "https://orchestrator.example", "claims": claims},
	"route": {"provider": "slack", "host": "slack.com", "name": "slack"},
	"time": "2026-06-18T09:00:00Z",
}

task := {"slack_channels": ["C0123ABC", "C0456DEF"]}

test_post_to_named_channel_allowed if {
	d := authz.decision with input as post("chat.postMessage", {"channel": ["C0123ABC"], "text": ["hi"]}, {}, task)
	d.allow
}

test_post_to_other_channel_denied if {
	d := authz.decision with input as post("chat.postMessage", {"channel": ["C0999XYZ"]}, {}, task)
	not d.allow
	d.reason == "the task may not write to slack channel C0999XYZ"
}

test_one_foreign_channel_among_several_denied if {
	not authz.decision.allow with input as post("chat.postMessage", {"channel": ["C0123ABC", "C0999XYZ"]}, {}, task)
}

test_post_without_claim_denied if {
	not authz.decision.allow with input as post("chat.postMessage", {"channel": ["C0123ABC"]}, {}, {})
}

test_post_without_channel_denied if {
	d := authz.decision with input as post("chat.postMessage", {"text": ["hi"]}, {}, task)
	not d.allow
	d.reason == "slack chat.postMessage must name its channel in the query string"
}

test_post_with_hidden_body_denied if {
	d := authz.decision with input as post("chat.postMessage", {"channel": ["C0123ABC"]}, {"content-type": "application/json", "content-length": "42"}, task)
	not d.allow
	d.reason == "slack chat.postMessage carries a body the policy cannot check; pass the arguments in the query string"
	not authz.decision.allow with input as post("chat.update", {"channel": ["C0123ABC"]}, {"transfer-encoding": "chunked"}, task)
}

test_visible_body_channel_checked if {
	allowed := object.union(post("chat.postMessage", {}, {"content-length": "42"}, task), {"parsed_body": {"channel": "C0456DEF"}})
	authz.decision.allow with input as allowed
	foreign := object.union(post("chat.postMessage", {"channel": ["C0123ABC"]}, {"content-length": "42"}, task), {"parsed_body": {"channel": "C0999XYZ"}})
	not authz.decision.allow with input as foreign
}

test_empty_body_allowed if {
	authz.decision.allow with input as post("chat.postMessage", {"channel": ["C0123ABC"]}, {"content-length": "0"}, task)
}

test_reads_not_restricted if {
	authz.decision.allow with input as post("conversations.history", {"channel": ["C0999XYZ"]}, {}, task)
}

test_other_providers_not_restricted if {
	other := object.union(post("chat.postMessage", {}, {}, {}), {"route": {"provider": "github", "host": "api.github.com", "name": "github"}})
	authz.decision.allow with input as other
}
