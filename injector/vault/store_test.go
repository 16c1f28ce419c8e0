//go:build integration

package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/vault/api"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/vaulttest"
)

// Canary tokens: tests grep raw Vault data and every error for them.
const (
	canaryAccess  = "canary-access-3b7f1e0c92d4"
	canaryRefresh = "canary-refresh-5a2e8d41c7f0"
)

// canaryGrant returns a grant for provider/user carrying the canary tokens.
func canaryGrant(provider, user string) *store.Grant {
	return &store.Grant{
		Provider:        provider,
		User:            user,
		AccessToken:     canaryAccess + "-" + user,
		RefreshToken:    canaryRefresh + "-" + user,
		TokenType:       "Bearer",
		Expiry:          time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC),
		Scopes:          []string{"chat:write"},
		Status:          store.StatusActive,
		ConnectedAt:     time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC),
		ProviderAccount: "U123",
		Generation:      1,
	}
}

// noCanary fails the test if s contains a canary token (or its base64).
func noCanary(t *testing.T, what, s string) {
	t.Helper()
	for _, c := range []string{canaryAccess, canaryRefresh} {
		for _, form := range []string{c, base64.StdEncoding.EncodeToString([]byte(c))[:16]} {
			if strings.Contains(s, form) {
				t.Errorf("%s contains a canary token (%q)", what, form)
			}
		}
	}
}

// rawEntry reads the current raw KV data of a grant with the root client.
func rawEntry(t *testing.T, s *Store, provider, user string) (map[string]any, json.Number) {
	t.Helper()
	sec, err := shared.Client().Logical().ReadWithContext(ctx(t), s.kvPath("data", grantKey(provider, user)))
	if err != nil || sec == nil {
		t.Fatalf("raw read %s/%s: %v", provider, user, err)
	}
	data, _ := sec.Data["data"].(map[string]any)
	meta, _ := sec.Data["metadata"].(map[string]any)
	v, _ := meta["version"].(json.Number)
	return data, v
}

