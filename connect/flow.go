package connect

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Connect flow limits.
const (
	// maxReturnToLen bounds a return_to path.
	maxReturnToLen = 512
	// maxPutAttempts bounds the compare-and-swap attempts when storing a
	// new grant over one a sidecar is refreshing at the same moment.
	maxPutAttempts = 3
	// linkClaimProvider is the connect-link claim naming the app.
	linkClaimProvider = "provider"
)

// Outcomes of connect audit records.
const (
	outcomeOK       = "ok"
	outcomeDenied   = "denied"
	outcomeFailed   = "failed"
	outcomeRefused  = "refused"
	extraReason     = "reason"
	extraLinkUser   = "link_user"
	reasonMismatch  = "link_user_mismatch"
	reasonOtherUser = "session_user_changed"
)

// connectPath returns /connect/{provider} with an optional return_to.
func connectPath(provider, returnTo string) string {
	p := "/connect/" + provider
	if returnTo != "" {
		p += "?return_to=" + url.QueryEscape(returnTo)
	}
	return p
}

// safeReturnTo returns raw when it is a path on this server, and "" for
// anything else: absolute URLs, scheme-relative "//host" and "/\host"
// (which browsers read as another host), control characters and overlong
// values. Only what this function returns is ever used as a redirect
// target, so there is no open redirect.
func safeReturnTo(raw string) string {
	if raw == "" || len(raw) > maxReturnToLen || raw[0] != '/' {
		return ""
	}
	if len(raw) > 1 && (raw[1] == '/' || raw[1] == '\\') {
		return ""
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return ""
	}
	// The callbacks are never a destination: landing on one again would
	// look like a replayed state.
	if u.Path == pathCallback || u.Path == pathLoginCallback {
		return ""
	}
	return raw
}

// provider returns the provider named by the request path, or renders a
// page and returns nil.
func (s *Server) provider(w http.ResponseWriter, r *http.Request, sess *session) *oauth.Provider {
	name := r.PathValue("provider")
	p := s.providers[name]
	if p == nil || !validProvider(name) {
		s.pageAs(w, sess, msgUnknownApp)
		return nil
	}
	return p
}

// displayName is the provider's name for people: the preset's display name
// when the provider is based on one, else its configured name.
func displayName(p *oauth.Provider) string {
	if pr, ok := oauth.LookupPreset(p.Config().Preset); ok && pr.DisplayName != "" {
		return pr.DisplayName
	}
	return p.Name()
}

// handleConnect is the entry point: GET /connect/{provider}, from a connect
// link (?link=JWT) or from the sidecar's connect_url (no link). It shows
// the confirmation page; nothing is used up or started before the person
// confirms (see acceptLink).
func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	sess := s.cookies.read(r, now)
	p := s.provider(w, r, sess)
	if p == nil {
		return
	}
	q := r.URL.Query()
	returnTo := safeReturnTo(q.Get("return_to"))
	if raw := q.Get("link"); raw != "" {
		s.acceptLink(w, r, sess, p, raw, returnTo)
		return
	}
	if s.needsSignIn(sess) {
		s.startLogin(w, r, sess, connectPath(p.Name(), returnTo))
		return
	}
	if sess == nil {
		s.page(w, msgNeedLink)
		return
	}
	user, m, ok := s.connectUser(sess, p.Name())
	if !ok {
		s.refuseConnect(w, sess, p.Name(), m)
		return
	}
	ap, ok := s.authorizing(w, r, sess, p, user)
	if !ok {
		return
	}
	d := pageData{
		User: sess.User, CSRF: sess.CSRF,
		ForUser:  user,
		Provider: p.Name(), DisplayName: displayName(p), Mark: markFor(p.Name(), displayName(p)),
		Permissions:   permissions(p, ap.Config().Scopes),
		ReturnTo:      returnTo,
		ConfirmAction: "/connect/" + p.Name() + "/confirm",
	}
	if l := sess.pendingLink(p.Name()); l != nil {
		d.Agent = l.Agent
	}
	if p.IsMCP() {
		if u, err := url.Parse(ap.Config().AuthorizationURL); err == nil {
			d.SignInAt = u.Host
		}
	}
	if g, _, err := s.st.Get(r.Context(), p.Name(), user); err == nil {
		v := s.view(p.Name(), g, store.Activity{})
		d.Existing = &v
	}
	securityHeaders(w.Header(), formActionSources(ap))
	s.render(w, http.StatusOK, "confirm", d)
}

