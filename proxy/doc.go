// Package proxy is the sidecar's request pipeline: it accepts plain-HTTP and
// CONNECT requests from the agent, intercepts tunnels to routed hosts with
// leaf certificates from the sidecar's own CA, binds every request inside a
// tunnel to the CONNECT target, identifies the acting user, asks policy,
// fetches the user's token, injects it, forwards over verified TLS and
// writes one audit record per request.
//
// The listener is a github.com/elazarl/goproxy server, which parses
// CONNECT and plain proxy requests. Intercepted tunnels are not served by
// goproxy's own MITM loop: it has no read deadlines, no header limits, does
// not check SNI, rebuilds the URL from the Host header, and lets net/http
// silently repair ambiguous framing. The proxy therefore takes the tunnel
// over (goproxy.ConnectHijack) and runs its own strict HTTP/1.1 loop there.
//
// Upstream, a request whose body is in memory (no body, or one of at most
// 64 KiB, which is read before forwarding) is sent by the proxy's own
// HTTP/1.1 client on pooled, verified TLS connections, from the tunnel's
// goroutine; requests with streamed bodies, and all requests when upstream
// HTTP/2 is on, go through one net/http.Transport. Both dial through the
// egress guard and verify certificates the same way.
//
// A Server is safe for concurrent use; all its dependencies must be too.
package proxy
