package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

const testSecret = "tok-3f9a8b7c6d5e4f30"

// wsFrame encodes one unmasked server frame.
func wsFrame(fin bool, opcode byte, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	var f []byte
	switch n := len(payload); {
	case n <= 125:
		f = []byte{b0, byte(n)}
	case n <= 0xffff:
		f = []byte{b0, 126, 0, 0}
		binary.BigEndian.PutUint16(f[2:], uint16(n))
	default:
		f = make([]byte, 10)
		f[0], f[1] = b0, 127
		binary.BigEndian.PutUint64(f[2:], uint64(n))
	}
	return append(f, payload...)
}

// wsPayloads decodes a stream of unmasked frames into their payloads
// joined per message (control frames on their own).
func wsPayloads(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	var msg []byte
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("truncated frame header")
		}
		fin, op := b[0]&0x80 != 0, b[0]&0x0f
		n, h := uint64(b[1]&0x7f), 2
		switch n {
		case 126:
			n, h = uint64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			n, h = binary.BigEndian.Uint64(b[2:]), 10
		}
		p := b[h : h+int(n)]
		b = b[h+int(n):]
		if op >= 8 {
			out = append(out, string(p))
			continue
		}
		msg = append(msg, p...)
		if fin {
			out = append(out, string(msg))
			msg = nil
		}
	}
	return out
}

// feedAll feeds stream to a scrubber in pieces of the given sizes (cycled).
func feedAll(t *testing.T, z *wsScrubber, stream []byte, sizes []int) []byte {
	t.Helper()
	var out []byte
	for i := 0; len(stream) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(stream))
		var err error
		out, err = z.feed(out, stream[:n])
		if err != nil {
			t.Fatal(err)
		}
		stream = stream[n:]
	}
	return out
}

func TestWSScrubber(t *testing.T) {
	rep := replacement(len(testSecret))
	big := strings.Repeat("x", 70000)
	tests := []struct {
		name   string
		frames [][]byte
		want   []string
	}{
		{"no secret", [][]byte{wsFrame(true, 1, []byte("hello"))}, []string{"hello"}},
		{"one frame", [][]byte{wsFrame(true, 1, []byte(`{"auth":"Bearer `+testSecret+`"}`))}, []string{`{"auth":"Bearer ` + rep + `"}`}},
		{"twice", [][]byte{wsFrame(true, 2, []byte(testSecret+testSecret))}, []string{rep + rep}},
		{"16-bit length", [][]byte{wsFrame(true, 1, []byte(big[:300]+testSecret+big[:300]))}, []string{big[:300] + rep + big[:300]}},
		{"64-bit length", [][]byte{wsFrame(true, 1, []byte(big+testSecret))}, []string{big + rep}},
		{"split after the hot prefix", [][]byte{
			wsFrame(false, 1, []byte("a "+testSecret[:10])),
			wsFrame(true, 0, []byte(testSecret[10:]+" b")),
		}, []string{"a " + rep + " b"}},
		{"split before the hot prefix", [][]byte{
			wsFrame(false, 1, []byte("a "+testSecret[:5])),
			wsFrame(true, 0, []byte(testSecret[5:]+" b")),
		}, []string{"a " + testSecret[:5] + rep[5:] + " b"}},
		{"prefix that is not a secret", [][]byte{
			wsFrame(false, 1, []byte(testSecret[:9])),
			wsFrame(true, 0, []byte("zzz")),
		}, []string{rep[:9] + "zzz"}},
		{"short prefix at the end passes", [][]byte{wsFrame(true, 1, []byte("x "+testSecret[:7]))}, []string{"x " + testSecret[:7]}},
		{"control frame between fragments", [][]byte{
			wsFrame(false, 1, []byte("start "+testSecret[:12])),
			wsFrame(true, 9, []byte("ping "+testSecret)),
			wsFrame(true, 0, []byte(testSecret[12:])),
		}, []string{"ping " + rep, "start " + rep}},
		{"close reason", [][]byte{wsFrame(true, 8, append([]byte{0x0f, 0xa1}, testSecret...))}, []string{"\x0f\xa1" + rep}},
		{"empty frames", [][]byte{wsFrame(false, 1, nil), wsFrame(true, 0, []byte(testSecret))}, []string{rep}},
	}
	for _, tt := range tests {
		for _, sizes := range [][]int{{1 << 20}, {1}, {3, 7, 2}, {13}} {
			z := newWSScrubber([]string{testSecret, "short"})
			out := feedAll(t, z, bytes.Join(tt.frames, nil), sizes)
			got := wsPayloads(t, out)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("%s (pieces %v): got %q; want %q", tt.name, sizes, got, tt.want)
			}
			if !z.atBoundary() {
				t.Errorf("%s: not at a frame boundary after whole frames", tt.name)
			}
			if len(out) != len(bytes.Join(tt.frames, nil)) {
				t.Errorf("%s: relayed %d bytes; want as many as received", tt.name, len(out))
			}
		}
	}
}

