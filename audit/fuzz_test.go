package audit

import (
	"bytes"
	"errors"
	"testing"

	"go.uber.org/zap"
)

// FuzzVerify checks two properties:
//
//  1. Verify survives arbitrary file contents: no panic, and a reported
//     break points at a line that exists.
//  2. On a chain written by an Auditor (with reasons and paths taken from
//     the input), Verify passes, and changing any one byte before the last
//     record is reported exactly at the changed line.
//
// The seed corpus is in testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, pos uint16, b byte) {
		// Property 1.
		rep, err := verifyBytes(data)
		nlines := len(lines(data))
		if rep.Broken != nil {
			if !errors.Is(err, ErrChainBroken) {
				t.Fatalf("Broken set but error %v", err)
			}
			if rep.Broken.Line < 1 || rep.Broken.Line > nlines {
				t.Fatalf("break at line %d of %d", rep.Broken.Line, nlines)
			}
		} else {
			if err != nil {
				t.Fatalf("error %v without a break", err)
			}
			if rep.Records != nlines {
				t.Fatalf("intact chain: got %d records; want %d lines", rep.Records, nlines)
			}
		}

		// Property 2.
		var out bytes.Buffer
		a, err := New(stdoutConfig(), Options{Stdout: &out, Now: fixedNow})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		parts := bytes.SplitN(data, []byte{0}, 3)
		for i := range 4 {
			r := sampleRecord(i)
			r.Reason = string(parts[i%len(parts)])
			r.Path = "/p?" + string(parts[(i+1)%len(parts)])
			r.Extra = []zap.Field{zap.ByteString("raw", parts[(i+2)%len(parts)])}
			if err := a.Write(r); err != nil {
				if errors.Is(err, ErrInvalidRecord) {
					return // too long for one line
				}
				t.Fatal(err)
			}
		}
		chain := out.Bytes()
		if rep, err := verifyBytes(chain); err != nil || rep.Records != 4 {
			t.Fatalf("fresh chain: got %+v, %v; want 4 records\n%s", rep, err, chain)
		}
		lastStart := bytes.LastIndexByte(chain[:len(chain)-1], '\n') + 1
		p := int(pos) % lastStart
		if chain[p] == b {
			return
		}
		mutated := bytes.Clone(chain)
		mutated[p] = b
		wantLine := bytes.Count(chain[:p], []byte("\n")) + 1
		rep, err = verifyBytes(mutated)
		if rep.Broken == nil {
			t.Fatalf("byte %d (line %d) changed from %q to %q: not detected", p, wantLine, chain[p], b)
		}
		if rep.Broken.Line != wantLine {
			t.Fatalf("byte %d changed from %q to %q on line %d: reported at line %d (%s)", p, chain[p], b, wantLine, rep.Broken.Line, err)
		}
	})
}
