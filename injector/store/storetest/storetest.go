// Package storetest is the conformance suite every store.Store
// implementation must pass: the embedded store runs it in its own tests, and
// the Vault store runs it against a real Vault server. The suite pins the
// semantics the token sources rely on (versions and compare-and-swap, delete
// and recreate, listing without tokens, name validation first, leases).
//
// Run is safe to call from any test; its subtests run one after another and
// each uses a fresh store from newStore, but several subtests start
// goroutines against that store to check concurrent writers.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Suite parameters.
const (
	// concurrentWriters is the number of goroutines racing on one grant or
	// lease: enough to expose a read-then-write race, few enough for a store
	// that fsyncs every write to finish quickly.
	concurrentWriters = 20
	// incrementsPerWriter is how many successful read-modify-write cycles
	// each writer performs in the lost-update test.
	incrementsPerWriter = 3
	// shortTTL is the lease lifetime used to test expiry; expiredWait is how
	// long the suite sleeps to be sure it has passed on a loaded machine.
	shortTTL    = 100 * time.Millisecond
	expiredWait = 300 * time.Millisecond
	// longTTL is a lease lifetime that cannot run out during a test.
	longTTL = time.Minute
	// callTimeout bounds each store call so a hung store fails the test
	// instead of stalling it.
	callTimeout = 30 * time.Second
)

// Run runs the conformance suite. newStore must return a new, empty store
// and register its cleanup (Close, removing files, servers) with t.Cleanup;
// it is called once per subtest, with the subtest's t.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutCreate", testPutCreate},
		{"PutStaleCAS", testPutStaleCAS},
		{"PutCopiesInput", testPutCopiesInput},
		{"ConcurrentCASOneWinnerPerVersion", testConcurrentCASOneWinner},
		{"ConcurrentIncrementsNoLostUpdate", testConcurrentIncrements},
		{"DeleteAndRecreate", testDeleteAndRecreate},
		{"ListFiltersAndBlanksTokens", testList},
		{"InvalidNamesRejectedFirst", testInvalidNames},
		{"InvalidArguments", testInvalidArguments},
		{"TokensRoundTrip", testTokensRoundTrip},
		{"LeaseAcquireHeldRelease", testLeaseAcquireHeldRelease},
		{"LeaseExpiredTakeover", testLeaseExpiredTakeover},
		{"LeaseConcurrentAcquireOneWinner", testLeaseConcurrentAcquire},
		{"LeaseRecordsRequest", testLeaseRecordsRequest},
		{"LeaseRenew", testLeaseRenew},
		{"LeaseTakeOverPolicy", testLeaseTakeOverPolicy},
		{"LeaseConcurrentRenewAndTakeover", testLeaseRenewTakeoverRace},
		{"Revocations", testRevocations},
		{"CancelledContext", testCancelledContext},
		{"Close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

// ctx returns a context bounded by callTimeout.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return c
}

// sample returns a fully populated grant for provider/user whose tokens
// carry marker, so different writers' grants are distinguishable.
func sample(provider, user, marker string) *store.Grant {
	return &store.Grant{
		Provider:        provider,
		User:            user,
		AccessToken:     "at-" + marker + "-" + provider + "-" + user,
		RefreshToken:    "rt-" + marker + "-" + provider + "-" + user,
		TokenType:       "Bearer",
		Expiry:          time.Date(2030, 6, 18, 6, 0, 0, 123456789, time.UTC),
		Scopes:          []string{"chat:write", "channels:read"},
		Status:          store.StatusActive,
		ConnectedAt:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		ProviderAccount: "U" + marker,
		Generation:      1,
		IssuedAt:        time.Date(2030, 6, 18, 5, 0, 0, 5, time.UTC),
	}
}

// put writes g with cas and fails the test on error.
func put(t *testing.T, s store.Store, g *store.Grant, cas store.Version) store.Version {
	t.Helper()
	v, err := s.Put(ctx(t), g, cas)
	if err != nil {
		t.Fatalf("Put(%s/%s, cas %d): %v", g.Provider, g.User, cas, err)
	}
	if v == 0 {
		t.Fatalf("Put(%s/%s, cas %d) returned version 0; want non-zero", g.Provider, g.User, cas)
	}
	return v
}

// mustGet reads a grant and fails the test on error.
func mustGet(t *testing.T, s store.Store, provider, user string) (*store.Grant, store.Version) {
	t.Helper()
	g, v, err := s.Get(ctx(t), provider, user)
	if err != nil {
		t.Fatalf("Get(%s/%s): %v", provider, user, err)
	}
	return g, v
}

// wantGrant checks that the stored grant equals want at version wantV.
func wantGrant(t *testing.T, s store.Store, want *store.Grant, wantV store.Version) {
	t.Helper()
	got, v := mustGet(t, s, want.Provider, want.User)
	if diff := cmp.Diff(want, got); diff != "" {
		// The diff may show tokens; these are test values, never real ones.
		t.Errorf("Get(%s/%s) grant mismatch (-want +got):\n%s", want.Provider, want.User, diff)
	}
	if v != wantV {
		t.Errorf("Get(%s/%s) version = %d; want %d", want.Provider, want.User, v, wantV)
	}
}

