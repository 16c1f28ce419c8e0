package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Code is a stable error code returned to the agent
// (docs/design.md#error-codes).
type Code string

// The error codes the agent can see. Their names and statuses are a
// contract: agents and their authors branch on them.
const (
	CodeIdentityRequired     Code = "identity_required"
	CodeIdentityInvalid      Code = "identity_invalid"
	CodePolicyDenied         Code = "policy_denied"
	CodeNoRoute              Code = "no_route"
	CodeReconnectRequired    Code = "reconnect_required"
	CodeGrantMissing         Code = "grant_missing"
	CodeExchangeDenied       Code = "exchange_denied"
	CodeStoreUnavailable     Code = "store_unavailable"
	CodeProviderUnavailable  Code = "provider_unavailable"
	CodeProviderMisconfig    Code = "provider_misconfigured"
	CodeAuditUnavailable     Code = "audit_unavailable"
	CodeUpstreamTLS          Code = "upstream_tls"
	CodeUpstreamUnreachable  Code = "upstream_unreachable"
	CodeUpstreamInvalid      Code = "upstream_invalid"
	CodeDestinationForbidden Code = "destination_forbidden"
	CodeBadRequest           Code = "bad_request"
	CodeHeaderTooLarge       Code = "request_header_too_large"
	CodeBodyTooLarge         Code = "request_body_too_large"
	CodeRateLimited          Code = "rate_limited"
	CodeInternal             Code = "internal_error"
)

// Status returns the HTTP status that goes with c.
func (c Code) Status() int {
	switch c {
	case CodeIdentityRequired, CodeIdentityInvalid, CodeReconnectRequired, CodeGrantMissing:
		return http.StatusUnauthorized
	case CodePolicyDenied, CodeNoRoute, CodeDestinationForbidden, CodeExchangeDenied:
		return http.StatusForbidden
	case CodeStoreUnavailable, CodeProviderUnavailable, CodeProviderMisconfig, CodeAuditUnavailable:
		return http.StatusServiceUnavailable
	case CodeUpstreamTLS, CodeUpstreamUnreachable, CodeUpstreamInvalid:
		return http.StatusBadGateway
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeHeaderTooLarge:
		return http.StatusRequestHeaderFieldsTooLarge
	case CodeBodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeRateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// JSON-RPC returns the JSON-RPC error code that carries c in a refusal on
// an MCP route: -31000 minus the HTTP status the code has elsewhere
// (policy_denied -31403, grant_missing -31401, store_unavailable -31503).
// MCP asks implementations to allocate their own codes outside the
// JSON-RPC reserved range -32768..-32000; keeping the HTTP status in the
// number makes the codes easy to recognise, and the stable string code
// travels in the error's data.
func (c Code) JSONRPC() int { return -31000 - c.Status() }

// Error is a failure on its way to the agent: a code and a message a human
// can act on. Messages never carry tokens, internal addresses, store paths or
// provider error bodies; the cause is kept for operational logs only.
type Error struct {
	Code    Code
	Message string
	// ConnectURL is where the human connects the provider again, for
	// grant_missing and reconnect_required.
	ConnectURL string
	// Cause is the underlying error, for logs (never sent to the agent).
	Cause error
	// RetryAfter is when the agent may try again, for rate_limited: sent
	// as Retry-After, in whole seconds.
	RetryAfter time.Duration
	// RPCCode is the JSON-RPC error code of a refusal on an MCP route
	// when the JSON-RPC layer names one (a parse error, a header
	// mismatch); zero means the code's own (Code.JSONRPC).
	RPCCode int
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }
func (e *Error) Unwrap() error { return e.Cause }

func newError(code Code, msg string, cause error) *Error {
	return &Error{Code: code, Message: msg, Cause: cause}
}

// classify maps any error from the pipeline to the agent-facing Error. It is
// the one place where internal errors become codes.
func classify(err error) *Error {
	var e *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return e
	case errors.Is(err, identity.ErrMissing):
		return newError(CodeIdentityRequired, "this request needs a signed assertion naming the user the agent acts for", err)
	case errors.Is(err, identity.ErrInvalid):
		return newError(CodeIdentityInvalid, "the assertion was refused: "+identityReason(err), err)
	case errors.Is(err, store.ErrInvalidName):
		// A verified assertion whose user id no grant can be stored under
		// (a space, a slash): the identity is what is wrong, not the API.
		return newError(CodeIdentityInvalid, "the assertion's user id is not one grants can be stored under: "+identityReason(err), err)
	case errors.Is(err, injector.ErrNoSubjectToken):
		return newError(CodeExchangeDenied, "this app's tokens come from token exchange with the identity provider; present an identity token from that provider", err)
	case errors.Is(err, injector.ErrExchangeDenied):
		return newError(CodeExchangeDenied, "the identity provider or the app refused to issue a token for this user by token exchange", err)
	case errors.Is(err, injector.ErrGrantMissing):
		return newError(CodeGrantMissing, "the user has not connected this app; they can connect it at connect_url", err)
	case errors.Is(err, injector.ErrReconnectRequired):
		return newError(CodeReconnectRequired, "the user's connection to this app has expired or was revoked; they must reconnect it at connect_url", err)
	case errors.Is(err, injector.ErrProviderUnavailable):
		return newError(CodeProviderUnavailable, "the app's sign-in service is not answering; the token could not be renewed, try again later", err)
	case errors.Is(err, injector.ErrProviderMisconfigured):
		return newError(CodeProviderMisconfig, "the sidecar's client registration with this app was refused; an operator must fix it", err)
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrDecrypt):
		return newError(CodeStoreUnavailable, "the grant store is not reachable; try again shortly", err)
	case errors.Is(err, egress.ErrForbidden):
		return newError(CodeDestinationForbidden, "the destination resolves to an address the sidecar does not connect to", err)
	case errors.Is(err, errResponseHeaderTooLarge), isTransportHeaderLimit(err):
		return newError(CodeUpstreamInvalid, "the API's response header section is larger than the sidecar relays (proxy.upstream.max_response_header_bytes); nothing of it was passed on", err)
	case errors.Is(err, errUpstreamInvalid):
		return newError(CodeUpstreamInvalid, "the API's response could not be relayed safely; nothing of it was passed on", err)
	case isTLSError(err):
		return newError(CodeUpstreamTLS, "the upstream server's TLS certificate could not be verified", err)
	}
	return newError(CodeUpstreamUnreachable, "the upstream server could not be reached", err)
}

