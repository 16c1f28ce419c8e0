package connect

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"
)

// maxPendingFlows bounds the connections one browser can have in flight at
// once (several tabs); the oldest is dropped beyond it, which also keeps the
// session cookie small.
const maxPendingFlows = 3

// How a session's user was verified.
const (
	viaLink = "link"
	viaOIDC = "oidc"
)

// session is what the session cookie carries, sealed: who the browser's
// verified user is, its CSRF token, and the connections and sign-in it has
// in flight. Keeping it in the cookie (rather than in server memory) lets
// any replica that shares the session key serve any request.
type session struct {
	// User is the verified user, or "" before sign-in.
	User string `json:"u,omitempty"`
	// Via says how User was verified (viaLink or viaOIDC).
	Via string `json:"via,omitempty"`
	// CSRF is the token forms and the JSON API must echo.
	CSRF string `json:"csrf"`
	// Expiry ends the session.
	Expiry time.Time `json:"exp"`
	// Link is a verified connect link waiting to be used up when the
	// person confirms (with OIDC, after a sign-in whose user must be
	// Link.User).
	Link *linkGrant `json:"link,omitempty"`
	// Flows are the connections in flight, newest last.
	Flows []flow `json:"flows,omitempty"`
	// Login is the IdP sign-in in flight.
	Login *loginFlow `json:"login,omitempty"`
}

// linkGrant is a verified connect link, not used up yet.
type linkGrant struct {
	User     string `json:"u"`
	Provider string `json:"p"`
	// ID is the link's jti, which makes it single-use.
	ID string `json:"id"`
	// Expiry is the last moment the link verifies (exp plus leeway).
	Expiry time.Time `json:"exp"`
	// Agent names the agent or workflow that asked (the link's act.sub),
	// for the confirmation page; at most maxAgentLen bytes.
	Agent string `json:"a,omitempty"`
}

// maxAgentLen bounds the agent name a session carries: it is for display,
// and the session cookie must stay small.
const maxAgentLen = 128

// agentName returns a link's agent name cut to maxAgentLen bytes on a
// character boundary.
func agentName(s string) string {
	if len(s) <= maxAgentLen {
		return s
	}
	n := maxAgentLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// flow is one connection in flight: the authorization request sent to the
// provider and what the callback needs to finish it.
type flow struct {
	// StateHash is the hex SHA-256 of the state sent to the provider; the
	// state itself is not kept.
	StateHash string `json:"s"`
	Provider  string `json:"p"`
	// User is the user the grant will be stored for.
	User string `json:"u"`
	// Verifier is the PKCE code verifier.
	Verifier string   `json:"v"`
	Scopes   []string `json:"sc,omitempty"`
	ReturnTo string   `json:"r,omitempty"`
	// Agent names the agent that asked for the connection, for the audit
	// record.
	Agent string `json:"a,omitempty"`
	// Expiry ends the flow (state_ttl after it started).
	Expiry time.Time `json:"exp"`
}

// loginFlow is an IdP sign-in in flight.
type loginFlow struct {
	StateHash string    `json:"s"`
	Verifier  string    `json:"v"`
	Nonce     string    `json:"n"`
	ReturnTo  string    `json:"r,omitempty"`
	Expiry    time.Time `json:"exp"`
}

// newSession returns an empty session with a fresh CSRF token.
func newSession(now time.Time, ttl time.Duration) *session {
	return &session{CSRF: rand.Text(), Expiry: now.Add(ttl)}
}

// signedIn returns a new session for user: a new CSRF token and expiry, and
// nothing in flight carried over except a link awaiting this sign-in. A new
// identity always gets a new session, so a session planted before sign-in
// (fixation) is worth nothing after it.
func (s *session) signedIn(user, via string, now time.Time, ttl time.Duration) *session {
	n := newSession(now, ttl)
	n.User, n.Via = user, via
	if s != nil && s.Link != nil && now.Before(s.Link.Expiry) {
		n.Link = s.Link
	}
	return n
}

// pendingLink returns the connect link waiting in s to be used for
// provider, or nil: a link for another app plays no part in connecting
// this one.
func (s *session) pendingLink(provider string) *linkGrant {
	if s == nil || s.Link == nil || s.Link.Provider != provider {
		return nil
	}
	return s.Link
}

// prune drops what has expired.
func (s *session) prune(now time.Time) {
	s.Flows = slices.DeleteFunc(s.Flows, func(f flow) bool { return !now.Before(f.Expiry) })
	if s.Login != nil && !now.Before(s.Login.Expiry) {
		s.Login = nil
	}
	if s.Link != nil && !now.Before(s.Link.Expiry) {
		s.Link = nil
	}
}

// addFlow appends f, dropping the oldest flows beyond maxPendingFlows.
func (s *session) addFlow(f flow) {
	s.Flows = append(s.Flows, f)
	if n := len(s.Flows) - maxPendingFlows; n > 0 {
		s.Flows = slices.Delete(s.Flows, 0, n)
	}
}

// takeFlow removes and returns the flow whose state hashes to h.
func (s *session) takeFlow(h string) (flow, bool) {
	for i, f := range s.Flows {
		if subtle.ConstantTimeCompare([]byte(f.StateHash), []byte(h)) == 1 {
			s.Flows = slices.Delete(s.Flows, i, i+1)
			return f, true
		}
	}
	return flow{}, false
}

// checkCSRF reports whether token is this session's CSRF token.
func (s *session) checkCSRF(token string) bool {
	return s != nil && token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRF)) == 1
}

// hashState returns the hex SHA-256 of a state value: what sessions keep
// and what the single-use check records.
func hashState(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

// cookies names and writes the session cookie.
type cookies struct {
	name   string
	secure bool
	sealer *sealer
}

// newCookies chooses the cookie name: with https the __Host- prefix, which
// browsers accept only from a secure origin, with Path=/ and without
// Domain, so no sibling host can plant or overwrite the cookie; on a
// loopback http URL (local use and tests) a plain name without Secure.
func newCookies(secure bool, s *sealer) *cookies {
	name := "onbehalf-session"
	if secure {
		name = "__Host-onbehalf-session"
	}
	return &cookies{name: name, secure: secure, sealer: s}
}

// read returns the request's session, or nil when it has none, an invalid
// one or an expired one.
func (c *cookies) read(r *http.Request, now time.Time) *session {
	var s session
	for _, ck := range r.CookiesNamed(c.name) {
		if err := c.sealer.open(c.name, ck.Value, &s); err != nil {
			continue
		}
		if !now.Before(s.Expiry) || s.CSRF == "" {
			return nil
		}
		s.prune(now)
		return &s
	}
	return nil
}

// write sets the session cookie. SameSite=Lax: the provider's redirect
// back to /callback is a cross-site top-level navigation, on which Strict
// cookies are not sent; Lax still keeps the cookie off cross-site POSTs,
// frames and subresources.
func (c *cookies) write(w http.ResponseWriter, s *session, now time.Time) error {
	v, err := c.sealer.seal(c.name, s)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name:     c.name,
		Value:    v,
		Path:     "/",
		MaxAge:   max(1, int(s.Expiry.Sub(now)/time.Second)),
		Secure:   c.secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
	return nil
}

// clear removes the session cookie.
func (c *cookies) clear(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name:     c.name,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		Secure:   c.secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
}
