package policy

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/profiler"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

func TestScratchProfile(t *testing.T) {
	for _, name := range []string{"task_claims", "slack_channels", "default"} {
		s, _ := loadFiles([]string{filepath.Join(examplesDir, name)})
		c := newCompiler()
		c.Compile(s.modules)
		store := inmem.NewFromObjectWithOpts(s.data, inmem.OptReturnASTValuesOnRead(true))
		p := profiler.New()
		pq, err := rego.New(rego.Query(exampleQuery(name)), rego.Compiler(c), rego.Store(store), rego.QueryTracer(p)).PrepareForEval(context.Background())
		if err != nil { t.Fatal(err) }
		v, _ := exampleRequests[name].allow.input().Value()
		for i := 0; i < 2000; i++ {
			pq.Eval(context.Background(), rego.EvalParsedInput(v), rego.EvalQueryTracer(p))
		}
		fmt.Println("==", name)
		for _, r := range p.ReportTopNResults(12, []string{"total_time_ns"}) {
			fmt.Printf("%8dns %6d %s:%d\n", r.ExprTimeNs/2000, r.NumEval/2000, r.Location.File[len(r.Location.File)-12:], r.Location.Row)
		}
	}
}
