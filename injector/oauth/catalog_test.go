package oauth

import (
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// requiredPresets are the providers issue 6 asks the catalog to cover.
var requiredPresets = []string{
	"asana", "atlassian", "box", "dropbox", "figma", "github", "google", "hubspot",
	"linear", "microsoft", "notion", "salesforce", "slack", "zoom",
}

// presetConfig returns a minimal configuration based on preset: client
// credentials, and a tenant where the preset needs one.
func presetConfig(preset string) ProviderConfig {
	c := DefaultProviderConfig()
	c.Preset = preset
	c.ClientID = "client-123"
	c.ClientSecretFile = "/run/secrets/" + preset
	if preset == "microsoft" {
		c.Tenant = "contoso.onmicrosoft.com"
	}
	return c
}

func TestCatalogSorted(t *testing.T) {
	names := presetNames()
	if !slices.IsSorted(names) {
		t.Fatalf("catalog names %q are not sorted; lookupEntry needs them sorted", names)
	}
	if c := slices.Compact(slices.Clone(names)); len(c) != len(names) {
		t.Fatalf("catalog names %q hold duplicates", names)
	}
	for _, want := range requiredPresets {
		if _, ok := LookupPreset(want); !ok {
			t.Errorf("LookupPreset(%q) found nothing; issue 6 requires it", want)
		}
	}
	if _, ok := LookupPreset("nope"); ok {
		t.Errorf("LookupPreset(nope) found a preset")
	}
	got := Presets()
	gotNames := make([]string, len(got))
	for i, p := range got {
		gotNames[i] = p.Name
	}
	if !slices.Equal(gotNames, names) {
		t.Errorf("Presets() names = %q; want %q", gotNames, names)
	}
}

func TestPresetsAreCopies(t *testing.T) {
	p, _ := LookupPreset("google")
	p.AuthParams["prompt"] = "none"
	p.DefaultScopes[0] = "changed"
	p.Routes[0].Host = "evil.example"
	for _, q := range Presets() {
		if q.Name == "linear" {
			q.Routes[0].Paths[0] = "/changed"
		}
	}
	again, _ := LookupPreset("google")
	if again.AuthParams["prompt"] != "consent" || again.DefaultScopes[0] != "openid" || again.Routes[0].Host != "*.googleapis.com" {
		t.Errorf("changing a returned preset changed the catalog: %+v", again)
	}
	lin, _ := LookupPreset("linear")
	if lin.Routes[0].Paths[0] != "/graphql" {
		t.Errorf("changing Presets() output changed the catalog: %+v", lin.Routes)
	}
	r, err := presetConfig("google").Resolve()
	if err != nil {
		t.Fatal(err)
	}
	r.AuthParams["access_type"] = "online"
	r.Scopes[0] = "changed"
	if again, _ := LookupPreset("google"); again.AuthParams["access_type"] != "offline" || again.DefaultScopes[0] != "openid" {
		t.Errorf("changing a resolved config changed the catalog")
	}
}

// TestEveryPresetValidates checks each preset the way a configuration uses
// it: endpoints are https URLs, routes compile, separator and account field
// make sense, and a configuration naming only the preset and client
// credentials validates and builds a Provider.
func TestEveryPresetValidates(t *testing.T) {
	for _, pre := range Presets() {
		t.Run(pre.Name, func(t *testing.T) {
			if err := store.ValidateProvider(pre.Name); err != nil {
				t.Errorf("name %q is not a valid provider name: %v", pre.Name, err)
			}
			if pre.DisplayName == "" || pre.Notes == "" {
				t.Errorf("DisplayName %q, Notes %q; want both", pre.DisplayName, pre.Notes)
			}
			if u, err := url.Parse(pre.DocsURL); err != nil || u.Scheme != "https" || u.Host == "" {
				t.Errorf("DocsURL %q is not an https URL", pre.DocsURL)
			}
			c := presetConfig(pre.Name)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			r, err := c.Resolve()
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			for _, e := range []struct {
				key, val string
				required bool
			}{
				{"authorization_url", r.AuthorizationURL, true},
				{"token_url", r.TokenURL, true},
				{"revocation_url", r.RevocationURL, false},
				{"userinfo_url", r.UserinfoURL, false},
			} {
				if e.val == "" {
					if e.required {
						t.Errorf("%s is empty", e.key)
					}
					continue
				}
				u, err := url.Parse(e.val)
				if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || strings.ContainsAny(e.val, "{}") {
					t.Errorf("%s = %q; want an https URL without placeholders", e.key, e.val)
				}
			}
			switch pre.ScopeSeparator {
			case " ", ",":
			default:
				t.Errorf("ScopeSeparator = %q; want \" \" or \",\"", pre.ScopeSeparator)
			}
			if pre.UserinfoURL != "" && pre.AccountField == "" {
				t.Errorf("UserinfoURL set without AccountField")
			}
			if pre.AuthStyle != AuthStyleHeader && pre.AuthStyle != AuthStyleParams {
				t.Errorf("AuthStyle = %q", pre.AuthStyle)
			}
			for _, s := range pre.DefaultScopes {
				if !validScope(s) || (pre.ScopeSeparator == "," && strings.Contains(s, ",")) {
					t.Errorf("default scope %q is not a valid scope token", s)
				}
			}
			routes := c.Routes("work-" + pre.Name)
			if len(routes) == 0 {
				t.Fatalf("no default routes")
			}
			for i, rc := range routes {
				if rc.Provider != "work-"+pre.Name {
					t.Errorf("routes[%d].Provider = %q; want %q", i, rc.Provider, "work-"+pre.Name)
				}
			}
			if _, err := injector.NewTable(routes); err != nil {
				t.Errorf("default routes do not compile: %v", err)
			}
			p, err := NewProvider(pre.Name, c, "secret-value", nil)
			if err != nil {
				t.Fatalf("NewProvider: %v", err)
			}
			p.CloseIdleConnections()
			e, _ := lookupEntry(pre.Name)
			if e.q.account == accountGraphQL && e.q.accountQuery == "" {
				t.Errorf("GraphQL account lookup without a query")
			}
			if e.q.refreshPath != "" && !strings.HasPrefix(e.q.refreshPath, "/") {
				t.Errorf("refreshPath %q is not an absolute path", e.q.refreshPath)
			}
			if (e.q.revoke != revokeRFC7009 || e.q.revokeAccess) && pre.RevocationURL == "" {
				t.Errorf("revocation quirks without a revocation URL")
			}
		})
	}
}

func TestResolve(t *testing.T) {
	withCreds := func(c ProviderConfig) ProviderConfig {
		c.ClientID = "client-123"
		c.ClientSecretFile = "/run/secrets/x"
		return c
	}
	tests := []struct {
		name  string
		in    ProviderConfig
		want  ProviderConfig
		paths []string // problem paths of the error
	}{
		{
			name: "custom provider gets the defaults only",
			in:   withCreds(ProviderConfig{TokenURL: "https://as.example/token", AuthStyle: AuthStyleHeader}),
			want: withCreds(ProviderConfig{TokenURL: "https://as.example/token", AuthStyle: AuthStyleHeader, ScopeSeparator: " ", PKCE: ptr(true)}),
		},
		{
			name: "preset fills every empty field",
			in:   withCreds(ProviderConfig{Preset: "google"}),
			want: withCreds(ProviderConfig{
				Preset:           "google",
				AuthorizationURL: "https://accounts.google.com/o/oauth2/v2/auth",
				TokenURL:         "https://oauth2.googleapis.com/token",
				RevocationURL:    "https://oauth2.googleapis.com/revoke",
				UserinfoURL:      "https://openidconnect.googleapis.com/v1/userinfo",
				Scopes:           []string{"openid", "email"},
				AuthStyle:        AuthStyleParams,
				AuthParams:       map[string]string{"access_type": "offline", "prompt": "consent"},
				ScopeSeparator:   " ",
				AccountField:     "email",
				PKCE:             ptr(true),
			}),
		},
		{
			name: "configured values win over the preset",
			in: withCreds(ProviderConfig{
				Preset:         "google",
				TokenURL:       "https://proxy.example/token",
				UserinfoURL:    "https://proxy.example/me",
				Scopes:         []string{"https://www.googleapis.com/auth/drive.readonly"},
				AuthStyle:      AuthStyleHeader,
				AuthParams:     map[string]string{"prompt": "select_account consent", "access_type": "", "hd": "example.com"},
				ScopeSeparator: ",",
				AccountField:   "sub",
				PKCE:           ptr(false),
			}),
			want: withCreds(ProviderConfig{
				Preset:           "google",
				AuthorizationURL: "https://accounts.google.com/o/oauth2/v2/auth",
				TokenURL:         "https://proxy.example/token",
				RevocationURL:    "https://oauth2.googleapis.com/revoke",
				UserinfoURL:      "https://proxy.example/me",
				Scopes:           []string{"https://www.googleapis.com/auth/drive.readonly"},
				AuthStyle:        AuthStyleHeader,
				AuthParams:       map[string]string{"prompt": "select_account consent", "hd": "example.com"},
				ScopeSeparator:   ",",
				AccountField:     "sub",
				PKCE:             ptr(false),
			}),
		},
		{
			name: "microsoft tenant fills the placeholders",
			in:   withCreds(ProviderConfig{Preset: "microsoft", Tenant: "organizations"}),
			want: withCreds(ProviderConfig{
				Preset:           "microsoft",
				Tenant:           "organizations",
				AuthorizationURL: "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
				TokenURL:         "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
				UserinfoURL:      "https://graph.microsoft.com/v1.0/me",
				Scopes:           []string{"offline_access", "User.Read"},
				AuthStyle:        AuthStyleParams,
				ScopeSeparator:   " ",
				AccountField:     "userPrincipalName",
				PKCE:             ptr(true),
			}),
		},
		{
			name: "github client id fills the revocation URL",
			in:   ProviderConfig{Preset: "github", ClientID: "Iv1.8a/61f"},
			want: ProviderConfig{
				Preset:           "github",
				ClientID:         "Iv1.8a/61f",
				AuthorizationURL: "https://github.com/login/oauth/authorize",
				TokenURL:         "https://github.com/login/oauth/access_token",
				RevocationURL:    "https://api.github.com/applications/Iv1.8a%2F61f/grant",
				UserinfoURL:      "https://api.github.com/user",
				AuthStyle:        AuthStyleParams,
				ScopeSeparator:   " ",
				AccountField:     "login",
				PKCE:             ptr(true),
				RateLimitHeaders: &RateLimitHeaders{Remaining: "X-RateLimit-Remaining", Reset: "X-RateLimit-Reset", ResetFormat: "epoch_seconds"},
			},
		},
		{
			name: "custom provider with a tenant placeholder",
			in:   ProviderConfig{TokenURL: "https://{domain}.example/oauth/token", Tenant: "acme"},
			want: ProviderConfig{TokenURL: "https://acme.example/oauth/token", Tenant: "acme", ScopeSeparator: " ", PKCE: ptr(true)},
		},
		{
			name:  "microsoft without a tenant",
			in:    ProviderConfig{Preset: "microsoft"},
			paths: []string{"tenant"},
		},
		{
			name:  "tenant that would change the URL",
			in:    ProviderConfig{Preset: "microsoft", Tenant: "evil.example/x?"},
			paths: []string{"tenant"},
		},
		{
			name:  "unknown preset",
			in:    ProviderConfig{Preset: "myspace", TokenURL: "https://as.example/token"},
			want:  ProviderConfig{Preset: "myspace", TokenURL: "https://as.example/token", ScopeSeparator: " ", PKCE: ptr(true)},
			paths: []string{"preset"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Resolve()
			if paths := problemPaths(t, err); !slices.Equal(paths, tt.paths) {
				t.Fatalf("problems at %q (%v); want %q", paths, err, tt.paths)
			}
			if tt.paths != nil && tt.want.TokenURL == "" {
				return // only the error matters
			}
			// TestScopeDescriptions covers the descriptions.
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(ProviderConfig{}, "ScopeDescriptions")); diff != "" {
				t.Errorf("Resolve (-want +got):\n%s", diff)
			}
		})
	}
}

