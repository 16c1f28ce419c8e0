// Package chromium drives the connect server's pages in a real headless
// chromium (Debian's chromium package, through
// github.com/chromedp/chromedp), for end-to-end tests of the connect flow:
// open a connect link, confirm, approve at the OAuth test server's consent
// page (internal/testkit/oauthtest), land on the apps page; revoke from it.
//
// A Browser is one chromium with a fresh profile; it is not safe for
// concurrent use (one tab, one flow at a time).
package chromium

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is where Debian's chromium package installs the browser.
const ChromiumPath = "/usr/bin/chromium"

// Timeouts.
const (
	// StepTimeout bounds one step (a page load and the element it waits
	// for). Pages here load in milliseconds; a step that takes longer is
	// stuck, typically on a refused navigation.
	StepTimeout = 20 * time.Second
	// dialTimeout bounds reading a trusted server's certificate.
	dialTimeout = 5 * time.Second
)

// Trust names an https server the browser must accept: its certificate
// chains to Roots (the OAuth test server's CA, say). The browser is told to
// accept exactly that server's public key, nothing more.
type Trust struct {
	// URL is the server's base URL (https://host:port).
	URL string
	// Roots verifies the server's certificate when its key is read.
	Roots *x509.CertPool
}

// Browser is a headless chromium with a fresh profile.
type Browser struct {
	ctx    context.Context
	cancel func()
}

// NewBrowser starts chromium for t and stops it when t ends. A missing
// chromium fails t, saying how to install it: the end-to-end tests that
// use it are never skipped.
func NewBrowser(t testing.TB, trust ...Trust) *Browser {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		t.Fatalf("chromium is required and was not found at %s (%v): install it with `apt-get install -y chromium`", ChromiumPath, err)
	}
	var spki []string
	for _, tr := range trust {
		h, err := spkiHash(tr)
		if err != nil {
			t.Fatalf("trust %s: %v", tr.URL, err)
		}
		spki = append(spki, h)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Never a proxy from the environment: tests talk to loopback only.
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	if len(spki) > 0 {
		// Honoured only together with a user data dir, which is set.
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(spki, ",")))
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	b := &Browser{ctx: ctx, cancel: func() { cancelCtx(); cancelAlloc() }}
	t.Cleanup(b.cancel)
	// The first action on the browser's own context starts chromium and
	// binds it to that context: a derived context with a timeout would
	// stop the browser when it ends. Later steps derive their timeouts.
	timer := time.AfterFunc(StepTimeout, b.cancel)
	err := chromedp.Do(b.ctx)
	timer.Stop()
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

// spkiHash returns the base64 SHA-256 of tr's public key, the form
// --ignore-certificate-errors-spki-list takes.
func spkiHash(tr Trust) (string, error) {
	u, err := url.Parse(tr.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("not an https URL")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: dialTimeout}, "tcp", u.Host,
		&tls.Config{RootCAs: tr.Roots, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12})
	if err != nil {
		return "", fmt.Errorf("read certificate: %w", err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// do runs steps within StepTimeout.
func (b *Browser) do(steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// Open navigates to rawURL and waits for the element with id waitID.
func (b *Browser) Open(rawURL, waitID string) error {
	if err := b.do(chromedp.Navigate(rawURL), chromedp.WaitVisible(chromedp.ID(waitID))); err != nil {
		return fmt.Errorf("open %s (waiting for #%s): %w", redactQuery(rawURL), waitID, err)
	}
	return nil
}

// Click clicks the element with id and waits for the element with id
// waitID (on the page the click leads to).
func (b *Browser) Click(id, waitID string) error {
	if err := b.do(chromedp.Click(chromedp.ID(id)), chromedp.WaitVisible(chromedp.ID(waitID))); err != nil {
		return fmt.Errorf("click #%s (waiting for #%s): %w", id, waitID, err)
	}
	return nil
}

// Text returns the trimmed text of the element with id.
func (b *Browser) Text(id string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		return "", fmt.Errorf("text of #%s: %w", id, err)
	}
	return strings.TrimSpace(s), nil
}

// Location returns the current page's URL.
func (b *Browser) Location() (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Location())
}

// Connect runs the connect flow for linkURL (a connect link as
// connect.LinkURL builds it): it opens the link, checks that the
// confirmation page names wantUser, confirms, approves at the OAuth test
// server's consent page as account, and waits for the apps page's status
// line. It returns the URL it landed on.
func (b *Browser) Connect(linkURL, wantUser, account string) (string, error) {
	if err := b.Open(linkURL, "confirm"); err != nil {
		return "", err
	}
	if got, err := b.Text("for-user"); err != nil || got != wantUser {
		return "", fmt.Errorf("confirmation page is for %q (%v); want %q", got, err, wantUser)
	}
	if err := b.Click("confirm", "approve"); err != nil {
		return "", err
	}
	if err := b.do(chromedp.SetValue(chromedp.ID("user"), account)); err != nil {
		return "", fmt.Errorf("enter the account at the consent page: %w", err)
	}
	if err := b.Click("approve", "status"); err != nil {
		return "", err
	}
	return b.Location()
}

// Revoke opens the apps page at appsURL and clicks the revoke button of
// provider, waiting for the page that follows. It returns the URL it
// landed on.
func (b *Browser) Revoke(appsURL, provider string) (string, error) {
	if err := b.Open(appsURL, "app-"+provider); err != nil {
		return "", err
	}
	if err := b.Click("revoke-"+provider, "status"); err != nil {
		return "", err
	}
	return b.Location()
}

// redactQuery drops a URL's query (a connect link carries its JWT there)
// for error messages.
func redactQuery(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		return raw[:i] + "?…"
	}
	return raw
}
