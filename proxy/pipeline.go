package proxy

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/metrics"
	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// identify returns the acting user: from the assertion header of this
// request when present, else from the assertion the tunnel was opened with.
func (s *Server) identify(ctx context.Context, h http.Header, fallback *identity.Subject) (*identity.Subject, error) {
	ctx, st := s.startStage(ctx, metrics.StageIdentity)
	defer st.end()
	raw, err := identity.FromHeader(h, s.d.AssertionHeader)
	switch {
	case err == nil:
		return s.ids.verify(ctx, raw)
	case errors.Is(err, identity.ErrMissing) && fallback != nil:
		if !s.d.Now().Before(fallback.Expiry) {
			return nil, newError(CodeIdentityInvalid, "the assertion given on CONNECT has expired; send a fresh one in the "+s.d.AssertionHeader+" header or open a new tunnel", nil)
		}
		return fallback, nil
	}
	return nil, err
}

// decide asks policy about in and records the outcome. It returns a
// policy_denied error unless policy (or report-only mode) lets the request
// proceed.
func (s *Server) decide(ctx context.Context, ex *exchange, in *policy.Input, reportOnly bool) *Error {
	ctx, st := s.startStage(ctx, metrics.StagePolicy)
	d := s.d.Policy.Decide(ctx, in)
	st.end()
	// The revision that decided, not the one loaded now: a reload can
	// land between the two.
	ex.rec.PolicyRevision = d.Revision
	ex.rec.Reason = d.Reason
	switch {
	case d.Allow:
		ex.rec.Decision = decisionAllow
		return s.policyLimits(ex, &d)
	case d.ReportOnly || reportOnly:
		ex.rec.Decision = decisionWouldDeny
		return s.policyLimits(ex, &d)
	}
	ex.rec.Decision = decisionDeny
	msg := "policy denied this request"
	if d.Reason != "" {
		msg += ": " + d.Reason
	}
	return ex.fail(newError(CodePolicyDenied, msg, nil))
}

// policyInput builds the policy input for req to hostport (as hostPort
// renders it for scheme). Credential headers never enter it, nor does the
// route's own credential header.
func (s *Server) policyInput(req *http.Request, ex *exchange, scheme, hostport, source string) *policy.Input {
	args := policy.InputArgs{
		Source:          source,
		Scheme:          scheme,
		Host:            hostport,
		Now:             ex.start,
		AssertionHeader: s.d.AssertionHeader,
		Protocol:        ex.rec.Protocol,
	}
	if ex.rec.Protocol == policy.ProtocolWebSocket {
		args.Upgrade = "websocket"
	}
	if ex.subject != nil {
		args.Subject = policy.Subject{
			User:   ex.subject.User,
			Agent:  ex.subject.Agent,
			Issuer: ex.subject.Issuer,
			Source: ex.subject.Source,
			Claims: ex.subject.Claims,
		}
	}
	if r := ex.route; r != nil {
		pr := s.policyRoute(r)
		args.Route = pr.route
		args.DropHeaders = pr.drop
	}
	if ex.input == nil {
		ex.input = new(policy.Input)
	}
	ex.input.Reset(req, args)
	return ex.input
}

// policyRoute is what the policy input takes from one route.
type policyRoute struct {
	route *policy.Route
	drop  []string // the route's credential header
}

// policyRoute returns the policy input's view of r, made once per route:
// routes are fixed for the server's life, and NewInput only reads it.
func (s *Server) policyRoute(r *injector.Route) *policyRoute {
	if pr, ok := s.policyRoutes.Load(r); ok {
		return pr.(*policyRoute)
	}
	pr, _ := s.policyRoutes.LoadOrStore(r, &policyRoute{
		route: &policy.Route{Provider: r.Provider, Host: r.Host, Name: r.Name},
		drop:  []string{r.Header()},
	})
	return pr.(*policyRoute)
}

// hostPort renders host with its port unless the port is the scheme's
// default, the way a Host header would.
func hostPort(host string, port int, scheme string) string {
	if (scheme == "https" && port == 443) || (scheme == "http" && port == 80) || port == 0 {
		return host
	}
	if len(host) > 0 && host[0] != '[' && containsColon(host) {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

func containsColon(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return true
		}
	}
	return false
}