// TestScopeDescriptions: every preset named in scopes.go exists and carries
// its descriptions, which describe real text, and a configuration's own
// descriptions win over the preset's.
func TestScopeDescriptions(t *testing.T) {
	for name, descs := range scopeDescriptions {
		p, ok := LookupPreset(name)
		if !ok {
			t.Errorf("scope descriptions for %q, which is no preset", name)
			continue
		}
		if !maps.Equal(p.ScopeDescriptions, descs) {
			t.Errorf("preset %s does not carry its descriptions", name)
		}
		for scope, d := range descs {
			if strings.TrimSpace(d) == "" || len(d) > maxScopeDescription || strings.HasSuffix(d, ".") || d[0] < 'A' || d[0] > 'Z' {
				t.Errorf("%s scope %q: description %q; want a capitalised phrase of at most %d bytes without a full stop", name, scope, d, maxScopeDescription)
			}
		}
	}
	c := ProviderConfig{Preset: "slack", ScopeDescriptions: map[string]string{"chat:write": "Post in channels as you", "admin": "Run the workspace"}}
	r, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	for scope, want := range map[string]string{
		"chat:write":    "Post in channels as you",
		"admin":         "Run the workspace",
		"channels:read": "See the public channels in your workspace",
	} {
		if got := r.ScopeDescriptions[scope]; got != want {
			t.Errorf("resolved %s: %q; want %q", scope, got, want)
		}
	}
	if slackScopes["chat:write"] != "Send messages as you" {
		t.Error("resolving changed the catalog's own descriptions")
	}
	bad := DefaultProviderConfig()
	bad.Preset, bad.ClientID, bad.ClientSecretFile = "slack", "client-123", "/run/secrets/x"
	bad.ScopeDescriptions = map[string]string{"two words": "x", "ok": "", "long": strings.Repeat("x", maxScopeDescription+1)}
	if paths := problemPaths(t, bad.Validate()); !slices.Equal(paths, []string{"scope_descriptions.long", "scope_descriptions.ok", "scope_descriptions.two words"}) {
		t.Errorf("problems at %q; want the three bad descriptions", paths)
	}
}

