package proxy

import (
	"iter"
	"slices"
	"sync"
	"time"
)

// workerIdle is how long a worker waits for the next call before it ends.
// Under load a worker is busy again within microseconds; a second of quiet
// means the burst is over, and its stack is given back.
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
// A worker is a coroutine (iter.Pull): the caller switches to it and it
// switches back when the call returns, on the same thread, without the
// scheduler. Handing the call over a channel instead woke the worker
// through the run queue, often woke another thread to steal it, and parked
// the caller — twice per request (BenchmarkOnOwnStack "channel hand-off"
// against "coroutine").
//
// The zero value is ready to use. Its methods are safe for concurrent use.
type stacks struct {
	mu sync.Mutex
	// idle holds the workers waiting for a call, the longest idle first;
	// calls take the last (its stack is the most likely still in cache).
	idle []*worker
	// reaper ends the workers idle for workerIdle; armed while idle is
	// not empty.
	reaper *time.Timer
	armed  bool
	closed bool
}

// worker is a coroutine that runs one call each time it is resumed.
type worker struct {
	resume func() (struct{}, bool)
	stop   func()
	call   func()
	// panicked is the value call panicked with, for the caller to raise.
	panicked  any
	idleSince time.Time
}

func newWorker() *worker {
	wk := &worker{}
	wk.resume, wk.stop = iter.Pull(func(yield func(struct{}) bool) {
		for {
			wk.run()
			if !yield(struct{}{}) {
				return
			}
		}
	})
	return wk
}

// run runs the call, keeping its panic for the caller: the worker lives
// on.
func (wk *worker) run() {
	defer func() { wk.panicked = recover() }()
	call := wk.call
	wk.call = nil
	call()
}

// onOwnStack runs f on one of w's workers and returns its result,
// re-raising its panic here.
func onOwnStack[T any](w *stacks, f func() T) T {
	var out T
	wk := w.get()
	wk.call = func() { out = f() }
	wk.resume()
	panicked := wk.panicked
	wk.panicked = nil
	w.put(wk)
	if panicked != nil {
		panic(panicked)
	}
	return out
}

// get returns an idle worker, or a new one when none is idle.
func (w *stacks) get() *worker {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		wk := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		return wk
	}
	w.mu.Unlock()
	return newWorker()
}

// put makes wk wait for the next call, or ends it after close.
func (w *stacks) put(wk *worker) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		wk.stop()
		return
	}
	wk.idleSince = time.Now()
	w.idle = append(w.idle, wk)
	if !w.armed {
		w.armed = true
		if w.reaper == nil {
			w.reaper = time.AfterFunc(workerIdle, w.reap)
		} else {
			w.reaper.Reset(workerIdle)
		}
	}
	w.mu.Unlock()
}

// reap ends the workers idle for workerIdle and waits for the next to be.
func (w *stacks) reap() {
	w.mu.Lock()
	now := time.Now()
	n := 0
	for n < len(w.idle) && now.Sub(w.idle[n].idleSince) >= workerIdle {
		n++
	}
	done := slices.Clone(w.idle[:n])
	w.idle = slices.Delete(w.idle, 0, n)
	if len(w.idle) > 0 {
		w.reaper.Reset(workerIdle - now.Sub(w.idle[0].idleSince))
	} else {
		w.armed = false
	}
	w.mu.Unlock()
	for _, wk := range done {
		wk.stop()
	}
}

// closeIdle ends the workers waiting for a call; workers busy now go on.
func (w *stacks) closeIdle() {
	w.mu.Lock()
	done := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, wk := range done {
		wk.stop()
	}
}

// close ends every worker as soon as it is idle. onOwnStack still works
// after it, on a worker of its own each time.
func (w *stacks) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.closeIdle()
}
