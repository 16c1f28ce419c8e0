package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestWriteChainsRecords(t *testing.T) {
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	recs := []*Record{{Event: EventStart}, sampleRecord(1), sampleRecord(2)}
	for _, r := range recs {
		if err := a.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	ls := lines(out.Bytes())
	if len(ls) != 3 {
		t.Fatalf("got %d lines; want 3", len(ls))
	}
	wantPrev := GenesisHash
	for i, l := range ls {
		m := decode(t, l)
		if got := m["prev_hash"]; got != wantPrev {
			t.Errorf("line %d: got prev_hash %v; want %s", i+1, got, wantPrev)
		}
		if got := m["seq"]; got != float64(i+1) {
			t.Errorf("line %d: got seq %v; want %d", i+1, got, i+1)
		}
		if recs[i].Seq != uint64(i+1) || recs[i].PrevHash != wantPrev {
			t.Errorf("record %d: got Seq %d PrevHash %s; want %d %s", i+1, recs[i].Seq, recs[i].PrevHash, i+1, wantPrev)
		}
		wantPrev = hashHex(l)
	}
	if got := recs[0].Time; !got.Equal(testTime) {
		t.Errorf("got time %v; want the clock's %v", got, testTime)
	}
	rep, err := verifyBytes(out.Bytes())
	if err != nil || rep.Records != 3 || !rep.Anchored {
		t.Errorf("Verify: got %+v, %v; want 3 anchored records", rep, err)
	}
}

func TestWriteIgnoresGivenChainFields(t *testing.T) {
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	r := sampleRecord(1)
	r.Seq, r.PrevHash = 99, strings.Repeat("ab", 32)
	if err := a.Write(r); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), `"prev_hash"`); got != 1 {
		t.Errorf("got %d prev_hash keys; want 1", got)
	}
	if m := decode(t, bytes.TrimSpace(out.Bytes())); m["seq"] != float64(1) || m["prev_hash"] != GenesisHash {
		t.Errorf("got seq %v prev_hash %v; want 1 and genesis", m["seq"], m["prev_hash"])
	}
}

// TestWriteDevFull is the disk-full case: a file sink that cannot write
// makes Write fail with ErrUnavailable, for every durability.
func TestWriteDevFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Fatalf("this test needs /dev/full: %v", err)
	}
	for _, d := range []Durability{DurabilityWrite, DurabilitySync} {
		t.Run(string(d), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Sink, cfg.File.Path, cfg.File.Durability = SinkFile, "/dev/full", d
			a := newAuditor(t, cfg, Options{})
			err := a.Write(sampleRecord(1))
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("got %v; want ErrUnavailable", err)
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("got %v; want it to carry ENOSPC", err)
			}
			if err := a.Healthy(); !errors.Is(err, ErrUnavailable) {
				t.Errorf("Healthy: got %v; want ErrUnavailable", err)
			}
		})
	}
	t.Run("buffered", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Sink, cfg.File.Path, cfg.File.Durability = SinkFile, "/dev/full", DurabilityBuffered
		a, err := New(cfg, Options{Now: fixedNow})
		if err != nil {
			t.Fatal(err)
		}
		// Buffered records are accepted until a flush fails; from then on
		// records are refused.
		var werr error
		n := 0
		for ; n < 2*bufferedFlushBytes/100 && werr == nil; n++ {
			werr = a.Write(sampleRecord(n))
		}
		if !errors.Is(werr, ErrUnavailable) {
			t.Fatalf("after %d records: got %v; want ErrUnavailable once the buffer had to be flushed", n, werr)
		}
		if err := a.Healthy(); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Healthy: got %v; want ErrUnavailable", err)
		}
		if err := a.Close(); err == nil || !strings.Contains(err.Error(), "lost") {
			t.Errorf("Close: got %v; want an error saying buffered records were lost", err)
		}
	})
}