func TestValidatePresetFields(t *testing.T) {
	tests := []struct {
		name string
		mod  func(c *ProviderConfig)
		want []string
	}{
		{"preset alone", func(c *ProviderConfig) {}, nil},
		{"preset with own endpoints", func(c *ProviderConfig) { c.TokenURL = "http://127.0.0.1:9/token" }, nil},
		{"unknown preset", func(c *ProviderConfig) { c.Preset = "orkut" }, []string{"preset"}},
		{"microsoft without tenant", func(c *ProviderConfig) { c.Preset, c.Tenant = "microsoft", "" }, []string{"tenant"}},
		{"bad separator", func(c *ProviderConfig) { c.ScopeSeparator = ";" }, []string{"scope_separator"}},
		{"reserved auth param", func(c *ProviderConfig) { c.AuthParams = map[string]string{"redirect_uri": "https://evil.example"} }, []string{"auth_params.redirect_uri"}},
		{"bad auth param name", func(c *ProviderConfig) { c.AuthParams = map[string]string{"a b": "x"} }, []string{"auth_params.a b"}},
		{"control character in auth param", func(c *ProviderConfig) { c.AuthParams = map[string]string{"hd": "a\nb"} }, []string{"auth_params.hd"}},
		{"bad account field", func(c *ProviderConfig) { c.AccountField = "data..email" }, []string{"account_field"}},
		{"unknown placeholder", func(c *ProviderConfig) { c.TokenURL = "https://{region}.example/token" }, []string{"token_url"}},
		{"comma in a scope with comma separator", func(c *ProviderConfig) { c.Preset, c.Scopes = "linear", []string{"read,write"} }, []string{"scopes[0]"}},
		{"preset does not excuse the secret", func(c *ProviderConfig) { c.ClientSecretFile = "" }, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := presetConfig("google")
			tt.mod(&c)
			if got := problemPaths(t, c.Validate()); !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q (%v); want %q", got, c.Validate(), tt.want)
			}
		})
	}
}

