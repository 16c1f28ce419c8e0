package audit

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestSubmitWrittenWithoutClose: a submitted record reaches the file
// without anybody else writing and without Close: the flush timer leads
// its batch.
func TestSubmitWrittenWithoutClose(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	a := newAuditor(t, cfg, Options{})
	r := sampleRecord(1)
	if err := a.Submit(r); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 0 || r.PrevHash != "" {
		t.Errorf("Submit set Seq %d PrevHash %q; want them left alone", r.Seq, r.PrevHash)
	}
	// Polled with a generous bound: this checks that the record is
	// written at all, not how fast.
	deadline := time.Now().Add(10 * time.Second)
	for len(lines(readFile(t, cfg.File.Path))) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the submitted record was not written within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{cfg.File.Path})
	if err != nil || rep.Records != 1 {
		t.Fatalf("Verify: got %+v, %v; want 1 record", rep, err)
	}
}

// TestSubmitAndWriteInterleaved: submitted and written records from many
// goroutines form one valid chain with each record exactly once, and a
// Write returns only after everything submitted before it by the same
// goroutine is in the file (it is in the same batch or an earlier one).
func TestSubmitAndWriteInterleaved(t *testing.T) {
	const total, workers = 2000, 16
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	a := newAuditor(t, cfg, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for w := range workers {
		wg.Go(func() {
			for k, i := 0, w; i < total; k, i = k+1, i+workers {
				r := sampleRecord(i)
				var err error
				if k%2 == 0 {
					err = a.Submit(r)
				} else {
					err = a.Write(r)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("write: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	pos := writtenOnce(t, cfg.File.Path, total)
	for i := range total {
		id := fmt.Sprintf("dec-%04d", i)
		// A worker submits record i and then writes record i+workers:
		// the written one must come after.
		if (i/workers)%2 == 0 && i+workers < total {
			if next := fmt.Sprintf("dec-%04d", i+workers); pos[next] < pos[id] {
				t.Errorf("%s (written) is before %s (submitted earlier by the same goroutine)", next, id)
			}
		}
	}
}

// TestCloseWritesSubmitted: Close writes every record submitted before it.
func TestCloseWritesSubmitted(t *testing.T) {
	const n = 500
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	a := newAuditor(t, cfg, Options{})
	for i := range n {
		if err := a.Submit(sampleRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{cfg.File.Path})
	if err != nil || rep.Records != n {
		t.Fatalf("Verify: got %+v, %v; want %d records", rep, err, n)
	}
	err = a.Submit(sampleRecord(n))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close: got %v; want ErrUnavailable and ErrClosed", err)
	}
}

// TestSubmitLost: a submitted record no sink accepts is reported to
// Options.Lost and logged with its event and decision id, never its
// contents.
func TestSubmitLost(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	type loss struct {
		event string
		err   error
	}
	lost := make(chan loss, 1)
	cfg := DefaultConfig()
	cfg.Sink, cfg.File.Path = SinkFile, "/dev/full"
	a := newAuditor(t, cfg, Options{
		Logger: zap.New(core),
		Lost:   func(event string, err error) { lost <- loss{event, err} },
	})
	r := sampleRecord(7)
	r.User = "user-canary-7d1"
	if err := a.Submit(r); err != nil {
		t.Fatalf("Submit: %v; want nil (the failure is reported later)", err)
	}
	select {
	case l := <-lost:
		if l.event != EventRequest || !errors.Is(l.err, ErrUnavailable) || !errors.Is(l.err, syscall.ENOSPC) {
			t.Errorf("Lost got (%q, %v); want (%q, ErrUnavailable with ENOSPC)", l.event, l.err, EventRequest)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Lost was not called within 10s")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	entries := logs.FilterMessage("audit record not written").All()
	if len(entries) != 1 {
		t.Fatalf("got %d 'audit record not written' log entries; want 1", len(entries))
	}
	if got := entries[0].ContextMap()["decision_id"]; got != r.DecisionID {
		t.Errorf("logged decision_id %v; want %s", got, r.DecisionID)
	}
	for _, e := range logs.All() {
		mustContainNone(t, "log", fmt.Sprint(e.Message, e.ContextMap()), "user-canary-7d1")
	}
}

func TestSubmitInvalidRecord(t *testing.T) {
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &syncBuffer{}})
	if err := a.Submit(nil); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("Submit(nil): got %v; want ErrInvalidRecord", err)
	}
	if err := a.Submit(&Record{}); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("Submit without event: got %v; want ErrInvalidRecord", err)
	}
}
