package oauth

import (
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Placeholders of endpoint URLs.
const (
	placeholderTenant   = "{tenant}"
	placeholderDomain   = "{domain}"
	placeholderInstance = "{instance}"
	placeholderClientID = "{client_id}"
)

// maxTenantLen bounds Tenant: it is a host label or a domain name (253
// characters at most, RFC 1035).
const maxTenantLen = 253

// tenantPattern is what Tenant may hold. It is pasted into endpoint URLs
// (hosts and paths), so nothing that could change a URL's structure (/, ?,
// #, @, :, %) is allowed.
var tenantPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// placeholderPattern finds {name} placeholders.
var placeholderPattern = regexp.MustCompile(`\{[^{}]*\}`)

// reservedAuthParams are the authorization-request parameters that
// Provider.AuthCodeURL sets itself; configuration and callers cannot
// override them (a configured redirect_uri or code_challenge would defeat
// the flow's checks).
var reservedAuthParams = map[string]bool{
	"resource":              true, // RFC 8707: an MCP server's URL, set by the flow
	"response_type":         true,
	"client_id":             true,
	"redirect_uri":          true,
	"scope":                 true,
	"user_scope":            true,
	"state":                 true,
	"code_challenge":        true,
	"code_challenge_method": true,
}

// Resolve returns c with every field it leaves empty filled from its preset
// (endpoints, scopes, auth style, scope separator, account field, PKCE;
// authorization parameters are merged, c's winning and an empty value
// removing one), placeholders in the endpoint URLs substituted, the scope
// separator defaulting to " " and PKCE to true for a custom provider. The
// result shares nothing with c or the catalog.
//
// The error is an errors.Join of *config.FieldError: an unknown preset
// (path "preset"; c is then returned with only its placeholders
// substituted) or a placeholder that needs a tenant when Tenant is empty or
// malformed (path "tenant"). Resolve does not validate anything else; see
// Validate.
func (c ProviderConfig) Resolve() (ProviderConfig, error) {
	var p config.Problems
	r := c
	r.Scopes = slices.Clone(c.Scopes)
	r.AuthParams = maps.Clone(c.AuthParams)
	r.ScopeDescriptions = maps.Clone(c.ScopeDescriptions)
	r.Exchange = c.Exchange.clone()
	if c.Preset != "" {
		e, ok := lookupEntry(c.Preset)
		if !ok {
			p.Addf("preset", "unknown preset %q (known: %s)", c.Preset, strings.Join(presetNames(), ", "))
		} else {
			fill(&r, e.Preset)
		}
	}
	if r.ScopeSeparator == "" {
		r.ScopeSeparator = " "
	}
	if r.PKCE == nil {
		r.PKCE = ptr(true)
	} else {
		r.PKCE = ptr(*r.PKCE)
	}
	for k, v := range r.AuthParams {
		if v == "" {
			delete(r.AuthParams, k) // an empty value removes a preset parameter
		}
	}
	if len(r.AuthParams) == 0 {
		r.AuthParams = nil
	}

	needsTenant := false
	for _, u := range []*string{&r.TokenURL, &r.AuthorizationURL, &r.RevocationURL, &r.UserinfoURL} {
		needsTenant = needsTenant || strings.Contains(*u, placeholderTenant) ||
			strings.Contains(*u, placeholderDomain) || strings.Contains(*u, placeholderInstance)
		*u = substitute(*u, c.Tenant, c.ClientID)
	}
	switch {
	case c.Tenant != "" && (len(c.Tenant) > maxTenantLen || !tenantPattern.MatchString(c.Tenant)):
		p.Addf("tenant", "must be a host label or domain name (letters, digits, '.', '-', '_')")
	case needsTenant && c.Tenant == "":
		what := "the endpoints"
		if c.Preset != "" {
			what = "preset " + c.Preset
		}
		p.Addf("tenant", "required: %s use a {tenant} placeholder", what)
	}
	return r, p.Err()
}

// fill copies into r every field of pre that r leaves empty.
func fill(r *ProviderConfig, pre Preset) {
	setIfEmpty(&r.AuthorizationURL, pre.AuthorizationURL)
	setIfEmpty(&r.TokenURL, pre.TokenURL)
	setIfEmpty(&r.RevocationURL, pre.RevocationURL)
	setIfEmpty(&r.UserinfoURL, pre.UserinfoURL)
	setIfEmpty(&r.ScopeSeparator, pre.ScopeSeparator)
	setIfEmpty(&r.AccountField, pre.AccountField)
	if r.AuthStyle == "" {
		r.AuthStyle = pre.AuthStyle
	}
	if len(r.Scopes) == 0 {
		r.Scopes = slices.Clone(pre.DefaultScopes)
	}
	if r.PKCE == nil {
		r.PKCE = ptr(pre.PKCE)
	}
	if r.RateLimitHeaders == nil && pre.RateLimitHeaders != nil {
		r.RateLimitHeaders = ptr(*pre.RateLimitHeaders)
	}
	if len(pre.AuthParams) > 0 {
		merged := maps.Clone(pre.AuthParams)
		maps.Copy(merged, r.AuthParams) // the configuration wins
		r.AuthParams = merged
	}
	if len(pre.ScopeDescriptions) > 0 {
		merged := maps.Clone(pre.ScopeDescriptions)
		maps.Copy(merged, r.ScopeDescriptions) // the configuration wins
		r.ScopeDescriptions = merged
	}
}

func setIfEmpty(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

func ptr[T any](v T) *T { return &v }

// substitute fills the placeholders of u that have a value; the others
// stay, for Validate to report.
func substitute(u, tenant, clientID string) string {
	if !strings.Contains(u, "{") {
		return u
	}
	if tenant != "" && len(tenant) <= maxTenantLen && tenantPattern.MatchString(tenant) {
		u = strings.NewReplacer(placeholderTenant, tenant, placeholderDomain, tenant, placeholderInstance, tenant).Replace(u)
	}
	if clientID != "" {
		// Client ids are opaque strings; escape them as one path segment.
		u = strings.ReplaceAll(u, placeholderClientID, url.PathEscape(clientID))
	}
	return u
}

// hasPlaceholder reports whether u still holds a {…} placeholder.
func hasPlaceholder(u string) bool { return placeholderPattern.MatchString(u) }

// unknownPlaceholder returns the first placeholder of u that Resolve does
// not know, or "".
func unknownPlaceholder(u string) string {
	for _, m := range placeholderPattern.FindAllString(u, -1) {
		switch m {
		case placeholderTenant, placeholderDomain, placeholderInstance, placeholderClientID:
		default:
			return m
		}
	}
	return ""
}

// Routes returns the default routes of c's preset with Provider set to
// providerName: the hosts (and paths) the sidecar injects this provider's
// token for unless the configuration lists its own routes. For an MCP
// server (MCPServer) it is one MCP route: the URL's host, port and path.
// It returns nil for a custom provider or an unknown preset.
func (c ProviderConfig) Routes(providerName string) []injector.RouteConfig {
	if c.IsMCP() {
		if res, err := CanonicalResource(c.MCPServer); err == nil {
			return mcpRoute(res, providerName)
		}
		return nil
	}
	e, ok := lookupEntry(c.Preset)
	if !ok {
		return nil
	}
	rs := cloneRoutes(e.Routes)
	for i := range rs {
		rs[i].Provider = providerName
	}
	return rs
}

// validScope reports whether s is an RFC 6749 scope token (section 3.3).
func validScope(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r > '~' })
}

// validParamName reports whether s is a plausible URL query parameter name.
func validParamName(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
	})
}

// validAccountField reports whether s is a field name or a dotted path of
// field names.
func validAccountField(s string) bool {
	for part := range strings.SplitSeq(s, ".") {
		if part == "" || strings.ContainsFunc(part, func(r rune) bool { return r <= ' ' || r > '~' }) {
			return false
		}
	}
	return true
}
