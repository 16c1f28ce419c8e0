package connect

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/oauth"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
)

// Limits of connecting an MCP server by its URL.
const (
	// mcpDiscoveryTimeout bounds the whole discovery and registration:
	// a probe, up to three metadata documents for the resource and three
	// for the authorization server, and a registration. Each is one small
	// request; a person waits on the page meanwhile.
	mcpDiscoveryTimeout = 20 * time.Second
	// maxProbeBody bounds what is read of the probe's answer: only its
	// status and WWW-Authenticate matter.
	maxProbeBody = 64 << 10
	// mcpClientName is the client_name onbehalf registers with (RFC 7591);
	// authorization servers show it on their consent pages.
	mcpClientName = "onbehalf connect"
)

// Stable error codes of connecting an MCP server by its URL: they are in
// the connect server's logs and audit records and on the page the person
// sees, so an administrator can act on them.
const (
	// mcpProbeFailed: the MCP server could not be reached, or did not
	// answer the unauthenticated probe with 401 (or answered it with
	// something other than a Bearer challenge and no metadata).
	mcpProbeFailed = "mcp_probe_failed"
	// mcpNoMetadata: no RFC 9728 protected-resource metadata, neither
	// where the 401 pointed nor at the well-known locations.
	mcpNoMetadata = "mcp_metadata_missing"
	// mcpResourceMismatch: the metadata is for another resource than the
	// configured URL (RFC 9728 section 3.3 requires them equal).
	mcpResourceMismatch = "mcp_resource_mismatch"
	// mcpNotHTTPS: a discovered URL (metadata, issuer, endpoint) is not
	// https.
	mcpNotHTTPS = "mcp_not_https"
	// mcpForbiddenAddress: a discovered URL leads to an address the egress
	// guard refuses (loopback, private, link-local, metadata service, …).
	mcpForbiddenAddress = "mcp_destination_forbidden"
	// mcpASMetadata: no usable authorization server metadata (RFC 8414 or
	// OpenID Connect discovery), or metadata that does not fit: a wrong
	// issuer, no PKCE S256, missing endpoints.
	mcpASMetadata = "mcp_authorization_server_invalid"
	// mcpNoRegistration: no client is configured and the authorization
	// server offers no dynamic registration.
	mcpNoRegistration = "mcp_registration_unsupported"
	// mcpRegistrationFailed: the authorization server refused or failed
	// the dynamic registration.
	mcpRegistrationFailed = "mcp_registration_failed"
	// mcpStoreFailed: the registration could not be read or stored.
	mcpStoreFailed = "mcp_store_unavailable"
	// mcpUnavailable: a server did not answer in time or failed (5xx).
	mcpUnavailable = "mcp_unavailable"
)

// mcpError is a failure to connect an MCP server by its URL: a stable code
// and a sentence for people. Its Error names the code and the cause (no
// secret: discovery carries none, and registration errors never quote a
// response body).
type mcpError struct {
	code, text string
	err        error
}

func (e *mcpError) Error() string {
	if e.err == nil {
		return e.code + ": " + e.text
	}
	return e.code + ": " + e.text + ": " + e.err.Error()
}

func (e *mcpError) Unwrap() error { return e.err }

func mcpFail(code, text string, err error) *mcpError {
	return &mcpError{code: code, text: text, err: err}
}

// message returns the page shown for e.
func (e *mcpError) message() message {
	status := http.StatusBadGateway
	switch e.code {
	case mcpUnavailable, mcpStoreFailed:
		status = http.StatusServiceUnavailable
	}
	return message{status, "This MCP server cannot be connected",
		e.text + " Nothing was connected or stored. If this persists, tell your administrator the error code " + e.code + ".",
		"/", "Your connected apps"}
}

