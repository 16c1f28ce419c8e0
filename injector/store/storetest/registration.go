package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// RunRegistrations runs the conformance suite of store.RegistrationStore:
// one registration per MCP server, written by compare-and-swap, its client
// secret round-tripping through the store's protection at rest, deleted
// and created again, never touching grants. newStore is as for Run; the
// store it returns must implement store.RegistrationStore.
func RunRegistrations(t *testing.T, newStore func(t *testing.T) store.Store) {
	runOptional(t, newStore, []optionalCase[store.RegistrationStore]{
		{"Missing", testRegistrationMissing},
		{"CreateReadReplace", testRegistrationCAS},
		{"SecretRoundTrip", testRegistrationSecrets},
		{"DeleteAndRecreate", testRegistrationDelete},
		{"ApartFromGrants", testRegistrationApart},
		{"InvalidRejectedFirst", testRegistrationInvalid},
	})
}

// sampleRegistration returns a fully populated registration of provider
// whose client secret carries marker.
func sampleRegistration(provider, marker string) *store.Registration {
	return &store.Registration{
		Provider:              provider,
		Resource:              "https://mcp.example.com/mcp",
		Issuer:                "https://auth.example.com/tenant",
		AuthorizationEndpoint: "https://auth.example.com/tenant/authorize",
		TokenEndpoint:         "https://auth.example.com/tenant/token",
		RevocationEndpoint:    "https://auth.example.com/tenant/revoke",
		RegistrationEndpoint:  "https://auth.example.com/tenant/register",
		Scopes:                []string{"issues:read", "repo"},
		ClientID:              "dcr-" + marker,
		ClientSecret:          "client-secret-" + marker + "-" + provider,
		AuthMethod:            store.AuthMethodBasic,
		SecretExpiresAt:       time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC),
		RedirectURI:           "https://connect.example.com/callback",
		Dynamic:               true,
		RegisteredAt:          time.Date(2026, 6, 18, 6, 0, 0, 123456789, time.UTC),
		DiscoveredAt:          time.Date(2026, 6, 18, 6, 0, 1, 0, time.UTC),
	}
}

func putRegistration(t *testing.T, rs store.RegistrationStore, r *store.Registration, cas store.Version) store.Version {
	t.Helper()
	v, err := rs.PutRegistration(ctx(t), r, cas)
	if err != nil {
		t.Fatalf("PutRegistration(%s, cas %d): %v", r.Provider, cas, err)
	}
	if v == 0 {
		t.Fatalf("PutRegistration(%s, cas %d) returned version 0; want non-zero", r.Provider, cas)
	}
	return v
}

func wantRegistration(t *testing.T, rs store.RegistrationStore, want *store.Registration, wantV store.Version) {
	t.Helper()
	got, v, err := rs.Registration(ctx(t), want.Provider)
	if err != nil {
		t.Fatalf("Registration(%s): %v", want.Provider, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Registration(%s) (-want +got):\n%s", want.Provider, diff)
	}
	if v != wantV {
		t.Errorf("Registration(%s) version %d; want %d", want.Provider, v, wantV)
	}
}

func testRegistrationMissing(t *testing.T, _ store.Store, rs store.RegistrationStore) {
	if _, _, err := rs.Registration(ctx(t), "notes"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Registration of a missing server: %v; want ErrNotFound", err)
	}
	if err := rs.DeleteRegistration(ctx(t), "notes"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteRegistration of a missing server: %v; want ErrNotFound", err)
	}
}

func testRegistrationCAS(t *testing.T, _ store.Store, rs store.RegistrationStore) {
	r := sampleRegistration("notes", "a")
	v1 := putRegistration(t, rs, r, 0)
	wantRegistration(t, rs, r, v1)
	// Create-only refuses an existing entry; a stale cas changes nothing.
	if _, err := rs.PutRegistration(ctx(t), sampleRegistration("notes", "b"), 0); !errors.Is(err, store.ErrConflict) {
		t.Errorf("PutRegistration over an existing one with cas 0: %v; want ErrConflict", err)
	}
	next := sampleRegistration("notes", "c")
	next.DiscoveredAt = next.DiscoveredAt.Add(time.Hour)
	v2 := putRegistration(t, rs, next, v1)
	if v2 <= v1 {
		t.Errorf("version after replace %d; want more than %d", v2, v1)
	}
	if _, err := rs.PutRegistration(ctx(t), sampleRegistration("notes", "d"), v1); !errors.Is(err, store.ErrConflict) {
		t.Errorf("PutRegistration with a stale cas: %v; want ErrConflict", err)
	}
	wantRegistration(t, rs, next, v2)
	// The store keeps its own copy.
	next.Scopes[0], next.ClientSecret = "changed", "changed"
	got, _, err := rs.Registration(ctx(t), "notes")
	if err != nil {
		t.Fatal(err)
	}
	if got.Scopes[0] != "issues:read" || got.ClientSecret != "client-secret-c-notes" {
		t.Errorf("stored registration changed with the caller's copy: %v", got)
	}
}

func testRegistrationSecrets(t *testing.T, _ store.Store, rs store.RegistrationStore) {
	for _, tt := range []struct{ name, secret, method string }{
		{"confidential", "s3cr3t/with+symbols=and\"quotes\"", store.AuthMethodPost},
		{"public", "", store.AuthMethodNone},
		{"long", strings.Repeat("x", 512), store.AuthMethodBasic},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleRegistration("srv-"+tt.name, tt.name)
			r.ClientSecret, r.AuthMethod = tt.secret, tt.method
			r.SecretExpiresAt, r.RegisteredAt = time.Time{}, time.Time{}
			r.Dynamic = tt.name != "public"
			wantRegistration(t, rs, r, putRegistration(t, rs, r, 0))
		})
	}
	// Times are kept in UTC whatever zone they were given in.
	r := sampleRegistration("zoned", "z")
	r.RegisteredAt = time.Date(2026, 6, 18, 8, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	putRegistration(t, rs, r, 0)
	got, _, err := rs.Registration(ctx(t), "zoned")
	if err != nil {
		t.Fatal(err)
	}
	if !got.RegisteredAt.Equal(r.RegisteredAt) || got.RegisteredAt.Location() != time.UTC {
		t.Errorf("RegisteredAt %v; want %v in UTC", got.RegisteredAt, r.RegisteredAt)
	}
}

