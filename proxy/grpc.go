package proxy

import (
	"net/http"
	"strconv"
	"strings"
)

// gRPC through routed hosts. A gRPC call is an HTTP/2 stream whose
// content-type is application/grpc (or application/grpc+proto, +json, …);
// the sidecar recognises it by that, on any route, and then
//
//   - keeps "te: trailers", which gRPC servers may require and which is
//     otherwise removed as hop-by-hop;
//   - forwards over HTTP/2 to the upstream whatever proxy.upstream.http2
//     says (gRPC has no HTTP/1.1 form), relaying the trailers that carry
//     the call's grpc-status;
//   - injects the user's token like any request: in the route's header,
//     which gRPC reads as the "authorization" metadata;
//   - answers a refusal (identity, policy, grant, upstream) with a gRPC
//     status instead of a JSON page the client cannot parse: HTTP 200,
//     content-type application/grpc, grpc-status and grpc-message in a
//     trailers-only response, the message beginning with the stable error
//     code and ending with the decision id.
//
// gRPC-Web (application/grpc-web) is plain HTTP/1.1 or HTTP/2 framing and
// is handled as such.

// isGRPC reports whether req is a gRPC call.
func isGRPC(req *http.Request) bool {
	if req.ProtoMajor != 2 {
		return false
	}
	ct := req.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/grpc") {
		return false
	}
	rest := ct[len("application/grpc"):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// gRPC status codes (google.golang.org/grpc/codes), as the sidecar uses
// them.
const (
	grpcInvalidArgument   = 3
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// grpcCode maps an agent-facing error code to the gRPC status a client
// branches on; the HTTP statuses map the way gRPC's own HTTP mapping does.
func grpcCode(c Code) int {
	switch c {
	case CodeIdentityRequired, CodeIdentityInvalid, CodeGrantMissing, CodeReconnectRequired:
		return grpcUnauthenticated
	case CodePolicyDenied, CodeNoRoute, CodeDestinationForbidden:
		return grpcPermissionDenied
	case CodeBadRequest:
		return grpcInvalidArgument
	case CodeHeaderTooLarge, CodeRateLimited:
		// RESOURCE_EXHAUSTED is gRPC's "per-user quota" status, which
		// rate-limited gRPC APIs answer; clients back off on it.
		return grpcResourceExhausted
	case CodeStoreUnavailable, CodeProviderUnavailable, CodeProviderMisconfig, CodeAuditUnavailable,
		CodeUpstreamTLS, CodeUpstreamUnreachable:
		return grpcUnavailable
	}
	return grpcInternal
}

// Response metadata the sidecar adds to a gRPC refusal, beside grpc-status
// and grpc-message: the same headers as on an HTTP refusal.
const headerConnectURL = "Onbehalf-Connect-Url"

// writeGRPCStatus answers a gRPC call with e as a trailers-only response.
func writeGRPCStatus(w http.ResponseWriter, e *Error, decisionID string) {
	msg := string(e.Code) + ": " + e.Message
	if e.ConnectURL != "" {
		msg += " (connect_url " + e.ConnectURL + ")"
	}
	if decisionID != "" {
		msg += " (decision_id " + decisionID + ")"
	}
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(grpcCode(e.Code)))
	h.Set("Grpc-Message", grpcPercentEncode(msg))
	h.Set(headerError, string(e.Code))
	e.setRetryAfter(h)
	if decisionID != "" {
		h.Set(headerDecisionID, decisionID)
	}
	if e.ConnectURL != "" {
		h.Set(headerConnectURL, e.ConnectURL)
	}
	w.WriteHeader(http.StatusOK)
}

// grpcPercentEncode encodes a grpc-message value: bytes outside printable
// ASCII, and "%", are percent-encoded (the gRPC over HTTP/2 spec).
func grpcPercentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// newH2Transport returns a transport like base that speaks only HTTP/2 to
// upstreams, for gRPC calls.
func newH2Transport(base *http.Transport) *http.Transport {
	tr := base.Clone()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	tr.ForceAttemptHTTP2 = true
	return tr
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }
