package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// GenesisHash is the prev_hash of the first record of a chain.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// MaxLineBytes is the longest record line Write produces and Verify
// accepts. Long fields are cut well before (see maxFieldBytes); this bounds
// what a reader must hold in memory for one line.
const MaxLineBytes = 1 << 20

// chainState is where a chain stands: the last record's seq and the hash of
// its line. The zero value is the state before a chain's first record.
type chainState struct {
	seq  uint64
	hash [sha256.Size]byte
}

// chainFields are the fields Verify and the reopen logic read from a line.
type chainFields struct {
	Seq        *uint64 `json:"seq"`
	PrevHash   *string `json:"prev_hash"`
	DecisionID string  `json:"decision_id"`
	Event      string  `json:"event"`
}

// parsedLine is a line's chain fields, checked.
type parsedLine struct {
	seq        uint64
	prev       [sha256.Size]byte
	genesis    bool // prev is GenesisHash
	decisionID string
	event      string
}

var errNotRecord = errors.New("not an audit record")

// parseLine extracts and checks the chain fields of one line.
func parseLine(line []byte) (parsedLine, error) {
	var p parsedLine
	if len(line) == 0 || line[0] != '{' {
		return p, fmt.Errorf("%w: not a JSON object", errNotRecord)
	}
	var f chainFields
	if err := json.Unmarshal(line, &f); err != nil {
		return p, fmt.Errorf("%w: invalid JSON", errNotRecord)
	}
	if f.Seq == nil || *f.Seq == 0 {
		return p, fmt.Errorf("%w: seq missing or zero", errNotRecord)
	}
	if f.PrevHash == nil {
		return p, fmt.Errorf("%w: prev_hash missing", errNotRecord)
	}
	if len(*f.PrevHash) != hex.EncodedLen(sha256.Size) || !isLowerHex(*f.PrevHash) {
		return p, fmt.Errorf("%w: prev_hash is not 64 lower-case hex digits", errNotRecord)
	}
	if _, err := hex.Decode(p.prev[:], []byte(*f.PrevHash)); err != nil {
		return p, fmt.Errorf("%w: prev_hash: %w", errNotRecord, err)
	}
	p.seq = *f.Seq
	p.genesis = *f.PrevHash == GenesisHash
	p.decisionID = f.DecisionID
	p.event = f.Event
	return p, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// tailWindow is how much of a file's end is read to find its last complete
// record: two maximal lines and their newlines.
const tailWindow = 2*MaxLineBytes + 2

// readTail returns the chain state after the last complete record of the
// file at path. found is false when the file is missing, empty, not a
// regular file, or holds no complete line. partial reports that the file
// does not end with a newline (a crash in the middle of a write).
func readTail(path string) (st chainState, found, partial bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, false, false, nil
	}
	if err != nil {
		return st, false, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, false, false, err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return st, false, false, nil
	}
	size := fi.Size()
	n := min(size, tailWindow)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, size-n); err != nil && !errors.Is(err, io.EOF) {
		return st, false, false, err
	}
	whole := n == size // buf starts at the beginning of the file
	end := len(buf) - 1
	if buf[end] != '\n' {
		partial = true
		end = bytes.LastIndexByte(buf, '\n')
		if end < 0 {
			if whole {
				return st, false, true, nil
			}
			return st, false, true, fmt.Errorf("%s: last line is longer than %d bytes", path, MaxLineBytes)
		}
	}
	start := bytes.LastIndexByte(buf[:end], '\n') + 1
	if start == 0 && !whole {
		return st, false, partial, fmt.Errorf("%s: last record is longer than %d bytes", path, MaxLineBytes)
	}
	line := buf[start:end]
	p, err := parseLine(line)
	if err != nil {
		return st, false, partial, fmt.Errorf("%s: last record: %w", path, err)
	}
	return chainState{seq: p.seq, hash: sha256.Sum256(line)}, true, partial, nil
}