// authorizing returns the provider whose authorization endpoint a
// connection of p goes to: p itself, or for an MCP server known by its URL
// p resolved with its client registration, discovered and registered first
// when there is none (see mcpProvider). Otherwise it renders the refusal,
// audits a failed discovery and returns false.
func (s *Server) authorizing(w http.ResponseWriter, r *http.Request, sess *session, p *oauth.Provider, user string) (*oauth.Provider, bool) {
	if !p.IsMCP() {
		if p.Config().AuthorizationURL == "" {
			s.pageAs(w, sess, msgNoConnect)
			return nil, false
		}
		return p, true
	}
	ap, merr := s.mcpProvider(r.Context(), p)
	if merr != nil {
		s.log.Warn("MCP server discovery failed", zap.String("provider", p.Name()), zap.String("user", user),
			zap.String("error_code", merr.code), zap.Error(merr))
		s.writeAudit(&audit.Record{Event: audit.EventConnect, User: user, Provider: p.Name(), ErrorCode: merr.code,
			Extra: []zap.Field{zap.String(audit.ExtraOutcome, outcomeFailed)}})
		s.pageFor(w, sess, merr.message(), p.Name())
		return nil, false
	}
	return ap, true
}

// acceptLink verifies a connect link and keeps it in the session, pending,
// then redirects to the same page without the link (so that it does not
// stay in the address bar or the history). The link is used up only when
// the person confirms: chat apps and mail scanners fetch links to preview
// them, and a link spent by such a fetch would be useless to its person.
// With OIDC the browser must first be signed in as the link's user.
func (s *Server) acceptLink(w http.ResponseWriter, r *http.Request, sess *session, p *oauth.Provider, raw, returnTo string) {
	if s.links == nil {
		s.pageAs(w, sess, msgLinksDisabled)
		return
	}
	sub, err := s.links.Verify(r.Context(), raw)
	if err != nil {
		s.log.Info("connect link refused", zap.String("provider", p.Name()), zap.String("reason", identity.Reason(err)))
		s.pageAs(w, sess, msgLinkInvalid)
		return
	}
	claimed, _ := sub.Claims[linkClaimProvider].(string)
	switch {
	case sub.ID == "":
		s.log.Info("connect link refused", zap.String("provider", p.Name()), zap.String("reason", "no jti: a link must be single-use"))
		s.pageAs(w, sess, msgLinkInvalid)
		return
	case store.ValidateUser(sub.User) != nil:
		s.log.Info("connect link refused", zap.String("provider", p.Name()), zap.String("reason", "user id not usable as a grant key"))
		s.pageAs(w, sess, msgLinkInvalid)
		return
	case claimed != p.Name():
		s.log.Info("connect link refused", zap.String("provider", p.Name()), zap.String("reason", "link names another provider"))
		s.pageAs(w, sess, msgLinkOtherApp)
		return
	case s.once.seen(leaseLinks, sub.ID):
		s.log.Warn("connect link replayed", zap.String("provider", p.Name()), zap.String("user", sub.User))
		s.pageAs(w, sess, msgLinkUsed)
		return
	}
	if sess == nil {
		sess = newSession(s.now(), s.cfg.SessionTTL)
	}
	// exp plus the verifier's leeway is the last moment the link verifies.
	sess.Link = &linkGrant{User: sub.User, Provider: p.Name(), ID: sub.ID, Expiry: sub.Expiry.Add(linkLeeway), Agent: agentName(sub.Agent)}
	next := connectPath(p.Name(), returnTo)
	if s.needsSignIn(sess) {
		s.startLogin(w, r, sess, next)
		return
	}
	// With OIDC the IdP says who the browser's person is and the link only
	// names whom it was made for: connectUser refuses unless they agree.
	if _, m, ok := s.connectUser(sess, p.Name()); !ok {
		s.refuseConnect(w, sess, p.Name(), m)
		return
	}
	s.log.Info("connect link accepted", zap.String("provider", p.Name()), zap.String("user", sub.User))
	s.redirect(w, r, sess, next)
}

