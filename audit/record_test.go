package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/zap"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenKey is the fingerprint key of the golden records, so their
// token_fingerprint is stable.
var goldenKey = []byte("golden-fingerprint-key-0123456789abcdef")

func TestRecordGolden(t *testing.T) {
	fp, err := NewFingerprinter(goldenKey)
	if err != nil {
		t.Fatal(err)
	}
	request := func(decision string) *Record {
		r := &Record{
			Time:             testTime,
			Event:            EventRequest,
			DecisionID:       "01JY0000000000000000000000",
			User:             "alice@example.com",
			Agent:            "agent-7",
			Issuer:           "https://orchestrator.example",
			Method:           "POST",
			Scheme:           "https",
			Host:             "slack.com",
			Path:             "/api/chat.postMessage?channel=C123&access_token=xoxb-golden-secret&x=1",
			Route:            "slack",
			Provider:         "slack",
			Decision:         decision,
			PolicyRevision:   "sha256:4f2a",
			GrantGeneration:  7,
			TokenFingerprint: fp.Token("xoxb-golden-secret"),
			DurationMS:       41.25,
			BytesIn:          512,
			BytesOut:         2048,
		}
		switch decision {
		case DecisionAllow:
			r.Reason = "alice may post to her channels"
			r.Status = 200
		case DecisionDeny:
			r.Reason = "channel C123 is not allowed"
			r.Status = 403
			r.ErrorCode = "policy_denied"
			r.GrantGeneration, r.TokenFingerprint, r.BytesOut = 0, "", 0
		case DecisionWouldDeny:
			r.Reason = "channel C123 is not allowed (report mode)"
			r.Status = 200
		}
		return r
	}
	tests := []struct {
		name string
		rec  *Record
	}{
		{"allow", request(DecisionAllow)},
		{"deny", request(DecisionDeny)},
		{"would_deny", request(DecisionWouldDeny)},
		{"exchange", func() *Record {
			// An IdP token presented, the app's token obtained by
			// exchange: no grant generation, both fingerprints.
			r := request(DecisionAllow)
			r.Issuer, r.IdentitySource, r.IdentityJTI = "https://idp.example", "idp", "AT.rYpl-golden"
			r.IdentityFingerprint = fp.Token("eyJ-golden-idp-token")
			r.GrantGeneration, r.TokenSource = 0, "exchange"
			return r
		}()},
		{"refresh", &Record{
			Time: testTime, Event: EventRefresh, User: "alice@example.com", Provider: "slack",
			GrantGeneration: 8, DurationMS: 230,
			Extra: []zap.Field{zap.String(ExtraOutcome, "ok"), zap.Bool(ExtraRotated, true)},
		}},
		{"mcp", &Record{
			Time: testTime, Event: EventRequest, DecisionID: "01JY0000000000000000000001", User: "alice@example.com",
			Agent: "agent-7", Method: "POST", Scheme: "https", Host: "mcp.example.com", Path: "/mcp",
			Route: "github-mcp", Provider: "github", MCPMethod: "tools/call", MCPTool: "delete_repository",
			Decision: DecisionDeny, Reason: "destructive tools are not allowed", Status: 200, ErrorCode: "policy_denied",
		}},
		{"policy_reload", &Record{
			Time: testTime, Event: EventPolicyReload, PolicyRevision: "sha256:9c1e",
			Extra: []zap.Field{zap.String(ExtraError, "authz.rego:3: rego_parse_error: unexpected eof")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
			if err := a.Write(tt.rec); err != nil {
				t.Fatalf("Write: %v", err)
			}
			got := out.Bytes()
			if strings.Contains(string(got), "xoxb-golden-secret") {
				t.Fatalf("record contains the token: %s", got)
			}
			path := filepath.Join("testdata", "golden", tt.name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run with -update to create it): %v", err)
			}
			if d := cmp.Diff(decode(t, bytes.TrimSpace(want)), decode(t, bytes.TrimSpace(got))); d != "" {
				t.Errorf("record fields differ from %s (-want +got):\n%s", path, d)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("record bytes differ from %s (field order or formatting):\ngot  %s\nwant %s", path, got, want)
			}
		})
	}
}

