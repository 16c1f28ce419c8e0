package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// chainLines returns n chained record lines, as an Auditor writes them.
func chainLines(t testing.TB, n int) [][]byte {
	t.Helper()
	var out bytes.Buffer
	a := newAuditor(t, stdoutConfig(), Options{Stdout: &out})
	writeRecords(t, a, 1, n)
	return lines(out.Bytes())
}

func TestVerifyIntact(t *testing.T) {
	ls := chainLines(t, 10)
	path := filepath.Join(t.TempDir(), "audit.log")
	writeFile(t, path, joinLines(ls))
	rep, err := Verify([]string{path})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Records != 10 || !rep.Anchored || rep.FirstSeq != 1 || rep.LastSeq != 10 || rep.Broken != nil {
		t.Errorf("got %+v; want 10 anchored records", rep)
	}
	if want := hashHex(ls[9]); rep.LastHash != want {
		t.Errorf("got LastHash %s; want %s", rep.LastHash, want)
	}
}

func TestVerifyEmptyFile(t *testing.T) {
	rep, err := verifyBytes(nil)
	if err != nil || rep.Records != 0 || rep.Broken != nil {
		t.Errorf("got %+v, %v; want no records and no break", rep, err)
	}
}

// TestVerifyDetectsTampering edits, deletes, reorders or truncates records
// of a 10-record file; Verify must report the first break at the record
// concerned.
func TestVerifyDetectsTampering(t *testing.T) {
	// Records are 1-based here: rec(5) is line 5, decision dec-0005.
	type mutation func(ls [][]byte) [][]byte
	replaceIn := func(i int, old, new string) mutation {
		return func(ls [][]byte) [][]byte {
			if !bytes.Contains(ls[i-1], []byte(old)) {
				panic("mutation does not apply: " + old)
			}
			ls[i-1] = bytes.Replace(ls[i-1], []byte(old), []byte(new), 1)
			return ls
		}
	}
	tests := []struct {
		name     string
		mutate   mutation
		wantLine int
		wantKind Kind
		wantDec  string // decision_id of the reported record; "" to skip
	}{
		{"edit user", replaceIn(5, `"user":"alice"`, `"user":"mallory"`), 5, KindEdited, "dec-0005"},
		{"edit status", replaceIn(5, `"status":200`, `"status":201`), 5, KindEdited, "dec-0005"},
		{"edit first record", replaceIn(1, `"decision":"allow"`, `"decision":"deny"`), 1, KindEdited, "dec-0001"},
		{"edit next to last record", replaceIn(9, `"host":"slack.com"`, `"host":"evil.com"`), 9, KindEdited, "dec-0009"},
		{"edit prev_hash", func(ls [][]byte) [][]byte {
			i := bytes.Index(ls[4], []byte(`"prev_hash":"`)) + len(`"prev_hash":"`)
			ls[4][i] ^= 1
			return ls
		}, 5, KindEdited, "dec-0005"},
		{"edit seq", replaceIn(5, `"seq":5`, `"seq":6`), 5, KindEdited, "dec-0005"},
		{"delete one", func(ls [][]byte) [][]byte { return append(ls[:4], ls[5:]...) }, 5, KindDeleted, "dec-0006"},
		{"delete three", func(ls [][]byte) [][]byte { return append(ls[:4], ls[7:]...) }, 5, KindDeleted, "dec-0008"},
		{"swap adjacent", func(ls [][]byte) [][]byte {
			ls[4], ls[5] = ls[5], ls[4]
			return ls
		}, 5, KindReordered, "dec-0006"},
		{"move to end", func(ls [][]byte) [][]byte {
			moved := ls[2]
			return append(append(ls[:2:2], ls[3:]...), moved)
		}, 3, KindReordered, "dec-0004"},
		{"duplicate", func(ls [][]byte) [][]byte {
			return append(append(ls[:5:5], ls[3]), ls[5:]...)
		}, 6, KindReordered, "dec-0004"},
		{"truncate last", func(ls [][]byte) [][]byte {
			ls[9] = ls[9][:len(ls[9])/2]
			return ls
		}, 10, KindTruncated, ""},
		{"truncate middle", func(ls [][]byte) [][]byte {
			ls[4] = ls[4][:len(ls[4])/2]
			return ls
		}, 5, KindTruncated, ""},
		{"blank line", func(ls [][]byte) [][]byte {
			return append(append(ls[:3:3], []byte{}), ls[3:]...)
		}, 4, KindEdited, ""},
		{"garbage line", func(ls [][]byte) [][]byte {
			return append(append(ls[:3:3], []byte(`{"event":"request","user":"mallory"}`)), ls[3:]...)
		}, 4, KindEdited, ""},
		{"new chain spliced in", func(ls [][]byte) [][]byte {
			return append(ls[:5:5], chainLines(t, 3)...)
		}, 6, KindReordered, "dec-0001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls := tt.mutate(chainLines(t, 10))
			data := joinLines(ls)
			if tt.name == "truncate last" {
				data = data[:len(data)-1] // the cut removed the newline too
			}
			rep, err := verifyBytes(data)
			if !errors.Is(err, ErrChainBroken) {
				t.Fatalf("got %v; want ErrChainBroken", err)
			}
			b := rep.Broken
			if b == nil {
				t.Fatal("got no Broken; want one")
			}
			if b.Line != tt.wantLine || b.Kind != tt.wantKind {
				t.Errorf("got %s at line %d (%s); want %s at line %d", b.Kind, b.Line, b.Detail, tt.wantKind, tt.wantLine)
			}
			if tt.wantDec != "" && b.DecisionID != tt.wantDec {
				t.Errorf("got decision %q; want %q", b.DecisionID, tt.wantDec)
			}
			if b.File != "audit.log" {
				t.Errorf("got file %q; want audit.log", b.File)
			}
			if !strings.Contains(err.Error(), b.String()) {
				t.Errorf("error %q does not describe the break %q", err, b.String())
			}
		})
	}
}

