package oauthtest

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
	"go.uber.org/zap"
)

// internalKey marks a request the server makes to itself (IssueGrant). Such
// requests bypass the failure knobs and are not counted in Stats. Only code
// in this package can set a context value, so no client can claim it.
type internalKey struct{}

// isInternal reports whether ctx belongs to a request from IssueGrant.
func isInternal(ctx context.Context) bool {
	v, _ := ctx.Value(internalKey{}).(bool)
	return v
}

//go:embed consent.html
var consentHTML string

var consentTmpl = template.Must(template.New("consent").Parse(consentHTML))

// consentFields are the form fields the consent page adds to the
// authorization request's own parameters.
var consentFields = []string{"user", "approve", "deny"}

// consentPage is the data of the consent template.
type consentPage struct {
	ClientID string
	Scopes   []string
	User     string
	Error    string
	Hidden   []hiddenField
}

type hiddenField struct{ Name, Value string }

// newSession returns the fosite session of a grant for user.
func newSession(user string) *fosite.DefaultSession {
	return &fosite.DefaultSession{
		Subject:   user,
		Username:  user,
		ExpiresAt: make(map[fosite.TokenType]time.Time),
	}
}

// handleAuthorize serves the authorization endpoint. GET shows the consent
// page; POST with approve=… and a user name grants the requested scopes and
// redirects to the client with a code; POST with deny=… redirects with
// access_denied. Invalid requests are answered by fosite (a redirect with an
// error when the redirect URI is trustworthy, an error page otherwise).
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		writeJSONError(w, http.StatusMethodNotAllowed, "invalid_request", "Use GET or POST.")
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	}
	ar, err := s.provider.NewAuthorizeRequest(ctx, r)
	if err == nil {
		err = checkPKCEParams(ar)
	}
	var resources []string
	if err == nil {
		resources = ar.GetRequestForm()["resource"]
		for _, res := range resources {
			if rerr := s.checkResource(res); rerr != nil {
				err = errInvalidTarget(rerr.Error())
			}
		}
	}
	if err != nil {
		s.log.Info("authorize request refused", zap.String("client", clientID(ar)), zap.String("error", fosite.ErrorToRFC6749Error(err).ErrorField))
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}

	page := consentPage{
		ClientID: ar.GetClient().GetID(),
		Scopes:   ar.GetRequestedScopes(),
		User:     ar.GetRequestForm().Get("login_hint"),
		Hidden:   hiddenFields(r),
	}
	if r.Method == http.MethodGet {
		s.writeConsent(w, http.StatusOK, page)
		return
	}
	form := r.PostForm
	switch {
	case form.Get("deny") != "":
		s.log.Info("consent denied", zap.String("client", page.ClientID))
		s.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrAccessDenied.WithHint("The user denied the request."))
		return
	case form.Get("approve") == "":
		s.writeConsent(w, http.StatusOK, page)
		return
	}
	user := strings.TrimSpace(form.Get("user"))
	page.User = user
	if err := s.checkConsentUser(user); err != nil {
		page.Error = "User name " + err.Error() + "."
		s.writeConsent(w, http.StatusBadRequest, page)
		return
	}
	for _, scope := range ar.GetRequestedScopes() {
		ar.GrantScope(scope)
	}
	// RFC 8707: the token is issued for the resources the client named.
	ar.SetRequestedAudience(resources)
	for _, res := range resources {
		ar.GrantAudience(res)
	}
	resp, err := s.provider.NewAuthorizeResponse(ctx, ar, newSession(user))
	if err != nil {
		s.log.Info("authorize response refused", zap.String("client", page.ClientID), zap.String("error", fosite.ErrorToRFC6749Error(err).ErrorField))
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	s.log.Info("consent approved", zap.String("client", page.ClientID), zap.String("user", user), zap.Strings("scopes", ar.GetGrantedScopes()))
	s.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

// checkPKCEParams refuses, before the consent page is shown, what fosite's
// PKCE handler would refuse only after consent: a public client without a
// code challenge, or a challenge method other than S256.
func checkPKCEParams(ar fosite.AuthorizeRequester) error {
	challenge := ar.GetRequestForm().Get("code_challenge")
	method := ar.GetRequestForm().Get("code_challenge_method")
	switch {
	case challenge == "" && method == "" && ar.GetClient().IsPublic():
		return fosite.ErrInvalidRequest.WithHint("This client must use PKCE: code_challenge is missing.")
	case (challenge != "" || method != "") && method != "S256":
		return fosite.ErrInvalidRequest.WithHint("Clients must use code_challenge_method=S256.")
	case method != "" && challenge == "":
		return fosite.ErrInvalidRequest.WithHint("code_challenge is missing.")
	}
	return nil
}

// checkConsentUser validates the user name entered on the consent page.
func (s *Server) checkConsentUser(user string) error {
	if err := checkUser(user); err != nil {
		return err
	}
	if s.users != nil {
		if _, ok := s.users[user]; !ok {
			return errors.New("is not a known user")
		}
	}
	return nil
}

// hiddenFields returns the authorization request's parameters for the
// consent form to post back, in a stable order.
func hiddenFields(r *http.Request) []hiddenField {
	var out []hiddenField
	keys := make([]string, 0, len(r.Form))
	for k := range r.Form {
		if !slices.Contains(consentFields, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range r.Form[k] {
			out = append(out, hiddenField{Name: k, Value: v})
		}
	}
	return out
}

// writeConsent renders the consent page. The page may not be framed (so it
// cannot be clickjacked) and is not cached.
func (s *Server) writeConsent(w http.ResponseWriter, status int, page consentPage) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// No form-action directive: browsers apply it to the redirect that
	// follows the POST, which goes to the client's origin.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	if err := consentTmpl.Execute(w, page); err != nil {
		s.log.Warn("render consent page", zap.Error(err))
	}
}

