package onbehalf.authz_test

import data.onbehalf.authz

request(method, provider, segments) := {
	"attributes": {
		"request": {"http": {
			"method": method,
			"host": "api.example",
			"path": concat("/", ["", concat("/", segments)]),
			"scheme": "https",
			"headers": {},
		}},
		"source": {"address": "127.0.0.1:40000"},
	},
	"parsed_path": segments,
	"parsed_query": {},
	"subject": {"user": "alice", "agent": "agent-7", "issuer": "https://orchestrator.example", "claims": {}},
	"route": {"provider": provider, "host": "api.example", "name": provider},
	"time": "2026-06-18T09:00:00Z",
}

test_reads_allowed if {
	every m in ["GET", "HEAD", "OPTIONS", "get"] {
		authz.decision.allow with input as request(m, "github", ["repos", "acme", "app"])
	}
}

test_named_write_allowed if {
	authz.decision.allow with input as request("POST", "slack", ["api", "chat.postMessage"])
	authz.decision.allow with input as request("POST", "github", ["repos", "acme", "app", "issues", "12", "comments"])
}

test_unnamed_write_denied if {
	d := authz.decision with input as request("DELETE", "github", ["repos", "acme", "app"])
	not d.allow
	d.reason == "DELETE /repos/acme/app is a write that is not a named write endpoint of github"
	d.report_only == false
}

test_named_path_with_other_method_denied if {
	not authz.decision.allow with input as request("PUT", "slack", ["api", "chat.postMessage"])
}

test_write_paths_match_strictly if {
	not authz.decision.allow with input as request("POST", "github", ["repos", "", "app", "issues"])
	not authz.decision.allow with input as request("POST", "github", ["repos", "acme", "app", "issues", ""])
	not authz.decision.allow with input as request("POST", "github", ["repos", "acme", "app", "issues", "extra"])
	not authz.decision.allow with input as request("POST", "github", ["repos", "acme", "app", "pulls"])
}

test_write_endpoints_are_per_provider if {
	not authz.decision.allow with input as request("POST", "google", ["api", "chat.postMessage"])
}

test_report_mode_marks_denials if {
	d := authz.decision with input as request("DELETE", "github", ["repos", "acme", "app"])
		with data.read_only.report_only as true
	not d.allow
	d.report_only == true
}

test_no_route_denied if {
	d := authz.decision with input as object.union(request("GET", "github", ["user"]), {"route": null})
	not d.allow
	d.reason == "no route for host api.example"
}
