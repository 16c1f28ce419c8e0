# An opa-envoy-plugin policy, running unchanged in onbehalf.
#
# What it enforces
#   Written for Envoy's external authorization with opa-envoy-plugin: the
#   package is envoy.authz and the rule is the boolean `allow` over
#   input.attributes.request.http and input.parsed_path, exactly as in the
#   plugin's documentation. onbehalf's input is a superset of the plugin's,
#   so the same file (and its tests) work here:
#     - anyone may read the product catalogue (GET /api/v1/products...);
#     - only the payments team (x-team header) may create orders
#       (POST /api/v1/orders with a JSON body);
#     - anything else is denied.
#
#   It does not look at the Authorization header: onbehalf never puts
#   credentials in the input (identity is input.subject instead), so a
#   policy that decodes a JWT from the header would need porting.
#
# How to adapt it
#   - Point the sidecar at the boolean rule:
#       policy:
#         paths: [examples/policies/envoy]
#         query: data.envoy.authz.allow
#     A false or undefined allow denies with the reason "denied by policy".
#   - Test: onbehalf policy test examples/policies/envoy (or opa test).
package envoy.authz

default allow := false

http_request := input.attributes.request.http

allow if {
	http_request.method == "GET"
	input.parsed_path[0] == "api"
	input.parsed_path[1] == "v1"
	input.parsed_path[2] == "products"
}

allow if {
	http_request.method == "POST"
	input.parsed_path == ["api", "v1", "orders"]
	http_request.headers["x-team"] == "payments"
	startswith(http_request.headers["content-type"], "application/json")
}
