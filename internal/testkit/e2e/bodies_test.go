//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/upstreamtest"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// TestRequestBodies sends bodies in every framing over one keep-alive
// tunnel and checks that each arrives intact and that the connection stays
// usable.
func TestRequestBodies(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	assertion := e.Assert(t, testenv.User)
	hostport := fmt.Sprintf("%s:%d", testenv.APIHost, e.Upstream.Port())
	c := rawTunnel(t, e)
	br := bufio.NewReader(c)
	big := strings.Repeat("x", 300<<10)
	reqs := []struct {
		raw, body string
	}{
		{"POST /api/a HTTP/1.1\r\nHost: " + hostport + "\r\n" + identity.DefaultHeader + ": " + assertion + "\r\nContent-Length: 5\r\n\r\nhello", "hello"},
		{"POST /api/b HTTP/1.1\r\nHost: " + hostport + "\r\n" + identity.DefaultHeader + ": " + assertion + "\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n", "abcde"},
		{"POST /api/c HTTP/1.1\r\nHost: " + hostport + "\r\n" + identity.DefaultHeader + ": " + assertion + "\r\nContent-Length: " + fmt.Sprint(len(big)) + "\r\n\r\n" + big, big},
		{"GET /api/d HTTP/1.1\r\nHost: " + hostport + "\r\n" + identity.DefaultHeader + ": " + assertion + "\r\n\r\n", ""},
	}
	for i, r := range reqs {
		if _, err := io.WriteString(c, r.raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		got := e.Upstream.Requests()
		if len(got) != i+1 || string(got[i].Body) != r.body {
			t.Fatalf("request %d: upstream got %d requests, body of %d bytes; want %d bytes", i, len(got), len(got[len(got)-1].Body), len(r.body))
		}
	}
}

// TestEarlyUpstreamAnswer: an upstream that answers before reading a large
// upload. The agent gets the answer; the proxy never reads the tunnel while
// the transport still owns the body (the race detector watches).
func TestEarlyUpstreamAnswer(t *testing.T) {
	e := testenv.New(t, testenv.Options{Upstream: upstreamtest.Options{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})}})
	client := e.Client()
	assertion := e.Assert(t, testenv.User)
	for range 3 {
		req, _ := http.NewRequest(http.MethodPost, e.APIURL("/api/upload"), bytes.NewReader(make([]byte, 4<<20)))
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := client.Do(req)
		if err != nil {
			// The proxy may close the tunnel while the client still writes;
			// that is a clean refusal, not a hang.
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d; want 413", resp.StatusCode)
		}
	}
	// The proxy still serves.
	req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/x"), nil)
	req.Header.Set(identity.DefaultHeader, assertion)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestExpectContinueRefused: a request refused before its body is read
// never gets a 100 Continue, and the body is not waited for.
func TestExpectContinueRefused(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	hostport := fmt.Sprintf("%s:%d", testenv.APIHost, e.Upstream.Port())
	c := rawTunnel(t, e)
	start := time.Now()
	io.WriteString(c, "POST /api/x HTTP/1.1\r\nHost: "+hostport+"\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 401 {
		t.Errorf("status %d; want 401 (no assertion) without a 100 first", resp.StatusCode)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("refusal took %v: the proxy waited for a body it never asked for", time.Since(start))
	}

	// With an assertion the client is told to continue and the body arrives.
	e.Upstream.Reset()
	c2 := rawTunnel(t, e)
	br := bufio.NewReader(c2)
	io.WriteString(c2, "POST /api/y HTTP/1.1\r\nHost: "+hostport+"\r\n"+identity.DefaultHeader+": "+e.Assert(t, testenv.User)+"\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	cont, err := http.ReadResponse(br, nil)
	if err != nil || cont.StatusCode != 100 {
		t.Fatalf("got %v %v; want 100 Continue", cont, err)
	}
	io.WriteString(c2, "hello")
	final, err := http.ReadResponse(br, nil)
	if err != nil || final.StatusCode != 200 {
		t.Fatalf("got %v %v; want 200", final, err)
	}
	if got := e.Upstream.Requests(); len(got) != 1 || string(got[0].Body) != "hello" {
		t.Errorf("upstream did not get the body")
	}
}
