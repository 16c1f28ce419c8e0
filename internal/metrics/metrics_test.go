package metrics

import (
	"testing"
	"time"
)

// stageCounts returns the number of observations per stage label.
func stageCounts(t *testing.T, m *Metrics) map[string]uint64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != Namespace+"_stage_duration_seconds" {
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if l.GetName() == "stage" {
					got[l.GetValue()] = metric.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return got
}

func TestStage(t *testing.T) {
	m := New()
	m.Stage(StagePolicy, time.Millisecond)
	m.Stage(StagePolicy, time.Millisecond)
	m.Stage(StageUpstream, time.Second)
	m.Stage("other", time.Millisecond) // not a pipeline constant: still recorded
	got := stageCounts(t, m)
	for stage, want := range map[string]uint64{StagePolicy: 2, StageUpstream: 1, "other": 1, StageIdentity: 0, StageToken: 0} {
		if got[stage] != want {
			t.Errorf("stage %s: %d observations; want %d", stage, got[stage], want)
		}
	}
	var none *Metrics
	none.Stage(StagePolicy, time.Millisecond) // a nil *Metrics records nothing, without panicking
}

func TestStageAllocs(t *testing.T) {
	m := New()
	allocs := testing.AllocsPerRun(100, func() { m.Stage(StagePolicy, time.Millisecond) })
	if allocs != 0 {
		t.Errorf("Stage allocates %v times; want 0", allocs)
	}
}

func BenchmarkStage(b *testing.B) {
	m := New()
	b.ReportAllocs()
	for b.Loop() {
		m.Stage(StagePolicy, time.Millisecond)
	}
}
