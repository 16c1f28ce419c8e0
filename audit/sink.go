package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/flock"
)

const (
	// BufferedFlushInterval is the longest a record waits in memory with
	// durability buffered: the window a crash can lose.
	BufferedFlushInterval = time.Second
	// bufferedFlushBytes triggers an early flush, so a burst does not grow
	// the buffer without bound and a flush stays one modest write.
	bufferedFlushBytes = 64 << 10
)

// sink is one destination of audit lines. Its methods are called with the
// Auditor's mutex held, so a sink needs no locking of its own.
type sink interface {
	name() string
	// write takes one complete line (with its newline). A nil result means
	// the sink accepted the record.
	write(line []byte) error
	// flush pushes buffered lines out (durability buffered).
	flush() error
	// health is the sink's last failure, nil when its last operation
	// succeeded.
	health() error
	close() error
}

// stdoutSink writes lines to a writer, normally the process's stdout.
type stdoutSink struct {
	w   io.Writer
	err error
}

func (s *stdoutSink) name() string { return string(SinkStdout) }

func (s *stdoutSink) write(line []byte) error {
	_, err := s.w.Write(line)
	s.err = err
	return err
}

func (s *stdoutSink) flush() error  { return nil }
func (s *stdoutSink) health() error { return s.err }
func (s *stdoutSink) close() error  { return nil }

// file is the part of *os.File the file sink uses; unit tests substitute
// one that fails part-way through a write.
type file interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

var _ file = (*os.File)(nil)

// openFunc opens path for appending and reports whether it is a regular
// file and its current size.
type openFunc func(path string) (f file, regular bool, size int64, err error)

func openAppend(path string) (file, bool, int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, 0, err
	}
	if !fi.Mode().IsRegular() {
		// A device, pipe or socket: no size to rotate on, nothing to
		// truncate, fsync or lock.
		return f, false, 0, nil
	}
	if err := flock.TryLock(f); err != nil {
		if errors.Is(err, flock.ErrLocked) {
			err = ErrFileInUse
		}
		f.Close()
		return nil, false, 0, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, true, fi.Size(), nil
}

// fileSink appends lines to a file, rotating it by size. It must be the
// only writer of its file; an advisory lock (flock) on the active file
// enforces that where the platform has one.
type fileSink struct {
	path       string
	maxBytes   int64
	maxFiles   int
	durability Durability
	open       openFunc

	f       file // nil after a failed rotation: reopened on the next write
	regular bool
	size    int64 // bytes in the file, not counting pending

	// pending holds accepted lines not yet written (durability buffered).
	pending []byte
	// scratch joins a leading newline to a line so both go out in one write.
	scratch []byte
	// needNewline is set when the file may end in a partial line (a crash
	// or a failed write that could not be undone): the next line then
	// starts with a newline, leaving the fragment on a line of its own for
	// Verify to report rather than merged into the next record.
	needNewline bool
	err         error
}

func (s *fileSink) name() string { return string(SinkFile) }

func (s *fileSink) health() error { return s.err }

func (s *fileSink) openActive() error {
	f, regular, size, err := s.open(s.path)
	if err != nil {
		return err
	}
	s.f, s.regular, s.size = f, regular, size
	return nil
}

func (s *fileSink) write(line []byte) error {
	if s.durability == DurabilityBuffered {
		return s.writeBuffered(line)
	}
	err := s.prepare(len(line))
	if err == nil {
		err = s.writeNow(line)
	}
	s.err = err
	return err
}

// prepare makes sure a file is open with room for n more bytes, rotating
// when the line would take the file past its maximum size.
func (s *fileSink) prepare(n int) error {
	if s.f == nil {
		if err := s.openActive(); err != nil {
			return err
		}
	}
	used := s.size + int64(len(s.pending))
	if s.regular && used > 0 && used+int64(n) > s.maxBytes {
		return s.rotate()
	}
	return nil
}

// startsFile reports whether the next line is the first of the active
// file (a regular file, empty, with nothing pending).
func (s *fileSink) startsFile() bool {
	return s.regular && s.f != nil && s.size == 0 && len(s.pending) == 0 && !s.needNewline
}

