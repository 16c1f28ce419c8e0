package connect

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Actors named in revoke audit records.
const (
	ActorUser  = "user"
	ActorAdmin = "admin"
)

// headerCSRF carries the CSRF token on the JSON API's state-changing
// requests.
const headerCSRF = "X-CSRF-Token"

// revokedShown is how long a revoked app stays on its person's apps page:
// long enough to notice, short enough that the page stays about what is
// connected.
const revokedShown = 30 * 24 * time.Hour

// userApps returns the apps of user at the configured providers: those
// connected, and those revoked within revokedShown and not connected
// again (Status revoked). It reads one grant and one activity record per
// provider rather than listing every user's grants: a store with many
// users stays cheap to ask. A grant whose tokens cannot be opened is shown
// (it can be revoked) with the status reconnect_required. Activity that
// cannot be read is left out: it is for display only.
func (s *Server) userApps(ctx context.Context, user string) ([]appView, error) {
	var out []appView
	as, _ := s.st.(store.ActivityStore)
	for _, name := range s.names {
		var act store.Activity
		if as != nil {
			a, err := as.Activity(ctx, name, user)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				s.log.Warn("read activity", zap.String("provider", name), zap.String("user", user), zap.Error(err))
			}
			act = a
		}
		g, _, err := s.st.Get(ctx, name, user)
		switch {
		case err == nil:
			out = append(out, s.view(name, g, act))
		case errors.Is(err, store.ErrNotFound):
			if !act.RevokedAt.IsZero() && s.now().Sub(act.RevokedAt) < revokedShown {
				out = append(out, s.revokedView(name, act))
			}
		case errors.Is(err, store.ErrDecrypt):
			out = append(out, s.view(name, &store.Grant{Provider: name, User: user, Status: store.StatusReconnectRequired}, act))
		default:
			return nil, err
		}
	}
	return out, nil
}

// view returns the display form of a grant and its activity. A last use
// from before the grant was connected belongs to an earlier grant and is
// left out.
func (s *Server) view(provider string, g *store.Grant, act store.Activity) appView {
	v := s.baseView(provider)
	v.Account = g.ProviderAccount
	v.Scopes = g.Scopes
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	v.Permissions = permissions(s.providers[provider], v.Scopes)
	v.Status = string(g.Status)
	v.StatusText = statusText(v.Status)
	v.Generation = g.Generation
	v.ConnectedAt, v.ConnectedISO = displayTime(g.ConnectedAt), isoTime(g.ConnectedAt)
	if !act.LastUsedAt.IsZero() && !act.LastUsedAt.Before(g.ConnectedAt) {
		v.LastUsedAt, v.LastUsedISO, v.LastUsedBy = displayTime(act.LastUsedAt), isoTime(act.LastUsedAt), act.LastUsedBy
	}
	return v
}

// revokedView is the display form of an app whose grant was revoked.
func (s *Server) revokedView(provider string, act store.Activity) appView {
	v := s.baseView(provider)
	v.Scopes, v.Permissions = []string{}, []permission{}
	v.Status, v.StatusText = statusRevoked, statusText(statusRevoked)
	v.RevokedAt, v.RevokedISO, v.RevokedBy = displayTime(act.RevokedAt), isoTime(act.RevokedAt), actorText(act.RevokedBy)
	if !act.LastUsedAt.IsZero() {
		v.LastUsedAt, v.LastUsedISO, v.LastUsedBy = displayTime(act.LastUsedAt), isoTime(act.LastUsedAt), act.LastUsedBy
	}
	return v
}

// baseView fills what every view of provider's app shows.
func (s *Server) baseView(provider string) appView {
	name := provider
	p := s.providers[provider]
	if p != nil {
		name = displayName(p)
	}
	v := appView{Provider: provider, DisplayName: name, Mark: markFor(provider, name)}
	if p != nil && s.idp != nil && connectable(p) {
		v.ReconnectHref = connectPath(provider, "")
	}
	return v
}

// handleApps is GET /: the person's connected apps.
func (s *Server) handleApps(w http.ResponseWriter, r *http.Request) {
	sess := s.cookies.read(r, s.now())
	if sess == nil || sess.User == "" {
		if s.idp != nil {
			s.startLogin(w, r, sess, "/")
			return
		}
		s.page(w, msgNeedLink)
		return
	}
	apps, err := s.userApps(r.Context(), sess.User)
	if err != nil {
		s.log.Error("list apps", zap.String("user", sess.User), zap.Error(err))
		s.pageAs(w, sess, msgStoreDown)
		return
	}
	d := pageData{User: sess.User, CSRF: sess.CSRF}
	for _, a := range apps {
		if a.Status == statusRevoked {
			d.Revoked = append(d.Revoked, a)
		} else {
			d.Apps = append(d.Apps, a)
		}
	}
	q := r.URL.Query()
	if p := s.providers[q.Get("connected")]; p != nil {
		d.Status = displayName(p) + " is connected."
	} else if p := s.providers[q.Get("revoked")]; p != nil {
		d.Status = displayName(p) + " is no longer connected."
	}
	if s.canStart(sess) {
		for _, name := range s.names {
			if p := s.providers[name]; connectable(p) {
				d.Connectable = append(d.Connectable, providerView{Name: name, DisplayName: displayName(p), Mark: markFor(name, displayName(p))})
			}
		}
	}
	s.render(w, http.StatusOK, "apps", d)
}

