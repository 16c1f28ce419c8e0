package policy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// DefaultQuery is the query evaluated when Config.Query is empty. It names a
// decision object; a boolean rule such as data.envoy.authz.allow works too.
const DefaultQuery = "data.onbehalf.authz.decision"

// DefaultTimeout bounds one policy evaluation. A decision sits on the path of
// every proxied request and the example policies decide in tens of
// microseconds; 100 ms still stops a runaway policy (an accidental cross
// product over large data) long before the agent's own HTTP timeouts fire,
// while a sidecar whose CPU quota is throttled (the CFS period is 100 ms)
// does not turn scheduling stalls into false denials.
const DefaultTimeout = 100 * time.Millisecond

// maxTimeout caps Config.Timeout: a longer evaluation budget would let one
// policy stall the proxy's request path.
const maxTimeout = 5 * time.Second

// Bundle polling defaults. OPA's own defaults are 60–120 s; half of that keeps
// a policy change effective within a minute without hammering the server.
const (
	defaultPollMin = 30 * time.Second
	defaultPollMax = 60 * time.Second
	// minPoll is the bundle downloader's resolution: it counts whole seconds.
	minPoll = time.Second
)

// DefaultKeyAlgorithm is the signature algorithm assumed for bundle
// verification keys (OPA's default).
const DefaultKeyAlgorithm = "RS256"

// defaultKeyID names the verification key when Config.Bundle.KeyID is empty.
// The engine always verifies with this one configured key, whatever key id a
// bundle's signature claims.
const defaultKeyID = "default"

// asymmetricAlgorithms are the bundle signature algorithms accepted. HMAC
// algorithms are left out: their "public key" is a shared secret, which does
// not belong in a file named public_key_file.
var asymmetricAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
}

// Config selects where policies come from and how they are evaluated. Exactly
// one of Paths and Bundle.URL must be set.
type Config struct {
	// Paths lists .rego files, data files (.json, .yaml, .yml) and directories
	// of them, loaded the way `opa run` and `opa test` load them: a data file
	// lands under data at its directory's path relative to the listed root.
	// Hidden files and directories (names starting with a dot) are skipped.
	Paths []string `yaml:"paths"`
	// Bundle loads policies from an OPA bundle server instead.
	Bundle BundleConfig `yaml:"bundle"`
	// Query is evaluated for each request; empty means DefaultQuery. Its
	// value must be a boolean or an object with a boolean "allow".
	Query string `yaml:"query"`
	// Timeout bounds one evaluation; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// RunTestsOnReload runs the policy's own Rego tests (test_* rules) before
	// a new policy replaces the current one, and refuses it when any fails.
	RunTestsOnReload bool `yaml:"run_tests_on_reload"`
	// Watch reloads Paths when files change. Ignored for bundles, which are
	// polled.
	Watch bool `yaml:"watch"`
}

// BundleConfig locates an OPA bundle on a bundle server (for example an OCI
// registry gateway, S3 behind HTTPS, or any static HTTPS server).
type BundleConfig struct {
	// URL is the bundle's full address, e.g.
	// https://bundles.example.com/onbehalf/bundle.tar.gz. It must be https,
	// except on a loopback host.
	URL string `yaml:"url"`
	// PollMin and PollMax bound the jittered delay between polls. The
	// downloader counts whole seconds.
	PollMin time.Duration `yaml:"poll_min"`
	PollMax time.Duration `yaml:"poll_max"`
	// PublicKeyFile holds a PEM public key. When set, bundles must be signed
	// (.signatures.json) with the matching private key; unsigned bundles and
	// bundles signed with another key are refused.
	PublicKeyFile string `yaml:"public_key_file"`
	// KeyID is the signature's key id; empty means "default". It only names
	// the key: the engine verifies every bundle with PublicKeyFile.
	KeyID string `yaml:"key_id"`
	// KeyAlgorithm is the signing algorithm (RS256, PS256, ES256, ...);
	// empty means DefaultKeyAlgorithm.
	KeyAlgorithm string `yaml:"key_algorithm"`
	// CAFile adds PEM CA certificates to the system roots when verifying the
	// bundle server's TLS certificate.
	CAFile string `yaml:"ca_file"`
}

