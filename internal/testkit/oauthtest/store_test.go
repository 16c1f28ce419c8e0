package oauthtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ory/fosite"
)

// newStoredRequest returns a request of family id for user at client.
func newStoredRequest(id, client, user string) *fosite.Request {
	r := fosite.NewRequest()
	r.ID = id
	r.Client = &fosite.DefaultClient{ID: client}
	r.Session = newSession(user)
	r.GrantScope("read")
	r.Form.Set("redirect_uri", "http://127.0.0.1/cb")
	return r
}

func TestStoreCopiesRequests(t *testing.T) {
	ctx := context.Background()
	st := newStore()
	orig := newStoredRequest("fam", "app", "alice")
	if err := st.CreateAccessTokenSession(ctx, "at1", orig); err != nil {
		t.Fatal(err)
	}
	// Mutating the original or a returned copy must not reach the store.
	orig.GrantScope("write")
	orig.Form.Set("redirect_uri", "changed")
	orig.Session.SetExpiresAt(fosite.AccessToken, time.Unix(1, 0))
	got, err := st.GetAccessTokenSession(ctx, "at1", nil)
	if err != nil {
		t.Fatal(err)
	}
	got.GetSession().SetExpiresAt(fosite.AccessToken, time.Unix(2, 0))
	got.GrantScope("admin")

	again, _ := st.GetAccessTokenSession(ctx, "at1", nil)
	if s := again.GetGrantedScopes(); len(s) != 1 || s[0] != "read" {
		t.Errorf("stored scopes %v; want [read]", s)
	}
	if v := again.GetRequestForm().Get("redirect_uri"); v != "http://127.0.0.1/cb" {
		t.Errorf("stored redirect_uri %q; want the original", v)
	}
	if exp := again.GetSession().GetExpiresAt(fosite.AccessToken); !exp.IsZero() {
		t.Errorf("stored expiry %v; want zero", exp)
	}
}

func TestStoreFamilies(t *testing.T) {
	ctx := context.Background()
	st := newStore()
	a := newStoredRequest("famA", "app", "alice")
	b := newStoredRequest("famB", "app", "alice")
	c := newStoredRequest("famC", "app", "bob")
	for _, tok := range []struct {
		at, rt string
		req    fosite.Requester
	}{{"a-at1", "a-rt1", a}, {"a-at2", "a-rt2", a}, {"b-at1", "b-rt1", b}, {"c-at1", "c-rt1", c}} {
		if err := st.CreateAccessTokenSession(ctx, tok.at, tok.req); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateRefreshTokenSession(ctx, tok.rt, tok.at, tok.req); err != nil {
			t.Fatal(err)
		}
	}

	if err := st.RotateRefreshToken(ctx, "famA", "a-rt1"); err != nil {
		t.Fatalf("RotateRefreshToken: %v", err)
	}
	if err := st.RotateRefreshToken(ctx, "famA", "a-rt1"); !errors.Is(err, fosite.ErrSerializationFailure) {
		t.Errorf("second RotateRefreshToken = %v; want ErrSerializationFailure", err)
	}
	if _, err := st.GetAccessTokenSession(ctx, "a-at1", nil); err != nil {
		t.Errorf("access token of a rotated refresh token: %v; want kept (revokeAccessOnRotate off)", err)
	}
	// At the revocation endpoint a used token is merely inactive.
	if r, err := st.GetRefreshTokenSession(ctx, "a-rt1", nil); !errors.Is(err, fosite.ErrInactiveToken) || r == nil {
		t.Errorf("used refresh token: %v, %v; want its request and ErrInactiveToken", r, err)
	}
	// At the token endpoint it is reuse.
	probe := &reuseProbe{}
	pctx := context.WithValue(ctx, reuseProbeKey{}, probe)
	if _, err := st.GetRefreshTokenSession(pctx, "a-rt1", nil); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Errorf("used refresh token: %v; want ErrInactiveToken", err)
	}
	if !probe.detected || probe.user != "alice" || probe.client != "app" {
		t.Errorf("probe = %+v; want a detection for app/alice", probe)
	}
	if _, err := st.GetRefreshTokenSession(pctx, "a-rt2", nil); err != nil {
		t.Errorf("unused refresh token: %v", err)
	}

	if err := st.RevokeRefreshToken(ctx, "famA"); err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeAccessToken(ctx, "famA"); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []string{"a-rt1", "a-rt2"} {
		if _, err := st.GetRefreshTokenSession(ctx, sig, nil); !errors.Is(err, fosite.ErrNotFound) {
			t.Errorf("refresh %s after family revocation: %v; want ErrNotFound", sig, err)
		}
	}
	for _, sig := range []string{"a-at1", "a-at2"} {
		if _, err := st.GetAccessTokenSession(ctx, sig, nil); !errors.Is(err, fosite.ErrNotFound) {
			t.Errorf("access %s after family revocation: %v; want ErrNotFound", sig, err)
		}
	}
	if _, err := st.GetAccessTokenSession(ctx, "b-at1", nil); err != nil {
		t.Errorf("other family's access token: %v; want kept", err)
	}
	if _, ok := st.families["famA"]; ok {
		t.Errorf("revoked family still indexed")
	}

	if n := st.revokeUser("alice"); n != 1 {
		t.Errorf("revokeUser(alice) = %d; want 1 (famB)", n)
	}
	if _, err := st.GetRefreshTokenSession(ctx, "c-rt1", nil); err != nil {
		t.Errorf("bob's refresh token after revokeUser(alice): %v", err)
	}
}

func TestStoreRevokeAccessOnRotate(t *testing.T) {
	ctx := context.Background()
	st := newStore()
	st.revokeAccessOnRotate = true
	r := newStoredRequest("fam", "app", "alice")
	_ = st.CreateAccessTokenSession(ctx, "at1", r)
	_ = st.CreateRefreshTokenSession(ctx, "rt1", "at1", r)
	if err := st.RotateRefreshToken(ctx, "fam", "rt1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetAccessTokenSession(ctx, "at1", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("access token after rotation: %v; want ErrNotFound", err)
	}
}

func TestSecretHasher(t *testing.T) {
	ctx := context.Background()
	h, err := secretHasher{}.Hash(ctx, []byte("s3cret-value"))
	if err != nil {
		t.Fatal(err)
	}
	if err := (secretHasher{}).Compare(ctx, h, []byte("s3cret-value")); err != nil {
		t.Errorf("Compare(right secret) = %v; want nil", err)
	}
	for _, wrong := range []string{"", "s3cret-valuf", "s3cret-value "} {
		if err := (secretHasher{}).Compare(ctx, h, []byte(wrong)); !errors.Is(err, errSecretMismatch) {
			t.Errorf("Compare(%q) = %v; want errSecretMismatch", wrong, err)
		}
	}
}
