package webhook

import (
	"errors"
	"fmt"
	"net"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Mount paths inside the sidecar. They are fixed rather than configurable
// so that the sidecar configuration the chart renders (which names files
// under them) and the pod the webhook builds cannot disagree.
const (
	// ConfigMountPath holds the sidecar config ConfigMap: the config file
	// and the files it names (identity keys, CA bundles).
	ConfigMountPath = "/etc/onbehalf/config"
	// PolicyMountPath holds the policy ConfigMap (Rego and data files).
	PolicyMountPath = "/etc/onbehalf/policy"
	// SecretMountPath holds the interception CA (SecretCertKey,
	// SecretKeyKey) and the audit fingerprint key (AuditKeyKey).
	SecretMountPath = "/etc/onbehalf/secret"
	// SidecarSecretMountPath holds the operator's Secret for the sidecar
	// (SidecarConfig.SidecarSecret): the credentials its configuration
	// names as files, such as rate_limits.redis.password_file or
	// store.vault.auth.secret_id_file.
	SidecarSecretMountPath = "/etc/onbehalf/sidecar-secret"
	// TmpMountPath is the sidecar's only writable directory (an emptyDir
	// that survives container restarts); the chart puts the refresh
	// journal there.
	TmpMountPath = "/tmp"
)

// Keys the webhook expects in the objects it mounts.
const (
	// SecretCertKey and SecretKeyKey name the interception CA certificate
	// and private key in the CA Secret; they are mounted under the same
	// names in SecretMountPath.
	SecretCertKey = "ca.crt"
	SecretKeyKey  = "ca.key"
	// AuditKeyKey names the audit fingerprint key in the audit Secret.
	AuditKeyKey = "fingerprint.key"
	// TrustKey names the PEM bundle agents trust in the trust ConfigMap;
	// agents find it at <agent.trust_mount_path>/ca.pem.
	TrustKey = "ca.pem"
)

// Defaults.
const (
	DefaultListen          = ":8443"
	DefaultAdminListen     = ":8080"
	DefaultSidecarName     = "onbehalf"
	DefaultPullPolicy      = "IfNotPresent"
	DefaultProxyPort       = 15080
	DefaultAdminPort       = 15090
	DefaultConfigMap       = "onbehalf-sidecar"
	DefaultConfigKey       = "onbehalf.yaml"
	DefaultCASecret        = "onbehalf-ca"
	DefaultTrustConfigMap  = "onbehalf-trust"
	DefaultTrustMountPath  = "/etc/onbehalf/trust"
	DefaultVaultAudience   = "vault"
	DefaultVaultTokenPath  = "/var/run/secrets/vault/token"
	DefaultSidecarUID      = 65532 // distroless "nonroot"
	DefaultTLSReload       = 10 * time.Second
	DefaultVaultExpiration = 3600
	// minTokenExpiration is the API server's floor for a projected
	// service-account token's expirationSeconds.
	minTokenExpiration = 600
	// maxTokenExpiration caps the Vault login token's lifetime: the
	// kubelet rotates it at 80 % of its life, and a stolen one should not
	// outlive a working day.
	maxTokenExpiration = 86400
	// maxTLSReload caps how stale a rotated certificate may be served.
	maxTLSReload = 10 * time.Minute
)

// DefaultCAEnv lists the variables that name a CA bundle for common
// clients: OpenSSL and Go (SSL_CERT_FILE), Python requests, curl, Node.js
// (additive to its built-in roots), git and the AWS SDKs.
var DefaultCAEnv = []string{
	"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE",
}

// Config configures the webhook: where it listens and what it injects.
type Config struct {
	// Listen is the HTTPS address the API server calls (/mutate, /healthz).
	Listen string `yaml:"listen"`
	// AdminListen is a plain-HTTP address for probes and Prometheus
	// (/healthz, /metrics); empty disables it.
	AdminListen string `yaml:"admin_listen"`
	// TLS names the serving key pair.
	TLS TLSConfig `yaml:"tls"`
	// InjectByDefault injects every pod the webhook sees unless it is
	// annotated onbehalf.dev/inject: "false". Off, only pods annotated
	// onbehalf.dev/inject: "true" are injected.
	InjectByDefault bool `yaml:"inject_by_default"`
	// NativeSidecar injects the sidecar as an init container with
	// restartPolicy Always (Kubernetes 1.29 and later): it starts before
	// every other container and stops after them, and Jobs complete. Off,
	// it is the first ordinary container. The chart sets it from the
	// cluster's version.
	NativeSidecar bool `yaml:"native_sidecar"`
	// Sidecar describes the injected container.
	Sidecar SidecarConfig `yaml:"sidecar"`
	// Agent describes what agent containers receive.
	Agent AgentConfig `yaml:"agent"`
	// Log configures operational logs.
	Log LogConfig `yaml:"log"`
}

// TLSConfig names the webhook's serving certificate and key (PEM). Both
// files are re-read when they change, so a rotated Secret takes effect
// without a restart.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ReloadInterval is how often, at most, the files are checked for a
	// change (on the next handshake after it elapses).
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// SidecarConfig describes the injected sidecar container.
type SidecarConfig struct {
	// Name is the container's name; it is reserved in injected pods.
	Name string `yaml:"name"`
	// Image is the onbehalf image (required).
	Image string `yaml:"image"`
	// ImagePullPolicy is Always, IfNotPresent or Never.
	ImagePullPolicy string `yaml:"image_pull_policy"`
	// ProxyPort is the proxy listener's port, bound on 127.0.0.1 only.
	ProxyPort int `yaml:"proxy_port"`
	// AdminPort is the admin listener's port (/healthz, /readyz, /metrics,
	// /ca.pem), bound on every pod address so the kubelet can probe it.
	AdminPort int `yaml:"admin_port"`
	// RunAsUser and RunAsGroup are the sidecar's ids; agents may not run
	// as RunAsUser.
	RunAsUser  int64 `yaml:"run_as_user"`
	RunAsGroup int64 `yaml:"run_as_group"`
	// Resources are the sidecar's requests and limits; the
	// onbehalf.dev/resources annotation replaces them per pod.
	Resources Resources `yaml:"resources"`
	// ConfigMap names the ConfigMap holding the sidecar configuration
	// (ConfigKey) and the files it refers to; the onbehalf.dev/config
	// annotation replaces it per pod. It is mounted at ConfigMountPath.
	ConfigMap string `yaml:"config_map"`
	ConfigKey string `yaml:"config_key"`
	// PolicyConfigMap names a ConfigMap of policies mounted at
	// PolicyMountPath; empty mounts none (policies from a bundle server).
	// The onbehalf.dev/policy annotation replaces it per pod.
	PolicyConfigMap string `yaml:"policy_config_map"`
	// CASecret names the Secret with the interception CA (keys ca.crt and
	// ca.key), mounted into the sidecar only.
	CASecret string `yaml:"ca_secret"`
	// AuditSecret names a Secret with the audit fingerprint key (key
	// fingerprint.key), mounted into the sidecar only; empty mounts none.
	AuditSecret string `yaml:"audit_secret"`
	// SidecarSecret names a Secret of the operator's whose keys are
	// mounted as files in SidecarSecretMountPath, in the sidecar only;
	// empty mounts none.
	SidecarSecret string `yaml:"sidecar_secret"`
	// VaultToken configures the projected service-account token the
	// sidecar presents to Vault's Kubernetes auth method.
	VaultToken VaultTokenConfig `yaml:"vault_token"`
}

// Resources are container requests and limits as Kubernetes quantities
// ("100m", "64Mi") keyed by resource name (cpu, memory, ephemeral-storage).
type Resources struct {
	Requests map[string]string `yaml:"requests" json:"requests,omitempty"`
	Limits   map[string]string `yaml:"limits" json:"limits,omitempty"`
}

// VaultTokenConfig configures the sidecar's projected service-account token.
type VaultTokenConfig struct {
	// Enabled mounts the token. Turn it off when the store is not Vault
	// with Kubernetes auth.
	Enabled bool `yaml:"enabled"`
	// Audience is the token's audience; the Vault role must require it, so
	// that the pod's ordinary API-server tokens are useless to Vault.
	Audience string `yaml:"audience"`
	// Path is where the token file appears in the sidecar; the sidecar's
	// store.vault.auth.kubernetes_token_file must name it.
	Path string `yaml:"path"`
	// ExpirationSeconds is the token's lifetime; the kubelet renews it.
	ExpirationSeconds int64 `yaml:"expiration_seconds"`
}

// AgentConfig describes what every agent container receives.
type AgentConfig struct {
	// TrustConfigMap names the ConfigMap whose ca.pem is the CA bundle
	// agents trust (the interception CA and any extra roots).
	TrustConfigMap string `yaml:"trust_config_map"`
	// TrustMountPath is where the bundle's directory is mounted in agents.
	TrustMountPath string `yaml:"trust_mount_path"`
	// CAEnv lists the variables set to the bundle's path.
	CAEnv []string `yaml:"ca_env"`
	// NoProxy adds destinations the agent reaches directly, after
	// localhost, 127.0.0.1 and ::1. Never list a host a route names: the
	// agent would reach it without the sidecar, and without credentials.
	NoProxy []string `yaml:"no_proxy"`
}

// LogConfig configures operational logs.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or console.
	Format string `yaml:"format"`
}

