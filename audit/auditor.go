package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var (
	// ErrUnavailable reports that no sink accepted a record. With
	// fail_closed the proxy answers 503 audit_unavailable and injects
	// nothing.
	ErrUnavailable = errors.New("audit unavailable")
	// ErrClosed reports a write after Close.
	ErrClosed = errors.New("auditor closed")
	// ErrFileInUse reports an audit file another writer holds: two writers
	// would interleave their chains. Give each process its own file.
	ErrFileInUse = errors.New("audit file in use by another writer")
)

// lineBufferKeep is the largest line buffer kept between writes; a rare
// huge record should not pin its memory for the life of the process.
const lineBufferKeep = 64 << 10

// Options are the Auditor's dependencies. The zero value writes to os.Stdout,
// logs nothing and uses the wall clock.
type Options struct {
	// Stdout receives records for sink stdout or both. Default os.Stdout.
	Stdout io.Writer
	// Logger is the operational logger: the Auditor reports a sink that
	// starts failing (Error) or recovers (Info) there, once per change
	// rather than per record. Default: no logging.
	Logger *zap.Logger
	// Now gives the time for records without one. Default time.Now.
	Now func() time.Time

	// rotateBytes overrides the rotation size in unit tests (the config is
	// in MiB).
	rotateBytes int64
	// openFile overrides how the file sink opens its file in unit tests.
	openFile openFunc
}

// Auditor writes audit records to the configured sinks, hash-chained. It is
// safe for concurrent use.
type Auditor struct {
	cfg    Config
	enc    zapcore.Encoder // prototype; EncodeEntry clones it
	now    func() time.Time
	logger *zap.Logger
	fp     *Fingerprinter

	mu     sync.Mutex
	sinks  []sink
	chain  chainState
	line   []byte // reused line buffer
	closed bool

	stop      chan struct{} // closes the buffered flusher
	flushDone chan struct{}
}

// New returns an Auditor for cfg. With a file sink it opens (or creates)
// the file and continues the chain from its last complete record, or from
// the newest rotated file when the active one is empty; a file that ends in
// a malformed complete line is refused, since continuing would hide it.
func New(cfg Config, o Options) (*Auditor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("audit config: %w", err)
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.openFile == nil {
		o.openFile = openAppend
	}
	var fp *Fingerprinter
	var err error
	if cfg.FingerprintKeyFile != "" {
		fp, err = LoadFingerprinter(cfg.FingerprintKeyFile)
	} else {
		fp, err = randomFingerprinter()
	}
	if err != nil {
		return nil, fmt.Errorf("new auditor: %w", err)
	}
	a := &Auditor{
		cfg: cfg,
		enc: zapcore.NewJSONEncoder(zapcore.EncoderConfig{
			SkipLineEnding: true,
			EncodeTime:     zapcore.TimeEncoderOfLayout(timeLayout),
			EncodeDuration: zapcore.MillisDurationEncoder,
		}),
		now:    o.Now,
		logger: o.Logger,
		fp:     fp,
	}
	if cfg.usesFile() {
		fs, st, err := openFileSink(cfg.File, o)
		if err != nil {
			return nil, fmt.Errorf("new auditor: %w", err)
		}
		a.chain = st
		a.sinks = append(a.sinks, fs)
	}
	if cfg.usesStdout() {
		a.sinks = append(a.sinks, &stdoutSink{w: o.Stdout})
	}
	if cfg.usesFile() && cfg.File.Durability == DurabilityBuffered {
		a.stop, a.flushDone = make(chan struct{}), make(chan struct{})
		go a.flushLoop()
	}
	return a, nil
}

func openFileSink(fc FileConfig, o Options) (*fileSink, chainState, error) {
	fs := &fileSink{
		path:       fc.Path,
		maxBytes:   int64(fc.MaxSizeMB) << 20,
		maxFiles:   fc.MaxFiles,
		durability: fc.Durability,
		open:       o.openFile,
	}
	if o.rotateBytes > 0 {
		fs.maxBytes = o.rotateBytes
	}
	st, found, partial, err := readTail(fc.Path)
	if err != nil {
		return nil, st, fmt.Errorf("continue chain: %w", err)
	}
	fs.needNewline = partial
	if !found {
		// Right after a rotation the active file may be empty: the chain
		// continues from the newest rotated file.
		st, found, _, err = readTail(rotatedName(fc.Path, 1))
		if err != nil {
			return nil, st, fmt.Errorf("continue chain: %w", err)
		}
	}
	if !found {
		st = chainState{}
	}
	if err := fs.openActive(); err != nil {
		return nil, st, fmt.Errorf("audit file: %w", err)
	}
	return fs, st, nil
}

