package oauth

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// quirks describe how one preset's provider departs from plain RFC 6749 /
// RFC 7009 behaviour. They are internal: a configuration selects them by
// naming a preset (a custom provider with `preset: slack` and its own URLs
// gets Slack's quirks), and the zero value is the standard behaviour that
// custom providers without a preset get. docs/providers.md lists them per
// preset (see describe).
type quirks struct {
	// jsonBody sends token-endpoint and revocation parameters as a JSON
	// object instead of a form (Notion, Atlassian). Client credentials of
	// AuthStyleParams go into the same object.
	jsonBody bool
	// scopeParam is the authorization-request parameter that carries the
	// scopes; empty means "scope". Slack puts user-token scopes in
	// "user_scope" ("scope" asks for bot scopes).
	scopeParam string
	// nestedToken names an object of the token response that holds the
	// token fields when it has an access_token (Slack's "authed_user",
	// where the user token lives); otherwise the top level is read.
	nestedToken string
	// okField means a JSON "ok": false marks an error even with HTTP 200,
	// the code being in "error" (Slack's Web API convention).
	okField bool
	// errorFields are further response fields that carry an error code on
	// a non-2xx answer, after the standard "error" (HubSpot's "status" and
	// "category").
	errorFields []string
	// errorAliases map provider error codes to the RFC 6749 codes that
	// decide the classification (GitHub's bad_verification_code is
	// invalid_grant, Slack's ratelimited is temporarily_unavailable).
	errorAliases map[string]string
	// refreshPath, when set, replaces the path of the token URL for
	// refresh_token grants (Figma refreshes at /v1/oauth/refresh). It is a
	// path, not a URL, so that a configuration overriding token_url keeps
	// both endpoints on the same origin.
	refreshPath string
	// revoke is how a token is revoked.
	revoke revokeStyle
	// revokeAccess makes RevokeGrant present the access token rather than
	// the refresh token: the provider's revocation endpoint takes access
	// tokens (and ends the grant with them).
	revokeAccess bool
	// revokeGone are error codes of the revocation answer that mean the
	// token is already unusable, so the revocation achieved its purpose
	// (Slack's token_revoked). invalid_token always counts (RFC 7009
	// section 2.2: invalid tokens do not cause an error).
	revokeGone []string
	// account is how the provider account is looked up.
	account accountStyle
	// accountQuery is the GraphQL query of accountGraphQL.
	accountQuery string
	// headers are added to revocation and identity requests (Notion's
	// API refuses requests without Notion-Version).
	headers map[string]string
}

// revokeStyle is the shape of a revocation request.
type revokeStyle int

const (
	// revokeRFC7009 posts token and token_type_hint with client
	// authentication (RFC 7009 section 2.1), as a form or, with jsonBody,
	// as JSON.
	revokeRFC7009 revokeStyle = iota
	// revokeTokenOnly posts the token alone, without client
	// authentication (Google, Salesforce).
	revokeTokenOnly
	// revokeBearer posts an empty request authenticated with the token
	// itself as a bearer token (Slack's auth.revoke, Dropbox's
	// auth/token/revoke); it revokes access tokens only.
	revokeBearer
	// revokeGitHubGrant sends DELETE with HTTP Basic client
	// authentication and {"access_token": token} as JSON, deleting the
	// whole app authorization (GitHub's DELETE /applications/{client_id}/grant).
	revokeGitHubGrant
)

// accountStyle is the shape of an identity request.
type accountStyle int

const (
	// accountGET sends GET with the access token as bearer token.
	accountGET accountStyle = iota
	// accountPOST sends an empty POST with the bearer token (Slack's
	// auth.test, Dropbox's RPC-style users/get_current_account).
	accountPOST
	// accountGraphQL posts {"query": accountQuery} with the bearer token
	// (Linear, whose API is GraphQL only).
	accountGraphQL
	// accountIntrospect posts token and token_type_hint=access_token with
	// client authentication to a token-introspection endpoint (HubSpot),
	// keeping the token out of the URL.
	accountIntrospect
)

// scopeParamName returns the authorization-request parameter for scopes.
func (q quirks) scopeParamName() string {
	if q.scopeParam == "" {
		return "scope"
	}
	return q.scopeParam
}

