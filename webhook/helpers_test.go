package webhook

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// serviceName is the DNS name the API server verifies the webhook by.
const serviceName = "onbehalf-webhook.onbehalf.svc"

// testClock is a clock a test moves by hand, so that code paced by an
// interval acts at once and deterministically instead of after a sleep. It
// is safe for concurrent use.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

// newTestClock returns a clock that starts at the current time.
func newTestClock() *testClock { return &testClock{now: time.Now()} }

// Now returns the clock's time.
func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testPKI is a CA and a serving key pair written to files, as the chart's
// Secret would be mounted.
type testPKI struct {
	caCert   *x509.Certificate
	caKey    *ecdsa.PrivateKey
	pool     *x509.CertPool
	certFile string
	keyFile  string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "onbehalf-webhook-ca"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{caCert: caCert, caKey: caKey, pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	dir := t.TempDir()
	p.certFile, p.keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	p.issue(t, 2)
	return p
}

// issue writes a fresh serving pair with the given serial number.
func (p *testPKI) issue(t testing.TB, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: serviceName},
		DNSNames:     []string{serviceName},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Write both through temporary files and rename, as the kubelet swaps
	// a Secret's files atomically.
	for _, f := range []struct {
		path string
		data []byte
	}{
		{p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
		{p.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
	} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
}

// client trusts the test CA and verifies the webhook's service name, as the
// API server does with the caBundle of the webhook registration.
func (p *testPKI) client() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: p.pool, ServerName: serviceName, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2: true,
			Proxy:             nil,
		},
	}
}

// loadTestConfig reads testdata/config/name.yaml with the PKI's files.
func loadTestConfig(t testing.TB, name string, pki *testPKI) Config {
	t.Helper()
	cfg, err := Load(filepath.Join("testdata", "config", name+".yaml"), nil, func(c *Config) {
		c.TLS.CertFile, c.TLS.KeyFile = pki.certFile, pki.keyFile
	})
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return cfg
}

// webhookServer is a Server behind a real TLS listener on loopback.
type webhookServer struct {
	srv    *Server
	url    string
	addr   string
	client *http.Client
}

func startServer(t testing.TB, configName string) *webhookServer {
	t.Helper()
	pki := newTestPKI(t)
	cfg := loadTestConfig(t, configName, pki)
	return startServerWith(t, cfg, pki)
}

func startServerWith(t testing.TB, cfg Config, pki *testPKI) *webhookServer {
	t.Helper()
	log := zap.NewNop()
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	}
	srv, err := NewServer(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Listener.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.Listener = ln
	ts.TLS = srv.TLSConfig()
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	c := pki.client()
	t.Cleanup(c.CloseIdleConnections)
	return &webhookServer{srv: srv, url: ts.URL, addr: ln.Addr().String(), client: c}
}

// post sends an AdmissionReview body to /mutate and decodes the answer.
func (w *webhookServer) post(t testing.TB, body []byte) Review {
	t.Helper()
	resp, err := w.client.Post(w.url+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /mutate: got status %d (%s); want 200", resp.StatusCode, data)
	}
	var out Review
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("decode response: %v\n%s", err, data)
	}
	if out.APIVersion != ReviewAPIVersion || out.Kind != ReviewKind || out.Response == nil {
		t.Fatalf("got %s; want an %s AdmissionReview with a response", data, ReviewAPIVersion)
	}
	return out
}

// writeFile replaces path's content atomically.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readReview loads testdata/reviews/name.json.
func readReview(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "reviews", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// reviewObject returns the pod inside a review body.
func reviewObject(t testing.TB, body []byte) []byte {
	t.Helper()
	var r Review
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	return r.Request.Object
}

// withObject returns body with its request object replaced by obj and its
// uid by uid.
func withObject(t testing.TB, body, obj []byte, uid string) []byte {
	t.Helper()
	var r map[string]any
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	req := r["request"].(map[string]any)
	req["object"] = json.RawMessage(obj)
	req["uid"] = uid
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// editPod decodes the pod in body into a generic map, lets edit change it,
// and returns the re-encoded review.
func editPod(t testing.TB, body []byte, edit func(pod map[string]any)) []byte {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(reviewObject(t, body), &obj); err != nil {
		t.Fatal(err)
	}
	edit(obj)
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return withObject(t, body, data, "edited")
}

// m and s shorten generic JSON navigation in edits.
func m(v any, key string) map[string]any { return v.(map[string]any)[key].(map[string]any) }
func s(v any, key string) []any          { return v.(map[string]any)[key].([]any) }