// TestWriteBothWithBrokenFile: with sink both, stdout still accepts the
// record, so Write succeeds; Healthy and the operational log show the
// broken file.
func TestWriteBothWithBrokenFile(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var out bytes.Buffer
	cfg := DefaultConfig()
	cfg.Sink, cfg.File.Path = SinkBoth, "/dev/full"
	a := newAuditor(t, cfg, Options{Stdout: &out, Logger: zap.New(core)})
	for i := range 3 {
		if err := a.Write(sampleRecord(i)); err != nil {
			t.Fatalf("Write %d: got %v; want success through stdout", i, err)
		}
	}
	if got := len(lines(out.Bytes())); got != 3 {
		t.Errorf("got %d records on stdout; want 3", got)
	}
	if rep, err := verifyBytes(out.Bytes()); err != nil || rep.Records != 3 {
		t.Errorf("stdout chain: got %+v, %v; want 3 records", rep, err)
	}
	err := a.Healthy()
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "file") {
		t.Errorf("Healthy: got %v; want a degraded error naming the file sink, not ErrUnavailable", err)
	}
	if got := logs.FilterMessage("audit sink failing").Len(); got != 1 {
		t.Errorf("got %d 'audit sink failing' logs; want 1 (once per change, not per record)", got)
	}
}

// failingWriter fails while broken is set.
type failingWriter struct {
	mu     sync.Mutex
	broken bool
	buf    bytes.Buffer
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken {
		return 0, syscall.EPIPE
	}
	return w.buf.Write(p)
}

func (w *failingWriter) set(broken bool) {
	w.mu.Lock()
	w.broken = broken
	w.mu.Unlock()
}

func TestWriteStdoutFailureAndRecovery(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	w := &failingWriter{}
	a := newAuditor(t, stdoutConfig(), Options{Stdout: w, Logger: zap.New(core)})
	writeRecords(t, a, 0, 2)
	w.set(true)
	if err := a.Write(sampleRecord(2)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v; want ErrUnavailable", err)
	}
	if err := a.Healthy(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Healthy: got %v; want ErrUnavailable", err)
	}
	w.set(false)
	writeRecords(t, a, 3, 2)
	if err := a.Healthy(); err != nil {
		t.Errorf("Healthy after recovery: got %v; want nil", err)
	}
	// The refused record did not advance the chain, so the output is one
	// unbroken chain of the four accepted records.
	rep, err := verifyBytes(w.buf.Bytes())
	if err != nil || rep.Records != 4 || rep.LastSeq != 4 {
		t.Errorf("Verify: got %+v, %v; want 4 linked records", rep, err)
	}
	if logs.FilterMessage("audit sink failing").Len() != 1 || logs.FilterMessage("audit sink recovered").Len() != 1 {
		t.Errorf("got logs %v; want one failing and one recovered", logs.All())
	}
}

func TestWriteAfterClose(t *testing.T) {
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &bytes.Buffer{}})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	err := a.Write(sampleRecord(1))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrClosed) {
		t.Errorf("got %v; want ErrUnavailable and ErrClosed", err)
	}
	if err := a.Healthy(); !errors.Is(err, ErrClosed) {
		t.Errorf("Healthy: got %v; want ErrClosed", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: got %v; want nil", err)
	}
}

