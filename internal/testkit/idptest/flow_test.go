package idptest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	agentClient  = "agent-app"
	agentSecret  = "agent-app-secret-for-tests"
	notesClient  = "onbehalf-notes"
	notesSecret  = "notes-client-secret-for-tests"
	otherClient  = "other-app"
	otherSecret  = "other-app-secret-for-tests"
	notesScopes  = "notes.read notes.write"
	userAlice    = "alice"
	userMallory  = "mallory"
	resourceNote = "https://api.notes.test/"
)

type world struct {
	idp *IdP
	as  *AppAS
	// client trusts both servers.
	client *http.Client
}

func newWorld(t *testing.T) *world {
	t.Helper()
	idp, err := StartIdP(IdPOptions{Clients: []Client{{ID: agentClient, Secret: agentSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idp.Close)
	as, err := StartAppAS(AppASOptions{IdP: idp, Clients: []AppClient{
		{ID: notesClient, Secret: notesSecret, Scopes: strings.Fields(notesScopes)},
		{ID: otherClient, Secret: otherSecret, Scopes: strings.Fields(notesScopes)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Close)
	// The agent client may get grants for the notes app, as notesClient.
	if err := idp.AllowApp(agentClient, as.Issuer(), notesClient); err != nil {
		t.Fatal(err)
	}
	pool := idp.http.certPool()
	pool.AppendCertsFromPEM(as.CACertPEM())
	tr := idp.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = pool
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return &world{idp: idp, as: as, client: c}
}

// post sends a token request with client_secret_basic and returns the
// status and decoded answer.
func (w *world) post(t *testing.T, endpoint, id, secret string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("decode answer: %v", err)
	}
	return resp.StatusCode, m
}

func exchangeForm(subject, subjectType, audience string) url.Values {
	return url.Values{
		"grant_type":           {GrantTokenExchange},
		"requested_token_type": {TokenTypeIDJAG},
		"subject_token":        {subject},
		"subject_token_type":   {subjectType},
		"audience":             {audience},
		"resource":             {resourceNote},
		"scope":                {notesScopes},
	}
}

func bearerForm(jag string) url.Values {
	return url.Values{"grant_type": {GrantJWTBearer}, "assertion": {jag}, "scope": {notesScopes}}
}

// claimsOf decodes a JWT's claims without verifying it.
func claimsOf(t *testing.T, tok string) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT")
	}
	var hdr, claims map[string]any
	for i, v := range []*map[string]any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return hdr, claims
}

// TestExchangeFlow runs the whole ID-JAG flow: an ID token and an access
// token exchanged at the IdP for ID-JAGs, each traded once at the app's
// authorization server for an access token its API accepts.
func TestExchangeFlow(t *testing.T) {
	w := newWorld(t)
	idTok, err := w.idp.IDToken(userAlice, TokenOptions{Audience: agentClient, Claims: map[string]any{"act": map[string]any{"sub": "agent-7"}}})
	if err != nil {
		t.Fatal(err)
	}
	hdr, claims := claimsOf(t, idTok)
	if hdr["typ"] != "JWT" || claims["iss"] != w.idp.Issuer() || claims["sub"] != userAlice || !slices.Contains(claims["aud"].([]any), any(agentClient)) {
		t.Fatalf("ID token header %v claims %v", hdr, claims)
	}
	atTok, err := w.idp.AccessToken(userAlice, TokenOptions{Audience: "https://sidecar.test", Claims: map[string]any{"client_id": agentClient}})
	if err != nil {
		t.Fatal(err)
	}
	if hdr, claims := claimsOf(t, atTok); hdr["typ"] != "at+jwt" || claims["client_id"] != agentClient {
		t.Fatalf("access token header %v claims %v", hdr, claims)
	}

	for _, tt := range []struct{ name, subject, typ string }{
		{"id token", idTok, TokenTypeIDToken},
		{"access token", atTok, TokenTypeAccess},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, m := w.post(t, w.idp.TokenURL(), agentClient, agentSecret, exchangeForm(tt.subject, tt.typ, w.as.Issuer()))
			if status != http.StatusOK || m["issued_token_type"] != TokenTypeIDJAG || m["token_type"] != "N_A" {
				t.Fatalf("exchange: %d %v", status, m)
			}
			jag := m["access_token"].(string)
			hdr, claims := claimsOf(t, jag)
			if hdr["typ"] != TypeIDJAG || claims["aud"] != w.as.Issuer() || claims["client_id"] != notesClient ||
				claims["sub"] != userAlice || claims["scope"] != notesScopes || claims["resource"] != resourceNote {
				t.Fatalf("ID-JAG header %v claims %v", hdr, claims)
			}

			status, m = w.post(t, w.as.TokenURL(), notesClient, notesSecret, bearerForm(jag))
			if status != http.StatusOK || m["token_type"] != "bearer" {
				t.Fatalf("jwt bearer grant: %d %v", status, m)
			}
			user, scopes, client, active := w.as.Introspect(context.Background(), m["access_token"].(string))
			if !active || user != userAlice || client != notesClient || strings.Join(scopes, " ") != notesScopes {
				t.Fatalf("introspect: %q %v %q %v", user, scopes, client, active)
			}
			// An ID-JAG is single use.
			if status, m := w.post(t, w.as.TokenURL(), notesClient, notesSecret, bearerForm(jag)); status == http.StatusOK {
				t.Fatalf("replayed ID-JAG accepted: %v", m)
			}
		})
	}
	if s := w.idp.Stats(); s.Exchanges != 2 {
		t.Errorf("idp stats %+v; want 2 exchanges", s)
	}
	if s := w.as.Stats(); s.Grants != 2 || s.Refusals != 2 {
		t.Errorf("as stats %+v; want 2 grants and 2 refusals", s)
	}
}

// TestExchangeRefusals covers what each server must refuse.
func TestExchangeRefusals(t *testing.T) {
	w := newWorld(t)
	idTok, _ := w.idp.IDToken(userAlice, TokenOptions{Audience: agentClient})
	otherAud, _ := w.idp.IDToken(userAlice, TokenOptions{Audience: "someone-else"})
	expired, _ := w.idp.IDToken(userAlice, TokenOptions{Audience: agentClient, IssuedAt: time.Now().Add(-2 * time.Hour)})
	malloryTok, _ := w.idp.IDToken(userMallory, TokenOptions{Audience: agentClient})
	w.idp.Deny(userMallory, true)

	for _, tt := range []struct {
		name, subject, typ, audience, code string
	}{
		{"ID token of another client", otherAud, TokenTypeIDToken, w.as.Issuer(), "invalid_grant"},
		{"expired ID token", expired, TokenTypeIDToken, w.as.Issuer(), "invalid_grant"},
		{"ID token as an access token", idTok, TokenTypeAccess, w.as.Issuer(), "invalid_grant"},
		{"unknown app", idTok, TokenTypeIDToken, "https://unknown-as.test", "invalid_target"},
		{"denied by policy", malloryTok, TokenTypeIDToken, w.as.Issuer(), "access_denied"},
		{"garbage", "not-a-jwt", TokenTypeIDToken, w.as.Issuer(), "invalid_grant"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, m := w.post(t, w.idp.TokenURL(), agentClient, agentSecret, exchangeForm(tt.subject, tt.typ, tt.audience))
			if status < 400 || m["error"] != tt.code {
				t.Errorf("got %d %v; want error %s", status, m, tt.code)
			}
		})
	}
	t.Run("wrong client secret", func(t *testing.T) {
		if status, m := w.post(t, w.idp.TokenURL(), agentClient, "wrong-secret-xyz", exchangeForm(idTok, TokenTypeIDToken, w.as.Issuer())); status != http.StatusUnauthorized || m["error"] != "invalid_client" {
			t.Errorf("got %d %v; want invalid_client", status, m)
		}
	})

	_, m := w.post(t, w.idp.TokenURL(), agentClient, agentSecret, exchangeForm(idTok, TokenTypeIDToken, w.as.Issuer()))
	jag := m["access_token"].(string)
	t.Run("ID-JAG presented by another client", func(t *testing.T) {
		if status, m := w.post(t, w.as.TokenURL(), otherClient, otherSecret, bearerForm(jag)); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
			t.Errorf("got %d %v; want invalid_grant", status, m)
		}
	})
	t.Run("ID token presented as an ID-JAG", func(t *testing.T) {
		if status, m := w.post(t, w.as.TokenURL(), notesClient, notesSecret, bearerForm(idTok)); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
			t.Errorf("got %d %v; want invalid_grant", status, m)
		}
	})
	t.Run("scope beyond the grant", func(t *testing.T) {
		f := bearerForm(jag)
		f.Set("scope", "notes.read notes.admin")
		if status, m := w.post(t, w.as.TokenURL(), notesClient, notesSecret, f); status != http.StatusBadRequest || m["error"] != "invalid_scope" {
			t.Errorf("got %d %v; want invalid_scope", status, m)
		}
	})
	t.Run("JWT bearer off", func(t *testing.T) {
		w.as.SetJWTBearer(false)
		defer w.as.SetJWTBearer(true)
		if status, m := w.post(t, w.as.TokenURL(), notesClient, notesSecret, bearerForm(jag)); status != http.StatusBadRequest || m["error"] != "unsupported_grant_type" {
			t.Errorf("got %d %v; want unsupported_grant_type", status, m)
		}
	})
	t.Run("injected failure", func(t *testing.T) {
		w.idp.FailNext(1, http.StatusServiceUnavailable)
		if status, m := w.post(t, w.idp.TokenURL(), agentClient, agentSecret, exchangeForm(idTok, TokenTypeIDToken, w.as.Issuer())); status != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" {
			t.Errorf("got %d %v; want 503 temporarily_unavailable", status, m)
		}
	})
}

