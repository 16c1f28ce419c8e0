package policy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

const bundlePath = "/bundles/onbehalf/authz.tar.gz"

// bundleServer is an OPA bundle server: it serves one bundle at bundlePath
// with an ETag and answers 304 to a matching If-None-Match.
type bundleServer struct {
	*httptest.Server
	mu   sync.Mutex
	body []byte
	etag string
	gets int
}

func newBundleServer(t *testing.T) *bundleServer {
	t.Helper()
	s := &bundleServer{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != bundlePath || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		body, etag := s.body, s.etag
		s.gets++
		s.mu.Unlock()
		if body == nil {
			http.Error(w, "no bundle yet", http.StatusServiceUnavailable)
			return
		}
		if strings.Contains(r.Header.Get("If-None-Match"), etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *bundleServer) serve(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = body
	sum := sha256.Sum256(body)
	s.etag = fmt.Sprintf(`"%x"`, sum[:8])
}

// config returns an engine configuration for this server, trusting its
// certificate.
func (s *bundleServer) config(t *testing.T) Config {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})))
	cfg := DefaultConfig()
	cfg.Bundle.URL = s.URL + bundlePath
	cfg.Bundle.CAFile = ca
	cfg.Bundle.PollMin = time.Second
	cfg.Bundle.PollMax = time.Second
	return cfg
}

// signer signs bundles.
type signer struct {
	alg     string
	private string // PEM
	public  string // PEM
}

func newSigner(t *testing.T, alg string) signer {
	t.Helper()
	var priv crypto.Signer
	var privPEM []byte
	switch alg {
	case "ES256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		priv, privPEM = k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	case "RS256":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, privPEM = k, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	default:
		t.Fatalf("unsupported algorithm %s", alg)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return signer{alg: alg, private: string(privPEM), public: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))}
}

// buildBundle writes a bundle tarball with one module and data, signed when
// sign is non-nil.
func buildBundle(t *testing.T, revision, module string, data map[string]any, sign *signer) []byte {
	t.Helper()
	parsed, err := ast.ParseModuleWithOpts("/onbehalf/policy.rego", module, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatalf("parse bundle module: %v", err)
	}
	if data == nil {
		data = map[string]any{}
	}
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: revision},
		Data:     data,
		Modules: []bundle.ModuleFile{{
			URL: "/onbehalf/policy.rego", Path: "/onbehalf/policy.rego", Raw: []byte(module), Parsed: parsed,
		}},
	}
	if sign != nil {
		if err := b.GenerateSignature(bundle.NewSigningConfig(sign.private, sign.alg, ""), "prod", false); err != nil {
			t.Fatalf("sign bundle: %v", err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(b); err != nil {
		t.Fatalf("write bundle: %v", err)
	}
	return buf.Bytes()
}

const bundlePolicy = `package onbehalf.authz

decision := {"allow": input.subject.user in data.team.members, "reason": "%s"}
`

func TestBundle(t *testing.T) {
	srv := newBundleServer(t)
	srv.serve(buildBundle(t, "rev-1", fmt.Sprintf(bundlePolicy, "rev-1"), map[string]any{"team": map[string]any{"members": []any{"alice"}}}, nil))
	var evs events
	e := newEngine(t, srv.config(t), Options{OnReload: evs.record})

	select {
	case <-e.Ready():
	case <-time.After(waitTimeout):
		t.Fatalf("bundle not loaded after %s: %+v", waitTimeout, e.Status())
	}
	if got := e.Revision(); got != "rev-1" {
		t.Errorf("Revision() = %q; want rev-1", got)
	}
	if d := e.Decide(context.Background(), input(t, "GET", "https://slack.com/")); !d.Allow || d.Reason != "rev-1" || d.Revision != "rev-1" {
		t.Errorf("Decide = %+v; want allow by rev-1 (alice is in the bundle's data)", d)
	}

	// A new revision is picked up by the next poll.
	srv.serve(buildBundle(t, "rev-2", fmt.Sprintf(bundlePolicy, "rev-2"), map[string]any{"team": map[string]any{"members": []any{"bob"}}}, nil))
	waitFor(t, "revision rev-2", func() bool { return e.Revision() == "rev-2" })
	if d := e.Decide(context.Background(), input(t, "GET", "https://slack.com/")); d.Allow || d.Reason != "rev-2" {
		t.Errorf("Decide = %+v; want deny by rev-2 (alice left the team)", d)
	}

	// A bundle using a disabled builtin is refused; rev-2 keeps deciding.
	srv.serve(buildBundle(t, "rev-3", "package onbehalf.authz\n\ndecision := http.send({\"method\": \"GET\", \"url\": \"https://127.0.0.1:1\"}).body\n", nil, nil))
	waitFor(t, "rev-3 to be refused", func() bool { return e.Status().LastError != "" })
	st := e.Status()
	if !strings.Contains(st.LastError, "policy uses disabled builtin http.send") || st.Revision != "rev-2" || !st.Ready {
		t.Errorf("Status = %+v; want rev-2 still active and the disabled builtin reported", st)
	}

	var got []string
	for _, ev := range evs.all() {
		if !strings.HasPrefix(ev.Source, "bundle:https://127.0.0.1:") {
			t.Errorf("event Source = %q; want the bundle URL", ev.Source)
		}
		got = append(got, fmt.Sprintf("%s %v", ev.Revision, ev.Err != nil))
	}
	if want := []string{"rev-1 false", "rev-2 false", "rev-3 true"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("OnReload events = %v; want %v", got, want)
	}
}

func TestBundleSignature(t *testing.T) {
	good := newSigner(t, "ES256")
	other := newSigner(t, "ES256")
	rsaKey := newSigner(t, "RS256")
	tests := []struct {
		name      string
		sign      *signer
		verifyKey signer
		wantErr   string // empty: the bundle loads
	}{
		{"signed with the configured key", &good, good, ""},
		{"signed with the configured RSA key", &rsaKey, rsaKey, ""},
		{"signed with another key", &other, good, "failed to verify"},
		{"unsigned", nil, good, "missing .signatures.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newBundleServer(t)
			srv.serve(buildBundle(t, "signed-1", fmt.Sprintf(bundlePolicy, "signed"), map[string]any{"team": map[string]any{"members": []any{"alice"}}}, tt.sign))
			cfg := srv.config(t)
			cfg.Bundle.PublicKeyFile = filepath.Join(t.TempDir(), "bundle.pub")
			cfg.Bundle.KeyAlgorithm = tt.verifyKey.alg
			writeFile(t, cfg.Bundle.PublicKeyFile, tt.verifyKey.public)
			e := newEngine(t, cfg, Options{})

			if tt.wantErr == "" {
				waitFor(t, "the signed bundle", func() bool { return e.Revision() == "signed-1" })
				return
			}
			waitFor(t, "the bundle to be refused", func() bool { return e.Status().LastError != "" })
			st := e.Status()
			if st.Ready || !strings.Contains(st.LastError, tt.wantErr) {
				t.Errorf("Status = %+v; want not ready with an error containing %q", st, tt.wantErr)
			}
			if d := e.Decide(context.Background(), input(t, "GET", "https://slack.com/")); d.Allow || d.Reason != ReasonNotLoaded {
				t.Errorf("Decide = %+v; want a deny with reason %q", d, ReasonNotLoaded)
			}
		})
	}
}

func TestBundleKeyFile(t *testing.T) {
	priv := newSigner(t, "ES256").private
	tests := []struct {
		name, content, want string
	}{
		{"private key", priv, "holds a private key"},
		{"not PEM", "hello", "no PEM block found"},
		{"garbage in PEM", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")})), "read bundle.public_key_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Bundle.URL = "https://127.0.0.1:1/b.tar.gz"
			cfg.Bundle.PublicKeyFile = filepath.Join(t.TempDir(), "key.pem")
			writeFile(t, cfg.Bundle.PublicKeyFile, tt.content)
			_, err := New(context.Background(), cfg, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v; want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), priv[40:80]) {
				t.Errorf("error leaks key material: %v", err)
			}
		})
	}
}

func TestBundleServerUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := DefaultConfig()
	cfg.Bundle.URL = "https://" + addr + bundlePath
	var evs events
	e := newEngine(t, cfg, Options{OnReload: evs.record})
	waitFor(t, "the download error", func() bool { return e.Status().LastError != "" })
	st := e.Status()
	if st.Ready || !strings.HasPrefix(st.LastError, "download bundle: ") {
		t.Errorf("Status = %+v; want not ready with a download error", st)
	}
	if got := evs.all(); len(got) == 0 || got[0].Err == nil {
		t.Errorf("OnReload events = %+v; want a failure", got)
	}
}

func TestBundleHTTPClient(t *testing.T) {
	hc, err := newBundleHTTPClient("")
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := hc.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport is a %T; want *http.Transport", hc.Transport)
	}
	if tr.Proxy != nil {
		t.Error("bundle transport has a Proxy function; want none (HTTPS_PROXY must not apply)")
	}
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.InsecureSkipVerify {
		t.Error("bundle transport does not verify TLS")
	}
	redirect := func(to string) error {
		req := httptest.NewRequest("GET", to, nil)
		return hc.CheckRedirect(req, []*http.Request{httptest.NewRequest("GET", "https://b.example/", nil)})
	}
	if err := redirect("http://b.example/x"); err == nil {
		t.Error("redirect to plain http allowed; want refused")
	}
	if err := redirect("https://cdn.example/x"); err != nil {
		t.Errorf("redirect to https refused: %v", err)
	}
}

func TestBundleSnapshotRefusesUnsupported(t *testing.T) {
	delta := &bundle.Bundle{Patch: bundle.Patch{Data: []bundle.PatchOperation{{Op: "upsert", Path: "/x", Value: 1}}}}
	if _, err := bundleSnapshot(delta); err == nil || !strings.Contains(err.Error(), "delta") {
		t.Errorf("bundleSnapshot(delta) error = %v; want delta bundles refused", err)
	}
	wasm := &bundle.Bundle{WasmModules: []bundle.WasmModuleFile{{Path: "/policy.wasm"}}}
	if _, err := bundleSnapshot(wasm); err == nil || !strings.Contains(err.Error(), "wasm") {
		t.Errorf("bundleSnapshot(wasm) error = %v; want wasm refused", err)
	}
}

func TestEvalFileBundle(t *testing.T) {
	srv := newBundleServer(t)
	srv.serve(buildBundle(t, "rev-eval", fmt.Sprintf(bundlePolicy, "from bundle"), map[string]any{"team": map[string]any{"members": []any{"alice"}}}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	d, err := EvalFile(ctx, srv.config(t), []byte(`{"subject": {"user": "alice"}}`))
	if err != nil {
		t.Fatalf("EvalFile: %v", err)
	}
	if !d.Allow || d.Revision != "rev-eval" {
		t.Errorf("EvalFile = %+v; want allow by rev-eval", d)
	}
}