// DefaultConfig returns the defaults. Sidecar.Image and the TLS files have
// none.
func DefaultConfig() Config {
	return Config{
		Listen:      DefaultListen,
		AdminListen: DefaultAdminListen,
		TLS:         TLSConfig{ReloadInterval: DefaultTLSReload},
		Sidecar: SidecarConfig{
			Name:            DefaultSidecarName,
			ImagePullPolicy: DefaultPullPolicy,
			ProxyPort:       DefaultProxyPort,
			AdminPort:       DefaultAdminPort,
			RunAsUser:       DefaultSidecarUID,
			RunAsGroup:      DefaultSidecarUID,
			Resources: Resources{
				Requests: map[string]string{"cpu": "50m", "memory": "64Mi"},
				Limits:   map[string]string{"memory": "256Mi"},
			},
			ConfigMap: DefaultConfigMap,
			ConfigKey: DefaultConfigKey,
			CASecret:  DefaultCASecret,
			VaultToken: VaultTokenConfig{
				Enabled:           true,
				Audience:          DefaultVaultAudience,
				Path:              DefaultVaultTokenPath,
				ExpirationSeconds: DefaultVaultExpiration,
			},
		},
		Agent: AgentConfig{
			TrustConfigMap: DefaultTrustConfigMap,
			TrustMountPath: DefaultTrustMountPath,
			CAEnv:          slices.Clone(DefaultCAEnv),
		},
		Log: LogConfig{Level: "info", Format: "json"},
	}
}

