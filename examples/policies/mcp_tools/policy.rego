# MCP tools: which tools of remote MCP servers an agent may call, as whom.
#
# What it enforces
#   On MCP routes (routes with `mcp: true`; the sidecar then fills input.mcp
#   with the JSON-RPC message) it decides per message:
#   - protocol traffic is always allowed: initialize, server/discover, ping,
#     the list methods (tools/list, resources/list, prompts/list, …),
#     notifications, the client's answers to server requests, the server's
#     message stream (GET) and the end of a session (DELETE);
#   - destructive tools are always denied: names starting with "delete_" or
#     "drop_", or ending in "_admin" (data.mcp_tools.destructive_patterns);
#   - read-only tools are allowed for everyone: the names listed per route
#     provider in data.mcp_tools.read_only, and names starting with "get_",
#     "list_", "search_" or "read_";
#   - any other tool only for users whose allow-list names it:
#     data.mcp_tools.users[user][provider] lists tool names (globs);
#   - resources/read and prompts/get are allowed (they read), unless
#     data.mcp_tools.resource_prefixes[provider] lists URI prefixes, and
#     then only under them.
#   A batch is asked about message by message: one denied message refuses
#   the whole batch. Requests on routes that are not MCP routes are denied:
#   load this policy only for MCP sidecars, or copy its rules into yours.
#
# How to adapt it
#   - Name each MCP server's tools in data.json under the route's provider.
#   - Argument names are in input.mcp.argument_names (never their values):
#     deny a tool call that passes an argument you do not expect.
#   - Roll it out in report mode: set data.mcp_tools.report_only to true;
#     denials are then audited as would_deny and let through.
#   - Test: onbehalf policy test examples/policies/mcp_tools
package onbehalf.authz

user := input.subject.user if input.subject.user != ""

provider := input.route.provider if is_object(input.route)

mcp := input.mcp if is_object(input.mcp)

report_only := object.get(data.mcp_tools, "report_only", false)

# Methods that only set up, list or keep the session alive.
protocol_methods := {
	"initialize", "server/discover", "ping", "subscriptions/listen",
	"tools/list", "resources/list", "resources/templates/list", "prompts/list",
	"completion/complete", "logging/setLevel",
}

protocol if mcp.kind in {"notification", "response", "stream", "end_session"}

protocol if {
	mcp.kind == "request"
	mcp.method in protocol_methods
}

destructive_patterns := object.get(data.mcp_tools, "destructive_patterns", ["delete_*", "drop_*", "*_admin"])

destructive if {
	some pattern in destructive_patterns
	glob.match(pattern, [], mcp.tool)
}

read_only_prefixes := ["get_", "list_", "search_", "read_"]

read_only if {
	some prefix in read_only_prefixes
	startswith(mcp.tool, prefix)
}

read_only if mcp.tool in object.get(data.mcp_tools.read_only, provider, [])

user_allowed if {
	some pattern in data.mcp_tools.users[user][provider]
	glob.match(pattern, [], mcp.tool)
}

resource_allowed if not data.mcp_tools.resource_prefixes[provider]

resource_allowed if {
	some prefix in data.mcp_tools.resource_prefixes[provider]
	startswith(mcp.resource, prefix)
}

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains "not an MCP route: this policy only decides MCP requests" if not mcp

deny contains msg if {
	mcp.method == "tools/call"
	destructive
	msg := sprintf("tool %s is destructive: agents may not call it", [mcp.tool])
}

deny contains msg if {
	mcp.method == "tools/call"
	not destructive
	not read_only
	not user_allowed
	msg := sprintf("tool %s is not read-only and not on %s's list for %s", [mcp.tool, user, provider])
}

deny contains msg if {
	mcp.method in {"resources/read", "resources/subscribe"}
	not resource_allowed
	msg := sprintf("resource %s is outside the prefixes allowed for %s", [mcp.resource, provider])
}

deny contains msg if {
	mcp.kind == "request"
	not protocol
	not mcp.method in {"tools/call", "resources/read", "resources/subscribe", "resources/unsubscribe", "prompts/get"}
	msg := sprintf("MCP method %s is not allowed", [mcp.method])
}

decision := {"allow": false, "reason": concat("; ", sort(deny)), "report_only": report_only} if {
	count(deny) > 0
} else := {"allow": true, "reason": reason}

reason := "MCP protocol traffic" if protocol
else := sprintf("tool %s is read-only", [mcp.tool]) if read_only
else := sprintf("tool %s is on %s's list", [mcp.tool, user]) if user_allowed
else := sprintf("%s allowed", [mcp.method])
