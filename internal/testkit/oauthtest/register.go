package oauthtest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
	"go.uber.org/zap"
)

// PathRegister is the RFC 7591 dynamic client registration endpoint, served
// when Options.Registration is set.
const PathRegister = "/register"

// maxRegistrationBytes bounds a registration request: client metadata is a
// few hundred bytes.
const maxRegistrationBytes = 16 << 10

// Registration enables RFC 7591 dynamic client registration: anyone who can
// reach the server may register a client, as MCP servers' authorization
// servers commonly allow.
type Registration struct {
	// Scopes are the scopes a registered client may request. A
	// registration naming no scope gets all of them; one naming others is
	// refused (invalid_client_metadata).
	Scopes []string
}

// registrationRequest is the client metadata of RFC 7591 section 2 that
// this server reads; other members are ignored, as the RFC allows.
type registrationRequest struct {
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientName              string   `json:"client_name"`
	Scope                   string   `json:"scope"`
	ApplicationType         string   `json:"application_type"`
}

// registrationResponse is the RFC 7591 section 3.2.1 answer.
type registrationResponse struct {
	ClientID                string   `json:"client_id"`
	ClientSecret            string   `json:"client_secret,omitempty"`
	ClientIDIssuedAt        int64    `json:"client_id_issued_at"`
	ClientSecretExpiresAt   *int64   `json:"client_secret_expires_at,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientName              string   `json:"client_name,omitempty"`
	Scope                   string   `json:"scope,omitempty"`
}

// handleRegister serves RFC 7591 registration: a JSON POST of client
// metadata registers a new client (confidential with client_secret_basic or
// client_secret_post, or public with "none") and answers 201 with its
// credentials. Invalid metadata is answered 400 with invalid_redirect_uri
// or invalid_client_metadata (section 3.2.2).
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSONError(w, http.StatusMethodNotAllowed, "invalid_request", "Use POST.")
		return
	}
	if !s.wait(r.Context()) {
		return
	}
	var req registrationRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRegistrationBytes))
	if err := dec.Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_client_metadata", "The body must be a JSON object of client metadata.")
		return
	}
	resp, code, msg := s.register(req)
	if code != "" {
		s.log.Info("registration refused", zap.String("error", code))
		status := http.StatusBadRequest
		writeJSONError(w, status, code, msg)
		return
	}
	s.stats.registrations.Add(1)
	s.log.Info("client registered", zap.String("client", resp.ClientID), zap.String("auth_method", resp.TokenEndpointAuthMethod))
	writeJSON(w, http.StatusCreated, resp)
}

// register validates req and registers the client; it returns the answer,
// or an RFC 7591 error code and description.
func (s *Server) register(req registrationRequest) (*registrationResponse, string, string) {
	reg := s.registration
	if reg == nil {
		return nil, "invalid_client_metadata", "Registration is not offered."
	}
	if len(req.RedirectURIs) == 0 {
		return nil, "invalid_redirect_uri", "redirect_uris is required."
	}
	for _, u := range req.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return nil, "invalid_redirect_uri", "A redirect URI " + err.Error() + "."
		}
	}
	method := req.TokenEndpointAuthMethod
	if method == "" {
		method = "client_secret_basic" // RFC 7591 section 2
	}
	if !slices.Contains([]string{"client_secret_basic", "client_secret_post", "none"}, method) {
		return nil, "invalid_client_metadata", "token_endpoint_auth_method must be client_secret_basic, client_secret_post or none."
	}
	for _, g := range req.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return nil, "invalid_client_metadata", "Only the authorization_code and refresh_token grant types are offered."
		}
	}
	for _, rt := range req.ResponseTypes {
		if rt != "code" {
			return nil, "invalid_client_metadata", "Only the code response type is offered."
		}
	}
	scopes := slices.Clone(reg.Scopes)
	if req.Scope != "" {
		scopes = strings.Fields(req.Scope)
		for _, sc := range scopes {
			if !slices.Contains(reg.Scopes, sc) {
				return nil, "invalid_client_metadata", "A requested scope is not offered to registered clients."
			}
		}
	}
	c := Client{
		ID:           "dcr-" + rand.Text(),
		RedirectURIs: slices.Clone(req.RedirectURIs),
		Scopes:       scopes,
		Public:       method == "none",
	}
	if !c.Public {
		c.Secret = rand.Text() + rand.Text()
	}
	if err := c.validate(); err != nil {
		return nil, "invalid_client_metadata", "The client metadata is not usable."
	}
	s.registerClient(c)
	resp := &registrationResponse{
		ClientID: c.ID, ClientSecret: c.Secret, ClientIDIssuedAt: time.Now().Unix(),
		RedirectURIs: c.RedirectURIs, TokenEndpointAuthMethod: method,
		GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
		ClientName: req.ClientName, Scope: strings.Join(scopes, " "),
	}
	if !c.Public {
		never := int64(0)
		resp.ClientSecretExpiresAt = &never
	}
	return resp, "", ""
}

// checkResource validates an RFC 8707 resource indicator: an absolute URI
// without a fragment, one of Options.Resources.
func (s *Server) checkResource(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Fragment != "" {
		return fmt.Errorf("the resource must be an absolute URI without a fragment")
	}
	if !slices.Contains(s.resources, raw) {
		return fmt.Errorf("this server issues no tokens for that resource")
	}
	return nil
}

// errInvalidTarget is RFC 8707's refusal of a resource indicator.
func errInvalidTarget(hint string) error {
	return &fosite.RFC6749Error{ErrorField: "invalid_target", DescriptionField: "The requested resource is invalid, unknown, or malformed.", HintField: hint, CodeField: http.StatusBadRequest}
}

// checkTokenResources refuses a token request whose resource parameters
// (RFC 8707 section 2.2) are not among those the grant was issued for.
func checkTokenResources(form url.Values, granted []string) error {
	for _, r := range form["resource"] {
		if !slices.Contains(granted, r) {
			return errInvalidTarget("The resource was not part of the authorization.")
		}
	}
	return nil
}