// TestRecordFieldNames pins the JSON names of docs/design.md#audit-record:
// every field a fully populated request record carries, and nothing else.
func TestRecordFieldNames(t *testing.T) {
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	r := sampleRecord(1)
	r.ErrorCode = "x"
	r.IdentitySource, r.IdentityJTI, r.IdentityFingerprint, r.TokenSource = "idp", "jti-1", "fedcba9876543210", "exchange"
	r.Extra = []zap.Field{zap.String(ExtraOutcome, "ok")}
	if err := a.Write(r); err != nil {
		t.Fatal(err)
	}
	m := decode(t, bytes.TrimSpace(out.Bytes()))
	var got []string
	for k := range m {
		got = append(got, k)
	}
	want := []string{
		"time", "event", "decision_id", "user", "agent", "issuer", "identity_source", "identity_jti",
		"identity_fingerprint", "method", "scheme", "host", "path",
		"route", "provider", "decision", "reason", "policy_revision", "grant_generation",
		"token_fingerprint", "token_source", "status", "duration_ms", "bytes_in", "bytes_out", "error_code",
		"extra", "seq", "prev_hash",
	}
	less := func(a, b string) bool { return a < b }
	if d := cmp.Diff(want, got, cmpopts.SortSlices(less)); d != "" {
		t.Errorf("field names (-want +got):\n%s", d)
	}
}

// TestRecordOmitsEmpty checks that empty fields are left out except time,
// event, user and the chain fields.
func TestRecordOmitsEmpty(t *testing.T) {
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	if err := a.Write(&Record{Event: EventStart}); err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(out.String())
	want := `{"time":"2026-06-18T06:00:00.123456Z","event":"start","user":"","seq":1,"prev_hash":"` + GenesisHash + `"}`
	if got != want {
		t.Errorf("got %s; want %s", got, want)
	}
}

func TestRecordLongFieldsAreCapped(t *testing.T) {
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	r := sampleRecord(1)
	r.Path = "/" + strings.Repeat("é", 3*maxFieldBytes)
	r.Reason = strings.Repeat("\x01", 2*maxFieldBytes) // escaped as \u0001: six bytes each
	if err := a.Write(r); err != nil {
		t.Fatalf("Write: %v", err)
	}
	m := decode(t, bytes.TrimSpace(out.Bytes()))
	for _, k := range []string{"path", "reason"} {
		v := m[k].(string)
		if len(v) > maxFieldBytes || !strings.HasSuffix(v, truncatedMark) {
			t.Errorf("%s: got %d bytes ending %q; want at most %d ending %q", k, len(v), v[len(v)-20:], maxFieldBytes, truncatedMark)
		}
		if strings.ContainsRune(v, '\uFFFD') {
			t.Errorf("%s was cut inside a UTF-8 sequence", k)
		}
	}
}

func TestRecordValidate(t *testing.T) {
	tests := []struct {
		name string
		rec  *Record
	}{
		{"nil", nil},
		{"no event", &Record{User: "alice"}},
		{"event with spaces", &Record{Event: "request now"}},
		{"event upper case", &Record{Event: "Request"}},
		{"unknown decision", &Record{Event: EventRequest, Decision: "maybe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
			err := a.Write(tt.rec)
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("got %v; want ErrInvalidRecord", err)
			}
			if errors.Is(err, ErrUnavailable) {
				t.Errorf("got %v; an invalid record is not a sink failure", err)
			}
			if out.Len() != 0 {
				t.Errorf("got output %q; want none", out.String())
			}
			// The chain did not advance: the next record is the first.
			r := &Record{Event: EventStart}
			if err := a.Write(r); err != nil {
				t.Fatal(err)
			}
			if r.Seq != 1 || r.PrevHash != GenesisHash {
				t.Errorf("got seq %d prev %s; want 1 and the genesis hash", r.Seq, r.PrevHash)
			}
		})
	}
}

func TestRecordDurationRounded(t *testing.T) {
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	if err := a.Write(&Record{Event: EventRefresh, DurationMS: 0.1 + 0.2}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"duration_ms":0.3,`) {
		t.Errorf("got %s; want duration_ms 0.3", out.String())
	}
}

// TestRecordDecodes: a written line decodes back into a Record with
// encoding/json (what tests and tools reading the trail do), apart from
// Extra and the redacted path.
func TestRecordDecodes(t *testing.T) {
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	want := sampleRecord(3)
	want.ErrorCode = "store_unavailable"
	want.Extra = []zap.Field{zap.String(ExtraOutcome, "ok")}
	if err := a.Write(want); err != nil {
		t.Fatal(err)
	}
	var got Record
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &got); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(*want, got, cmpopts.IgnoreFields(Record{}, "Extra")); d != "" {
		t.Errorf("decoded record (-want +got):\n%s", d)
	}
}
