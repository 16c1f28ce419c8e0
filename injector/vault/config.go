package vault

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Defaults and limits of the configuration.
const (
	// DefaultTimeout bounds one store operation (all the Vault calls it
	// makes). A KV read or CAS write takes milliseconds on a healthy Vault;
	// five seconds rides out a leader election yet leaves a proxied request
	// time to answer 503 before the agent's own deadline.
	DefaultTimeout = 5 * time.Second
	// maxAddresses caps addresses: Raft clusters have three or five
	// voters, and every address may be tried within one operation.
	maxAddresses = 9
	// maxTimeout caps timeout: a request waiting longer than this on its
	// grant store has already failed its caller.
	maxTimeout = time.Minute
	// DefaultMount is the KV v2 mount (Vault's dev server mounts secret/).
	DefaultMount = "secret"
	// DefaultPrefix is the folder under the mount that holds grants and
	// leases.
	DefaultPrefix = "onbehalf"
	// DefaultAppRoleMount, DefaultKubernetesMount and DefaultTransitMount
	// are Vault's default mount paths for those engines.
	DefaultAppRoleMount    = "approle"
	DefaultKubernetesMount = "kubernetes"
	DefaultTransitMount    = "transit"
	// DefaultKubernetesTokenFile is where the sidecar's projected
	// service-account token (audience vault) is mounted; it is not the
	// pod's default token, which the agent container could also read.
	DefaultKubernetesTokenFile = "/var/run/secrets/vault/token"
)

// Auth methods.
const (
	AuthToken      = "token"
	AuthAppRole    = "approle"
	AuthKubernetes = "kubernetes"
)

// Config configures the Vault grant store.
type Config struct {
	// Address is Vault's URL. It must be https unless the host is a
	// loopback address (a local Vault agent or a test server).
	Address string `yaml:"address"`
	// Addresses lists the API addresses of a Vault cluster's nodes, in
	// order of preference, instead of Address. Requests go to one node
	// and move to the next when it is down, sealed or cannot forward to
	// the active node (see failover.go); a standby with a live active node
	// forwards requests itself. Each entry follows Address's rules.
	Addresses []string `yaml:"addresses"`
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string `yaml:"ca_file"`
	// Mount is the KV v2 secrets engine's mount path.
	Mount string `yaml:"mount"`
	// Prefix is the folder under Mount: grants live at
	// <mount>/data/<prefix>/grants/<provider>/<user> and refresh leases at
	// <mount>/data/<prefix>/leases/<provider>/<user>.
	Prefix string `yaml:"prefix"`
	// Timeout bounds each store operation, all its Vault calls included.
	Timeout time.Duration `yaml:"timeout"`
	// Auth says how the store logs in to Vault.
	Auth AuthConfig `yaml:"auth"`
	// Transit optionally envelopes token fields with a Transit key.
	Transit TransitConfig `yaml:"transit"`
}

// AuthConfig configures how the store obtains its Vault token. Credentials
// are always read from files, at every login, so that rotated files take
// effect without a restart and no secret sits in the configuration.
type AuthConfig struct {
	// Method is token, approle or kubernetes.
	Method string `yaml:"method"`
	// TokenFile holds a Vault token (method token).
	TokenFile string `yaml:"token_file"`
	// RoleID is the AppRole role id (not a secret on its own).
	RoleID string `yaml:"role_id"`
	// SecretIDFile holds the AppRole secret id.
	SecretIDFile string `yaml:"secret_id_file"`
	// AppRoleMount is the AppRole auth mount path.
	AppRoleMount string `yaml:"approle_mount"`
	// KubernetesRole is the Vault role of the Kubernetes auth method.
	KubernetesRole string `yaml:"kubernetes_role"`
	// KubernetesTokenFile is the projected service-account token presented
	// at login.
	KubernetesTokenFile string `yaml:"kubernetes_token_file"`
	// KubernetesMount is the Kubernetes auth mount path.
	KubernetesMount string `yaml:"kubernetes_mount"`
}

// TransitConfig configures the Transit envelope of token fields.
type TransitConfig struct {
	// Enabled turns the envelope on: access and refresh tokens are stored
	// as Transit ciphertext, never in clear.
	Enabled bool `yaml:"enabled"`
	// Mount is the Transit engine's mount path.
	Mount string `yaml:"mount"`
	// Key names the Transit key. It must have been created with
	// derived=true: the derivation context binds each ciphertext to its
	// provider, user and field.
	Key string `yaml:"key"`
}

