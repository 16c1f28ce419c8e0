package oauthtest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"maps"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
)

// store is the fosite storage of the server. It replaces fosite's
// storage.MemoryStore, which does not fit here for three reasons:
//
//   - it revokes only the newest refresh and access token of a grant (it keeps
//     one signature per request id), so tokens of older generations that are
//     still valid survive a family revocation;
//   - RevokeRefreshToken writes the token map under the wrong mutex (a data
//     race under concurrent use);
//   - it hands out the stored requests themselves, and fosite mutates the
//     sessions it gets back (DefaultSession.GetExpiresAt even writes).
//
// Here a grant's "family" is every token minted from one authorization (they
// share fosite's request id). Revoking a family deletes all its refresh and
// access tokens. A refresh token that was rotated is kept, marked used, so
// that presenting it again is recognised as reuse; fosite then revokes the
// family (flow_refresh.go, handleRefreshTokenReuse).
//
// Every method takes the one mutex, and requests are copied on the way in and
// out, so callers never share mutable state. store is safe for concurrent use.
type store struct {
	mu       sync.Mutex
	clients  map[string]*fosite.DefaultClient
	codes    map[string]*codeEntry
	pkces    map[string]fosite.Requester
	access   map[string]*accessEntry
	refresh  map[string]*refreshEntry
	families map[string]*family
	// revokeAccessOnRotate makes RotateRefreshToken delete the access token
	// minted with the rotated refresh token (Options.RevokeAccessTokenOnRefresh).
	revokeAccessOnRotate bool
	// reuseGrace is how long a rotated refresh token is still accepted
	// (Options.RefreshReuseGrace); zero means never.
	reuseGrace time.Duration
	// now is the clock of the grace window.
	now func() time.Time
}

var (
	_ fosite.Storage                = (*store)(nil)
	_ oauth2.CoreStorage            = (*store)(nil)
	_ oauth2.TokenRevocationStorage = (*store)(nil)
	_ pkce.PKCERequestStorage       = (*store)(nil)
)

type codeEntry struct {
	req    fosite.Requester
	active bool
}

type accessEntry struct {
	req fosite.Requester
}

type refreshEntry struct {
	req       fosite.Requester
	accessSig string
	// used is set when the token was rotated: it can no longer be
	// exchanged, and presenting it again is reuse (unless within the
	// reuse grace after usedAt).
	used   bool
	usedAt time.Time
}

// inGrace reports whether the used token e may still be exchanged. Callers
// hold mu.
func (s *store) inGrace(e *refreshEntry) bool {
	return e.used && s.reuseGrace > 0 && s.now().Sub(e.usedAt) <= s.reuseGrace
}

// family indexes the live tokens of one grant by signature.
type family struct {
	client  string
	user    string
	access  map[string]struct{}
	refresh map[string]struct{}
}

func newStore() *store {
	return &store{
		clients:  make(map[string]*fosite.DefaultClient),
		codes:    make(map[string]*codeEntry),
		pkces:    make(map[string]fosite.Requester),
		access:   make(map[string]*accessEntry),
		refresh:  make(map[string]*refreshEntry),
		families: make(map[string]*family),
		now:      time.Now,
	}
}

// reuseProbeKey marks a context as coming from the token endpoint, where a
// used refresh token is a reuse detection (at the revocation endpoint it is
// merely an inactive token).
type reuseProbeKey struct{}

// reuseProbe records whether a reuse was detected during one token request,
// and whose grant it hit.
type reuseProbe struct {
	detected     bool
	client, user string
	// graced is set when a used token was accepted within the reuse
	// grace.
	graced bool
}

// copyRequest returns a deep copy of r as a plain *fosite.Request, the shape
// fosite's own stores keep (the request's language, used only to localise
// error messages, is not kept). The client is shared: clients are immutable
// once registered.
func copyRequest(r fosite.Requester) fosite.Requester {
	form := make(url.Values, len(r.GetRequestForm()))
	for k, v := range r.GetRequestForm() {
		form[k] = slices.Clone(v)
	}
	var sess fosite.Session
	if s := r.GetSession(); s != nil {
		sess = s.Clone()
	}
	return &fosite.Request{
		ID:                r.GetID(),
		RequestedAt:       r.GetRequestedAt(),
		Client:            r.GetClient(),
		RequestedScope:    slices.Clone(r.GetRequestedScopes()),
		GrantedScope:      slices.Clone(r.GetGrantedScopes()),
		RequestedAudience: slices.Clone(r.GetRequestedAudience()),
		GrantedAudience:   slices.Clone(r.GetGrantedAudience()),
		Form:              form,
		Session:           sess,
	}
}

