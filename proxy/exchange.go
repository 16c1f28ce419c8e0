package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/policy"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
	"github.com/onbehalf-dev/onbehalf/proxy/ratelimit"
)

// Decisions as the audit record spells them.
const (
	decisionAllow     = "allow"
	decisionDeny      = "deny"
	decisionWouldDeny = "would_deny"
)

// exchange is one request's passage through the pipeline: what is known
// about it so far, and the audit record being filled in.
type exchange struct {
	start time.Time
	rec   audit.Record
	// inject is the fail-closed inject record, kept here so that writing
	// it costs no allocation of its own.
	inject  audit.Record
	subject *identity.Subject
	route   *injector.Route
	token   injector.Token
	err     *Error
	// bytesIn counts the request body as it is read; it lives in the
	// exchange so that counting allocates nothing.
	bytesIn countingReader
	// forwarded is set once the request body was handed to the
	// transport, which then owns it until it closes it.
	forwarded bool
	// scrubbed counts the secrets replaced in the response, and scrub
	// relays its body (kept here so that scrubbing allocates nothing of
	// its own).
	scrubbed int
	scrub    scrubBody
	// mcp is set on an MCP route: refusals are JSON-RPC errors.
	mcp *mcpExchange
	// limits are the rate-limit buckets the policy's decisions named.
	limits []ratelimit.Bucket
	// out and outURL are the request sent upstream (outboundRequest),
	// kept here so that making it allocates nothing.
	out    http.Request
	outURL url.URL
	// up is the response body of an upstream call made through the
	// sidecar's own client; cancel ends one made through net/http's
	// transports, which end a call by its request's context.
	up     *upBody
	cancel context.CancelFunc
	// watch is the HTTP/1.1 tunnel's watch on its upstream calls (nil on
	// HTTP/2, whose streams' calls end with their contexts).
	watch *callWatch
	// input is the policy input, reset for each request: startExchange
	// keeps it, with its header map, for the next request ex serves.
	input *policy.Input
}

// abortCall ends the upstream call early, from any goroutine: a read of
// its response in progress fails at once, and its connection is not
// reused.
func (ex *exchange) abortCall() {
	switch {
	case ex.cancel != nil:
		ex.cancel()
	case ex.up != nil:
		ex.up.abort()
	}
}

// endCall releases what the upstream call holds once the request is
// answered.
func (ex *exchange) endCall() {
	if ex.cancel != nil {
		ex.cancel()
	}
}

func (s *Server) newExchange(method, scheme, host, path string) *exchange {
	ex := new(exchange)
	s.startExchange(ex, method, scheme, host, path)
	return ex
}

// getExchange returns an exchange for an HTTP/1.1 tunnel's request, to be
// started with startExchange and handed back with releaseExchange: the
// exchanges (the two records in each, over a kilobyte, and its policy
// input) are used again rather than allocated per request, and a tunnel
// holds none while it waits for its next request.
func (s *Server) getExchange() *exchange {
	if ex, ok := s.exchanges.Get().(*exchange); ok {
		return ex
	}
	return new(exchange)
}

// releaseExchange ends ex's upstream call, and keeps ex for another
// request when reusable says nothing can hold it any more: its audit
// records are encoded when written and policy decides on a copy of the
// input, but a request body the transport still owns counts its bytes in
// ex, and a WebSocket relay's goroutines hold it.
func (s *Server) releaseExchange(ex *exchange, reusable *bool) {
	ex.endCall()
	if *reusable {
		s.exchanges.Put(ex)
	}
}

// startExchange makes ex the exchange of a new request, as newExchange
// does, in place, keeping its policy input for reuse.
func (s *Server) startExchange(ex *exchange, method, scheme, host, path string) {
	now := s.d.Now()
	*ex = exchange{start: now, input: ex.input}
	ex.rec = audit.Record{
		Time:       now,
		Event:      audit.EventRequest,
		DecisionID: newDecisionID(),
		Method:     method,
		Scheme:     scheme,
		Protocol:   policy.ProtocolHTTP1,
		Host:       host,
		Path:       path,
	}
}

// newDecisionID returns 16 random hex characters: unique enough to find
// one request in a day of audit records, short enough to quote.
func newDecisionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

func (ex *exchange) setSubject(sub *identity.Subject) {
	ex.subject = sub
	ex.rec.User = sub.User
	ex.rec.Agent = sub.Agent
	ex.rec.Issuer = sub.Issuer
	ex.rec.IdentitySource = sub.Source
	ex.rec.IdentityJTI = sub.ID
	ex.rec.IdentityFingerprint = sub.Fingerprint
}

func (ex *exchange) setRoute(r *injector.Route) {
	ex.route = r
	ex.rec.Route = r.Name
	ex.rec.Provider = r.Provider
}

// fail records e as the outcome; a decision of deny is kept when policy
// refused, otherwise the decision field says what policy had decided (or
// nothing, when the request failed before policy).
func (ex *exchange) fail(e *Error) *Error {
	ex.err = e
	ex.rec.ErrorCode = string(e.Code)
	if ex.rec.Reason == "" && e.Code != CodePolicyDenied {
		ex.rec.Reason = e.Message
	}
	return e
}

// finish completes the record with the outcome.
func (s *Server) finish(ex *exchange, status int, bytesOut int64) {
	ex.rec.Status = status
	ex.rec.DurationMS = float64(s.d.Now().Sub(ex.start).Microseconds()) / 1000
	ex.rec.BytesOut = bytesOut
	ex.rec.BytesIn = ex.bytesIn.n
	if ex.scrubbed > 0 {
		ex.rec.Scrubbed = ex.scrubbed
		s.d.Metrics.Scrubbed(ex.scrubbed)
	}
	if ex.rec.Decision == "" {
		ex.rec.Decision = decisionDeny
	}
	s.d.Metrics.Request(ex.rec.Route, ex.rec.Decision, ex.rec.ErrorCode, ex.rec.Protocol, s.d.Now().Sub(ex.start))
	// Nothing waits for the canonical record: the answer has gone out and,
	// with fail-closed audit, the inject record was written before the
	// token left. Submitting it lets it share the next batch's write(2);
	// a record no sink takes is counted and logged by the auditor (the
	// Lost hook).
	if err := s.d.Audit.Submit(&ex.rec); err != nil {
		s.d.Metrics.AuditError()
		s.log.Error("audit record not written", zapDecision(ex), zapErr(err))
	}
}

// countingReader counts bytes read through it.
type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// countBody makes req's body count the bytes read from it into
// ex.bytesIn.
func (ex *exchange) countBody(req *http.Request) {
	if req.Body == nil || req.Body == http.NoBody {
		return
	}
	ex.bytesIn.r = req.Body
	req.Body = &ex.bytesIn
}
