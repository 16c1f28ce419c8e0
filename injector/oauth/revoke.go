package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/onbehalf-dev/onbehalf/injector"
)

// Errors of Revoke.
var (
	// ErrNoRevocation means the provider has no revocation endpoint
	// configured: the grant can only be forgotten locally, and the user
	// should remove the app in the provider's account settings.
	ErrNoRevocation = errors.New("provider has no revocation endpoint")
	// ErrRevocationRefused means the revocation endpoint answered with a
	// permanent refusal (4xx other than 408 and 429, or an error code such
	// as invalid_client or unsupported_token_type); asking again will not
	// help. Transient failures wrap injector.ErrProviderUnavailable instead.
	ErrRevocationRefused = errors.New("revocation refused by the provider")
)

// Revoke asks the provider to revoke token (RFC 7009): by default a POST of
// token and token_type_hint ("access_token", "refresh_token" or empty) with
// the configured client authentication; presets with another shape
// (Slack's and Dropbox's bearer revocation, GitHub's DELETE of the app
// authorization, Google's and Salesforce's unauthenticated form, Notion's
// JSON) send theirs. Bearer-style revocation only takes access tokens; see
// RevokeGrant for a choice made per provider.
//
// A 2xx answer is success, and so is an answer saying the token is already
// invalid (invalid_token, RFC 7009 section 2.2, and the preset's own codes
// such as Slack's token_revoked): an unknown token needs no revoking. With
// no revocation endpoint it returns ErrNoRevocation without a request.
// Transient failures (timeouts, connection errors, 408, 429, 5xx,
// temporarily_unavailable) wrap injector.ErrProviderUnavailable; permanent
// ones wrap ErrRevocationRefused. Errors never quote the token or a
// response body.
func (p *Provider) Revoke(ctx context.Context, token, tokenTypeHint string) error {
	if p.cfg.RevocationURL == "" {
		return fmt.Errorf("revoke token: %w", ErrNoRevocation)
	}
	if token == "" {
		return fmt.Errorf("revoke token: empty token: %w", ErrRevocationRefused)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := p.revokeRequest(ctx, token, tokenTypeHint)
	if err != nil {
		return fmt.Errorf("revoke token: %w: %w", ErrRevocationRefused, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("revoke token: %w: %w", injector.ErrProviderUnavailable, transportError(err))
	}
	body, err := readBody(resp, maxSmallResponse)
	if err != nil {
		return fmt.Errorf("revoke token: status %d: %w: %w", resp.StatusCode, injector.ErrProviderUnavailable, err)
	}
	failed := resp.StatusCode < 200 || resp.StatusCode > 299
	fields, _ := parseFields(resp.Header.Get("Content-Type"), body)
	raw := p.q.rawErrorCode(fields, failed)
	code := p.q.alias(raw)
	switch {
	case !failed && code == "":
		return nil
	case code == "invalid_token" || slices.Contains(p.q.revokeGone, raw):
		return nil // already unusable: what revocation was for
	}
	return classifyRevocation(resp.StatusCode, code)
}

// RevokeGrant revokes a grant given both of its tokens, presenting the one
// the provider's revocation endpoint ends the grant with: the refresh token
// by default (RFC 7009 servers revoke the access tokens issued from it),
// the access token for providers whose endpoint takes access tokens
// (Slack, Dropbox, GitHub, Notion, Zoom). It falls back to the other token
// when the preferred one is empty, except where only access tokens can be
// revoked (bearer-style and GitHub). Errors are those of Revoke.
func (p *Provider) RevokeGrant(ctx context.Context, accessToken, refreshToken string) error {
	accessOnly := p.q.revoke == revokeBearer || p.q.revoke == revokeGitHubGrant
	if accessOnly || (p.q.revokeAccess && accessToken != "") || refreshToken == "" {
		return p.Revoke(ctx, accessToken, "access_token")
	}
	return p.Revoke(ctx, refreshToken, "refresh_token")
}

// revokeRequest builds the revocation request of the provider's style.
func (p *Provider) revokeRequest(ctx context.Context, token, hint string) (*http.Request, error) {
	var req *http.Request
	var err error
	switch p.q.revoke {
	case revokeBearer:
		req, err = p.newClientRequest(ctx, http.MethodPost, p.cfg.RevocationURL, nil, false)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+token)
		}
	case revokeGitHubGrant:
		body, merr := json.Marshal(map[string]string{"access_token": token})
		if merr != nil {
			return nil, merr
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodDelete, p.cfg.RevocationURL, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json")
			req.Header.Set("User-Agent", userAgent)
			req.SetBasicAuth(url.QueryEscape(p.oauth.ClientID), url.QueryEscape(p.oauth.ClientSecret))
		}
	case revokeTokenOnly:
		req, err = p.newClientRequest(ctx, http.MethodPost, p.cfg.RevocationURL, url.Values{"token": {token}}, false)
	default:
		form := url.Values{"token": {token}}
		if hint != "" {
			form.Set("token_type_hint", hint)
		}
		req, err = p.newClientRequest(ctx, http.MethodPost, p.cfg.RevocationURL, form, true)
	}
	if err != nil {
		return nil, err
	}
	for k, v := range p.q.headers {
		req.Header.Set(k, v)
	}
	return req, nil
}

// classifyRevocation maps a failed revocation answer to
// injector.ErrProviderUnavailable (the server is failing: 5xx, 429, 408,
// temporarily_unavailable, server_error, slow_down) or ErrRevocationRefused.
func classifyRevocation(status int, code string) error {
	transient := status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout ||
		code == "temporarily_unavailable" || code == "server_error" || code == "slow_down"
	sentinel := ErrRevocationRefused
	if transient {
		sentinel = injector.ErrProviderUnavailable
	}
	if code == "" {
		return fmt.Errorf("revoke token: status %d: %w", status, sentinel)
	}
	return fmt.Errorf("revoke token: status %d, error %q: %w", status, code, sentinel)
}
