// Package oauth turns stored OAuth grants into access tokens, refreshing
// them at the provider's token endpoint when they are about to expire, safely
// across several sidecar replicas that share one grant store
// (docs/design.md#refresh).
//
// A Provider is one configured OAuth provider: its endpoints, the sidecar's
// client credentials and an HTTP client that uses no proxy, verifies TLS and
// follows no redirect. A Source implements injector.Source on top of a
// store.Store and a set of Providers. Its refresh sequence is:
//
//  1. in-process single-flight per (provider, user);
//  2. a short lease on the grant in the store, so that one replica refreshes
//     while the others wait and then use its result;
//  3. a re-read of the grant under the lease (another replica may have
//     refreshed it already);
//  4. one call to the token endpoint with an explicit client
//     authentication style;
//  5. a compare-and-swap write of the new tokens, with an incremented
//     generation, before the new access token is handed out;
//  6. the release of the lease.
//
// Providers rotate refresh tokens and revoke the whole grant when a spent one
// is presented again, so the Source never presents a refresh token twice by
// its own doing: when the provider rotated the token and the write of step 5
// fails, the new tokens stay in memory (and the lease stays held until it
// expires, keeping other replicas off the spent token) and every later call
// for that grant first retries the write; the spent refresh token is never
// sent again.
//
// Failures map to the sentinels of package injector: a grant marked
// reconnect_required or refused with invalid_grant yields
// injector.ErrReconnectRequired (the grant is marked, not deleted, and the
// provider is not asked again); timeouts, connection errors, 429 and 5xx
// yield injector.ErrProviderUnavailable unless the current access token is
// still usable (then it is returned) and never mark a grant; a refused client
// (invalid_client and similar) yields injector.ErrProviderMisconfigured with
// the grant untouched; store failures wrap store.ErrUnavailable.
//
// The connect side of a grant uses the same Provider: AuthCodeURL builds
// the authorization request (PKCE S256, the provider's scope separator and
// authorization parameters), Exchange trades the code for tokens (invalid
// codes wrap ErrInvalidCode, other failures the injector sentinels above),
// Account looks up the provider account the grant belongs to, and Revoke
// and RevokeGrant revoke tokens (RFC 7009 by default; ErrNoRevocation when
// the provider has no endpoint; transient failures wrap
// injector.ErrProviderUnavailable, refusals ErrRevocationRefused).
//
// The provider catalog (Presets, LookupPreset, docs/providers.md) describes
// widely used providers: endpoints, default scopes and routes, client
// authentication, PKCE, the account field and notes written from each
// provider's documentation. A ProviderConfig naming a preset takes every
// field it leaves empty from it (ProviderConfig.Resolve) and also brings the
// preset's quirks, an internal per-preset description of where the provider
// departs from the RFCs: Slack's user_scope parameter, authed_user token and
// "ok": false errors answered with HTTP 200; GitHub's error codes with HTTP
// 200 and its DELETE of the app authorization; JSON token requests (Notion,
// Atlassian); Figma's separate refresh endpoint; bearer-authenticated
// revocation (Slack, Dropbox); GraphQL or introspection account lookups
// (Linear, HubSpot). Custom providers, without a preset, get the standard
// behaviour.
//
// Concurrency: Provider and Source are safe for concurrent use. A refresh
// runs on a context detached from the caller that started it, so a caller
// giving up does not abort a token-endpoint call whose answer (a rotated
// refresh token) must still be persisted; Source.Drain waits for refreshes
// in flight.
package oauth
