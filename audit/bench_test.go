package audit

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
)

// BenchmarkWrite measures one canonical request record through the file
// sink, per durability (sync depends on the disk; it is here for scale).
func BenchmarkWrite(b *testing.B) {
	for _, d := range []Durability{DurabilityWrite, DurabilityBuffered, DurabilitySync} {
		b.Run(string(d), func(b *testing.B) {
			a := newAuditor(b, fileConfig(b.TempDir(), d), Options{})
			r := sampleRecord(1)
			r.Path = "/api/chat.postMessage?channel=C123&x=1"
			b.ReportAllocs()
			for b.Loop() {
				r.Time = testTime // keep the record identical each round
				if err := a.Write(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("stdout-discard", func(b *testing.B) {
		a := newAuditor(b, stdoutConfig(), Options{Stdout: io.Discard})
		r := sampleRecord(1)
		b.ReportAllocs()
		for b.Loop() {
			if err := a.Write(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkWriteParallel(b *testing.B) {
	a := newAuditor(b, fileConfig(b.TempDir(), DurabilityWrite), Options{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := sampleRecord(1)
		for pb.Next() {
			if err := a.Write(r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	var out bytes.Buffer
	a := newAuditor(b, stdoutConfig(), Options{Stdout: &out})
	writeRecords(b, a, 0, 1000)
	path := filepath.Join(b.TempDir(), "audit.log")
	writeFile(b, path, out.Bytes())
	b.SetBytes(int64(out.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify([]string{path}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRedactPath(b *testing.B) {
	for _, p := range []string{"/api/chat.postMessage?channel=C123&x=1", "/cb?code=abc&state=xyz"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = RedactPath(p)
			}
		})
	}
}

func BenchmarkFingerprint(b *testing.B) {
	f, err := NewFingerprinter(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = f.Token("ya29.a0AfH6SMBx-an-access-token-of-typical-length-0123456789")
	}
}