func testRegistrationDelete(t *testing.T, _ store.Store, rs store.RegistrationStore) {
	v1 := putRegistration(t, rs, sampleRegistration("notes", "a"), 0)
	if err := rs.DeleteRegistration(ctx(t), "notes"); err != nil {
		t.Fatalf("DeleteRegistration: %v", err)
	}
	if _, _, err := rs.Registration(ctx(t), "notes"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Registration after delete: %v; want ErrNotFound", err)
	}
	if _, err := rs.PutRegistration(ctx(t), sampleRegistration("notes", "b"), v1); !errors.Is(err, store.ErrConflict) {
		t.Errorf("PutRegistration on a deleted entry with its old version: %v; want ErrConflict", err)
	}
	r := sampleRegistration("notes", "c")
	v2 := putRegistration(t, rs, r, 0)
	if v2 <= v1 {
		t.Errorf("version after re-create %d; want more than %d (versions are never reused)", v2, v1)
	}
	wantRegistration(t, rs, r, v2)
}

func testRegistrationApart(t *testing.T, s store.Store, rs store.RegistrationStore) {
	g := sample("notes", "alice", "x")
	gv := put(t, s, g, 0)
	putRegistration(t, rs, sampleRegistration("notes", "a"), 0)
	wantGrant(t, s, g, gv)
	if l, err := s.List(ctx(t), ""); err != nil || len(l) != 1 {
		t.Errorf("List = %v, %v; want only the grant", sortedUsers(l), err)
	}
	if err := rs.DeleteRegistration(ctx(t), "notes"); err != nil {
		t.Fatal(err)
	}
	wantGrant(t, s, g, gv)
	if err := s.Delete(ctx(t), "notes", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rs.Registration(ctx(t), "notes"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Registration: %v; want ErrNotFound", err)
	}
}

func testRegistrationInvalid(t *testing.T, _ store.Store, rs store.RegistrationStore) {
	for _, name := range []string{"", "../etc", "Notes", "a/b"} {
		if _, _, err := rs.Registration(ctx(t), name); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("Registration(%q): %v; want ErrInvalidName", name, err)
		}
		if err := rs.DeleteRegistration(ctx(t), name); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("DeleteRegistration(%q): %v; want ErrInvalidName", name, err)
		}
	}
	bad := sampleRegistration("../x", "a")
	if _, err := rs.PutRegistration(ctx(t), bad, 0); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("PutRegistration with provider ../x: %v; want ErrInvalidName", err)
	}
	for name, edit := range map[string]func(r *store.Registration){
		"nil":                    nil,
		"unknown auth method":    func(r *store.Registration) { r.AuthMethod = "private_key_jwt" },
		"no token endpoint":      func(r *store.Registration) { r.TokenEndpoint = "" },
		"no client id":           func(r *store.Registration) { r.ClientID = "" },
		"control character":      func(r *store.Registration) { r.ClientID = "a\nb" },
		"scope with a space":     func(r *store.Registration) { r.Scopes = []string{"a b"} },
		"overlong client secret": func(r *store.Registration) { r.ClientSecret = strings.Repeat("s", 4096) },
	} {
		var r *store.Registration
		if edit != nil {
			r = sampleRegistration("notes", "a")
			edit(r)
		}
		if _, err := rs.PutRegistration(ctx(t), r, 0); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("PutRegistration with %s: %v; want ErrInvalidArgument", name, err)
		}
	}
	if _, _, err := rs.Registration(ctx(t), "notes"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Registration after refused writes: %v; want ErrNotFound", err)
	}
}