// Load reads the YAML file at path over the defaults, applies ONBEHALF_*
// overrides from environ, then override (flags; may be nil), makes the TLS
// file paths absolute relative to the file's directory, and validates.
// Every problem is reported at once.
func Load(path string, environ []string, override func(*Config)) (Config, error) {
	cfg := DefaultConfig()
	loadErr := config.Load(path, &cfg, environ)
	var fe *config.FieldError
	if loadErr != nil && !errors.As(loadErr, &fe) {
		return cfg, loadErr // unreadable file: nothing to validate
	}
	if override != nil {
		override(&cfg)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		dir = filepath.Dir(path)
	}
	for _, p := range []*string{&cfg.TLS.CertFile, &cfg.TLS.KeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return cfg, errors.Join(loadErr, cfg.Validate())
}

// Validate reports every problem in c with its path.
func (c Config) Validate() error {
	var p config.Problems
	checkListen(&p, "listen", c.Listen, true)
	checkListen(&p, "admin_listen", c.AdminListen, false)
	if c.AdminListen != "" && c.AdminListen == c.Listen {
		p.Addf("admin_listen", "must differ from listen")
	}
	if c.TLS.CertFile == "" {
		p.Addf("tls.cert_file", "required: the API server only calls webhooks over TLS")
	}
	if c.TLS.KeyFile == "" {
		p.Addf("tls.key_file", "required")
	}
	if c.TLS.ReloadInterval < time.Second || c.TLS.ReloadInterval > maxTLSReload {
		p.Addf("tls.reload_interval", "must be between 1s and %s", maxTLSReload)
	}
	p.Add("sidecar", c.Sidecar.validate())
	p.Add("agent", c.Agent.validate())
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		p.Addf("log.format", "must be json or console, got %q", c.Log.Format)
	}
	return p.Err()
}