// NewMCPClient returns the HTTP client with which the connect server
// discovers MCP servers and registers at their authorization servers: every
// dial goes through an egress guard built from guard (so metadata cannot
// point the server at a loopback, private or metadata-service address),
// TLS is verified against roots (nil: the system roots), no proxy, no
// redirect followed, bounded phases. opts are passed to the guard (a
// resolver in tests).
func NewMCPClient(guard egress.Config, roots *x509.CertPool, opts ...egress.Option) (*http.Client, error) {
	g, err := egress.New(guard, opts...)
	if err != nil {
		return nil, fmt.Errorf("mcp client: egress: %w", err)
	}
	o := outbound.DefaultOptions()
	o.Roots = roots
	o.Dial = g.DialContext
	// An MCP server's metadata documents are small JSON answers: a server
	// that takes longer than this is not one to connect people to.
	o.ResponseHeaderTimeout = 10 * time.Second
	c, err := outbound.Client(o)
	if err != nil {
		return nil, fmt.Errorf("mcp client: %w", err)
	}
	return c, nil
}

// mcpProvider returns the provider p resolved with its registration for a
// connection: the stored one when it still fits (same resource, redirect
// URI and client choice, secret not expired), else a new one found by
// discovery (and dynamic registration when the operator configured no
// client), stored by compare-and-swap so that one registration serves
// every person and every replica (a replica that loses the race uses the
// winner's).
func (s *Server) mcpProvider(ctx context.Context, p *oauth.Provider) (*oauth.Provider, *mcpError) {
	regs, ok := s.st.(store.RegistrationStore)
	if !ok {
		return nil, mcpFail(mcpStoreFailed, "The grant store cannot keep client registrations.", nil)
	}
	ctx, cancel := context.WithTimeout(ctx, mcpDiscoveryTimeout)
	defer cancel()
	reg, ver, err := regs.Registration(ctx, p.Name())
	switch {
	case err == nil:
		if s.registrationFits(p, reg) {
			rp, rerr := p.WithRegistration(reg)
			if rerr == nil {
				return rp, nil
			}
			s.log.Warn("stored MCP registration unusable; discovering again", zap.String("provider", p.Name()), zap.Error(rerr))
		}
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrDecrypt):
		ver = 0
		if errors.Is(err, store.ErrDecrypt) {
			// Sealed under another key: useless, and replaced below.
			if derr := regs.DeleteRegistration(ctx, p.Name()); derr != nil && !errors.Is(derr, store.ErrNotFound) {
				return nil, mcpFail(mcpStoreFailed, "The client registration could not be replaced.", derr)
			}
		}
	default:
		return nil, mcpFail(mcpStoreFailed, "The client registration could not be read.", err)
	}
	d := &discovery{s: s, fl: &fetchLog{}}
	d.c = d.fl.client(s.mcpClient)
	// One discovery per MCP server at a time in this process: people
	// connecting at the same moment share its result (and one client at
	// the authorization server). Replicas are kept to one registration by
	// the compare-and-swap below.
	v, err, _ := s.mcpFlight.Do(p.Name(), func() (any, error) {
		nreg, merr := d.run(ctx, p)
		if merr != nil {
			return nil, merr
		}
		return nreg, nil
	})
	if err != nil {
		var merr *mcpError
		if errors.As(err, &merr) {
			return nil, merr
		}
		return nil, mcpFail(mcpUnavailable, "The MCP server could not be discovered.", err)
	}
	nreg := v.(*store.Registration).Clone()
	if _, err := regs.PutRegistration(ctx, nreg, ver); err != nil {
		if !errors.Is(err, store.ErrConflict) {
			return nil, mcpFail(mcpStoreFailed, "The client registration could not be stored.", err)
		}
		// Another replica registered at the same moment: use its client
		// (ours stays unused at the authorization server).
		won, _, gerr := regs.Registration(ctx, p.Name())
		if gerr != nil {
			return nil, mcpFail(mcpStoreFailed, "The client registration could not be read.", gerr)
		}
		nreg = won
	}
	p.Forget()
	rp, err := p.WithRegistration(nreg)
	if err != nil {
		return nil, mcpFail(mcpASMetadata, "The discovered client registration does not fit the configuration.", err)
	}
	s.log.Info("MCP server registered", zap.String("provider", p.Name()), zap.String("resource", nreg.Resource),
		zap.String("issuer", nreg.Issuer), zap.String("client_id", nreg.ClientID), zap.Bool("dynamic", nreg.Dynamic))
	s.writeAudit(&audit.Record{Event: audit.EventConnect, Provider: p.Name(), Extra: []zap.Field{
		zap.String(audit.ExtraOutcome, "registered"), zap.String("issuer", nreg.Issuer), zap.Bool("dynamic", nreg.Dynamic),
	}})
	return rp, nil
}

