package audit

import (
	"cmp"
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
	"go.uber.org/zap/buffer"
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
	// Lost, when set, is called (from the goroutine that wrote the batch)
	// for each record given to [Auditor.Submit] that no sink accepted; the
	// Auditor also logs it. Records given to Write report their error to
	// the caller instead.
	Lost func(event string, err error)

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

	lost func(event string, err error)

	// mu guards the queue, the chain and the flags. Records are written by
	// group commit: whoever finds no write in progress becomes the leader,
	// chains every queued record and writes them to each sink in one
	// write(2), while later records queue for the next leader. The chain
	// advances only when a sink accepted the batch. Records from Submit
	// have no caller waiting for them: they go with the next batch, and
	// when no Write comes within submitDelay, the flush timer leads one.
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*pendingRecord
	spare   []*pendingRecord
	writing bool
	waiters int  // Write callers whose record is queued and not yet written
	armed   bool // the flush timer is set
	chain   chainState
	closed  bool // Write and Submit refuse new records
	drained bool // Close wrote the last batch; nothing is written after it
	flush   *time.Timer

	// sinkMu guards the sinks and the batch buffer; the leader holds it
	// while writing, so Healthy, the flusher and Close never race a write.
	sinkMu sync.Mutex
	sinks  []sink
	file   *fileSink // the file sink among sinks, nil without one
	batch  []byte    // reused batch buffer

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
		lost:   o.Lost,
		fp:     fp,
	}
	a.flush = time.AfterFunc(time.Hour, a.flushSubmitted)
	a.flush.Stop()
	if cfg.usesFile() {
		fs, st, err := openFileSink(cfg.File, o)
		if err != nil {
			return nil, fmt.Errorf("new auditor: %w", err)
		}
		a.chain = st
		a.sinks = append(a.sinks, fs)
		a.file = fs
	}
	if cfg.usesStdout() {
		a.sinks = append(a.sinks, &stdoutSink{w: o.Stdout})
	}
	a.cond = sync.NewCond(&a.mu)
	if cfg.usesFile() && cfg.File.Durability == DurabilityBuffered {
		a.stop, a.flushDone = make(chan struct{}), make(chan struct{})
		go a.flushLoop()
	}
	return a, nil
}

// pendingRecord is a record waiting in the group-commit queue.
type pendingRecord struct {
	body []byte         // the encoded record without the chain fields
	buf  *buffer.Buffer // the encoder's buffer body lives in
	// submitted records have no caller waiting: a failure is reported
	// through Options.Lost and the log, naming event and decision.
	submitted  bool
	event      string
	decisionID string
	done       bool
	err        error
	seq        uint64
	prev       string
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
	p, err := a.encode(r)
	if err != nil {
		return err
	}
	defer p.free()
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("write audit record: %w: %w", ErrUnavailable, ErrClosed)
	}
	a.queue = append(a.queue, p)
	a.waiters++
	for a.writing && !p.done {
		a.cond.Wait()
	}
	if !p.done {
		a.lead() // returns with a.mu held and p done
	}
	err = p.err
	if err == nil {
		r.Seq, r.PrevHash = p.seq, p.prev
	}
	a.mu.Unlock()
	return err
}

// Submit queues r to be written with the next batch and returns without
// waiting for the write: for records nobody has to wait for, such as the
// completion record of a request whose inject record was already written.
// It sets r.Time when zero; r is encoded before Submit returns and not used
// afterwards, so Seq and PrevHash are not set on it. It returns an error
// wrapping [ErrInvalidRecord] when r cannot be encoded, and one wrapping
// [ErrUnavailable] after Close. A submitted record that no sink accepts is
// logged and reported to Options.Lost. Close writes every record submitted
// before it.
func (a *Auditor) Submit(r *Record) error {
	p, err := a.encode(r)
	if err != nil {
		return err
	}
	p.submitted, p.event, p.decisionID = true, r.Event, r.DecisionID
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		p.free()
		return fmt.Errorf("write audit record: %w: %w", ErrUnavailable, ErrClosed)
	}
	a.queue = append(a.queue, p)
	a.wake()
	return nil
}

