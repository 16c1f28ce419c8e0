//go:build integration

package vault

import "testing"

// benchGet measures Get of one stored grant against the shared real Vault
// over loopback: one KV read, plus one Transit decrypt with transit on.
func benchGet(b *testing.B, cfg Config) {
	s := open(b, cfg)
	g := canaryGrant("slack", "alice")
	if _, err := s.Put(ctx(b), g, 0); err != nil {
		b.Fatal(err)
	}
	c := ctx(b)
	b.ReportAllocs()
	for b.Loop() {
		got, _, err := s.Get(c, "slack", "alice")
		if err != nil {
			b.Fatal(err)
		}
		if got.AccessToken != g.AccessToken {
			b.Fatal("access token mismatch")
		}
	}
}

func BenchmarkVaultGet(b *testing.B) {
	benchGet(b, tokenConfig(b, shared))
}

func BenchmarkVaultGetTransit(b *testing.B) {
	benchGet(b, withTransit(tokenConfig(b, shared)))
}

// BenchmarkVaultPut measures a CAS update: one KV read and one KV write.
func BenchmarkVaultPut(b *testing.B) {
	s := open(b, tokenConfig(b, shared))
	g := canaryGrant("slack", "alice")
	v, err := s.Put(ctx(b), g, 0)
	if err != nil {
		b.Fatal(err)
	}
	c := ctx(b)
	b.ReportAllocs()
	for b.Loop() {
		if v, err = s.Put(c, g, v); err != nil {
			b.Fatal(err)
		}
	}
}