// TestConcurrentWrites: 1,000 records from 16 goroutines form one valid
// chain (run with -race).
func TestConcurrentWrites(t *testing.T) {
	const total, workers = 1000, 16
	for _, d := range []Durability{DurabilityWrite, DurabilityBuffered} {
		t.Run(string(d), func(t *testing.T) {
			cfg := fileConfig(t.TempDir(), d)
			a := newAuditor(t, cfg, Options{})
			var wg sync.WaitGroup
			errs := make(chan error, total)
			for w := range workers {
				wg.Go(func() {
					for i := w; i < total; i += workers {
						if err := a.Write(sampleRecord(i)); err != nil {
							errs <- err
						}
					}
				})
			}
			// Health checks race with the writers, as /readyz would.
			for range 50 {
				_ = a.Healthy()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("Write: %v", err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			writtenOnce(t, cfg.File.Path, total)
		})
	}
}

func TestReopenContinuesChain(t *testing.T) {
	for _, d := range []Durability{DurabilityWrite, DurabilityBuffered, DurabilitySync} {
		t.Run(string(d), func(t *testing.T) {
			cfg := fileConfig(t.TempDir(), d)
			for run := range 3 {
				a := newAuditor(t, cfg, Options{})
				writeRecords(t, a, run*5, 5)
				if err := a.Close(); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := Verify([]string{cfg.File.Path})
			if err != nil || rep.Records != 15 || rep.LastSeq != 15 || !rep.Anchored {
				t.Errorf("got %+v, %v; want 15 anchored records in one chain", rep, err)
			}
		})
	}
}

// TestReopenAfterCrashMidWrite: a file ending in half a record (a crash
// during a write) is continued from the last complete record; the
// fragment stays on a line of its own, where Verify reports it.
func TestReopenAfterCrashMidWrite(t *testing.T) {
	for _, d := range []Durability{DurabilityWrite, DurabilityBuffered} {
		t.Run(string(d), func(t *testing.T) {
			cfg := fileConfig(t.TempDir(), d)
			a := newAuditor(t, cfg, Options{})
			writeRecords(t, a, 0, 3)
			a.Close()
			f, err := os.OpenFile(cfg.File.Path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(`{"time":"2026-06-18T06:00:00.1`)
			f.Close()

			a = newAuditor(t, cfg, Options{})
			writeRecords(t, a, 3, 2)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify([]string{cfg.File.Path})
			if !errors.Is(err, ErrChainBroken) || rep.Broken.Line != 4 || rep.Broken.Kind != KindTruncated {
				t.Fatalf("got %+v, %v; want a truncated record at line 4", rep.Broken, err)
			}
			// Without the fragment, the records around it form one chain.
			ls := lines(readFile(t, cfg.File.Path))
			if len(ls) != 6 {
				t.Fatalf("got %d lines; want 6", len(ls))
			}
			rest := append(ls[:3:3], ls[4:]...)
			if rep, err := verifyBytes(joinLines(rest)); err != nil || rep.Records != 5 {
				t.Errorf("without the fragment: got %+v, %v; want 5 linked records", rep, err)
			}
		})
	}
}

func TestReopenRefusesMalformedLastRecord(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	writeFile(t, cfg.File.Path, []byte("{\"event\":\"request\"}\n"))
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "last record") {
		t.Errorf("got %v; want an error about the last record", err)
	}
}

// TestReopenEmptyActiveFile: a crash right after rotation leaves an empty
// active file; the chain continues from the newest rotated file, and the
// active file starts with a rotate record, as after any rotation.
func TestReopenEmptyActiveFile(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	a := newAuditor(t, cfg, Options{})
	writeRecords(t, a, 0, 4)
	a.Close()
	if err := os.Rename(cfg.File.Path, cfg.File.Path+".1"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg.File.Path, nil)
	a = newAuditor(t, cfg, Options{})
	writeRecords(t, a, 4, 2)
	a.Close()
	rep, err := VerifyRotated(cfg.File.Path)
	if err != nil || rep.Records != 7 || !rep.Anchored {
		t.Errorf("got %+v, %v; want 7 anchored records (6 and a rotate record) across 2 files", rep, err)
	}
	if ev := decode(t, lines(readFile(t, cfg.File.Path))[0])["event"]; ev != EventRotate {
		t.Errorf("the active file starts with %v; want a rotate record", ev)
	}
	if rep, err := Verify([]string{cfg.File.Path}); err != nil || rep.Start != StartRotation {
		t.Errorf("the active file alone: got %+v, %v; want it to verify from its rotate record", rep, err)
	}
}

// faultyFile wraps a real file and fails the write number failAt after
// writing only part of it, as a disk filling up does.
type faultyFile struct {
	*os.File
	writes, failAt int
	partial        int  // bytes written by the failing write
	noTruncate     bool // Truncate fails too
	syncs          int
}

func (f *faultyFile) Write(p []byte) (int, error) {
	f.writes++
	if f.writes == f.failAt {
		n, _ := f.File.Write(p[:min(f.partial, len(p))])
		return n, syscall.ENOSPC
	}
	return f.File.Write(p)
}

func (f *faultyFile) Truncate(size int64) error {
	if f.noTruncate {
		return syscall.EIO
	}
	return f.File.Truncate(size)
}

func (f *faultyFile) Sync() error {
	f.syncs++
	return f.File.Sync()
}

func faultyOpen(ff *faultyFile) openFunc {
	return func(path string) (file, bool, int64, error) {
		f, regular, size, err := openAppend(path)
		if err != nil {
			return nil, false, 0, err
		}
		ff.File = f.(*os.File)
		return ff, regular, size, nil
	}
}

// TestPartialWriteIsUndone: a record refused after part of it reached the
// file is cut off again, so the file stays one chain.
func TestPartialWriteIsUndone(t *testing.T) {
	tests := []struct {
		name       string
		noTruncate bool
		wantBreak  bool
	}{
		{"truncate works", false, false},
		// When the fragment cannot be removed it is left on a line of its
		// own and reported as truncated.
		{"truncate fails", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fileConfig(t.TempDir(), DurabilityWrite)
			ff := &faultyFile{failAt: 3, partial: 40, noTruncate: tt.noTruncate}
			a := newAuditor(t, cfg, Options{openFile: faultyOpen(ff)})
			writeRecords(t, a, 0, 2)
			if err := a.Write(sampleRecord(2)); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("got %v; want ErrUnavailable", err)
			}
			writeRecords(t, a, 3, 2)
			a.Close()
			rep, err := Verify([]string{cfg.File.Path})
			if !tt.wantBreak {
				if err != nil || rep.Records != 4 {
					t.Errorf("got %+v, %v; want 4 linked records", rep, err)
				}
				return
			}
			if rep.Broken == nil || rep.Broken.Line != 3 || rep.Broken.Kind != KindTruncated {
				t.Fatalf("got %+v, %v; want the fragment reported as truncated at line 3", rep.Broken, err)
			}
			ls := lines(readFile(t, cfg.File.Path))
			rest := append(ls[:2:2], ls[3:]...)
			if rep, err := verifyBytes(joinLines(rest)); err != nil || rep.Records != 4 {
				t.Errorf("without the fragment: got %+v, %v; want 4 linked records", rep, err)
			}
		})
	}
}

// TestBufferedShortWrite: a flush that writes only part of the buffer
// keeps the rest and continues where the file stopped.
func TestBufferedShortWrite(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityBuffered)
	ff := &faultyFile{failAt: 1, partial: 1000}
	a := newAuditor(t, cfg, Options{openFile: faultyOpen(ff)})
	const total = 1000 // several flushes' worth
	// The first flush writes 1000 bytes and fails; the failure is kept and
	// the next Write retries the rest before taking its record, so every
	// record is accepted.
	writeRecords(t, a, 0, total)
	if ff.writes < 2 {
		t.Fatalf("got %d writes; want the failing flush and its retry", ff.writes)
	}
	if err := a.Healthy(); err != nil {
		t.Errorf("Healthy after the retried flush: got %v; want nil", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{cfg.File.Path})
	if err != nil || rep.Records != total {
		t.Errorf("got %+v, %v; want %d linked records", rep, err, total)
	}
}

func TestBufferedFlushesWithinInterval(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityBuffered)
	a := newAuditor(t, cfg, Options{})
	writeRecords(t, a, 0, 1)
	if got := len(readFile(t, cfg.File.Path)); got != 0 {
		t.Fatalf("got %d bytes right after Write; want the record still buffered", got)
	}
	deadline := time.Now().Add(3 * BufferedFlushInterval)
	for len(readFile(t, cfg.File.Path)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("record not flushed within %v", 3*BufferedFlushInterval)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDurabilitySyncFsyncsEachRecord(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilitySync)
	ff := &faultyFile{}
	a := newAuditor(t, cfg, Options{openFile: faultyOpen(ff)})
	writeRecords(t, a, 0, 5)
	if ff.syncs != 5 {
		t.Errorf("got %d fsyncs for 5 records; want 5", ff.syncs)
	}
}

func TestFileModeAndDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "audit")
	cfg := fileConfig(dir, DurabilityWrite)
	a := newAuditor(t, cfg, Options{})
	writeRecords(t, a, 0, 1)
	fi, err := os.Stat(cfg.File.Path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("got file mode %v; want 0600", got)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("got directory mode %v; want 0700", got)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sink = "syslog"
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "sink") {
		t.Errorf("got %v; want a config error about sink", err)
	}
}

func TestNewFailsOnUnwritablePath(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	writeFile(t, blocker, []byte("x"))
	cfg := fileConfig(filepath.Join(blocker, "sub"), DurabilityWrite) // parent is a file
	if _, err := New(cfg, Options{}); err == nil {
		t.Error("got nil; want an error for a path under a regular file")
	}
}

func TestSecondWriterRefused(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	a := newAuditor(t, cfg, Options{})
	writeRecords(t, a, 0, 1)
	if _, err := New(cfg, Options{}); !errors.Is(err, ErrFileInUse) {
		t.Fatalf("second New on the same file: got %v; want ErrFileInUse", err)
	}
	a.Close()
	b := newAuditor(t, cfg, Options{})
	writeRecords(t, b, 1, 1)
	b.Close()
	if rep, err := Verify([]string{cfg.File.Path}); err != nil || rep.Records != 2 {
		t.Errorf("got %+v, %v; want 2 records after the first writer closed", rep, err)
	}
}