func TestProviderConfigDecodePreset(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "preset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := DefaultProviderConfig()
	if err := config.Decode(data, &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := DefaultProviderConfig()
	want.Preset = "microsoft"
	want.Tenant = "contoso.onmicrosoft.com"
	want.ClientID = "11111111-2222-3333-4444-555555555555"
	want.ClientSecretVault = "secret/onbehalf/graph#client_secret"
	want.Scopes = []string{"offline_access", "User.Read", "Mail.Read"}
	want.AuthParams = map[string]string{"domain_hint": "contoso.com"}
	want.AccountField = "mail"
	want.PKCE = ptr(false)
	want.Timeout = 5 * time.Second
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestRoutes(t *testing.T) {
	got := presetConfig("slack").Routes("slack-work")
	want := []injector.RouteConfig{
		{Host: "slack.com", Paths: []string{"/api"}, Provider: "slack-work"},
		{Host: "files.slack.com", Provider: "slack-work"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Routes (-want +got):\n%s", diff)
	}
	tbl, err := injector.NewTable(got)
	if err != nil {
		t.Fatal(err)
	}
	if r := tbl.Match("slack.com", 443, "/api/chat.postMessage"); r == nil || r.Provider != "slack-work" {
		t.Errorf("slack.com/api/chat.postMessage matched %v; want the slack-work route", r)
	}
	if r := tbl.Match("slack.com", 443, "/apps"); r != nil {
		t.Errorf("slack.com/apps matched %v; want no route", r)
	}
	if got := validConfig().Routes("acme"); got != nil {
		t.Errorf("custom provider Routes = %v; want nil", got)
	}
	c := validConfig()
	c.Preset = "orkut"
	if got := c.Routes("acme"); got != nil {
		t.Errorf("unknown preset Routes = %v; want nil", got)
	}
}

// authURLProvider returns a Provider for preset (no network is used).
func authURLProvider(t *testing.T, preset string, mod func(c *ProviderConfig)) *Provider {
	t.Helper()
	c := presetConfig(preset)
	if mod != nil {
		mod(&c)
	}
	p, err := NewProvider("p", c, "secret-value", nil)
	if err != nil {
		t.Fatalf("NewProvider: %v", err)
	}
	return p
}

func TestAuthCodeURL(t *testing.T) {
	verifier := oauth2.GenerateVerifier()
	challenge := oauth2.S256ChallengeFromVerifier(verifier)
	const redirect = "https://connect.example/callback"
	tests := []struct {
		name     string
		preset   string
		mod      func(c *ProviderConfig)
		scopes   []string
		extra    map[string]string
		wantBase string
		want     url.Values
	}{
		{
			name:     "google: offline access, consent prompt, S256, space-separated scopes",
			preset:   "google",
			extra:    map[string]string{"login_hint": "alice@example.com", "redirect_uri": "https://evil.example", "state": "forged", "code_challenge": "x"},
			wantBase: "https://accounts.google.com/o/oauth2/v2/auth",
			want: url.Values{
				"response_type": {"code"}, "client_id": {"client-123"}, "redirect_uri": {redirect},
				"scope": {"openid email"}, "state": {"st-1"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
				"access_type": {"offline"}, "prompt": {"consent"}, "login_hint": {"alice@example.com"},
			},
		},
		{
			name:     "extra removes and replaces configured parameters",
			preset:   "google",
			extra:    map[string]string{"prompt": "", "access_type": "online"},
			scopes:   []string{"https://www.googleapis.com/auth/calendar"},
			wantBase: "https://accounts.google.com/o/oauth2/v2/auth",
			want: url.Values{
				"response_type": {"code"}, "client_id": {"client-123"}, "redirect_uri": {redirect},
				"scope": {"https://www.googleapis.com/auth/calendar"}, "state": {"st-1"}, "code_challenge": {challenge},
				"code_challenge_method": {"S256"}, "access_type": {"online"},
			},
		},
		{
			name:     "slack: comma-separated user scopes",
			preset:   "slack",
			scopes:   []string{"chat:write", "channels:read"},
			extra:    map[string]string{"scope": "admin", "team": "T123"},
			wantBase: "https://slack.com/oauth/v2/authorize",
			want: url.Values{
				"response_type": {"code"}, "client_id": {"client-123"}, "redirect_uri": {redirect},
				"user_scope": {"chat:write,channels:read"}, "state": {"st-1"}, "code_challenge": {challenge},
				"code_challenge_method": {"S256"}, "team": {"T123"},
			},
		},
		{
			name:     "atlassian: no PKCE, audience and prompt",
			preset:   "atlassian",
			wantBase: "https://auth.atlassian.com/authorize",
			want: url.Values{
				"response_type": {"code"}, "client_id": {"client-123"}, "redirect_uri": {redirect},
				"scope": {"offline_access read:me"}, "state": {"st-1"}, "audience": {"api.atlassian.com"}, "prompt": {"consent"},
			},
		},
		{
			name:   "custom provider keeps its URL's query and honours pkce: false",
			preset: "",
			mod: func(c *ProviderConfig) {
				c.TokenURL = "https://as.example/token"
				c.AuthorizationURL = "https://as.example/authorize?tenant=t1"
				c.AuthStyle = AuthStyleHeader
				c.Scopes = []string{"read", "write"}
				c.PKCE = ptr(false)
			},
			wantBase: "https://as.example/authorize",
			want: url.Values{
				"tenant": {"t1"}, "response_type": {"code"}, "client_id": {"client-123"}, "redirect_uri": {redirect},
				"scope": {"read write"}, "state": {"st-1"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := authURLProvider(t, tt.preset, tt.mod)
			raw := p.AuthCodeURL("st-1", challenge, redirect, tt.scopes, tt.extra)
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatalf("AuthCodeURL = %q: %v", raw, err)
			}
			if got := u.Scheme + "://" + u.Host + u.Path; got != tt.wantBase {
				t.Errorf("endpoint %q; want %q", got, tt.wantBase)
			}
			if diff := cmp.Diff(tt.want, u.Query()); diff != "" {
				t.Errorf("query (-want +got):\n%s", diff)
			}
		})
	}
	p := authURLProvider(t, "", func(c *ProviderConfig) {
		c.TokenURL, c.AuthStyle = "https://as.example/token", AuthStyleHeader
	})
	if got := p.AuthCodeURL("s", challenge, redirect, nil, nil); got != "" {
		t.Errorf("AuthCodeURL without an authorization endpoint = %q; want \"\"", got)
	}
}
