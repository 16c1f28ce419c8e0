package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector"
)

// Limits of provider answers.
const (
	// maxTokenResponse bounds a token-endpoint answer. Token responses are
	// well under 10 KiB; 1 MiB is x/oauth2's bound too.
	maxTokenResponse = 1 << 20
	// maxSmallResponse bounds revocation and identity answers: small JSON
	// documents, of which Microsoft Graph's /me is among the larger at a
	// few KiB.
	maxSmallResponse = 256 << 10
	// maxExpiresIn caps a token's announced lifetime (ten years) so a
	// hostile value cannot overflow the expiry computation.
	maxExpiresIn = 10 * 365 * 24 * 3600
	// userAgent identifies onbehalf to providers; GitHub's API refuses
	// requests without a User-Agent.
	userAgent = "onbehalf"
)

// ErrInvalidCode means the token endpoint refused an authorization code
// (invalid_grant or the provider's equivalent): it is unknown, expired,
// already used, issued to another redirect URI, or the PKCE verifier does
// not match. The user must start the flow again.
var ErrInvalidCode = errors.New("authorization code refused (invalid_grant)")

// Exchange trades an authorization code for tokens at the token endpoint:
// one POST with the configured client authentication, no redirect followed,
// within the configured timeout. codeVerifier is sent when the provider
// uses PKCE (and is not empty); redirectURI must be the one given to
// AuthCodeURL. The token's Extra holds the rest of the provider's answer
// (with "scope" space-separated), for example Salesforce's instance_url.
//
// Errors wrap exactly one of ErrInvalidCode, injector.ErrProviderUnavailable
// (timeouts, connection failures, 429, 5xx, unusable answers) and
// injector.ErrProviderMisconfigured (the client is refused: invalid_client,
// redirects, other 4xx). They quote at most the provider's error code and
// HTTP status, never a response body.
func (p *Provider) Exchange(ctx context.Context, code, codeVerifier, redirectURI string) (*oauth2.Token, error) {
	if code == "" {
		return nil, fmt.Errorf("exchange code: empty code: %w", ErrInvalidCode)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}}
	if redirectURI != "" {
		form.Set("redirect_uri", redirectURI)
	}
	if codeVerifier != "" && p.PKCE() {
		form.Set("code_verifier", codeVerifier)
	}
	if p.resource != "" {
		form.Set("resource", p.resource)
	}
	tok, err := p.tokenCall(ctx, p.cfg.TokenURL, form, ErrInvalidCode)
	if err != nil {
		return nil, fmt.Errorf("exchange code: %w", err)
	}
	return tok, nil
}

// refresh presents refreshToken once, within the provider's timeout (see
// present).
func (p *Provider) refresh(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	tok, _, err := p.present(ctx, refreshToken, p.cfg.Timeout, nil)
	return tok, err
}

// errNotSent is the cause of a refresh abandoned because its request could
// not be sent within the provider's timeout: the refresh token was not
// presented.
var errNotSent = errors.New("request not sent within the timeout")

// present presents refreshToken at the token endpoint (or the preset's
// refresh endpoint) once. net/http does not replay a POST whose request was
// written, so the refresh token is presented at most once per call, on a
// connection of its own (see Provider.refreshClient).
//
// Until the request is sent (connection, TLS handshake, writing), the call
// is bounded by the provider's timeout. Once it is sent, the provider may
// spend the refresh token whatever happens to the caller, so the answer is
// awaited up to answerDeadline (at least the timeout) or ctx's end; slow,
// when set, is called once the timeout has passed without an answer to a
// sent request, so that callers waiting for the refresh can give up while
// it goes on.
//
// unsure reports a failure after which the refresh token may have been
// spent: the request was sent (its headers were written; the body, with the
// token, follows at once) and no answer came back, or a gateway answered
// that the provider behind it did not (502, 504). Any other answer is the
// provider's word that it issued nothing, and a failure before sending
// presented nothing.
//
// The returned token always has a refresh token: the presented one when
// the provider did not rotate it. Errors wrap exactly one of
// errInvalidGrant, injector.ErrProviderMisconfigured and
// injector.ErrProviderUnavailable. They quote at most the provider's error
// code and HTTP status, never a response body (a provider could echo the
// request, refresh token included).
func (p *Provider) present(ctx context.Context, refreshToken string, answerDeadline time.Duration, slow func()) (tok *oauth2.Token, unsure bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, max(answerDeadline, p.cfg.Timeout))
	defer cancel()
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders: func() { wrote.Store(true) },
	})
	timer := time.AfterFunc(p.cfg.Timeout, func() {
		if !wrote.Load() {
			cancelCause(errNotSent) // the call ends now, and with it the flight
			return
		}
		if slow != nil {
			slow()
		}
	})
	defer timer.Stop()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	if p.resource != "" {
		form.Set("resource", p.resource) // RFC 8707: the token is for this MCP server only
	}
	tok, status, err := p.post(ctx, p.refreshClient, p.refreshURL, form, errInvalidGrant)
	if err != nil {
		if errors.Is(context.Cause(ctx), errNotSent) {
			err = fmt.Errorf("token endpoint: %w: %w", injector.ErrProviderUnavailable, errNotSent)
		}
		unsure = wrote.Load() && (status == 0 || status == http.StatusBadGateway || status == http.StatusGatewayTimeout)
		return nil, unsure, err
	}
	if tok.RefreshToken == "" {
		tok.RefreshToken = refreshToken
	}
	return tok, false, nil
}

