package audit

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapEncoder is the encoder Auditor uses for records with Extra fields,
// and used for all of them before encodeRecord.
func zapEncoder() zapcore.Encoder {
	return zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		SkipLineEnding: true,
		EncodeTime:     zapcore.TimeEncoderOfLayout(timeLayout),
		EncodeDuration: zapcore.MillisDurationEncoder,
	})
}

// zapBody is what zap's encoder makes of r, without the closing brace.
func zapBody(t testing.TB, r *Record) string {
	t.Helper()
	buf, err := zapEncoder().EncodeEntry(zapcore.Entry{}, []zapcore.Field{zap.Inline(r)})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Free()
	return strings.TrimSuffix(buf.String(), "}")
}

func handBody(r *Record) string {
	buf := encodeRecord(r)
	defer buf.Free()
	return buf.String()
}

// awkward are strings that exercise every escaping rule.
var awkward = []string{
	"", "plain", `quote " and \ backslash`, "new\nline\rreturn\ttab", "\x00\x01\x1f\x7f",
	"héllo wörld ✓ 🙂", "bad \xff\xfe utf8 \xc3", "\u2028\u2029<>&", "/v1/x?token=abc&ok=1",
	strings.Repeat("é", maxFieldBytes), strings.Repeat("a", maxFieldBytes+10),
}

func randomRecord(rng *rand.Rand) *Record {
	s := func() string {
		if rng.IntN(3) == 0 {
			return ""
		}
		return awkward[rng.IntN(len(awkward))]
	}
	n := func() int64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return -rng.Int64N(1000)
		default:
			return rng.Int64N(1 << 40)
		}
	}
	durations := []float64{0, 0.1 + 0.2, 1.23456789, 12345.6789, -2.5, math.NaN(), math.Inf(1), math.Inf(-1), 1e-9, 1e21}
	return &Record{
		Time:  time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(time.FixedZone("X", 3600)),
		Event: "request", DecisionID: s(), User: s(), Agent: s(), Issuer: s(),
		IdentitySource: s(), IdentityJTI: s(), IdentityFingerprint: s(), Method: s(), Scheme: s(),
		Protocol: s(), Host: s(), Path: s(), Route: s(), Provider: s(), MCPMethod: s(), MCPTool: s(),
		MCPResource: s(), ToolsHidden: int(n()), Decision: s(), Reason: s(), PolicyRevision: s(),
		GrantGeneration: n(), TokenFingerprint: s(), TokenSource: s(), Status: int(n()),
		DurationMS: durations[rng.IntN(len(durations))], BytesIn: n(), BytesOut: n(),
		Scrubbed: int(n()), LimitKey: s(), ErrorCode: s(),
	}
}

// TestEncodeRecordMatchesZap: for records of every shape, encodeRecord
// writes exactly the bytes zap's encoder writes, so trails and their hash
// chains are the same whichever encoded them.
func TestEncodeRecordMatchesZap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		r := randomRecord(rng)
		if got, want := handBody(r), zapBody(t, r); got != want {
			t.Fatalf("record %d:\ngot  %s\nwant %s", i, got, want)
		}
	}
	// And the full request record of the sidecar.
	r := &Record{Time: time.Date(2026, 6, 18, 6, 0, 0, 123456789, time.UTC), Event: EventRequest,
		DecisionID: "d-1", User: "alice", Agent: "agent-7", Issuer: "https://orchestrator", Method: "POST",
		Scheme: "https", Protocol: "http/1.1", Host: "slack.com", Path: "/api/chat.postMessage?x=1",
		Route: "slack.com", Provider: "slack", Decision: DecisionAllow, Reason: "ok", PolicyRevision: "abc",
		GrantGeneration: 3, TokenFingerprint: "fp", TokenSource: "grant", Status: 200, DurationMS: 1.25,
		BytesIn: 100, BytesOut: 200}
	if got, want := handBody(r), zapBody(t, r); got != want {
		t.Fatalf("request record:\ngot  %s\nwant %s", got, want)
	}
}

// FuzzEncodeRecord compares the two encoders on arbitrary strings and
// numbers.
func FuzzEncodeRecord(f *testing.F) {
	for _, s := range awkward[:9] {
		f.Add(s, s, int64(7), 1.5)
	}
	f.Fuzz(func(t *testing.T, user, path string, n int64, d float64) {
		r := &Record{Time: time.Unix(n%4e9, 0), Event: "request", User: user, Path: path, Host: user,
			Reason: path, Status: int(n), BytesIn: n, DurationMS: d, GrantGeneration: -n}
		if got, want := handBody(r), zapBody(t, r); got != want {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}

// TestAppendTimeMatchesFormat: appendTime writes what Format writes with
// the record layout, for every year Format writes in four digits and for
// the years it writes otherwise.
func TestAppendTimeMatchesFormat(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	times := []time.Time{
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 6, 1, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 3, 23, 30, 0, 999, time.FixedZone("east", 5*3600)),
		{},
	}
	for range 10000 {
		times = append(times, time.Unix(rng.Int64N(400e9)-200e9, rng.Int64N(1e9)).In(time.FixedZone("X", rng.IntN(86400)-43200)))
	}
	for _, tm := range times {
		buf := recordPool.Get()
		appendTime(buf, tm)
		if got, want := buf.String(), tm.UTC().Format(timeLayout); got != want {
			t.Fatalf("appendTime(%v) = %q; want %q", tm, got, want)
		}
		buf.Free()
	}
}

// BenchmarkAppendTime: a record's time by time.Format's layout and by
// appendTime.
func BenchmarkAppendTime(b *testing.B) {
	tm := time.Now()
	buf := recordPool.Get()
	b.Run("format", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			buf.AppendTime(tm.UTC(), timeLayout)
		}
	})
	b.Run("append", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			appendTime(buf, tm)
		}
	})
}

// BenchmarkEncodeRecord: a sidecar's request record, by zap's encoder and
// by encodeRecord.
func BenchmarkEncodeRecord(b *testing.B) {
	r := &Record{Time: time.Now(), Event: EventRequest, DecisionID: "0193b5a2-7c1e-7b6a-9f0e-3c2d1a0b9c8d",
		User: "alice", Agent: "agent-7", Issuer: "https://orchestrator.example.com", IdentitySource: "orchestrator",
		Method: "POST", Scheme: "https", Protocol: "http/1.1", Host: "api.example.com", Path: "/v1/messages",
		Route: "api.example.com", Provider: "example", Decision: DecisionAllow, Reason: "allowed",
		PolicyRevision: "sha256:0123456789ab", GrantGeneration: 4, TokenFingerprint: "a1b2c3d4e5f60718",
		TokenSource: "grant", Status: 200, DurationMS: 0.734, BytesIn: 100, BytesOut: 512}
	b.Run("zap", func(b *testing.B) {
		enc := zapEncoder()
		b.ReportAllocs()
		for b.Loop() {
			buf, err := enc.EncodeEntry(zapcore.Entry{}, []zapcore.Field{zap.Inline(r)})
			if err != nil {
				b.Fatal(err)
			}
			buf.Free()
		}
	})
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeRecord(r).Free()
		}
	})
}
