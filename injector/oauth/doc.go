// Package oauth turns stored OAuth grants into access tokens, refreshing
// them at the provider's token endpoint when they are about to expire, safely
// across several sidecar replicas that share one grant store (DESIGN.md
// section 5).
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
// Concurrency: Provider and Source are safe for concurrent use. A refresh
// runs on a context detached from the caller that started it, so a caller
// giving up does not abort a token-endpoint call whose answer (a rotated
// refresh token) must still be persisted; Source.Drain waits for refreshes
// in flight.
package oauth
