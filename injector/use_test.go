package injector

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// fakeActivity is an in-memory store.ActivityStore for the recorder's unit
// tests: it records each write and can be made to block or fail.
type fakeActivity struct {
	mu     sync.Mutex
	writes []string // "provider/user agent"
	recs   map[string]store.Activity
	block  chan struct{} // when set, writes wait for it to close
	fail   error
}

func (f *fakeActivity) RecordActivity(ctx context.Context, provider, user string, a store.Activity) error {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.writes = append(f.writes, provider+"/"+user+" "+a.LastUsedBy)
	if f.recs == nil {
		f.recs = map[string]store.Activity{}
	}
	f.recs[provider+"/"+user] = f.recs[provider+"/"+user].Merge(a)
	return nil
}

func (f *fakeActivity) Activity(_ context.Context, provider, user string) (store.Activity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.recs[provider+"/"+user]
	if !ok {
		return store.Activity{}, store.ErrNotFound
	}
	return a, nil
}

func (f *fakeActivity) written() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.writes...)
}

// outcomes counts what a recorder observed.
type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *outcomes) observe(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[s]++
}

func (o *outcomes) get(s string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[s]
}

// manualClock is a clock tests move by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// flush closes r, which writes whatever is queued.
func flush(t *testing.T, r *UseRecorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.Close(ctx)
}

func TestUseRecorderThrottles(t *testing.T) {
	st := &fakeActivity{}
	clock := &manualClock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	var obs outcomes
	r := NewUseRecorder(st, UseOptions{Observe: obs.observe})
	for range 100 {
		r.Used("slack", "alice", "agent-1", clock.now())
	}
	r.Used("slack", "bob", "agent-1", clock.now())
	clock.advance(UseInterval - time.Second)
	r.Used("slack", "alice", "agent-2", clock.now()) // still within the interval
	clock.advance(time.Second)
	r.Used("slack", "alice", "agent-3", clock.now()) // a minute after the first note
	flush(t, r)

	got := st.written()
	want := map[string]bool{"slack/alice agent-1": true, "slack/bob agent-1": true, "slack/alice agent-3": true}
	if len(got) != len(want) {
		t.Fatalf("writes %v; want %d of them", got, len(want))
	}
	for _, w := range got {
		if !want[w] {
			t.Errorf("unexpected write %q in %v", w, got)
		}
	}
	a, _ := st.Activity(context.Background(), "slack", "alice")
	if !a.LastUsedAt.Equal(clock.now()) || a.LastUsedBy != "agent-3" {
		t.Errorf("alice's activity %+v; want the last note, by agent-3 at %s", a, clock.now())
	}
	if obs.get(UseWritten) != 3 || obs.get(UseDropped) != 0 {
		t.Errorf("observed %v; want 3 written", obs.n)
	}
}

