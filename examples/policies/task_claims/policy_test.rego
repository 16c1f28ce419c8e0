package onbehalf.authz_test

import data.onbehalf.authz

request(method, host, provider, agent, claims) := {
	"attributes": {
		"request": {"http": {"method": method, "host": host, "path": "/api/x", "scheme": "https", "headers": {}}},
		"source": {"address": "127.0.0.1:40000"},
	},
	"parsed_path": ["api", "x"],
	"parsed_query": {},
	"subject": {"user": "alice", "agent": agent, "issuer": "https://orchestrator.example", "claims": claims},
	"route": {"provider": provider, "host": host, "name": provider},
	"time": "2026-06-18T09:00:00Z",
}

test_task_allowed_and_named_in_decision if {
	d := authz.decision with input as request("POST", "slack.com", "slack", "agent-7", {"task_id": "T-1"})
	d.allow
	d.task_id == "T-1"
	d.reason == "within task T-1"
}

test_agent_without_task_denied if {
	d := authz.decision with input as request("GET", "slack.com", "slack", "agent-7", {})
	not d.allow
	d.reason == "the assertion names no task (claim task_id)"
	not authz.decision.allow with input as request("GET", "slack.com", "slack", "agent-7", {"task_id": ""})
	not authz.decision.allow with input as request("GET", "slack.com", "slack", "agent-7", {"task_id": 7})
}

test_person_without_task_allowed if {
	authz.decision.allow with input as request("GET", "slack.com", "slack", "", {})
}

test_providers_claim_narrows if {
	authz.decision.allow with input as request("GET", "slack.com", "slack", "agent-7", {"task_id": "T-1", "providers": ["slack"]})
	d := authz.decision with input as request("GET", "api.github.com", "github", "agent-7", {"task_id": "T-1", "providers": ["slack"]})
	not d.allow
	d.reason == "task T-1 may not use provider github"
	d.task_id == "T-1"
}

test_empty_providers_claim_allows_nothing if {
	not authz.decision.allow with input as request("GET", "slack.com", "slack", "agent-7", {"task_id": "T-1", "providers": []})
}

test_read_only_claim if {
	authz.decision.allow with input as request("GET", "slack.com", "slack", "agent-7", {"task_id": "T-1", "read_only": true})
	d := authz.decision with input as request("POST", "slack.com", "slack", "agent-7", {"task_id": "T-1", "read_only": true})
	not d.allow
	d.reason == "task is read-only: POST is not allowed"
	authz.decision.allow with input as request("POST", "slack.com", "slack", "agent-7", {"task_id": "T-1", "read_only": false})
	not authz.decision.allow with input as request("GET", "slack.com", "slack", "agent-7", {"task_id": "T-1", "read_only": "yes"})
}

test_hosts_claim if {
	authz.decision.allow with input as request("GET", "files.slack.com", "slack", "agent-7", {"task_id": "T-1", "hosts": ["*.slack.com"]})
	not authz.decision.allow with input as request("GET", "slack.com.evil.example", "slack", "agent-7", {"task_id": "T-1", "hosts": ["*.slack.com"]})
	not authz.decision.allow with input as request("GET", "a.b.slack.com", "slack", "agent-7", {"task_id": "T-1", "hosts": ["*.slack.com"]})
}
