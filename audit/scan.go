package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Filter selects records read back from a trail (Scan). A zero field
// selects every record.
type Filter struct {
	// User, Agent, Provider, Event and Decision must equal the record's
	// field of the same name.
	User, Agent, Provider, Event, Decision string
	// Since and Until bound the record's time: Since <= time < Until.
	Since, Until time.Time
}

// match reports whether f selects e.
func (f *Filter) match(e *Entry) bool {
	switch {
	case f.User != "" && e.User != f.User,
		f.Agent != "" && e.Agent != f.Agent,
		f.Provider != "" && e.Provider != f.Provider,
		f.Event != "" && e.Event != f.Event,
		f.Decision != "" && e.Decision != f.Decision,
		!f.Since.IsZero() && e.Time.Before(f.Since),
		!f.Until.IsZero() && !e.Time.Before(f.Until):
		return false
	}
	return true
}

// Entry is one record read back from a trail: the fields a person looks at
// and the line exactly as it was written.
type Entry struct {
	Time       time.Time      `json:"time"`
	Event      string         `json:"event"`
	DecisionID string         `json:"decision_id"`
	User       string         `json:"user"`
	Agent      string         `json:"agent"`
	Method     string         `json:"method"`
	Host       string         `json:"host"`
	Path       string         `json:"path"`
	Provider   string         `json:"provider"`
	Decision   string         `json:"decision"`
	Reason     string         `json:"reason"`
	Status     int            `json:"status"`
	ErrorCode  string         `json:"error_code"`
	DurationMS float64        `json:"duration_ms"`
	Extra      map[string]any `json:"extra"`
	Seq        uint64         `json:"seq"`

	// Line is the record's line without its newline. It is only valid
	// during the Scan callback that receives the entry.
	Line []byte `json:"-"`
	// File and LineNo locate the record.
	File   string `json:"-"`
	LineNo int    `json:"-"`
}

// Outcome returns the record's decision, or for events without one (connect,
// revoke, refresh) the outcome in its extra fields.
func (e *Entry) Outcome() string {
	if e.Decision != "" {
		return e.Decision
	}
	s, _ := e.Extra[ExtraOutcome].(string)
	return s
}

// ScanStats counts what Scan read.
type ScanStats struct {
	// Records is how many records were read, Selected how many of them
	// the filter selected.
	Records, Selected int
	// Skipped counts lines that are not records (truncated, edited into
	// something else, longer than MaxLineBytes). Scan passes over them:
	// judging a trail's integrity is Verify's work.
	Skipped int
}

// Scan reads the records of the files in the order given and calls fn for
// each one f selects, stopping at fn's first error. It reads one line at a
// time, so trails of any size take little memory.
func Scan(paths []string, f Filter, fn func(*Entry) error) (ScanStats, error) {
	var st ScanStats
	for _, p := range paths {
		if err := scanFile(p, &f, &st, fn); err != nil {
			return st, err
		}
	}
	return st, nil
}

func scanFile(path string, f *Filter, st *ScanStats, fn func(*Entry) error) error {
	file, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read audit trail: %w", err)
	}
	defer file.Close()
	br := bufio.NewReaderSize(file, verifyReadBuffer)
	var buf []byte
	for lineNo := 1; ; lineNo++ {
		line, more, err := readBoundedLine(br, buf[:0])
		if err != nil {
			return fmt.Errorf("read audit trail %s: %w", path, err)
		}
		if !more {
			return nil
		}
		buf = line
		if line == nil {
			st.Skipped++ // longer than MaxLineBytes
			continue
		}
		if len(line) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil || e.Event == "" {
			st.Skipped++
			continue
		}
		st.Records++
		if !f.match(&e) {
			continue
		}
		st.Selected++
		e.Line, e.File, e.LineNo = line, path, lineNo
		if err := fn(&e); err != nil {
			return err
		}
	}
}

// readBoundedLine appends the next line of br, without its newline, to buf.
// more is false at the end of the input. A line longer than MaxLineBytes is
// consumed and returned as nil.
func readBoundedLine(br *bufio.Reader, buf []byte) (line []byte, more bool, err error) {
	tooLong, got := false, false
	for {
		frag, err := br.ReadSlice('\n')
		got = got || len(frag) > 0
		if !tooLong {
			if len(buf)+len(frag) > MaxLineBytes+1 {
				tooLong, buf = true, buf[:0]
			} else {
				buf = append(buf, frag...)
			}
		}
		switch {
		case err == nil, errors.Is(err, io.EOF):
			if errors.Is(err, io.EOF) && !got {
				return nil, false, nil
			}
			if tooLong {
				return nil, true, nil
			}
			if n := len(buf); n > 0 && buf[n-1] == '\n' {
				buf = buf[:n-1]
			}
			if buf == nil {
				buf = []byte{}
			}
			return buf, true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, false, err
		}
	}
}
