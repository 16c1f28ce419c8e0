package connect

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector/oauth"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed templates/style.css
var styleCSS []byte

//go:embed templates/app.js
var appJS []byte

// pageTemplates holds one template set per page, each the layout plus the
// page's title and content.
var pageTemplates = func() map[string]*template.Template {
	out := make(map[string]*template.Template)
	for _, name := range []string{"message", "confirm", "apps"} {
		out[name] = template.Must(template.New(name).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}()

// serveStyle serves the one stylesheet (pages allow styles from this
// origin only, not inline).
func serveStyle(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(styleCSS)
}

// serveScript serves the one script: it shows times in the browser's time
// zone (the server knows only UTC). Pages work without it.
func serveScript(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(appJS)
}

// Page kinds: how a message page looks.
const (
	kindError  = "error"
	kindNotice = "notice"
)

// pageData is what every page template may show.
type pageData struct {
	// User and CSRF fill the header's sign-out form; empty when not signed
	// in.
	User, CSRF string

	// Message pages. Kind is kindError or kindNotice; Actions are the
	// next steps, the first one the main one.
	Kind           string
	Title, Message string
	Actions        []action

	// Confirmation page. ForUser is whom the grant will be stored for,
	// Agent the agent or workflow that asked (from the connect link).
	ForUser, Agent        string
	Provider, DisplayName string
	Mark                  mark
	Permissions           []permission
	Existing              *appView
	ReturnTo              string
	ConfirmAction         string
	// SignInAt is the host of the authorization server an MCP server
	// known by its URL names: where the person is sent next, which
	// nobody configured, so the page says it.
	SignInAt string

	// Apps page. Revoked lists apps revoked within revokedShown that are
	// not connected again.
	Status      string
	Apps        []appView
	Revoked     []appView
	Connectable []providerView
}

// action is a next step offered on a page: a link.
type action struct {
	Href, Text string
}

// permission is one scope with, when the provider's preset or the
// configuration has one, what it lets an agent do in plain words.
type permission struct {
	Scope       string `json:"scope"`
	Description string `json:"description,omitempty"`
}

// mark is an app's monogram: its initial on a colour chosen from its name.
type mark struct {
	Letter string
	Class  string
}

// markColours is how many monogram colours style.css defines (.mark-0 to
// .mark-7), all with white text at a contrast of at least 4.5:1.
const markColours = 8

// markFor returns the monogram of an app called displayName.
func markFor(provider, displayName string) mark {
	r, _ := utf8.DecodeRuneInString(strings.TrimSpace(displayName))
	if r == utf8.RuneError || !unicode.IsLetter(r) && !unicode.IsDigit(r) {
		r = '?'
	}
	// The low bits of short strings' FNV hashes repeat; a SHA-256 byte
	// spreads names over the colours.
	sum := sha256.Sum256([]byte(provider))
	return mark{Letter: string(unicode.ToUpper(r)), Class: "mark-" + string(rune('0'+sum[0]%markColours))}
}

// appView is one connected (or revoked) app as pages and the JSON API show
// it. It never carries a token.
type appView struct {
	Provider    string       `json:"provider"`
	DisplayName string       `json:"display_name"`
	Account     string       `json:"account,omitempty"`
	Scopes      []string     `json:"scopes"`
	Permissions []permission `json:"permissions"`
	// Status is active, reconnect_required or revoked.
	Status       string `json:"status"`
	ConnectedISO string `json:"connected_at,omitempty"`
	LastUsedISO  string `json:"last_used_at,omitempty"`
	LastUsedBy   string `json:"last_used_by,omitempty"`
	RevokedISO   string `json:"revoked_at,omitempty"`
	RevokedBy    string `json:"revoked_by,omitempty"`
	Generation   int64  `json:"generation,omitempty"`

	// For pages: the times in UTC for people (the script shows them in the
	// browser's time zone), the status in words, the monogram, and where
	// to connect the app again ("" when this server cannot start that).
	ConnectedAt, LastUsedAt, RevokedAt string `json:"-"`
	StatusText                         string `json:"-"`
	Mark                               mark   `json:"-"`
	ReconnectHref                      string `json:"-"`
}

// Statuses shown for apps, besides the grant statuses.
const statusRevoked = "revoked"

// statusText is a status in words.
func statusText(status string) string {
	switch status {
	case "active":
		return "Active"
	case "reconnect_required":
		return "Reconnect needed"
	case statusRevoked:
		return "Revoked"
	}
	return status
}

// actorText says who revoked an app, for the person it belonged to.
func actorText(actor string) string {
	switch actor {
	case ActorUser:
		return "you"
	case ActorAdmin, "cli":
		return "an administrator"
	}
	return actor
}

// providerView is an app that can be connected.
type providerView struct {
	Name, DisplayName string
	Mark              mark
}

// permissions describes scopes with p's descriptions.
func permissions(p *oauth.Provider, scopes []string) []permission {
	out := make([]permission, 0, len(scopes))
	var descs map[string]string
	if p != nil {
		descs = p.Config().ScopeDescriptions
	}
	for _, s := range scopes {
		out = append(out, permission{Scope: s, Description: descs[s]})
	}
	return out
}

// message is a page that only tells the person something. A status of 400
// or more makes it an error page.
type message struct {
	status         int
	title, text    string
	link, linkText string
}

// Messages shown to people. They say what happened and what to do, and
// never quote provider answers, tokens or internal errors. Next steps are
// links: the message's own, plus those pageAs adds (trying again, the apps
// page, signing in).
var (
	msgNotFound      = message{http.StatusNotFound, "Page not found", "There is nothing at this address.", "/", "Your connected apps"}
	msgCrossOrigin   = message{http.StatusForbidden, "Request refused", "This request came from another site and was refused.", "/", "Your connected apps"}
	msgUnknownApp    = message{http.StatusNotFound, "Unknown app", "There is no app by that name here.", "/", "Your connected apps"}
	msgNoConnect     = message{http.StatusBadRequest, "This app cannot be connected here", "The administrator has not set this app up for connecting. Please tell them.", "/", "Your connected apps"}
	msgLinksDisabled = message{http.StatusBadRequest, "Connect links are not accepted here", "Sign in to connect apps instead.", "/login", "Sign in"}
	msgLinkInvalid   = message{http.StatusUnauthorized, "This connect link is not valid", "It may have expired or been altered. Ask for a new link.", "", ""}
	msgLinkUsed      = message{http.StatusUnauthorized, "This connect link was already used", "Each connect link works once. If you connected the app with it, it is in your connected apps; otherwise ask for a new link.", "", ""}
	msgLinkOtherApp  = message{http.StatusBadRequest, "This connect link is for another app", "Open the link exactly as you received it, or ask for a new one.", "", ""}
	msgNeedLink      = message{http.StatusUnauthorized, "Open your connect link", "To connect an app or see your connected apps, open the connect link you were given. If you have none, ask your agent or administrator for one.", "", ""}
	msgUserMismatch  = message{http.StatusForbidden, "This connect link is for someone else", "The link was made for a different person than the one signed in. Nothing was connected. Ask for a link of your own.", "/", "Your connected apps"}
	msgOtherUser     = message{http.StatusForbidden, "You are signed in as someone else", "This connection was started for a different person than the one now signed in. Nothing was connected.", "/", "Your connected apps"}
	msgNoSession     = message{http.StatusBadRequest, "Your session has ended", "Your browser did not send its session, or it expired. Nothing was changed. Start again from your connect link or your connected apps.", "/", "Your connected apps"}
	msgCSRF          = message{http.StatusForbidden, "This form has expired", "Nothing was changed. Go back to the page and try again.", "/", "Your connected apps"}
	msgStateMissing  = message{http.StatusBadRequest, "Nothing to complete", "This address is where an app sends you back after you approve a connection; it cannot be opened on its own.", "/", "Your connected apps"}
	msgStateInvalid  = message{http.StatusBadRequest, "This connection cannot be completed", "It was not started in this browser, took too long, or was already completed. Nothing was connected.", "/", "Your connected apps"}
	msgDenied        = message{http.StatusOK, "Nothing was connected", "The app reports that access was not allowed.", "/", "Your connected apps"}
	msgCodeRefused   = message{http.StatusBadRequest, "The app did not accept this connection", "The approval may have expired or been used already. Nothing was connected.", "/", "Your connected apps"}
	msgProviderDown  = message{http.StatusServiceUnavailable, "The app is not answering", "Nothing was connected. Try again in a few minutes.", "/", "Your connected apps"}
	msgProviderConf  = message{http.StatusBadGateway, "The connection to this app is misconfigured", "Nothing was connected. An administrator has to fix this; please tell them.", "/", "Your connected apps"}
	msgStoreDown     = message{http.StatusServiceUnavailable, "Connections cannot be saved or read right now", "Try again in a few minutes.", "/", "Your connected apps"}
	msgSignInDown    = message{http.StatusServiceUnavailable, "Sign-in is not available right now", "Try again in a few minutes.", "/login", "Try again"}
	msgSignInFailed  = message{http.StatusUnauthorized, "Sign-in failed", "Your identity could not be confirmed.", "/login", "Sign in again"}
	msgSignedOut     = message{http.StatusOK, "Signed out", "You are signed out in this browser.", "", ""}
	msgCancelled     = message{http.StatusOK, "Nothing was connected", "You cancelled. A connect link you opened still works until it expires, if you change your mind.", "", ""}
	msgRevokeFailed  = message{http.StatusServiceUnavailable, "The app could not be revoked right now", "Nothing changed. Try again in a few minutes.", "/", "Your connected apps"}
	msgBusy          = message{http.StatusServiceUnavailable, "Too many connections in progress", "Try again in a few minutes.", "", ""}
)

// page renders a message page for a person who is not signed in (or whose
// session does not matter).
func (s *Server) page(w http.ResponseWriter, m message) {
	s.pageAs(w, nil, m)
}

// pageAs renders a message page, showing who is signed in, with the next
// steps that apply (see nextSteps).
func (s *Server) pageAs(w http.ResponseWriter, sess *session, m message) {
	s.pageFor(w, sess, m, "")
}

// pageFor is pageAs for a failure while connecting provider: where this
// browser can start the connection again by itself, "Try again" comes
// first.
func (s *Server) pageFor(w http.ResponseWriter, sess *session, m message, provider string) {
	d := pageData{Title: m.title, Message: m.text, Kind: kindNotice, Actions: s.nextSteps(sess, m, provider)}
	if m.status >= http.StatusBadRequest {
		d.Kind = kindError
	}
	if sess != nil {
		d.User, d.CSRF = sess.User, sess.CSRF
	}
	s.render(w, m.status, "message", d)
}

// nextSteps returns the links a message page offers: trying the
// connection of provider again where this browser can start it (signed in
// with the identity provider), the message's own link, the apps page to a
// signed-in person, and signing in to a person who is not when the server
// has an identity provider. Duplicates are left out.
func (s *Server) nextSteps(sess *session, m message, provider string) []action {
	var out []action
	add := func(href, text string) {
		for _, a := range out {
			if a.Href == href {
				return
			}
		}
		out = append(out, action{Href: href, Text: text})
	}
	signedIn := sess != nil && sess.User != ""
	if provider != "" && s.providers[provider] != nil && s.canStart(sess) {
		add(connectPath(provider, ""), "Try again")
	}
	if m.link != "" && (m.link != "/" || signedIn || s.idp != nil) {
		add(m.link, m.linkText)
	}
	if signedIn {
		add("/", "Your connected apps")
	} else if s.idp != nil {
		add("/login", "Sign in")
	}
	return out
}

// canStart reports whether a connection can be started from sess without a
// connect link: with an identity provider, by a person it signed in.
func (s *Server) canStart(sess *session) bool {
	return s.idp != nil && !s.needsSignIn(sess)
}

// render executes a page template into a buffer first, so that a template
// error yields a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, status int, name string, d pageData) {
	var buf bytes.Buffer
	if err := pageTemplates[name].ExecuteTemplate(&buf, "layout", d); err != nil {
		s.log.Error("render page", zap.String("page", name), zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// writeJSON writes v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeJSONError writes {"error": code, "message": msg}.
func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": code, "message": msg})
}

// displayTime formats a time for people in UTC; the page's script shows it
// in the browser's time zone.
func displayTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2 Jan 2006 15:04 UTC")
}

// isoTime is t for the datetime attribute and the JSON API, "" for zero.
func isoTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