func TestPlainStorageFormat(t *testing.T) {
	s := open(t, tokenConfig(t, shared))
	g := canaryGrant("slack", "alice")
	if _, err := s.Put(ctx(t), g, 0); err != nil {
		t.Fatal(err)
	}
	data, _ := rawEntry(t, s, "slack", "alice")
	want := map[string]any{
		"access_token":     g.AccessToken,
		"refresh_token":    g.RefreshToken,
		"token_type":       "Bearer",
		"expiry":           "2031-01-02T03:04:05Z",
		"scopes":           []any{"chat:write"},
		"status":           "active",
		"connected_at":     "2026-05-06T07:08:09Z",
		"provider_account": "U123",
		"generation":       json.Number("1"),
	}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("stored KV data (docs/design.md#grant-store fields) mismatch (-want +got):\n%s", diff)
	}

	// A grant written with Transit on, read by a store with Transit off,
	// is refused rather than handing out ciphertext as a token; and the
	// other way round, plaintext under Transit is refused too.
	cfg := tokenConfig(t, shared)
	enc := open(t, withTransit(cfg))
	plain := open(t, cfg)
	if _, err := enc.Put(ctx(t), canaryGrant("slack", "bob"), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := plain.Get(ctx(t), "slack", "bob"); !errors.Is(err, store.ErrDecrypt) {
		t.Errorf("Get of a transit grant with transit off: err = %v; want ErrDecrypt", err)
	}
	if _, err := plain.Put(ctx(t), canaryGrant("slack", "carol"), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := enc.Get(ctx(t), "slack", "carol"); !errors.Is(err, store.ErrDecrypt) {
		t.Errorf("Get of a plaintext grant with transit on: err = %v; want ErrDecrypt", err)
	}
}

func TestTransitStoresNoPlaintext(t *testing.T) {
	s := open(t, withTransit(tokenConfig(t, shared)))
	g := canaryGrant("slack", "alice")
	v1, err := s.Put(ctx(t), g, 0)
	if err != nil {
		t.Fatal(err)
	}
	g.Generation = 2
	if _, err := s.Put(ctx(t), g, v1); err != nil {
		t.Fatal(err)
	}
	// Every version and the metadata, as an operator with root would see
	// them.
	c := shared.Client().Logical()
	for _, p := range []string{
		s.kvPath("data", grantKey("slack", "alice")) + "?version=1",
		s.kvPath("data", grantKey("slack", "alice")),
		s.kvPath("metadata", grantKey("slack", "alice")),
	} {
		path, q, _ := strings.Cut(p, "?")
		var sec any
		var err error
		if q != "" {
			sec, err = c.ReadWithDataWithContext(ctx(t), path, map[string][]string{"version": {"1"}})
		} else {
			sec, err = c.ReadWithContext(ctx(t), path)
		}
		if err != nil {
			t.Fatalf("raw read %s: %v", p, err)
		}
		b, _ := json.Marshal(sec)
		noCanary(t, "raw KV "+p, string(b))
	}
	data, _ := rawEntry(t, s, "slack", "alice")
	for _, f := range []string{"access_token", "refresh_token"} {
		if v, _ := data[f].(string); !strings.HasPrefix(v, "vault:v1:") {
			t.Errorf("stored %s = %q; want a transit ciphertext", f, v)
		}
	}
	got, _, err := s.Get(ctx(t), "slack", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(g, got); diff != "" {
		t.Errorf("Get mismatch (-want +got):\n%s", diff)
	}
}

// TestTransitRegistrationSealed checks that an MCP server's client secret
// is Transit ciphertext in every stored version, bound to its server.
func TestTransitRegistrationSealed(t *testing.T) {
	s := open(t, withTransit(tokenConfig(t, shared)))
	reg := func(provider string) *store.Registration {
		return &store.Registration{
			Provider: provider, Resource: "https://mcp.example.com/" + provider, Issuer: "https://auth.example.com",
			AuthorizationEndpoint: "https://auth.example.com/authorize", TokenEndpoint: "https://auth.example.com/token",
			ClientID: "client-of-" + provider, ClientSecret: canaryAccess + "-secret-" + provider,
			AuthMethod: store.AuthMethodPost, Dynamic: true,
		}
	}
	v, err := s.PutRegistration(ctx(t), reg("notes"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutRegistration(ctx(t), reg("notes"), v); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutRegistration(ctx(t), reg("tickets"), 0); err != nil {
		t.Fatal(err)
	}
	l := shared.Client().Logical()
	path := s.kvPath("data", registrationKey("notes"))
	for _, version := range []string{"1", "2"} {
		sec, err := l.ReadWithDataWithContext(ctx(t), path, map[string][]string{"version": {version}})
		if err != nil || sec == nil {
			t.Fatalf("raw read %s version %s: %v", path, version, err)
		}
		b, _ := json.Marshal(sec)
		noCanary(t, "raw KV "+path+" version "+version, string(b))
		data, _ := sec.Data["data"].(map[string]any)
		if v, _ := data["client_secret"].(string); !strings.HasPrefix(v, "vault:v1:") {
			t.Errorf("stored client_secret = %q; want a transit ciphertext", v)
		}
	}
	// Moved to another server's entry, the ciphertext does not decrypt.
	sec, err := l.ReadWithContext(ctx(t), path)
	if err != nil || sec == nil {
		t.Fatal(err)
	}
	notes, _ := sec.Data["data"].(map[string]any)
	sec, err = l.ReadWithContext(ctx(t), s.kvPath("data", registrationKey("tickets")))
	if err != nil || sec == nil {
		t.Fatal(err)
	}
	tickets, _ := sec.Data["data"].(map[string]any)
	tickets["client_secret"] = notes["client_secret"]
	if _, err := l.WriteWithContext(ctx(t), s.kvPath("data", registrationKey("tickets")), map[string]any{"data": tickets}); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Registration(ctx(t), "tickets")
	if !errors.Is(err, store.ErrDecrypt) {
		t.Fatalf("Registration with another server's ciphertext: %v; want ErrDecrypt", err)
	}
	noCanary(t, "error", err.Error())
	got, _, err := s.Registration(ctx(t), "notes")
	if err != nil || got.ClientSecret != canaryAccess+"-secret-notes" {
		t.Errorf("Registration(notes) = %v, %v; want its secret", got, err)
	}
	// Deleting destroys the versions that held the secret.
	if err := s.DeleteRegistration(ctx(t), "notes"); err != nil {
		t.Fatal(err)
	}
	sec, err = l.ReadWithDataWithContext(ctx(t), path, map[string][]string{"version": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	if sec != nil && sec.Data["data"] != nil {
		t.Errorf("version 1 still readable after DeleteRegistration: %v", sec.Data["data"])
	}
}

func TestTransitCopiedCiphertextDoesNotDecrypt(t *testing.T) {
	s := open(t, withTransit(tokenConfig(t, shared)))
	for _, u := range []string{"alice", "bob"} {
		if _, err := s.Put(ctx(t), canaryGrant("slack", u), 0); err != nil {
			t.Fatal(err)
		}
	}
	aliceData, _ := rawEntry(t, s, "slack", "alice")
	bobData, _ := rawEntry(t, s, "slack", "bob")
	l := shared.Client().Logical()
	write := func(user string, data map[string]any) {
		t.Helper()
		if _, err := l.WriteWithContext(ctx(t), s.kvPath("data", grantKey("slack", user)), map[string]any{"data": data}); err != nil {
			t.Fatal(err)
		}
	}
	copyOf := func(m map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			out[k] = v
		}
		return out
	}

	tests := []struct {
		name   string
		tamper func() map[string]any
	}{
		{"alice's ciphertexts at bob's path", func() map[string]any {
			d := copyOf(bobData)
			d["access_token"], d["refresh_token"] = aliceData["access_token"], aliceData["refresh_token"]
			return d
		}},
		{"access and refresh swapped", func() map[string]any {
			d := copyOf(bobData)
			d["access_token"], d["refresh_token"] = bobData["refresh_token"], bobData["access_token"]
			return d
		}},
		{"plaintext token under transit", func() map[string]any {
			d := copyOf(bobData)
			d["access_token"] = "planted-plaintext-token"
			return d
		}},
		{"corrupt ciphertext", func() map[string]any {
			d := copyOf(bobData)
			d["access_token"] = "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
			return d
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tampered := tt.tamper()
			write("bob", tampered)
			_, before := rawEntry(t, s, "slack", "bob")
			_, _, err := s.Get(ctx(t), "slack", "bob")
			if !errors.Is(err, store.ErrDecrypt) {
				t.Fatalf("Get of tampered entry: err = %v; want ErrDecrypt", err)
			}
			noCanary(t, "error", err.Error())
			// The entry is left exactly as it was.
			after, v := rawEntry(t, s, "slack", "bob")
			if v != before {
				t.Errorf("version after failed Get = %s; want %s (untouched)", v, before)
			}
			if diff := cmp.Diff(tampered, after); diff != "" {
				t.Errorf("entry changed by failed Get (-before +after):\n%s", diff)
			}
		})
	}
	// Alice's own grant still opens.
	got, _, err := s.Get(ctx(t), "slack", "alice")
	if err != nil {
		t.Fatalf("Get alice: %v", err)
	}
	if got.AccessToken != canaryAccess+"-alice" {
		t.Errorf("alice's access token changed")
	}
}

func TestTransitKeyChecks(t *testing.T) {
	srv := shared
	if err := srv.WritePolicy("noop", `path "sys/nothing" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client().Logical().WriteWithContext(ctx(t), "transit/keys/not-derived", map[string]any{"derived": false}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		key, want string
	}{
		{"not-derived", "not derived"},
		{"missing-key", "not found"},
	} {
		t.Run(tt.key, func(t *testing.T) {
			cfg := withTransit(tokenConfig(t, srv))
			cfg.Transit.Key = tt.key
			s, err := Open(ctx(t), cfg, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open with transit key %s succeeded; want error", tt.key)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open error = %q; want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestDeleteNeverReusesVersions(t *testing.T) {
	s := open(t, tokenConfig(t, shared))
	g := canaryGrant("slack", "alice")
	v1, err := s.Put(ctx(t), g, 0)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s.Put(ctx(t), g, v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx(t), "slack", "alice"); err != nil {
		t.Fatal(err)
	}
	// The tombstone's version (v2+1) is as stale as v2: neither may write.
	for _, cas := range []store.Version{v1, v2, v2 + 1} {
		if _, err := s.Put(ctx(t), g, cas); !errors.Is(err, store.ErrConflict) {
			t.Errorf("Put with cas %d after Delete: err = %v; want ErrConflict", cas, err)
		}
	}
	v3, err := s.Put(ctx(t), canaryGrant("slack", "alice"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if v3 <= v2+1 {
		t.Errorf("version after delete and re-create = %d; want above the tombstone's %d (never reused)", v3, v2+1)
	}
	// A refresher that read v2 before the revoke cannot overwrite the new
	// connection: Vault would have restarted the key at version 1 had the
	// metadata been deleted, and v2 would have come round again.
	if _, err := s.Put(ctx(t), g, v2); !errors.Is(err, store.ErrConflict) {
		t.Errorf("stale Put with pre-delete version: err = %v; want ErrConflict", err)
	}
	// The deleted versions' data is destroyed, not merely hidden.
	md, err := shared.Client().Logical().ReadWithContext(ctx(t), s.kvPath("metadata", grantKey("slack", "alice")))
	if err != nil || md == nil {
		t.Fatalf("read metadata: %v", err)
	}
	versions, _ := md.Data["versions"].(map[string]any)
	for _, n := range []store.Version{v1, v2, v2 + 1} {
		vm, _ := versions[jsonUint(n)].(map[string]any)
		if d, _ := vm["destroyed"].(bool); !d {
			t.Errorf("version %d after Delete: destroyed = %v; want true", n, vm["destroyed"])
		}
	}
}

// jsonUint formats v as a metadata versions key.
func jsonUint(v store.Version) string {
	b, _ := json.Marshal(uint64(v))
	return string(b)
}

func TestDeleteFinishesInterruptedDestroy(t *testing.T) {
	s := open(t, tokenConfig(t, shared))
	v, err := s.Put(ctx(t), canaryGrant("slack", "alice"), 0)
	if err != nil {
		t.Fatal(err)
	}
	// A tombstone written, but the destroy never ran (as if the deleting
	// process died between the two calls).
	if _, err := shared.Client().Logical().WriteWithContext(ctx(t), s.kvPath("data", grantKey("slack", "alice")),
		map[string]any{"options": map[string]any{"cas": uint64(v)}, "data": map[string]any{"deleted": true}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of tombstone: err = %v; want ErrNotFound", err)
	}
	if err := s.Delete(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete of tombstone: err = %v; want ErrNotFound", err)
	}
	sec, err := shared.Client().Logical().ReadWithDataWithContext(ctx(t), s.kvPath("data", grantKey("slack", "alice")), map[string][]string{"version": {jsonUint(v)}})
	if err != nil {
		t.Fatal(err)
	}
	if sec != nil {
		if md, _ := sec.Data["metadata"].(map[string]any); md["destroyed"] != true {
			t.Errorf("version %d after finishing Delete: metadata %v; want destroyed", v, md)
		}
	}
}

func TestMountMustBeKVv2(t *testing.T) {
	sys := shared.Client().Sys()
	if err := sys.MountWithContext(ctx(t), "kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.UnmountWithContext(context.Background(), "kv1") })
	for _, tt := range []struct{ mount, want string }{
		{"kv1", "not a KV version 2 engine"},
		{"no-such-mount", "check mount no-such-mount"},
		{"transit", "not a KV version 2 engine"},
	} {
		t.Run(tt.mount, func(t *testing.T) {
			cfg := tokenConfig(t, shared)
			cfg.Mount = tt.mount
			s, err := Open(ctx(t), cfg, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open with mount %s succeeded; want error", tt.mount)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open with mount %s: err = %v; want it to say %q", tt.mount, err, tt.want)
			}
		})
	}

	// A mount that disappears under a running store: Vault answers 404
	// "no handler for route", which must not read as "no grant".
	if err := sys.MountWithContext(ctx(t), "kvtmp", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatal(err)
	}
	cfg := tokenConfig(t, shared)
	cfg.Mount = "kvtmp"
	s := open(t, cfg)
	if _, err := s.Put(ctx(t), canaryGrant("slack", "alice"), 0); err != nil {
		t.Fatal(err)
	}
	if err := sys.UnmountWithContext(ctx(t), "kvtmp"); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Get(ctx(t), "slack", "alice")
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after the mount was removed: err = %v; want ErrUnavailable, not ErrNotFound", err)
	}
	if _, err := s.List(ctx(t), ""); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("List after the mount was removed: err = %v; want ErrUnavailable", err)
	}
}

func TestReadSecret(t *testing.T) {
	s := open(t, tokenConfig(t, shared))
	if _, err := shared.Client().KVv2("secret").Put(ctx(t), "onbehalf/providers/slack", map[string]any{
		"client_id": "cid", "client_secret": "csecret-canary", "n": 3,
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadSecret(ctx(t), "onbehalf/providers/slack", "client_secret")
	if err != nil || got != "csecret-canary" {
		t.Errorf("ReadSecret = (%q, %v); want (csecret-canary, nil)", got, err)
	}
	tests := []struct {
		path, field string
		want        error
	}{
		{"onbehalf/providers/slack", "missing", ErrSecretNotFound},
		{"onbehalf/providers/github", "client_secret", ErrSecretNotFound},
		{"../sys/policy", "x", store.ErrInvalidArgument},
		{"/onbehalf/providers/slack", "x", store.ErrInvalidArgument},
		{"onbehalf//slack", "x", store.ErrInvalidArgument},
		{"onbehalf/providers/slack", "", store.ErrInvalidArgument},
		{"onbehalf/providers/slack", "a\nb", store.ErrInvalidArgument},
	}
	for _, tt := range tests {
		_, err := s.ReadSecret(ctx(t), tt.path, tt.field)
		if !errors.Is(err, tt.want) {
			t.Errorf("ReadSecret(%q, %q): err = %v; want %v", tt.path, tt.field, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "csecret-canary") {
			t.Errorf("ReadSecret error quotes the secret: %v", err)
		}
	}
	if _, err := s.ReadSecret(ctx(t), "onbehalf/providers/slack", "n"); err == nil || strings.Contains(err.Error(), "csecret") {
		t.Errorf("ReadSecret of a number field: err = %v; want a not-a-string error", err)
	}
}

func TestIgnoresEnvironment(t *testing.T) {
	// A listener that records any connection: a proxy or VAULT_ADDR taken
	// from the environment would connect here.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	bogus := "http://" + l.Addr().String()
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "VAULT_ADDR", "VAULT_AGENT_ADDR", "VAULT_PROXY_ADDR"} {
		t.Setenv(k, bogus)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	t.Setenv("VAULT_TOKEN", "bogus-env-token")
	t.Setenv("VAULT_NAMESPACE", "bogus-namespace")
	t.Setenv("VAULT_MAX_RETRIES", "9")

	s := open(t, tokenConfig(t, shared))
	v, err := s.Put(ctx(t), canaryGrant("slack", "alice"), 0)
	if err != nil {
		t.Fatalf("Put with bogus VAULT_*/proxy environment: %v", err)
	}
	if _, gv, err := s.Get(ctx(t), "slack", "alice"); err != nil || gv != v {
		t.Fatalf("Get with bogus environment = (%d, %v); want (%d, nil)", gv, err, v)
	}
	if err := s.Ping(ctx(t)); err != nil {
		t.Errorf("Ping with bogus environment: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("%d connections reached the address named in the environment; want 0", n)
	}
	// net/http never proxies loopback destinations, so the end-to-end check
	// above cannot see a transport that honours HTTPS_PROXY; check the
	// transport itself.
	tr, ok := s.sess.hc.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport is %T; want *http.Transport", s.sess.hc.Transport)
	}
	if tr.Proxy != nil {
		t.Errorf("transport Proxy is set; want nil (never a proxy from the environment)")
	}
	if got := s.sess.current().client.Namespace(); got != "" {
		t.Errorf("client namespace = %q; want none (VAULT_NAMESPACE ignored)", got)
	}
}

func TestErrorsCarryNoSecrets(t *testing.T) {
	srv := startVault(t, vaulttest.Options{})
	cfg := withTransit(tokenConfig(t, srv))
	cfg.Timeout = 2 * time.Second
	s := open(t, cfg)
	g := canaryGrant("slack", "alice")
	v, err := s.Put(ctx(t), g, 0)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	_, err = s.Put(ctx(t), g, v+7)
	errs = append(errs, err)
	_, err = s.Put(ctx(t), g, 0)
	errs = append(errs, err)
	l, _ := s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "h1", TTL: time.Minute})
	_, err = s.AcquireLease(ctx(t), "slack", "alice", store.LeaseRequest{Holder: "h2", TTL: time.Minute})
	errs = append(errs, err)
	_ = l
	srv.Stop()
	_, _, err = s.Get(ctx(t), "slack", "alice")
	errs = append(errs, err)
	_, err = s.Put(ctx(t), g, v)
	errs = append(errs, err)
	errs = append(errs, s.Ping(ctx(t)))
	for i, err := range errs {
		if err == nil {
			t.Errorf("error %d is nil; want an error", i)
			continue
		}
		msg := err.Error()
		noCanary(t, "error "+msg, msg)
		if strings.Contains(msg, srv.RootToken()) {
			t.Errorf("error %q contains the Vault token", msg)
		}
	}
}

// TestChangeFeedKeepsTheLatest: past maxFeedChanges, the oldest changes
// are dropped, so a reader that last read the feed before them can tell it
// fell behind (store.Changes.Covers).
func TestChangeFeedKeepsTheLatest(t *testing.T) {
	s := open(t, tokenConfig(t, shared))
	const extra = 3
	for i := range maxFeedChanges + extra {
		if err := s.RecordChange(ctx(t), "slack", fmt.Sprintf("u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.Changes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Seq != maxFeedChanges+extra || len(c.List) != maxFeedChanges {
		t.Fatalf("feed has Seq %d and %d changes; want %d and %d", c.Seq, len(c.List), maxFeedChanges+extra, maxFeedChanges)
	}
	if first := c.List[0]; first.Seq != extra+1 || first.User != fmt.Sprintf("u%d", extra) {
		t.Errorf("oldest change kept = %+v; want seq %d, user u%d", first, extra+1, extra)
	}
	if c.Covers(extra - 1) {
		t.Errorf("Covers(%d) = true; want false: changes %d..%d were dropped", extra-1, extra-1, extra)
	}
	if !c.Covers(extra) {
		t.Errorf("Covers(%d) = false; want true: every later change is kept", extra)
	}
	// The entry stays one small read.
	raw, err := shared.Client().Logical().ReadRawWithContext(ctx(t), s.kvPath("data", changesKey))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Body.Close()
	b, err := io.ReadAll(raw.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 1000 || len(b) > 100<<10 {
		t.Errorf("feed entry is %d bytes; want under 100 KiB (and not empty)", len(b))
	}
}
