// Package identity verifies the signed assertion (a JWT) that names the user
// an agent acts for, and turns it into a Subject (docs/design.md#pipeline,
// step 2; docs/security.md, invariant 8).
//
// The assertion comes from one of several sources (docs/design.md#identity-sources):
// the orchestrator (its issuers, static keys and JWKS), or an OpenID Connect
// issuer listed in Config.IdPs, whose keys come from its discovery document,
// whose tokens must carry an accepted typ (ID tokens, RFC 9068 access
// tokens, ID-JAGs) and whose claims are mapped to the user and the agent.
// The token's unverified iss, read by the pre-parser, only picks the source;
// that source's keys and rules then verify it. A Subject from an IdP keeps
// its token, for a token exchange, and never prints it.
//
// Verification runs in two stages. A pre-parser (preparse) looks at the raw
// assertion before any signature work: it enforces the size limit first, then
// exactly three base64url segments, then reads the bounded header, checks alg
// against the allow-list and refuses the jku, x5u, jwk and x5c headers and
// any crit header, and refuses a duplicate member anywhere in the header or
// the claims (encoding/json would silently keep the last one). Only then does
// github.com/golang-jwt/jwt/v5 parse and verify the token, with the key chosen
// by this package: a key is bound to exactly one algorithm, so an HS256
// token can never be checked with a public key's bytes. Keys come from PEM
// files in the configuration or from a JWKS URL (github.com/MicahParks/jwkset
// for JWK decoding, github.com/MicahParks/keyfunc/v3 for kid lookup), which is
// refreshed periodically and, when a token names an unknown kid, at most once
// per configured interval.
//
// Every failure wraps ErrMissing or ErrInvalid with a short reason meant for a
// human ("token expired", "audience mismatch"); no error ever contains the
// assertion or any part of it.
//
// Concurrency: a Verifier is safe for concurrent use by many goroutines. New
// starts one background goroutine per JWKS URL or IdP; Close stops them. Mint, LoadSigningKey and GenerateKeyPair are plain functions without
// shared state.
package identity