// TestKeyRotation rotates the IdP's keys: tokens of a removed key are no
// longer accepted, and the app's server follows the JWKS.
func TestKeyRotation(t *testing.T) {
	w := newWorld(t)
	first := w.idp.KeyIDs()[0]
	old, _ := w.idp.IDToken(userAlice, TokenOptions{Audience: agentClient})
	second, err := w.idp.RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := w.idp.IDToken(userAlice, TokenOptions{Audience: agentClient})
	if hdr, _ := claimsOf(t, fresh); hdr["kid"] != second {
		t.Fatalf("new token signed by %v; want %s", hdr["kid"], second)
	}
	for _, tok := range []string{old, fresh} {
		if status, m := w.post(t, w.idp.TokenURL(), agentClient, agentSecret, exchangeForm(tok, TokenTypeIDToken, w.as.Issuer())); status != http.StatusOK {
			t.Fatalf("exchange before removal: %d %v", status, m)
		}
	}
	w.idp.RemoveKey(first)
	if status, _ := w.post(t, w.idp.TokenURL(), agentClient, agentSecret, exchangeForm(old, TokenTypeIDToken, w.as.Issuer())); status == http.StatusOK {
		t.Fatalf("token of a removed key exchanged")
	}
	_, m := w.post(t, w.idp.TokenURL(), agentClient, agentSecret, exchangeForm(fresh, TokenTypeIDToken, w.as.Issuer()))
	if status, m := w.post(t, w.as.TokenURL(), notesClient, notesSecret, bearerForm(m["access_token"].(string))); status != http.StatusOK {
		t.Fatalf("grant with the new key: %d %v", status, m)
	}
}
