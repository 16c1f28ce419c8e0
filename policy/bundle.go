package policy

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// Limits and timeouts for talking to the bundle server.
const (
	// maxBundleBytes bounds a downloaded bundle (and each file in it).
	// Authorization policies and their data are kilobytes; 32 MiB leaves
	// room for large allow-lists while keeping a misconfigured or hostile
	// server from exhausting the sidecar's memory.
	maxBundleBytes = 32 << 20
	// bundleDialTimeout and bundleTLSTimeout bound connection set-up, so a
	// black-holed server delays only the next poll.
	bundleDialTimeout = 10 * time.Second
	bundleTLSTimeout  = 10 * time.Second
	// bundleRequestTimeout bounds a whole download, body included.
	bundleRequestTimeout = 60 * time.Second
	// bundleMaxIdleConns keeps the connection of the last poll (and a
	// spare) for the next.
	bundleMaxIdleConns = 2
	// bundleMaxRedirects bounds redirects (object stores and CDNs redirect
	// once or twice).
	bundleMaxRedirects = 5
)

// transportPlugin is the name under which the engine hands OPA's REST client
// its own HTTP client.
const transportPlugin = "onbehalf-transport"

// bundleClient gives OPA's REST client an HTTP client built here rather than
// OPA's default, which clones http.DefaultTransport and so would honour
// HTTP(S)_PROXY from the environment. It adds no credentials.
type bundleClient struct {
	client *http.Client
}

var _ rest.HTTPAuthPlugin = (*bundleClient)(nil)

func (b *bundleClient) NewClient(rest.Config) (*http.Client, error) { return b.client, nil }
func (b *bundleClient) Prepare(*http.Request) error                 { return nil }

// newBundleHTTPClient returns a client (see package outbound) that never
// uses a proxy, verifies TLS against the system roots plus caFile, and
// refuses redirects that leave https. The bundle server is the operator's,
// so the egress guard is not applied.
func newBundleHTTPClient(caFile string) (*http.Client, error) {
	o := outbound.DefaultOptions()
	o.CAFile, o.CAFileKey = caFile, "bundle.ca_file"
	o.DialTimeout = bundleDialTimeout
	o.TLSHandshakeTimeout = bundleTLSTimeout
	o.ResponseHeaderTimeout = bundleRequestTimeout
	o.MaxIdleConnsPerHost = bundleMaxIdleConns
	o.Timeout = bundleRequestTimeout
	o.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= bundleMaxRedirects {
			return errors.New("too many redirects")
		}
		if req.URL.Scheme != "https" && !(req.URL.Scheme == "http" && isLoopbackHost(req.URL.Hostname())) {
			return errors.New("redirect away from https refused")
		}
		return nil
	}
	return outbound.Client(o)
}

// verificationConfig reads the configured public key. The engine verifies
// every bundle with this one key, whatever key id the signature names.
func verificationConfig(b BundleConfig) (*bundle.VerificationConfig, error) {
	pemBytes, err := os.ReadFile(b.PublicKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read bundle.public_key_file: %w", err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("read bundle.public_key_file %s: no PEM block found", b.PublicKeyFile)
	}
	switch block.Type {
	case "PUBLIC KEY":
		_, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		_, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		_, err = x509.ParseCertificate(block.Bytes)
	default:
		if strings.Contains(block.Type, "PRIVATE") {
			return nil, fmt.Errorf("read bundle.public_key_file %s: holds a private key; give the public key", b.PublicKeyFile)
		}
		err = fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("read bundle.public_key_file %s: %w", b.PublicKeyFile, err)
	}
	keys := map[string]*bundle.KeyConfig{
		b.KeyID: {Key: string(pemBytes), Algorithm: b.KeyAlgorithm},
	}
	return bundle.NewVerificationConfig(keys, b.KeyID, "", nil), nil
}

