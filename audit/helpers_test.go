package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// testTime is the fixed clock of the tests.
var testTime = time.Date(2026, 6, 18, 6, 0, 0, 123456000, time.UTC)

func fixedNow() time.Time { return testTime }

// syncBuffer is a bytes.Buffer safe for the concurrent writes a logger and
// an auditor make.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// jsonLogger returns an operational logger that writes JSON to buf.
func jsonLogger(buf *syncBuffer) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(buf), zapcore.DebugLevel))
}

// stdoutConfig is a config writing only to stdout.
func stdoutConfig() Config {
	return DefaultConfig()
}

// fileConfig is a config writing to dir/audit.log with durability d.
func fileConfig(dir string, d Durability) Config {
	cfg := DefaultConfig()
	cfg.Sink = SinkFile
	cfg.File.Path = filepath.Join(dir, "audit.log")
	cfg.File.Durability = d
	return cfg
}

// newAuditor returns an auditor closed at the end of the test.
func newAuditor(t testing.TB, cfg Config, o Options) *Auditor {
	t.Helper()
	if o.Now == nil {
		o.Now = fixedNow
	}
	a, err := New(cfg, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// sampleRecord returns a plausible request record numbered i.
func sampleRecord(i int) *Record {
	return &Record{
		Time:             testTime.Add(time.Duration(i) * time.Millisecond),
		Event:            EventRequest,
		DecisionID:       fmt.Sprintf("dec-%04d", i),
		User:             "alice",
		Agent:            "agent-7",
		Issuer:           "https://orchestrator.example",
		Method:           "POST",
		Scheme:           "https",
		Host:             "slack.com",
		Path:             fmt.Sprintf("/api/chat.postMessage?n=%d", i),
		Route:            "slack",
		Provider:         "slack",
		Decision:         DecisionAllow,
		Reason:           "alice may post",
		PolicyRevision:   "rev-1",
		GrantGeneration:  3,
		TokenFingerprint: "0123456789abcdef",
		Status:           200,
		DurationMS:       12.5,
		BytesIn:          100,
		BytesOut:         2000,
	}
}

// writeRecords writes n sample records, numbered from first.
func writeRecords(t testing.TB, a *Auditor, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		if err := a.Write(sampleRecord(i)); err != nil {
			t.Fatalf("Write record %d: %v", i, err)
		}
	}
}

// lines splits b into lines without their newlines; a final line without
// a newline is kept.
func lines(b []byte) [][]byte {
	s := bytes.Split(b, []byte("\n"))
	if len(s) > 0 && len(s[len(s)-1]) == 0 {
		s = s[:len(s)-1]
	}
	return s
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func hashHex(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// decode parses one record line into a generic map.
func decode(t testing.TB, line []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("record %q is not JSON: %v", line, err)
	}
	return m
}

// joinLines joins lines with newlines, ending with one.
func joinLines(ls [][]byte) []byte {
	if len(ls) == 0 {
		return nil
	}
	return append(bytes.Join(ls, []byte("\n")), '\n')
}

// verifyBytes verifies b as one file named "audit.log".
func verifyBytes(b []byte) (Report, error) {
	return verify([]input{bytesInput("audit.log", b)}, [sha256.Size]byte{}, false, nil)
}

func bytesInput(name string, b []byte) input {
	return input{name: name, open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}
}

func mustContainNone(t *testing.T, where, text string, needles ...string) {
	t.Helper()
	for _, n := range needles {
		if strings.Contains(strings.ToLower(text), strings.ToLower(n)) {
			t.Errorf("%s contains %q:\n%s", where, n, text)
		}
	}
}

// writtenOnce checks that the audit file at path holds one valid, anchored
// chain of total records numbered by sampleRecord, each written exactly
// once, and returns each decision id's line number.
func writtenOnce(t *testing.T, path string, total int) map[string]int {
	t.Helper()
	rep, err := Verify([]string{path})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Records != total || rep.LastSeq != uint64(total) || !rep.Anchored {
		t.Errorf("got %+v; want %d anchored records", rep, total)
	}
	pos := map[string]int{}
	for n, l := range lines(readFile(t, path)) {
		id := decode(t, l)["decision_id"].(string)
		if _, dup := pos[id]; dup {
			t.Errorf("%s written twice", id)
		}
		pos[id] = n
	}
	for i := range total {
		id := fmt.Sprintf("dec-%04d", i)
		if _, ok := pos[id]; !ok {
			t.Errorf("%s not written", id)
		}
	}
	return pos
}