// DefaultConfig returns the defaults: the default query and timeout, tests
// run on reload, file watching on, and the default bundle poll interval. It
// names no policy source; the caller sets Paths or Bundle.URL.
func DefaultConfig() Config {
	return Config{
		Query:            DefaultQuery,
		Timeout:          DefaultTimeout,
		RunTestsOnReload: true,
		Watch:            true,
		Bundle: BundleConfig{
			PollMin:      defaultPollMin,
			PollMax:      defaultPollMax,
			KeyAlgorithm: DefaultKeyAlgorithm,
		},
	}
}

// withDefaults fills the zero fields that have a default.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Query == "" {
		c.Query = d.Query
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.Bundle.PollMin == 0 {
		c.Bundle.PollMin = d.Bundle.PollMin
	}
	if c.Bundle.PollMax == 0 {
		c.Bundle.PollMax = max(d.Bundle.PollMax, c.Bundle.PollMin)
	}
	if c.Bundle.KeyAlgorithm == "" {
		c.Bundle.KeyAlgorithm = d.Bundle.KeyAlgorithm
	}
	if c.Bundle.KeyID == "" {
		c.Bundle.KeyID = defaultKeyID
	}
	return c
}

// Validate reports every problem with c at once, as an errors.Join of
// *config.FieldError with paths relative to the policy section. Zero values
// that have a default are accepted.
func (c Config) Validate() error {
	var p config.Problems
	c = c.withDefaults()

	switch {
	case len(c.Paths) == 0 && c.Bundle.URL == "":
		p.Addf("", "one of paths or bundle.url is required")
	case len(c.Paths) > 0 && c.Bundle.URL != "":
		p.Addf("paths", "cannot be combined with bundle.url")
	}
	for i, path := range c.Paths {
		key := "paths[" + strconv.Itoa(i) + "]"
		if strings.TrimSpace(path) == "" {
			p.Addf(key, "must not be empty")
			continue
		}
		if _, err := os.Stat(path); err != nil {
			p.Addf(key, "cannot read %s: %s", path, statReason(err))
		}
	}
	if c.Bundle.URL != "" {
		p.Add("bundle", c.Bundle.validate())
	}
	if _, err := ast.ParseBody(c.Query); err != nil {
		p.Addf("query", "not a valid Rego query: %s", firstParseError(err))
	}
	if c.Timeout < 0 || c.Timeout > maxTimeout {
		p.Addf("timeout", "must be between 0 and %s", maxTimeout)
	}
	return p.Err()
}

func (b BundleConfig) validate() error {
	var p config.Problems
	u, err := url.Parse(b.URL)
	switch {
	case err != nil:
		p.Addf("url", "not a valid URL")
	case u.User != nil:
		p.Addf("url", "must not carry credentials")
	case u.Host == "":
		p.Addf("url", "must be an absolute URL")
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
	default:
		p.Addf("url", "must be an https URL (http is accepted only on loopback)")
	}
	if b.PollMin < minPoll {
		p.Addf("poll_min", "must be at least %s", minPoll)
	}
	if b.PollMax < b.PollMin {
		p.Addf("poll_max", "must not be less than poll_min")
	}
	if b.PublicKeyFile != "" {
		if _, err := os.Stat(b.PublicKeyFile); err != nil {
			p.Addf("public_key_file", "cannot read %s: %s", b.PublicKeyFile, statReason(err))
		}
	}
	if !asymmetricAlgorithms[b.KeyAlgorithm] {
		p.Addf("key_algorithm", "must be one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512")
	}
	if b.CAFile != "" {
		if _, err := os.Stat(b.CAFile); err != nil {
			p.Addf("ca_file", "cannot read %s: %s", b.CAFile, statReason(err))
		}
	}
	return p.Err()
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// statReason shortens an os.Stat error to its cause, leaving out the path the
// message already names.
func statReason(err error) string {
	switch {
	case os.IsNotExist(err):
		return "no such file or directory"
	case os.IsPermission(err):
		return "permission denied"
	}
	return err.Error()
}

// firstParseError returns the first problem of a Rego parse error on one
// line ("unexpected eof token at 1:7"), without the source excerpt OPA
// appends.
func firstParseError(err error) string {
	var errs ast.Errors
	if errors.As(err, &errs) && len(errs) > 0 {
		e := errs[0]
		if e.Location != nil {
			return fmt.Sprintf("%s at %d:%d", e.Message, e.Location.Row, e.Location.Col)
		}
		return e.Message
	}
	return err.Error()
}
