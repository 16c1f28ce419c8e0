package audit

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrChainBroken reports that Verify found a record that breaks the chain.
var ErrChainBroken = errors.New("audit chain broken")

// Kind classifies a break in the chain.
type Kind string

// Kinds of breaks.
const (
	// KindEdited: the record's content no longer matches the hash the next
	// record committed to, or its chain fields are inconsistent or
	// unreadable.
	KindEdited Kind = "edited"
	// KindDeleted: records are missing before this one (a gap in seq with
	// no later record filling it).
	KindDeleted Kind = "deleted"
	// KindReordered: the record is out of order (a smaller seq than the one
	// before it, a larger one while the missing seq comes later, or a new
	// chain starting after other records).
	KindReordered Kind = "reordered"
	// KindTruncated: the line is an incomplete record (a crash or a cut in
	// the middle of a write).
	KindTruncated Kind = "truncated"
)

// Break describes the first record at which a chain fails.
type Break struct {
	// File and Line (1-based) locate the record.
	File string
	Line int
	// Seq, Event and DecisionID identify it when it could be read.
	Seq        uint64
	Event      string
	DecisionID string
	Kind       Kind
	// Detail says what is wrong, in words.
	Detail string
}

func (b *Break) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s:%d: ", b.File, b.Line)
	if b.Seq != 0 {
		fmt.Fprintf(&s, "record seq %d", b.Seq)
		if b.DecisionID != "" {
			fmt.Fprintf(&s, " (decision %s)", b.DecisionID)
		}
		s.WriteString(" ")
	}
	fmt.Fprintf(&s, "%s: %s", b.Kind, b.Detail)
	return s.String()
}

// Report is the outcome of Verify.
type Report struct {
	// Files are the files read, in order.
	Files []string
	// Records is how many records were verified before the first break
	// (all of them when Broken is nil).
	Records int
	// FirstSeq is the seq of the first record, and Start says where the
	// chain given starts: StartChain (seq 1), StartRotation (a rotate
	// record: the first file of a set whose older files rotation dropped)
	// or StartFromHash (VerifyOptions.FromHash). A first record that is
	// none of these is a break: records before it were deleted. Anchored
	// is true whenever the chain verified.
	FirstSeq uint64
	Start    string
	Anchored bool
	// LastSeq and LastHash identify the last record when Broken is nil.
	// A chain cannot show records cut from its end: compare these with a
	// copy kept elsewhere to detect that.
	LastSeq  uint64
	LastHash string
	// Broken is the first break, nil when the chain is intact.
	Broken *Break
	// ExpectedFound says whether the record whose hash
	// VerifyOptions.ExpectHash names is in the chain, and After how many
	// records follow it. Both are zero without ExpectHash.
	ExpectedFound bool
	After         int
}

// Where a verified chain starts (Report.Start).
const (
	StartChain    = "chain start"
	StartRotation = "rotation"
	StartFromHash = "from-hash"
)

// VerifyOptions add checks to Verify that the files alone cannot support.
type VerifyOptions struct {
	// FromHash is the hash of the record just before the first one given
	// (the last hash an earlier verify printed): the first record must
	// link to it. It lets a trail that starts neither at seq 1 nor at a
	// rotate record verify — a part cut out on purpose, or files written
	// before rotate records existed — and says exactly where it must
	// start.
	FromHash string
	// ExpectHash is the hash of a record known to be in the chain: the last
	// hash an earlier verify printed, kept somewhere the writer of the
	// files cannot change. A chain cannot show records cut from its end;
	// with ExpectHash, Verify fails with ErrTailMissing when that record is
	// no longer there.
	ExpectHash string
	// Progress, when set, is called as verification advances: every
	// ProgressEvery records and once more at the end. It runs on the
	// verifying goroutine; a slow callback slows verification.
	Progress func(Progress)
}

// ProgressEvery is how many records pass between two Progress calls: often
// enough for a display to move several times a second, rarely enough to
// cost nothing next to hashing the records.
const ProgressEvery = 4096