// handleToken serves the token endpoint (authorization_code and
// refresh_token grants).
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	external := !isInternal(ctx)
	drop := false
	if external {
		s.stats.tokenRequests.Add(1)
		if !s.hold() {
			return
		}
		if !s.wait(ctx) {
			return
		}
		if status, ok := s.takeFailure(); ok {
			s.log.Info("token request failed on purpose", zap.Int("status", status))
			writeJSONError(w, status, errorCodeForStatus(status), "Injected failure.")
			return
		}
		if s.invalidClient() {
			s.stats.failedAuth.Add(1)
			writeInvalidClient(w)
			return
		}
		drop = s.takeDrop()
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)

	probe := &reuseProbe{}
	ctx = context.WithValue(ctx, reuseProbeKey{}, probe)
	s.tokenMu.Lock()
	ar, err := s.provider.NewAccessRequest(ctx, r, newSession(""))
	if err == nil {
		err = checkTokenResources(ar.GetRequestForm(), ar.GetRequestedAudience())
	}
	var resp fosite.AccessResponder
	if err == nil {
		resp, err = s.provider.NewAccessResponse(ctx, ar)
	}
	s.tokenMu.Unlock()

	if err != nil {
		rfc := fosite.ErrorToRFC6749Error(err)
		if external && probe.detected {
			s.stats.reuseDetections.Add(1)
		}
		if external && errors.Is(err, fosite.ErrInvalidClient) {
			s.stats.failedAuth.Add(1)
		}
		if probe.detected {
			s.log.Warn("refresh token reuse: grant revoked", zap.String("client", probe.client), zap.String("user", probe.user))
		} else {
			s.log.Info("token request refused", zap.String("client", clientID(ar)), zap.String("error", rfc.ErrorField), zap.String("hint", rfc.HintField))
		}
		if drop {
			dropConnection(w)
			return
		}
		s.provider.WriteAccessError(ctx, w, ar, err)
		return
	}

	grant := "authorization_code"
	if ar.GetGrantTypes().ExactOne("refresh_token") {
		grant = "refresh_token"
		if external {
			s.stats.refreshes.Add(1)
			if probe.graced {
				s.stats.graceReuses.Add(1)
			}
			if f := s.rotateHook(); f != nil {
				f(sessionUser(ar.GetSession()))
			}
		}
	} else if external {
		s.stats.authCodeExchanges.Add(1)
	}
	s.log.Info("tokens issued", zap.String("grant", grant), zap.String("client", clientID(ar)),
		zap.String("user", sessionUser(ar.GetSession())), zap.Bool("dropped", drop))
	if drop {
		dropConnection(w)
		return
	}
	s.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// dropConnection closes the client's connection without writing a
// response.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (not HTTP/1.1): this makes net/http abort the
		// response without logging.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// handleRevoke serves the RFC 7009 revocation endpoint. Revoking any token
