package oauth

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// echoedSecret is a refresh token that a badly written provider echoes back
// in an error body; it must never reach an error text.
const echoedSecret = "rt-echoed-in-error-body-0123456789"

// tlsServer starts an httptest TLS server with h and returns it with a
// Provider pointed at it.
func tlsServer(t *testing.T, h http.HandlerFunc, mod func(c *ProviderConfig)) (*httptest.Server, *Provider) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c := DefaultProviderConfig()
	c.TokenURL = srv.URL + "/token"
	c.ClientID = testClientID
	c.ClientSecretFile = "/run/secrets/acme"
	c.AuthStyle = AuthStyleHeader
	c.Timeout = 2 * time.Second
	if mod != nil {
		mod(&c)
	}
	p, err := NewProvider(testProvider, c, testSecret, testHTTPClient(t, pool))
	if err != nil {
		t.Fatalf("NewProvider: %v", err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return srv, p
}

func writeBody(w http.ResponseWriter, status int, contentType, body string) {
	if contentType != "" {
		w.Header().Set("Content-Type", contentType)
	}
	w.WriteHeader(status)
	w.Write([]byte(body))
}

func TestRefreshErrorClassification(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    error
	}{
		{"invalid_grant", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 400, "application/json", `{"error":"invalid_grant","error_description":"gone"}`)
		}, errInvalidGrant},
		{"invalid_grant with status 200", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 200, "application/json", `{"error":"invalid_grant"}`)
		}, errInvalidGrant},
		{"invalid_grant form-encoded", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 400, "application/x-www-form-urlencoded", `error=invalid_grant`)
		}, errInvalidGrant},
		{"invalid_client", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 401, "application/json", `{"error":"invalid_client"}`)
		}, injector.ErrProviderMisconfigured},
		{"unauthorized_client", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 400, "application/json", `{"error":"unauthorized_client"}`)
		}, injector.ErrProviderMisconfigured},
		{"unknown code", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 400, "application/json", `{"error":"invalid_refresh_token"}`)
		}, injector.ErrProviderMisconfigured},
		{"unknown code with 503", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 503, "application/json", `{"error":"overloaded"}`)
		}, injector.ErrProviderUnavailable},
		{"server_error", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 500, "application/json", `{"error":"server_error"}`)
		}, injector.ErrProviderUnavailable},
		{"temporarily_unavailable", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 503, "application/json", `{"error":"temporarily_unavailable"}`)
		}, injector.ErrProviderUnavailable},
		{"502 html", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 502, "text/html", `<html>bad gateway</html>`)
		}, injector.ErrProviderUnavailable},
		{"429 empty", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 429, "", ``)
		}, injector.ErrProviderUnavailable},
		{"404", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 404, "text/plain", `not found`)
		}, injector.ErrProviderMisconfigured},
		{"400 echoing the request", func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			writeBody(w, 400, "text/html", "bad request: "+r.PostForm.Encode())
		}, injector.ErrProviderMisconfigured},
		{"200 garbage", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 200, "application/json", `{not json`)
		}, injector.ErrProviderUnavailable},
		{"200 without access token", func(w http.ResponseWriter, r *http.Request) {
			writeBody(w, 200, "application/json", `{"token_type":"bearer"}`)
		}, injector.ErrProviderUnavailable},
		{"connection dropped", func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}, injector.ErrProviderUnavailable},
		{"no answer within the timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(time.Second):
			}
		}, injector.ErrProviderUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, p := tlsServer(t, tt.handler, func(c *ProviderConfig) { c.Timeout = 300 * time.Millisecond })
			tok, err := p.refresh(context.Background(), echoedSecret)
			if tok != nil || !errors.Is(err, tt.want) {
				t.Fatalf("refresh = (%v, %v); want error %v", tok != nil, err, tt.want)
			}
			wantOneClass(t, err, []error{errInvalidGrant, injector.ErrProviderMisconfigured, injector.ErrProviderUnavailable}, echoedSecret, testSecret)
		})
	}
}

func TestRefreshDoesNotFollowRedirects(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		writeBody(w, 200, "application/json", `{"access_token":"stolen","token_type":"bearer"}`)
	}))
	defer target.Close()
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		_, p := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/token", status)
		}, nil)
		_, err := p.refresh(context.Background(), echoedSecret)
		if !errors.Is(err, injector.ErrProviderMisconfigured) {
			t.Errorf("status %d: error %v; want ErrProviderMisconfigured", status, err)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("redirect target hit %d times; want 0", hits.Load())
	}
}