func TestWSScrubberRefuses(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
	}{
		{"masked", []byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'}},
		{"compressed", []byte{0xc1, 0x01, 'x'}},
		{"long control", append([]byte{0x89, 126, 0, 200}, make([]byte, 200)...)},
		{"fragmented control", []byte{0x09, 0x00}},
	}
	for _, tt := range tests {
		z := newWSScrubber([]string{testSecret})
		if _, err := z.feed(nil, tt.frame); !errors.Is(err, errWSUnscrubbable) {
			t.Errorf("%s: got %v; want errWSUnscrubbable", tt.name, err)
		}
	}
}

// TestWSScrubberRandom cuts random streams with secrets at random places:
// whatever the cuts, a secret that lies within one frame never passes.
func TestWSScrubberRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		var stream []byte
		var frames int
		for range 1 + r.IntN(5) {
			payload := []byte(strings.Repeat("ab", r.IntN(40)) + testSecret + strings.Repeat("c", r.IntN(30)))
			stream = append(stream, wsFrame(true, 1, payload)...)
			frames++
		}
		var sizes []int
		for range 5 {
			sizes = append(sizes, 1+r.IntN(40))
		}
		z := newWSScrubber([]string{testSecret})
		out := feedAll(t, z, stream, sizes)
		if bytes.Contains(out, []byte(testSecret)) || len(out) != len(stream) || z.count != frames {
			t.Fatalf("cuts %v: secret passed, length changed or count %d != %d", sizes, z.count, frames)
		}
	}
}

func BenchmarkWSScrubber(b *testing.B) {
	payload := []byte(strings.Repeat(`{"type":"message","text":"hello world","ts":"1700000000.000100"}`, 64))
	frame := wsFrame(true, 1, payload)
	z := newWSScrubber([]string{testSecret, "refresh-0123456789abcdef"})
	out := make([]byte, 0, len(frame))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		out, err = z.feed(out[:0], frame)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzWSScrubber feeds arbitrary bytes, and frames holding a secret, in
// arbitrary pieces: it never panics, never relays more than it received,
// and a secret inside one frame's payload never passes.
func FuzzWSScrubber(f *testing.F) {
	f.Add([]byte("hello"), uint16(3), uint16(7), []byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte(strings.Repeat("z", 300)), uint16(1), uint16(2), []byte{0x01, 0x7e, 0x01})
	f.Fuzz(func(t *testing.T, payload []byte, at, cut uint16, raw []byte) {
		// Arbitrary bytes: no panic, no growth.
		z := newWSScrubber([]string{testSecret})
		c := min(int(cut), len(raw))
		out, err := z.feed(nil, raw[:c])
		if err == nil {
			out, _ = z.feed(out, raw[c:])
		}
		if len(out) > len(raw) {
			t.Fatalf("relayed %d bytes of %d", len(out), len(raw))
		}
		// A frame with the secret inside its payload.
		i := min(int(at), len(payload))
		p := append(append(append([]byte(nil), payload[:i]...), testSecret...), payload[i:]...)
		frame := wsFrame(true, 2, p)
		z = newWSScrubber([]string{testSecret})
		k := min(int(cut), len(frame))
		out, err = z.feed(nil, frame[:k])
		if err == nil {
			out, err = z.feed(out, frame[k:])
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out, []byte(testSecret)) || len(out) != len(frame) {
			t.Fatalf("secret passed or length changed (%d → %d)", len(frame), len(out))
		}
	})
}

func TestScrubHeaderSecrets(t *testing.T) {
	h := http.Header{
		"X-Echo":               {"Bearer " + testSecret, "plain"},
		"X-" + testSecret:      {"v"},
		"Sec-Websocket-Accept": {"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
	}
	if n := scrubHeaderSecrets(h, []string{testSecret}); n != 2 {
		t.Errorf("scrubbed %d; want 2", n)
	}
	want := http.Header{
		"X-Echo":               {"Bearer " + replacement(len(testSecret)), "plain"},
		"Sec-Websocket-Accept": {"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
	}
	if fmt.Sprint(h) != fmt.Sprint(want) {
		t.Errorf("got %v; want %v", h, want)
	}
}
