package sidecar

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector/journal"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/injector/vault"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/internal/keyfile"
	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy/certs"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// maxCheckedFileBytes bounds how much of a credential or CA file CheckFiles
// reads: tokens, secrets and CA bundles are a few KiB; the system bundle is
// a few hundred.
const maxCheckedFileBytes = 4 << 20

// CheckFiles loads every file cfg names, the way New does, and reports each
// one that is missing, unreadable or unfit, with its key path: the
// interception CA (certificate and key, and that they match), identity keys
// and the JWKS and IdP CA bundles, the upstream CA bundle, the policy files (parsed,
// compiled and, with run_tests_on_reload, tested) or the bundle's public key
// and CA bundle, the store's key file or Vault CA bundle and login
// credential file, the audit fingerprint key, providers' client secret
// files (the sidecar's at the app and, for token exchange, at the IdP), the
// refresh journal's directory and key (with providers) and the tracing CA
// bundle.
//
// It opens no listener, store, connection or audit file, and creates
// nothing: a key file or directory New would create when missing
// (store.embedded.key_file, audit.fingerprint_key_file, the journal's) may
// be missing if its directory exists. cfg
// must be valid (Load has run Validate).
func CheckFiles(ctx context.Context, cfg Config) error {
	var p config.Problems
	checkCA(&p, cfg.CA)
	p.Add("identity", cfg.Identity.CheckFiles())
	if f := cfg.Proxy.Upstream.CAFile; f != "" {
		p.Add("proxy.upstream.ca_file", checkCertBundle(f))
	}
	checkPolicy(ctx, &p, cfg.Policy)
	switch cfg.Store.Backend {
	case BackendEmbedded:
		if f := cfg.Store.Embedded.KeyFile; f != "" {
			_, err := keyfile.Load(f, store.KeySize, false)
			p.Add("store.embedded.key_file", createdIfMissing(f, err))
		}
	case BackendVault:
		v := cfg.Store.Vault
		if v.CAFile != "" {
			p.Add("store.vault.ca_file", checkCertBundle(v.CAFile))
		}
		// Only the credential the login method reads.
		switch v.Auth.Method {
		case vault.AuthToken:
			p.Add("store.vault.auth.token_file", checkSecretFile(v.Auth.TokenFile))
		case vault.AuthAppRole:
			p.Add("store.vault.auth.secret_id_file", checkSecretFile(v.Auth.SecretIDFile))
		case vault.AuthKubernetes:
			p.Add("store.vault.auth.kubernetes_token_file", checkSecretFile(v.Auth.KubernetesTokenFile))
		}
	}
	if f := cfg.Audit.FingerprintKeyFile; f != "" {
		p.Add("audit.fingerprint_key_file", createdIfMissing(f, audit.CheckFingerprintKeyFile(f)))
	}
	for _, name := range sortedKeys(cfg.Providers) {
		if f := cfg.Providers[name].ClientSecretFile; f != "" {
			p.Add("providers."+name+".client_secret_file", checkSecretFile(f))
		}
		if x := cfg.Providers[name].Exchange; x != nil && x.ClientSecretFile != "" {
			p.Add("providers."+name+".exchange.client_secret_file", checkSecretFile(x.ClientSecretFile))
		}
	}
	if len(cfg.Providers) > 0 {
		checkJournal(&p, cfg.JournalConfig())
	}
	if f := cfg.Tracing.CAFile; f != "" {
		p.Add("tracing.ca_file", checkCertBundle(f))
	}
	if r := cfg.RateLimits; r.Store == ratelimit.StoreRedis {
		if r.Redis.PasswordFile != "" {
			p.Add("rate_limits.redis.password_file", checkSecretFile(r.Redis.PasswordFile))
		}
		if r.Redis.TLS && r.Redis.CAFile != "" {
			p.Add("rate_limits.redis.ca_file", checkCertBundle(r.Redis.CAFile))
		}
	}
	return p.Err()
}