func testGetMissing(t *testing.T, s store.Store) {
	g, v, err := s.Get(ctx(t), "slack", "alice")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get on empty store: err = %v; want ErrNotFound", err)
	}
	if g != nil || v != 0 {
		t.Errorf("Get on empty store = (%v, %d); want (nil, 0)", g, v)
	}
	put(t, s, sample("slack", "bob", "x"), 0)
	for _, pu := range [][2]string{{"slack", "alice"}, {"github", "bob"}, {"slack", "bob2"}, {"slack", "bo"}} {
		if _, _, err := s.Get(ctx(t), pu[0], pu[1]); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%s/%s) with only slack/bob stored: err = %v; want ErrNotFound", pu[0], pu[1], err)
		}
	}
}

func testPutCreate(t *testing.T, s store.Store) {
	g := sample("slack", "alice", "one")
	v := put(t, s, g, 0)
	wantGrant(t, s, g, v)

	if _, err := s.Put(ctx(t), sample("slack", "alice", "two"), 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second Put with cas 0: err = %v; want ErrConflict", err)
	}
	wantGrant(t, s, g, v)
}

func testPutStaleCAS(t *testing.T, s store.Store) {
	g1 := sample("slack", "alice", "one")
	v1 := put(t, s, g1, 0)
	g2 := sample("slack", "alice", "two")
	g2.Generation = 2
	v2 := put(t, s, g2, v1)
	if v2 <= v1 {
		t.Fatalf("version after update = %d; want greater than %d", v2, v1)
	}
	wantGrant(t, s, g2, v2)

	for _, cas := range []store.Version{v1, v2 + 1, v2 + 1000} {
		if _, err := s.Put(ctx(t), sample("slack", "alice", "stale"), cas); !errors.Is(err, store.ErrConflict) {
			t.Errorf("Put with cas %d (stored %d): err = %v; want ErrConflict", cas, v2, err)
		}
	}
	wantGrant(t, s, g2, v2)

	// A non-zero cas on a missing grant conflicts and creates nothing.
	if _, err := s.Put(ctx(t), sample("slack", "carol", "x"), v2); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Put of missing grant with cas %d: err = %v; want ErrConflict", v2, err)
	}
	if _, _, err := s.Get(ctx(t), "slack", "carol"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after conflicting Put of missing grant: err = %v; want ErrNotFound", err)
	}
}

func testPutCopiesInput(t *testing.T, s store.Store) {
	g := sample("slack", "alice", "one")
	want := g.Clone()
	v := put(t, s, g, 0)
	g.Scopes[0] = "admin"
	g.AccessToken = "changed"
	wantGrant(t, s, want, v)

	got, _ := mustGet(t, s, "slack", "alice")
	got.Scopes[0] = "admin"
	got.RefreshToken = "changed"
	wantGrant(t, s, want, v)
}

// result is one goroutine's outcome.
type result struct {
	marker string
	v      store.Version
	err    error
}

