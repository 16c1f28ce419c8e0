package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestIsGRPC(t *testing.T) {
	tests := []struct {
		ct    string
		major int
		want  bool
	}{
		{"application/grpc", 2, true},
		{"application/grpc+proto", 2, true},
		{"application/grpc+json", 2, true},
		{"application/grpc;charset=utf-8", 2, true},
		{"application/grpc-web", 2, false},
		{"application/grpc-web+proto", 2, false},
		{"application/grpcx", 2, false},
		{"application/json", 2, false},
		{"application/grpc", 1, false},
	}
	for _, tt := range tests {
		r := &http.Request{ProtoMajor: tt.major, Header: http.Header{"Content-Type": {tt.ct}}}
		if got := isGRPC(r); got != tt.want {
			t.Errorf("isGRPC(%q, HTTP/%d) = %v; want %v", tt.ct, tt.major, got, tt.want)
		}
	}
}

func TestWriteGRPCStatus(t *testing.T) {
	w := httptest.NewRecorder()
	e := newError(CodeGrantMissing, "the user has not connected this app: 100% sure ✓", nil)
	e.ConnectURL = "https://connect.test/connect/chat"
	writeGRPCStatus(w, e, "abc123")
	h := w.Result().Header
	if w.Code != 200 || h.Get("Content-Type") != "application/grpc" || h.Get("Grpc-Status") != "16" {
		t.Fatalf("got %d %v; want 200 application/grpc grpc-status 16", w.Code, h)
	}
	want := "grant_missing: the user has not connected this app: 100%25 sure %E2%9C%93 (connect_url https://connect.test/connect/chat) (decision_id abc123)"
	if got := h.Get("Grpc-Message"); got != want {
		t.Errorf("grpc-message %q; want %q", got, want)
	}
	if h.Get("Onbehalf-Error") != "grant_missing" || h.Get("Onbehalf-Decision-Id") != "abc123" || h.Get("Onbehalf-Connect-Url") == "" {
		t.Errorf("metadata %v; want the error code, decision id and connect URL", h)
	}
	if w.Body.Len() != 0 {
		t.Errorf("body %q; want a trailers-only response", w.Body.String())
	}
}

func TestGRPCCodes(t *testing.T) {
	for code, want := range map[Code]int{
		CodeIdentityRequired: 16, CodeIdentityInvalid: 16, CodeGrantMissing: 16, CodeReconnectRequired: 16,
		CodePolicyDenied: 7, CodeNoRoute: 7, CodeDestinationForbidden: 7,
		CodeBadRequest: 3, CodeHeaderTooLarge: 8, CodeRateLimited: 8,
		CodeStoreUnavailable: 14, CodeAuditUnavailable: 14, CodeUpstreamUnreachable: 14, CodeUpstreamTLS: 14,
		CodeInternal: 13,
	} {
		if got := grpcCode(code); got != want {
			t.Errorf("grpcCode(%s) = %d; want %d", code, got, want)
		}
	}
}
