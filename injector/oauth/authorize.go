package oauth

import (
	"net/url"
	"strings"
)

// AuthCodeURL returns the URL of the provider's authorization endpoint that
// starts the authorization-code flow, or "" when the provider has no
// authorization endpoint configured.
//
// It carries response_type=code, client_id, redirect_uri (when not empty),
// state, the scopes (scopes, or the configured ones when scopes is nil)
// joined with the provider's separator in the provider's scope parameter
// (scope; Slack's user_scope), and code_challenge with
// code_challenge_method=S256 when the provider uses PKCE and codeChallenge
// is not empty (oauth2.S256ChallengeFromVerifier computes it). The
// configured authorization parameters (Google's access_type=offline and
// prompt=consent, for example) are added, then extra (login_hint, say),
// which wins over them; an empty extra value removes a parameter. Neither
// can replace the parameters the flow sets itself (see
// ProviderConfig.AuthParams): those are ignored in extra. An MCP server's
// provider adds resource (RFC 8707), its URL.
func (p *Provider) AuthCodeURL(state, codeChallenge, redirectURI string, scopes []string, extra map[string]string) string {
	if p.cfg.AuthorizationURL == "" {
		return ""
	}
	u, err := url.Parse(p.cfg.AuthorizationURL)
	if err != nil {
		return "" // validated by NewProvider; cannot happen
	}
	q := u.Query()
	for k, v := range p.cfg.AuthParams {
		q.Set(k, v)
	}
	scopeParam := p.q.scopeParamName()
	for k, v := range extra {
		if reservedAuthParams[k] || k == scopeParam {
			continue
		}
		if v == "" {
			q.Del(k)
			continue
		}
		q.Set(k, v)
	}
	q.Set("response_type", "code")
	q.Set("client_id", p.cfg.ClientID)
	if redirectURI != "" {
		q.Set("redirect_uri", redirectURI)
	}
	if scopes == nil {
		scopes = p.cfg.Scopes
	}
	if len(scopes) > 0 {
		q.Set(scopeParam, strings.Join(scopes, p.cfg.ScopeSeparator))
	}
	if state != "" {
		q.Set("state", state)
	}
	if p.resource != "" {
		q.Set("resource", p.resource)
	}
	if codeChallenge != "" && p.PKCE() {
		q.Set("code_challenge", codeChallenge)
		q.Set("code_challenge_method", "S256")
	}
	u.RawQuery = q.Encode()
	return u.String()
}
