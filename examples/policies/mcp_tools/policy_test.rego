package onbehalf.authz_test

import data.onbehalf.authz

# msg is input.mcp for one JSON-RPC message.
msg(kind, method, tool) := {
	"kind": kind, "method": method, "tool": tool, "resource": "", "prompt": "",
	"argument_names": [], "id": 1, "session": "", "protocol_version": "2025-11-25", "batch": [],
}

request(user, provider, mcp) := {
	"attributes": {
		"request": {"http": {"method": "POST", "host": "mcp.example.com", "path": "/mcp", "scheme": "https", "headers": {}}},
		"source": {"address": "127.0.0.1:40000"},
	},
	"parsed_path": ["mcp"],
	"parsed_query": {},
	"subject": {"user": user, "agent": "agent-7", "issuer": "https://orchestrator.example", "claims": {}},
	"route": {"provider": provider, "host": "mcp.example.com", "name": provider},
	"time": "2026-06-18T06:00:00Z",
	"mcp": mcp,
}

call(user, provider, tool) := request(user, provider, msg("request", "tools/call", tool))

test_initialize_and_lists_always_allowed if {
	every method in ["initialize", "server/discover", "tools/list", "resources/list", "prompts/list", "ping"] {
		authz.decision.allow with input as request("carol", "github", msg("request", method, ""))
	}
}

test_notifications_responses_streams_allowed if {
	authz.decision.allow with input as request("carol", "github", msg("notification", "notifications/initialized", ""))
	authz.decision.allow with input as request("carol", "github", msg("response", "", ""))
	authz.decision.allow with input as request("carol", "github", msg("stream", "", ""))
	authz.decision.allow with input as request("carol", "github", msg("end_session", "", ""))
}

test_read_only_tools_allowed_for_anyone if {
	authz.decision.allow with input as call("carol", "github", "search_issues")
	authz.decision.allow with input as call("carol", "github", "get_file_contents")
	authz.decision.allow with input as call("carol", "github", "whoami")
	authz.decision.allow with input as call("carol", "chat", "count_slowly")
}

test_destructive_tools_denied_even_when_listed if {
	d := authz.decision with input as call("alice", "github", "delete_repository")
	not d.allow
	contains(d.reason, "tool delete_repository is destructive")
	not authz.decision.allow with input as call("alice", "github", "org_admin")
	not authz.decision.allow with input as call("alice", "github", "drop_table")
	# on the user's list, still destructive
	not authz.decision.allow with input as call("alice", "github", "delete_comment") with data.mcp_tools.users.alice.github as ["*"]
}

test_user_allowlist if {
	authz.decision.allow with input as call("alice", "github", "create_issue")
	authz.decision.allow with input as call("alice", "github", "add_comment_reply")
	authz.decision.allow with input as call("bob", "github", "create_issue")
	d := authz.decision with input as call("bob", "github", "add_comment")
	not d.allow
	d.reason == "tool add_comment is not read-only and not on bob's list for github"
	# the list is per provider
	not authz.decision.allow with input as call("alice", "jira", "create_issue")
}

read(uri) := request("carol", "github", object.union(msg("request", "resources/read", ""), {"resource": uri}))

test_resources_limited_to_prefixes if {
	authz.decision.allow with input as read("repo://acme/api/README.md")
	not authz.decision.allow with input as read("repo://other/secret")
	# a provider without prefixes allows every resource
	authz.decision.allow with input as object.union(read("file:///x"), {"route": {"provider": "chat", "host": "h", "name": "chat"}})
}

test_unknown_methods_denied if {
	d := authz.decision with input as request("alice", "github", msg("request", "sampling/createMessage", ""))
	not d.allow
	d.reason == "MCP method sampling/createMessage is not allowed"
}

test_not_an_mcp_route_denied if {
	doc := json.remove(call("alice", "github", "search_issues"), ["mcp"])
	d := authz.decision with input as doc
	not d.allow
	d.reason == "not an MCP route: this policy only decides MCP requests"
}

test_no_user_denied if {
	not authz.decision.allow with input as call("", "github", "search_issues")
}

test_report_only if {
	d := authz.decision with input as call("alice", "github", "delete_repository") with data.mcp_tools.report_only as true
	not d.allow
	d.report_only
}
