// Package idptest runs, for onbehalf's tests, the two servers of an
// enterprise-managed authorization set-up, both built on github.com/ory/fosite
// and speaking TLS on loopback with certificates from in-memory CAs:
//
//   - IdP, a company identity provider: OpenID Connect discovery and a JWKS
//     (keys can be rotated while it serves), ID tokens and RFC 9068 access
//     tokens minted for tests (IDToken, AccessToken, Sign), and a token
//     endpoint with an RFC 8693 token-exchange handler that issues Identity
//     Assertion JWT Authorization Grants (ID-JAGs,
//     draft-ietf-oauth-identity-assertion-authz-grant). fosite has no token
//     exchange upstream; the handler here implements fosite's
//     TokenEndpointHandler interface, so fosite still does client
//     authentication, form parsing and error responses.
//   - AppAS, an app's authorization server: RFC 7523 JWT bearer grants with
//     fosite's rfc7523 handler, behind a check of what the draft adds for
//     ID-JAGs (the oauth-id-jag+jwt type, the client_id claim naming the
//     authenticated client, scopes within the grant's), with the IdP's keys
//     fetched from its JWKS over TLS; it issues opaque access tokens that
//     Introspect checks, as a test API would.
//
// Knobs inject the failures the sidecar must survive (latency, failed
// requests, an IdP policy refusing a user, an app without JWT bearer
// support) and Stats count what clients did. No token or secret is ever
// logged. Both servers only listen on loopback addresses.
//
// All methods are safe for concurrent use while the servers run.
package idptest