func (s SidecarConfig) validate() error {
	var p config.Problems
	if !isDNSLabel(s.Name) {
		p.Addf("name", "must be a DNS label (lower-case letters, digits and '-', at most 63), got %q", s.Name)
	}
	if s.Image == "" {
		p.Addf("image", "required: the onbehalf image, e.g. ghcr.io/onbehalf-dev/onbehalf:1.0.0")
	} else if strings.ContainsFunc(s.Image, isSpaceOrControl) {
		p.Addf("image", "must not contain white space")
	}
	switch s.ImagePullPolicy {
	case "Always", "IfNotPresent", "Never":
	default:
		p.Addf("image_pull_policy", "must be Always, IfNotPresent or Never, got %q", s.ImagePullPolicy)
	}
	checkPort(&p, "proxy_port", s.ProxyPort)
	checkPort(&p, "admin_port", s.AdminPort)
	if s.ProxyPort == s.AdminPort {
		p.Addf("admin_port", "must differ from proxy_port")
	}
	if s.RunAsUser < 1 {
		p.Addf("run_as_user", "must be a non-root user id (1 or more)")
	}
	if s.RunAsGroup < 1 {
		p.Addf("run_as_group", "must be a non-root group id (1 or more)")
	}
	p.Add("resources", s.Resources.validate())
	checkName(&p, "config_map", s.ConfigMap, true)
	if !isConfigKey(s.ConfigKey) {
		p.Addf("config_key", "must be a ConfigMap key (letters, digits, '-', '_', '.'), got %q", s.ConfigKey)
	}
	checkName(&p, "policy_config_map", s.PolicyConfigMap, false)
	checkName(&p, "ca_secret", s.CASecret, true)
	checkName(&p, "audit_secret", s.AuditSecret, false)
	checkName(&p, "sidecar_secret", s.SidecarSecret, false)
	if v := s.VaultToken; v.Enabled {
		if v.Audience == "" || strings.ContainsFunc(v.Audience, isSpaceOrControl) {
			p.Addf("vault_token.audience", "required, without white space")
		}
		if !isMountPath(v.Path) || path.Dir(v.Path) == "/" {
			p.Addf("vault_token.path", "must be an absolute file path below a directory, got %q", v.Path)
		} else if reserved := reservedDir(path.Dir(v.Path)); reserved != "" {
			p.Addf("vault_token.path", "must not be in %s, which the sidecar already mounts", reserved)
		}
		if v.ExpirationSeconds < minTokenExpiration || v.ExpirationSeconds > maxTokenExpiration {
			p.Addf("vault_token.expiration_seconds", "must be between %d and %d", minTokenExpiration, maxTokenExpiration)
		}
	}
	return p.Err()
}