func TestRefreshAuthStyles(t *testing.T) {
	tests := []struct {
		style     AuthStyle
		wantBasic bool
	}{
		{AuthStyleHeader, true},
		{AuthStyleParams, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.style), func(t *testing.T) {
			var requests atomic.Int64
			_, p := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if err := r.ParseForm(); err != nil {
					writeBody(w, 400, "application/json", `{"error":"invalid_request"}`)
					return
				}
				id, secret, basic := r.BasicAuth()
				if !basic {
					id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
				}
				okStyle := basic == tt.wantBasic && (basic || r.Header.Get("Authorization") == "")
				if !okStyle || id != testClientID || secret != testSecret ||
					r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") != "rt-1" {
					writeBody(w, 401, "application/json", `{"error":"invalid_client"}`)
					return
				}
				writeBody(w, 200, "application/json", `{"access_token":"at-2","refresh_token":"rt-2","token_type":"bearer","expires_in":3600,"scope":"read write"}`)
			}, func(c *ProviderConfig) { c.AuthStyle = tt.style })
			tok, err := p.refresh(context.Background(), "rt-1")
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if tok.AccessToken != "at-2" || tok.RefreshToken != "rt-2" {
				t.Errorf("tokens = %q/%q; want at-2/rt-2", tok.AccessToken, tok.RefreshToken)
			}
			if d := time.Until(tok.Expiry); d < 59*time.Minute || d > time.Hour {
				t.Errorf("expiry in %s; want about an hour", d)
			}
			g := merge(&store.Grant{Provider: testProvider, User: testUser, RefreshToken: "rt-1", Generation: 4}, tok)
			if g.Generation != 5 || g.RefreshToken != "rt-2" || strings.Join(g.Scopes, " ") != "read write" || g.Status != store.StatusActive {
				t.Errorf("merged grant = %v; want generation 5, rt-2, scopes read write, active", g)
			}
			if requests.Load() != 1 {
				t.Errorf("requests = %d; want 1", requests.Load())
			}
		})
	}
}

func TestMergeKeepsRefreshTokenWhenNotRotated(t *testing.T) {
	_, p := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeBody(w, 200, "application/json", `{"access_token":"at-2","token_type":"bearer","expires_in":60}`)
	}, nil)
	tok, err := p.refresh(context.Background(), "rt-1")
	if err != nil {
		t.Fatal(err)
	}
	g := merge(&store.Grant{RefreshToken: "rt-1", Scopes: []string{"a"}, TokenType: "Bearer"}, tok)
	if g.RefreshToken != "rt-1" || g.AccessToken != "at-2" || strings.Join(g.Scopes, " ") != "a" {
		t.Errorf("merged grant = %v; want the old refresh token and scopes kept", g)
	}
}

func TestNewProviderRefusals(t *testing.T) {
	valid := DefaultProviderConfig()
	valid.TokenURL = "https://provider.example/token"
	valid.ClientID = "id"
	valid.ClientSecretFile = "/run/secrets/x"
	valid.AuthStyle = AuthStyleHeader
	proxied := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
	tests := []struct {
		name     string
		provider string
		cfg      ProviderConfig
		secret   string
		client   *http.Client
		want     error
	}{
		{"bad name", "Bad/Name", valid, "s", nil, store.ErrInvalidName},
		{"empty secret", "acme", valid, "", nil, ErrEmptySecret},
		{"proxy transport", "acme", valid, "s", proxied, ErrProxyTransport},
		{"default transport", "acme", valid, "s", &http.Client{}, ErrProxyTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewProvider(tt.provider, tt.cfg, tt.secret, tt.client); !errors.Is(err, tt.want) {
				t.Errorf("error %v; want %v", err, tt.want)
			}
		})
	}
	if _, err := NewProvider("acme", DefaultProviderConfig(), "s", nil); err == nil || !strings.Contains(err.Error(), "token_url") {
		t.Errorf("invalid config: error %v; want the config problems", err)
	}

	// A caller's client is copied and made to refuse redirects.
	own := &http.Client{Transport: &http.Transport{}}
	p, err := NewProvider("acme", valid, "s", own)
	if err != nil {
		t.Fatal(err)
	}
	if own.CheckRedirect != nil || p.HTTPClient().CheckRedirect == nil {
		t.Errorf("the provider must use its own copy of the client with redirects refused")
	}
	oc := p.OAuth2Config()
	if oc.Endpoint.AuthStyle != oauth2.AuthStyleInHeader || oc.ClientSecret != "s" || oc.Endpoint.TokenURL != valid.TokenURL {
		t.Errorf("OAuth2Config = %+v; want the provider's endpoint and credentials", oc.Endpoint)
	}
}

// testHTTPClient returns NewHTTPClient(roots) for a test.
func testHTTPClient(t testing.TB, roots *x509.CertPool) *http.Client {
	t.Helper()
	c, err := NewHTTPClient(roots)
	if err != nil {
		t.Fatalf("NewHTTPClient: %v", err)
	}
	return c
}

func TestNewHTTPClient(t *testing.T) {
	c := testHTTPClient(t, nil)
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport is %T; want *http.Transport", c.Transport)
	}
	if tr.Proxy != nil {
		t.Errorf("transport has a proxy function; want none")
	}
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.InsecureSkipVerify || tr.TLSClientConfig.MinVersion < 0x0303 {
		t.Errorf("TLS config %+v; want verified TLS 1.2+", tr.TLSClientConfig)
	}
	req := &http.Request{URL: &url.URL{Scheme: "https", Host: "x"}}
	if err := c.CheckRedirect(req, nil); !errors.Is(err, http.ErrUseLastResponse) {
		t.Errorf("CheckRedirect = %v; want http.ErrUseLastResponse", err)
	}
	// Untrusted server certificates are refused.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	untrusting := testHTTPClient(t, x509.NewCertPool())
	defer untrusting.CloseIdleConnections()
	resp, err := untrusting.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Errorf("request to an untrusted server succeeded")
	}
}

// wantOneClass fails t unless err wraps exactly one of classes and its
// text holds none of secrets.
func wantOneClass(t *testing.T, err error, classes []error, secrets ...string) {
	t.Helper()
	n := 0
	for _, s := range classes {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("error %v wraps %d of the %d classes; want exactly 1", err, n, len(classes))
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error text %q leaks a secret", err)
		}
	}
}