// registrationFits reports whether a stored registration can be reused for
// p: for its resource and this server's redirect URI, with the client the
// configuration asks for, and a secret that has not expired.
func (s *Server) registrationFits(p *oauth.Provider, reg *store.Registration) bool {
	cfg := p.Config()
	switch {
	case reg.Resource != p.Resource(), reg.RedirectURI != s.redirectURI:
		return false
	case cfg.ClientID == "" && !reg.Dynamic, cfg.ClientID != "" && (reg.Dynamic || reg.ClientID != cfg.ClientID):
		return false
	case !reg.SecretExpiresAt.IsZero() && !s.now().Add(time.Hour).Before(reg.SecretExpiresAt):
		return false
	}
	return true
}

// run finds the authorization server of p's MCP server and the
// client to use there, following the MCP authorization specification: an
// unauthenticated probe whose 401 names the RFC 9728 metadata (or the
// well-known locations), the authorization server's RFC 8414 metadata (or
// OpenID Connect discovery), then RFC 7591 registration when the operator
// configured no client. Every URL it follows must be https, and every dial
// passes the egress guard.
func (d *discovery) run(ctx context.Context, p *oauth.Provider) (*store.Registration, *mcpError) {
	resource := p.Resource()
	prm, merr := d.resourceMetadata(ctx, resource)
	if merr != nil {
		return nil, merr
	}
	if len(prm.AuthorizationServers) == 0 {
		return nil, mcpFail(mcpNoMetadata, "The MCP server's metadata names no authorization server.", nil)
	}
	issuer := prm.AuthorizationServers[0]
	if msg := httpsURL(issuer); msg != "" {
		return nil, mcpFail(mcpNotHTTPS, "The MCP server's authorization server is not an https URL.", errors.New("issuer "+msg))
	}
	asm, merr := d.authServerMetadata(ctx, issuer)
	if merr != nil {
		return nil, merr
	}
	now := d.s.now().UTC()
	cfg := p.Config()
	reg := &store.Registration{
		Provider: p.Name(), Resource: resource, Issuer: asm.Issuer,
		AuthorizationEndpoint: asm.AuthorizationEndpoint, TokenEndpoint: asm.TokenEndpoint,
		RevocationEndpoint: asm.RevocationEndpoint, RegistrationEndpoint: asm.RegistrationEndpoint,
		Scopes: cfg.Scopes, RedirectURI: d.s.redirectURI, DiscoveredAt: now,
	}
	// Without configured scopes, the MCP specification's choice: the
	// challenge's scope, else the metadata's scopes_supported, else none.
	if len(reg.Scopes) == 0 {
		reg.Scopes = strings.Fields(d.challengeScope)
	}
	if len(reg.Scopes) == 0 {
		reg.Scopes = prm.ScopesSupported
	}
	if cfg.ClientID != "" {
		reg.ClientID = cfg.ClientID
		reg.AuthMethod = store.AuthMethodNone
		switch cfg.AuthStyle {
		case oauth.AuthStyleHeader:
			reg.AuthMethod = store.AuthMethodBasic
		case oauth.AuthStyleParams:
			reg.AuthMethod = store.AuthMethodPost
		}
	} else if merr := d.registerClient(ctx, asm, reg); merr != nil {
		return nil, merr
	}
	if err := store.ValidateRegistration(reg); err != nil {
		return nil, mcpFail(mcpASMetadata, "The authorization server's answers cannot be stored.", err)
	}
	return reg, nil
}

