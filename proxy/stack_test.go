package proxy

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// deep uses about n KiB of stack, as a request's call chain does.
//
//go:noinline
func deep(n int) int {
	var pad [1024]byte
	pad[n%len(pad)] = byte(n)
	if n <= 1 {
		return int(pad[1])
	}
	return deep(n-1) + int(pad[n%len(pad)])
}

// waitGoroutines waits until at most want goroutines run.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines; want at most %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOnOwnStack(t *testing.T) {
	// The goroutines before any worker, counted as a subtest sees them
	// (its own goroutine included).
	base := runtime.NumGoroutine() + 1
	var w stacks

	t.Run("result", func(t *testing.T) {
		for i := range 100 {
			if got := onOwnStack(&w, func() int { return deep(16) + i }); got != deep(16)+i {
				t.Fatalf("call %d: got %d; want %d", i, got, deep(16)+i)
			}
		}
	})

	t.Run("panic is raised in the caller", func(t *testing.T) {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(r.(string), "boom") {
				t.Errorf("recovered %v; want the worker's panic", r)
			}
		}()
		onOwnStack(&w, func() int { panic("boom") })
		t.Error("onOwnStack returned after a panic")
	})

	t.Run("concurrent calls", func(t *testing.T) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 32 {
			wg.Go(func() {
				<-start
				for j := range 50 {
					if got := onOwnStack(&w, func() int { return i*1000 + j }); got != i*1000+j {
						t.Errorf("got %d; want %d", got, i*1000+j)
					}
				}
			})
		}
		close(start)
		wg.Wait()
	})

	t.Run("closeIdle ends idle workers", func(t *testing.T) {
		w.closeIdle()
		waitGoroutines(t, base)
		// The pool works on.
		if got := onOwnStack(&w, func() string { return "again" }); got != "again" {
			t.Errorf("after closeIdle: got %q", got)
		}
	})

	t.Run("idle workers end by themselves", func(t *testing.T) {
		onOwnStack(&w, func() int { return deep(8) })
		time.Sleep(workerIdle)
		waitGoroutines(t, base)
	})

	t.Run("close", func(t *testing.T) {
		onOwnStack(&w, func() int { return 1 })
		w.close()
		waitGoroutines(t, base)
		if got := onOwnStack(&w, func() int { return 2 }); got != 2 {
			t.Errorf("after close: got %d; want 2", got)
		}
		waitGoroutines(t, base)
	})
}

// chanWorkers is how stacks handed calls to its workers before they were
// coroutines, kept as BenchmarkOnOwnStack's baseline: an unbuffered
// channel to an idle worker goroutine, a channel back to the caller.
type chanWorkers struct{ calls chan func() }

func (c *chanWorkers) run(f func()) {
	select {
	case c.calls <- f:
	default:
		go func() {
			f()
			for f := range c.calls {
				f()
			}
		}()
	}
}

func chanOnOwnStack[T any](c *chanWorkers, f func() T) T {
	var out T
	done := make(chan struct{})
	c.run(func() { defer close(done); out = f() })
	<-done
	return out
}

// BenchmarkOnOwnStack compares a goroutine started for each call, as
// tunnels ran their requests before workers, a worker handed each call
// over a channel, as they did next, and the coroutine workers of stacks.
// The first grows its stack to the call's depth by copying, every time;
// the second goes through the scheduler twice per call. The call uses
// about 16 KiB of stack, less than a request does; "parallel" runs as
// many callers as the tunnels of the load harness.
func BenchmarkOnOwnStack(b *testing.B) {
	b.Run("goroutine per call", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			done := make(chan int)
			go func() { done <- deep(16) }()
			<-done
		}
	})
	for _, parallel := range []bool{false, true} {
		suffix := ""
		if parallel {
			suffix = "/parallel"
		}
		loop := func(b *testing.B, call func()) {
			b.ReportAllocs()
			if !parallel {
				for b.Loop() {
					call()
				}
				return
			}
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
		}
		b.Run("channel hand-off"+suffix, func(b *testing.B) {
			c := &chanWorkers{calls: make(chan func())}
			defer close(c.calls)
			loop(b, func() { chanOnOwnStack(c, func() int { return deep(16) }) })
		})
		b.Run("coroutine"+suffix, func(b *testing.B) {
			var w stacks
			defer w.close()
			loop(b, func() { onOwnStack(&w, func() int { return deep(16) }) })
		})
	}
}
