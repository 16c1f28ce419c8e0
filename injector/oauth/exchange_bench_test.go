package oauth

import (
	"context"
	"testing"
)

// BenchmarkExchangeCold is one token exchange with nothing cached: the
// RFC 8693 call at the IdP (which verifies the presented ID token and signs
// an ID-JAG) and the RFC 7523 call at the app's authorization server (which
// fetches nothing, verifies the ID-JAG and issues an access token), both
// over TLS on loopback to the fosite test servers, connections kept alive.
// It is the latency a user's first request to an exchange provider adds,
// minus the network to real servers; the servers' own work is in it.
func BenchmarkExchangeCold(b *testing.B) {
	w := newXWorld(b, nil)
	e := w.exchanger(b, ExchangeOptions{CacheTTL: -1, OnExchange: func(ExchangeEvent) {}})
	req := w.request(testUser, "JWT", w.idToken(b, testUser))
	ctx := context.Background()
	if _, err := e.Token(ctx, req); err != nil { // warm: connections, the server's copy of the IdP keys
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Token(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExchangeCached is the steady state: the user's exchanged token
// is served from the exchanger's cache. Compare with BenchmarkTokenValid
// (a stored grant, one store read) and injector's BenchmarkCachedSourceHit.
func BenchmarkExchangeCached(b *testing.B) {
	w := newXWorld(b, nil)
	e := w.exchanger(b, ExchangeOptions{OnExchange: func(ExchangeEvent) {}})
	req := w.request(testUser, "JWT", w.idToken(b, testUser))
	ctx := context.Background()
	if _, err := e.Token(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Token(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
