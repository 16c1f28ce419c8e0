package audit

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Events: the value of a record's event field.
const (
	// EventRequest is the canonical record of one proxied request, written
	// when the request ends (or is refused).
	EventRequest = "request"
	// EventInject is written synchronously before a token leaves the
	// sidecar when audit is fail-closed: the request record as known at that
	// point (decision, grant_generation and token_fingerprint included;
	// no status, duration or byte counts yet). If it cannot be written the
	// token is not sent. The request record that follows carries the same
	// decision_id.
	EventInject = "inject"
	// EventRefresh records a token refresh: provider, user, grant_generation,
	// duration_ms, and in Extra [ExtraOutcome], [ExtraRotated] and, when the
	// call or what followed it failed, [ExtraError].
	EventRefresh = "refresh"
	// EventExchange records a token exchange (an ID-JAG from the IdP,
	// traded at the app's authorization server): provider, user,
	// identity_jti of the presented token, duration_ms, and in Extra
	// [ExtraOutcome], [ExtraStep] and, when it failed, [ExtraError].
	EventExchange = "exchange"
	// EventConnect records a user connecting a provider account: provider,
	// user, and [ExtraOutcome].
	EventConnect = "connect"
	// EventRevoke records a grant being revoked: provider, user, and
	// [ExtraOutcome].
	EventRevoke = "revoke"
	// EventPolicyReload records a policy (re)load: policy_revision, and when
	// the new policy was rejected error_code "policy_invalid" with the
	// reason.
	EventPolicyReload = "policy_reload"
	// EventStart records the sidecar starting: policy_revision, and
	// [ExtraVersion] and [ExtraConfigHash].
	EventStart = "start"
	// EventStop records a clean shutdown, with the same fields as start.
	EventStop = "stop"
	// EventGrantPut records a grant stored from the command line (`onbehalf
	// grants put`): provider, user, grant_generation, token_fingerprint, and
	// [ExtraOutcome] and [ExtraVia].
	EventGrantPut = "grant_put"
	// EventRotate is the first record of every audit file after the first:
	// written when the file sink rotates (or finds its active file empty
	// while the chain goes on), it links the new file to the last record
	// of the one before. Verify accepts a trail that starts with one (the
	// older files were dropped by rotation) and refuses a trail that
	// starts anywhere else but seq 1.
	EventRotate = "rotate"
)

// Decisions: the value of a record's decision field.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
	// DecisionWouldDeny is a deny under a route in report mode: the request
	// proceeded, the record says the policy would have refused it.
	DecisionWouldDeny = "would_deny"
)

// Keys for [Record.Extra] used by the non-request events. They are written
// inside the record's "extra" object, so they never collide with the
// canonical fields.
const (
	// ExtraOutcome says how the event ended: refreshed, invalid_grant, …
	// (refresh); exchanged, refused, unavailable, misconfigured
	// (exchange); ok, denied, failed, refused (connect); ok, partial,
	// not_found, failed (revoke).
	ExtraOutcome = "outcome"
	// ExtraRotated says whether a refresh received a new refresh token.
	ExtraRotated = "rotated"
	// ExtraStep says where an exchange ended: idp (the token exchange) or
	// as (the app's authorization server).
	ExtraStep = "step"
	// ExtraError is a short error description (refresh, exchange). It must not
	// contain secrets or provider response bodies.
	ExtraError = "error"
	// ExtraVersion is the onbehalf version (start, stop).
	ExtraVersion = "version"
	// ExtraConfigHash is a hash of the effective configuration (start, stop).
	ExtraConfigHash = "config_hash"
	// ExtraVia says which writer made a grant change: cli, connect.
	ExtraVia = "via"
)

// ErrInvalidRecord reports a record that cannot be written as given (no
// event, unknown decision). It is a programming error, not a sink failure.
var ErrInvalidRecord = errors.New("invalid audit record")