// resourceMetadata probes resource and reads its RFC 9728 metadata: from
// the resource_metadata of the 401's Bearer challenge, else from the
// well-known locations (path-aware first, then the root). The metadata
// must name resource exactly.
func (d *discovery) resourceMetadata(ctx context.Context, resource string) (*oauthex.ProtectedResourceMetadata, *mcpError) {
	var candidates []string
	hinted, merr := d.probe(ctx, resource)
	if merr != nil {
		return nil, merr
	}
	if hinted != "" {
		if msg := httpsURL(hinted); msg != "" {
			return nil, mcpFail(mcpNotHTTPS, "The MCP server's resource_metadata is not an https URL.", errors.New(msg))
		}
		candidates = append(candidates, hinted)
	} else {
		u, _ := url.Parse(resource) // canonical already
		root := u.Scheme + "://" + u.Host + "/.well-known/oauth-protected-resource"
		if p := strings.TrimSuffix(u.EscapedPath(), "/"); p != "" {
			candidates = append(candidates, root+p)
		}
		candidates = append(candidates, root)
	}
	var last error
	for _, c := range candidates {
		prm, err := oauthex.GetProtectedResourceMetadata(ctx, c, resource, d.c)
		if err == nil {
			return prm, nil
		}
		if m := d.fl.classify(err); m != nil {
			return nil, m
		}
		if strings.Contains(err.Error(), "got metadata resource") {
			return nil, mcpFail(mcpResourceMismatch, "The MCP server's metadata is for another address than the one configured.", err)
		}
		last = err
	}
	return nil, mcpFail(mcpNoMetadata, "The MCP server publishes no usable protected-resource metadata.", last)
}