// race runs fn in concurrentWriters goroutines released together.
func race(fn func(i int) result) []result {
	out := make([]result, concurrentWriters)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range concurrentWriters {
		wg.Go(func() {
			<-start
			out[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return out
}

func testConcurrentCASOneWinner(t *testing.T, s store.Store) {
	cur := sample("slack", "alice", "base")
	v := put(t, s, cur, 0)
	const rounds = 3
	c := ctx(t)
	for round := range rounds {
		results := race(func(i int) result {
			m := fmt.Sprintf("r%dw%d", round, i)
			g := sample("slack", "alice", m)
			g.Generation = int64(round + 2)
			nv, err := s.Put(c, g, v)
			return result{marker: m, v: nv, err: err}
		})
		var winners []result
		for _, r := range results {
			switch {
			case r.err == nil:
				winners = append(winners, r)
			case !errors.Is(r.err, store.ErrConflict):
				t.Errorf("round %d writer %s: err = %v; want nil or ErrConflict", round, r.marker, r.err)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d writers won the CAS on version %d; want exactly 1", round, len(winners), v)
		}
		w := winners[0]
		if w.v <= v {
			t.Fatalf("round %d: winner's version %d; want greater than %d", round, w.v, v)
		}
		want := sample("slack", "alice", w.marker)
		want.Generation = int64(round + 2)
		wantGrant(t, s, want, w.v)
		v = w.v
	}
}

func testConcurrentIncrements(t *testing.T, s store.Store) {
	base := sample("slack", "alice", "base")
	base.Generation = 0
	put(t, s, base, 0)
	var mu sync.Mutex
	won := map[store.Version]int{}
	c := ctx(t)
	results := race(func(i int) result {
		for done := 0; done < incrementsPerWriter; {
			g, v, err := s.Get(c, "slack", "alice")
			if err != nil {
				return result{err: fmt.Errorf("get: %w", err)}
			}
			g.Generation++
			nv, err := s.Put(c, g, v)
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			if err != nil {
				return result{err: fmt.Errorf("put: %w", err)}
			}
			mu.Lock()
			won[nv]++
			mu.Unlock()
			done++
		}
		return result{}
	})
	for i, r := range results {
		if r.err != nil {
			t.Errorf("writer %d: %v", i, r.err)
		}
	}
	g, _ := mustGet(t, s, "slack", "alice")
	if want := int64(concurrentWriters * incrementsPerWriter); g.Generation != want {
		t.Errorf("generation after %d increments = %d; want %d (lost updates)", want, g.Generation, want)
	}
	if len(won) != concurrentWriters*incrementsPerWriter {
		t.Errorf("distinct winning versions = %d; want %d", len(won), concurrentWriters*incrementsPerWriter)
	}
	for v, n := range won {
		if n != 1 {
			t.Errorf("version %d returned to %d writers; want 1", v, n)
		}
	}
}

func testDeleteAndRecreate(t *testing.T, s store.Store) {
	if err := s.Delete(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete of missing grant: err = %v; want ErrNotFound", err)
	}
	g := sample("slack", "alice", "one")
	v1 := put(t, s, g, 0)
	v2 := put(t, s, g, v1)
	other := sample("slack", "bob", "b")
	vb := put(t, s, other, 0)

	if err := s.Delete(ctx(t), "slack", "alice"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := s.Get(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete: err = %v; want ErrNotFound", err)
	}
	if err := s.Delete(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second Delete: err = %v; want ErrNotFound", err)
	}
	wantGrant(t, s, other, vb)
	if _, err := s.Put(ctx(t), g, v2); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Put with pre-delete version %d: err = %v; want ErrConflict", v2, err)
	}

	g2 := sample("slack", "alice", "two")
	v3 := put(t, s, g2, 0)
	wantGrant(t, s, g2, v3)
	if _, err := s.Put(ctx(t), g, 0); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Put with cas 0 after recreate: err = %v; want ErrConflict", err)
	}
	wantGrant(t, s, g2, v3)
}

func testList(t *testing.T, s store.Store) {
	got, err := s.List(ctx(t), "")
	if err != nil {
		t.Fatalf("List on empty store: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("List on empty store returned %d grants; want 0", len(got))
	}
	// "slack-x" and "slackx" share a prefix with "slack": a prefix scan that
	// forgets the separator would return them for "slack".
	names := [][2]string{
		{"slack", "bob"}, {"slack", "alice"}, {"slack-x", "alice"}, {"slackx", "alice"},
		{"github", "alice"}, {"slack", "alice.b"}, {"s", "zed"},
	}
	all := map[string]*store.Grant{}
	for _, n := range names {
		g := sample(n[0], n[1], "m")
		put(t, s, g, 0)
		all[n[0]+"/"+n[1]] = g
	}
	blank := func(keys ...string) []*store.Grant {
		var out []*store.Grant
		for _, k := range keys {
			g := all[k].Clone()
			g.AccessToken, g.RefreshToken = "", ""
			out = append(out, g)
		}
		return out
	}
	tests := []struct {
		provider string
		want     []*store.Grant
	}{
		{"slack", blank("slack/alice", "slack/alice.b", "slack/bob")},
		{"slack-x", blank("slack-x/alice")},
		{"github", blank("github/alice")},
		{"s", blank("s/zed")},
		{"gitlab", nil},
		{"", blank("github/alice", "s/zed", "slack/alice", "slack/alice.b", "slack/bob", "slack-x/alice", "slackx/alice")},
	}
	for _, tt := range tests {
		t.Run("provider="+tt.provider, func(t *testing.T) {
			got, err := s.List(ctx(t), tt.provider)
			if err != nil {
				t.Fatalf("List(%q): %v", tt.provider, err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("List(%q) mismatch (-want +got):\n%s", tt.provider, diff)
			}
		})
	}
}

// badNames are provider and user names every method must refuse.
var (
	badProviders = []string{
		"", "Slack", "1slack", "-slack", "_slack", "sla/ck", "slack/", "../slack", "sla.ck", "slack\x00",
		"sl ack", "slack\n", "slâck", strings.Repeat("a", 64), "%2e%2e", "sla\\ck",
	}
	badUsers = []string{
		"", ".alice", "-alice", "al..ice", "alice/bob", "../alice", "..", ".", "alice\x00", "al ice",
		"alice\n", "alicé", "alice:bob", "alice%2f", "alice\\bob", "alice/../bob", strings.Repeat("a", 257),
		"alice?x", "alice#x", "alice*",
	}
)

func testInvalidNames(t *testing.T, s store.Store) {
	// A cancelled context proves validation comes first: a store that looked
	// at ctx (or the backend) first would report something else.
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	okLease := func(p, u string) *store.Lease {
		return &store.Lease{Provider: p, User: u, Holder: "h", ID: "x", Version: 1}
	}
	check := func(t *testing.T, what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("%s: err = %v; want ErrInvalidName", what, err)
		}
	}
	for _, c := range []context.Context{cancelled, ctx(t)} {
		for _, p := range badProviders {
			_, _, err := s.Get(c, p, "alice")
			check(t, fmt.Sprintf("Get(%q, alice)", p), err)
			_, err = s.Put(c, sample(p, "alice", "x"), 0)
			check(t, fmt.Sprintf("Put(%q, alice)", p), err)
			check(t, fmt.Sprintf("Delete(%q, alice)", p), s.Delete(c, p, "alice"))
			if p != "" {
				_, err = s.List(c, p)
				check(t, fmt.Sprintf("List(%q)", p), err)
			}
			_, err = s.AcquireLease(c, p, "alice", store.LeaseRequest{Holder: "h", TTL: longTTL})
			check(t, fmt.Sprintf("AcquireLease(%q, alice)", p), err)
			check(t, fmt.Sprintf("ReleaseLease(%q, alice)", p), s.ReleaseLease(c, okLease(p, "alice")))
		}
		for _, u := range badUsers {
			_, _, err := s.Get(c, "slack", u)
			check(t, fmt.Sprintf("Get(slack, %q)", u), err)
			_, err = s.Put(c, sample("slack", u, "x"), 0)
			check(t, fmt.Sprintf("Put(slack, %q)", u), err)
			check(t, fmt.Sprintf("Delete(slack, %q)", u), s.Delete(c, "slack", u))
			_, err = s.AcquireLease(c, "slack", u, store.LeaseRequest{Holder: "h", TTL: longTTL})
			check(t, fmt.Sprintf("AcquireLease(slack, %q)", u), err)
			check(t, fmt.Sprintf("ReleaseLease(slack, %q)", u), s.ReleaseLease(c, okLease("slack", u)))
		}
		for _, h := range []string{"", "a b", "h\x00", "h\n", "hé", strings.Repeat("h", 257)} {
			_, err := s.AcquireLease(c, "slack", "alice", store.LeaseRequest{Holder: h, TTL: longTTL})
			check(t, fmt.Sprintf("AcquireLease holder %q", h), err)
		}
	}
	// Nothing was written.
	got, err := s.List(ctx(t), "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("List after rejected writes returned %d grants; want 0", len(got))
	}
	if _, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "h", TTL: longTTL}); err != nil {
		t.Errorf("AcquireLease after rejected acquisitions: %v; want success (nothing was leased)", err)
	}
}

func testInvalidArguments(t *testing.T, s store.Store) {
	c := ctx(t)
	if _, err := s.Put(c, nil, 0); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("Put(nil): err = %v; want ErrInvalidArgument", err)
	}
	for _, st := range []store.Status{"", "revoked", "Active"} {
		g := sample("slack", "alice", "x")
		g.Status = st
		if _, err := s.Put(c, g, 0); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("Put with status %q: err = %v; want ErrInvalidArgument", st, err)
		}
	}
	if err := s.ReleaseLease(c, nil); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("ReleaseLease(nil): err = %v; want ErrInvalidArgument", err)
	}
	for _, ttl := range []time.Duration{0, -time.Second, store.MaxLeaseTTL + time.Second} {
		if _, err := s.AcquireLease(c, "slack", "alice", store.LeaseRequest{Holder: "h", TTL: ttl}); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("AcquireLease ttl %s: err = %v; want ErrInvalidArgument", ttl, err)
		}
	}
	if _, _, err := s.Get(c, "slack", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after rejected Puts: err = %v; want ErrNotFound", err)
	}
	// Valid edge names are accepted.
	for _, n := range [][2]string{
		{"a", "a"}, {strings.Repeat("a", 63), strings.Repeat("b", 256)},
		{"x_y-z9", "Alice.Smith+tag@example.com"}, {"p", "user_1-2@sub.example"},
	} {
		put(t, s, sample(n[0], n[1], "edge"), 0)
		wantName := sample(n[0], n[1], "edge")
		got, _ := mustGet(t, s, n[0], n[1])
		if diff := cmp.Diff(wantName, got); diff != "" {
			t.Errorf("edge name %s/%s mismatch (-want +got):\n%s", n[0], n[1], diff)
		}
	}
}