// handleCancel is GET /connect/{provider}/cancel, the confirmation page's
// Cancel: nothing is used up, so the person's link still works.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	sess := s.cookies.read(r, s.now())
	if p := s.provider(w, r, sess); p != nil {
		s.pageAs(w, sess, msgCancelled)
	}
}

// handleRevokeForm is POST /apps/{provider}/revoke from the apps page.
func (s *Server) handleRevokeForm(w http.ResponseWriter, r *http.Request) {
	sess := s.cookies.read(r, s.now())
	if sess == nil || sess.User == "" {
		s.page(w, msgNoSession)
		return
	}
	if !sess.checkCSRF(r.PostFormValue("csrf")) {
		s.log.Info("revoke refused: CSRF token mismatch", zap.String("user", sess.User))
		s.pageAs(w, sess, msgCSRF)
		return
	}
	p := s.provider(w, r, sess)
	if p == nil {
		return
	}
	if _, err := s.revoker.Revoke(r.Context(), p.Name(), sess.User, ActorUser); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("revoke", zap.String("provider", p.Name()), zap.String("user", sess.User), zap.Error(err))
		s.pageAs(w, sess, msgRevokeFailed)
		return
	}
	http.Redirect(w, r, "/?revoked="+url.QueryEscape(p.Name()), http.StatusSeeOther)
}

// appsResponse is the JSON API's answer to GET /api/apps.
type appsResponse struct {
	User string `json:"user"`
	// CSRFToken must be sent back in the X-CSRF-Token header of DELETE
	// requests. Another origin cannot read it (no CORS).
	CSRFToken string    `json:"csrf_token"`
	Apps      []appView `json:"apps"`
	// Revoked are apps revoked in the last 30 days and not connected
	// again.
	Revoked []appView `json:"revoked"`
}

// apiSession returns the signed-in session of a JSON API request, or
// answers 401.
func (s *Server) apiSession(w http.ResponseWriter, r *http.Request) *session {
	sess := s.cookies.read(r, s.now())
	if sess == nil || sess.User == "" {
		writeJSONError(w, http.StatusUnauthorized, "unauthenticated", "sign in first")
		return nil
	}
	return sess
}

// handleAPIApps is GET /api/apps.
func (s *Server) handleAPIApps(w http.ResponseWriter, r *http.Request) {
	sess := s.apiSession(w, r)
	if sess == nil {
		return
	}
	apps, err := s.userApps(r.Context(), sess.User)
	if err != nil {
		s.log.Error("list apps", zap.String("user", sess.User), zap.Error(err))
		writeJSONError(w, http.StatusServiceUnavailable, "store_unavailable", "connections cannot be read right now")
		return
	}
	res := appsResponse{User: sess.User, CSRFToken: sess.CSRF, Apps: []appView{}, Revoked: []appView{}}
	for _, a := range apps {
		if a.Status == statusRevoked {
			res.Revoked = append(res.Revoked, a)
		} else {
			res.Apps = append(res.Apps, a)
		}
	}
	writeJSON(w, http.StatusOK, res)
}

// handleAPIRevoke is DELETE /api/apps/{provider}.
func (s *Server) handleAPIRevoke(w http.ResponseWriter, r *http.Request) {
	sess := s.apiSession(w, r)
	if sess == nil {
		return
	}
	if !sess.checkCSRF(r.Header.Get(headerCSRF)) {
		writeJSONError(w, http.StatusForbidden, "csrf", "the "+headerCSRF+" header must carry csrf_token from GET /api/apps")
		return
	}
	name := r.PathValue("provider")
	if s.providers[name] == nil {
		writeJSONError(w, http.StatusNotFound, "unknown_provider", "no app by that name")
		return
	}
	s.revokeJSON(w, r, name, sess.User, ActorUser)
}

// revokeJSON revokes and answers with the Result.
func (s *Server) revokeJSON(w http.ResponseWriter, r *http.Request, provider, user, actor string) {
	res, err := s.revoker.Revoke(r.Context(), provider, user, actor)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, http.StatusNotFound, res)
	case errors.Is(err, store.ErrInvalidName):
		writeJSONError(w, http.StatusBadRequest, "bad_request", "invalid provider or user name")
	default:
		s.log.Error("revoke", zap.String("provider", provider), zap.String("user", user), zap.Error(err))
		writeJSONError(w, http.StatusServiceUnavailable, "store_unavailable", "the grant could not be revoked right now")
	}
}

// handleAdminList is GET /admin/api/grants?provider=NAME.
func (s *Server) handleAdminList(w http.ResponseWriter, r *http.Request) {
	provider := r.URL.Query().Get("provider")
	if provider != "" && !validProvider(provider) {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "invalid provider name")
		return
	}
	grants, err := s.st.List(r.Context(), provider)
	if err != nil {
		s.log.Error("admin list grants", zap.Error(err))
		writeJSONError(w, http.StatusServiceUnavailable, "store_unavailable", "grants cannot be listed right now")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"grants": store.Views(grants)})
}

// handleAdminRevoke is DELETE /admin/api/grants/{provider}/{user}.
func (s *Server) handleAdminRevoke(w http.ResponseWriter, r *http.Request) {
	s.revokeJSON(w, r, r.PathValue("provider"), r.PathValue("user"), ActorAdmin)
}

// connectable reports whether people can connect p here: it has an
// authorization endpoint, or it is an MCP server known by its URL (whose
// endpoint is discovered).
func connectable(p *oauth.Provider) bool {
	return p.IsMCP() || p.Config().AuthorizationURL != ""
}
