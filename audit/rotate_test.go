package audit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// rotateBytesForTest makes files rotate every few records.
const rotateBytesForTest = 2048

func TestRotationKeepsChain(t *testing.T) {
	for _, d := range []Durability{DurabilityWrite, DurabilityBuffered, DurabilitySync} {
		t.Run(string(d), func(t *testing.T) {
			cfg := fileConfig(t.TempDir(), d)
			cfg.File.MaxFiles = 100
			a := newAuditor(t, cfg, Options{rotateBytes: rotateBytesForTest})
			writeRecords(t, a, 0, 60)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			files, err := RotatedFiles(cfg.File.Path)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) < 5 {
				t.Fatalf("got %d files; want rotation to have produced several", len(files))
			}
			if last := files[len(files)-1]; last != cfg.File.Path {
				t.Errorf("got newest file %s; want the active %s last", last, cfg.File.Path)
			}
			var prevLast []byte
			for _, f := range files {
				b := readFile(t, f)
				if len(b) > rotateBytesForTest {
					t.Errorf("%s: got %d bytes; want at most %d", f, len(b), rotateBytesForTest)
				}
				ls := lines(b)
				if prevLast != nil {
					first := decode(t, ls[0])
					if got, want := first["prev_hash"], hashHex(prevLast); got != want {
						t.Errorf("%s: first record's prev_hash %v; want the hash of the previous file's last record %s", f, got, want)
					}
					if first["event"] != EventRotate {
						t.Errorf("%s starts with a %v record; want a rotate record", f, first["event"])
					}
				}
				prevLast = ls[len(ls)-1]
			}
			rep, err := Verify(files)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// One rotate record per file after the first.
			if want := 60 + len(files) - 1; rep.Records != want || rep.Start != StartChain || rep.LastSeq != uint64(want) {
				t.Errorf("got %+v; want %d records from the chain's start", rep, want)
			}
			if d := cmp.Diff(files, rep.Files); d != "" {
				t.Errorf("report files (-want +got):\n%s", d)
			}
			// Reopening continues the chain in the rotated set.
			a = newAuditor(t, cfg, Options{rotateBytes: rotateBytesForTest})
			writeRecords(t, a, 60, 10)
			a.Close()
			files, _ = RotatedFiles(cfg.File.Path)
			if rep, err := VerifyRotated(cfg.File.Path); err != nil || rep.Records != 70+len(files)-1 {
				t.Errorf("after reopening: got %+v, %v; want %d records", rep, err, 70+len(files)-1)
			}
		})
	}
}

func TestRotationPrunesOldest(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	cfg.File.MaxFiles = 2
	a := newAuditor(t, cfg, Options{rotateBytes: rotateBytesForTest})
	writeRecords(t, a, 0, 60)
	a.Close()
	files, err := RotatedFiles(cfg.File.Path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{cfg.File.Path + ".2", cfg.File.Path + ".1", cfg.File.Path}
	if d := cmp.Diff(want, files); d != "" {
		t.Fatalf("files (-want +got):\n%s", d)
	}
	rep, err := Verify(files)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// The chain now starts mid-way, at the rotate record that begins the
	// oldest file left: it verifies, and the report says where it starts.
	if rep.Start != StartRotation || rep.FirstSeq <= 1 || rep.Records != int(rep.LastSeq-rep.FirstSeq+1) {
		t.Errorf("got %+v; want a chain starting at a rotation", rep)
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: got mode %v; want 0600", f, fi.Mode().Perm())
		}
	}
}

// TestRotatedTrailHeadDeleted: a trail whose oldest files rotation dropped
// verifies from the rotate record its oldest file starts with; once the
// first records of that file are deleted too, it does not, unless the
// operator names the record it must start after (--from-hash).
func TestRotatedTrailHeadDeleted(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	cfg.File.MaxFiles = 2
	a := newAuditor(t, cfg, Options{rotateBytes: rotateBytesForTest})
	writeRecords(t, a, 0, 60)
	a.Close()
	files, err := RotatedFiles(cfg.File.Path)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(files); err != nil || rep.Start != StartRotation {
		t.Fatalf("pruned by rotation: got %+v, %v; want it to verify from a rotation", rep, err)
	}
	oldest := lines(readFile(t, files[0]))
	writeFile(t, files[0], joinLines(oldest[2:])) // the rotate record and one more gone
	rep, err := Verify(files)
	if !errors.Is(err, ErrChainBroken) || rep.Broken.Kind != KindDeleted || rep.Broken.Line != 1 || !strings.Contains(rep.Broken.Detail, "--from-hash") {
		t.Fatalf("head deleted: got %+v, %v; want a deletion at line 1 that names --from-hash", rep.Broken, err)
	}
	rep, err = VerifyWith(files, VerifyOptions{FromHash: hashHex(oldest[1])})
	if err != nil || rep.Start != StartFromHash {
		t.Errorf("head deleted, --from-hash of the record before: got %+v, %v; want it to verify", rep, err)
	}
	if _, err := VerifyWith(files, VerifyOptions{FromHash: hashHex(oldest[0])}); !errors.Is(err, ErrChainBroken) {
		t.Errorf("--from-hash of another record: %v; want the chain broken", err)
	}
}

// TestRotationMissingOrMisorderedFile: a rotated file left out or given in
// the wrong order breaks the chain where the gap shows.
func TestRotationMissingOrMisorderedFile(t *testing.T) {
	cfg := fileConfig(t.TempDir(), DurabilityWrite)
	cfg.File.MaxFiles = 100
	a := newAuditor(t, cfg, Options{rotateBytes: rotateBytesForTest})
	writeRecords(t, a, 0, 30)
	a.Close()
	files, err := RotatedFiles(cfg.File.Path)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("got %d files; want at least 3", len(files))
	}
	t.Run("missing", func(t *testing.T) {
		given := append([]string{files[0]}, files[2:]...)
		rep, err := Verify(given)
		if err == nil || rep.Broken.Kind != KindDeleted || rep.Broken.File != files[2] || rep.Broken.Line != 1 {
			t.Errorf("got %+v, %v; want deleted at %s:1", rep.Broken, err, files[2])
		}
	})
	t.Run("swapped", func(t *testing.T) {
		given := append([]string{files[1], files[0]}, files[2:]...)
		rep, err := Verify(given)
		if err == nil || rep.Broken.File != files[0] || rep.Broken.Line != 1 || rep.Broken.Kind != KindReordered {
			t.Errorf("got %+v, %v; want reordered at %s:1", rep.Broken, err, files[0])
		}
	})
}

func TestRotatedFiles(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "audit.log")
	for _, name := range []string{"audit.log", "audit.log.1", "audit.log.10", "audit.log.2", "audit.log.01", "audit.log.bak", "other.log.1", "fingerprint.key"} {
		writeFile(t, filepath.Join(dir, name), nil)
	}
	got, err := RotatedFiles(base)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{base + ".10", base + ".2", base + ".1", base}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("RotatedFiles (-want +got):\n%s", d)
	}
	if _, err := RotatedFiles(filepath.Join(dir, "missing.log")); err == nil {
		t.Error("got nil; want an error for a base with no files")
	}
}