// probe sends the unauthenticated request every MCP client starts with
// (an initialize) and returns the resource_metadata URL of the 401's
// Bearer challenge, or "" when the challenge names none; it keeps the
// challenge's scope.
func (d *discovery) probe(ctx context.Context, resource string) (string, *mcpError) {
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"onbehalf-connect","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, resource, strings.NewReader(body))
	if err != nil {
		return "", mcpFail(mcpProbeFailed, "The MCP server's address cannot be used.", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := d.c.Do(req)
	if err != nil {
		if m := d.fl.classify(err); m != nil {
			return "", m
		}
		return "", mcpFail(mcpProbeFailed, "The MCP server could not be reached.", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		if resp.StatusCode >= 500 {
			return "", mcpFail(mcpUnavailable, "The MCP server is failing.", fmt.Errorf("status %d", resp.StatusCode))
		}
		return "", mcpFail(mcpProbeFailed, "The MCP server did not ask for authorization.", fmt.Errorf("status %d to an unauthenticated request; want 401", resp.StatusCode))
	}
	chs, err := oauthex.ParseWWWAuthenticate(resp.Header.Values("WWW-Authenticate"))
	if err != nil {
		return "", nil // a malformed challenge: fall back to the well-known locations
	}
	for _, c := range chs {
		if c.Scheme == "bearer" {
			d.challengeScope = c.Params["scope"]
			return c.Params["resource_metadata"], nil
		}
	}
	return "", nil
}

// authServerMetadata reads issuer's metadata at the locations the MCP
// authorization specification lists, in its order: RFC 8414 (path
// inserted), OpenID Connect discovery with the path inserted, then
// appended. The go-sdk checks the issuer and PKCE support and refuses
// dangerous URL schemes; onbehalf also requires S256 and https endpoints.
func (d *discovery) authServerMetadata(ctx context.Context, issuer string) (*oauthex.AuthServerMeta, *mcpError) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, mcpFail(mcpASMetadata, "The authorization server's address cannot be used.", err)
	}
	origin := u.Scheme + "://" + u.Host
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	var urls []string
	if path == "" {
		urls = []string{origin + "/.well-known/oauth-authorization-server", origin + "/.well-known/openid-configuration"}
	} else {
		urls = []string{origin + "/.well-known/oauth-authorization-server" + path,
			origin + "/.well-known/openid-configuration" + path, origin + path + "/.well-known/openid-configuration"}
	}
	var asm *oauthex.AuthServerMeta
	for _, mu := range urls {
		m, err := oauthex.GetAuthServerMeta(ctx, mu, issuer, d.c)
		if err != nil {
			if f := d.fl.classify(err); f != nil {
				return nil, f
			}
			return nil, mcpFail(mcpASMetadata, "The authorization server's metadata is not usable.", err)
		}
		if m != nil {
			asm = m
			break
		}
	}
	if asm == nil {
		return nil, mcpFail(mcpASMetadata, "The authorization server publishes no metadata (RFC 8414 or OpenID Connect discovery).", nil)
	}
	if !slices.Contains(asm.CodeChallengeMethodsSupported, "S256") {
		return nil, mcpFail(mcpASMetadata, "The authorization server does not support PKCE with S256.", nil)
	}
	if asm.AuthorizationEndpoint == "" || asm.TokenEndpoint == "" {
		return nil, mcpFail(mcpASMetadata, "The authorization server's metadata lacks its authorization or token endpoint.", nil)
	}
	for _, e := range []struct{ name, v string }{
		{"issuer", asm.Issuer}, {"authorization_endpoint", asm.AuthorizationEndpoint}, {"token_endpoint", asm.TokenEndpoint},
		{"revocation_endpoint", asm.RevocationEndpoint}, {"registration_endpoint", asm.RegistrationEndpoint},
	} {
		if e.v == "" {
			continue
		}
		if msg := httpsURL(e.v); msg != "" {
			return nil, mcpFail(mcpNotHTTPS, "The authorization server names an endpoint that is not https.", errors.New(e.name+" "+msg))
		}
	}
	return asm, nil
}

// registerClient registers onbehalf's connect server at asm's registration
// endpoint (RFC 7591) and fills reg's client: a confidential client with
// the first token endpoint authentication the server supports among
// client_secret_basic and client_secret_post (none only when it supports
// neither), for the authorization code and refresh token grants, with this
// server's redirect URI.
func (d *discovery) registerClient(ctx context.Context, asm *oauthex.AuthServerMeta, reg *store.Registration) *mcpError {
	if asm.RegistrationEndpoint == "" {
		return mcpFail(mcpNoRegistration, "The authorization server offers no dynamic client registration, and no client is configured for it.", nil)
	}
	method := store.AuthMethodBasic
	if sup := asm.TokenEndpointAuthMethodsSupported; len(sup) > 0 && !slices.Contains(sup, method) {
		switch {
		case slices.Contains(sup, store.AuthMethodPost):
			method = store.AuthMethodPost
		case slices.Contains(sup, store.AuthMethodNone):
			method = store.AuthMethodNone
		default:
			return mcpFail(mcpRegistrationFailed, "The authorization server supports no client authentication onbehalf can use.", nil)
		}
	}
	meta := &oauthex.ClientRegistrationMetadata{
		RedirectURIs:            []string{d.s.redirectURI},
		TokenEndpointAuthMethod: method,
		GrantTypes:              []string{"authorization_code", "refresh_token"},
		ResponseTypes:           []string{"code"},
		ClientName:              mcpClientName,
		Scope:                   strings.Join(reg.Scopes, " "),
	}
	resp, err := oauthex.RegisterClient(ctx, asm.RegistrationEndpoint, meta, d.c)
	if err != nil {
		if f := d.fl.classify(err); f != nil {
			return f
		}
		var re *oauthex.ClientRegistrationError
		if errors.As(err, &re) {
			return mcpFail(mcpRegistrationFailed, "The authorization server refused to register onbehalf as a client.",
				fmt.Errorf("registration refused: %s", sanitizeCode(re.ErrorCode)))
		}
		// Other errors of the SDK may quote the answer's body; only its
		// kind goes further.
		return mcpFail(mcpRegistrationFailed, "The authorization server failed to register onbehalf as a client.", errors.New("registration failed"))
	}
	if resp.TokenEndpointAuthMethod != "" {
		method = resp.TokenEndpointAuthMethod
	}
	switch {
	case method != store.AuthMethodBasic && method != store.AuthMethodPost && method != store.AuthMethodNone:
		return mcpFail(mcpRegistrationFailed, "The authorization server registered a client authentication onbehalf cannot use.", fmt.Errorf("token_endpoint_auth_method %q", sanitizeCode(method)))
	case method != store.AuthMethodNone && resp.ClientSecret == "":
		return mcpFail(mcpRegistrationFailed, "The authorization server registered a client without a secret.", nil)
	case len(resp.RedirectURIs) > 0 && !slices.Contains(resp.RedirectURIs, d.s.redirectURI):
		return mcpFail(mcpRegistrationFailed, "The authorization server registered another redirect URI.", nil)
	}
	reg.ClientID, reg.ClientSecret, reg.AuthMethod = resp.ClientID, resp.ClientSecret, method
	if method == store.AuthMethodNone {
		reg.ClientSecret = ""
	}
	reg.SecretExpiresAt = resp.ClientSecretExpiresAt.UTC()
	if resp.ClientSecretExpiresAt.Unix() <= 0 {
		reg.SecretExpiresAt = time.Time{}
	}
	reg.Dynamic = true
	reg.RegisteredAt = d.s.now().UTC()
	return nil
}

// discovery is one run of discovery and registration for an MCP server,
// with its own client that remembers what the egress guard refused.
type discovery struct {
	s  *Server
	c  *http.Client
	fl *fetchLog
	// challengeScope is the scope of the probe's Bearer challenge, the
	// first choice when the configuration names none.
	challengeScope string
}

// fetchLog remembers the first request of a discovery that the egress
// guard refused or the timeout ended: the go-sdk's helpers flatten the
// errors of the requests they make, so the error alone cannot tell.
type fetchLog struct {
	mu        sync.Mutex
	forbidden error
}

// client returns a copy of base whose transport records into fl.
func (fl *fetchLog) client(base *http.Client) *http.Client {
	c := *base
	c.Transport = &recordingTransport{next: base.Transport, fl: fl}
	return &c
}

type recordingTransport struct {
	next http.RoundTripper
	fl   *fetchLog
}

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil && errors.Is(err, egress.ErrForbidden) {
		t.fl.mu.Lock()
		if t.fl.forbidden == nil {
			t.fl.forbidden = err
		}
		t.fl.mu.Unlock()
	}
	return resp, err
}

