package onbehalf.authz_test

import data.onbehalf.authz

at(time, claims) := {
	"attributes": {
		"request": {"http": {"method": "GET", "host": "graph.microsoft.com", "path": "/v1.0/me/events", "scheme": "https", "headers": {}}},
		"source": {"address": "127.0.0.1:40000"},
	},
	"parsed_path": ["v1.0", "me", "events"],
	"parsed_query": {},
	"subject": {"user": "alice", "agent": "nightly-digest", "issuer": "https://orchestrator.example", "claims": claims},
	"route": {"provider": "microsoft", "host": "graph.microsoft.com", "name": "graph"},
	"time": time,
}

unattended := {"unattended": true}

# 2026-06-18 is a Thursday; Berlin is UTC+2 in June.
test_unattended_in_hours_allowed if {
	authz.decision.allow with input as at("2026-06-18T06:00:00Z", unattended) # 08:00 Berlin
	authz.decision.allow with input as at("2026-06-18T15:59:59Z", unattended) # 17:59 Berlin
}

test_unattended_out_of_hours_denied if {
	d := authz.decision with input as at("2026-06-18T05:59:00Z", unattended) # 07:59 Berlin
	not d.allow
	d.reason == "unattended tasks may act only on working days from 08:00 to 18:00 (Europe/Berlin)"
	not authz.decision.allow with input as at("2026-06-18T16:00:00Z", unattended) # 18:00 Berlin
}

test_unattended_weekend_denied if {
	not authz.decision.allow with input as at("2026-06-20T10:00:00Z", unattended) # Saturday
}

test_unattended_holiday_denied if {
	not authz.decision.allow with input as at("2026-12-24T10:00:00Z", unattended) # Thursday, listed
}

test_time_zone_decides_the_day if {
	# Sunday 23:30 UTC is already Monday 00:30 in Berlin, but before hours;
	# Monday 06:30 UTC is 08:30 in Berlin (UTC+2 in June).
	not authz.decision.allow with input as at("2026-06-21T23:30:00Z", unattended)
	authz.decision.allow with input as at("2026-06-22T06:30:00Z", unattended)
}

test_attended_any_time_allowed if {
	authz.decision.allow with input as at("2026-06-20T03:00:00Z", {})
	authz.decision.allow with input as at("2026-06-20T03:00:00Z", {"unattended": false})
}

test_malformed_time_fails_closed_for_unattended if {
	not authz.decision.allow with input as at("yesterday", unattended)
}