// free returns p's buffer to the encoder's pool once p is written.
func (p *pendingRecord) free() { p.buf.Free() }

// encode validates r and encodes it without the chain fields.
func (a *Auditor) encode(r *Record) (*pendingRecord, error) {
	if r == nil {
		return nil, fmt.Errorf("write audit record: %w: nil record", ErrInvalidRecord)
	}
	if r.Time.IsZero() {
		r.Time = a.now()
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("write audit record: %w", err)
	}
	if len(r.Extra) == 0 {
		buf := encodeRecord(r)
		return &pendingRecord{body: buf.Bytes(), buf: buf}, nil
	}
	body, err := a.enc.EncodeEntry(zapcore.Entry{}, []zapcore.Field{zap.Inline(r)})
	if err != nil {
		return nil, fmt.Errorf("write audit record: %w: encode: %w", ErrInvalidRecord, err)
	}
	b := body.Bytes()                                         // {...} without the chain fields
	return &pendingRecord{body: b[:len(b)-1], buf: body}, nil // without the closing brace
}

// submitDelay is how long a submitted record waits for a batch to join
// before the flush timer writes it: under load the next Write comes much
// sooner and carries it, which saves a write(2) per request; when the
// sidecar is quiet a reader of the file sees the record after about this.
const submitDelay = 2 * time.Millisecond

// wake makes sure queued records get a leader: it sets the flush timer
// when no write is in progress and no Write caller is waiting (a waiting
// caller leads the next batch itself). Called with a.mu held.
func (a *Auditor) wake() {
	if a.writing || a.waiters > 0 || a.armed || a.drained || len(a.queue) == 0 {
		return
	}
	a.armed = true
	a.flush.Reset(submitDelay)
}

// flushSubmitted runs when the flush timer fires: it writes the queued
// submitted records unless somebody else is writing or already did.
func (a *Auditor) flushSubmitted() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	if !a.writing && !a.drained && len(a.queue) > 0 {
		a.lead()
	}
}

// lead writes every queued record as one batch. It is called and returns
// with a.mu held, and releases it while writing.
func (a *Auditor) lead() {
	batch := a.queue
	a.queue = a.spare[:0]
	a.writing = true
	chain := a.chain
	drained := a.drained
	a.mu.Unlock()

	var err error
	if drained {
		err = fmt.Errorf("write audit record: %w: %w", ErrUnavailable, ErrClosed)
	} else {
		chain, err = a.writeBatch(batch, chain)
	}
	for _, p := range batch {
		if !p.submitted {
			continue
		}
		if perr := cmp.Or(p.err, err); perr != nil {
			a.reportLost(p, perr)
		}
		// Nobody waits for a submitted record: its buffer goes back now.
		p.free()
	}

	a.mu.Lock()
	if err == nil {
		a.chain = chain
	}
	for _, p := range batch {
		if p.err == nil {
			p.err = err
		}
		p.done = true
		if !p.submitted {
			a.waiters--
		}
	}
	clear(batch)
	a.spare = batch[:0]
	a.writing = false
	a.cond.Broadcast()
	a.wake()
}

// reportLost logs a submitted record that was not written and tells
// Options.Lost.
func (a *Auditor) reportLost(p *pendingRecord, err error) {
	a.logger.Error("audit record not written",
		zap.String("event", p.event), zap.String("decision_id", p.decisionID), zap.Error(err))
	if a.lost != nil {
		a.lost(p.event, err)
	}
}