func (a AgentConfig) validate() error {
	var p config.Problems
	checkName(&p, "trust_config_map", a.TrustConfigMap, true)
	if !isMountPath(a.TrustMountPath) || a.TrustMountPath == "/" {
		p.Addf("trust_mount_path", "must be an absolute directory path, got %q", a.TrustMountPath)
	}
	for i, name := range a.CAEnv {
		if !isEnvName(name) {
			p.Addf(fmt.Sprintf("ca_env[%d]", i), "must be an environment variable name, got %q", name)
		} else if proxyVar(name) {
			p.Addf(fmt.Sprintf("ca_env[%d]", i), "%s is a proxy variable", name)
		}
	}
	for i, h := range a.NoProxy {
		key := fmt.Sprintf("no_proxy[%d]", i)
		switch {
		case h == "":
			p.Addf(key, "must not be empty")
		case h == "*":
			p.Addf(key, "\"*\" would send every request around the sidecar")
		case strings.ContainsFunc(h, func(r rune) bool { return r == ',' || isSpaceOrControl(r) }):
			p.Addf(key, "must be one host, domain, address or CIDR, without commas or white space")
		}
	}
	return p.Err()
}

func (r Resources) validate() error {
	var p config.Problems
	for _, part := range []struct {
		name string
		m    map[string]string
	}{{"requests", r.Requests}, {"limits", r.Limits}} {
		for _, k := range sortedKeys(part.m) {
			if !knownResource(k) {
				p.Addf(part.name+"."+k, "unknown resource (want cpu, memory or ephemeral-storage)")
			}
			if !quantityRE.MatchString(part.m[k]) {
				p.Addf(part.name+"."+k, "must be a Kubernetes quantity such as 100m or 64Mi, got %q", part.m[k])
			}
		}
	}
	return p.Err()
}

func checkListen(p *config.Problems, key, addr string, required bool) {
	if addr == "" {
		if required {
			p.Addf(key, "required")
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		p.Addf(key, "must be host:port, got %q", addr)
	}
}

func checkPort(p *config.Problems, key string, port int) {
	if port < 1 || port > 65535 {
		p.Addf(key, "must be between 1 and 65535")
	}
}

func checkName(p *config.Problems, key, name string, required bool) {
	switch {
	case name == "" && !required:
	case name == "":
		p.Addf(key, "required")
	case !isDNSSubdomain(name):
		p.Addf(key, "must be a Kubernetes object name (lower-case letters, digits, '-' and '.'), got %q", name)
	}
}

// reservedDir returns the sidecar mount that dir is, is inside or contains,
// or "".
func reservedDir(dir string) string {
	for _, r := range []string{ConfigMountPath, PolicyMountPath, SecretMountPath, SidecarSecretMountPath, TmpMountPath} {
		if dir == r || strings.HasPrefix(dir, r+"/") || strings.HasPrefix(r, dir+"/") {
			return r
		}
	}
	return ""
}

// quantityRE matches the non-negative Kubernetes quantities people write:
// a decimal number with an optional binary (Ki…Ei), decimal (n…E) or
// exponent suffix.
var quantityRE = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$`)

var (
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	configKeyRE = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

func isDNSLabel(s string) bool { return len(s) <= 63 && dnsLabelRE.MatchString(s) }

func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !isDNSLabel(label) {
			return false
		}
	}
	return true
}

func isEnvName(s string) bool { return len(s) <= 256 && envNameRE.MatchString(s) }

func isConfigKey(s string) bool {
	return len(s) <= 253 && configKeyRE.MatchString(s) && s != "." && s != ".."
}

func isMountPath(s string) bool {
	return strings.HasPrefix(s, "/") && path.Clean(s) == s && !strings.ContainsFunc(s, isSpaceOrControl)
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

func knownResource(name string) bool {
	return name == "cpu" || name == "memory" || name == "ephemeral-storage"
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