// Progress says how far a verification has come.
type Progress struct {
	// File is the file being read.
	File string
	// Records is how many records were read so far.
	Records int
	// Bytes is how many bytes were read so far, across files, out of
	// TotalBytes (the files' sizes when verification started).
	Bytes, TotalBytes int64
}

// ErrTailMissing reports that the record VerifyOptions.ExpectHash names is
// not in the chain: records were cut from the end (or the files are not the
// ones whose hash was kept).
var ErrTailMissing = errors.New("audit chain: expected record missing")

// Verify checks the hash chain across the given files, read in the order
// given: pass rotated files oldest first (audit.log.3 audit.log.2
// audit.log.1 audit.log), or use [RotatedFiles] / [VerifyRotated] to have
// the order worked out. Directories are refused. It reports the first
// broken record; the error wraps [ErrChainBroken] then, and is some other
// error when a file cannot be read.
func Verify(paths []string) (Report, error) {
	return VerifyWith(paths, VerifyOptions{})
}

// VerifyWith is Verify with the checks of o.
func VerifyWith(paths []string, o VerifyOptions) (Report, error) {
	if len(paths) == 0 {
		return Report{}, errors.New("verify audit chain: no files given")
	}
	inputs := make([]input, 0, len(paths))
	var total int64
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return Report{}, fmt.Errorf("verify audit chain: %w", err)
		}
		if fi.IsDir() {
			return Report{}, fmt.Errorf("verify audit chain: %s is a directory; name the files", p)
		}
		total += fi.Size()
		inputs = append(inputs, input{name: p, open: func() (io.ReadCloser, error) { return os.Open(p) }})
	}
	var expect [sha256.Size]byte
	if o.ExpectHash != "" {
		b, err := hex.DecodeString(o.ExpectHash)
		if err != nil || len(b) != sha256.Size {
			return Report{}, errors.New("verify audit chain: the expected hash must be 64 hexadecimal digits, as verify prints it")
		}
		copy(expect[:], b)
	}
	var from *[sha256.Size]byte
	if o.FromHash != "" {
		b, err := hex.DecodeString(o.FromHash)
		if err != nil || len(b) != sha256.Size {
			return Report{}, errors.New("verify audit chain: the from hash must be 64 hexadecimal digits, as verify prints it")
		}
		from = (*[sha256.Size]byte)(b)
	}
	var progress func(*lineReader, int)
	if o.Progress != nil {
		progress = func(lr *lineReader, records int) {
			o.Progress(Progress{File: lr.current(), Records: records, Bytes: lr.bytes, TotalBytes: max(total, lr.bytes)})
		}
	}
	rep, err := verifyFrom(inputs, expect, o.ExpectHash != "", from, progress)
	if err == nil && o.ExpectHash != "" && !rep.ExpectedFound {
		return rep, fmt.Errorf("%w: no record has hash %s; the chain ends at seq %d, so records after it were cut from the end, or these are not the files whose hash was kept", ErrTailMissing, o.ExpectHash, rep.LastSeq)
	}
	return rep, err
}

// WriterTrail returns the path of writer's own trail beside base
// (audit.log → audit.cli.log): where a process other than the one holding
// base writes its records, as its own hash chain.
func WriterTrail(base, writer string) string {
	ext := filepath.Ext(base)
	return strings.TrimSuffix(base, ext) + "." + writer + ext
}

// Trails returns the trails beside base, each as its rotation set oldest
// first: base's own, then each writer's trail (see [WriterTrail]), and the
// per-process trails older versions wrote ("audit-<pid>.log"). Each is a
// chain of its own, to verify on its own.
func Trails(base string) ([][]string, error) {
	own, err := RotatedFiles(base)
	if err != nil {
		return nil, err
	}
	out := [][]string{own}
	dir, name := filepath.Split(base)
	if dir == "" {
		dir = "."
	}
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list audit trails: %w", err)
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ext) || n == name {
			continue
		}
		mid := strings.TrimSuffix(n, ext)
		writer, named := strings.CutPrefix(mid, stem+".")
		pid, legacy := strings.CutPrefix(mid, stem+"-")
		switch {
		case named && writer != "" && !strings.ContainsAny(writer, ".") && !allDigits(writer):
		case legacy && pid != "" && allDigits(pid):
		default:
			continue // base's rotated files, or unrelated files
		}
		set, err := RotatedFiles(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		out = append(out, set)
	}
	return out, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// VerifyRotated verifies the rotation set of base (see [RotatedFiles]).
