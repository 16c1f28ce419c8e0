package webhook

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// certReloader serves the webhook's key pair and re-reads it when either
// file changes. Kubernetes updates a mounted Secret by swapping a symlink,
// and cert-manager renews certificates well before they expire, so checking
// the files' size and modification time every interval is enough; no file
// watch is needed (inotify on a symlinked Secret directory is unreliable).
//
// GetCertificate is safe for concurrent use.
type certReloader struct {
	certFile, keyFile string
	interval          time.Duration
	log               *zap.Logger
	// now is the clock that paces the checks: time.Now, or in tests a
	// clock they move past the interval instead of sleeping through it.
	// It is set before the reloader is shared.
	now func() time.Time

	cert atomic.Pointer[tls.Certificate]

	mu       sync.Mutex // guards the fields below and serializes reloads
	checked  time.Time
	certSeen fileStamp
	keySeen  fileStamp
}

// fileStamp identifies one version of a file.
type fileStamp struct {
	size    int64
	modTime time.Time
}

func stamp(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: st.Size(), modTime: st.ModTime()}, nil
}

// newCertReloader loads the key pair once; a missing or invalid pair is an
// error, so the webhook does not start without a certificate.
func newCertReloader(certFile, keyFile string, interval time.Duration, log *zap.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, interval: interval, log: log, now: time.Now}
	if err := r.load(r.now()); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads both files and installs the pair. The caller holds mu or has
// not shared r yet.
func (r *certReloader) load(now time.Time) error {
	cs, err := stamp(r.certFile)
	if err != nil {
		return fmt.Errorf("load webhook certificate: %w", err)
	}
	ks, err := stamp(r.keyFile)
	if err != nil {
		return fmt.Errorf("load webhook key: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// tls errors name the files' problem, never the key's bytes.
		return fmt.Errorf("load webhook key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert.Store(&pair)
	r.certSeen, r.keySeen, r.checked = cs, ks, now
	return nil
}

// GetCertificate returns the current pair, reloading it first when the
// interval has passed and a file changed. A failed reload (a half-written
// pair, a deleted file) keeps the previous pair and is retried at the next
// interval.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeReload(r.now())
	return r.cert.Load(), nil
}

func (r *certReloader) maybeReload(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.checked) < r.interval {
		return
	}
	r.checked = now
	cs, cerr := stamp(r.certFile)
	ks, kerr := stamp(r.keyFile)
	if cerr == nil && kerr == nil && cs == r.certSeen && ks == r.keySeen {
		return
	}
	if err := r.load(now); err != nil {
		r.log.Warn("webhook key pair not reloaded; serving the previous one", zap.Error(err))
		return
	}
	r.log.Info("webhook key pair reloaded", zap.String("cert_file", r.certFile))
}
