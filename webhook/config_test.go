package webhook

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

func TestLoadInvalidReportsEverything(t *testing.T) {
	_, err := Load(filepath.Join("testdata", "config", "invalid.yaml"), nil, nil)
	if err == nil {
		t.Fatal("got nil; want every problem")
	}
	var got []string
	for _, e := range config.Flatten(err) {
		got = append(got, e.Error())
	}
	slices.Sort(got)
	want := []string{
		`admin_listen: must be host:port, got "127.0.0.1:8443x"`,
		`agent.ca_env[1]: must be an environment variable name, got "1BAD"`,
		`agent.ca_env[2]: HTTPS_PROXY is a proxy variable`,
		`agent.no_proxy[0]: "*" would send every request around the sidecar`,
		`agent.no_proxy[1]: must be one host, domain, address or CIDR, without commas or white space`,
		`agent.no_proxy[2]: must not be empty`,
		`agent.trsut: unknown key`,
		`agent.trust_mount_path: must be an absolute directory path, got "relative/dir"`,
		`listen: must be host:port, got "8443"`,
		`log.level: must be debug, info, warn or error, got "loud"`,
		`native_sidecar: must be a boolean (true or false), got "maybe"`,
		`sidecar.admin_port: must differ from proxy_port`,
		`sidecar.config_map: must be a Kubernetes object name (lower-case letters, digits, '-' and '.'), got "Not_A_Name"`,
		`sidecar.image: required: the onbehalf image, e.g. ghcr.io/onbehalf-dev/onbehalf:1.0.0`,
		`sidecar.image_pull_policy: must be Always, IfNotPresent or Never, got "Sometimes"`,
		`sidecar.name: must be a DNS label (lower-case letters, digits and '-', at most 63), got "OnBehalf"`,
		`sidecar.resources.requests.cpu: must be a Kubernetes quantity such as 100m or 64Mi, got "lots"`,
		`sidecar.resources.requests.gpu: unknown resource (want cpu, memory or ephemeral-storage)`,
		`sidecar.run_as_user: must be a non-root user id (1 or more)`,
		`sidecar.vault_token.audience: required, without white space`,
		`sidecar.vault_token.expiration_seconds: must be between 600 and 86400`,
		`sidecar.vault_token.path: must not be in /etc/onbehalf/secret, which the sidecar already mounts`,
		`tls.cert_file: required: the API server only calls webhooks over TLS`,
		`tls.key_file: required`,
		`tls.reload_interval: must be between 1s and 10m0s`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestLoadDefaultsEnvAndPaths(t *testing.T) {
	path := filepath.Join("testdata", "config", "fallback.yaml")
	env := []string{"ONBEHALF_SIDECAR_IMAGE=registry.example.com/onbehalf:2", "ONBEHALF_AGENT_NO_PROXY=.internal,10.0.0.0/8"}
	cfg, err := Load(path, env, func(c *Config) {
		c.TLS.CertFile, c.TLS.KeyFile = "tls/tls.crt", "tls/tls.key"
	})
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(filepath.Join("testdata", "config", "tls", "tls.crt"))
	if cfg.TLS.CertFile != abs {
		t.Errorf("cert_file: got %q; want %q (relative to the config file)", cfg.TLS.CertFile, abs)
	}
	if cfg.Sidecar.Image != "registry.example.com/onbehalf:2" {
		t.Errorf("image: got %q; want the environment's", cfg.Sidecar.Image)
	}
	if diff := cmp.Diff([]string{".internal", "10.0.0.0/8"}, cfg.Agent.NoProxy); diff != "" {
		t.Errorf("no_proxy (-want +got):\n%s", diff)
	}
	// Defaults the file does not mention.
	d := DefaultConfig()
	if cfg.Sidecar.ProxyPort != d.Sidecar.ProxyPort || cfg.Sidecar.RunAsUser != DefaultSidecarUID || cfg.Listen != "127.0.0.1:0" {
		t.Errorf("got %+v; want defaults where the file is silent", cfg.Sidecar)
	}
	if cfg.Sidecar.VaultToken.Enabled {
		t.Error("vault_token.enabled: got true; want the file's false")
	}
}

func TestDefaultConfigNeedsOnlyImageAndTLS(t *testing.T) {
	c := DefaultConfig()
	err := c.Validate()
	var msgs []string
	for _, e := range config.Flatten(err) {
		msgs = append(msgs, strings.SplitN(e.Error(), ":", 2)[0])
	}
	slices.Sort(msgs)
	if diff := cmp.Diff([]string{"sidecar.image", "tls.cert_file", "tls.key_file"}, msgs); diff != "" {
		t.Errorf("problems of the defaults (-want +got):\n%s", diff)
	}
	c.Sidecar.Image, c.TLS.CertFile, c.TLS.KeyFile = "onbehalf:1", "/c", "/k"
	if err := c.Validate(); err != nil {
		t.Errorf("got %v; want the completed defaults valid", err)
	}
}

func TestQuantities(t *testing.T) {
	for _, q := range []string{"1", "100m", "0.5", ".5", "64Mi", "1Gi", "2G", "1e3", "1E-2", "500k"} {
		if !quantityRE.MatchString(q) {
			t.Errorf("%q: got invalid; want valid", q)
		}
	}
	for _, q := range []string{"", "-1", "1.", "Mi", "1 Gi", "1mi", "1KB", "1e", "ten"} {
		if quantityRE.MatchString(q) {
			t.Errorf("%q: got valid; want invalid", q)
		}
	}
}