func testTokensRoundTrip(t *testing.T, s store.Store) {
	tests := []struct {
		name          string
		access, fresh string
	}{
		{"empty", "", ""},
		{"access only", "ya29.a0AfH6SMB", ""},
		{"jwt", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln", "1//0gRefresh-Token_with.dots"},
		{"json special", `"quoted" \back\slash {"a":1}`, "line\nbreak\ttab"},
		{"unicode", "jeton-éàü-令牌-🔑", "🔄"},
		{"control bytes", "nul\x00byte\x01\x7f", "\x00"},
		{"invalid utf8", "bad\xff\xfeutf8", "\xc3\x28"},
		{"long", strings.Repeat("A1b2", 4096), strings.Repeat("z", 8191)},
		{"spaces", "  leading and trailing  ", " "},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := sample("slack", fmt.Sprintf("user%d", i), "x")
			g.AccessToken, g.RefreshToken = tt.access, tt.fresh
			v := put(t, s, g, 0)
			got, gotV := mustGet(t, s, g.Provider, g.User)
			if got.AccessToken != tt.access {
				t.Errorf("access token: got %q; want %q", got.AccessToken, tt.access)
			}
			if got.RefreshToken != tt.fresh {
				t.Errorf("refresh token: got %q; want %q", got.RefreshToken, tt.fresh)
			}
			if gotV != v {
				t.Errorf("version = %d; want %d", gotV, v)
			}
		})
	}
	// Optional fields left empty round-trip too.
	g := &store.Grant{Provider: "bare", User: "u", Status: store.StatusReconnectRequired}
	v := put(t, s, g, 0)
	wantGrant(t, s, g, v)
}

