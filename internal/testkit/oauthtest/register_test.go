package oauthtest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"
)

const testResource = "https://mcp.example.test/mcp"

// TestDynamicRegistrationAndResource registers a client with the MCP Go
// SDK's RFC 7591 client, runs the code flow with an RFC 8707 resource
// indicator, and checks that the tokens (also after a refresh) are issued
// for that resource.
func TestDynamicRegistrationAndResource(t *testing.T) {
	s := newServer(t, Options{Registration: &Registration{Scopes: []string{"mcp:tools"}}, Resources: []string{testResource}})
	ctx := clientCtx(s)

	var meta map[string]any
	resp, err := s.Client().Get(s.URL() + PathMetadata)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if meta["registration_endpoint"] != s.URL()+PathRegister {
		t.Fatalf("metadata registration_endpoint %v", meta["registration_endpoint"])
	}

	reg, err := oauthex.RegisterClient(ctx, s.URL()+PathRegister, &oauthex.ClientRegistrationMetadata{
		RedirectURIs: []string{redirectURI}, ClientName: "onbehalf connect", TokenEndpointAuthMethod: "client_secret_basic",
		GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
	}, s.Client())
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if reg.ClientID == "" || reg.ClientSecret == "" || s.Stats().Registrations != 1 {
		t.Fatalf("registration %+v, %d registrations", reg, s.Stats().Registrations)
	}

	ep := s.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	cfg := &oauth2.Config{ClientID: reg.ClientID, ClientSecret: reg.ClientSecret, Endpoint: ep, RedirectURL: redirectURI, Scopes: []string{"mcp:tools"}}
	verifier := oauth2.GenerateVerifier()
	q := approve(t, s, cfg.AuthCodeURL("state-0001", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", testResource)), "alice")
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", testResource))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	ti, ok := s.IntrospectToken(tok.AccessToken)
	if !ok || ti.User != "alice" || ti.Client != reg.ClientID || !slices.Equal(ti.Audience, []string{testResource}) {
		t.Fatalf("token info %+v, active %v; want alice's token for %s", ti, ok, testResource)
	}
	tok2, err := refresh(s, cfg, tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if ti, _ := s.IntrospectToken(tok2.AccessToken); !slices.Equal(ti.Audience, []string{testResource}) {
		t.Errorf("refreshed token audience %v; want the resource kept", ti.Audience)
	}

	// A resource the server does not serve is refused at the authorization
	// endpoint (redirected with invalid_target)...
	noFollow := *s.Client()
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = noFollow.Get(cfg.AuthCodeURL("state-0002", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", "https://other.test/mcp")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "error=invalid_target") {
		t.Errorf("authorize with an unknown resource: status %d, Location %s; want a redirect with invalid_target", resp.StatusCode, loc)
	}
	// ...and one the grant was not issued for, at the token endpoint.
	verifier = oauth2.GenerateVerifier()
	q = approve(t, s, cfg.AuthCodeURL("state-0003", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", testResource)), "alice")
	_, err = cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", "https://other.test/mcp"))
	if errorCode(err) != "invalid_target" {
		t.Errorf("exchange for another resource: %v; want invalid_target", err)
	}
}

func TestRegistrationRefusals(t *testing.T) {
	s := newServer(t, Options{Registration: &Registration{Scopes: []string{"mcp:tools"}}})
	for _, tt := range []struct{ name, body, code string }{
		{"no redirect", `{"client_name":"x"}`, "invalid_redirect_uri"},
		{"http redirect off loopback", `{"redirect_uris":["http://evil.example/cb"]}`, "invalid_redirect_uri"},
		{"fragment", `{"redirect_uris":["https://app.example/cb#x"]}`, "invalid_redirect_uri"},
		{"auth method", `{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}`, "invalid_client_metadata"},
		{"grant type", `{"redirect_uris":["https://app.example/cb"],"grant_types":["password"]}`, "invalid_client_metadata"},
		{"scope", `{"redirect_uris":["https://app.example/cb"],"scope":"admin"}`, "invalid_client_metadata"},
		{"not JSON", `redirect_uris=x`, "invalid_client_metadata"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Client().Post(s.URL()+PathRegister, "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct{ Error string }
			json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != http.StatusBadRequest || e.Error != tt.code {
				t.Errorf("status %d error %q; want 400 %s", resp.StatusCode, e.Error, tt.code)
			}
		})
	}
	// Without Options.Registration there is no endpoint.
	off := newServer(t, Options{})
	resp, err := off.Client().Post(off.URL()+PathRegister, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("registration while disabled: status %d; want 404", resp.StatusCode)
	}
}