// needsSignIn reports whether the browser must sign in at the identity
// provider before it may connect anything. Without one it never must; with
// one, only a session the IdP signed in counts: a session a connect link
// signed in says whom the link was made for, not who is at the browser.
func (s *Server) needsSignIn(sess *session) bool {
	return s.idp != nil && (sess == nil || sess.User == "" || sess.Via != viaOIDC)
}

// connectUser returns the user a connection of provider started from sess
// is for, or the refusal. It is the one place that decides whether the
// person in the browser may connect for a link's user, and every handler
// that starts or accepts a connection asks it. With OIDC it is the
// signed-in user, and a link pending for this app must name the same user
// (a mismatch is logged and audited). With links only it is the user of the
// link pending for this app — unless the browser is signed in as someone
// else: a link never switches a signed-in browser to another user (the
// person would see "signed in as alice" above "connecting for bob" and
// connect bob's account from alice's session). Signing out first is the
// way on.
func (s *Server) connectUser(sess *session, provider string) (string, message, bool) {
	l := sess.pendingLink(provider)
	if s.idp != nil {
		if s.needsSignIn(sess) {
			return "", msgNoSession, false
		}
		if l != nil && l.User != sess.User {
			return "", s.mismatch(sess.User, provider, l.User), false
		}
		return sess.User, message{}, true
	}
	if l == nil {
		return "", msgNeedLink, false
	}
	if sess.User != "" && sess.User != l.User {
		return "", s.mismatch(sess.User, provider, l.User), false
	}
	return l.User, message{}, true
}

// mismatch logs and audits a connection refused because the signed-in
// person is not the person the link was made for, and returns the page,
// which names both (the link names its user already) and says how on.
func (s *Server) mismatch(user, provider, linkUser string) message {
	s.log.Warn("connect refused: link made for another user", zap.String("provider", provider),
		zap.String("user", user), zap.String("link_user", linkUser))
	s.writeAudit(&audit.Record{
		Event: audit.EventConnect, User: user, Provider: provider,
		Extra: []zap.Field{
			zap.String(audit.ExtraOutcome, outcomeRefused),
			zap.String(extraReason, reasonMismatch),
			zap.String(extraLinkUser, linkUser),
		},
	})
	m := msgUserMismatch
	m.text = fmt.Sprintf("This link is for %s; you are signed in as %s. Nothing was connected or stored. To use the link, sign out first; to connect an app for yourself, ask for a link of your own.", linkUser, user)
	return m
}

// refuseConnect renders a refusal, forgetting a pending link for provider
// that caused it.
func (s *Server) refuseConnect(w http.ResponseWriter, sess *session, provider string, m message) {
	if sess.pendingLink(provider) != nil && m != msgNeedLink {
		sess.Link = nil
		if err := s.cookies.write(w, sess, s.now()); err != nil {
			s.log.Error("write session", zap.Error(err))
		}
	}
	s.pageAs(w, sess, m)
}

// onceFailed renders the refusal of a used link or state.
func (s *Server) onceFailed(w http.ResponseWriter, sess *session, err error, what, provider, user string) {
	switch {
	case errors.Is(err, errReplayed):
		s.log.Warn(what+" replayed", zap.String("provider", provider), zap.String("user", user))
		if what == "connect link" {
			s.pageAs(w, sess, msgLinkUsed)
		} else {
			s.pageAs(w, sess, msgStateInvalid)
		}
	case errors.Is(err, errOnceFull):
		s.log.Error(what+" refused", zap.Error(err))
		s.pageAs(w, sess, msgBusy)
	default:
		s.log.Error(what+" refused: store unavailable", zap.String("provider", provider), zap.Error(err))
		s.pageAs(w, sess, msgStoreDown)
	}
}