// DefaultConfig returns the defaults: KV v2 at secret/, prefix onbehalf,
// DefaultTimeout, Kubernetes auth from the projected token file, Transit off.
// Address and the method's own settings (role, files) have no default.
func DefaultConfig() Config {
	return Config{
		Mount:   DefaultMount,
		Prefix:  DefaultPrefix,
		Timeout: DefaultTimeout,
		Auth: AuthConfig{
			Method:              AuthKubernetes,
			AppRoleMount:        DefaultAppRoleMount,
			KubernetesTokenFile: DefaultKubernetesTokenFile,
			KubernetesMount:     DefaultKubernetesMount,
		},
		Transit: TransitConfig{Mount: DefaultTransitMount},
	}
}

// Validate reports every problem with c at once, as an errors.Join of
// *config.FieldError with paths relative to the Vault section
// (`auth.role_id: required for method approle`).
func (c Config) Validate() error {
	var p config.Problems
	switch {
	case c.Address != "" && len(c.Addresses) > 0:
		p.Addf("addresses", "set address (one Vault address, or a load balancer in front of a cluster) or addresses (a cluster's nodes), not both")
	case len(c.Addresses) > 0:
		seen := map[string]bool{}
		for i, a := range c.Addresses {
			path := fmt.Sprintf("addresses[%d]", i)
			validateAddress(&p, path, a)
			if k := strings.TrimSuffix(strings.ToLower(a), "/"); seen[k] {
				p.Addf(path, "duplicate address %q", a)
			} else {
				seen[k] = true
			}
		}
		if len(c.Addresses) > maxAddresses {
			p.Addf("addresses", "at most %d addresses, got %d", maxAddresses, len(c.Addresses))
		}
	default:
		validateAddress(&p, "address", c.Address)
	}
	checkMountPath(&p, "mount", c.Mount)
	checkMountPath(&p, "prefix", c.Prefix)
	if c.Timeout <= 0 || c.Timeout > maxTimeout {
		p.Addf("timeout", "must be positive and at most %s", maxTimeout)
	}
	a := c.Auth
	switch a.Method {
	case AuthToken:
		if a.TokenFile == "" {
			p.Addf("auth.token_file", "required for method token")
		}
	case AuthAppRole:
		if a.RoleID == "" {
			p.Addf("auth.role_id", "required for method approle")
		}
		if a.SecretIDFile == "" {
			p.Addf("auth.secret_id_file", "required for method approle")
		}
		checkMountPath(&p, "auth.approle_mount", a.AppRoleMount)
	case AuthKubernetes:
		if a.KubernetesRole == "" {
			p.Addf("auth.kubernetes_role", "required for method kubernetes")
		}
		if a.KubernetesTokenFile == "" {
			p.Addf("auth.kubernetes_token_file", "required for method kubernetes")
		}
		checkMountPath(&p, "auth.kubernetes_mount", a.KubernetesMount)
	default:
		p.Addf("auth.method", "must be %q, %q or %q, got %q", AuthToken, AuthAppRole, AuthKubernetes, a.Method)
	}
	if c.Transit.Enabled {
		checkMountPath(&p, "transit.mount", c.Transit.Mount)
		switch {
		case c.Transit.Key == "":
			p.Addf("transit.key", "required when transit is enabled")
		case !validSegment(c.Transit.Key):
			p.Addf("transit.key", "may contain only A-Z, a-z, 0-9, '.', '_' and '-'")
		}
	}
	return p.Err()
}

// Endpoints returns the configured Vault addresses: Addresses, or Address
// alone.
func (c Config) Endpoints() []string {
	if len(c.Addresses) > 0 {
		return c.Addresses
	}
	return []string{c.Address}
}

// validateAddress checks that addr is an absolute http(s) URL without
// credentials, query or path, and https unless the host is loopback.
func validateAddress(p *config.Problems, path, addr string) {
	if addr == "" {
		p.Addf(path, "required: Vault's URL, e.g. https://vault.example:8200")
		return
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		p.Addf(path, "must be an absolute https URL, e.g. https://vault.example:8200")
		return
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		p.Addf(path, "must be scheme://host[:port] only, without credentials, path or query")
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		p.Addf(path, "must be an https URL: plain http is allowed only to a loopback address")
	}
}

// isLoopback reports whether host is localhost or a loopback IP.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkMountPath validates a mount or prefix: one or more segments
// separated by '/', without leading or trailing '/'.
func checkMountPath(p *config.Problems, path, v string) {
	if v == "" {
		p.Addf(path, "must not be empty")
		return
	}
	if !validPath(v) {
		p.Addf(path, "must be segments of A-Z, a-z, 0-9, '.', '_' and '-' separated by '/', without '..' or a leading or trailing '/'")
	}
}

// validPath reports whether v is one or more valid segments joined by '/'.
func validPath(v string) bool {
	if v == "" {
		return false
	}
	for seg := range strings.SplitSeq(v, "/") {
		if !validSegment(seg) {
			return false
		}
	}
	return true
}

// validSegment reports whether s is a non-empty path segment of safe
// characters that is not "." or "..".
func validSegment(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