func VerifyRotated(base string) (Report, error) {
	paths, err := RotatedFiles(base)
	if err != nil {
		return Report{}, err
	}
	return Verify(paths)
}

// RotatedFiles returns the existing files of base's rotation set oldest
// first: base.N … base.2, base.1, base. Other files in the directory are
// ignored.
func RotatedFiles(base string) ([]string, error) {
	dir, name := filepath.Split(base)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list rotated audit files: %w", err)
	}
	type numbered struct {
		n    int
		path string
	}
	var rotated []numbered
	hasBase := false
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if e.Name() == name {
			hasBase = true
			continue
		}
		suffix, ok := strings.CutPrefix(e.Name(), name+".")
		if !ok || suffix == "" || suffix[0] == '0' {
			continue
		}
		n, err := strconv.Atoi(suffix)
		if err != nil || n < 1 {
			continue
		}
		rotated = append(rotated, numbered{n, filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(rotated, func(a, b numbered) int { return b.n - a.n })
	paths := make([]string, 0, len(rotated)+1)
	for _, r := range rotated {
		paths = append(paths, r.path)
	}
	if hasBase {
		paths = append(paths, base)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("list rotated audit files: %s: %w", base, os.ErrNotExist)
	}
	return paths, nil
}

// input is one stream of lines to verify.
type input struct {
	name string
	open func() (io.ReadCloser, error)
}

// entry is one line read for verification.
type entry struct {
	file string
	line int
	hash [sha256.Size]byte
	p    parsedLine
	err  error // the line is not a readable record
	// shape of an unreadable line, to tell truncated from edited
	empty, newline, endsBrace, tooLong bool
}

func verify(inputs []input, expect [sha256.Size]byte, expecting bool, progress func(*lineReader, int)) (rep Report, err error) {
	return verifyFrom(inputs, expect, expecting, nil, progress)
}

// verifyFrom is verify with the first record required to link to *from,
// when from is set.
func verifyFrom(inputs []input, expect [sha256.Size]byte, expecting bool, from *[sha256.Size]byte, progress func(*lineReader, int)) (rep Report, err error) {
	lr := &lineReader{inputs: inputs, from: from}
	defer lr.close()
	var prev *entry
	for n := 0; ; n++ {
		if progress != nil && n%ProgressEvery == 0 && n > 0 {
			progress(lr, rep.Records)
		}
		cur, err := lr.next()
		if err != nil {
			return rep, err
		}
		if cur == nil {
			if progress != nil {
				progress(lr, rep.Records)
			}
			break
		}
		brk, err := lr.check(prev, cur, &rep)
		if err != nil {
			return rep, err
		}
		if brk != nil {
			rep.Files = lr.files
			rep.Broken = brk
			rep.LastSeq, rep.LastHash = 0, ""
			return rep, fmt.Errorf("%w: %s", ErrChainBroken, brk)
		}
		if prev == nil {
			rep.FirstSeq, rep.Anchored = cur.p.seq, true
			switch {
			case from != nil:
				rep.Start = StartFromHash
			case cur.p.genesis:
				rep.Start = StartChain
			default:
				rep.Start = StartRotation
			}
		}
		rep.Records++
		if rep.ExpectedFound {
			rep.After++
		} else if expecting && cur.hash == expect {
			rep.ExpectedFound = true
		}
		rep.LastSeq, rep.LastHash = cur.p.seq, hex.EncodeToString(cur.hash[:])
		prev = cur
	}
	rep.Files = lr.files
	return rep, nil
}

// check returns the break cur makes after prev (nil at the start), or nil.
// To classify a break it may read ahead; the stream is not used after a
// break.
func (lr *lineReader) check(prev, cur *entry, rep *Report) (*Break, error) {
	if cur.err != nil {
		kind := KindEdited
		detail := cur.err.Error()
		switch {
		case cur.tooLong:
			detail = fmt.Sprintf("line is longer than %d bytes", MaxLineBytes)
		case cur.empty:
			detail = "empty line"
		case !cur.newline || !cur.endsBrace:
			kind, detail = KindTruncated, "incomplete record"
		}
		return cur.breakAt(kind, detail), nil
	}
	if prev == nil {
		switch {
		case lr.from != nil:
			if cur.p.prev != *lr.from {
				return cur.breakAt(KindDeleted, "the first record does not follow the record --from-hash names: records were deleted before it, or the hash belongs to another place in the trail"), nil
			}
		case cur.p.genesis:
			if cur.p.seq != 1 {
				return cur.breakAt(KindEdited, fmt.Sprintf("a chain's first record must have seq 1, not %d", cur.p.seq)), nil
			}
		case cur.p.event != EventRotate:
			// The writer starts every file with seq 1 or a rotate
			// record; a file that starts anywhere else lost its head.
			return cur.breakAt(KindDeleted, fmt.Sprintf("the trail starts at seq %d, which neither starts a chain (seq 1) nor a rotated file (a rotate record): records before it were deleted; if this trail is known to start here, pass the hash of the record before it (--from-hash)", cur.p.seq)), nil
		}
		return nil, nil
	}
	want := prev.p.seq + 1
	switch {
	case cur.p.prev == prev.hash:
		if cur.p.seq != want {
			return cur.breakAt(KindEdited, fmt.Sprintf("seq %d does not follow seq %d", cur.p.seq, prev.p.seq)), nil
		}
		return nil, nil
	case cur.p.genesis:
		// Only the first record of a file set may start a chain: files
		// given out of order, or a file replaced by a new one.
		return cur.breakAt(KindReordered, fmt.Sprintf("a new chain starts here after seq %d (files out of order, or earlier records replaced)", prev.p.seq)), nil
	case cur.p.seq == want:
		// Either prev was edited (cur still holds prev's original hash) or
		// cur's own prev_hash was: in the second case cur's hash changed
		// too, so the record after cur does not link to it either.
		next, err := lr.peek()
		if err != nil {
			return nil, err
		}
		if next == nil || (next.err == nil && next.p.prev == cur.hash) {
			rep.Records--
			return prev.breakAt(KindEdited, "its content does not match the prev_hash of the next record"), nil
		}
		return cur.breakAt(KindEdited, "prev_hash does not match the record before it"), nil
	case cur.p.seq > want:
		found, err := lr.findSeq(want, cur.p.seq-1)
		if err != nil {
			return nil, err
		}
		if found != nil {
			return cur.breakAt(KindReordered, fmt.Sprintf("seq %d comes before seq %d (at %s:%d)", cur.p.seq, found.p.seq, found.file, found.line)), nil
		}
		missing := cur.p.seq - want
		return cur.breakAt(KindDeleted, fmt.Sprintf("%d record(s) missing before this one (seq %d to %d)", missing, want, cur.p.seq-1)), nil
	default:
		return cur.breakAt(KindReordered, fmt.Sprintf("seq %d comes after seq %d", cur.p.seq, prev.p.seq)), nil
	}
}

func (e *entry) breakAt(kind Kind, detail string) *Break {
	return &Break{
		File:       e.file,
		Line:       e.line,
		Seq:        e.p.seq,
		Event:      e.p.event,
		DecisionID: e.p.decisionID,
		Kind:       kind,
		Detail:     detail,
	}
}

// verifyReadBuffer is the reader's buffer; lines longer than it are
// assembled from several reads.
const verifyReadBuffer = 64 << 10

// lineReader yields the lines of its inputs in order, one at a time, with
// one line of look-ahead.
type lineReader struct {
	inputs []input
	from   *[sha256.Size]byte // VerifyOptions.FromHash, decoded
	files  []string           // inputs opened so far
	idx    int
	rc     io.ReadCloser
	br     *bufio.Reader
	lineNo int
	peeked *entry
	buf    []byte
	// bytes counts what was read from all inputs so far.
	bytes int64
}

// current names the input being read (the last one once all are read).
func (lr *lineReader) current() string {
	if len(lr.files) == 0 {
		return ""
	}
	return lr.files[len(lr.files)-1]
}

func (lr *lineReader) next() (*entry, error) {
	if e := lr.peeked; e != nil {
		lr.peeked = nil
		return e, nil
	}
	return lr.read()
}

func (lr *lineReader) peek() (*entry, error) {
	if lr.peeked == nil {
		e, err := lr.read()
		if err != nil {
			return nil, err
		}
		lr.peeked = e
	}
	return lr.peeked, nil
}

// findSeq reads the rest of the stream for a record with seq in [lo, hi].
func (lr *lineReader) findSeq(lo, hi uint64) (*entry, error) {
	for {
		e, err := lr.next()
		if e == nil || err != nil {
			return nil, err
		}
		if e.err == nil && e.p.seq >= lo && e.p.seq <= hi {
			return e, nil
		}
	}
}

func (lr *lineReader) read() (*entry, error) {
	for {
		if lr.br == nil {
			if lr.idx >= len(lr.inputs) {
				return nil, nil
			}
			in := lr.inputs[lr.idx]
			rc, err := in.open()
			if err != nil {
				return nil, fmt.Errorf("verify audit chain: %w", err)
			}
			lr.rc, lr.br, lr.lineNo = rc, bufio.NewReaderSize(rc, verifyReadBuffer), 0
			lr.files = append(lr.files, in.name)
		}
		line, newline, tooLong, err := lr.readLine()
		if err != nil {
			return nil, fmt.Errorf("verify audit chain: read %s: %w", lr.inputs[lr.idx].name, err)
		}
		if !newline && len(line) == 0 && !tooLong {
			lr.closeCurrent()
			lr.idx++
			continue
		}
		lr.lineNo++
		e := &entry{
			file:    lr.inputs[lr.idx].name,
			line:    lr.lineNo,
			hash:    sha256.Sum256(line),
			newline: newline,
			tooLong: tooLong,
			empty:   len(line) == 0 && !tooLong,
		}
		e.endsBrace = len(line) > 0 && line[len(line)-1] == '}'
		if tooLong {
			e.err = errNotRecord
		} else {
			e.p, e.err = parseLine(line)
		}
		return e, nil
	}
}

// readLine returns the next line without its newline, whether it ended in
// one (false at the end of the input), and whether it exceeded MaxLineBytes
// (its content is then dropped). A nil error with no newline and no content
// means the input is exhausted.
func (lr *lineReader) readLine() (line []byte, newline, tooLong bool, err error) {
	lr.buf = lr.buf[:0]
	for {
		frag, err := lr.br.ReadSlice('\n')
		lr.bytes += int64(len(frag))
		if !tooLong {
			if len(lr.buf)+len(frag) > MaxLineBytes+1 {
				tooLong, lr.buf = true, lr.buf[:0]
			} else {
				lr.buf = append(lr.buf, frag...)
			}
		}
		switch {
		case err == nil:
			if tooLong {
				return nil, true, true, nil
			}
			return lr.buf[:len(lr.buf)-1], true, false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return lr.buf, false, tooLong, nil
		default:
			return nil, false, false, err
		}
	}
}

func (lr *lineReader) closeCurrent() {
	if lr.rc != nil {
		lr.rc.Close()
	}
	lr.rc, lr.br = nil, nil
}

func (lr *lineReader) close() { lr.closeCurrent() }
