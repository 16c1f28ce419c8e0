package oauth

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite docs/providers.md from the catalog")

// providersDoc is docs/providers.md, relative to this package.
var providersDoc = filepath.Join("..", "..", "docs", "providers.md")

// TestProvidersDoc keeps docs/providers.md equal to what the catalog says:
// the file is generated (go test ./injector/oauth -run TestProvidersDoc
// -update) and this test fails when the catalog changes without it.
func TestProvidersDoc(t *testing.T) {
	got := renderProvidersDoc()
	if *update {
		if err := os.WriteFile(providersDoc, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(providersDoc)
	if err != nil {
		t.Fatalf("read %s: %v (generate it with -update)", providersDoc, err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s is out of date; run go test ./injector/oauth -run TestProvidersDoc -update (-file +catalog):\n%s", providersDoc, diff)
	}
}

// renderProvidersDoc renders the catalog as Markdown.
func renderProvidersDoc() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	presets := Presets()

	w("# Provider catalog\n\n")
	w("<!-- Generated from injector/oauth/catalog.go by `go test ./injector/oauth -run TestProvidersDoc -update`. Do not edit. -->\n\n")
	w("onbehalf ships presets for widely used OAuth providers, written from each provider's public documentation ")
	w("(linked below; what that documentation leaves unclear is said in the notes). A provider section that names a ")
	w("preset only needs the client credentials; every field it sets wins over the preset's.\n\n")
	w("```yaml\nproviders:\n")
	w("  google:\n    preset: google\n    client_id: \"1234.apps.googleusercontent.com\"\n    client_secret_file: /run/secrets/google\n")
	w("    scopes: [openid, email, \"https://www.googleapis.com/auth/calendar.readonly\"]\n")
	w("  graph:\n    preset: microsoft\n    tenant: contoso.onmicrosoft.com   # fills {tenant} in the endpoints\n")
	w("    client_id: 11111111-2222-3333-4444-555555555555\n    client_secret_vault: secret/onbehalf/graph#client_secret\n")
	w("  acme:                              # a custom provider: the same fields, no preset\n")
	w("    authorization_url: https://auth.acme.example/authorize\n    token_url: https://auth.acme.example/token\n")
	w("    revocation_url: https://auth.acme.example/revoke\n    userinfo_url: https://auth.acme.example/userinfo\n")
	w("    account_field: email\n    auth_style: header\n    scopes: [read, write]\n")
	w("    client_id: onbehalf\n    client_secret_file: /run/secrets/acme\n```\n\n")
	w("Fields of a provider section that a preset fills:\n\n")
	w("| Key | Meaning |\n|---|---|\n")
	for _, row := range [][2]string{
		{"`preset`", "The preset's name (first column below). Empty: a custom provider."},
		{"`authorization_url`, `token_url`, `revocation_url`, `userinfo_url`", "Endpoints. `{tenant}`, `{domain}` and `{instance}` are filled from `tenant`, `{client_id}` from `client_id`."},
		{"`tenant`", "Fills the tenant placeholders (Microsoft's tenant). Letters, digits, `.`, `-`, `_`."},
		{"`scopes`", "Scopes requested at connect time; the preset's default scopes when empty."},
		{"`scope_separator`", "`\" \"` (default) or `\",\"`: how scopes are joined in the authorization request."},
		{"`auth_style`", "`header` (client_secret_basic) or `params` (client_secret_post)."},
		{"`auth_params`", "Extra authorization-request parameters, merged over the preset's; an empty value removes one."},
		{"`account_field`", "JSON field of the identity answer naming the account; dotted paths reach into objects. `sub` when unset."},
		{"`pkce`", "Use PKCE (S256). Unset: the preset's choice, or `true` for a custom provider."},
		{"`scope_descriptions`", "What scopes let an agent do, in plain words, by scope (`chat:write: Send messages as you`), shown on the connect pages; merged over the preset's. A scope without one is shown as it is."},
	} {
		w("| %s | %s |\n", row[0], row[1])
	}
	w("\n`ProviderConfig.Routes` returns a preset's default routes (the hosts, and paths, its token is injected for), for use ")
	w("when the configuration lists no routes for that provider. Custom providers get the standard behaviour: RFC 6749 token ")
	w("requests, RFC 7009 revocation with client authentication, and a GET of the identity endpoint with the access token.\n\n")
	w("A remote MCP server needs no preset and no endpoints: `mcp_server: https://mcp.example.com/mcp` (and optionally `scopes`) ")
	w("is enough. The connect server discovers its authorization server and registers a client there the first time someone ")
	w("connects it, tokens are requested for that URL (RFC 8707 `resource`), and its route is the URL's host, port and path ")
	w("with `mcp: true` (README, \"Connect by URL\").\n\n")

	w("## Presets\n\n")
	w("| Preset | Provider | Client auth | Scope separator | PKCE | Rotates refresh tokens | Default routes | Notes |\n")
	w("|---|---|---|---|---|---|---|---|\n")
	for _, p := range presets {
		w("| `%s` | %s | %s | %s | %s | %s | %s | [%s](#%s) |\n", p.Name, p.DisplayName, authStyleName(p.AuthStyle),
			separatorName(p.ScopeSeparator), yesNo(p.PKCE), yesNo(p.RotatesRefreshTokens), routesText(p), p.Name, p.Name)
	}
	w("\n## Endpoints\n\n")
	w("| Preset | Authorization | Token | Revocation | Identity (account field) |\n|---|---|---|---|---|\n")
	for _, p := range presets {
		w("| `%s` | %s | %s | %s | %s |\n", p.Name, code(p.AuthorizationURL), code(p.TokenURL), orNone(p.RevocationURL),
			identityText(p))
	}
	for _, p := range presets {
		e, _ := lookupEntry(p.Name)
		w("\n## %s\n\n", p.Name)
		w("**%s** — documentation: <%s>\n\n", p.DisplayName, p.DocsURL)
		w("- Default scopes: %s\n", listOrNone(p.DefaultScopes))
		if len(p.AuthParams) > 0 {
			var kv []string
			for _, k := range slices.Sorted(maps.Keys(p.AuthParams)) {
				kv = append(kv, fmt.Sprintf("`%s=%s`", k, p.AuthParams[k]))
			}
			w("- Authorization parameters: %s\n", strings.Join(kv, ", "))
		}
		w("- Default routes: %s\n", routesText(p))
		if h := p.RateLimitHeaders; h != nil {
			w("- Rate-limit headers: `%s` at 0 means the user's quota is spent until `%s` (%s); the sidecar then holds the user's requests (`rate_limits.upstream`)\n", h.Remaining, h.Reset, h.ResetFormat)
		}
		if len(p.ScopeDescriptions) > 0 {
			w("- Scopes described in plain words on the connect pages: %s\n", listOrNone(slices.Sorted(maps.Keys(p.ScopeDescriptions))))
		}
		if q := e.q.describe(); len(q) > 0 {
			w("- Handled by onbehalf:\n")
			for _, s := range q {
				w("  - %s\n", s)
			}
		}
		w("\n%s\n", p.Notes)
	}
	return b.String()
}

func authStyleName(a AuthStyle) string {
	if a == AuthStyleHeader {
		return "`header` (Basic)"
	}
	return "`params` (form)"
}

func separatorName(s string) string {
	if s == "," {
		return "comma"
	}
	return "space"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func code(s string) string { return "`" + s + "`" }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return code(s)
}

func listOrNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return quoteList(list)
}

func identityText(p Preset) string {
	if p.UserinfoURL == "" {
		return "none"
	}
	return fmt.Sprintf("%s (`%s`)", code(p.UserinfoURL), p.AccountField)
}

func routesText(p Preset) string {
	var rs []string
	for _, r := range p.Routes {
		if len(r.Paths) == 0 {
			rs = append(rs, code(r.Host))
			continue
		}
		for _, path := range r.Paths {
			rs = append(rs, code(r.Host+path))
		}
	}
	return strings.Join(rs, ", ")
}
