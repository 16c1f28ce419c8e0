package policy

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

func BenchmarkScratchPE(b *testing.B) {
	for _, name := range exampleDirs(b) {
		s, err := loadFiles([]string{filepath.Join(examplesDir, name)})
		if err != nil { b.Fatal(err) }
		in := exampleRequests[name].allow.input()
		v, _ := in.Value()
		for _, pe := range []bool{false, true} {
			c := newCompiler()
			c.Compile(s.modules)
			store := inmem.NewFromObjectWithOpts(s.data, inmem.OptReturnASTValuesOnRead(true))
			r := rego.New(rego.Query(exampleQuery(name)), rego.Compiler(c), rego.Store(store), rego.Capabilities(capabilities()))
			var opts []rego.PrepareOption
			if pe { opts = append(opts, rego.WithPartialEval()) }
			pq, err := r.PrepareForEval(context.Background(), opts...)
			if err != nil { b.Fatalf("%s pe=%v: %v", name, pe, err) }
			p := &prepared{pq: pq}
			b.Run(name+map[bool]string{false:"/plain", true:"/pe"}[pe], func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					d := p.decide(context.Background(), v, 1e9)
					if !d.Allow { b.Fatalf("%+v", d) }
				}
			})
		}
	}
}