func testLeaseAcquireHeldRelease(t *testing.T, s store.Store) {
	before := time.Now()
	l, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-1", TTL: longTTL})
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if l.Provider != "slack" || l.User != "alice" || l.Holder != "sidecar-1" || l.ID == "" || l.Version == 0 {
		t.Errorf("lease = %+v; want slack/alice held by sidecar-1 with an ID and a version", *l)
	}
	if l.Expiry.Before(before.Add(longTTL)) || l.Expiry.After(time.Now().Add(longTTL)) {
		t.Errorf("lease expiry = %s; want about now + %s", l.Expiry, longTTL)
	}
	for _, h := range []string{"sidecar-2", "sidecar-1"} {
		if _, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: h, TTL: longTTL}); !errors.Is(err, store.ErrLeaseHeld) {
			t.Errorf("AcquireLease by %s while held: err = %v; want ErrLeaseHeld", h, err)
		}
	}
	// Leases are per grant.
	for _, pu := range [][2]string{{"slack", "bob"}, {"github", "alice"}} {
		o, err := s.AcquireLease(ctx(t), pu[0], pu[1], store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL})
		if err != nil {
			t.Errorf("AcquireLease(%s/%s) while slack/alice is held: %v", pu[0], pu[1], err)
			continue
		}
		if err := s.ReleaseLease(ctx(t), o); err != nil {
			t.Errorf("ReleaseLease(%s/%s): %v", pu[0], pu[1], err)
		}
	}
	// A forged lease (right names, wrong ID) cannot release it.
	forged := *l
	forged.ID = "not-the-id"
	if err := s.ReleaseLease(ctx(t), &forged); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("ReleaseLease with wrong ID: err = %v; want ErrLeaseLost", err)
	}
	if _, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL}); !errors.Is(err, store.ErrLeaseHeld) {
		t.Errorf("AcquireLease after forged release: err = %v; want ErrLeaseHeld", err)
	}
	if err := s.ReleaseLease(ctx(t), l); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	if err := s.ReleaseLease(ctx(t), l); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("second ReleaseLease: err = %v; want ErrLeaseLost", err)
	}
	l2, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL})
	if err != nil {
		t.Fatalf("AcquireLease after release: %v", err)
	}
	if l2.ID == l.ID {
		t.Errorf("new acquisition reused lease ID %q", l.ID)
	}
	// Leases and grants are independent.
	put(t, s, sample("slack", "alice", "x"), 0)
	if err := s.Delete(ctx(t), "slack", "alice"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.ReleaseLease(ctx(t), l2); err != nil {
		t.Errorf("ReleaseLease after grant Delete: %v", err)
	}
}

func testLeaseExpiredTakeover(t *testing.T, s store.Store) {
	old, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-1", TTL: shortTTL})
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	time.Sleep(expiredWait)
	taken, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL})
	if err != nil {
		t.Fatalf("AcquireLease of expired lease: err = %v; want takeover", err)
	}
	if err := s.ReleaseLease(ctx(t), old); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("ReleaseLease by the old holder after takeover: err = %v; want ErrLeaseLost", err)
	}
	// The old holder's failed release left the new lease in place.
	if _, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-3", TTL: longTTL}); !errors.Is(err, store.ErrLeaseHeld) {
		t.Errorf("AcquireLease after old holder's release: err = %v; want ErrLeaseHeld", err)
	}
	if err := s.ReleaseLease(ctx(t), taken); err != nil {
		t.Errorf("ReleaseLease by the new holder: %v", err)
	}

	// The same holder, after expiry, gets a new acquisition; the stale
	// handle of its first one is lost.
	first, err := s.AcquireLease(ctx(t), "slack", "bob", store.LeaseRequest{Holder: "sidecar-1", TTL: shortTTL})
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	time.Sleep(expiredWait)
	second, err := s.AcquireLease(ctx(t), "slack", "bob", store.LeaseRequest{Holder: "sidecar-1", TTL: longTTL})
	if err != nil {
		t.Fatalf("re-AcquireLease by the same holder after expiry: %v", err)
	}
	if err := s.ReleaseLease(ctx(t), first); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("ReleaseLease of the stale handle: err = %v; want ErrLeaseLost", err)
	}
	if err := s.ReleaseLease(ctx(t), second); err != nil {
		t.Errorf("ReleaseLease of the current handle: %v", err)
	}

	// An expired lease nobody took over can still be released by its holder.
	lone, err := s.AcquireLease(ctx(t), "slack", "carol", store.LeaseRequest{Holder: "sidecar-1", TTL: shortTTL})
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	time.Sleep(expiredWait)
	if err := s.ReleaseLease(ctx(t), lone); err != nil {
		t.Errorf("ReleaseLease of expired, untaken lease: %v", err)
	}
}

