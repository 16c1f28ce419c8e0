package idptest

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v3"
	josejwt "github.com/go-jose/go-jose/v3/jwt"
	"github.com/ory/fosite"
)

// exchangeHandler is an RFC 8693 token-exchange handler for fosite's token
// endpoint that issues ID-JAGs. fosite has already authenticated the client
// when HandleTokenEndpointRequest runs; the handler checks the request,
// verifies the subject token (one of this IdP's own ID tokens or access
// tokens, issued to the requesting client), applies the IdP's policy, and
// records in the session what PopulateTokenEndpointResponse mints.
type exchangeHandler struct {
	idp *IdP
}

var _ fosite.TokenEndpointHandler = (*exchangeHandler)(nil)

// Session keys of an accepted exchange.
const (
	sessAudience = "jag_audience"
	sessClientID = "jag_client_id"
	sessResource = "jag_resource"
)

func (h *exchangeHandler) CanHandleTokenEndpointRequest(_ context.Context, ar fosite.AccessRequester) bool {
	return ar.GetGrantTypes().ExactOne(GrantTokenExchange)
}

// CanSkipClientAuth is false: the draft requires a confidential client.
func (h *exchangeHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

func (h *exchangeHandler) HandleTokenEndpointRequest(ctx context.Context, ar fosite.AccessRequester) error {
	client := ar.GetClient()
	if !client.GetGrantTypes().Has(GrantTokenExchange) {
		return fosite.ErrUnauthorizedClient.WithHint("The client may not exchange tokens.")
	}
	form := ar.GetRequestForm()
	if form.Get("requested_token_type") != TokenTypeIDJAG {
		return fosite.ErrInvalidRequest.WithHint("Only ID-JAGs (urn:ietf:params:oauth:token-type:id-jag) are issued.")
	}
	subject, subjectType := form.Get("subject_token"), form.Get("subject_token_type")
	if subject == "" || subjectType == "" {
		return fosite.ErrInvalidRequest.WithHint("subject_token and subject_token_type are required.")
	}
	user, err := h.idp.verifySubject(subject, subjectType, client.GetID())
	if err != nil {
		return err
	}
	audiences := form["audience"]
	if len(audiences) != 1 || audiences[0] == "" {
		return fosite.ErrInvalidRequest.WithHint("Exactly one audience (the app's authorization server) is required.")
	}
	appClient, ok := h.idp.appClient(client.GetID(), audiences[0])
	if !ok {
		return rfcError("invalid_target", 400, "This client may not get grants for that authorization server.")
	}
	if h.idp.isDenied(user) {
		return fosite.ErrAccessDenied.WithHint("The IdP's policy does not let this user use this app.")
	}
	for _, s := range ar.GetRequestedScopes() {
		ar.GrantScope(s)
	}
	sess := ar.GetSession().(*fosite.DefaultSession)
	sess.Subject = user
	sess.Extra[sessAudience] = audiences[0]
	sess.Extra[sessClientID] = appClient
	sess.Extra[sessResource] = form.Get("resource")
	return nil
}

func (h *exchangeHandler) PopulateTokenEndpointResponse(_ context.Context, ar fosite.AccessRequester, resp fosite.AccessResponder) error {
	if !h.CanHandleTokenEndpointRequest(context.Background(), ar) {
		return fosite.ErrUnknownRequest
	}
	sess := ar.GetSession().(*fosite.DefaultSession)
	now := time.Now().UTC()
	claims := map[string]any{
		"iss":       h.idp.Issuer(),
		"sub":       sess.Subject,
		"aud":       sess.Extra[sessAudience],
		"client_id": sess.Extra[sessClientID],
		"jti":       randomID(),
		"iat":       now.Unix(),
		"exp":       now.Add(h.idp.jagTTL).Unix(),
	}
	if scopes := ar.GetGrantedScopes(); len(scopes) > 0 {
		claims["scope"] = strings.Join(scopes, " ")
	}
	if r, _ := sess.Extra[sessResource].(string); r != "" {
		claims["resource"] = r
	}
	jag, err := h.idp.Sign(TypeIDJAG, claims, "")
	if err != nil {
		return fosite.ErrServerError.WithWrap(err)
	}
	resp.SetAccessToken(jag)
	resp.SetTokenType("N_A")
	resp.SetExtra("issued_token_type", TokenTypeIDJAG)
	resp.SetExpiresIn(h.idp.jagTTL)
	resp.SetScopes(ar.GetGrantedScopes())
	return nil
}

// verifySubject checks a subject token as the draft asks of the IdP: one of
// its own tokens, signed by a published key, not expired, and issued to the
// client that presents it (an ID token's aud, an access token's client_id).
// It returns the user (sub).
func (p *IdP) verifySubject(raw, typ, clientID string) (string, error) {
	bad := func(hint string) error { return fosite.ErrInvalidGrant.WithHint(hint) }
	tok, err := josejwt.ParseSigned(raw)
	if err != nil || len(tok.Headers) != 1 {
		return "", bad("The subject token is not a signed JWT.")
	}
	hdr := tok.Headers[0]
	key, err := p.key(hdr.KeyID)
	if err != nil || hdr.KeyID == "" {
		return "", bad("The subject token is not signed by a current key of this IdP.")
	}
	var std josejwt.Claims
	var extra struct {
		ClientID string `json:"client_id"`
	}
	if err := tok.Claims(key.Public().Key, &std, &extra); err != nil {
		return "", bad("The subject token's signature does not verify.")
	}
	if err := std.ValidateWithLeeway(josejwt.Expected{Issuer: p.Issuer(), Time: time.Now()}, time.Minute); err != nil {
		return "", bad("The subject token is expired or not from this IdP.")
	}
	ttyp, _ := hdr.ExtraHeaders[jose.HeaderType].(string)
	switch typ {
	case TokenTypeIDToken:
		if ttyp != "" && !strings.EqualFold(ttyp, "JWT") {
			return "", bad("The subject token is not an ID token.")
		}
		if !slices.Contains(std.Audience, clientID) {
			return "", bad("The ID token was not issued to this client.")
		}
	case TokenTypeAccess:
		if !strings.EqualFold(strings.TrimPrefix(ttyp, "application/"), "at+jwt") {
			return "", bad("The subject token is not an RFC 9068 access token.")
		}
		if extra.ClientID != clientID {
			return "", bad("The access token was not issued to this client.")
		}
	default:
		return "", fosite.ErrInvalidRequest.WithHint("subject_token_type must be an ID token or an access token.")
	}
	if std.Subject == "" {
		return "", bad("The subject token has no subject.")
	}
	return std.Subject, nil
}