// Record is one audit record. The JSON field names are a contract
// (docs/design.md#audit-record). Empty fields are omitted from the output
// except time, event, user and the chain fields seq and prev_hash.
//
// Record implements zapcore.ObjectMarshaler (the body, without the chain
// fields), so it can also be logged through an ordinary zap logger.
type Record struct {
	// Time is when the event happened; Write sets it to the current time
	// when zero. Encoded in UTC with microseconds.
	Time time.Time `json:"time"`
	// Event is one of the Event constants. Required.
	Event string `json:"event"`
	// DecisionID correlates the records of one request with the error
	// response the agent saw.
	DecisionID string `json:"decision_id,omitempty"`
	// User is the human the agent acted for (the assertion's sub); empty
	// when identification failed, but always present in the output.
	User string `json:"user"`
	// Agent is the assertion's act.sub.
	Agent string `json:"agent,omitempty"`
	// Issuer is the assertion's iss.
	Issuer string `json:"issuer,omitempty"`
	// IdentitySource is where the identity came from: "orchestrator" or
	// "idp" (docs/design.md#identity-sources).
	IdentitySource string `json:"identity_source,omitempty"`
	// IdentityJTI is the jti of the assertion or IdP token the request
	// presented, so the record can be matched with the issuer's own logs.
	IdentityJTI string `json:"identity_jti,omitempty"`
	// IdentityFingerprint is [Fingerprinter.Token] of an IdP token the
	// request presented; never the token itself.
	IdentityFingerprint string `json:"identity_fingerprint,omitempty"`
	Method              string `json:"method,omitempty"`
	Scheme              string `json:"scheme,omitempty"`
	// Protocol is what the agent spoke for this request: "http/1.1", "h2"
	// (one HTTP/2 stream), "grpc" (a gRPC call over HTTP/2) or "websocket"
	// (an upgraded connection; its record is written when it closes).
	Protocol string `json:"protocol,omitempty"`
	Host     string `json:"host,omitempty"`
	// Path is the request's path and query (request-URI form). Credentials
	// in the query are replaced by REDACTED on encoding (see [RedactPath]).
	Path string `json:"path,omitempty"`
	// Route names the matched route.
	Route    string `json:"route,omitempty"`
	Provider string `json:"provider,omitempty"`
	// MCPMethod, MCPTool and MCPResource are the JSON-RPC method, the tool
	// of a tools/call and the URI of a resources/read (or subscribe) on an
	// MCP route; for a batch, each is the messages' values in order,
	// joined with ",".
	MCPMethod   string `json:"mcp_method,omitempty"`
	MCPTool     string `json:"mcp_tool,omitempty"`
	MCPResource string `json:"mcp_resource,omitempty"`
	// ToolsHidden is how many tools, prompts and resources a list
	// response on an MCP route lost because policy would refuse them to
	// this user and agent.
	ToolsHidden int `json:"tools_hidden,omitempty"`
	// Decision is allow, deny or would_deny.
	Decision string `json:"decision,omitempty"`
	// Reason is the policy's reason for the decision.
	Reason         string `json:"reason,omitempty"`
	PolicyRevision string `json:"policy_revision,omitempty"`
	// GrantGeneration is the generation of the grant whose token was used.
	GrantGeneration int64 `json:"grant_generation,omitempty"`
	// TokenFingerprint is [Fingerprinter.Token] of the injected token; never
	// the token itself.
	TokenFingerprint string `json:"token_fingerprint,omitempty"`
	// TokenSource says what supplied the injected token: "grant" (the
	// user's stored grant) or "exchange" (a token exchange at the IdP and
	// the app's authorization server).
	TokenSource string `json:"token_source,omitempty"`
	// Status is the HTTP status returned to the agent.
	Status int `json:"status,omitempty"`
	// DurationMS is the time taken, in milliseconds.
	DurationMS float64 `json:"duration_ms,omitempty"`
	BytesIn    int64   `json:"bytes_in,omitempty"`
	BytesOut   int64   `json:"bytes_out,omitempty"`
	// Scrubbed is how many times a secret of the injected token's grant
	// was replaced in the response before it reached the agent (an API
	// that echoes credentials).
	Scrubbed int `json:"scrubbed,omitempty"`
	// LimitKey names the rate-limit bucket (or provider back-off) that
	// refused the request with rate_limited: the rule's name and the values
	// it is keyed by ("per-user:alice"), "policy:" and the key the policy
	// named, or "upstream:PROVIDER:USER".
	LimitKey string `json:"limit_key,omitempty"`
	// ErrorCode is the agent-facing error code of a request record
	// (docs/design.md#error-codes); other events put their own failure codes
	// here.
	ErrorCode string `json:"error_code,omitempty"`
	// Extra carries the fields of the other events (see the Extra
	// constants), encoded in order inside an "extra" object. Use plain
	// fields (zap.String, zap.Bool, zap.Int64, …); never a secret.
	Extra []zap.Field `json:"-"`

	// Seq is the record's position in its chain, starting at 1. Set by
	// Write; any value given is ignored.
	Seq uint64 `json:"seq"`
	// PrevHash is the hex SHA-256 of the previous record's line, or 64
	// zeros for the first record of a chain. Set by Write; any value given
	// is ignored.
	PrevHash string `json:"prev_hash"`
}