func testLeaseConcurrentAcquire(t *testing.T, s store.Store) {
	for _, phase := range []string{"free", "expired"} {
		user := "user-" + phase
		if phase == "expired" {
			if _, err := s.AcquireLease(ctx(t), "slack", user, store.LeaseRequest{Holder: "old", TTL: shortTTL}); err != nil {
				t.Fatalf("AcquireLease: %v", err)
			}
			time.Sleep(expiredWait)
		}
		c := ctx(t)
		results := race(func(i int) result {
			h := fmt.Sprintf("holder-%d", i)
			l, err := s.AcquireLease(c, "slack", user, store.LeaseRequest{Holder: h, TTL: longTTL})
			if err != nil {
				return result{marker: h, err: err}
			}
			return result{marker: l.ID, v: l.Version}
		})
		var won []result
		for i, r := range results {
			switch {
			case r.err == nil:
				won = append(won, r)
			case !errors.Is(r.err, store.ErrLeaseHeld):
				t.Errorf("%s: acquirer %d: err = %v; want nil or ErrLeaseHeld", phase, i, r.err)
			}
		}
		if len(won) != 1 {
			t.Errorf("%s lease: %d acquirers won; want exactly 1", phase, len(won))
		}
	}
}

func testLeaseRecordsRequest(t *testing.T, s store.Store) {
	before := time.Now()
	l, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-1", TTL: longTTL, Refresh: true, Generation: 7})
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if !l.Refresh || l.Generation != 7 || l.Acquired.Before(before.Add(-time.Second)) || l.Acquired.After(time.Now()) {
		t.Errorf("lease = %+v; want refresh of generation 7, acquired about now", *l)
	}
	_, err = s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL})
	var held *store.LeaseHeldError
	if !errors.As(err, &held) || !errors.Is(err, store.ErrLeaseHeld) {
		t.Fatalf("AcquireLease while held: err = %v; want a *LeaseHeldError wrapping ErrLeaseHeld", err)
	}
	got := held.Lease
	if got.Holder != "sidecar-1" || got.ID != l.ID || got.Version != l.Version || !got.Refresh || got.Generation != 7 ||
		!got.Expiry.Equal(l.Expiry) || !got.Acquired.Equal(l.Acquired) {
		t.Errorf("held lease = %+v; want the stored lease %+v", got, *l)
	}
	if err := s.ReleaseLease(ctx(t), l); err != nil {
		t.Errorf("ReleaseLease: %v", err)
	}
}

func testLeaseRenew(t *testing.T, s store.Store) {
	l, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-1", TTL: shortTTL, Refresh: true, Generation: 3})
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	// Renewed before it runs out, it stays held past its first expiry.
	r, err := s.RenewLease(ctx(t), l, longTTL)
	if err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	if r.ID != l.ID || r.Holder != l.Holder || r.Version == l.Version || !r.Acquired.Equal(l.Acquired) || !r.Refresh || r.Generation != 3 {
		t.Errorf("renewed = %+v; want the same acquisition (ID, holder, acquired, refresh generation 3) at a new version", *r)
	}
	if r.Expiry.Before(time.Now().Add(longTTL - 5*time.Second)) {
		t.Errorf("renewed expiry = %s; want about now + %s", r.Expiry, longTTL)
	}
	time.Sleep(expiredWait)
	if _, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL}); !errors.Is(err, store.ErrLeaseHeld) {
		t.Errorf("AcquireLease after the first expiry of a renewed lease: err = %v; want ErrLeaseHeld", err)
	}
	// The handle before the renewal is stale.
	if _, err := s.RenewLease(ctx(t), l, longTTL); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease with the pre-renewal handle: err = %v; want ErrLeaseLost", err)
	}
	if err := s.ReleaseLease(ctx(t), l); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("ReleaseLease with the pre-renewal handle: err = %v; want ErrLeaseLost", err)
	}
	// A forged handle cannot renew.
	forged := *r
	forged.ID = "not-the-id"
	if _, err := s.RenewLease(ctx(t), &forged, longTTL); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease with a wrong ID: err = %v; want ErrLeaseLost", err)
	}
	// An expired lease nobody took over is renewed by its holder.
	r, err = s.RenewLease(ctx(t), r, shortTTL)
	if err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	time.Sleep(expiredWait)
	if r, err = s.RenewLease(ctx(t), r, longTTL); err != nil {
		t.Fatalf("RenewLease of an expired, untaken lease: %v", err)
	}
	if err := s.ReleaseLease(ctx(t), r); err != nil {
		t.Fatalf("ReleaseLease of the renewed handle: %v", err)
	}
	if _, err := s.RenewLease(ctx(t), r, longTTL); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease after release: err = %v; want ErrLeaseLost", err)
	}
	// Taken over, the old holder cannot renew.
	old, err := s.AcquireLease(ctx(t), "slack", "bob", store.LeaseRequest{Holder: "sidecar-1", TTL: shortTTL})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(expiredWait)
	taken, err := s.AcquireLease(ctx(t), "slack", "bob", store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL})
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if _, err := s.RenewLease(ctx(t), old, longTTL); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease by the old holder after takeover: err = %v; want ErrLeaseLost", err)
	}
	if err := s.ReleaseLease(ctx(t), taken); err != nil {
		t.Errorf("ReleaseLease by the new holder: %v", err)
	}
	for _, ttl := range []time.Duration{0, store.MaxLeaseTTL + time.Second} {
		if _, err := s.RenewLease(ctx(t), taken, ttl); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("RenewLease ttl %s: err = %v; want ErrInvalidArgument", ttl, err)
		}
	}
	if _, err := s.RenewLease(ctx(t), nil, longTTL); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("RenewLease(nil): err = %v; want ErrInvalidArgument", err)
	}
}

