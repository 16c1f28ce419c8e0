package oauth

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// validConfig returns a minimal valid configuration.
func validConfig() ProviderConfig {
	c := DefaultProviderConfig()
	c.TokenURL = "https://provider.example/token"
	c.ClientID = "client"
	c.ClientSecretFile = "/run/secrets/client"
	c.AuthStyle = AuthStyleHeader
	return c
}

// problemPaths returns the sorted paths of the FieldErrors in err.
func problemPaths(t *testing.T, err error) []string {
	t.Helper()
	var paths []string
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("problem %v is %T; want *config.FieldError", e, e)
		}
		paths = append(paths, fe.Path)
	}
	slices.Sort(paths)
	return paths
}

func TestDefaultProviderConfig(t *testing.T) {
	c := DefaultProviderConfig()
	if c.RefreshSkew != 2*time.Minute || c.RefreshJitter != 30*time.Second || c.Timeout != 10*time.Second {
		t.Errorf("defaults = skew %s, jitter %s, timeout %s; want 2m, 30s, 10s", c.RefreshSkew, c.RefreshJitter, c.Timeout)
	}
	if c.AuthStyle != "" {
		t.Errorf("default auth_style = %q; want none (it must be chosen explicitly)", c.AuthStyle)
	}
	if err := validConfig().Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestProviderConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(c *ProviderConfig)
		want []string // problem paths
	}{
		{"loopback http token url", func(c *ProviderConfig) { c.TokenURL = "http://127.0.0.1:8080/token" }, nil},
		{"localhost http token url", func(c *ProviderConfig) { c.TokenURL = "http://localhost/token" }, nil},
		{"ipv6 loopback", func(c *ProviderConfig) { c.TokenURL = "http://[::1]:9/token" }, nil},
		{"vault secret", func(c *ProviderConfig) { c.ClientSecretFile, c.ClientSecretVault = "", "kv/app#secret" }, nil},
		{"missing token url", func(c *ProviderConfig) { c.TokenURL = "" }, []string{"token_url"}},
		{"http token url", func(c *ProviderConfig) { c.TokenURL = "http://provider.example/token" }, []string{"token_url"}},
		{"relative token url", func(c *ProviderConfig) { c.TokenURL = "/token" }, []string{"token_url"}},
		{"token url with credentials", func(c *ProviderConfig) { c.TokenURL = "https://u:p@provider.example/token" }, []string{"token_url"}},
		{"ftp userinfo url", func(c *ProviderConfig) { c.UserinfoURL = "ftp://provider.example/me" }, []string{"userinfo_url"}},
		{"fragment", func(c *ProviderConfig) { c.RevocationURL = "https://provider.example/revoke#x" }, []string{"revocation_url"}},
		{"no secret", func(c *ProviderConfig) { c.ClientSecretFile = "" }, []string{""}},
		{"two secrets", func(c *ProviderConfig) { c.ClientSecretVault = "kv/app#secret" }, []string{"client_secret_vault"}},
		{"vault ref without field", func(c *ProviderConfig) { c.ClientSecretFile, c.ClientSecretVault = "", "kv/app" }, []string{"client_secret_vault"}},
		{"vault ref with two fields", func(c *ProviderConfig) { c.ClientSecretFile, c.ClientSecretVault = "", "kv/app#a#b" }, []string{"client_secret_vault"}},
		{"auth style missing", func(c *ProviderConfig) { c.AuthStyle = "" }, []string{"auth_style"}},
		{"auth style auto", func(c *ProviderConfig) { c.AuthStyle = "auto" }, []string{"auth_style"}},
		{"bad scope", func(c *ProviderConfig) { c.Scopes = []string{"ok", "has space", ""} }, []string{"scopes[1]", "scopes[2]"}},
		{"skew of a second", func(c *ProviderConfig) { c.RefreshSkew = time.Second }, nil},
		{"skew too small", func(c *ProviderConfig) { c.RefreshSkew = time.Second - 1 }, []string{"refresh_skew"}},
		{"skew too large", func(c *ProviderConfig) { c.RefreshSkew = time.Hour }, []string{"refresh_skew"}},
		{"negative jitter", func(c *ProviderConfig) { c.RefreshJitter = -time.Second }, []string{"refresh_jitter"}},
		{"zero timeout", func(c *ProviderConfig) { c.Timeout = 0 }, []string{"timeout"}},
		{"timeout too long", func(c *ProviderConfig) { c.Timeout = maxTimeout + time.Second }, []string{"timeout"}},
		{"reuse grace", func(c *ProviderConfig) { c.RefreshReuseGrace = 30 * time.Second }, nil},
		{"negative reuse grace", func(c *ProviderConfig) { c.RefreshReuseGrace = -time.Second }, []string{"refresh_reuse_grace"}},
		{"reuse grace too long", func(c *ProviderConfig) { c.RefreshReuseGrace = time.Hour }, []string{"refresh_reuse_grace"}},
		{"everything at once", func(c *ProviderConfig) { *c = ProviderConfig{} },
			[]string{"", "auth_style", "client_id", "refresh_skew", "timeout", "token_url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(&c)
			err := c.Validate()
			if got := problemPaths(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q (%v); want %q", got, err, tt.want)
			}
		})
	}
}

func TestProviderConfigDecode(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "provider.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := DefaultProviderConfig()
	if err := config.Decode(data, &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := ProviderConfig{
		TokenURL:          "https://slack.com/api/oauth.v2.access",
		AuthorizationURL:  "https://slack.com/oauth/v2/authorize",
		RevocationURL:     "https://slack.com/api/auth.revoke",
		UserinfoURL:       "https://slack.com/api/openid.connect.userInfo",
		ClientID:          "1234.5678",
		ClientSecretVault: "secret/onbehalf/slack#client_secret",
		Scopes:            []string{"chat:write", "channels:read"},
		AuthStyle:         AuthStyleParams,
		RefreshSkew:       5 * time.Minute,
		RefreshJitter:     DefaultRefreshJitter,
		Timeout:           5 * time.Second,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	data, err = os.ReadFile(filepath.Join("testdata", "unknown_key.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultProviderConfig()
	err = config.Decode(data, &c)
	if got := problemPaths(t, err); !slices.Equal(got, []string{"refresh_skw"}) {
		t.Errorf("unknown key: problems at %q (%v); want refresh_skw", got, err)
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const secret = "s3cr3t-value"
	got, err := ReadSecretFile(write("ok", "  "+secret+"\n"))
	if err != nil || got != secret {
		t.Errorf("ReadSecretFile = (%q, %v); want the trimmed secret", got, err)
	}
	if _, err := ReadSecretFile(write("blank", " \n\t")); !errors.Is(err, ErrEmptySecret) {
		t.Errorf("blank file: error %v; want ErrEmptySecret", err)
	}
	if _, err := ReadSecretFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: error %v; want os.ErrNotExist", err)
	}
	big := write("big", secret+strings.Repeat("x", maxSecretFileSize))
	_, err = ReadSecretFile(big)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("oversized file: error %v; want a refusal that does not quote the content", err)
	}
}
