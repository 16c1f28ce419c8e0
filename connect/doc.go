// Package connect is the user-facing connect server (`onbehalf
// connect-server`): the web pages where a person connects an app (an OAuth
// provider) so that agents acting for them can use it through the sidecar,
// sees which apps are connected, and revokes them; plus a JSON API for the
// same and an admin API (docs/security.md, invariants 9 and 10).
//
// # Arriving
//
// A person arrives in one of two ways, as the deployment chooses:
//
//   - with a connect link: a signed, single-use, short-lived JWT minted by
//     the orchestrator (MintLink), whose sub is the user and whose
//     "provider" claim names the app, opened as
//     /connect/{provider}?link=JWT (LinkURL);
//   - by signing in with the company identity provider (OpenID Connect),
//     for example from the connect_url of a sidecar error.
//
// With both configured, the identity provider says who the browser's
// person is, and a connect link must name that same person: a link sent to
// someone else is refused and nothing is stored. With links only, the
// link's user is the browser's user, and the confirmation page names them
// before anything leaves for the provider; a browser already signed in as
// someone else is not switched over: the link stops on a page naming both
// ("this link is for bob; you are signed in as alice"), nothing is stored,
// and signing out is the way on. A link is used up when the
// person confirms, not when it is fetched, so that the previews chat apps
// and mail scanners fetch do not spend it.
//
// # Connecting
//
// The confirmation page (POST with a CSRF token) starts the authorization
// code flow with PKCE (S256) at the provider. The state is random, bound to
// the browser's session cookie, expires after state_ttl and is single-use;
// the callback refuses a missing, unknown, foreign, expired or replayed
// state, and refuses when the browser's verified user is not the one the
// flow was started for. The code is exchanged, the provider account is read
// from the provider's identity endpoint where it has one, and the grant is
// stored by compare-and-swap (a reconnection replaces the grant with the
// next generation). Each outcome is audited; people see friendly pages that
// never quote provider answers or tokens.
//
// Redirect URIs are exact (external_url + "/callback", and
// external_url + "/login/callback" at the identity provider); return_to is
// honoured only for paths on this server. Every response forbids framing,
// caching and Referer; pages load nothing from other origins and run one
// script of this server's own (app.js, which shows times in the browser's
// time zone; the pages work without it).
//
// # Pages
//
// The confirmation page names the person, the agent that asked (a link's
// act.sub) and what the app will allow, in plain words where the
// provider's preset or the configuration describes a scope. The apps page
// lists each connection with its status (active, reconnect needed), when
// it was connected, when an agent last used it and which one (from the
// store's activity records, which the sidecars keep), and apps revoked in
// the last 30 days. Message pages are errors or notices and always offer
// the next step as a link where there is one. Templates and the stylesheet
// are in templates/; the browser tests check every page with axe-core at
// desktop and phone widths.
//
// # Sessions
//
// The session lives in one cookie sealed with AES-256-GCM under a key
// derived from session_key_file: HttpOnly, SameSite=Lax, and with https
// Secure with the __Host- prefix. It carries the verified user, the CSRF
// token and the flows in flight, so any replica sharing the key file
// serves any request. Single use of links and states is enforced per
// process and, across replicas, through leases in the shared grant store
// (see onceSet).
//
// # Revoking
//
// Revoker deletes a grant, asks the provider's revocation endpoint to
// revoke it, and audits both outcomes; the apps page, the JSON API, the
// admin API and `onbehalf grants revoke` all use it.
//
// Concurrency: Server and Revoker are safe for concurrent use. The server
// runs one goroutine per request (net/http) and the Revoker one background
// goroutine for retries, stopped by Shutdown (or Revoker.Close).
package connect