func testLeaseTakeOverPolicy(t *testing.T, s store.Store) {
	old, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-1", TTL: shortTTL, Refresh: true, Generation: 4})
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	var asked []store.Lease
	decline := func(l *store.Lease) bool { asked = append(asked, *l); return false }
	// A live lease is held whatever the policy says; it is not consulted.
	if _, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL, TakeOver: func(*store.Lease) bool { return true }}); !errors.Is(err, store.ErrLeaseHeld) {
		t.Errorf("AcquireLease of a live lease with an accepting policy: err = %v; want ErrLeaseHeld", err)
	}
	time.Sleep(expiredWait)
	_, err = s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-2", TTL: longTTL, TakeOver: decline})
	var held *store.LeaseHeldError
	if !errors.As(err, &held) {
		t.Fatalf("AcquireLease of an expired lease the policy declines: err = %v; want a *LeaseHeldError", err)
	}
	if held.Lease.ID != old.ID || !held.Lease.Expiry.Before(time.Now()) || held.Lease.Generation != 4 {
		t.Errorf("held lease = %+v; want the expired lease of generation 4", held.Lease)
	}
	if len(asked) == 0 || asked[0].ID != old.ID || asked[0].Holder != "sidecar-1" || !asked[0].Refresh {
		t.Errorf("policy was asked about %+v; want the expired refresh lease of sidecar-1", asked)
	}
	// Declined, the lease is still the old holder's.
	r, err := s.RenewLease(ctx(t), old, longTTL)
	if err != nil {
		t.Fatalf("RenewLease after a declined takeover: %v", err)
	}
	if err := s.ReleaseLease(ctx(t), r); err != nil {
		t.Fatal(err)
	}
	// A free lease is acquired without asking the policy.
	asked = nil
	l, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-2", TTL: shortTTL, TakeOver: decline})
	if err != nil || len(asked) != 0 {
		t.Fatalf("AcquireLease of a free lease: %v, policy asked %d times; want success without asking", err, len(asked))
	}
	time.Sleep(expiredWait)
	taken, err := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "sidecar-3", TTL: longTTL, TakeOver: func(*store.Lease) bool { return true }})
	if err != nil {
		t.Fatalf("AcquireLease of an expired lease the policy accepts: %v", err)
	}
	if _, err := s.RenewLease(ctx(t), l, longTTL); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RenewLease by the holder taken over: err = %v; want ErrLeaseLost", err)
	}
	if err := s.ReleaseLease(ctx(t), taken); err != nil {
		t.Error(err)
	}
}

