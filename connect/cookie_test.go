package connect

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

func testSealer(t testing.TB) *sealer {
	t.Helper()
	s, err := newSealer(bytes.Repeat([]byte{7}, SessionKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealer(t *testing.T) {
	s := testSealer(t)
	now := time.Now().UTC().Truncate(time.Second)
	in := session{User: "alice", Via: viaLink, CSRF: "csrf", Expiry: now, Flows: []flow{{StateHash: "h", Provider: "acme", User: "alice", Verifier: "v", Expiry: now}}}
	v, err := s.seal("c", &in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(v, "alice") {
		t.Error("sealed value shows its content")
	}
	var out session
	if err := s.open("c", v, &out); err != nil {
		t.Fatalf("open: %v", err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	other, err := newSealer(bytes.Repeat([]byte{8}, SessionKeySize))
	if err != nil {
		t.Fatal(err)
	}
	flipped := []byte(v)
	flipped[len(flipped)/2] ^= 1
	for name, open := range map[string]func() error{
		"another cookie name": func() error { return s.open("d", v, &out) },
		"another key":         func() error { return other.open("c", v, &out) },
		"altered":             func() error { return s.open("c", string(flipped), &out) },
		"truncated":           func() error { return s.open("c", v[:10], &out) },
		"empty":               func() error { return s.open("c", "", &out) },
		"not base64":          func() error { return s.open("c", "!!!", &out) },
		"oversized":           func() error { return s.open("c", strings.Repeat("A", maxCookieBytes+1), &out) },
	} {
		if err := open(); !errors.Is(err, errCookie) {
			t.Errorf("%s: %v; want errCookie", name, err)
		}
	}
	if _, err := s.seal("c", strings.Repeat("x", maxCookieBytes)); err == nil {
		t.Error("sealing an oversized value succeeded")
	}
}

func TestSessionKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "session.key")
	k1, err := LoadOrCreateSessionKey(path)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != SessionKeySize {
		t.Errorf("key file mode %v, size %d; want 0600 and %d", fi.Mode().Perm(), fi.Size(), SessionKeySize)
	}
	k2, err := LoadOrCreateSessionKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("reload: %v, same key %v", err, bytes.Equal(k1, k2))
	}
	if err := os.Chmod(path, 0o440); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSessionKey(path); err != nil {
		t.Errorf("0440 key (a Secret mounted with an fsGroup): %v; want accepted", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSessionKey(path); err == nil {
		t.Error("group-writable key accepted")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSessionKey(path); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Errorf("world-readable key: %v; want refused", err)
	}
	short := writeFile(t, dir, "short.key", "too short")
	if _, err := LoadOrCreateSessionKey(short); err == nil {
		t.Error("short key accepted")
	}
}

// TestCookieAttributes checks the session cookie's name and attributes
// for an https and a loopback http external URL.
func TestCookieAttributes(t *testing.T) {
	for _, tc := range []struct {
		secure   bool
		wantName string
	}{
		{true, "__Host-onbehalf-session"},
		{false, "onbehalf-session"},
	} {
		c := newCookies(tc.secure, testSealer(t))
		w := httptest.NewRecorder()
		now := time.Now()
		if err := c.write(w, newSession(now, time.Hour), now); err != nil {
			t.Fatal(err)
		}
		got := w.Result().Cookies()
		if len(got) != 1 {
			t.Fatalf("cookies: %d; want 1", len(got))
		}
		ck := got[0]
		if ck.Name != tc.wantName || ck.Secure != tc.secure || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode ||
			ck.Path != "/" || ck.Domain != "" || ck.MaxAge != 3600 {
			t.Errorf("cookie %+v; want %s, Secure %v, HttpOnly, SameSite=Lax, Path=/, no Domain, Max-Age 3600", ck, tc.wantName, tc.secure)
		}
		// A planted cookie that does not open is skipped, an expired
		// session is no session.
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.AddCookie(&http.Cookie{Name: tc.wantName, Value: "planted"})
		req.AddCookie(ck)
		if s := c.read(req, now); s == nil {
			t.Error("valid cookie after a planted one not read")
		}
		if s := c.read(req, now.Add(2*time.Hour)); s != nil {
			t.Error("expired session read")
		}
	}
}

func TestSessionFlows(t *testing.T) {
	now := time.Now()
	s := newSession(now, time.Hour)
	for i := range maxPendingFlows + 2 {
		s.addFlow(flow{StateHash: hashState(string(rune('a' + i))), Expiry: now.Add(time.Minute)})
	}
	if len(s.Flows) != maxPendingFlows {
		t.Fatalf("flows: %d; want %d", len(s.Flows), maxPendingFlows)
	}
	if _, ok := s.takeFlow(hashState("a")); ok {
		t.Error("oldest flow kept beyond the limit")
	}
	if _, ok := s.takeFlow(hashState("e")); !ok {
		t.Error("newest flow missing")
	}
	if _, ok := s.takeFlow(hashState("e")); ok {
		t.Error("flow taken twice")
	}
	s.Link = &linkGrant{User: "alice", Provider: "acme", Expiry: now.Add(time.Minute)}
	n := s.signedIn("alice", viaOIDC, now, time.Hour)
	if n.CSRF == s.CSRF || len(n.Flows) != 0 || n.Link == nil {
		t.Errorf("signedIn: new CSRF %v, flows %d, link kept %v; want a new CSRF, no flows, the link", n.CSRF != s.CSRF, len(n.Flows), n.Link != nil)
	}
	s.prune(now.Add(2 * time.Minute))
	if len(s.Flows) != 0 || s.Link != nil {
		t.Error("prune kept expired flows or link")
	}
	if !s.checkCSRF(s.CSRF) || s.checkCSRF("") || s.checkCSRF(s.CSRF+"x") || (*session)(nil).checkCSRF("x") {
		t.Error("checkCSRF")
	}
}

// failingStore fails AcquireLease with ErrUnavailable once, then passes
// through.
type failingStore struct {
	store.Store
	failed bool
}

func (f *failingStore) AcquireLease(ctx context.Context, provider, user string, req store.LeaseRequest) (*store.Lease, error) {
	if !f.failed {
		f.failed = true
		return nil, store.ErrUnavailable
	}
	return f.Store.AcquireLease(ctx, provider, user, req)
}

func TestOnceSet(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	now := time.Now()
	a := newOnceSet(e.store, "replica-a", time.Now)
	b := newOnceSet(e.store, "replica-b", time.Now)
	exp := now.Add(time.Minute)
	if err := a.use(ctx, leaseLinks, "jti-1", exp); err != nil {
		t.Fatalf("first use: %v", err)
	}
	for name, err := range map[string]error{
		"same process":  a.use(ctx, leaseLinks, "jti-1", exp),
		"other replica": b.use(ctx, leaseLinks, "jti-1", exp),
		"expired":       a.use(ctx, leaseLinks, "jti-2", now.Add(-time.Second)),
	} {
		if !errors.Is(err, errReplayed) {
			t.Errorf("%s: %v; want errReplayed", name, err)
		}
	}
	if err := a.use(ctx, leaseStates, "jti-1", exp); err != nil {
		t.Errorf("same id of another kind: %v; want accepted", err)
	}
	// A store failure refuses the use without burning the id.
	f := newOnceSet(&failingStore{Store: e.store}, "replica-c", time.Now)
	if err := f.use(ctx, leaseLinks, "jti-3", exp); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("with the store failing: %v; want ErrUnavailable", err)
	}
	if err := f.use(ctx, leaseLinks, "jti-3", exp); err != nil {
		t.Errorf("after the store recovered: %v; want accepted", err)
	}
}