// identityReason returns the reason identity gave for refusing an
// assertion. identity errors are written to be safe for the agent: they
// never contain the token.
func identityReason(err error) string {
	msg := err.Error()
	const max = 200
	if len(msg) > max {
		msg = msg[:max]
	}
	return msg
}

// errUpstreamInvalid classifies an upstream response the proxy refuses to
// relay (502 upstream_invalid); errResponseHeaderTooLarge is the case of a
// head over the limit.
var (
	errUpstreamInvalid        = errors.New("invalid upstream response")
	errResponseHeaderTooLarge = fmt.Errorf("%w: response header section too large", errUpstreamInvalid)
)

// isTransportHeaderLimit recognises net/http's refusal of a response head
// over Transport.MaxResponseHeaderBytes (HTTP/1.1) or of a header list over
// the advertised limit (HTTP/2, off by default). Neither has an exported
// type or sentinel, so the text is matched; TestResponseHeaderLimit pins
// the HTTP/1.1 one.
func isTransportHeaderLimit(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "server response headers exceeded") ||
		strings.Contains(msg, "response header list larger than advertised limit")
}

func isTLSError(err error) bool {
	var (
		unknownAuth x509.UnknownAuthorityError
		hostname    x509.HostnameError
		invalid     x509.CertificateInvalidError
		verify      *tls.CertificateVerificationError
		recordHdr   tls.RecordHeaderError
		alert       tls.AlertError
	)
	return errors.As(err, &unknownAuth) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &recordHdr) || errors.As(err, &alert)
}

// errorBody is the JSON the agent receives.
type errorBody struct {
	Error      Code   `json:"error"`
	Message    string `json:"message"`
	DecisionID string `json:"decision_id,omitempty"`
	ConnectURL string `json:"connect_url,omitempty"`
}

func (e *Error) body(decisionID string) []byte {
	b, _ := json.Marshal(errorBody{Error: e.Code, Message: e.Message, DecisionID: decisionID, ConnectURL: e.ConnectURL})
	return append(b, '\n')
}

// response builds the error response for req (which may be nil).
func (e *Error) response(req *http.Request, decisionID string, connect bool) *http.Response {
	body := e.body(decisionID)
	status := e.Code.Status()
	if connect && e.Code == CodeIdentityRequired {
		status = http.StatusProxyAuthRequired
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set(headerError, string(e.Code))
	if decisionID != "" {
		h.Set(headerDecisionID, decisionID)
	}
	e.setRetryAfter(h)
	switch {
	case status == http.StatusProxyAuthRequired:
		h.Set("Proxy-Authenticate", `Bearer realm="onbehalf"`)
	case e.Code == CodeIdentityRequired || e.Code == CodeIdentityInvalid:
		h.Set("WWW-Authenticate", `Bearer realm="onbehalf", error="invalid_token"`)
	}
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// setRetryAfter sets Retry-After on a refusal that says when to try
// again.
func (e *Error) setRetryAfter(h http.Header) {
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	}
}

// headerDecisionID carries the decision id on every response the sidecar
// produces or forwards, so an agent's log line can be matched to the audit
// record.
const headerDecisionID = "Onbehalf-Decision-Id"

// headerError carries the error code on every refusal the sidecar produces.
// Clients such as curl never print the body of a refused CONNECT, so the
// code must be readable from the head too (`curl -v`).
const headerError = "Onbehalf-Error"

// connectURL returns where user connects provider, or "" when no connect
// server is configured.
func connectURL(base, provider string) string {
	if base == "" {
		return ""
	}
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	return u.JoinPath("connect", provider).String()
}