// TestVerifyDeletedHead: records cut from the start of a file that began
// the chain are found: the file now starts neither at seq 1 nor at a
// rotate record. With the hash of the record before the cut (--from-hash)
// the rest verifies.
func TestVerifyDeletedHead(t *testing.T) {
	ls := chainLines(t, 10)
	path := filepath.Join(t.TempDir(), "audit.log")
	writeFile(t, path, joinLines(ls[3:]))
	rep, err := Verify([]string{path})
	if !errors.Is(err, ErrChainBroken) || rep.Broken.Kind != KindDeleted || rep.Broken.Line != 1 || rep.Broken.Seq != 4 {
		t.Fatalf("got %+v, %v; want records deleted before line 1 (seq 4)", rep.Broken, err)
	}
	rep, err = VerifyWith([]string{path}, VerifyOptions{FromHash: hashHex(ls[2])})
	if err != nil || rep.Start != StartFromHash || rep.FirstSeq != 4 || rep.Records != 7 {
		t.Errorf("with --from-hash: got %+v, %v; want 7 records from seq 4", rep, err)
	}
	if _, err := VerifyWith([]string{path}, VerifyOptions{FromHash: "zz"}); err == nil || errors.Is(err, ErrChainBroken) {
		t.Errorf("malformed from hash: %v; want a usage error", err)
	}
}

func TestVerifyBreakString(t *testing.T) {
	b := &Break{File: "audit.log", Line: 5, Seq: 5, DecisionID: "dec-1", Kind: KindEdited, Detail: "x"}
	if got, want := b.String(), "audit.log:5: record seq 5 (decision dec-1) edited: x"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	b = &Break{File: "audit.log", Line: 2, Kind: KindTruncated, Detail: "incomplete record"}
	if got, want := b.String(), "audit.log:2: truncated: incomplete record"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

func TestVerifyLongLine(t *testing.T) {
	ls := chainLines(t, 3)
	long := append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), MaxLineBytes+10)...)
	data := joinLines(append(append(ls[:1:1], long), ls[1:]...))
	rep, err := verifyBytes(data)
	if err == nil || rep.Broken.Line != 2 || rep.Broken.Kind != KindEdited || !strings.Contains(rep.Broken.Detail, "longer") {
		t.Errorf("got %+v, %v; want an over-long line reported at line 2", rep.Broken, err)
	}
}

func TestVerifyErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Verify(nil); err == nil {
		t.Error("Verify(nil): got nil; want an error")
	}
	if _, err := Verify([]string{dir}); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("Verify(dir): got %v; want a directory error", err)
	}
	_, err := Verify([]string{filepath.Join(dir, "missing")})
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrChainBroken) {
		t.Errorf("Verify(missing): got %v; want ErrNotExist, not ErrChainBroken", err)
	}
}

// TestVerifyExpectHashDetectsTailLoss cuts records off the end of a trail:
// the chain alone still verifies, the kept hash does not.
func TestVerifyExpectHashDetectsTailLoss(t *testing.T) {
	ls := chainLines(t, 10)
	path := filepath.Join(t.TempDir(), "audit.log")
	kept := hashHex(ls[7]) // an operator kept the hash when seq 8 was last

	writeFile(t, path, joinLines(ls))
	rep, err := VerifyWith([]string{path}, VerifyOptions{ExpectHash: kept})
	if err != nil || !rep.ExpectedFound || rep.After != 2 {
		t.Errorf("whole trail: got %+v, %v; want the kept record found with 2 after it", rep, err)
	}

	writeFile(t, path, joinLines(ls[:6])) // seq 7..10 cut off
	if _, err := Verify([]string{path}); err != nil {
		t.Fatalf("cut trail without an expected hash: %v; want it to verify (tail loss is invisible to the chain)", err)
	}
	_, err = VerifyWith([]string{path}, VerifyOptions{ExpectHash: kept})
	if !errors.Is(err, ErrTailMissing) {
		t.Fatalf("cut trail with the kept hash: err = %v; want ErrTailMissing", err)
	}
	if !strings.Contains(err.Error(), "ends at seq 6") {
		t.Errorf("error %q does not say where the chain ends", err)
	}

	if _, err := VerifyWith([]string{path}, VerifyOptions{ExpectHash: "not-hex"}); err == nil || errors.Is(err, ErrTailMissing) {
		t.Errorf("malformed expected hash: err = %v; want a usage error", err)
	}
}

// TestVerifyProgress: Progress is called every ProgressEvery records and
// once at the end, with counts that only grow and end at the totals.
func TestVerifyProgress(t *testing.T) {
	n := ProgressEvery*2 + 10
	ls := chainLines(t, n)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "audit.log.1"), filepath.Join(dir, "audit.log")
	writeFile(t, a, joinLines(ls[:ProgressEvery+5]))
	writeFile(t, b, joinLines(ls[ProgressEvery+5:]))
	total := int64(len(joinLines(ls)))
	var got []Progress
	rep, err := VerifyWith([]string{a, b}, VerifyOptions{Progress: func(p Progress) { got = append(got, p) }})
	if err != nil || rep.Records != n {
		t.Fatalf("got %+v, %v; want %d records", rep, err, n)
	}
	if len(got) != 3 {
		t.Fatalf("got %d progress calls; want 3: %+v", len(got), got)
	}
	for i, p := range got {
		if p.TotalBytes != total || p.Bytes > total || (i > 0 && (p.Records < got[i-1].Records || p.Bytes < got[i-1].Bytes)) {
			t.Errorf("progress %d: %+v (total %d bytes)", i, p, total)
		}
	}
	if got[0].File != a || got[0].Records != ProgressEvery {
		t.Errorf("first progress %+v; want %s after %d records", got[0], a, ProgressEvery)
	}
	if last := got[2]; last.File != b || last.Records != n || last.Bytes != total {
		t.Errorf("last progress %+v; want %s with %d records and %d bytes", last, b, n, total)
	}
}
