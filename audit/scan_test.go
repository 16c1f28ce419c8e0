package audit

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestScan writes a trail with several users, decisions and events, plus
// lines that are not records, and reads it back through filters.
func TestScan(t *testing.T) {
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	for i, r := range []struct{ user, decision string }{{"alice", DecisionAllow}, {"bob", DecisionDeny}, {"alice", DecisionDeny}, {"alice", DecisionWouldDeny}} {
		rec := sampleRecord(i)
		rec.Time = testTime.Add(time.Duration(i) * time.Hour)
		rec.User, rec.Decision = r.user, r.decision
		if err := a.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Write(&Record{Time: testTime.Add(5 * time.Hour), Event: EventRevoke, User: "alice", Provider: "slack",
		Extra: []zap.Field{zap.String(ExtraOutcome, "ok")}}); err != nil {
		t.Fatal(err)
	}
	ls := lines(out.Bytes())
	dir := t.TempDir()
	first, second := filepath.Join(dir, "audit.log.1"), filepath.Join(dir, "audit.log")
	writeFile(t, first, joinLines(ls[:2]))
	// A truncated line, an empty line and an over-long line are skipped.
	tail := append(joinLines(ls[2:]), []byte("{\"time\":\"2025-\n\n")...)
	tail = append(tail, append(bytes.Repeat([]byte("x"), MaxLineBytes+10), '\n')...)
	tail = append(tail, ls[0][:20]...) // no newline at the end
	writeFile(t, second, tail)

	ids := func(f Filter) ([]string, ScanStats) {
		t.Helper()
		var got []string
		st, err := Scan([]string{first, second}, f, func(e *Entry) error {
			got = append(got, e.User+"/"+e.Outcome())
			if !bytes.Equal(e.Line, ls[e.Seq-1]) {
				t.Errorf("seq %d: Line %q; want the line as written", e.Seq, e.Line)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, st
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want []string
	}{
		{"all", Filter{}, []string{"alice/allow", "bob/deny", "alice/deny", "alice/would_deny", "alice/ok"}},
		{"user", Filter{User: "alice"}, []string{"alice/allow", "alice/deny", "alice/would_deny", "alice/ok"}},
		{"decision", Filter{Decision: DecisionDeny}, []string{"bob/deny", "alice/deny"}},
		{"event", Filter{Event: EventRevoke}, []string{"alice/ok"}},
		{"since", Filter{Since: testTime.Add(2 * time.Hour)}, []string{"alice/deny", "alice/would_deny", "alice/ok"}},
		{"until", Filter{Until: testTime.Add(2 * time.Hour)}, []string{"alice/allow", "bob/deny"}},
		{"user and decision", Filter{User: "alice", Decision: DecisionDeny}, []string{"alice/deny"}},
		{"nobody", Filter{User: "carol"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, st := ids(tc.f)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v; want %v", got, tc.want)
			}
			if st.Records != 5 || st.Selected != len(tc.want) || st.Skipped != 3 {
				t.Errorf("stats %+v; want 5 records, %d selected, 3 skipped", st, len(tc.want))
			}
		})
	}

	stop := errors.New("stop")
	n := 0
	if _, err := Scan([]string{first, second}, Filter{}, func(*Entry) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("a callback error: got %v after %d calls; want it returned after 1", err, n)
	}
	if _, err := Scan([]string{filepath.Join(dir, "missing")}, Filter{}, func(*Entry) error { return nil }); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing file: got %v", err)
	}
}
