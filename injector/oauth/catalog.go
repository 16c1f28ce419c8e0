package oauth

import (
	"maps"
	"slices"
	"strings"

	"github.com/onbehalf-dev/onbehalf/injector"
)

// Preset is a built-in description of a widely used OAuth provider, written
// from the provider's public documentation (DocsURL). A provider configured
// with `preset: NAME` takes every field it leaves empty from the preset (see
// ProviderConfig.Resolve); docs/providers.md lists the presets.
//
// Endpoint URLs may contain placeholders: {tenant}, {domain} and {instance}
// are filled from ProviderConfig.Tenant (Microsoft's tenant, for example)
// and {client_id} from ProviderConfig.ClientID.
type Preset struct {
	// Name is the key used in configuration (`preset: google`).
	Name string
	// DisplayName is the provider's name for people.
	DisplayName string
	// AuthorizationURL, TokenURL, RevocationURL and UserinfoURL are the
	// provider's endpoints. RevocationURL is empty when the provider
	// documents no way for a client to revoke a token; UserinfoURL is where
	// the account of a new grant is looked up.
	AuthorizationURL, TokenURL, RevocationURL, UserinfoURL string
	// DefaultScopes are requested when the configuration names none.
	DefaultScopes []string
	// ScopeDescriptions say in plain words what common scopes let an agent
	// do ("Send messages as you"), for the connect server's pages; a scope
	// not listed is shown as it is. They live in scopes.go.
	ScopeDescriptions map[string]string
	// ScopeSeparator joins scopes in the authorization request: " "
	// (RFC 6749) or ",".
	ScopeSeparator string
	// AuthStyle is how the token endpoint authenticates the client.
	AuthStyle AuthStyle
	// AuthParams are extra authorization-request parameters (Google's
	// access_type=offline and prompt=consent, without which no refresh
	// token is issued).
	AuthParams map[string]string
	// PKCE reports that the provider accepts PKCE with S256.
	PKCE bool
	// AccountField is the JSON field of the identity response that names
	// the account; a dotted path ("data.email") reaches into objects.
	AccountField string
	// RotatesRefreshTokens reports that a refresh returns a new refresh
	// token and retires the old one. onbehalf persists whatever a refresh
	// returns either way; this is for people reading the catalog.
	RotatesRefreshTokens bool
	// Routes are the default routes: hosts (and paths) the token is
	// injected for. Provider is left empty; ProviderConfig.Routes fills it.
	Routes []injector.RouteConfig
	// RateLimitHeaders are the response headers through which the API
	// says a user's quota is spent, when it has its own beside
	// Retry-After.
	RateLimitHeaders *RateLimitHeaders
	// Notes are quirks a user must know, including what the documentation
	// leaves unclear.
	Notes string
	// DocsURL is the documentation the preset was written from.
	DocsURL string
}

// clone returns a deep copy of p.
func (p Preset) clone() Preset {
	p.DefaultScopes = slices.Clone(p.DefaultScopes)
	p.AuthParams = maps.Clone(p.AuthParams)
	p.ScopeDescriptions = maps.Clone(p.ScopeDescriptions)
	p.Routes = cloneRoutes(p.Routes)
	if p.RateLimitHeaders != nil {
		h := *p.RateLimitHeaders
		p.RateLimitHeaders = &h
	}
	return p
}

func cloneRoutes(rs []injector.RouteConfig) []injector.RouteConfig {
	if rs == nil {
		return nil
	}
	out := make([]injector.RouteConfig, len(rs))
	for i, r := range rs {
		r.Paths = slices.Clone(r.Paths)
		r.StripHeaders = slices.Clone(r.StripHeaders)
		out[i] = r
	}
	return out
}

// entry is one preset with the quirks its provider needs.
type entry struct {
	Preset
	q quirks
}

// Presets returns copies of all built-in presets, sorted by name.
func Presets() []Preset {
	out := make([]Preset, len(catalog))
	for i, e := range catalog {
		out[i] = e.Preset.clone()
	}
	return out
}

// LookupPreset returns a copy of the preset called name.
func LookupPreset(name string) (Preset, bool) {
	e, ok := lookupEntry(name)
	if !ok {
		return Preset{}, false
	}
	return e.Preset.clone(), true
}

// lookupEntry returns the catalog entry called name (not a copy: callers
// must not modify it).
func lookupEntry(name string) (*entry, bool) {
	i, ok := slices.BinarySearchFunc(catalog, name, func(e entry, n string) int { return strings.Compare(e.Name, n) })
	if !ok {
		return nil, false
	}
	return &catalog[i], true
}

