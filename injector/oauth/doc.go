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
//  1. in-process single flight per (provider, user);
//  2. a short lease on the grant in the store, renewed by a heartbeat for as
//     long as the refresh and its write are in flight, so that one replica
//     refreshes while the others wait and then use its result;
//  3. a re-read of the grant under the lease (another replica may have
//     refreshed it already);
//  4. one call to the token endpoint with an explicit client
//     authentication style;
//  5. the new grant written to the local journal (sealed, fsync'd) before
//     anything else, then a compare-and-swap write to the store with an
//     incremented generation; a write the store does not take is retried
//     in the background, with the lease kept alive, while the journalled
//     access token is already used;
//  6. the release of the lease.
//
// Providers rotate refresh tokens and revoke the whole grant when a spent one
// is presented again, so the Source presents a refresh token at most once
// while it can know its fate:
//
//   - A refresh that was sent is never abandoned with its caller: it runs
//     detached, and its answer is awaited up to RefreshConfig.AnswerDeadline,
//     while the callers give up after the provider's timeout.
//   - Rotated tokens are durable (journalled) before they are used or
//     written; a restarted sidecar writes what its journal holds into the
//     store before serving (Recover).
//   - No replica presents a refresh token while another holds the lease on
//     it: a live holder renews its lease. A lease that ran out on the same
//     generation is left to its holder for RefreshConfig.TakeoverAfter (it
//     may be paused, not dead), unless the provider's refresh_reuse_grace
//     still covers the holder's presentation; then a peer presents the token
//     once, and if the provider refuses it the grant is marked
//     reconnect_required with the outcome refresh_lost.
//   - A request that was sent but never answered leaves its lease to run
//     out under the same rules (within the provider's reuse grace it is
//     presented again at once).
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
// refresh token) must still be persisted. Source.Drain waits for refreshes
// in flight and deferred writes; Source.Close stops the heartbeats and
// background writes.
package oauth
