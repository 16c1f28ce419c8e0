package vault

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// fakeNode is one fake Vault node for the failover unit tests: it answers every
// request with status and body, and counts the requests and bodies it got.
type fakeNode struct {
	srv    *httptest.Server
	hits   atomic.Int32
	bodies atomic.Value
}

func newFakeNode(t *testing.T, status int, body string) *fakeNode {
	t.Helper()
	n := &fakeNode{}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		n.bodies.Store(string(b))
		if status >= 300 && status < 400 {
			w.Header().Set("Location", "http://127.0.0.1:1/v1/elsewhere")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

// deadAddr returns the address of a loopback port nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	return addr
}

func TestFailover(t *testing.T) {
	const ok = `{"data":{}}`
	tests := []struct {
		name     string
		path     string
		nodes    func(t *testing.T) ([]string, []*fakeNode)
		want     int // status the caller gets
		wantHits []int32
		wantCur  uint32 // preferred index afterwards
	}{
		{"down, redirect and sealed nodes are skipped", "/v1/secret/data/x", func(t *testing.T) ([]string, []*fakeNode) {
			r := newFakeNode(t, http.StatusTemporaryRedirect, "")
			s := newFakeNode(t, http.StatusServiceUnavailable, `{"errors":["Vault is sealed"]}`)
			a := newFakeNode(t, http.StatusOK, ok)
			return []string{deadAddr(t), r.srv.URL, s.srv.URL, a.srv.URL}, []*fakeNode{nil, r, s, a}
		}, http.StatusOK, []int32{0, 1, 1, 1}, 3},
		{"a standby without an active node is skipped", "/v1/secret/data/x", func(t *testing.T) ([]string, []*fakeNode) {
			s := newFakeNode(t, http.StatusInternalServerError, `{"errors":["local node not active but active cluster node not found"]}`)
			a := newFakeNode(t, http.StatusOK, ok)
			return []string{s.srv.URL, a.srv.URL}, []*fakeNode{s, a}
		}, http.StatusOK, []int32{1, 1}, 1},
		{"a failed forward is not resent", "/v1/secret/data/x", func(t *testing.T) ([]string, []*fakeNode) {
			s := newFakeNode(t, http.StatusInternalServerError, `{"errors":["error during forwarding RPC request"]}`)
			a := newFakeNode(t, http.StatusOK, ok)
			return []string{s.srv.URL, a.srv.URL}, []*fakeNode{s, a}
		}, http.StatusInternalServerError, []int32{1, 0}, 1},
		{"a client error is the answer", "/v1/secret/data/x", func(t *testing.T) ([]string, []*fakeNode) {
			s := newFakeNode(t, http.StatusBadRequest, `{"errors":["check-and-set parameter did not match the current version"]}`)
			a := newFakeNode(t, http.StatusOK, ok)
			return []string{s.srv.URL, a.srv.URL}, []*fakeNode{s, a}
		}, http.StatusBadRequest, []int32{1, 0}, 0},
		{"health finds the active node", "/v1/sys/health", func(t *testing.T) ([]string, []*fakeNode) {
			s := newFakeNode(t, http.StatusTooManyRequests, `{"standby":true}`)
			a := newFakeNode(t, http.StatusOK, `{"standby":false}`)
			return []string{s.srv.URL, a.srv.URL}, []*fakeNode{s, a}
		}, http.StatusOK, []int32{1, 1}, 1},
		{"every node redirecting: the last answer", "/v1/secret/data/x", func(t *testing.T) ([]string, []*fakeNode) {
			r1 := newFakeNode(t, http.StatusTemporaryRedirect, "")
			r2 := newFakeNode(t, http.StatusTemporaryRedirect, "")
			return []string{r1.srv.URL, r2.srv.URL}, []*fakeNode{r1, r2}
		}, http.StatusTemporaryRedirect, []int32{1, 1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addrs, nodes := tt.nodes(t)
			f, err := newFailover(http.DefaultTransport.(*http.Transport).Clone(), addrs, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			// The request is built for the first address, as the API
			// client builds it.
			req, _ := http.NewRequest(http.MethodPut, addrs[0]+tt.path, strings.NewReader(`{"data":{"k":"v"}}`))
			resp, err := f.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status: got %d (%s); want %d", resp.StatusCode, body, tt.want)
			}
			for i, n := range nodes {
				if n == nil {
					continue
				}
				if got := n.hits.Load(); got != tt.wantHits[i] {
					t.Errorf("node %d: got %d requests; want %d", i, got, tt.wantHits[i])
				}
				if b, _ := n.bodies.Load().(string); n.hits.Load() > 0 && b != `{"data":{"k":"v"}}` {
					t.Errorf("node %d: got body %q; want the request's", i, b)
				}
			}
			if got := f.cur.Load(); got != tt.wantCur {
				t.Errorf("preferred node afterwards: got %d; want %d", got, tt.wantCur)
			}
		})
	}
}

// TestFailoverRedirectIsUnavailable checks that a standby's redirect reaching
// an operation is an error, never an empty success.
func TestFailoverRedirectIsUnavailable(t *testing.T) {
	r := newFakeNode(t, http.StatusTemporaryRedirect, "")
	cfg := validConfig()
	cfg.Address = ""
	cfg.Addresses = []string{deadAddr(t), r.srv.URL}
	hc, err := newHTTPClient(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	c, err := newAPIClient(hc, cfg, "t")
	if err != nil {
		t.Fatal(err)
	}
	var out kvReadResponse
	status, err := request(t.Context(), c, http.MethodGet, "secret/data/x", nil, &out)
	if status != http.StatusTemporaryRedirect || !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "standby") {
		t.Errorf("got %d, %v; want 307 and a store-unavailable error", status, err)
	}
}

// recorder is a RoundTripper that records the hosts it was asked for.
type recorder struct {
	next  http.RoundTripper
	hosts []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.hosts = append(r.hosts, req.URL.Host)
	return r.next.RoundTrip(req)
}

// TestFailoverDeadNodeLast checks that a node that refused a connection is
// tried after the others for a while, even when every node failed (an
// election): a dead node must not cost every request a dial.
func TestFailoverDeadNodeLast(t *testing.T) {
	dead := deadAddr(t)
	r1 := newFakeNode(t, http.StatusTemporaryRedirect, "")
	r2 := newFakeNode(t, http.StatusInternalServerError, `{"errors":["local node not active but active cluster node not found"]}`)
	rec := &recorder{next: http.DefaultTransport.(*http.Transport).Clone()}
	f, err := newFailover(rec, []string{dead, r1.srv.URL, r2.srv.URL}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	for call := range 2 {
		rec.hosts = nil
		req, _ := http.NewRequest(http.MethodGet, dead+"/v1/secret/data/x", nil)
		resp, err := f.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		want := []string{host(r1.srv.URL), host(r2.srv.URL), host(dead)}
		if call == 0 {
			want = []string{host(dead), host(r1.srv.URL), host(r2.srv.URL)}
		}
		if !slices.Equal(rec.hosts, want) {
			t.Errorf("call %d tried %v; want %v", call, rec.hosts, want)
		}
	}
}