// writeNow writes line with one write(2) (plus an fsync for durability
// sync). On failure it truncates the file back to where it was, so a
// refused record leaves no fragment behind.
func (s *fileSink) writeNow(line []byte) error {
	data := line
	if s.needNewline {
		s.scratch = append(append(s.scratch[:0], '\n'), line...)
		data = s.scratch
	}
	// Errors from *os.File name the operation and the path already.
	n, err := s.f.Write(data)
	if err != nil {
		s.undo(data[:n])
		return err
	}
	if s.durability == DurabilitySync && s.regular {
		if err := s.f.Sync(); err != nil {
			s.undo(data)
			return err
		}
	}
	s.size += int64(n)
	s.needNewline = false
	return nil
}

// undo removes written, the start of a line that was not accepted, from the
// end of the file. When that is impossible the fragment stays, and the next
// line starts on a fresh line.
func (s *fileSink) undo(written []byte) {
	if len(written) == 0 {
		return
	}
	if s.regular && s.f.Truncate(s.size) == nil {
		return
	}
	s.size += int64(len(written))
	s.needNewline = written[len(written)-1] != '\n'
}

func (s *fileSink) writeBuffered(line []byte) error {
	if s.err != nil {
		// The last flush failed: the backlog goes first, and no new record
		// is accepted until the file takes it.
		if err := s.flush(); err != nil {
			return err
		}
	}
	if err := s.prepare(len(line)); err != nil {
		s.err = err
		return err
	}
	if s.needNewline {
		s.pending = append(s.pending, '\n')
		s.needNewline = false
	}
	s.pending = append(s.pending, line...)
	s.err = nil
	if len(s.pending) >= bufferedFlushBytes {
		// A failure is kept in s.err and refuses the next record; this one
		// is accepted already and stays pending.
		_ = s.flush()
	}
	return nil
}

// flush writes pending lines. A short write keeps the unwritten rest, which
// continues exactly where the file stopped on the next attempt.
func (s *fileSink) flush() error {
	if len(s.pending) == 0 {
		return nil
	}
	if s.f == nil {
		if err := s.openActive(); err != nil {
			s.err = err
			return err
		}
	}
	n, err := s.f.Write(s.pending)
	s.size += int64(n)
	s.pending = s.pending[:copy(s.pending, s.pending[n:])]
	if err != nil {
		s.err = err
		return err
	}
	s.err = nil
	return nil
}

// rotate renames path.i to path.i+1 (dropping the oldest) and path to
// path.1, and opens a new path. The chain lives in the Auditor, which
// rotates before a batch that would not fit and starts the new file with a
// rotate record linking to the old file's last.
func (s *fileSink) rotate() error {
	if err := s.flush(); err != nil {
		return err
	}
	old := s.f
	s.f = nil
	if err := errors.Join(s.syncFile(old), old.Close()); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	for i := s.maxFiles - 1; i >= 1; i-- {
		err := os.Rename(rotatedName(s.path, i), rotatedName(s.path, i+1))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	if err := os.Rename(s.path, rotatedName(s.path, 1)); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if err := s.openActive(); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if s.durability == DurabilitySync {
		if err := syncDir(filepath.Dir(s.path)); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	return nil
}

func (s *fileSink) syncFile(f file) error {
	if !s.regular {
		return nil
	}
	return f.Sync()
}

func (s *fileSink) close() error {
	if s.f == nil {
		return s.flushOnClose()
	}
	err := errors.Join(s.flushOnClose(), s.syncFile(s.f), s.f.Close())
	s.f = nil
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

func (s *fileSink) flushOnClose() error {
	if len(s.pending) == 0 {
		return nil
	}
	if err := s.flush(); err != nil {
		return fmt.Errorf("%d bytes of records lost: %w", len(s.pending), err)
	}
	return nil
}

// rotatedName is the name of the i-th rotated file (1 is the newest).
func rotatedName(path string, i int) string {
	return path + "." + strconv.Itoa(i)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
