package envoy.authz_test

import data.envoy.authz

request(method, path, headers) := {
	"attributes": {"request": {"http": {
		"method": method,
		"host": "shop.example",
		"path": path,
		"scheme": "https",
		"headers": headers,
	}}},
	"parsed_path": split(trim_left(split(path, "?")[0], "/"), "/"),
	"parsed_query": {},
}

test_catalogue_readable if {
	authz.allow with input as request("GET", "/api/v1/products", {})
	authz.allow with input as request("GET", "/api/v1/products/42?fields=name", {})
}

test_orders_by_payments_team if {
	authz.allow with input as request("POST", "/api/v1/orders", {"x-team": "payments", "content-type": "application/json; charset=utf-8"})
}

test_orders_by_other_team_denied if {
	not authz.allow with input as request("POST", "/api/v1/orders", {"x-team": "marketing", "content-type": "application/json"})
	not authz.allow with input as request("POST", "/api/v1/orders", {"content-type": "application/json"})
}

test_everything_else_denied if {
	not authz.allow with input as request("DELETE", "/api/v1/products/42", {})
	not authz.allow with input as request("GET", "/api/v2/products", {})
	not authz.allow with input as request("GET", "/", {})
}
