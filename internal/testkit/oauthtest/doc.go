// Package oauthtest runs a real OAuth 2.0 authorization server, built on
// github.com/ory/fosite, for onbehalf's tests (the demo has its own small
// provider in internal/demo, so the production binary links no fosite).
//
// A Server speaks TLS on a loopback port with a certificate from a CA created
// in memory at Start (CACertPEM is what clients must trust) and offers:
//
//   - /authorize: the authorization-code flow with a minimal HTML consent
//     page (client, scopes, a user-name field prefilled from login_hint, and
//     Approve / Deny buttons posting back to /authorize). PKCE with S256 is
//     required for public clients and honoured for confidential ones; the
//     plain method is refused. Any well-formed user name may approve unless
//     Options.Users lists the allowed ones.
//   - /token: authorization_code and refresh_token grants, client
//     authentication by client_secret_basic or client_secret_post. Refresh
//     tokens rotate on every use; presenting a used refresh token again is
//     reuse and revokes the grant's whole token family (every access and
//     refresh token minted from the same consent).
//   - /revoke: RFC 7009 revocation; revoking any token revokes its grant.
//   - /userinfo: GET or POST with a bearer access token → {"sub", "name"}.
//   - /.well-known/oauth-authorization-server: RFC 8414 metadata.
//
// Knobs inject provider failures (SetLatency, FailNext, DropNextResponses,
// SetInvalidClient), Stats counts what clients did, Introspect lets fake
// resource servers check an injected token, and IssueGrant,
// ExpireAccessToken and RevokeUser set up and disturb grants directly.
//
// Anyone who can reach the consent page can approve as any user: the server
// only listens on loopback addresses and must never face a network. No
// token, code or secret is ever logged.
//
// All methods of Server are safe for concurrent use while it serves.
// Operations that read and then change token state (the token endpoint,
// revocation, RevokeUser) run one at a time, which is what makes reuse
// detection exact under concurrent refreshes.
package oauthtest
