package policy

import (
	"os"
	"context"
	"path/filepath"
	"testing"
	"github.com/open-policy-agent/opa/v1/rego"
)

func BenchmarkScratchTrivial(b *testing.B) {
	dir := b.TempDir()
	writeFileB(b, filepath.Join(dir, "p.rego"), "package onbehalf.authz\n\ndecision := {\"allow\": true}\n")
	cfg := DefaultConfig(); cfg.Paths = []string{dir}; cfg.Watch = false
	e, _ := New(context.Background(), cfg, Options{})
	in := benchInput()
	v, _ := in.Value()
	p := e.cur.Load()
	b.Run("decide", func(b *testing.B) { b.ReportAllocs(); for b.Loop() { e.Decide(context.Background(), in) } })
	b.Run("decideValue", func(b *testing.B) { b.ReportAllocs(); for b.Loop() { e.decideValue(context.Background(), v) } })
	b.Run("evalNoCtx", func(b *testing.B) { b.ReportAllocs(); for b.Loop() { p.pq.Eval(context.Background(), rego.EvalParsedInput(v), rego.EvalMetrics(noMetrics)) } })
}
func writeFileB(b *testing.B, p, c string) { if err := osWriteFile(p, []byte(c)); err != nil { b.Fatal(err) } }
var osWriteFile = func(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }
