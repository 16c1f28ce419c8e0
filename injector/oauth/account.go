package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/onbehalf-dev/onbehalf/injector"
)

const (
	// defaultAccountField is read when neither the configuration nor a
	// preset names one: OpenID Connect's subject identifier.
	defaultAccountField = "sub"
	// maxAccountLen bounds the account name kept with a grant; e-mail
	// addresses and user ids are far shorter.
	maxAccountLen = 256
)

// ErrNoAccount means the identity answer did not name the account: the
// account field is missing, empty, not a string or number, or not a short
// printable value. A missing scope (Google's email, Microsoft's User.Read)
// or a wrong account_field is the usual cause.
var ErrNoAccount = errors.New("identity response does not name the account")

// Account returns the provider account that accessToken acts for: the
// configured AccountField (a dotted path such as "data.email"; "sub" when
// unset) of the identity endpoint's JSON answer. By default it sends GET
// with the token as bearer token; presets whose identity call differs send
// theirs (Slack's and Dropbox's POST, Linear's GraphQL query, HubSpot's
// token introspection). With no userinfo URL configured it returns "" and
// no error.
//
// Errors wrap injector.ErrProviderUnavailable (timeouts, connection errors,
// 408, 429, 5xx), injector.ErrProviderMisconfigured (other non-2xx answers:
// a missing scope, usually) or ErrNoAccount. They never quote the token or
// a response body.
func (p *Provider) Account(ctx context.Context, accessToken string) (string, error) {
	if p.cfg.UserinfoURL == "" {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := p.accountRequest(ctx, accessToken)
	if err != nil {
		return "", fmt.Errorf("look up account: %w: %w", injector.ErrProviderMisconfigured, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("look up account: %w: %w", injector.ErrProviderUnavailable, transportError(err))
	}
	body, err := readBody(resp, maxSmallResponse)
	if err != nil {
		return "", fmt.Errorf("look up account: status %d: %w: %w", resp.StatusCode, injector.ErrProviderUnavailable, err)
	}
	failed := resp.StatusCode < 200 || resp.StatusCode > 299
	fields, parsed := parseFields("application/json", body)
	if code := p.q.errorCode(fields, failed); failed || code != "" {
		return "", classifyStatus("look up account", resp.StatusCode, code, injector.ErrProviderMisconfigured)
	}
	if !parsed {
		return "", fmt.Errorf("look up account: status %d: %w: not a JSON object", resp.StatusCode, ErrNoAccount)
	}
	field := p.cfg.AccountField
	if field == "" {
		field = defaultAccountField
	}
	account, ok := lookupPath(fields, field)
	if !ok {
		return "", fmt.Errorf("look up account: field %q: %w", field, ErrNoAccount)
	}
	return account, nil
}

// accountRequest builds the identity request of the provider's style.
func (p *Provider) accountRequest(ctx context.Context, accessToken string) (*http.Request, error) {
	var req *http.Request
	var err error
	bearer := true
	switch p.q.account {
	case accountPOST:
		req, err = p.newClientRequest(ctx, http.MethodPost, p.cfg.UserinfoURL, nil, false)
	case accountGraphQL:
		var body []byte
		body, err = json.Marshal(map[string]string{"query": p.q.accountQuery})
		if err == nil {
			req, err = http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.UserinfoURL, strings.NewReader(string(body)))
		}
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json")
			req.Header.Set("User-Agent", userAgent)
		}
	case accountIntrospect:
		bearer = false
		req, err = p.newClientRequest(ctx, http.MethodPost, p.cfg.UserinfoURL,
			url.Values{"token": {accessToken}, "token_type_hint": {"access_token"}}, true)
	case accountGET:
		req, err = p.newClientRequest(ctx, http.MethodGet, p.cfg.UserinfoURL, nil, false)
	default:
		return nil, fmt.Errorf("identity request: unknown style %d", p.q.account)
	}
	if err != nil {
		return nil, err
	}
	if bearer {
		req.Header.Set("Authorization", "Bearer "+accessToken)
	}
	for k, v := range p.q.headers {
		req.Header.Set(k, v)
	}
	return req, nil
}

// lookupPath returns the value at a dotted path of a JSON object as a
// string, when it is a short printable string or a number.
func lookupPath(fields map[string]any, path string) (string, bool) {
	var v any = fields
	for part := range strings.SplitSeq(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = obj[part]; !ok {
			return "", false
		}
	}
	var s string
	switch x := v.(type) {
	case string:
		s = strings.TrimSpace(x)
	case json.Number:
		s = x.String()
	default:
		return "", false
	}
	if s == "" || len(s) > maxAccountLen || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) {
		return "", false
	}
	return s, true
}