// handleConfirm starts the authorization at the provider: POST
// /connect/{provider}/confirm from the confirmation page. A pending link is
// used up here; with links only, this signs the browser in as the link's
// user.
func (s *Server) handleConfirm(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	sess := s.cookies.read(r, now)
	if sess == nil {
		s.page(w, msgNoSession)
		return
	}
	if !sess.checkCSRF(r.PostFormValue("csrf")) {
		s.log.Info("confirm refused: CSRF token mismatch")
		s.pageAs(w, sess, msgCSRF)
		return
	}
	p := s.provider(w, r, sess)
	if p == nil {
		return
	}
	user, m, ok := s.connectUser(sess, p.Name())
	if !ok {
		s.refuseConnect(w, sess, p.Name(), m)
		return
	}
	ap, ok := s.authorizing(w, r, sess, p, user)
	if !ok {
		return
	}
	agent := ""
	if l := sess.pendingLink(p.Name()); l != nil {
		agent = l.Agent
		if err := s.once.use(r.Context(), leaseLinks, l.ID, l.Expiry); err != nil {
			if errors.Is(err, errReplayed) {
				sess.Link = nil
				if werr := s.cookies.write(w, sess, now); werr != nil {
					s.log.Error("write session", zap.Error(werr))
				}
			}
			s.onceFailed(w, sess, err, "connect link", p.Name(), l.User)
			return
		}
		sess.Link = nil
		if sess.User != user {
			// Links only: the link signs the browser in. A new identity
			// gets a new session (new CSRF token, nothing carried over).
			sess = sess.signedIn(user, viaLink, now, s.cfg.SessionTTL)
		}
	}
	state := rand.Text() + rand.Text() // 2 × 128 bits
	verifier := oauth2.GenerateVerifier()
	scopes := ap.Config().Scopes
	sess.addFlow(flow{
		StateHash: hashState(state),
		Provider:  p.Name(),
		User:      user,
		Verifier:  verifier,
		Scopes:    scopes,
		ReturnTo:  safeReturnTo(r.PostFormValue("return_to")),
		Expiry:    now.Add(s.cfg.StateTTL),
		Agent:     agent,
	})
	target := ap.AuthCodeURL(state, oauth2.S256ChallengeFromVerifier(verifier), s.redirectURI, scopes, nil)
	if err := s.cookies.write(w, sess, now); err != nil {
		s.log.Error("write session", zap.Error(err))
		s.pageAs(w, sess, msgBusy)
		return
	}
	s.log.Info("connect started", zap.String("provider", p.Name()), zap.String("user", user))
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// handleCallback finishes a connection: GET /callback?state=…&code=… from
// the provider.
func (s *Server) handleCallback(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	q := r.URL.Query()
	state := q.Get("state")
	sess := s.cookies.read(r, now)
	if state == "" {
		s.log.Info("callback refused: no state")
		s.pageAs(w, sess, msgStateMissing)
		return
	}
	if sess == nil {
		s.log.Info("callback refused: no session")
		s.page(w, msgNoSession)
		return
	}
	h := hashState(state)
	f, ok := sess.takeFlow(h)
	if !ok {
		s.log.Warn("callback refused: state unknown to this session (foreign, replayed or expired)")
		s.pageAs(w, sess, msgStateInvalid)
		return
	}
	// From here on the flow is gone from the session whatever happens.
	if err := s.cookies.write(w, sess, now); err != nil {
		s.log.Error("write session", zap.Error(err))
	}
	if !now.Before(f.Expiry) {
		s.log.Info("callback refused: state expired", zap.String("provider", f.Provider), zap.String("user", f.User))
		s.pageFor(w, sess, msgStateInvalid, f.Provider)
		return
	}
	if sess.User != f.User {
		s.log.Warn("callback refused: the browser's user changed since the flow started",
			zap.String("provider", f.Provider), zap.String("user", sess.User), zap.String("flow_user", f.User))
		s.writeAudit(&audit.Record{Event: audit.EventConnect, User: f.User, Provider: f.Provider,
			Extra: []zap.Field{zap.String(audit.ExtraOutcome, outcomeRefused), zap.String(extraReason, reasonOtherUser)}})
		s.pageAs(w, sess, msgOtherUser)
		return
	}
	if err := s.once.use(r.Context(), leaseStates, h, f.Expiry); err != nil {
		s.onceFailed(w, sess, err, "state", f.Provider, f.User)
		return
	}
	p := s.providers[f.Provider]
	if p == nil {
		s.pageAs(w, sess, msgUnknownApp)
		return
	}
	if e := q.Get("error"); e != "" {
		code := sanitizeCode(e)
		s.log.Info("provider answered the authorization with an error", zap.String("provider", f.Provider),
			zap.String("user", f.User), zap.String("error", code))
		outcome, m := outcomeFailed, msgProviderConf
		switch code {
		case "access_denied":
			outcome, m = outcomeDenied, msgDenied
		case "temporarily_unavailable", "server_error":
			m = msgProviderDown
		}
		s.auditConnect(f, outcome, code, nil, "")
		s.pageFor(w, sess, m, f.Provider)
		return
	}
	code := q.Get("code")
	if code == "" {
		s.log.Info("callback refused: no code", zap.String("provider", f.Provider))
		s.auditConnect(f, outcomeFailed, "no_code", nil, "")
		s.pageFor(w, sess, msgCodeRefused, f.Provider)
		return
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), flowTimeout)
	defer cancel()
	if p.IsMCP() {
		// The code was issued to the registered client: exchange it as
		// that client, at the discovered token endpoint.
		rp, err := s.mcpResolved(ctx, p)
		if err != nil {
			s.log.Error("MCP server registration unusable at the callback", zap.String("provider", f.Provider), zap.Error(err))
			s.auditConnect(f, outcomeFailed, "provider_misconfigured", nil, "")
			s.pageFor(w, sess, msgProviderConf, f.Provider)
			return
		}
		// RFC 9207: an authorization server that names itself in the
		// answer must be the one the flow went to. The server was found
		// by discovery, not configured, so a mix-up is worth refusing.
		if iss := q.Get("iss"); iss != "" && iss != rp.Issuer() {
			s.log.Warn("callback refused: the answer names another authorization server", zap.String("provider", f.Provider),
				zap.String("user", f.User), zap.String("want_issuer", rp.Issuer()))
			s.auditConnect(f, outcomeRefused, "issuer_mismatch", nil, "")
			s.pageFor(w, sess, msgCodeRefused, f.Provider)
			return
		}
		p = rp
	}
	g, m, err := s.finish(ctx, p, f, code)
	if err != nil {
		s.pageFor(w, sess, m, f.Provider)
		return
	}
	s.log.Info("connected", zap.String("provider", g.Provider), zap.String("user", g.User),
		zap.Int64("generation", g.Generation), zap.String("provider_account", g.ProviderAccount))
	next := f.ReturnTo
	if next == "" {
		next = "/?connected=" + url.QueryEscape(g.Provider)
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// finish exchanges the code, looks up the provider account and stores the
// grant. On failure it returns the page to show, having logged and audited
// the failure.
func (s *Server) finish(ctx context.Context, p *oauth.Provider, f flow, code string) (*store.Grant, message, error) {
	tok, err := p.Exchange(ctx, code, f.Verifier, s.redirectURI)
	if err != nil {
		m, ec := msgProviderConf, "provider_misconfigured"
		switch {
		case errors.Is(err, oauth.ErrInvalidCode):
			m, ec = msgCodeRefused, "invalid_code"
			s.log.Info("code refused by the provider", zap.String("provider", f.Provider), zap.String("user", f.User), zap.Error(err))
		case errors.Is(err, injector.ErrProviderUnavailable):
			m, ec = msgProviderDown, "provider_unavailable"
			s.log.Warn("code exchange failed", zap.String("provider", f.Provider), zap.String("user", f.User), zap.Error(err))
		default:
			s.log.Error("code exchange failed: provider misconfigured", zap.String("provider", f.Provider), zap.Error(err))
		}
		s.auditConnect(f, outcomeFailed, ec, nil, "")
		return nil, m, err
	}
	account := ""
	if p.Config().UserinfoURL != "" {
		if account, err = p.Account(ctx, tok.AccessToken); err != nil {
			// The grant works without it; the account is for display.
			s.log.Warn("provider account lookup failed", zap.String("provider", f.Provider), zap.String("user", f.User), zap.Error(err))
			account = ""
		}
	}
	scopes := f.Scopes
	if granted, ok := tok.Extra("scope").(string); ok && strings.TrimSpace(granted) != "" {
		scopes = strings.FieldsFunc(granted, func(r rune) bool { return r == ' ' || r == ',' })
	}
	now := s.now().UTC()
	g := &store.Grant{
		Provider:        f.Provider,
		User:            f.User,
		AccessToken:     tok.AccessToken,
		RefreshToken:    tok.RefreshToken,
		TokenType:       tok.TokenType,
		Expiry:          tok.Expiry.UTC(),
		Scopes:          scopes,
		Status:          store.StatusActive,
		ConnectedAt:     now,
		ProviderAccount: account,
		IssuedAt:        now,
	}
	if err := s.put(ctx, g); err != nil {
		s.log.Error("store new grant", zap.String("provider", f.Provider), zap.String("user", f.User), zap.Error(err))
		s.auditConnect(f, outcomeFailed, storeErrorCode(err), g, account)
		return nil, msgStoreDown, err
	}
	s.auditConnect(f, outcomeOK, "", g, account)
	return g, message{}, nil
}

// put stores g, replacing an existing grant by compare-and-swap with the
// next generation. A grant whose tokens no longer open (another key) is
// deleted first: connecting again is how such a grant is repaired.
func (s *Server) put(ctx context.Context, g *store.Grant) error {
	var err error
	for range maxPutAttempts {
		cur, ver, gerr := s.st.Get(ctx, g.Provider, g.User)
		switch {
		case gerr == nil:
			g.Generation = cur.Generation + 1
		case errors.Is(gerr, store.ErrNotFound):
			g.Generation, ver = 1, 0
		case errors.Is(gerr, store.ErrDecrypt):
			if derr := s.st.Delete(ctx, g.Provider, g.User); derr != nil && !errors.Is(derr, store.ErrNotFound) {
				return derr
			}
			g.Generation, ver = 1, 0
		default:
			return gerr
		}
		if _, err = s.st.Put(ctx, g, ver); err == nil {
			if ver != 0 {
				// Another connection's tokens replace the cached ones
				// at the next read of the feed, not when they expire.
				if err := store.RecordChange(ctx, s.st, g.Provider, g.User); err != nil {
					s.log.Warn("grant replaced; sidecars keep the old token until it expires", zap.String("provider", g.Provider), zap.String("user", g.User), zap.Error(err))
				}
			}
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return err
}

// auditConnect writes the connect record of flow f.
func (s *Server) auditConnect(f flow, outcome, errorCode string, g *store.Grant, account string) {
	rec := &audit.Record{
		Event:     audit.EventConnect,
		User:      f.User,
		Agent:     f.Agent,
		Provider:  f.Provider,
		ErrorCode: errorCode,
		Extra:     []zap.Field{zap.String(audit.ExtraOutcome, outcome)},
	}
	if g != nil && outcome == outcomeOK {
		rec.GrantGeneration = g.Generation
		if s.audit != nil {
			rec.TokenFingerprint = s.audit.Fingerprinter().Token(g.AccessToken)
		}
	}
	if account != "" {
		rec.Extra = append(rec.Extra, zap.String(extraAccount, account))
	}
	s.writeAudit(rec)
}

// writeAudit writes rec, logging a failure.
func (s *Server) writeAudit(rec *audit.Record) {
	if s.audit == nil {
		return
	}
	if err := s.audit.Write(rec); err != nil {
		s.log.Error("audit record not written", zap.String("event", rec.Event), zap.String("provider", rec.Provider),
			zap.String("user", rec.User), zap.Error(err))
	}
}

// redirect writes sess and redirects to a path on this server.
func (s *Server) redirect(w http.ResponseWriter, r *http.Request, sess *session, path string) {
	if err := s.cookies.write(w, sess, s.now()); err != nil {
		s.log.Error("write session", zap.Error(err))
		s.page(w, msgBusy)
		return
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// sanitizeCode bounds an OAuth error code from a redirect and keeps only
// the characters RFC 6749 allows in one.
func sanitizeCode(code string) string {
	const maxCodeLen = 64
	if len(code) > maxCodeLen {
		code = code[:maxCodeLen]
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, code)
}
