package oauthtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/html"
	"golang.org/x/oauth2"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Clients registered by newServer.
const (
	confID      = "conf-app"
	confSecret  = "conf-secret-0123456789"
	publicID    = "public-app"
	otherID     = "other-app"
	otherSecret = "other-secret-0123456789"
	redirectURI = "http://127.0.0.1/callback"
)

var testScopes = []string{"read", "write", "chat:write"}

// testOptions returns options with a confidential, a public and a second
// confidential client.
func testOptions() Options {
	return Options{
		Clients: []Client{
			{ID: confID, Secret: confSecret, RedirectURIs: []string{redirectURI}, Scopes: testScopes},
			{ID: publicID, Public: true, RedirectURIs: []string{redirectURI}, Scopes: testScopes},
			{ID: otherID, Secret: otherSecret, RedirectURIs: []string{redirectURI}, Scopes: testScopes},
		},
	}
}

// newServer starts a server with o and closes it when the test ends.
func newServer(t testing.TB, o Options) *Server {
	t.Helper()
	s, err := Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// oauthConfig returns an x/oauth2 config for one of the test clients.
func oauthConfig(s *Server, clientID string, style oauth2.AuthStyle) *oauth2.Config {
	secret := ""
	switch clientID {
	case confID:
		secret = confSecret
	case otherID:
		secret = otherSecret
	}
	ep := s.Endpoint()
	ep.AuthStyle = style
	return &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: secret,
		Endpoint:     ep,
		RedirectURL:  redirectURI,
		Scopes:       []string{"read", "chat:write"},
	}
}

// clientCtx returns a context making x/oauth2 use the server's TLS client.
func clientCtx(s *Server) context.Context {
	return context.WithValue(context.Background(), oauth2.HTTPClient, s.Client())
}

// refresh runs a refresh_token grant through x/oauth2.
func refresh(s *Server, cfg *oauth2.Config, refreshToken string) (*oauth2.Token, error) {
	return cfg.TokenSource(clientCtx(s), &oauth2.Token{RefreshToken: refreshToken}).Token()
}

// errorCode returns the OAuth error code of an x/oauth2 error, or "" when
// the error is not an OAuth error response.
func errorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// consentForm is a consent page's form as a browser would submit it.
type consentForm struct {
	action string
	values url.Values
	page   string
}

// getConsent fetches authURL and parses the consent form.
func getConsent(t *testing.T, s *Server, authURL string) consentForm {
	t.Helper()
	resp, err := s.Client().Get(authURL)
	if err != nil {
		t.Fatalf("GET consent page: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET consent page: status %d; want 200; body %s", resp.StatusCode, body)
	}
	doc, err := html.Parse(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse consent page: %v", err)
	}
	f := consentForm{values: url.Values{}, page: string(body)}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				f.action = attr(n, "action")
			case "input":
				f.values.Add(attr(n, "name"), attr(n, "value"))
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if f.action == "" {
		t.Fatalf("consent page has no form: %s", body)
	}
	return f
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// submit posts the consent form with the given button and returns the
// response (redirects are not followed).
func (f consentForm) submit(t *testing.T, s *Server, button string) *http.Response {
	t.Helper()
	v := url.Values{}
	for k, vs := range f.values {
		v[k] = append([]string(nil), vs...)
	}
	v.Set(button, "yes")
	resp, err := s.Client().PostForm(s.URL()+f.action, v)
	if err != nil {
		t.Fatalf("POST consent: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// approve runs the browser part of the flow: consent page, approval as
// user, redirect. It returns the redirect's query.
func approve(t *testing.T, s *Server, authURL, user string) url.Values {
	t.Helper()
	f := getConsent(t, s, authURL)
	if user != "" {
		f.values.Set("user", user)
	}
	resp := f.submit(t, s, "approve")
	if resp.StatusCode != http.StatusSeeOther {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST consent: status %d; want 303; body %s", resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("parse redirect: %v", err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != redirectURI {
		t.Fatalf("redirect to %s; want %s", got, redirectURI)
	}
	return loc.Query()
}

// issue mints a grant for user at confID.
func issue(t testing.TB, s *Server, clientID, user string) *oauth2.Token {
	t.Helper()
	tok, err := s.IssueGrant(clientID, user, []string{"read", "chat:write"})
	if err != nil {
		t.Fatalf("IssueGrant: %v", err)
	}
	return tok
}

// postForm posts form to the server with optional basic auth.
func postForm(t *testing.T, s *Server, path string, form url.Values, id, secret string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL()+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (log output).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestLogger returns a debug-level JSON logger writing to w.
func newTestLogger(w io.Writer) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.DebugLevel))
}
