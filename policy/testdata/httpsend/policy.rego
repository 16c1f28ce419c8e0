# A policy that reaches the network: the engine must refuse to load it.
package onbehalf.authz

decision := {"allow": resp.status_code == 200} if {
	resp := http.send({"method": "GET", "url": "http://127.0.0.1:1/allow"})
}
