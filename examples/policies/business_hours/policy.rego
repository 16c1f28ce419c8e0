# Unattended tasks are limited to business hours.
#
# What it enforces
#   A task the orchestrator marks as unattended (assertion claim
#   "unattended": true: nobody is watching it run) may act only on a working
#   day between start_hour and end_hour, in the organisation's time zone,
#   and not on a listed holiday. Attended tasks are not restricted by time.
#   Requests without a verified user or a route are denied.
#
#   The clock is input.time (the sidecar's decision time, RFC 3339), not
#   time.now_ns(), so tests can pin it. A malformed time fails closed for
#   unattended tasks.
#
# How to adapt it
#   - Set time_zone (an IANA name), weekdays, hours and holidays in
#     data.json. end_hour is exclusive: 18 means until 17:59:59.
#   - To restrict only some providers, add `route.provider in {...}` to the
#     deny rule.
#   - Test: onbehalf policy test examples/policies/business_hours
package onbehalf.authz

hours := data.business_hours

user := input.subject.user if input.subject.user != ""

route := input.route if is_object(input.route)

unattended if input.subject.claims.unattended == true

now_ns := time.parse_rfc3339_ns(input.time)

local_day := time.weekday([now_ns, hours.time_zone])

local_hour := time.clock([now_ns, hours.time_zone])[0]

local_date := time.format([now_ns, hours.time_zone, "2006-01-02"])

working_time if {
	local_day in hours.weekdays
	not local_date in hours.holidays
	local_hour >= hours.start_hour
	local_hour < hours.end_hour
}

deny contains "no verified user: the request carries no valid assertion" if not user

deny contains msg if {
	not route
	msg := sprintf("no route for host %s", [input.attributes.request.http.host])
}

deny contains msg if {
	unattended
	not working_time
	msg := sprintf(
		"unattended tasks may act only on working days from %02d:00 to %02d:00 (%s)",
		[hours.start_hour, hours.end_hour, hours.time_zone],
	)
}

decision := {"allow": false, "reason": concat("; ", sort(deny))} if {
	count(deny) > 0
} else := {"allow": true, "reason": "allowed"}
