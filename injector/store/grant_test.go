package store_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

const (
	canaryAccess  = "CANARY-AT-2f9d61e0"
	canaryRefresh = "CANARY-RT-8b34c7aa"
)

func canaryGrant() store.Grant {
	return store.Grant{
		Provider:        "slack",
		User:            "alice@example.com",
		AccessToken:     canaryAccess,
		RefreshToken:    canaryRefresh,
		TokenType:       "Bearer",
		Expiry:          time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		Scopes:          []string{"chat:write"},
		Status:          store.StatusActive,
		ConnectedAt:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		ProviderAccount: "U123",
		Generation:      4,
	}
}

// checkRedacted fails if out contains a canary token or lacks the redaction
// marker and the grant's identity.
func checkRedacted(t *testing.T, what, out string) {
	t.Helper()
	for _, c := range []string{canaryAccess, canaryRefresh, "2f9d61e0", "8b34c7aa"} {
		if strings.Contains(out, c) {
			t.Errorf("%s leaks a token: %s", what, out)
		}
	}
	if !strings.Contains(out, "REDACTED") || !strings.Contains(out, "alice@example.com") {
		t.Errorf("%s = %s; want the grant with REDACTED tokens", what, out)
	}
}

func TestGrantFmtRedacts(t *testing.T) {
	g := canaryGrant()
	type wrapper struct {
		G store.Grant
		P *store.Grant
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v", "%-v"}
	for _, verb := range verbs {
		for name, arg := range map[string]any{
			"value":   g,
			"pointer": &g,
			"nested":  wrapper{G: g, P: &g},
			"slice":   []store.Grant{g},
		} {
			out := fmt.Sprintf(verb, arg)
			if verb == "%x" || verb == "%X" {
				// Hex output is checked against the hex of the tokens.
				for _, c := range []string{canaryAccess, canaryRefresh} {
					if strings.Contains(strings.ToLower(out), fmt.Sprintf("%x", c)) {
						t.Errorf("Sprintf(%s, %s) leaks a token in hex", verb, name)
					}
				}
				continue
			}
			for _, c := range []string{canaryAccess, canaryRefresh} {
				if strings.Contains(out, c) {
					t.Errorf("Sprintf(%s, %s) leaks a token: %s", verb, name, out)
				}
			}
		}
	}
	checkRedacted(t, "String", g.String())
	checkRedacted(t, "GoString", g.GoString())
	checkRedacted(t, "Errorf", fmt.Errorf("refresh failed for %v", &g).Error())
}

func TestGrantEmptyTokensNotMarked(t *testing.T) {
	g := canaryGrant()
	g.AccessToken, g.RefreshToken = "", ""
	if s := g.String(); strings.Contains(s, "REDACTED") {
		t.Errorf("String of a grant without tokens = %s; want no REDACTED marker", s)
	}
}

func TestGrantZapRedacts(t *testing.T) {
	g := canaryGrant()
	for _, enc := range []struct {
		name string
		new  func() zapcore.Encoder
	}{
		{"json", func() zapcore.Encoder { return zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()) }},
		{"console", func() zapcore.Encoder { return zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()) }},
	} {
		var buf bytes.Buffer
		log := zap.New(zapcore.NewCore(enc.new(), zapcore.AddSync(&buf), zapcore.DebugLevel))
		log.Info("object", zap.Object("grant", g))
		log.Info("any value", zap.Any("grant", g))
		log.Info("any pointer", zap.Any("grant", &g))
		log.Info("stringer", zap.Stringer("grant", g))
		log.Sugar().Infow("sugar", "grant", g)
		log.Sugar().Infof("sugar %v %+v", g, &g)
		_ = log.Sync()
		checkRedacted(t, "zap "+enc.name, buf.String())
		if n := strings.Count(buf.String(), "\n"); n != 6 {
			t.Errorf("zap %s wrote %d lines; want 6", enc.name, n)
		}
	}
}

func TestGrantSlogRedacts(t *testing.T) {
	g := canaryGrant()
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
		log := slog.New(h)
		log.Info("grant", "grant", g)
		log.Info("grant", slog.Any("grant", &g))
	}
	checkRedacted(t, "slog", buf.String())
}

// TestGrantJSONFieldNames pins the storage field names of
// docs/design.md#grant-store, which the Vault layout and users' scripts rely
// on.
func TestGrantJSONFieldNames(t *testing.T) {
	g := canaryGrant()
	b, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"access_token", "connected_at", "expiry", "generation", "provider", "provider_account",
		"refresh_token", "scopes", "status", "token_type", "user"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("JSON keys mismatch (-want +got):\n%s", diff)
	}
	if m["status"] != "active" || m["access_token"] != canaryAccess {
		t.Errorf("JSON status = %v, access_token present = %v; want active and the token (storage form)", m["status"], m["access_token"] == canaryAccess)
	}
	var back store.Grant
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(g, back); diff != "" {
		t.Errorf("JSON round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestGrantClone(t *testing.T) {
	g := canaryGrant()
	c := g.Clone()
	if diff := cmp.Diff(&g, c); diff != "" {
		t.Fatalf("Clone mismatch (-want +got):\n%s", diff)
	}
	c.Scopes[0] = "admin"
	if g.Scopes[0] != "chat:write" {
		t.Errorf("Clone shares Scopes with the original")
	}
	if (*store.Grant)(nil).Clone() != nil {
		t.Errorf("nil.Clone() != nil")
	}
}

func TestStatusValid(t *testing.T) {
	tests := []struct {
		s    store.Status
		want bool
	}{
		{store.StatusActive, true},
		{store.StatusReconnectRequired, true},
		{"", false},
		{"ACTIVE", false},
		{"revoked", false},
	}
	for _, tt := range tests {
		if got := tt.s.Valid(); got != tt.want {
			t.Errorf("Status(%q).Valid() = %v; want %v", tt.s, got, tt.want)
		}
	}
}

func TestViews(t *testing.T) {
	at := time.Date(2026, 12, 3, 9, 0, 0, 0, time.FixedZone("CET", 3600))
	grants := []*store.Grant{
		{Provider: "slack", User: "alice", Status: store.StatusActive, AccessToken: "canary-access", RefreshToken: "canary-refresh",
			Scopes: []string{"chat:write"}, ProviderAccount: "U1", ConnectedAt: at, Expiry: at.Add(time.Hour), Generation: 3},
		{Provider: "github", User: "bob", Status: store.StatusReconnectRequired},
	}
	got := store.Views(grants)
	want := []store.View{
		{Provider: "slack", User: "alice", Status: "active", Scopes: []string{"chat:write"}, ProviderAccount: "U1",
			ConnectedAt: "2026-12-03T08:00:00Z", Expiry: "2026-12-03T09:00:00Z", Generation: 3},
		{Provider: "github", User: "bob", Status: "reconnect_required", Scopes: []string{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Views (-want +got):\n%s", diff)
	}
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "canary") {
		t.Errorf("a token in the view: %s", b)
	}
}