// Fingerprinter returns the fingerprinter keyed by fingerprint_key_file, for
// filling [Record.TokenFingerprint].
func (a *Auditor) Fingerprinter() *Fingerprinter { return a.fp }

// FailClosed reports whether injecting requests must be refused when Write
// fails (config fail_closed).
func (a *Auditor) FailClosed() bool { return a.cfg.FailClosed }

// Write appends r to the chain and writes it to every sink. It sets r.Time
// when zero, and r.Seq and r.PrevHash. It returns an error wrapping
// [ErrUnavailable] when no sink accepted the record (the chain then does not
// advance), and one wrapping [ErrInvalidRecord] when r cannot be encoded.
// With sink both, a record accepted by one sink counts as written; the
// failing sink shows in [Auditor.Healthy] and in the operational log. Error
// texts name sinks and operating-system errors, never record contents.
func (a *Auditor) Write(r *Record) error {
	if r == nil {
		return fmt.Errorf("write audit record: %w: nil record", ErrInvalidRecord)
	}
	if r.Time.IsZero() {
		r.Time = a.now()
	}
	if err := r.validate(); err != nil {
		return fmt.Errorf("write audit record: %w", err)
	}
	body, err := a.enc.EncodeEntry(zapcore.Entry{}, []zapcore.Field{zap.Inline(r)})
	if err != nil {
		return fmt.Errorf("write audit record: %w: encode: %w", ErrInvalidRecord, err)
	}
	defer body.Free()
	b := body.Bytes() // {...} without the chain fields

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("write audit record: %w: %w", ErrUnavailable, ErrClosed)
	}
	seq := a.chain.seq + 1
	line := append(a.line[:0], b[:len(b)-1]...)
	line = append(line, `,"`+keySeq+`":`...)
	line = strconv.AppendUint(line, seq, 10)
	line = append(line, `,"`+keyPrevHash+`":"`...)
	prevAt := len(line)
	line = hex.AppendEncode(line, a.chain.hash[:])
	line = append(line, `"}`...)
	if len(line) >= MaxLineBytes {
		return fmt.Errorf("write audit record: %w: longer than %d bytes", ErrInvalidRecord, MaxLineBytes)
	}
	sum := sha256.Sum256(line)
	line = append(line, '\n')
	if cap(line) <= lineBufferKeep {
		a.line = line
	}

	accepted := 0
	var errs []error
	for _, s := range a.sinks {
		before := s.health()
		err := s.write(line)
		a.noteHealth(s, before)
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", s.name(), err))
			continue
		}
		accepted++
	}
	if accepted == 0 {
		return fmt.Errorf("write audit record: %w: %w", ErrUnavailable, errors.Join(errs...))
	}
	r.Seq, r.PrevHash = seq, string(line[prevAt:prevAt+hex.EncodedLen(sha256.Size)])
	a.chain = chainState{seq: seq, hash: sum}
	return nil
}

// noteHealth logs a sink's change between failing and working.
func (a *Auditor) noteHealth(s sink, before error) {
	after := s.health()
	switch {
	case before == nil && after != nil:
		a.logger.Error("audit sink failing", zap.String("sink", s.name()), zap.Error(after))
	case before != nil && after == nil:
		a.logger.Info("audit sink recovered", zap.String("sink", s.name()))
	}
}

// Healthy returns nil when every sink's last operation succeeded. Otherwise
// it names the failing sinks; the error wraps [ErrUnavailable] when all of
// them are failing (records are being refused) and not when another sink
// still accepts records (degraded). After Close it returns [ErrClosed].
func (a *Auditor) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	var errs []error
	for _, s := range a.sinks {
		if err := s.health(); err != nil {
			errs = append(errs, fmt.Errorf("audit sink %s: %w", s.name(), err))
		}
	}
	switch {
	case len(errs) == 0:
		return nil
	case len(errs) == len(a.sinks):
		return fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return errors.Join(errs...)
}

// flushLoop flushes buffered records every BufferedFlushInterval until
// Close.
func (a *Auditor) flushLoop() {
	defer close(a.flushDone)
	t := time.NewTicker(BufferedFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.mu.Lock()
			for _, s := range a.sinks {
				before := s.health()
				_ = s.flush() // the failure is kept as the sink's health
				a.noteHealth(s, before)
			}
			a.mu.Unlock()
		}
	}
}

// Close flushes and closes the sinks. Later writes fail with ErrClosed.
// Close is idempotent; only the first call reports errors (for example
// buffered records that could not be written).
func (a *Auditor) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	if a.stop != nil {
		close(a.stop)
		<-a.flushDone
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, s := range a.sinks {
		if err := s.close(); err != nil {
			errs = append(errs, fmt.Errorf("audit sink %s: %w", s.name(), err))
		}
	}
	return errors.Join(errs...)
}