// tokenCall posts form to endpoint with client authentication and reads the
// issued token, within the provider's timeout. invalid is the sentinel for
// invalid_grant (the refresh token or the code is dead).
func (p *Provider) tokenCall(ctx context.Context, endpoint string, form url.Values, invalid error) (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	tok, _, err := p.post(ctx, p.client, endpoint, form, invalid)
	return tok, err
}

// post is tokenCall without a timeout of its own, on client. status is the
// answer's HTTP status, 0 when none came (or it could not be read whole).
func (p *Provider) post(ctx context.Context, client *http.Client, endpoint string, form url.Values, invalid error) (tok *oauth2.Token, status int, err error) {
	req, err := p.newClientRequest(ctx, http.MethodPost, endpoint, form, true)
	if err != nil {
		return nil, 0, fmt.Errorf("token endpoint: %w: %w", injector.ErrProviderMisconfigured, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("token endpoint: %w: %w", injector.ErrProviderUnavailable, transportError(err))
	}
	body, err := readBody(resp, maxTokenResponse)
	if err != nil {
		// A truncated answer may have carried new tokens.
		return nil, 0, fmt.Errorf("token endpoint: status %d: %w: %w", resp.StatusCode, injector.ErrProviderUnavailable, err)
	}
	failed := resp.StatusCode < 200 || resp.StatusCode > 299
	fields, parsed := parseFields(resp.Header.Get("Content-Type"), body)
	if code := p.q.errorCode(fields, failed); failed || code != "" {
		return nil, resp.StatusCode, classifyStatus("token endpoint", resp.StatusCode, code, invalid)
	}
	if !parsed {
		return nil, 0, fmt.Errorf("token endpoint: status %d: %w: %w", resp.StatusCode, injector.ErrProviderUnavailable, errUnusableResponse)
	}
	tok, ok := p.q.token(fields, time.Now())
	if !ok {
		// A 2xx answer we cannot read: the provider may have rotated.
		return nil, 0, fmt.Errorf("token endpoint: status %d: %w: %w", resp.StatusCode, injector.ErrProviderUnavailable, errUnusableResponse)
	}
	return tok, resp.StatusCode, nil
}

// errUnusableResponse means a 2xx answer could not be read as a token (not
// JSON or a form, or without an access token). It is transient: the grant is
// never judged on an answer it cannot read.
var errUnusableResponse = errors.New("unusable or incomplete token response")

// newClientRequest builds a request to endpoint carrying params, with client
// authentication when clientAuth is set: HTTP Basic for AuthStyleHeader
// (both parts form-encoded first, RFC 6749 section 2.3.1), client_id and
// client_secret among the parameters for AuthStyleParams. Parameters go in
// a form body, or a JSON object for presets that want one. A nil params
// sends no body.
func (p *Provider) newClientRequest(ctx context.Context, method, endpoint string, params url.Values, clientAuth bool) (*http.Request, error) {
	switch {
	case clientAuth && p.cfg.AuthStyle == AuthStyleParams:
		params = cloneValues(params)
		params.Set("client_id", p.oauth.ClientID)
		params.Set("client_secret", p.oauth.ClientSecret)
	case clientAuth && p.cfg.AuthStyle == authStyleNone:
		// A public client identifies itself and proves nothing (RFC
		// 6749 section 3.2.1); PKCE binds the code to the flow.
		params = cloneValues(params)
		params.Set("client_id", p.oauth.ClientID)
	}
	var body io.Reader
	contentType := ""
	switch {
	case params == nil:
	case p.q.jsonBody:
		obj := make(map[string]string, len(params))
		for k := range params {
			obj[k] = params.Get(k)
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return nil, err
		}
		body, contentType = bytes.NewReader(b), "application/json"
	default:
		body, contentType = strings.NewReader(params.Encode()), "application/x-www-form-urlencoded"
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	// GitHub's token endpoint answers a form unless JSON is asked for; every
	// other provider answers JSON anyway.
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if clientAuth && p.cfg.AuthStyle == AuthStyleHeader {
		req.SetBasicAuth(url.QueryEscape(p.oauth.ClientID), url.QueryEscape(p.oauth.ClientSecret))
	}
	return req, nil
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v)+2)
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// readBody reads and closes resp's body, refusing one larger than limit.
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", transportError(err))
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("answer larger than %d bytes", limit)
	}
	return body, nil
}

