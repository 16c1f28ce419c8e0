package store

import (
	"testing"
	"time"
)

func TestActivityMerge(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	acts := []Activity{
		{},
		{LastUsedAt: t0, LastUsedBy: "a"},
		{LastUsedAt: t0, LastUsedBy: "b"},
		{LastUsedAt: t0.Add(time.Second), LastUsedBy: "a"},
		{RevokedAt: t0, RevokedBy: "user"},
		{LastUsedAt: t0.Add(-time.Hour), LastUsedBy: "z", RevokedAt: t0.Add(time.Hour), RevokedBy: "admin"},
	}
	for _, a := range acts {
		if got := a.Merge(a); got != a {
			t.Errorf("%+v merged with itself: %+v", a, got)
		}
		for _, b := range acts {
			if ab, ba := a.Merge(b), b.Merge(a); ab != ba {
				t.Errorf("not commutative: %+v · %+v = %+v, reversed %+v", a, b, ab, ba)
			}
			for _, c := range acts {
				if l, r := a.Merge(b).Merge(c), a.Merge(b.Merge(c)); l != r {
					t.Errorf("not associative over %+v, %+v, %+v: %+v vs %+v", a, b, c, l, r)
				}
			}
		}
	}
	got := acts[1].Merge(acts[3]).Merge(acts[5])
	want := Activity{LastUsedAt: t0.Add(time.Second), LastUsedBy: "a", RevokedAt: t0.Add(time.Hour), RevokedBy: "admin"}
	if got != want {
		t.Errorf("got %+v; want %+v", got, want)
	}
}
