package proxy

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// policyLimits keeps the rate limits decision d names (its "limit" or
// "limits" fields) for the limit step. A limit the sidecar cannot read
// refuses the request: the policy meant it to be limited, and how is
// unknown.
func (s *Server) policyLimits(ex *exchange, d *policy.Decision) *Error {
	if s.d.Limiter == nil || len(d.Extra) == 0 {
		return nil
	}
	bs, err := ratelimit.PolicyBuckets(d.Extra)
	if err != nil {
		ex.rec.Decision = decisionDeny
		return ex.fail(newError(CodePolicyDenied, "the policy's decision carried a rate limit the sidecar cannot apply ("+err.Error()+"); an operator must fix the policy", err))
	}
	ex.limits = append(ex.limits, bs...)
	return nil
}

// limit is the pipeline's rate-limit step, after the decision and before
// any grant is read: it takes ex's tokens from the buckets of the
// configured rules it matches and of the limits its decisions named, or
// refuses it with 429 rate_limited (nothing is sent upstream) when any is
// empty or the provider asked not to be called for this user until later.
func (s *Server) limit(ctx context.Context, ex *exchange, method, path string) *Error {
	l := s.d.Limiter
	if l == nil {
		return nil
	}
	req := ratelimit.Request{Method: method, Path: path}
	if ex.subject != nil {
		req.User, req.Agent = ex.subject.User, ex.subject.Agent
	}
	if ex.route != nil {
		req.Route, req.Provider = ex.route.Name, ex.route.Provider
	}
	if ex.mcp != nil && ex.mcp.call != nil {
		for i := range ex.mcp.call.Messages {
			if m := &ex.mcp.call.Messages[i]; m.Method == mcpToolsCall && m.Tool != "" {
				req.Tools = append(req.Tools, m.Tool)
			}
		}
	}
	r := l.Check(ctx, s.d.Now(), &req, ex.limits)
	if r == nil {
		return nil
	}
	ex.rec.LimitKey = r.Key
	s.d.Metrics.RateLimited(ex.rec.Route, r.Reason)
	secs := int64((r.RetryAfter + time.Second - 1) / time.Second)
	var msg string
	switch r.Reason {
	case ratelimit.ReasonUpstream:
		msg = fmt.Sprintf("the API asked not to be called for this user until later (it answered 429 or 503 with Retry-After, or said the quota is spent); nothing was sent; try again in %d s", secs)
	case ratelimit.ReasonPolicy:
		msg = fmt.Sprintf("the policy's rate limit %q allows no more requests now; nothing was sent; try again in %d s", r.Key, secs)
	default:
		msg = fmt.Sprintf("the rate limit %q allows no more requests now; nothing was sent; try again in %d s", r.Key, secs)
	}
	e := newError(CodeRateLimited, msg, nil)
	e.RetryAfter = r.RetryAfter
	return ex.fail(e)
}

// mcpToolsCall is the JSON-RPC method that calls a tool.
const mcpToolsCall = "tools/call"

// observeUpstream lets the limiter read the provider's answer for a
// back-off it asks for (429 or 503 with Retry-After, or its rate-limit
// headers saying the quota is spent), remembered for ex's user and
// provider.
func (s *Server) observeUpstream(ex *exchange, resp *http.Response) {
	l := s.d.Limiter
	if l == nil || ex.route == nil || ex.subject == nil {
		return
	}
	if until, ok := l.Observe(s.d.Now(), ex.route.Provider, ex.subject.User, resp.StatusCode, resp.Header); ok {
		if ce := s.log.Check(zap.InfoLevel, "the provider asked for a back-off; the user's requests to it are refused until then"); ce != nil {
			ce.Write(zapDecision(ex), zap.String("provider", ex.route.Provider), zap.Int("status", resp.StatusCode), zap.Time("until", until))
		}
	}
}
