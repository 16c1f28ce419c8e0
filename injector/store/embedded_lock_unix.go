//go:build unix

package store

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

// File-lock polling of the embedded store across processes. bbolt takes
// its flock with LOCK_NB and sleeps 50 ms between attempts, so a process
// that finds the file locked by another (a peer replica's write, the
// connect server's) waits 50 ms even when the lock is free a millisecond
// later: on a refresh storm over replicas sharing one file, that sleep was
// most of the extra latency. openLocked takes the same lock on the same
// descriptor first, polling from lockPollMin doubling to lockPollMax, and
// bbolt's own attempt then succeeds at once (flock on a descriptor that
// holds the lock converts it in place). BenchmarkEmbeddedContended shows
// the gain.
const (
	// lockPollMin is the first wait: a write transaction on this file
	// takes about a millisecond.
	lockPollMin = 500 * time.Microsecond
	// lockPollMax bounds the wait between attempts, so a process still
	// sees a lock freed after a long hold within a few milliseconds;
	// each attempt is one non-blocking system call.
	lockPollMax = 5 * time.Millisecond
)

// openLocked returns bbolt's OpenFile hook for one transaction: it opens
// the file without creating it (openNoCreate) and takes its lock, shared
// for a read-only open and exclusive otherwise, until ctx ends
// (berrors.ErrTimeout, which boltOpenError reports as the lock timeout).
func openLocked(ctx context.Context) func(string, int, os.FileMode) (*os.File, error) {
	return func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := openNoCreate(name, flag, perm)
		if err != nil {
			return nil, err
		}
		how := syscall.LOCK_SH
		if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
			how = syscall.LOCK_EX
		}
		delay := lockPollMin
		for {
			err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
			if err == nil {
				return f, nil
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
				f.Close()
				return nil, err
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				f.Close()
				return nil, berrors.ErrTimeout
			}
			delay = min(2*delay, lockPollMax)
		}
	}
}
