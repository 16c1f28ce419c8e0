package connect

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed templates/style.css
var styleCSS []byte

// pageTemplates holds one template set per page, each the layout plus the
// page's title and content.
var pageTemplates = func() map[string]*template.Template {
	funcs := template.FuncMap{"join": func(s []string) string { return strings.Join(s, " ") }}
	out := make(map[string]*template.Template)
	for _, name := range []string{"message", "confirm", "apps"} {
		out[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
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

// pageData is what every page template may show.
type pageData struct {
	// User and CSRF fill the header's sign-out form; empty when not signed
	// in.
	User, CSRF string

	// Message pages.
	Title, Message     string
	LinkHref, LinkText string

	// Confirmation page. ForUser is whom the grant will be stored for.
	ForUser               string
	Provider, DisplayName string
	Scopes                []string
	Existing              *appView
	ReturnTo              string
	ConfirmAction         string

	// Apps page.
	Status      string
	Apps        []appView
	Connectable []providerView
}

// appView is one connected app as pages and the JSON API show it. It never
// carries a token.
type appView struct {
	Provider     string   `json:"provider"`
	DisplayName  string   `json:"display_name"`
	Account      string   `json:"account,omitempty"`
	Scopes       []string `json:"scopes"`
	Status       string   `json:"status"`
	ConnectedISO string   `json:"connected_at"`
	ConnectedAt  string   `json:"-"`
	Generation   int64    `json:"generation"`
}

// providerView is an app that can be connected.
type providerView struct {
	Name, DisplayName string
}

// message is a page that only tells the person something.
type message struct {
	status         int
	title, text    string
	link, linkText string
}

// Messages shown to people. They say what happened and what to do, and
// never quote provider answers, tokens or internal errors.
var (
	msgNotFound      = message{http.StatusNotFound, "Page not found", "There is nothing at this address.", "/", "Your connected apps"}
	msgCrossOrigin   = message{http.StatusForbidden, "Request refused", "This request came from another site and was refused.", "/", "Your connected apps"}
	msgUnknownApp    = message{http.StatusNotFound, "Unknown app", "There is no app by that name here.", "/", "Your connected apps"}
	msgNoConnect     = message{http.StatusBadRequest, "This app cannot be connected here", "The administrator has not set this app up for connecting. Please tell them.", "/", "Your connected apps"}
	msgLinksDisabled = message{http.StatusBadRequest, "Connect links are not accepted here", "Sign in to connect apps instead.", "/login", "Sign in"}
	msgLinkInvalid   = message{http.StatusUnauthorized, "This connect link is not valid", "It may have expired or been altered. Ask for a new link.", "", ""}
	msgLinkUsed      = message{http.StatusUnauthorized, "This connect link was already used", "Each connect link works once. Ask for a new link.", "", ""}
	msgLinkOtherApp  = message{http.StatusBadRequest, "This connect link is for another app", "Open the link exactly as you received it, or ask for a new one.", "", ""}
	msgNeedLink      = message{http.StatusUnauthorized, "Open your connect link", "To connect an app or see your connected apps, open the connect link you were given. If you have none, ask your agent or administrator for one.", "", ""}
	msgUserMismatch  = message{http.StatusForbidden, "This connect link is for someone else", "The link was made for a different person than the one signed in. Nothing was connected. Ask for a link of your own.", "/", "Your connected apps"}
	msgOtherUser     = message{http.StatusForbidden, "You are signed in as someone else", "This connection was started for a different person than the one now signed in. Nothing was connected.", "/", "Your connected apps"}
	msgNoSession     = message{http.StatusBadRequest, "Your session has ended", "Your browser did not send its session, or it expired. Start again from your connect link or the apps page.", "/", "Your connected apps"}
	msgCSRF          = message{http.StatusForbidden, "This form has expired", "Reload the page and try again.", "/", "Your connected apps"}
	msgStateMissing  = message{http.StatusBadRequest, "Nothing to complete", "This address is where an app sends you back after you approve a connection; it cannot be opened on its own.", "/", "Your connected apps"}
	msgStateInvalid  = message{http.StatusBadRequest, "This connection cannot be completed", "It was not started in this browser, took too long, or was already completed. Nothing was connected. Start again.", "/", "Your connected apps"}
	msgDenied        = message{http.StatusOK, "Nothing was connected", "The app reports that access was not allowed.", "/", "Your connected apps"}
	msgCodeRefused   = message{http.StatusBadRequest, "The app did not accept this connection", "The approval may have expired or been used already. Nothing was connected. Start again.", "/", "Your connected apps"}
	msgProviderDown  = message{http.StatusServiceUnavailable, "The app is not answering", "Nothing was connected. Try again in a few minutes.", "/", "Your connected apps"}
	msgProviderConf  = message{http.StatusBadGateway, "The connection to this app is misconfigured", "Nothing was connected. An administrator has to fix this; please tell them.", "/", "Your connected apps"}
	msgStoreDown     = message{http.StatusServiceUnavailable, "Connections cannot be saved or read right now", "Try again in a few minutes.", "/", "Your connected apps"}
	msgSignInDown    = message{http.StatusServiceUnavailable, "Sign-in is not available right now", "Try again in a few minutes.", "", ""}
	msgSignInFailed  = message{http.StatusUnauthorized, "Sign-in failed", "Your identity could not be confirmed. Start again.", "/", "Start again"}
	msgSignedOut     = message{http.StatusOK, "Signed out", "You are signed out in this browser.", "", ""}
	msgRevokeFailed  = message{http.StatusServiceUnavailable, "The app could not be revoked right now", "Nothing changed. Try again in a few minutes.", "/", "Your connected apps"}
	msgBusy          = message{http.StatusServiceUnavailable, "Too many connections in progress", "Try again in a few minutes.", "", ""}
)

// page renders a message page for a person who is not signed in (or whose
// session does not matter).
func (s *Server) page(w http.ResponseWriter, m message) {
	s.pageAs(w, nil, m)
}

// pageAs renders a message page, showing who is signed in.
func (s *Server) pageAs(w http.ResponseWriter, sess *session, m message) {
	d := pageData{Title: m.title, Message: m.text, LinkHref: m.link, LinkText: m.linkText}
	if sess != nil {
		d.User, d.CSRF = sess.User, sess.CSRF
	}
	s.render(w, m.status, "message", d)
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

// displayTime formats a connection time for people.
func displayTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2 Jan 2006 15:04 UTC")
}
