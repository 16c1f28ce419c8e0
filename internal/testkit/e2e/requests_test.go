//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
)

// TestMalformedRequestEchoesNothing sends requests whose malformed part
// carries a marker and checks that the marker reaches neither the answer
// (body and headers), nor the audit record, nor the operational log: errors
// name the problem, never the request's bytes (a malformed line may hold an
// assertion or a credential).
func TestMalformedRequestEchoesNothing(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	const marker = "Zq7MarkerBytes"
	host := "Host: " + testenv.APIHost + ":" + itoa(e.Upstream.Port()) + "\r\n"
	tests := []struct {
		name string
		raw  string
	}{
		{"extra word in the request line", "GET /api/x " + marker + " HTTP/1.1\r\n" + host + "\r\n"},
		{"invalid method", "G(" + marker + " /api/x HTTP/1.1\r\n" + host + "\r\n"},
		{"invalid version", "GET /api/x HTTP/1." + marker + "\r\n" + host + "\r\n"},
		{"invalid request target", "GET http://[" + marker + " HTTP/1.1\r\n" + host + "\r\n"},
		{"invalid header name", "GET /api/x HTTP/1.1\r\n" + host + "X-" + marker + "@: v\r\n\r\n"},
		{"header line without a colon", "GET /api/x HTTP/1.1\r\n" + host + "Onbehalf-Assertion " + marker + "\r\n\r\n"},
		{"invalid Content-Length", "POST /api/x HTTP/1.1\r\n" + host + "Content-Length: 1" + marker + "\r\n\r\n"},
		{"invalid Transfer-Encoding", "POST /api/x HTTP/1.1\r\n" + host + "Transfer-Encoding: " + marker + "\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := roundTripRaw(t, rawTunnel(t, e), tt.raw)
			if resp.StatusCode != http.StatusBadRequest || body.Error != "bad_request" {
				t.Errorf("got %d %s; want 400 bad_request", resp.StatusCode, body.Error)
			}
			var head bytes.Buffer
			_ = resp.Header.Write(&head)
			if bytes.Contains(head.Bytes(), []byte(marker)) || bytes.Contains([]byte(body.Message), []byte(marker)) {
				t.Errorf("the answer echoes the request's bytes: %s / %s", head.Bytes(), body.Message)
			}
			rec := e.WaitRecord(t, body.DecisionID)
			if reason, _ := rec["reason"].(string); bytes.Contains([]byte(reason), []byte(marker)) || reason == "" {
				t.Errorf("audit reason = %q; want the problem named without the request's bytes", reason)
			}
		})
	}
	if bytes.Contains(e.AuditRaw(t), []byte(marker)) {
		t.Error("the audit trail holds the request's bytes")
	}
	if bytes.Contains(e.Logs(), []byte(marker)) {
		t.Error("the operational log holds the request's bytes")
	}
}