// classify returns the failure of a request refused by the egress guard or
// ended by the timeout, or nil for any other error.
func (fl *fetchLog) classify(err error) *mcpError {
	fl.mu.Lock()
	forbidden := fl.forbidden
	fl.mu.Unlock()
	switch {
	case forbidden != nil:
		return mcpFail(mcpForbiddenAddress, "A discovered address leads to a network onbehalf may not reach.", forbidden)
	case errors.Is(err, egress.ErrForbidden),
		// The go-sdk refuses a private IP literal itself, before any dial.
		err != nil && strings.Contains(err.Error(), "refers to a non-public address"):
		return mcpFail(mcpForbiddenAddress, "A discovered address leads to a network onbehalf may not reach.", err)
	case errors.Is(err, context.DeadlineExceeded):
		return mcpFail(mcpUnavailable, "The MCP server or its authorization server did not answer in time.", context.DeadlineExceeded)
	}
	return nil
}

// httpsURL returns what is wrong with a discovered URL, or "": it must be
// an absolute https URL with a host and without user information or a
// fragment.
func httpsURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "":
		return "is not an absolute URL"
	case u.Scheme != "https":
		return "is not https"
	case u.User != nil:
		return "has user information"
	case u.Fragment != "":
		return "has a fragment"
	}
	return ""
}

// mcpResolved returns p resolved for the callback of a flow: other
// providers as they are, an MCP server's from its stored registration.
func (s *Server) mcpResolved(ctx context.Context, p *oauth.Provider) (*oauth.Provider, error) {
	regs, _ := s.st.(store.RegistrationStore)
	rp, err := p.Resolve(ctx, regs)
	if err != nil && errors.Is(err, oauth.ErrNotRegistered) {
		return nil, fmt.Errorf("%w: %w", injector.ErrProviderMisconfigured, err)
	}
	return rp, err
}