// startBundle starts OPA's bundle downloader; each downloaded bundle is
// activated by onBundle.
func (e *Engine) startBundle(ctx context.Context) error {
	b := e.cfg.Bundle
	u, err := url.Parse(b.URL)
	if err != nil {
		return fmt.Errorf("parse bundle.url: %w", err)
	}
	service := u.Scheme + "://" + u.Host
	resource := strings.TrimPrefix(u.EscapedPath(), "/")
	if u.RawQuery != "" {
		resource += "?" + u.RawQuery
	}

	hc, err := newBundleHTTPClient(b.CAFile)
	if err != nil {
		return err
	}
	e.closers = append(e.closers, hc.CloseIdleConnections)
	plugin := &bundleClient{client: hc}
	restConfig, err := json.Marshal(map[string]any{
		"name":        "onbehalf-bundle",
		"url":         service,
		"credentials": map[string]any{"plugin": transportPlugin},
	})
	if err != nil {
		return fmt.Errorf("bundle client config: %w", err)
	}
	client, err := rest.New(restConfig, nil,
		rest.Logger(&opaLogger{log: e.log.Named("bundle")}),
		rest.AuthPluginLookup(func(name string) rest.HTTPAuthPlugin {
			if name == transportPlugin {
				return plugin
			}
			return nil
		}))
	if err != nil {
		return fmt.Errorf("bundle client: %w", err)
	}

	minDelay, maxDelay := int64(b.PollMin/time.Second), int64(b.PollMax/time.Second)
	dcfg := download.Config{Polling: download.PollingConfig{MinDelaySeconds: &minDelay, MaxDelaySeconds: &maxDelay}}
	if err := dcfg.ValidateAndInjectDefaults(); err != nil {
		return fmt.Errorf("bundle polling: %w", err)
	}
	d := download.New(dcfg, client, resource).
		WithCallback(e.onBundle).
		WithSizeLimitBytes(maxBundleBytes).
		WithBundleName("onbehalf").
		WithBundleParserOpts(ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
	if b.PublicKeyFile != "" {
		vc, err := verificationConfig(b)
		if err != nil {
			return err
		}
		d = d.WithBundleVerificationConfig(vc)
	}
	d.Start(ctx)
	e.closers = append(e.closers, func() { d.Stop(context.Background()) })
	return nil
}

// onBundle is the downloader's callback. It always returns nil: a refused
// bundle is recorded in Status, and its ETag stays cached so that the same
// bundle is not downloaded again until the server has a new one.
func (e *Engine) onBundle(ctx context.Context, u download.Update) error {
	if u.Error != nil {
		e.loadMu.Lock()
		e.refuse("", fmt.Errorf("download bundle: %w", u.Error))
		e.loadMu.Unlock()
		return nil
	}
	if u.Bundle == nil {
		return nil // not modified
	}
	s, err := bundleSnapshot(u.Bundle)
	if err != nil {
		e.loadMu.Lock()
		e.refuse(u.Bundle.Manifest.Revision, err)
		e.loadMu.Unlock()
		return nil
	}
	_ = e.activate(ctx, s)
	return nil
}

// bundleSnapshot turns a downloaded snapshot bundle into a policy set.
func bundleSnapshot(b *bundle.Bundle) (*snapshot, error) {
	if b.Type() == bundle.DeltaBundleType {
		return nil, errors.New("bundle: delta bundles are not supported")
	}
	if len(b.WasmModules) > 0 || len(b.Wasm) > 0 || len(b.PlanModules) > 0 {
		return nil, errors.New("bundle: wasm and plan modules are not supported")
	}
	modules := make(map[string]*ast.Module, len(b.Modules))
	raw := make(map[string][]byte, len(b.Modules))
	for _, m := range b.Modules {
		modules[m.Path] = m.Parsed
		raw[m.Path] = m.Raw
	}
	data := b.Data
	if data == nil {
		data = map[string]any{}
	}
	digest, err := contentDigest(raw, data)
	if err != nil {
		return nil, err
	}
	revision := b.Manifest.Revision
	if revision == "" {
		revision = digest[:revisionLen]
	}
	return &snapshot{modules: modules, data: data, revision: revision, digest: digest}, nil
}

// opaLogger adapts zap to OPA's logging interface for the bundle downloader.
type opaLogger struct {
	log    *zap.Logger
	fields []zap.Field
}

var _ logging.Logger = (*opaLogger)(nil)

func (l *opaLogger) Debug(f string, a ...any) {
	if ce := l.log.Check(zap.DebugLevel, fmt.Sprintf(f, a...)); ce != nil {
		ce.Write(l.fields...)
	}
}
func (l *opaLogger) Info(f string, a ...any)  { l.log.Info(fmt.Sprintf(f, a...), l.fields...) }
func (l *opaLogger) Warn(f string, a ...any)  { l.log.Warn(fmt.Sprintf(f, a...), l.fields...) }
func (l *opaLogger) Error(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...), l.fields...) }

func (l *opaLogger) WithFields(m map[string]any) logging.Logger {
	fields := append([]zap.Field(nil), l.fields...)
	for k, v := range m {
		if k == "headers" || k == "response" {
			continue // request and response dumps stay out of our logs
		}
		fields = append(fields, zap.Any(k, v))
	}
	return &opaLogger{log: l.log, fields: fields}
}

func (l *opaLogger) GetLevel() logging.Level {
	if l.log.Core().Enabled(zap.DebugLevel) {
		return logging.Debug
	}
	return logging.Info
}

func (*opaLogger) SetLevel(logging.Level) {}