// addClient registers c, replacing any client with the same id.
func (s *store) addClient(c *fosite.DefaultClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.ID] = c
}

// GetClient implements fosite.ClientManager.
func (s *store) GetClient(_ context.Context, id string) (fosite.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return c, nil
}

// ClientAssertionJWTValid implements fosite.ClientManager. Client assertions
// (private_key_jwt) are not supported; fosite refuses them before this is
// reached because the clients are not OpenID Connect clients.
func (s *store) ClientAssertionJWTValid(context.Context, string) error {
	return fosite.ErrJTIKnown
}

// SetClientAssertionJWT implements fosite.ClientManager; see
// ClientAssertionJWTValid.
func (s *store) SetClientAssertionJWT(context.Context, string, time.Time) error {
	return fosite.ErrJTIKnown
}

// CreateAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage.
func (s *store) CreateAuthorizeCodeSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[sig] = &codeEntry{req: copyRequest(req), active: true}
	return nil
}

// GetAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage. A used
// code yields its request together with ErrInvalidatedAuthorizeCode, so that
// fosite can revoke what the code minted.
func (s *store) GetAuthorizeCodeSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	if !e.active {
		return copyRequest(e.req), fosite.ErrInvalidatedAuthorizeCode
	}
	return copyRequest(e.req), nil
}

// InvalidateAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage.
func (s *store) InvalidateAuthorizeCodeSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes[sig]
	if !ok {
		return fosite.ErrNotFound
	}
	e.active = false
	return nil
}

// CreatePKCERequestSession implements pkce.PKCERequestStorage.
func (s *store) CreatePKCERequestSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkces[sig] = copyRequest(req)
	return nil
}

// GetPKCERequestSession implements pkce.PKCERequestStorage.
func (s *store) GetPKCERequestSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.pkces[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return copyRequest(r), nil
}

// DeletePKCERequestSession implements pkce.PKCERequestStorage.
func (s *store) DeletePKCERequestSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pkces, sig)
	return nil
}

// familyOf returns the family of req, creating it. Callers hold mu.
func (s *store) familyOf(req fosite.Requester) *family {
	f, ok := s.families[req.GetID()]
	if !ok {
		f = &family{
			client:  req.GetClient().GetID(),
			user:    sessionUser(req.GetSession()),
			access:  make(map[string]struct{}),
			refresh: make(map[string]struct{}),
		}
		s.families[req.GetID()] = f
	}
	return f
}

// CreateAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *store) CreateAccessTokenSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access[sig] = &accessEntry{req: copyRequest(req)}
	s.familyOf(req).access[sig] = struct{}{}
	return nil
}

// GetAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *store) GetAccessTokenSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.access[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return copyRequest(e.req), nil
}

// DeleteAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *store) DeleteAccessTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteAccess(sig)
	return nil
}

// deleteAccess removes one access token. Callers hold mu.
func (s *store) deleteAccess(sig string) {
	e, ok := s.access[sig]
	if !ok {
		return
	}
	delete(s.access, sig)
	if f, ok := s.families[e.req.GetID()]; ok {
		delete(f.access, sig)
	}
}

// deleteRefresh removes one refresh token. Callers hold mu.
func (s *store) deleteRefresh(sig string) {
	e, ok := s.refresh[sig]
	if !ok {
		return
	}
	delete(s.refresh, sig)
	if f, ok := s.families[e.req.GetID()]; ok {
		delete(f.refresh, sig)
	}
}

// CreateRefreshTokenSession implements oauth2.RefreshTokenStorage.
func (s *store) CreateRefreshTokenSession(_ context.Context, sig, accessSig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[sig] = &refreshEntry{req: copyRequest(req), accessSig: accessSig}
	s.familyOf(req).refresh[sig] = struct{}{}
	return nil
}

