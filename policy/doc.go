// Package policy decides, for each request the sidecar proxies, whether the
// acting user's agent may make it. It embeds OPA: Rego policies are loaded from
// files (with hot reload) or from an OPA bundle server, compiled once into a
// prepared query, and evaluated against an [Input] shaped like the
// opa-envoy-plugin input (so Envoy policies and their tests carry over).
//
// The engine fails closed: a policy that is not loaded yet, an undefined
// result, an evaluation error or a timeout all yield a deny [Decision] whose
// Reason says which. Builtins that reach the network or the OPA runtime
// (http.send, net.lookup_ip_addr, opa.runtime) are removed from the
// capabilities, so a policy using them fails to load.
//
// [Test] runs a policy's own Rego unit tests with `opa test`'s semantics
// (for `onbehalf policy test`; the runner is this package's own, so the
// binary links no Go test code) and [EvalFile] evaluates one input document (for
// `onbehalf policy eval`). The example policy library lives in
// examples/policies.
//
// Concurrency: an [Engine] is safe for concurrent use. [Engine.Decide] reads
// the current prepared query through an atomic pointer and never waits for a
// reload; reloads (file changes, bundle downloads) are serialised on one
// background goroutine per source and swap the pointer only after the new
// policy compiled, passed its own Rego tests and was prepared. A failed reload
// keeps the last good policy.
package policy