// presetNames returns the names of all presets, sorted.
func presetNames() []string {
	names := make([]string, len(catalog))
	for i, e := range catalog {
		names[i] = e.Name
	}
	return names
}

// route is shorthand for a default route.
func route(host string, paths ...string) injector.RouteConfig {
	return injector.RouteConfig{Host: host, Paths: paths}
}

// catalog holds the presets, sorted by name (lookupEntry searches it
// binarily; TestCatalogSorted keeps it so). Each entry cites the
// documentation it was written from; what that documentation leaves unclear
// is said in Notes, never guessed silently.
var catalog = []entry{
	// https://developers.asana.com/docs/oauth
	{Preset: Preset{
		Name:             "asana",
		DisplayName:      "Asana",
		AuthorizationURL: "https://app.asana.com/-/oauth_authorize",
		TokenURL:         "https://app.asana.com/-/oauth_token",
		RevocationURL:    "https://app.asana.com/-/oauth_revoke",
		UserinfoURL:      "https://app.asana.com/api/1.0/users/me",
		ScopeSeparator:   " ",
		AuthStyle:        AuthStyleParams,
		PKCE:             true,
		AccountField:     "data.email",
		Routes:           []injector.RouteConfig{route("app.asana.com", "/api")},
		Notes: "No default scopes: apps registered with full permissions request none (or `default`); apps using " +
			"Asana's granular scopes must request the ones configured for the app, and `users:read` is then needed " +
			"for the account lookup. Refresh tokens do not expire and are not rotated. The revocation endpoint takes " +
			"client_id, client_secret and token; onbehalf also sends token_type_hint, which the documentation does not list.",
		DocsURL: "https://developers.asana.com/docs/oauth",
	}},
	// https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/
	{Preset: Preset{
		Name:                 "atlassian",
		DisplayName:          "Atlassian (Jira, Confluence)",
		AuthorizationURL:     "https://auth.atlassian.com/authorize",
		TokenURL:             "https://auth.atlassian.com/oauth/token",
		UserinfoURL:          "https://api.atlassian.com/me",
		DefaultScopes:        []string{"offline_access", "read:me"},
		ScopeSeparator:       " ",
		AuthStyle:            AuthStyleParams,
		AuthParams:           map[string]string{"audience": "api.atlassian.com", "prompt": "consent"},
		AccountField:         "email",
		Routes:               []injector.RouteConfig{route("api.atlassian.com")},
		RotatesRefreshTokens: true,
		Notes: "OAuth 2.0 (3LO) tokens only work through the api.atlassian.com gateway " +
			"(`/ex/jira/{cloudid}/…`, `/ex/confluence/{cloudid}/…`), never on `*.atlassian.net`; the agent finds the " +
			"cloud id with `GET /oauth/token/accessible-resources`. `offline_access` is needed for a refresh token, and " +
			"refresh tokens rotate. No revocation endpoint is documented: users remove the app under their Atlassian " +
			"account's connected apps. PKCE is not mentioned in the 3LO documentation, so it is off.",
		DocsURL: "https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/",
	}, q: quirks{jsonBody: true}},
	// https://developer.box.com/guides/authentication/oauth2/
	{Preset: Preset{
		Name:                 "box",
		DisplayName:          "Box",
		AuthorizationURL:     "https://account.box.com/api/oauth2/authorize",
		TokenURL:             "https://api.box.com/oauth2/token",
		RevocationURL:        "https://api.box.com/oauth2/revoke",
		UserinfoURL:          "https://api.box.com/2.0/users/me",
		ScopeSeparator:       " ",
		AuthStyle:            AuthStyleParams,
		AccountField:         "login",
		RotatesRefreshTokens: true,
		Routes:               []injector.RouteConfig{route("api.box.com"), route("upload.box.com")},
		Notes: "Scopes are configured on the Box app; the scope parameter is optional and can only narrow them, so " +
			"there are no default scopes. Each refresh token is single-use (a refresh returns a new one) and lasts " +
			"60 days. PKCE is not documented for Box's OAuth 2.0, so it is off.",
		DocsURL: "https://developer.box.com/guides/authentication/oauth2/",
	}},
	// https://developers.dropbox.com/oauth-guide
	{Preset: Preset{
		Name:             "dropbox",
		DisplayName:      "Dropbox",
		AuthorizationURL: "https://www.dropbox.com/oauth2/authorize",
		TokenURL:         "https://api.dropboxapi.com/oauth2/token",
		RevocationURL:    "https://api.dropboxapi.com/2/auth/token/revoke",
		UserinfoURL:      "https://api.dropboxapi.com/2/users/get_current_account",
		DefaultScopes:    []string{"account_info.read"},
		ScopeSeparator:   " ",
		AuthStyle:        AuthStyleHeader,
		AuthParams:       map[string]string{"token_access_type": "offline"},
		PKCE:             true,
		AccountField:     "email",
		Routes:           []injector.RouteConfig{route("api.dropboxapi.com"), route("content.dropboxapi.com")},
		Notes: "A refresh token is issued only with `token_access_type=offline`; it is long-lived and not rotated " +
			"(access tokens last about four hours). Dropbox's API is RPC-style: calls are POSTs, including the " +
			"account lookup. Revocation (`/2/auth/token/revoke`) takes the access token as bearer and also disables " +
			"the refresh token it came from.",
		DocsURL: "https://developers.dropbox.com/oauth-guide",
	}, q: quirks{revoke: revokeBearer, revokeAccess: true, account: accountPOST}},
	// https://developers.figma.com/docs/rest-api/authentication/
	{Preset: Preset{
		Name:             "figma",
		DisplayName:      "Figma",
		AuthorizationURL: "https://www.figma.com/oauth",
		TokenURL:         "https://api.figma.com/v1/oauth/token",
		UserinfoURL:      "https://api.figma.com/v1/me",
		DefaultScopes:    []string{"current_user:read"},
		ScopeSeparator:   ",",
		AuthStyle:        AuthStyleHeader,
		PKCE:             true,
		AccountField:     "email",
		Routes:           []injector.RouteConfig{route("api.figma.com")},
		Notes: "Refreshes go to a separate endpoint (`/v1/oauth/refresh`) and return an access token only: the " +
			"refresh token is not rotated. No revocation endpoint is documented; users remove the app in their " +
			"Figma settings. Unclear in the documentation available: the scope separator (client code in the wild " +
			"uses both commas and spaces; onbehalf sends commas) and PKCE support (listed by third-party guides, " +
			"onbehalf sends S256; set `pkce: false` if Figma refuses it). Older integrations used " +
			"`https://www.figma.com/api/oauth/token`.",
		DocsURL: "https://developers.figma.com/docs/rest-api/authentication/",
	}, q: quirks{refreshPath: "/v1/oauth/refresh"}},
	// https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
	// https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens
	{Preset: Preset{
		Name:                 "github",
		DisplayName:          "GitHub",
		AuthorizationURL:     "https://github.com/login/oauth/authorize",
		TokenURL:             "https://github.com/login/oauth/access_token",
		RevocationURL:        "https://api.github.com/applications/{client_id}/grant",
		UserinfoURL:          "https://api.github.com/user",
		ScopeSeparator:       " ",
		AuthStyle:            AuthStyleParams,
		PKCE:                 true,
		AccountField:         "login",
		RotatesRefreshTokens: true,
		Routes:               []injector.RouteConfig{route("api.github.com"), route("uploads.github.com")},
		// https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
		RateLimitHeaders: &RateLimitHeaders{Remaining: "X-RateLimit-Remaining", Reset: "X-RateLimit-Reset", ResetFormat: "epoch_seconds"},
		Notes: "OAuth apps get tokens that do not expire and no refresh token, and need scopes (for example " +
			"`repo read:user`); GitHub Apps ignore scopes (their permissions are set on the app) and, with expiring " +
			"user tokens, issue 8-hour access tokens and 6-month refresh tokens that rotate on every use. The token " +
			"endpoint answers errors with HTTP 200 and its own codes. Revocation deletes the whole app authorization " +
			"of the user. PKCE (S256 only) has been supported since July 2025.",
		DocsURL: "https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps",
	}, q: quirks{
		errorAliases: map[string]string{
			"bad_verification_code":        "invalid_grant",
			"bad_refresh_token":            "invalid_grant",
			"incorrect_client_credentials": "invalid_client",
		},
		revoke:       revokeGitHubGrant,
		revokeAccess: true,
	}},
	// https://developers.google.com/identity/protocols/oauth2/web-server
	// https://developers.google.com/identity/openid-connect/reference
	{Preset: Preset{
		Name:             "google",
		DisplayName:      "Google",
		AuthorizationURL: "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL:         "https://oauth2.googleapis.com/token",
		RevocationURL:    "https://oauth2.googleapis.com/revoke",
		UserinfoURL:      "https://openidconnect.googleapis.com/v1/userinfo",
		DefaultScopes:    []string{"openid", "email"},
		ScopeSeparator:   " ",
		AuthStyle:        AuthStyleParams,
		AuthParams:       map[string]string{"access_type": "offline", "prompt": "consent"},
		PKCE:             true,
		AccountField:     "email",
		Routes:           []injector.RouteConfig{route("*.googleapis.com")},
		Notes: "A refresh token is issued only with `access_type=offline`, and on a repeated consent only with " +
			"`prompt=consent` (both are set). Refresh tokens are not rotated; they stop working when the user " +
			"revokes access, after six months unused, when the user changes the password (for Gmail scopes), and " +
			"after 7 days while the app's consent screen is in testing. Add the API scopes you need " +
			"(`https://www.googleapis.com/auth/…`). The default route covers every `*.googleapis.com` API host, " +
			"the OAuth hosts included.",
		DocsURL: "https://developers.google.com/identity/protocols/oauth2/web-server",
	}, q: quirks{revoke: revokeTokenOnly}},
	// https://developers.hubspot.com/docs/api-reference/auth-oauth-v3/guide
	{Preset: Preset{
		Name:             "hubspot",
		DisplayName:      "HubSpot",
		AuthorizationURL: "https://app.hubspot.com/oauth/authorize",
		TokenURL:         "https://api.hubapi.com/oauth/v3/token",
		RevocationURL:    "https://api.hubapi.com/oauth/v3/token/revoke",
		UserinfoURL:      "https://api.hubapi.com/oauth/v3/token/introspect",
		DefaultScopes:    []string{"oauth"},
		ScopeSeparator:   " ",
		AuthStyle:        AuthStyleParams,
		AccountField:     "user",
		Routes:           []injector.RouteConfig{route("api.hubapi.com"), route("api.hubspot.com")},
		Notes: "Uses the v3 OAuth endpoints, which take every parameter in the request body (the v1 endpoints, " +
			"which put tokens in URLs, are deprecated from 16 February 2027; the dated `/oauth/2026-03/…` paths are " +
			"equivalent). Access tokens last 30 minutes; refresh tokens are not rotated. The account is the `user` " +
			"(e-mail) of token introspection. The shape of v3 error answers is not fully documented: a dead refresh " +
			"token is recognised from `error`, `status` or `category` codes (`BAD_REFRESH_TOKEN`, `BAD_AUTH_CODE`); " +
			"other failures count as misconfiguration, never as a dead grant. PKCE is not documented, so it is off.",
		DocsURL: "https://developers.hubspot.com/docs/api-reference/auth-oauth-v3/guide",
	}, q: quirks{
		errorFields: []string{"status", "category"},
		errorAliases: map[string]string{
			"BAD_REFRESH_TOKEN": "invalid_grant",
			"BAD_AUTH_CODE":     "invalid_grant",
			"BAD_CLIENT_ID":     "invalid_client",
		},
		account: accountIntrospect,
	}},
	// https://linear.app/developers/oauth-2-0-authentication
	{Preset: Preset{
		Name:                 "linear",
		DisplayName:          "Linear",
		AuthorizationURL:     "https://linear.app/oauth/authorize",
		TokenURL:             "https://api.linear.app/oauth/token",
		RevocationURL:        "https://api.linear.app/oauth/revoke",
		UserinfoURL:          "https://api.linear.app/graphql",
		DefaultScopes:        []string{"read"},
		ScopeSeparator:       ",",
		AuthStyle:            AuthStyleParams,
		AuthParams:           map[string]string{"actor": "user"},
		PKCE:                 true,
		AccountField:         "data.viewer.email",
		RotatesRefreshTokens: true,
		Routes:               []injector.RouteConfig{route("api.linear.app", "/graphql")},
		Notes: "Scopes are comma-separated (`read`, `write`, `issues:create`, `comments:create`, `admin`). Every " +
			"OAuth application uses refresh tokens since 1 April 2026 (24-hour access tokens); that refresh tokens " +
			"rotate is stated by third-party guides rather than the page cited, and onbehalf persists whatever a " +
			"refresh returns either way. The API is GraphQL only, so the account is looked up with a `viewer` query " +
			"and the default route covers `/graphql` alone. The revocation endpoint is named in Linear's guide but " +
			"its request form could not be confirmed; onbehalf sends an RFC 7009 form with client credentials.",
		DocsURL: "https://linear.app/developers/oauth-2-0-authentication",
	}, q: quirks{account: accountGraphQL, accountQuery: "{ viewer { email } }"}},
	// https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow
	{Preset: Preset{
		Name:                 "microsoft",
		DisplayName:          "Microsoft Graph (Entra ID)",
		AuthorizationURL:     "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
		TokenURL:             "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
		UserinfoURL:          "https://graph.microsoft.com/v1.0/me",
		DefaultScopes:        []string{"offline_access", "User.Read"},
		ScopeSeparator:       " ",
		AuthStyle:            AuthStyleParams,
		PKCE:                 true,
		AccountField:         "userPrincipalName",
		RotatesRefreshTokens: true,
		Routes:               []injector.RouteConfig{route("graph.microsoft.com")},
		Notes: "Set `tenant`: a tenant id or domain (`contoso.onmicrosoft.com`) for a single-tenant app, or " +
			"`organizations`, `consumers` or `common` for multi-tenant apps. `offline_access` is needed for a refresh " +
			"token. Each refresh returns a new refresh token, which onbehalf stores; Microsoft keeps the old one valid " +
			"until it expires. One token serves one resource, here Microsoft Graph. There is no endpoint to revoke " +
			"one grant (Graph's revokeSignInSessions signs the user out everywhere): users remove the app at " +
			"myapps.microsoft.com, admins in Entra ID.",
		DocsURL: "https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow",
	}},
	// https://developers.notion.com/docs/authorization
	// https://developers.notion.com/reference/revoke-token
	{Preset: Preset{
		Name:                 "notion",
		DisplayName:          "Notion",
		AuthorizationURL:     "https://api.notion.com/v1/oauth/authorize",
		TokenURL:             "https://api.notion.com/v1/oauth/token",
		RevocationURL:        "https://api.notion.com/v1/oauth/revoke",
		UserinfoURL:          "https://api.notion.com/v1/users/me",
		ScopeSeparator:       " ",
		AuthStyle:            AuthStyleHeader,
		AuthParams:           map[string]string{"owner": "user"},
		AccountField:         "bot.owner.user.id",
		RotatesRefreshTokens: true,
		Routes:               []injector.RouteConfig{route("api.notion.com")},
		Notes: "Notion has no scopes: capabilities are set on the integration. The token endpoint takes JSON with " +
			"HTTP Basic client authentication; a refresh returns a new access and refresh token. Every API call " +
			"needs a `Notion-Version` header, which the agent must send itself (onbehalf sends one on revocation " +
			"and identity calls). The account is the id of the user who authorized the integration; " +
			"`bot.owner.user.person.email` gives the e-mail when the integration may read user e-mails. PKCE is not " +
			"documented, so it is off.",
		DocsURL: "https://developers.notion.com/docs/authorization",
	}, q: quirks{jsonBody: true, revokeAccess: true, headers: map[string]string{"Notion-Version": "2025-09-03"}}},
	// https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm
	{Preset: Preset{
		Name:             "salesforce",
		DisplayName:      "Salesforce",
		AuthorizationURL: "https://login.salesforce.com/services/oauth2/authorize",
		TokenURL:         "https://login.salesforce.com/services/oauth2/token",
		RevocationURL:    "https://login.salesforce.com/services/oauth2/revoke",
		UserinfoURL:      "https://login.salesforce.com/services/oauth2/userinfo",
		DefaultScopes:    []string{"api", "refresh_token"},
		ScopeSeparator:   " ",
		AuthStyle:        AuthStyleParams,
		PKCE:             true,
		AccountField:     "preferred_username",
		Routes:           []injector.RouteConfig{route("*.my.salesforce.com")},
		Notes: "The endpoints are for production orgs; for sandboxes use `test.salesforce.com`, or your My Domain " +
			"(`https://MyDomain.my.salesforce.com/services/oauth2/…`) for all four. API calls go to the org's " +
			"`instance_url` (returned with the token), covered by the `*.my.salesforce.com` route. Refresh-token " +
			"rotation is an option of the connected app, off by default. Revoking a refresh token revokes its " +
			"access tokens too.",
		DocsURL: "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm",
	}, q: quirks{revoke: revokeTokenOnly}},
	// https://docs.slack.dev/authentication/installing-with-oauth
	// https://docs.slack.dev/authentication/using-token-rotation
	// https://docs.slack.dev/reference/methods/oauth.v2.access
	{Preset: Preset{
		Name:                 "slack",
		DisplayName:          "Slack",
		AuthorizationURL:     "https://slack.com/oauth/v2/authorize",
		TokenURL:             "https://slack.com/api/oauth.v2.access",
		RevocationURL:        "https://slack.com/api/auth.revoke",
		UserinfoURL:          "https://slack.com/api/auth.test",
		ScopeSeparator:       ",",
		AuthStyle:            AuthStyleHeader,
		PKCE:                 true,
		AccountField:         "user_id",
		RotatesRefreshTokens: true,
		Routes:               []injector.RouteConfig{route("slack.com", "/api"), route("files.slack.com")},
		Notes: "onbehalf acts as the person, so scopes are user-token scopes, sent as `user_scope` (comma-separated); " +
			"the user token arrives in the response's `authed_user` object. Refresh tokens exist only when token " +
			"rotation is turned on for the app: access tokens then expire after 12 hours and each refresh token is " +
			"revoked once used. Slack's Web API answers errors with HTTP 200 and `\"ok\": false`; a refresh refused with " +
			"`invalid_auth`, `token_revoked`, `token_expired` or `account_inactive` ends the grant like `invalid_refresh_token` " +
			"(an IP allow-list that refuses the sidecar also answers `invalid_auth`). The documentation " +
			"shows `authed_user` with the access token; where the refresh token of a rotated user token appears is " +
			"not shown, so onbehalf reads token fields from `authed_user` when it holds an access token and from the " +
			"top level otherwise. The account is the Slack user id (workspace-scoped).",
		DocsURL: "https://docs.slack.dev/authentication/installing-with-oauth",
	}, q: quirks{
		scopeParam:  "user_scope",
		nestedToken: "authed_user",
		okField:     true,
		// Slack answers errors with HTTP 200 and "ok": false; each code is
		// read as the RFC 6749 code that says what it means for the grant.
		// The token a refresh presents is the refresh token, so Slack's
		// "the token is bad" codes mean the grant is dead. Codes not listed
		// count as a misconfiguration, which never touches a grant.
		errorAliases: map[string]string{
			// The grant is dead: the user must connect again.
			"invalid_code":          "invalid_grant",
			"code_already_used":     "invalid_grant",
			"invalid_refresh_token": "invalid_grant",
			"invalid_auth":          "invalid_grant",
			"token_revoked":         "invalid_grant",
			"token_expired":         "invalid_grant",
			"account_inactive":      "invalid_grant",
			// Slack is failing or busy: try again later.
			"ratelimited":         "temporarily_unavailable",
			"request_timeout":     "temporarily_unavailable",
			"service_unavailable": "temporarily_unavailable",
			"internal_error":      "server_error",
			"fatal_error":         "server_error",
			// The app's configuration is wrong: an operator must act.
			"invalid_client_id":  "invalid_client",
			"bad_client_secret":  "invalid_client",
			"invalid_grant_type": "unsupported_grant_type",
			"bad_redirect_uri":   "invalid_request",
		},
		revoke:       revokeBearer,
		revokeAccess: true,
		revokeGone:   []string{"invalid_auth", "token_revoked", "token_expired", "account_inactive"},
		account:      accountPOST,
	}},
	// https://developers.zoom.us/docs/integrations/oauth/
	{Preset: Preset{
		Name:                 "zoom",
		DisplayName:          "Zoom",
		AuthorizationURL:     "https://zoom.us/oauth/authorize",
		TokenURL:             "https://zoom.us/oauth/token",
		RevocationURL:        "https://zoom.us/oauth/revoke",
		UserinfoURL:          "https://api.zoom.us/v2/users/me",
		ScopeSeparator:       " ",
		AuthStyle:            AuthStyleHeader,
		PKCE:                 true,
		AccountField:         "email",
		RotatesRefreshTokens: true,
		Routes:               []injector.RouteConfig{route("api.zoom.us")},
		Notes: "Scopes are chosen on the Zoom app (granular scopes such as `user:read:user`), so there are no " +
			"default scopes. Access tokens last one hour; every refresh returns a new refresh token and invalidates " +
			"the old one. Zoom's documentation passes the token to revoke as a query parameter of the POST; onbehalf " +
			"sends it in the form body (RFC 7009), which Zoom integrations in the wild also do, so tokens stay out " +
			"of URLs.",
		DocsURL: "https://developers.zoom.us/docs/integrations/oauth/",
	}, q: quirks{revokeAccess: true}},
}
