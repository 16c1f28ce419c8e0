//go:build unix

package store

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// peerHold is how long the other process holds the file lock in
// BenchmarkEmbeddedContended: about one
// write transaction with its fsync.
const peerHold = 2 * time.Millisecond

// holdLock takes the exclusive lock on path from a descriptor of its own,
// as another process writing would, and releases it after d.
func holdLock(tb testing.TB, path string, d time.Duration) <-chan struct{} {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		tb.Fatal(err)
	}
	released := make(chan struct{})
	time.AfterFunc(d, func() {
		f.Close() // releases the lock
		close(released)
	})
	return released
}

// BenchmarkEmbeddedContended measures a Get that finds the file locked by
// another process (a peer replica's write, the connect server's), which
// releases it after peerHold: with the lock taken by openLocked
// ("polled") and by bbolt alone ("bbolt", which sleeps 50 ms whenever the
// file is locked).
func BenchmarkEmbeddedContended(b *testing.B) {
	for _, bbolt := range []bool{true, false} {
		name := "polled"
		if bbolt {
			name = "bbolt"
		}
		b.Run(name, func(b *testing.B) {
			s, cfg := benchStore(b, 10)
			s.bboltLocks = bbolt
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				released := holdLock(b, cfg.Path, peerHold)
				if _, _, err := s.Get(ctx, "slack", "user0002"); err != nil {
					b.Fatal(err)
				}
				<-released
			}
		})
	}
}