var _ zapcore.ObjectMarshaler = (*Record)(nil)

// Canonical JSON keys of the chain fields.
const (
	keySeq      = "seq"
	keyPrevHash = "prev_hash"
	keyExtra    = "extra"
)

// timeLayout encodes record times with a fixed width (microseconds, UTC),
// so lines sort by time as text.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// MarshalLogObject encodes the record's body: every field except the chain
// fields, in the order docs/design.md#audit-record lists them, with the
// path redacted.
func (r *Record) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddTime("time", r.Time.UTC())
	enc.AddString("event", r.Event)
	addString(enc, "decision_id", r.DecisionID)
	enc.AddString("user", capField(r.User))
	addString(enc, "agent", r.Agent)
	addString(enc, "issuer", r.Issuer)
	addString(enc, "identity_source", r.IdentitySource)
	addString(enc, "identity_jti", capField(r.IdentityJTI))
	addString(enc, "identity_fingerprint", r.IdentityFingerprint)
	addString(enc, "method", r.Method)
	addString(enc, "scheme", r.Scheme)
	addString(enc, "protocol", r.Protocol)
	addString(enc, "host", r.Host)
	addString(enc, "path", RedactPath(r.Path))
	addString(enc, "route", r.Route)
	addString(enc, "provider", r.Provider)
	addString(enc, "mcp_method", r.MCPMethod)
	addString(enc, "mcp_tool", r.MCPTool)
	addString(enc, "mcp_resource", r.MCPResource)
	if r.ToolsHidden != 0 {
		enc.AddInt("tools_hidden", r.ToolsHidden)
	}
	addString(enc, "decision", r.Decision)
	addString(enc, "reason", r.Reason)
	addString(enc, "policy_revision", r.PolicyRevision)
	if r.GrantGeneration != 0 {
		enc.AddInt64("grant_generation", r.GrantGeneration)
	}
	addString(enc, "token_fingerprint", r.TokenFingerprint)
	addString(enc, "token_source", r.TokenSource)
	if r.Status != 0 {
		enc.AddInt("status", r.Status)
	}
	if r.DurationMS != 0 {
		// Rounded to microseconds: float arithmetic noise
		// (0.30000000000000004) is not information.
		enc.AddFloat64("duration_ms", math.Round(r.DurationMS*1000)/1000)
	}
	if r.BytesIn != 0 {
		enc.AddInt64("bytes_in", r.BytesIn)
	}
	if r.BytesOut != 0 {
		enc.AddInt64("bytes_out", r.BytesOut)
	}
	if r.Scrubbed != 0 {
		enc.AddInt("scrubbed", r.Scrubbed)
	}
	addString(enc, "limit_key", capField(r.LimitKey))
	addString(enc, "error_code", r.ErrorCode)
	if len(r.Extra) > 0 {
		return enc.AddObject(keyExtra, extraFields(r.Extra))
	}
	return nil
}

// maxFieldBytes caps each string field. Paths and hosts come from the
// agent; a capped field keeps every record well under MaxLineBytes even
// when JSON escaping multiplies its size.
const maxFieldBytes = 8 << 10

// truncatedMark ends a field cut at maxFieldBytes.
const truncatedMark = "...[truncated]"

func addString(enc zapcore.ObjectEncoder, key, val string) {
	if val != "" {
		enc.AddString(key, capField(val))
	}
}

// capField cuts s to maxFieldBytes on a UTF-8 boundary.
func capField(s string) string {
	if len(s) <= maxFieldBytes {
		return s
	}
	n := maxFieldBytes - len(truncatedMark)
	for i := 0; i < utf8.UTFMax && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n] + truncatedMark
}

// extraFields encodes zap fields as the members of one object.
type extraFields []zap.Field

func (fs extraFields) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for i := range fs {
		fs[i].AddTo(enc)
	}
	return nil
}

// validate reports what keeps r from being written.
func (r *Record) validate() error {
	if r.Event == "" {
		return fmt.Errorf("%w: event is required", ErrInvalidRecord)
	}
	if !isIdent(r.Event) {
		return fmt.Errorf("%w: event must be lower-case letters and underscores", ErrInvalidRecord)
	}
	switch r.Decision {
	case "", DecisionAllow, DecisionDeny, DecisionWouldDeny:
	default:
		return fmt.Errorf("%w: decision must be allow, deny or would_deny", ErrInvalidRecord)
	}
	return nil
}

func isIdent(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}
