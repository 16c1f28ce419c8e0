package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
)

// auditTrail writes a small audit trail and returns its path.
func auditTrail(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	cfg := audit.DefaultConfig()
	cfg.Sink = audit.SinkFile
	cfg.File.Path = path
	cfg.FingerprintKeyFile = filepath.Join(filepath.Dir(path), "fp.key")
	a, err := audit.New(cfg, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, r := range []*audit.Record{
		{Time: now.Add(-3 * time.Hour), Event: audit.EventRequest, DecisionID: "d1", User: "alice", Agent: "agent-7", Method: "GET", Host: "api.github.com", Path: "/user", Provider: "github", Decision: audit.DecisionAllow, Status: 200},
		{Time: now.Add(-30 * time.Minute), Event: audit.EventRequest, DecisionID: "d2", User: "alice", Agent: "agent-7", Method: "DELETE", Host: "api.github.com", Path: "/repos/acme/x", Provider: "github", Decision: audit.DecisionDeny, Reason: "agents may not delete", Status: 403, ErrorCode: "policy_denied"},
		{Time: now.Add(-20 * time.Minute), Event: audit.EventRequest, DecisionID: "d3", User: "bob", Method: "POST", Host: "slack.com", Path: "/api/chat.postMessage", Provider: "slack", Decision: audit.DecisionDeny, Status: 403, ErrorCode: "policy_denied"},
		{Time: now.Add(-10 * time.Minute), Event: audit.EventRevoke, User: "alice", Provider: "github", Extra: []zap.Field{zap.String(audit.ExtraOutcome, "ok")}},
	} {
		if err := a.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAuditShowTable(t *testing.T) {
	trail := auditTrail(t)
	out, errOut, err := cli(t, "", "audit", "show", "--user", "alice", "--since", "1h", trail)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME (UTC)") {
		t.Fatalf("table:\n%s", out)
	}
	for _, want := range []string{"request", "alice", "agent-7", "DELETE api.github.com/repos/acme/x", "deny", "403", `policy_denied "agents may not delete"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[2], "revoke") || !strings.Contains(lines[2], " ok ") {
		t.Errorf("row %q; want the revoke with its outcome", lines[2])
	}
	if strings.TrimSpace(errOut) != "2 of 4 record(s) shown" {
		t.Errorf("stderr %q; want the count", errOut)
	}
}

func TestAuditShowJSON(t *testing.T) {
	trail := auditTrail(t)
	out, _, err := cli(t, "", "audit", "show", "-o", "json", "--decision", "deny", trail)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}
	written := strings.Split(string(raw), "\n")
	want := written[1] + "\n" + written[2] + "\n"
	if out != want {
		t.Errorf("json output:\n%s\nwant the deny records' lines as written:\n%s", out, want)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["decision"] != "deny" {
			t.Errorf("line %q: %v", l, err)
		}
	}
}

func TestAuditShowFlags(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		f    auditShowFlags
		want string
	}{
		{auditShowFlags{output: "table", decision: "denny"}, `--decision "denny": did you mean "deny"?`},
		{auditShowFlags{output: "table", decision: "denied"}, `--decision "denied": want one of allow, deny, would_deny`},
		{auditShowFlags{output: "table", event: "requests"}, `--event "requests": did you mean "request"?`},
		{auditShowFlags{output: "table", event: "zzz"}, `want one of request, inject`},
		{auditShowFlags{output: "xml"}, `-o "xml"`},
		{auditShowFlags{output: "json", since: "yesterday"}, `--since "yesterday": want a duration`},
		{auditShowFlags{output: "json", until: "-1h"}, `--until "-1h": a duration back from now is positive`},
	} {
		_, err := tc.f.filter(now)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v; want a usage error containing %q", tc.f, err, tc.want)
		}
	}
	f, err := (&auditShowFlags{output: "table", since: "90m", until: "2025-06-01T11:55:00Z", user: "alice"}).filter(now)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Since.Equal(now.Add(-90*time.Minute)) || !f.Until.Equal(now.Add(-5*time.Minute)) || f.User != "alice" {
		t.Errorf("filter %+v", f)
	}
	if f, _ := (&auditShowFlags{output: "table", since: "2025-05-31"}).filter(now); !f.Since.Equal(time.Date(2025, 5, 31, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("--since 2025-05-31: %v", f.Since)
	}
}

// TestAuditVerifySummary: verify ends with one line, and draws no progress
// when its output is not a terminal.
func TestAuditVerifySummary(t *testing.T) {
	trail := auditTrail(t)
	out, _, err := cli(t, "", "audit", "verify", trail)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "ok: 4 records in 1 file(s), seq 1..4, last hash ") || strings.Contains(out, "\r") {
		t.Errorf("verify output %q; want one summary line", out)
	}
	hash := strings.Fields(out)[10]
	out, _, err = cli(t, "", "audit", "verify", "--expect-last-hash", hash, trail)
	if err != nil || strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "; the expected record is in the chain, followed by 0 record(s)\n") {
		t.Errorf("verify --expect-last-hash: %q, %v", out, err)
	}
}

// TestProgressLine: the progress line redraws in place and is wiped before
// the summary.
func TestProgressLine(t *testing.T) {
	var buf bytes.Buffer
	b := &progressLine{w: &buf}
	b.show(audit.Progress{File: "audit.log", Records: 4096, Bytes: 512, TotalBytes: 2048})
	b.show(audit.Progress{File: "audit.log", Records: 8192, Bytes: 1024, TotalBytes: 2048}) // within the interval: not drawn
	if got := buf.String(); got != "\rverifying audit.log: 4096 records, 25% of 2.0 KiB" {
		t.Errorf("drawn %q", got)
	}
	buf.Reset()
	b.clear()
	if got, want := buf.String(), "\r"+strings.Repeat(" ", len("verifying audit.log: 4096 records, 25% of 2.0 KiB"))+"\r"; got != want {
		t.Errorf("clear wrote %q; want %q", got, want)
	}
	var none *progressLine
	none.clear() // a nil line draws nothing
	if newProgressLine(&buf) != nil {
		t.Error("a progress line on a buffer; want none (not a terminal)")
	}
}