// checkJournal reports a refresh journal the sidecar could not open: a
// directory that is not one, that group or others may access, or that
// cannot be written or created, and an unfit key file.
func checkJournal(p *config.Problems, j JournalConfig) {
	fi, err := os.Stat(j.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.Add("refresh.journal.dir", createdIfMissing(j.Dir, err))
	case err != nil:
		p.Add("refresh.journal.dir", describe(j.Dir, err))
	case !fi.IsDir():
		p.Addf("refresh.journal.dir", "%s is not a directory", j.Dir)
	case fi.Mode().Perm()&0o077 != 0:
		p.Addf("refresh.journal.dir", "%s is accessible to group or others (mode %o); want 0700", j.Dir, fi.Mode().Perm())
	case !writable(j.Dir):
		p.Addf("refresh.journal.dir", "%s is not writable", j.Dir)
	}
	_, err = keyfile.Load(j.KeyFile, journal.KeySize, false)
	p.Add("refresh.journal.key_file", createdIfMissing(j.KeyFile, err))
}

// checkCA reports each unreadable CA file, then, when both are readable,
// whatever LoadCA refuses (a bad PEM block, a key that does not match, a
// certificate that is not a CA or has expired).
func checkCA(p *config.Problems, c CAConfig) {
	cerr, kerr := checkReadable(c.Cert), checkReadable(c.Key)
	p.Add("ca.cert", cerr)
	p.Add("ca.key", kerr)
	if cerr != nil || kerr != nil {
		return
	}
	if _, err := certs.LoadCA(c.Cert, c.Key); err != nil {
		p.Add("ca", err)
	}
}

// checkPolicy loads and compiles the policy files once (no watching), or
// checks a bundle's local files; the bundle itself is not downloaded.
func checkPolicy(ctx context.Context, p *config.Problems, c policy.Config) {
	if c.Bundle.URL != "" {
		if f := c.Bundle.PublicKeyFile; f != "" {
			p.Add("policy.bundle.public_key_file", checkPublicKey(f))
		}
		if f := c.Bundle.CAFile; f != "" {
			p.Add("policy.bundle.ca_file", checkCertBundle(f))
		}
		return
	}
	c.Watch = false
	e, err := policy.New(ctx, c, policy.Options{})
	if err != nil {
		p.Add("policy", err)
		return
	}
	defer e.Close()
	if st := e.Status(); !st.Ready {
		p.Addf("policy.paths", "no policy loaded: %s", st.LastError)
	}
}

// createdIfMissing is err, except that a missing file is fine when the
// sidecar can create it at start: the nearest existing directory above it
// is writable (the sidecar creates missing directories too).
func createdIfMissing(path string, err error) error {
	if !errors.Is(err, fs.ErrNotExist) {
		if err != nil {
			return describe(path, err)
		}
		return nil
	}
	dir := filepath.Dir(path)
	for {
		fi, serr := os.Stat(dir)
		if serr == nil && fi.IsDir() {
			break
		}
		parent := filepath.Dir(dir)
		if serr == nil || !errors.Is(serr, fs.ErrNotExist) || parent == dir {
			return fmt.Errorf("%s does not exist and cannot be created: %s is not a directory", path, dir)
		}
		dir = parent
	}
	if !writable(dir) {
		return fmt.Errorf("%s does not exist and cannot be created: %s is not writable", path, dir)
	}
	return nil
}

// checkReadable reports whether path is a regular file that can be read.
func checkReadable(path string) error {
	_, err := readCapped(path)
	return err
}

// checkSecretFile reports whether path holds a non-empty credential.
func checkSecretFile(path string) error {
	data, err := readCapped(path)
	defer clear(data)
	if err != nil {
		return err
	}
	for _, b := range data {
		if b != ' ' && b != '\t' && b != '\n' && b != '\r' {
			return nil
		}
	}
	return fmt.Errorf("%s is empty", path)
}

// checkCertBundle reports whether path holds at least one PEM certificate.
func checkCertBundle(path string) error {
	data, err := readCapped(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Errorf("%s: no PEM certificate", path)
	}
	return nil
}

// checkPublicKey reports whether path holds a PEM public key.
func checkPublicKey(path string) error {
	data, err := readCapped(path)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return fmt.Errorf("%s: no PEM block", path)
	}
	if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		return fmt.Errorf("%s: not a PEM public key: %w", path, err)
	}
	return nil
}

// readCapped reads a regular file of at most maxCheckedFileBytes.
func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, describe(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, describe(path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCheckedFileBytes+1))
	if err != nil {
		return nil, describe(path, err)
	}
	if len(data) > maxCheckedFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxCheckedFileBytes)
	}
	return data, nil
}

// describe names path once in err's message.
func describe(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", path, pe.Err)
	}
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