// TestUseRecorderNeverBlocks: with the store stuck, Used still returns at
// once; notes beyond the queue are dropped, and Close gives up on the rest
// when its context ends.
func TestUseRecorderNeverBlocks(t *testing.T) {
	st := &fakeActivity{block: make(chan struct{})}
	var obs outcomes
	r := NewUseRecorder(st, UseOptions{Observe: obs.observe})
	n := useQueueSize + 500
	start := time.Now()
	for i := range n {
		r.Used("slack", fmt.Sprintf("user-%d", i), "agent", time.Now())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("%d notes took %s with the store stuck", n, took)
	}
	// The writer holds one note; the queue the rest it could take.
	if d := obs.get(UseDropped); d < n-useQueueSize-1 || d > n-useQueueSize {
		t.Errorf("dropped %d notes; want %d or %d", d, n-useQueueSize-1, n-useQueueSize)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { r.Close(ctx); close(done) }()
	time.Sleep(100 * time.Millisecond) // Close's context has ended by now
	close(st.block)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if w := len(st.written()); w > 2 {
		t.Errorf("%d notes written after Close's context ended; want at most the two in flight", w)
	}
	if got := obs.get(UseWritten) + obs.get(UseDropped) + obs.get(UseFailed); got != n {
		t.Errorf("%d notes accounted for; want all %d", got, n)
	}
}

func TestUseRecorderFailedWrite(t *testing.T) {
	st := &fakeActivity{fail: fmt.Errorf("vault sealed: %w", store.ErrUnavailable)}
	var obs outcomes
	r := NewUseRecorder(st, UseOptions{Observe: obs.observe})
	r.Used("slack", "alice", "agent", time.Now())
	flush(t, r)
	if obs.get(UseFailed) != 1 {
		t.Errorf("observed %v; want one failed write", obs.n)
	}
}

// TestUseRecorderBoundsMemory: beyond maxTracked grants, entries older
// than the interval are swept; when none is, the note is dropped.
func TestUseRecorderBoundsMemory(t *testing.T) {
	st := &fakeActivity{}
	clock := &manualClock{t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
	var obs outcomes
	r := NewUseRecorder(st, UseOptions{Observe: obs.observe})
	r.maxTracked = 3
	for _, u := range []string{"a", "b", "c", "d"} {
		r.Used("slack", u, "agent", clock.now())
	}
	if obs.get(UseDropped) != 1 {
		t.Errorf("a fourth grant within the interval: observed %v; want it dropped", obs.n)
	}
	clock.advance(UseInterval)
	r.Used("slack", "e", "agent", clock.now())
	r.mu.RLock()
	tracked := len(r.last)
	r.mu.RUnlock()
	if tracked != 1 {
		t.Errorf("%d grants tracked after the sweep; want only the new one", tracked)
	}
	flush(t, r)
	if w := len(st.written()); w != 4 {
		t.Errorf("%d writes; want 4 (a, b, c, e)", w)
	}
}

// TestUseRecorderEmbeddedStore notes a use in a real embedded store.
func TestUseRecorderEmbeddedStore(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenEmbedded(store.EmbeddedConfig{Path: filepath.Join(dir, "g.db"), KeyFile: filepath.Join(dir, "g.key"), LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := NewUseRecorder(st, UseOptions{})
	before := time.Now()
	r.Used("github", "alice", "agent-7", time.Now())
	flush(t, r)
	a, err := st.Activity(context.Background(), "github", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if a.LastUsedBy != "agent-7" || a.LastUsedAt.Before(before.Add(-time.Second)) || a.LastUsedAt.After(time.Now()) {
		t.Errorf("activity %+v; want agent-7 just now", a)
	}
	if _, err := st.Activity(context.Background(), "github", "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bob's activity: %v; want ErrNotFound", err)
	}
}

// BenchmarkUsedThrottled is the cost Used adds to an injected request in
// the common case: the grant was noted less than UseInterval ago. Run with
// -cpu 1,4 to see the shared lock under contention.
func BenchmarkUsedThrottled(b *testing.B) {
	r := NewUseRecorder(&fakeActivity{}, UseOptions{})
	defer flush(&testing.T{}, r)
	now := time.Now()
	users := make([]string, 64)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
		r.Used("slack", users[i], "agent", now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Used("slack", users[i%len(users)], "agent", now)
			i++
		}
	})
}

// TestUseRecorderBoundsWriteRate: however many grants are used, the store
// sees at most the write rate (after one burst); the rest wait in the
// queue or are dropped, and every note is accounted for.
func TestUseRecorderBoundsWriteRate(t *testing.T) {
	st := &fakeActivity{}
	var obs outcomes
	const perSecond = 10
	r := NewUseRecorder(st, UseOptions{Observe: obs.observe, WriteRate: perSecond})
	n := useQueueSize + 100
	for i := range n {
		r.Used("slack", fmt.Sprintf("user-%d", i), "agent", time.Now())
	}
	const window = time.Second
	time.Sleep(window)
	// The burst, then the rate over the window (a slow machine writes
	// fewer, never more).
	if w, most := len(st.written()), useWriteBurst+int(perSecond*window.Seconds())+1; w > most || w < useWriteBurst {
		t.Errorf("%d notes written in %v; want between %d and %d", w, window, useWriteBurst, most)
	}
	// The writer may take the burst (and one more) while the queue fills.
	if d, least := obs.get(UseDropped), n-useQueueSize-useWriteBurst-2; d < least {
		t.Errorf("dropped %d notes; want at least %d (the queue holds %d)", d, least, useQueueSize)
	}
	flush(t, r)
	if got := obs.get(UseWritten) + obs.get(UseDropped) + obs.get(UseFailed); got != n {
		t.Errorf("%d notes accounted for; want all %d", got, n)
	}
}