// of a grant revokes the whole grant (every access and refresh token minted
// from the same authorization).
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	external := !isInternal(ctx)
	if external {
		if !s.wait(ctx) {
			return
		}
		if s.invalidClient() {
			s.stats.failedAuth.Add(1)
			writeInvalidClient(w)
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	s.tokenMu.Lock()
	err := s.provider.NewRevocationRequest(ctx, r)
	s.tokenMu.Unlock()
	if external {
		switch {
		case err == nil:
			s.stats.revocations.Add(1)
		case errors.Is(err, fosite.ErrInvalidClient):
			s.stats.failedAuth.Add(1)
		}
	}
	if err != nil {
		s.log.Info("revocation refused", zap.String("error", fosite.ErrorToRFC6749Error(err).ErrorField))
	} else {
		s.log.Info("revocation accepted")
	}
	writeRevocationResponse(w, err)
}

// writeRevocationResponse answers a revocation request as RFC 7009 section
// 2.2 says. fosite's WriteRevocationResponse is not used: it answers 200 to
// every error other than invalid_request and invalid_client, including a
// client revoking another client's token (which section 2.1 says must be
// refused) and storage failures (which section 2.2.1 answers 503).
func writeRevocationResponse(w http.ResponseWriter, err error) {
	if err == nil {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		return
	}
	rfc := fosite.ErrorToRFC6749Error(err)
	if errors.Is(err, fosite.ErrInvalidClient) {
		writeInvalidClient(w)
		return
	}
	status := rfc.CodeField
	if status < 400 || status > 599 {
		status = http.StatusBadRequest
	}
	writeJSONError(w, status, rfc.ErrorField, strings.TrimSpace(rfc.DescriptionField+" "+rfc.HintField))
}

// handleUserinfo serves the identity endpoint: with a live access token in
// an Authorization: Bearer header it answers {"sub": user, "name": …}.
func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		writeJSONError(w, http.StatusMethodNotAllowed, "invalid_request", "Use GET or POST.")
		return
	}
	if !isInternal(ctx) && !s.wait(ctx) {
		return
	}
	token, ok := bearerToken(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="userinfo"`)
		writeJSONError(w, http.StatusUnauthorized, "invalid_request", "A bearer token is required.")
		return
	}
	user, scopes, active := s.introspect(ctx, token)
	if !active {
		w.Header().Set("WWW-Authenticate", `Bearer realm="userinfo", error="invalid_token"`)
		writeJSONError(w, http.StatusUnauthorized, "invalid_token", "The access token is invalid, expired or revoked.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"sub":                user,
		"name":               s.displayName(user),
		"preferred_username": user,
		"scope":              strings.Join(scopes, " "),
	})
}

// displayName returns the display name of user.
func (s *Server) displayName(user string) string {
	if n := s.users[user]; n != "" {
		return n
	}
	return user
}

// bearerToken extracts the token of an Authorization: Bearer header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// handleMetadata serves RFC 8414 authorization server metadata.
func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	meta := map[string]any{
		"issuer":                                     s.issuer,
		"authorization_endpoint":                     s.AuthURL(),
		"token_endpoint":                             s.TokenURL(),
		"revocation_endpoint":                        s.RevokeURL(),
		"userinfo_endpoint":                          s.UserinfoURL(),
		"response_types_supported":                   []string{"code"},
		"grant_types_supported":                      []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      []string{"client_secret_basic", "client_secret_post", "none"},
		"revocation_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "none"},
	}
	if s.registration != nil {
		meta["registration_endpoint"] = s.url + PathRegister
		meta["scopes_supported"] = s.registration.Scopes
	}
	writeJSON(w, http.StatusOK, meta)
}

// clientID returns the client id of a request fosite may have left nil or
// without a client.
func clientID(r fosite.Requester) string {
	if r == nil || r.GetClient() == nil {
		return ""
	}
	return r.GetClient().GetID()
}

// errorCodeForStatus picks the OAuth error code FailNext answers with.
func errorCodeForStatus(status int) string {
	switch {
	case status == http.StatusServiceUnavailable:
		return "temporarily_unavailable"
	case status >= 500:
		return "server_error"
	case status == http.StatusUnauthorized:
		return "invalid_client"
	}
	return "invalid_request"
}

// writeInvalidClient answers 401 invalid_client as RFC 6749 section 5.2
// describes for failed client authentication.
func writeInvalidClient(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="oauth"`)
	writeJSONError(w, http.StatusUnauthorized, "invalid_client", "Client authentication failed.")
}

// writeJSONError writes an OAuth-style JSON error.
func writeJSONError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

// writeJSON writes v as a JSON response that must not be cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
