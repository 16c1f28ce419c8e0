package proxy

import (
	"errors"
	"io"
	"net/http"

	"github.com/elazarl/goproxy"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/proxy/egress"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// handlePlain handles an absolute-form plain-HTTP request. Credentials are
// never injected over plain HTTP: a request to a routed host is refused, and
// an unrouted one is passed on untouched only when unrouted tunnelling is
// on, identity is valid and policy allows it.
func (s *Server) handlePlain(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	host, port, err := injector.SplitHostPort(req.URL.Host, 80)
	ex := s.newExchange(req.Method, "http", req.URL.Host, redactedPath(req.URL))
	ctx.UserData = ex
	ex.countBody(req)
	reject := func(e *Error) (*http.Request, *http.Response) {
		ex.fail(e)
		s.logFailure(ex, e)
		return req, e.response(req, ex.rec.DecisionID, false)
	}
	if err != nil || host == "" || req.URL.Scheme != "http" {
		return reject(newError(CodeBadRequest, "the request URL must be an absolute http:// URL", err))
	}
	if !egress.CanonicalHost(host) {
		return reject(newError(CodeBadRequest, "the request host must be a host name or an address in its standard form", nil))
	}
	ex.rec.Host = hostPort(host, port, "http")
	if s.d.Routes.HostRouted(host) {
		return reject(newError(CodeNoRoute, "this host is only served over HTTPS through the sidecar; use an https:// URL", nil))
	}
	if s.cfg.Unrouted != UnroutedTunnel {
		return reject(newError(CodeNoRoute, "no route for this host; the sidecar only reaches hosts its routes name", nil))
	}
	path, err := injector.CanonicalPath(requestPath(req))
	if err != nil {
		return reject(refusePath(err))
	}
	setPath(req.URL, path.Escaped)
	ex.rec.Path = redactedPath(req.URL)
	if target, ok := lookalikeHeader(req.Header, []string{s.d.AssertionHeader}); ok {
		return reject(refuseLookalike(target))
	}
	sub, err := s.identify(req.Context(), req.Header, nil)
	if errors.Is(err, identity.ErrMissing) {
		// Proxy-Authorization is the other place a client can put it.
		if raw, perr := identity.FromProxyAuthorization(req.Header); !errors.Is(perr, identity.ErrMissing) {
			if perr != nil {
				err = perr
			} else {
				sub, err = s.ids.verify(req.Context(), raw)
			}
		}
	}
	if err != nil {
		return reject(classify(err))
	}
	ex.setSubject(sub)
	in := s.policyInput(req, ex, "http", ex.rec.Host, req.RemoteAddr)
	if e := s.decide(req.Context(), ex, in, false); e != nil {
		return reject(e)
	}
	sanitizeRequest(req.Header, s.d.AssertionHeader)
	return req, nil
}

// handlePlainResponse finishes a plain request: errors from the transport
// become the agent-facing error, and the audit record is written once the
// body has been relayed.
func (s *Server) handlePlainResponse(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
	ex, ok := ctx.UserData.(*exchange)
	if !ok {
		return resp
	}
	if resp == nil {
		e := ex.fail(classify(ctx.Error))
		s.logFailure(ex, e)
		resp = e.response(ctx.Req, ex.rec.DecisionID, false)
	}
	sanitizeResponse(resp.Header)
	resp.Header.Set(headerDecisionID, ex.rec.DecisionID)
	resp.Body = &auditOnClose{r: resp.Body, done: func(n int64) { s.finish(ex, resp.StatusCode, n) }}
	return resp
}

// auditOnClose counts a relayed body and calls done once, when the relay
// closes it.
type auditOnClose struct {
	r    io.ReadCloser
	n    int64
	done func(int64)
}

func (a *auditOnClose) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	a.n += int64(n)
	return n, err
}

func (a *auditOnClose) Close() error {
	err := a.r.Close()
	if a.done != nil {
		a.done(a.n)
		a.done = nil
	}
	return err
}