// testLeaseRenewTakeoverRace: the holder of an expired lease renews while
// peers try to take it over; exactly one of them ends up with the lease.
func testLeaseRenewTakeoverRace(t *testing.T, s store.Store) {
	for round := range 3 {
		user := fmt.Sprintf("race-%d", round)
		l, err := s.AcquireLease(ctx(t), "slack", user, store.LeaseRequest{Holder: "holder", TTL: shortTTL})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(expiredWait)
		c := ctx(t)
		results := race(func(i int) result {
			if i == 0 {
				r, err := s.RenewLease(c, l, longTTL)
				if err != nil {
					return result{marker: "renew", err: err}
				}
				return result{marker: "renew", v: r.Version}
			}
			r, err := s.AcquireLease(c, "slack", user, store.LeaseRequest{Holder: fmt.Sprintf("peer-%d", i), TTL: longTTL})
			if err != nil {
				return result{marker: "acquire", err: err}
			}
			return result{marker: "acquire", v: r.Version}
		})
		won := 0
		for i, r := range results {
			switch {
			case r.err == nil:
				won++
			case r.marker == "renew" && errors.Is(r.err, store.ErrLeaseLost):
			case r.marker == "acquire" && errors.Is(r.err, store.ErrLeaseHeld):
			default:
				t.Errorf("round %d: %s %d: err = %v", round, r.marker, i, r.err)
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d of the renewal and the takeovers won; want exactly 1", round, won)
		}
	}
}

func testRevocations(t *testing.T, s store.Store) {
	if list, err := s.ListRevocations(ctx(t)); err != nil || len(list) != 0 {
		t.Fatalf("ListRevocations of an empty store = %v, %v; want nothing", list, err)
	}
	base := time.Date(2026, 6, 18, 6, 0, 0, 0, time.UTC)
	var want []*store.Revocation
	for i, pu := range [][2]string{{"slack", "alice"}, {"github", "bob@example.com"}, {"slack", "alice"}} {
		id, err := store.NewRevocationID()
		if err != nil {
			t.Fatal(err)
		}
		r := &store.Revocation{
			ID: id, Provider: pu[0], User: pu[1], Generation: int64(i + 3),
			AccessToken: fmt.Sprintf("at-revoke-%d", i), RefreshToken: fmt.Sprintf("rt-revoke-%d", i),
			Actor: "user", Fingerprint: "fp", Attempt: i, Due: base.Add(time.Hour), Queued: base.Add(-time.Duration(i) * time.Minute),
		}
		if i == 2 {
			r.RefreshToken = "" // only an access token
		}
		if err := s.PutRevocation(ctx(t), r); err != nil {
			t.Fatalf("PutRevocation: %v", err)
		}
		want = append([]*store.Revocation{r.Clone()}, want...) // oldest first
	}
	got, err := s.ListRevocations(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListRevocations (-want +got):\n%s", diff)
	}
	// Replaced by ID (the next attempt is recorded).
	next := want[1].Clone()
	next.Attempt, next.Due = 5, base.Add(2*time.Hour)
	if err := s.PutRevocation(ctx(t), next); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRevocation(ctx(t), want[0].ID); err != nil {
		t.Fatalf("DeleteRevocation: %v", err)
	}
	if err := s.DeleteRevocation(ctx(t), want[0].ID); err != nil {
		t.Errorf("DeleteRevocation of a missing entry: %v; want nil", err)
	}
	got, err = s.ListRevocations(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*store.Revocation{next, want[2]}, got); diff != "" {
		t.Errorf("ListRevocations after replace and delete (-want +got):\n%s", diff)
	}
	// Grants are not revocations.
	if l, err := s.List(ctx(t), ""); err != nil || len(l) != 0 {
		t.Errorf("List = %v, %v; want no grants", l, err)
	}
	// Validation comes first.
	bad := next.Clone()
	bad.ID = "../etc"
	if err := s.PutRevocation(ctx(t), bad); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("PutRevocation with id ../etc: %v; want ErrInvalidName", err)
	}
	bad = next.Clone()
	bad.User = "a/b"
	if err := s.PutRevocation(ctx(t), bad); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("PutRevocation with user a/b: %v; want ErrInvalidName", err)
	}
	if err := s.DeleteRevocation(ctx(t), "not-hex"); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("DeleteRevocation(not-hex): %v; want ErrInvalidName", err)
	}
	if err := s.PutRevocation(ctx(t), nil); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("PutRevocation(nil): %v; want ErrInvalidArgument", err)
	}
	for _, r := range got {
		if err := s.DeleteRevocation(ctx(t), r.ID); err != nil {
			t.Error(err)
		}
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	put(t, s, sample("slack", "alice", "x"), 0)
	c, cancel := context.WithCancel(t.Context())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, _, err := s.Get(c, "slack", "alice"); return err }},
		{"Put", func() error { _, err := s.Put(c, sample("slack", "bob", "x"), 0); return err }},
		{"Delete", func() error { return s.Delete(c, "slack", "alice") }},
		{"List", func() error { _, err := s.List(c, ""); return err }},
		{"AcquireLease", func() error {
			_, err := s.AcquireLease(c, "slack", "alice", store.LeaseRequest{Holder: "h", TTL: longTTL})
			return err
		}},
	}
	for _, cl := range calls {
		if err := cl.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with cancelled context: err = %v; want context.Canceled", cl.name, err)
		}
	}
	// Nothing happened.
	got, err := s.List(ctx(t), "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 1 || got[0].User != "alice" {
		t.Errorf("List after cancelled calls = %v; want only slack/alice", sortedUsers(got))
	}
}

func testClose(t *testing.T, s store.Store) {
	put(t, s, sample("slack", "alice", "x"), 0)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := s.Get(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Get after Close: err = %v; want ErrUnavailable", err)
	}
	if _, err := s.Put(ctx(t), sample("slack", "bob", "x"), 0); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Put after Close: err = %v; want ErrUnavailable", err)
	}
	if _, _, err := s.Get(ctx(t), "../x", "alice"); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("Get with invalid name after Close: err = %v; want ErrInvalidName", err)
	}
}

// sortedUsers returns "provider/user" of each grant, for messages.
func sortedUsers(gs []*store.Grant) []string {
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		out = append(out, g.Provider+"/"+g.User)
	}
	slices.Sort(out)
	return out
}

// optionalCase is one test of the suite of an optional store interface T.
type optionalCase[T any] struct {
	name string
	fn   func(t *testing.T, s store.Store, x T)
}

// runOptional runs the suite of an optional store interface T, each test on
// a new store that must implement T.
func runOptional[T any](t *testing.T, newStore func(t *testing.T) store.Store, tests []optionalCase[T]) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			x, ok := s.(T)
			if !ok {
				t.Fatalf("%T does not implement %s", s, reflect.TypeFor[T]())
			}
			tt.fn(t, s, x)
		})
	}
}
