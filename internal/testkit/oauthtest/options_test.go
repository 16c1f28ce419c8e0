package oauthtest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

func TestOptionsValidate(t *testing.T) {
	good := Client{ID: "app", Secret: "secret-123", RedirectURIs: []string{"https://app.example/cb"}, Scopes: []string{"read"}}
	tests := []struct {
		name string
		o    Options
		want []string // "path: message" of each problem
	}{
		{"zero", Options{}, nil},
		{"test options", testOptions(), nil},
		{"everything set", Options{
			Clients:         []Client{good},
			AccessTokenTTL:  time.Minute,
			RefreshTokenTTL: time.Hour,
			Users:           map[string]string{"alice@example.com": "Alice"},
			Issuer:          "https://issuer.example",
			Addr:            "[::1]:0",
		}, nil},
		{"bad fields", Options{
			AccessTokenTTL:    -time.Second,
			RefreshTokenTTL:   -time.Second,
			RefreshReuseGrace: -time.Second,
			Issuer:            "http://issuer.example",
			Addr:              "0.0.0.0:8080",
			Users:             map[string]string{"bad user": ""},
		}, []string{
			"access_token_ttl: must not be negative",
			"refresh_token_ttl: must not be negative",
			"refresh_reuse_grace: must not be negative",
			"issuer: must be an https URL without query or fragment",
			"addr: must be a loopback address",
			`users["bad user"]: may contain only letters, digits and . _ @ + -`,
		}},
		{"bad clients", Options{Clients: []Client{
			good,
			{ID: "app", Secret: "short", Scopes: []string{"a b", ""}},
			{ID: "", Public: true, Secret: "secret-123", RedirectURIs: []string{
				"http://evil.example/cb", "https://app.example/cb#frag", "ftp://x/y", "/relative",
			}},
		}}, []string{
			"clients[1].secret: must be at least 8 characters for a confidential client",
			"clients[1].redirect_uris: must list at least one URI",
			"clients[1].scopes[0]: must be a non-empty RFC 6749 scope token",
			"clients[1].scopes[1]: must be a non-empty RFC 6749 scope token",
			`clients[1].id: duplicate client id "app"`,
			"clients[2].id: must not be empty",
			"clients[2].secret: must be empty for a public client",
			"clients[2].redirect_uris[0]: http is only allowed on loopback hosts",
			"clients[2].redirect_uris[1]: must not have a fragment",
			"clients[2].redirect_uris[2]: scheme must be https or http",
			"clients[2].redirect_uris[3]: must be an absolute URL",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			var got []string
			for _, e := range config.Flatten(err) {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Errorf("problem %v is not a *config.FieldError", e)
				}
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStartRejectsInvalidOptions(t *testing.T) {
	_, err := Start(Options{Addr: "192.0.2.1:0"})
	if err == nil || !strings.Contains(err.Error(), "addr: must be a loopback address") {
		t.Errorf("Start error %v; want the addr problem", err)
	}
}

func TestAddClient(t *testing.T) {
	s := newServer(t, Options{})
	if err := s.AddClient(Client{ID: "late", Public: true}); err == nil {
		t.Errorf("AddClient without redirect URIs succeeded")
	}
	if _, err := s.IssueGrant("late", "alice", nil); !errors.Is(err, ErrUnknownClient) {
		t.Errorf("IssueGrant for a refused client: %v; want ErrUnknownClient", err)
	}
	if err := s.AddClient(Client{ID: "late", Public: true, RedirectURIs: []string{redirectURI}, Scopes: []string{"x"}}); err != nil {
		t.Fatalf("AddClient: %v", err)
	}
	if _, err := s.IssueGrant("late", "alice", []string{"x"}); err != nil {
		t.Errorf("IssueGrant for an added client: %v", err)
	}
}
