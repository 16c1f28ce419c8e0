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

// counter returns the value of the counter name with the given labels.
func counter(t *testing.T, m *Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != Namespace+"_"+name {
			continue
		}
	next:
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			if c := metric.GetCounter(); c != nil {
				return c.GetValue()
			}
			return metric.GetGauge().GetValue()
		}
	}
	return 0
}

func TestRefreshLostCountsGrantLost(t *testing.T) {
	m := New()
	m.Refresh("slack", "refreshed")
	m.Refresh("slack", "invalid_grant")
	m.Refresh("slack", OutcomeRefreshLost)
	m.Refresh("github", OutcomeRefreshLost)
	m.Refresh("github", OutcomeRefreshLost)
	if got := counter(t, m, "grants_lost_total", map[string]string{"provider": "slack"}); got != 1 {
		t.Errorf("grants_lost_total{slack} = %v; want 1 (invalid_grant is a revocation, not a loss)", got)
	}
	if got := counter(t, m, "grants_lost_total", map[string]string{"provider": "github"}); got != 2 {
		t.Errorf("grants_lost_total{github} = %v; want 2", got)
	}
	if got := counter(t, m, "refreshes_total", map[string]string{"provider": "slack", "outcome": OutcomeRefreshLost}); got != 1 {
		t.Errorf("refreshes_total{slack,refresh_lost} = %v; want 1", got)
	}
	pending := 3
	m.RegisterDeferredWrites(func() int { return pending })
	if got := counter(t, m, "refresh_writes_pending", nil); got != 3 {
		t.Errorf("refresh_writes_pending = %v; want 3", got)
	}
}
