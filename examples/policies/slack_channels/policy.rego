# Slack posting only to the channels the task's assertion names.
#
# What it enforces
#   On the Slack route, Web API methods that write to a channel (posting,
#   updating, deleting messages, reactions, pins, channel changes) are
#   allowed only when every channel the request names is listed in the
#   assertion's "slack_channels" claim (channel ids such as "C0123ABC").
#   A task without the claim cannot write to any channel. Other Slack
#   methods, and other providers, are allowed for a verified user on a route.
#
#   Where the channel comes from: Slack reads method arguments from the query
#   string and from the body. onbehalf does not pass request bodies to policy
#   (only input.parsed_body, if a future input carries it, is checked too),
#   so a channel hidden in the body could not be checked. This policy
#   therefore requires the channel in the query string and refuses a channel
#   write that carries a body it cannot see. Agents call, for example:
#     POST https://slack.com/api/chat.postMessage?channel=C0123ABC&text=hello
#
# How to adapt it
#   - The orchestrator puts the channels the task may write to in the
#     assertion: {"slack_channels": ["C0123ABC"]}.
#   - Extend channel_methods with other methods that take a "channel".
#   - Test: onbehalf policy test examples/policies/slack_channels
package onbehalf.authz

# Slack Web API methods that act on the channel named by their "channel"
# argument.
channel_methods := {
	"chat.postMessage", "chat.postEphemeral", "chat.scheduleMessage",
	"chat.meMessage", "chat.update", "chat.delete",
	"reactions.add", "reactions.remove", "pins.add", "pins.remove",
	"conversations.invite", "conversations.kick", "conversations.archive",
	"conversations.rename", "conversations.setTopic", "conversations.setPurpose",
}

user := input.subject.user if input.subject.user != ""

route := input.route if is_object(input.route)

headers := input.attributes.request.http.headers

# The Slack method of a Web API call: /api/<method>.
slack_method := input.parsed_path[1] if {
	route.provider == "slack"
	input.parsed_path[0] == "api"
	count(input.parsed_path) == 2
}

channel_write if slack_method in channel_methods

# Channels the request names, in the query string or a visible body.
requested contains c if some c in input.parsed_query.channel

requested contains input.parsed_body.channel if is_string(input.parsed_body.channel)

allowed_channels contains c if some c in input.subject.claims.slack_channels

# The request has a body the policy cannot see.
hidden_body if {
	not input.parsed_body
	to_number(headers["content-length"]) > 0
}

hidden_body if {
	not input.parsed_body
	headers["transfer-encoding"]
}

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains msg if {
	not route
	msg := sprintf("no route for host %s", [input.attributes.request.http.host])
}

deny contains msg if {
	channel_write
	count(requested) == 0
	msg := sprintf("slack %s must name its channel in the query string", [slack_method])
}

deny contains msg if {
	channel_write
	hidden_body
	msg := sprintf("slack %s carries a body the policy cannot check; pass the arguments in the query string", [slack_method])
}

deny contains msg if {
	channel_write
	some c in requested
	not c in allowed_channels
	msg := sprintf("the task may not write to slack channel %s", [c])
}

decision := {"allow": false, "reason": concat("; ", sort(deny))} if {
	count(deny) > 0
} else := {"allow": true, "reason": "allowed"}