// TestLookalikeHeadersRefused sends headers spelled with "_" that servers
// behind CGI or WSGI read as framing, hop-by-hop, identity or credential
// headers. Each request is refused with 400 and nothing reaches the
// upstream; an ordinary header with "_" still passes.
func TestLookalikeHeadersRefused(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Routes[0].StripHeaders = []string{"X-Api-Key"}
	}})
	assertion := e.Assert(t, testenv.User)
	head := "POST /api/x HTTP/1.1\r\nHost: " + testenv.APIHost + ":" + itoa(e.Upstream.Port()) + "\r\nOnbehalf-Assertion: " + assertion + "\r\n"
	for _, h := range []string{
		"Transfer_Encoding: chunked",
		"transfer_encoding: chunked",
		"Content_Length: 3",
		"Connection_: x", // not a look-alike: a different length
		"Host_Name: x",   // not a look-alike either
		"Connection: close\r\nkeep_alive: 1",
		"Upgrade_: x",
		"X_Forwarded_For: 1.2.3.4",
		"Proxy_Authorization: Bearer x",
		"Proxy_Anything: x",
		"Onbehalf_Assertion: " + assertion,
		"Authorization_: x",
		"X_Api_Key: agent-key",
		"Expect_: x",
	} {
		// Named after the last header's name: the value may be the
		// assertion, which has no place in test names.
		label := h[strings.LastIndex(h, "\n")+1:]
		label, _, _ = strings.Cut(label, ":")
		t.Run(label, func(t *testing.T) {
			e.Upstream.Reset()
			raw := head + h + "\r\nContent-Length: 5\r\n\r\nhello"
			refused := !strings.HasPrefix(h, "Connection_") && !strings.HasPrefix(h, "Host_Name") &&
				!strings.HasPrefix(h, "Upgrade_") && !strings.HasPrefix(h, "X_Forwarded") &&
				!strings.HasPrefix(h, "Authorization_") && !strings.HasPrefix(h, "Expect_")
			c := rawTunnel(t, e)
			if _, err := io.WriteString(c, raw); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if refused {
				if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Onbehalf-Error") != "bad_request" {
					t.Errorf("got %d %s; want 400 bad_request", resp.StatusCode, resp.Header.Get("Onbehalf-Error"))
				}
				if n := len(e.Upstream.Requests()); n != 0 {
					t.Errorf("%d requests reached the upstream; want 0", n)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("got %d %s; want 200 (not a look-alike)", resp.StatusCode, resp.Header.Get("Onbehalf-Error"))
			}
		})
	}
}

// TestPathCanonical sends, on a route limited to /api/, the path tricks of
// the adversarial review and their relatives: each is refused with 400
// before anything reaches the upstream. Paths that are only spelled
// unusually are forwarded in their canonical form, which is also what the
// audit record (and policy) sees.
func TestPathCanonical(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) { c.Routes[0].Paths = []string{"/api/"} }})
	assertion := e.Assert(t, testenv.User)
	host := "Host: " + testenv.APIHost + ":" + itoa(e.Upstream.Port()) + "\r\nOnbehalf-Assertion: " + assertion + "\r\n"
	for _, p := range []string{
		"/api/..;/echo",
		"/api/..%3b/echo",
		"/api/%2e%2e;/echo",
		"/api/%252e%252e/echo",
		"/api/..%c0%af/echo",
		"/api/%c0%ae%c0%ae/echo",
		"/api/..%ef%bc%8fecho",
		"/api/..%5cecho",
		`/api/..\echo`,
		"/api/..%2fecho",
		"/api;x=1/../echo",
		"/api/x;/../../echo",
		"/api//../echo",
		"/api/%00/echo",
		"/api/x%0d%0aX-Injected:1",
		"/api/grp%2Fproj",
	} {
		t.Run(p, func(t *testing.T) {
			e.Upstream.Reset()
			resp, body := roundTripRaw(t, rawTunnel(t, e), "GET "+p+" HTTP/1.1\r\n"+host+"\r\n")
			if resp.StatusCode != http.StatusBadRequest || body.Error != "bad_request" {
				t.Errorf("got %d %s (%s); want 400 bad_request", resp.StatusCode, body.Error, body.Message)
			}
			if n := len(e.Upstream.Requests()); n != 0 {
				t.Errorf("%d requests reached the upstream; want 0", n)
			}
		})
	}
	t.Run("canonical form forwarded and audited", func(t *testing.T) {
		e.Upstream.Reset()
		c := rawTunnel(t, e)
		if _, err := io.WriteString(c, "GET /%61pi/caf%c3%a9?x=1 HTTP/1.1\r\n"+host+"\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d; want 200", resp.StatusCode)
		}
		if reqs := e.Upstream.Requests(); len(reqs) != 1 || reqs[0].Path != "/api/café" {
			t.Errorf("upstream saw %+v; want one request for /api/café", reqs)
		}
		rec := e.WaitRecord(t, resp.Header.Get("Onbehalf-Decision-Id"))
		if rec["path"] != "/api/caf%C3%A9?x=1" {
			t.Errorf("audited path %q; want the canonical /api/caf%%C3%%A9?x=1", rec["path"])
		}
	})
}