// GetRefreshTokenSession implements oauth2.RefreshTokenStorage. A used
// (rotated) token yields its request together with fosite.ErrInactiveToken,
// which makes fosite's refresh handler treat it as reuse and revoke the
// family; at the token endpoint the reuse is also recorded in the context's
// reuseProbe.
func (s *store) GetRefreshTokenSession(ctx context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	if e.used && s.inGrace(e) {
		if p, ok := ctx.Value(reuseProbeKey{}).(*reuseProbe); ok {
			p.graced = true
		}
		return copyRequest(e.req), nil
	}
	if e.used {
		if p, ok := ctx.Value(reuseProbeKey{}).(*reuseProbe); ok {
			p.detected = true
			p.client = e.req.GetClient().GetID()
			p.user = sessionUser(e.req.GetSession())
		}
		return copyRequest(e.req), fosite.ErrInactiveToken
	}
	return copyRequest(e.req), nil
}

// DeleteRefreshTokenSession implements oauth2.RefreshTokenStorage.
func (s *store) DeleteRefreshTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteRefresh(sig)
	return nil
}

// RotateRefreshToken implements oauth2.RefreshTokenStorage: the presented
// token is marked used. It fails with fosite.ErrSerializationFailure if the
// token was used (outside the reuse grace) or revoked since fosite read it
// (the server serialises token requests, so this is a guard, not a path). A
// token used again within the grace keeps the time of its first use, so
// the grace is not extended by reuse.
func (s *store) RotateRefreshToken(_ context.Context, _ string, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh[sig]
	if !ok || (e.used && !s.inGrace(e)) {
		return fosite.ErrSerializationFailure
	}
	if !e.used {
		e.used, e.usedAt = true, s.now()
	}
	if s.revokeAccessOnRotate {
		s.deleteAccess(e.accessSig)
	}
	return nil
}

// RevokeRefreshToken implements oauth2.TokenRevocationStorage: it deletes
// every refresh token of the family requestID, used or not.
func (s *store) RevokeRefreshToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.families[requestID]
	if !ok {
		return nil
	}
	for sig := range f.refresh {
		delete(s.refresh, sig)
	}
	clear(f.refresh)
	s.dropIfEmpty(requestID, f)
	return nil
}

// RevokeAccessToken implements oauth2.TokenRevocationStorage: it deletes
// every access token of the family requestID.
func (s *store) RevokeAccessToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.families[requestID]
	if !ok {
		return nil
	}
	for sig := range f.access {
		delete(s.access, sig)
	}
	clear(f.access)
	s.dropIfEmpty(requestID, f)
	return nil
}

// dropIfEmpty forgets a family with no tokens left. Callers hold mu.
func (s *store) dropIfEmpty(id string, f *family) {
	if len(f.access) == 0 && len(f.refresh) == 0 {
		delete(s.families, id)
	}
}

// revokeUser deletes every token of every family of user and returns how
// many families it revoked.
func (s *store) revokeUser(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range slices.Collect(maps.Keys(s.families)) {
		f := s.families[id]
		if f.user != user {
			continue
		}
		for sig := range f.access {
			delete(s.access, sig)
		}
		for sig := range f.refresh {
			delete(s.refresh, sig)
		}
		delete(s.families, id)
		n++
	}
	return n
}

// expireAccess sets the expiry of the access token with signature sig to at.
// It reports whether the token exists.
func (s *store) expireAccess(sig string, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.access[sig]
	if !ok {
		return false
	}
	r := copyRequest(e.req)
	r.GetSession().SetExpiresAt(fosite.AccessToken, at)
	e.req = r
	return true
}

// sessionUser returns the user a session belongs to.
func sessionUser(s fosite.Session) string {
	if s == nil {
		return ""
	}
	return s.GetSubject()
}

// errSecretMismatch is what secretHasher.Compare returns for a wrong
// secret; fosite turns it into invalid_client.
var errSecretMismatch = errors.New("client secret mismatch")

// secretHasher is the fosite.Hasher for client secrets: SHA-256 with a
// constant-time comparison. fosite's default, bcrypt at cost 12, spends about
// a quarter of a second per token request, which would dominate every test
// that refreshes; the secrets here are configured random strings, not
// passwords, so a fast hash is adequate.
type secretHasher struct{}

var _ fosite.Hasher = secretHasher{}

// Hash implements fosite.Hasher.
func (secretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	h := sha256.Sum256(data)
	return h[:], nil
}

// Compare implements fosite.Hasher.
func (secretHasher) Compare(_ context.Context, hash, data []byte) error {
	h := sha256.Sum256(data)
	if subtle.ConstantTimeCompare(hash, h[:]) != 1 {
		return errSecretMismatch
	}
	return nil
}
