package vault

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// goldenGrant is the grant in testdata/grant-record-*-v1.json, written by the
// Vault store before its record type was shared with the embedded store.
func goldenGrant(access, refresh string) *store.Grant {
	return &store.Grant{
		Provider: "slack", User: "alice@example.com",
		AccessToken: access, RefreshToken: refresh,
		TokenType: "Bearer", Expiry: time.Date(2026, 6, 18, 7, 0, 0, 0, time.UTC),
		Scopes: []string{"chat:write", "users:read"}, Status: store.StatusActive,
		ConnectedAt:     time.Date(2026, 6, 1, 9, 30, 0, 0, time.UTC),
		ProviderAccount: "U0123", Generation: 7,
	}
}

// TestRecordWireFormat: records written by the earlier code read back, and
// the current code writes the same bytes for the same grant.
func TestRecordWireFormat(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		old := readGolden(t, "grant-record-plain-v1.json")
		want := goldenGrant("xoxp-old-access-token", "xoxe-\xff\xfe-refresh")
		rec, ok, err := decodeGrant(kvEntry{data: old, version: 3})
		if err != nil || !ok {
			t.Fatalf("decodeGrant = %v, %v; want a live grant", ok, err)
		}
		got := rec.GrantWithoutTokens(want.Provider, want.User)
		if got.AccessToken, err = decodePlainToken(rec.AccessToken); err != nil {
			t.Fatal(err)
		}
		if got.RefreshToken, err = decodePlainToken(rec.RefreshToken); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("grant (-want +got):\n%s", diff)
		}

		nr := store.NewRecord(want)
		nr.AccessToken, nr.RefreshToken = encodePlainToken(want.AccessToken), encodePlainToken(want.RefreshToken)
		written, err := json.Marshal(nr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(written, bytes.TrimSpace(old)) {
			t.Errorf("written record:\n%s\nwant the earlier code's:\n%s", written, old)
		}
	})
	t.Run("transit", func(t *testing.T) {
		old := readGolden(t, "grant-record-transit-v1.json")
		rec, ok, err := decodeGrant(kvEntry{data: old, version: 3})
		if err != nil || !ok {
			t.Fatalf("decodeGrant = %v, %v; want a live grant", ok, err)
		}
		at, err1 := decodeStringToken(rec.AccessToken)
		rt, err2 := decodeStringToken(rec.RefreshToken)
		if err1 != nil || err2 != nil || at != "vault:v1:QUJDRA==" || rt != "vault:v1:RUZHSA==" {
			t.Errorf("ciphertexts = %q, %q (%v, %v); want the stored ones", at, rt, err1, err2)
		}
		if g := rec.GrantWithoutTokens("slack", "alice@example.com"); g.Generation != 7 || g.Status != store.StatusActive {
			t.Errorf("grant = %v; want generation 7, active", g)
		}
	})
	t.Run("tombstone", func(t *testing.T) {
		b, _ := json.Marshal(tombstone{Deleted: true})
		if _, ok, err := decodeGrant(kvEntry{data: b, version: 4}); ok || err != nil {
			t.Errorf("decodeGrant(tombstone) = live %v, %v; want not live", ok, err)
		}
	})
}

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