// writeBatch chains the batch onto chain and writes it to every sink. It
// returns the chain after the batch; an error means no sink took it.
func (a *Auditor) writeBatch(batch []*pendingRecord, chain chainState) (chainState, error) {
	a.sinkMu.Lock()
	defer a.sinkMu.Unlock()
	var skip sink // a file sink that could not rotate sits this batch out
	var fileErr error
	if fs := a.file; fs != nil {
		// Rotate now rather than in the middle of writing, so that the
		// new file's first record is a rotate record linking it to the
		// last one of the file before.
		if fileErr = fs.prepare(batchLen(batch, chain.seq)); fileErr != nil {
			fs.err = fileErr
			skip = fs
		} else if chain.seq > 0 && fs.startsFile() {
			if rot, err := a.encode(&Record{Event: EventRotate}); err == nil {
				defer rot.free()
				batch = append([]*pendingRecord{rot}, batch...)
			}
		}
	}
	buf := a.batch[:0]
	valid := 0
	for _, p := range batch {
		start := len(buf)
		seq := chain.seq + 1
		buf = append(buf, p.body...)
		buf = append(buf, `,"`+keySeq+`":`...)
		buf = strconv.AppendUint(buf, seq, 10)
		buf = append(buf, `,"`+keyPrevHash+`":"`...)
		prevAt := len(buf)
		buf = hex.AppendEncode(buf, chain.hash[:])
		buf = append(buf, `"}`...)
		if len(buf)-start >= MaxLineBytes {
			p.err = fmt.Errorf("write audit record: %w: longer than %d bytes", ErrInvalidRecord, MaxLineBytes)
			buf = buf[:start]
			continue
		}
		sum := sha256.Sum256(buf[start:])
		p.seq = seq
		if !p.submitted { // Write reports the chain fields; Submit does not
			p.prev = string(buf[prevAt : prevAt+hex.EncodedLen(sha256.Size)])
		}
		buf = append(buf, '\n')
		chain = chainState{seq: seq, hash: sum}
		valid++
	}
	if cap(buf) <= lineBufferKeep {
		a.batch = buf
	}
	if valid == 0 {
		return chain, nil
	}
	accepted := 0
	var errs []error
	if skip != nil {
		errs = append(errs, fmt.Errorf("sink %s: %w", skip.name(), fileErr))
	}
	for _, s := range a.sinks {
		if s == skip {
			continue
		}
		before := s.health()
		err := s.write(buf)
		a.noteHealth(s, before)
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", s.name(), err))
			continue
		}
		accepted++
	}
	if accepted == 0 {
		return chain, fmt.Errorf("write audit record: %w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return chain, nil
}

// batchLen is the length batch will have once chained after seq: each
// body with its seq, prev_hash, closing brace and newline.
func batchLen(batch []*pendingRecord, seq uint64) int {
	n := 0
	for i, p := range batch {
		n += len(p.body) + len(`,"`+keySeq+`":`) + len(strconv.FormatUint(seq+uint64(i)+1, 10)) +
			len(`,"`+keyPrevHash+`":"`) + hex.EncodedLen(sha256.Size) + len(`"}`) + 1
	}
	return n
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
	closed := a.closed
	a.mu.Unlock()
	if closed {
		return ErrClosed
	}
	a.sinkMu.Lock()
	defer a.sinkMu.Unlock()
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
			a.sinkMu.Lock()
			for _, s := range a.sinks {
				before := s.health()
				_ = s.flush() // the failure is kept as the sink's health
				a.noteHealth(s, before)
			}
			a.sinkMu.Unlock()
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
	for a.writing {
		a.cond.Wait()
	}
	if len(a.queue) > 0 {
		a.lead() // the last batch: submitted records and waiting writers
	}
	a.drained = true // a flush timer that fires now finds nothing to do
	a.flush.Stop()
	a.mu.Unlock()
	if a.stop != nil {
		close(a.stop)
		<-a.flushDone
	}
	a.sinkMu.Lock()
	defer a.sinkMu.Unlock()
	var errs []error
	for _, s := range a.sinks {
		if err := s.close(); err != nil {
			errs = append(errs, fmt.Errorf("audit sink %s: %w", s.name(), err))
		}
	}
	return errors.Join(errs...)
}