// fetchToken gets the user's token for the route and records where it came
// from (grant or exchange), which grant generation and which token were
// used. An IdP subject's token goes with the request, for a provider whose
// tokens come from token exchange.
func (s *Server) fetchToken(ctx context.Context, ex *exchange) *Error {
	ctx, st := s.startStage(ctx, metrics.StageToken)
	tok, err := s.d.Tokens.Token(ctx, tokenRequest(ex))
	st.end()
	if err != nil {
		e := classify(err)
		if e.Code == CodeStoreUnavailable {
			s.d.Metrics.StoreError()
		}
		if e.Code == CodeGrantMissing || e.Code == CodeReconnectRequired {
			e.ConnectURL = connectURL(s.cfg.ConnectURL, ex.route.Provider)
		}
		s.logFailure(ex, e)
		return ex.fail(e)
	}
	ex.token = tok
	ex.rec.GrantGeneration = tok.Generation
	ex.rec.TokenFingerprint = tok.Fingerprint(s.d.Fingerprint)
	ex.rec.TokenSource = tok.Source
	if ex.rec.TokenSource == "" {
		ex.rec.TokenSource = injector.SourceGrant
	}
	return nil
}

// auditInject writes the inject record that must exist before a token
// leaves the sidecar when audit is fail-closed.
func (s *Server) auditInject(ex *exchange) *Error {
	if !s.d.AuditFailClosed {
		return nil
	}
	ex.inject = ex.rec
	ex.inject.Event = audit.EventInject
	ex.inject.Time = s.d.Now()
	if err := s.d.Audit.Write(&ex.inject); err != nil {
		s.d.Metrics.AuditError()
		e := newError(CodeAuditUnavailable, "the audit trail cannot be written, so no credential is sent; an operator has been alerted", err)
		s.log.Error("audit unavailable: refusing to inject", zapDecision(ex), zapErr(err))
		return ex.fail(e)
	}
	return nil
}

func (s *Server) logFailure(ex *exchange, e *Error) {
	if e.Cause == nil {
		return
	}
	switch e.Code {
	case CodeStoreUnavailable, CodeProviderUnavailable, CodeProviderMisconfig, CodeUpstreamTLS, CodeAuditUnavailable:
		s.log.Warn("request failed", zapDecision(ex), zapCode(e.Code), zapErr(e.Cause))
	default:
		if ce := s.log.Check(debugLevel, "request failed"); ce != nil {
			ce.Write(zapDecision(ex), zapCode(e.Code), zapErr(e.Cause))
		}
	}
}

// stage is one pipeline stage being timed (and, when tracing is on,
// traced). It is a value, not a closure, so that timing a stage allocates
// nothing.
type stage struct {
	m     *metrics.Metrics
	name  string
	start time.Time
	span  trace.Span
}

// startStage starts timing (and, when tracing is on, a span for) one
// pipeline stage; its end method ends it.
func (s *Server) startStage(ctx context.Context, name string) (context.Context, stage) {
	st := stage{m: s.d.Metrics, name: name}
	if st.m != nil {
		st.start = time.Now()
	}
	if s.d.Tracer != nil {
		ctx, st.span = s.d.Tracer.Start(ctx, name)
	}
	return ctx, st
}

func (st stage) end() {
	if st.m != nil {
		st.m.Stage(st.name, time.Since(st.start))
	}
	if st.span != nil {
		st.span.End()
	}
}

// startRequestSpan starts the span of one request when tracing is on; the
// returned function ends it with what the audit record says (never the
// user, a token or the path).
func (s *Server) startRequestSpan(ctx context.Context, ex *exchange) (context.Context, func()) {
	if s.d.Tracer == nil {
		return ctx, func() {}
	}
	ctx, span := s.d.Tracer.Start(ctx, "onbehalf.request", trace.WithSpanKind(trace.SpanKindServer))
	return ctx, func() {
		r := &ex.rec
		span.SetAttributes(
			attribute.String("onbehalf.decision_id", r.DecisionID),
			attribute.String("onbehalf.route", r.Route),
			attribute.String("onbehalf.provider", r.Provider),
			attribute.String("onbehalf.decision", r.Decision),
			attribute.String("http.request.method", r.Method),
			attribute.Int("http.response.status_code", r.Status),
		)
		if r.ErrorCode != "" {
			span.SetAttributes(attribute.String("onbehalf.error_code", r.ErrorCode))
			if r.Status >= 500 {
				span.SetStatus(codes.Error, r.ErrorCode)
			}
		}
		span.End()
	}
}

// tokenRequest is what ex asks the token source for: its route's provider
// and its user, and an IdP subject's token for a provider whose tokens
// come from token exchange.
func tokenRequest(ex *exchange) injector.TokenRequest {
	req := injector.TokenRequest{Provider: ex.route.Provider, User: ex.subject.User}
	if ex.subject.Source == identity.SourceIdP {
		req.Identity = injector.SubjectToken{Issuer: ex.subject.Issuer, Type: ex.subject.Type, ID: ex.subject.ID, Value: ex.subject.Token()}
	}
	return req
}
