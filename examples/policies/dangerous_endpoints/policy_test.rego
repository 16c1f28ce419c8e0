package onbehalf.authz_test

import data.onbehalf.authz

request(provider, method, path, agent) := {
	"attributes": {
		"request": {"http": {"method": method, "host": "api.example", "path": concat("", ["/", concat("/", path)]), "scheme": "https", "headers": {}}},
		"source": {"address": "127.0.0.1:40000"},
	},
	"parsed_path": path,
	"parsed_query": {},
	"subject": {"user": "alice", "agent": agent, "issuer": "https://orchestrator.example", "claims": {}},
	"route": {"provider": provider, "host": "api.example", "name": provider},
	"time": "2026-06-18T09:00:00Z",
}

test_agent_cannot_delete_repository if {
	d := authz.decision with input as request("github", "DELETE", ["repos", "acme", "app"], "agent-7")
	not d.allow
	d.reason == "agents may not act on github endpoints: deleting a repository"
}

test_trailing_slash_and_case_do_not_bypass if {
	not authz.decision.allow with input as request("github", "DELETE", ["repos", "acme", "app", ""], "agent-7")
	not authz.decision.allow with input as request("github", "delete", ["REPOS", "acme", "app"], "agent-7")
}

test_agent_cannot_change_org_settings if {
	d := authz.decision with input as request("github", "PATCH", ["orgs", "acme"], "agent-7")
	not d.allow
	d.reason == "agents may not act on github endpoints: changing organisation settings"
}

test_agent_cannot_touch_org_hooks if {
	not authz.decision.allow with input as request("github", "POST", ["orgs", "acme", "hooks"], "agent-7")
	not authz.decision.allow with input as request("github", "DELETE", ["orgs", "acme", "hooks", "42"], "agent-7")
}

test_agent_cannot_call_slack_admin if {
	d := authz.decision with input as request("slack", "POST", ["api", "admin.users.remove"], "agent-7")
	not d.allow
	d.reason == "agents may not act on slack endpoints: calling Slack admin methods"
}

test_double_star_matches_deeper_paths if {
	not authz.decision.allow with input as request("microsoft", "POST", ["v1.0", "directoryRoles", "r1", "members", "$ref"], "agent-7")
}

test_agent_may_do_ordinary_work if {
	authz.decision.allow with input as request("github", "GET", ["repos", "acme", "app"], "agent-7")
	authz.decision.allow with input as request("github", "DELETE", ["repos", "acme", "app", "issues", "comments", "9"], "agent-7")
	authz.decision.allow with input as request("slack", "POST", ["api", "chat.postMessage"], "agent-7")
}

test_rules_are_per_provider if {
	authz.decision.allow with input as request("gitlab", "DELETE", ["repos", "acme", "app"], "agent-7")
}

test_person_without_agent_not_restricted if {
	authz.decision.allow with input as request("github", "DELETE", ["repos", "acme", "app"], "")
}

test_agent_cannot_change_branch_protection if {
	not authz.decision.allow with input as request("github", "PUT", ["repos", "acme", "app", "branches", "main", "protection"], "agent-7")
	not authz.decision.allow with input as request("github", "DELETE", ["repos", "acme", "app", "branches", "main", "protection", "required_signatures"], "agent-7")
	authz.decision.allow with input as request("github", "GET", ["repos", "acme", "app", "branches", "main", "protection"], "agent-7")
}