// parseFields reads a provider answer as a JSON object or, when its content
// type says so, as a form (some token endpoints answer
// application/x-www-form-urlencoded or text/plain). Numbers stay
// json.Number. ok is false when the body is neither.
func parseFields(contentType string, body []byte) (fields map[string]any, ok bool) {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/x-www-form-urlencoded" || mt == "text/plain" {
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, false
		}
		fields = make(map[string]any, len(vals))
		for k := range vals {
			fields[k] = vals.Get(k)
		}
		return fields, true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, false
	}
	return fields, true
}

// tokenFields are the fields of a token response that describe the token
// itself; with a nested token object they are not taken from the top level.
var tokenFields = []string{"access_token", "refresh_token", "token_type", "expires_in", "scope"}

// token reads an oauth2.Token from a successful token response, or reports
// that it holds no access token. Extra holds the response's fields, with
// "scope" normalised to a space-separated string.
func (q quirks) token(fields map[string]any, now time.Time) (*oauth2.Token, bool) {
	obj := fields
	nested := false
	if q.nestedToken != "" {
		if n, ok := fields[q.nestedToken].(map[string]any); ok && str(n["access_token"]) != "" {
			obj, nested = n, true
		}
	}
	access := str(obj["access_token"])
	if access == "" {
		return nil, false
	}
	tok := &oauth2.Token{
		AccessToken:  access,
		TokenType:    str(obj["token_type"]),
		RefreshToken: str(obj["refresh_token"]),
	}
	if secs := seconds(obj["expires_in"]); secs > 0 {
		tok.ExpiresIn = secs
		tok.Expiry = now.Add(time.Duration(secs) * time.Second)
	}
	extra := maps.Clone(obj)
	if nested {
		for k, v := range fields {
			if _, own := extra[k]; !own && !slices.Contains(tokenFields, k) && k != q.nestedToken {
				extra[k] = v
			}
		}
	}
	if sc := scopeString(obj["scope"]); sc != "" {
		extra["scope"] = sc
	} else {
		delete(extra, "scope")
	}
	return tok.WithExtra(extra), true
}

// str returns v when it is a string, else "".
func str(v any) string {
	s, _ := v.(string)
	return s
}

// seconds reads a lifetime in seconds from a JSON number or a numeric
// string (both occur), capped at maxExpiresIn; 0 when absent or invalid.
func seconds(v any) int64 {
	var n int64
	var err error
	switch x := v.(type) {
	case json.Number:
		n, err = x.Int64()
		if err != nil {
			f, ferr := x.Float64()
			n, err = int64(f), ferr
		}
	case string:
		n, err = strconv.ParseInt(strings.TrimSpace(x), 10, 64)
	default:
		return 0
	}
	if err != nil || n <= 0 {
		return 0
	}
	return min(n, maxExpiresIn)
}

// scopeString returns the granted scopes of a token response
// space-separated, whether the provider sent a space- or comma-separated
// string (Slack) or a list.
func scopeString(v any) string {
	var parts []string
	switch x := v.(type) {
	case string:
		parts = strings.FieldsFunc(x, func(r rune) bool { return r == ' ' || r == ',' })
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" {
				parts = append(parts, s)
			}
		}
	}
	return strings.Join(parts, " ")
}

// classifyStatus maps a failed answer of endpoint (what) to one sentinel.
//
// With an OAuth error code: invalid_grant is invalid (the refresh token or
// code is dead); temporarily_unavailable, server_error and slow_down are
// transient; every other code (invalid_client, unauthorized_client,
// unsupported_grant_type, invalid_request, invalid_scope, and codes this
// code does not know) means the provider refuses what onbehalf sends, which
// only an operator can fix — unless the HTTP status says the server is
// failing (5xx, 429, 408). Without a code, the status decides: 408, 429 and
// 5xx are transient, anything else (3xx redirects, 4xx) is a
// misconfiguration.
func classifyStatus(what string, status int, code string, invalid error) error {
	serverFailing := status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
	switch {
	case code == "invalid_grant":
		return fmt.Errorf("%s: status %d: %w", what, status, invalid)
	case code == "temporarily_unavailable" || code == "server_error" || code == "slow_down":
		return fmt.Errorf("%s: status %d, error %q: %w", what, status, code, injector.ErrProviderUnavailable)
	case serverFailing && code == "":
		return fmt.Errorf("%s: status %d: %w", what, status, injector.ErrProviderUnavailable)
	case serverFailing:
		return fmt.Errorf("%s: status %d, error %q: %w", what, status, code, injector.ErrProviderUnavailable)
	case code == "":
		return fmt.Errorf("%s: status %d: %w", what, status, injector.ErrProviderMisconfigured)
	}
	return fmt.Errorf("%s: status %d, error %q: %w", what, status, code, injector.ErrProviderMisconfigured)
}
