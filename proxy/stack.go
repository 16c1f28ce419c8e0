package proxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long a worker goroutine waits for the next call before
// it ends. Under load a worker is busy again within microseconds; a second
// of quiet means the burst is over, and its stack is given back.
const workerIdle = time.Second

// stacks runs calls on worker goroutines that outlive one call.
//
// A tunnel's goroutine lives as long as the tunnel, mostly idle, waiting
// for the next request; the deep work of a handshake and of a request
// (signatures, policy evaluation, the upstream call) would grow its stack
// to tens of kilobytes, which an idle goroutine keeps until garbage
// collections shrink it by halves. So that work runs elsewhere, and an idle
// intercepted connection costs its buffers and a small stack
// (BenchmarkIdleTunnelMemory). A goroutine started for each call would
// grow its stack from the smallest size by copying, every time; a worker
// that is handed the next call keeps the stack the last one grew
// (BenchmarkOnOwnStack). There are as many workers as calls in flight at
// the busiest moment of the last second.
//
// The zero value is ready to use. Its methods are safe for concurrent use.
type stacks struct {
	// calls hands a call to a worker waiting for one; unbuffered, so a
	// send succeeds only when a worker is idle.
	calls chan func()
	// release is closed to end the workers idle at that moment
	// (closeIdle); a worker reads the current one each time it goes idle.
	release atomic.Pointer[chan struct{}]
	// closed ends every worker as it goes idle, for good.
	closed atomic.Bool
	once   sync.Once
}

func (w *stacks) init() {
	w.once.Do(func() {
		w.calls = make(chan func())
		ch := make(chan struct{})
		w.release.Store(&ch)
	})
}

// run runs f on an idle worker, or on a new one when none is idle, and
// returns at once.
func (w *stacks) run(f func()) {
	w.init()
	select {
	case w.calls <- f:
	default:
		go w.work(f)
	}
}

// work runs f, then each call handed to it, until it has been idle for
// workerIdle or is released.
func (w *stacks) work(f func()) {
	f()
	timer := time.NewTimer(workerIdle)
	defer timer.Stop()
	for {
		release := *w.release.Load()
		if w.closed.Load() {
			return
		}
		select {
		case f := <-w.calls:
			f()
			timer.Reset(workerIdle)
		case <-release:
			return
		case <-timer.C:
			return
		}
	}
}

// closeIdle ends the workers waiting for a call; workers busy now go on.
func (w *stacks) closeIdle() {
	w.init()
	ch := make(chan struct{})
	close(*w.release.Swap(&ch))
}

// close ends every worker as soon as it is idle. run still works after it,
// on a goroutine of its own each time.
func (w *stacks) close() {
	w.closed.Store(true)
	w.closeIdle()
}

// onOwnStack runs f on one of w's workers and returns its result,
// re-raising its panic here.
func onOwnStack[T any](w *stacks, f func() T) T {
	var (
		out     T
		panicky any
		done    = make(chan struct{})
	)
	w.run(func() {
		defer close(done)
		defer func() { panicky = recover() }()
		out = f()
	})
	<-done
	if panicky != nil {
		panic(panicky)
	}
	return out
}
