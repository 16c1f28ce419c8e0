package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

func TestMutateRejectsBadRequests(t *testing.T) {
	ws := startServer(t, "native")
	big := append([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":"`),
		bytes.Repeat([]byte("a"), maxReviewBytes)...)
	big = append(big, `"}}`...)
	tests := []struct {
		name        string
		method      string
		contentType string
		body        []byte
		want        int
	}{
		{"GET", http.MethodGet, "", nil, http.StatusMethodNotAllowed},
		{"wrong content type", http.MethodPost, "text/plain", []byte(`{}`), http.StatusUnsupportedMediaType},
		{"not JSON", http.MethodPost, "application/json", []byte(`<xml/>`), http.StatusBadRequest},
		{"v1beta1", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`), http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), http.StatusBadRequest},
		{"too large", http.MethodPost, "application/json", big, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, ws.url+"/mutate", bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := ws.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("got status %d; want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestInvalidPodIsRefused(t *testing.T) {
	ws := startServer(t, "native")
	body := withObject(t, readReview(t, "basic"), []byte(`{"metadata":{"name":"x"},"spec":{"containers":"none"}}`), "bad")
	resp := ws.post(t, body).Response
	if resp.Allowed || resp.Status == nil || resp.Status.Code != http.StatusBadRequest {
		t.Errorf("got allowed=%v status=%+v; want a 400 refusal", resp.Allowed, resp.Status)
	}
}

// TestServeAndReload runs Serve on real listeners: the API server's view
// (TLS, verified by the CA bundle), the admin listener's metrics, a
// rotated key pair picked up without a restart, and a clean shutdown. The
// reloader's clock is moved by hand, so each reload happens at the
// handshake that follows, with no sleeping through the interval.
func TestServeAndReload(t *testing.T) {
	pki := newTestPKI(t)
	cfg := loadTestConfig(t, "native", pki)
	cfg.TLS.ReloadInterval = time.Second
	observed, logs := observer.New(zap.InfoLevel)
	log := zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, observed)
	})))
	srv, err := NewServer(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	clock := newTestClock()
	srv.certs.now = clock.Now // before Serve shares the reloader
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, admin) }()

	base := "https://" + ln.Addr().String()
	serial := func() int64 {
		t.Helper()
		// A fresh connection each time, so each sees the current pair.
		c := pki.client()
		defer c.CloseIdleConnections()
		resp, err := c.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz: got %d; want 200", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 2 {
		t.Fatalf("got serial %d; want 2", got)
	}
	ws := &webhookServer{srv: srv, url: base, client: pki.client()}
	resp := ws.post(t, readReview(t, "basic")).Response
	if !resp.Allowed || resp.Patch == nil {
		t.Fatalf("got allowed=%v patch=%d bytes; want an injection", resp.Allowed, len(resp.Patch))
	}
	ws.client.CloseIdleConnections()

	pki.issue(t, 3)
	// The files are looked at once per interval, not at every handshake.
	if got := serial(); got != 2 {
		t.Errorf("within the reload interval: got serial %d; want the loaded 2", got)
	}
	clock.Advance(cfg.TLS.ReloadInterval)
	if got := serial(); got != 3 {
		t.Fatalf("after the reload interval: got serial %d; want the rotated 3", got)
	}
	if n := logs.FilterMessage("webhook key pair reloaded").Len(); n != 1 {
		t.Errorf("reloads logged: got %d; want 1", n)
	}

	// A broken pair keeps the last good one.
	if err := writeFile(pki.certFile, []byte("not a certificate")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(cfg.TLS.ReloadInterval)
	if got := serial(); got != 3 {
		t.Errorf("after a corrupt rewrite: got serial %d; want the previous 3", got)
	}
	if n := logs.FilterMessage("webhook key pair not reloaded; serving the previous one").Len(); n != 1 {
		t.Errorf("failed reloads logged: got %d; want 1 (the corrupt pair was not read)", n)
	}

	mresp, err := http.Get("http://" + admin.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metrics), `onbehalf_webhook_admissions_total{outcome="injected"} 1`) {
		t.Errorf("metrics lack the injected admission:\n%s", metrics)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestRunFailsOnBusyAddress(t *testing.T) {
	pki := newTestPKI(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := loadTestConfig(t, "native", pki)
	cfg.Listen = busy.Addr().String()
	srv, err := NewServer(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "webhook listen") {
		t.Errorf("got %v; want a listen error", err)
	}
}

func TestNewServerNeedsKeyPair(t *testing.T) {
	pki := newTestPKI(t)
	cfg := loadTestConfig(t, "native", pki)
	cfg.TLS.KeyFile = cfg.TLS.CertFile // a certificate is not a key
	if _, err := NewServer(cfg, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "load webhook key pair") {
		t.Errorf("got %v; want a key pair error", err)
	}
	cfg.TLS.CertFile = "/nonexistent/tls.crt"
	if _, err := NewServer(cfg, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "load webhook certificate") {
		t.Errorf("got %v; want a missing certificate error", err)
	}
}

func TestTLSVersionFloor(t *testing.T) {
	ws := startServer(t, "native")
	conn, err := tls.Dial("tcp", ws.addr, &tls.Config{
		ServerName: serviceName, MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true, //nolint:gosec // the version is under test
	})
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded; want it refused")
	}
}