// errorCode returns the provider error code in fields, mapped through
// errorAliases and sanitised, or "". failed reports a non-2xx answer: only
// then are errorFields consulted, since a success body may use those names
// for other things.
func (q quirks) errorCode(fields map[string]any, failed bool) string {
	return q.alias(q.rawErrorCode(fields, failed))
}

// alias maps a sanitised provider code through errorAliases.
func (q quirks) alias(code string) string {
	if a, ok := q.errorAliases[code]; ok {
		return a
	}
	return code
}

// rawErrorCode is errorCode without the aliases: the provider's own code,
// sanitised.
func (q quirks) rawErrorCode(fields map[string]any, failed bool) string {
	code := ""
	if s, ok := fields["error"].(string); ok {
		code = s
	}
	if ok, present := fields["ok"].(bool); q.okField && present && !ok && code == "" {
		code = "unknown_error"
	}
	if code == "" && failed {
		for _, k := range q.errorFields {
			if s, ok := fields[k].(string); ok && s != "" {
				code = s
				break
			}
		}
	}
	return sanitizeCode(code)
}

// clone returns a deep copy of q.
func (q quirks) clone() quirks {
	q.errorFields = slices.Clone(q.errorFields)
	q.errorAliases = maps.Clone(q.errorAliases)
	q.revokeGone = slices.Clone(q.revokeGone)
	q.headers = maps.Clone(q.headers)
	return q
}

// describe returns what onbehalf does differently for this provider, one
// sentence each, for docs/providers.md.
func (q quirks) describe() []string {
	var out []string
	if q.jsonBody {
		out = append(out, "Token and revocation requests carry a JSON body instead of a form.")
	}
	if q.scopeParam != "" {
		out = append(out, fmt.Sprintf("Scopes are sent in the `%s` authorization parameter.", q.scopeParam))
	}
	if q.nestedToken != "" {
		out = append(out, fmt.Sprintf("The token is read from the response's `%s` object when it holds one, else from the top level.", q.nestedToken))
	}
	if q.okField {
		out = append(out, "A JSON `\"ok\": false` answer is an error even with HTTP 200; its code is in `error`.")
	}
	if len(q.errorFields) > 0 {
		out = append(out, fmt.Sprintf("Error codes of failed answers are also read from %s.", quoteList(q.errorFields)))
	}
	if len(q.errorAliases) > 0 {
		keys := slices.Sorted(maps.Keys(q.errorAliases))
		pairs := make([]string, 0, len(keys))
		for _, k := range keys {
			pairs = append(pairs, fmt.Sprintf("`%s` → `%s`", k, q.errorAliases[k]))
		}
		out = append(out, "Provider error codes are read as RFC 6749 codes: "+strings.Join(pairs, ", ")+".")
	}
	if q.refreshPath != "" {
		out = append(out, fmt.Sprintf("Refreshes go to `%s` on the token endpoint's host.", q.refreshPath))
	}
	switch q.revoke {
	case revokeTokenOnly:
		out = append(out, "Revocation posts the token alone, without client authentication.")
	case revokeBearer:
		out = append(out, "Revocation sends the access token as a bearer token with an empty body.")
	case revokeGitHubGrant:
		out = append(out, "Revocation sends DELETE with HTTP Basic client authentication and `{\"access_token\": …}`, which deletes the whole app authorization.")
	}
	if q.revokeAccess {
		out = append(out, "Disconnecting revokes the access token (the endpoint takes access tokens).")
	}
	if len(q.revokeGone) > 0 {
		out = append(out, fmt.Sprintf("Revocation answers %s mean the token is already dead and count as success.", quoteList(q.revokeGone)))
	}
	switch q.account {
	case accountPOST:
		out = append(out, "The account is looked up with an empty POST.")
	case accountGraphQL:
		out = append(out, fmt.Sprintf("The account is looked up with the GraphQL query `%s`.", q.accountQuery))
	case accountIntrospect:
		out = append(out, "The account is looked up by token introspection (token in the POST body, client credentials attached).")
	}
	if len(q.headers) > 0 {
		keys := slices.Sorted(maps.Keys(q.headers))
		hs := make([]string, 0, len(keys))
		for _, k := range keys {
			hs = append(hs, fmt.Sprintf("`%s: %s`", k, q.headers[k]))
		}
		out = append(out, "Revocation and identity requests carry "+strings.Join(hs, ", ")+".")
	}
	return out
}

func quoteList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = "`" + s + "`"
	}
	return strings.Join(q, ", ")
}
