package scrub

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

const (
	access  = "canary-access-token-7f3e9b2c41d8"
	refresh = "canary-refresh-token-a91c0d5e66b2"
	secret  = "client-secret-0b7d"
)

// reference replaces secrets the obvious way: at each position, the
// longest secret that starts there, else the byte itself.
func reference(s string, secrets []string) (string, int) {
	var out strings.Builder
	count := 0
	set := New(secrets...)
outer:
	for i := 0; i < len(s); {
		for _, n := range set.needles {
			if strings.HasPrefix(s[i:], n.s) {
				out.WriteString(Replacement(len(n.s)))
				i += len(n.s)
				count++
				continue outer
			}
		}
		out.WriteByte(s[i])
		i++
	}
	return out.String(), count
}

// chunked returns the chunks of s cut at the given sizes, cycling.
type chunked struct {
	s     string
	sizes []int
	i     int
}

func (c *chunked) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	n := min(c.sizes[c.i%len(c.sizes)], len(c.s), len(p))
	c.i++
	copy(p, c.s[:n])
	c.s = c.s[n:]
	return n, nil
}

func readAll(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func TestReplacement(t *testing.T) {
	for n, want := range map[int]string{
		8:  "********",
		19: Marker,
		24: Marker + "*****",
	} {
		if got := Replacement(n); got != want || len(got) != n {
			t.Errorf("Replacement(%d) = %q; want %q", n, got, want)
		}
	}
}

func TestString(t *testing.T) {
	set := New(access, refresh, secret, "", "short")
	if len(set.needles) != 3 {
		t.Fatalf("%d secrets kept; want 3 (empty and short ones dropped)", len(set.needles))
	}
	tests := []struct{ in, want string }{
		{"Bearer " + access, "Bearer " + Replacement(len(access))},
		{`{"echo":"` + access + `","r":"` + refresh + `"}`, `{"echo":"` + Replacement(len(access)) + `","r":"` + Replacement(len(refresh)) + `"}`},
		{"nothing here", "nothing here"},
		{access + access, Replacement(len(access)) + Replacement(len(access))},
		{"a=" + secret + "&b=" + secret, "a=" + Replacement(len(secret)) + "&b=" + Replacement(len(secret))},
	}
	for _, tt := range tests {
		got, n := set.String(tt.in)
		want, wantN := reference(tt.in, []string{access, refresh, secret})
		if got != tt.want || got != want || n != wantN {
			t.Errorf("String(%q) = %q, %d; want %q, %d", tt.in, got, n, tt.want, wantN)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { set.String("application/json; charset=utf-8") }); allocs != 0 {
		t.Errorf("String allocates %v times on a value without secrets; want 0", allocs)
	}
}

// TestReaderEverySplit cuts a body holding secrets at every position, and
// reads it in one-byte and odd-sized pieces: the output is always the
// reference's.
func TestReaderEverySplit(t *testing.T) {
	secrets := []string{access, refresh, secret}
	body := "HTTP echo: Authorization: Bearer " + access + "\n" +
		`{"refresh_token":"` + refresh + `","client_secret":"` + secret + `"}` + "\n" +
		"canary-access-token-7f3e9b2c41d" + "X (almost, not quite)\n" + access
	want, wantN := reference(body, secrets)
	set := New(secrets...)
	for cut := 1; cut < len(body); cut++ {
		for _, sizes := range [][]int{{cut, len(body)}, {cut, 1, 7}, {1}} {
			r := set.Reader(&chunked{s: body, sizes: sizes})
			if got := readAll(t, r); got != want || r.Count() != wantN {
				t.Fatalf("chunks %v: got %q (%d); want %q (%d)", sizes, got, r.Count(), want, wantN)
			}
		}
	}
	// A caller with a tiny buffer.
	r := set.Reader(strings.NewReader(body))
	if got := readAll(t, iotest.OneByteReader(r)); got != want {
		t.Errorf("one-byte reads by the caller: got %q; want %q", got, want)
	}
}

// TestReaderRandom compares the Reader with the reference on random text
// over a small alphabet, with secrets that overlap each other.
func TestReaderRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	alpha := "abc"
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		return string(b)
	}
	for range 3000 {
		secrets := []string{word(8 + rng.IntN(4)), word(8 + rng.IntN(6))}
		secrets = append(secrets, secrets[0][:8]+"ab") // shares a prefix
		var body strings.Builder
		for range rng.IntN(40) {
			if rng.IntN(3) == 0 {
				body.WriteString(secrets[rng.IntN(len(secrets))])
			} else {
				body.WriteString(word(rng.IntN(12)))
			}
		}
		want, wantN := reference(body.String(), secrets)
		r := New(secrets...).Reader(&chunked{s: body.String(), sizes: []int{1 + rng.IntN(20), 1 + rng.IntN(5)}})
		if got := readAll(t, r); got != want || r.Count() != wantN {
			t.Fatalf("secrets %q, body %q:\ngot  %q (%d)\nwant %q (%d)", secrets, body.String(), got, r.Count(), want, wantN)
		}
	}
}

// TestReaderHoldsOnlyPrefixes: bytes that cannot begin a secret are
// returned at once (a server-sent event is not delayed); a tail that
// could be one waits for the next read.
func TestReaderHoldsOnlyPrefixes(t *testing.T) {
	pr, pw := io.Pipe()
	r := New(access).Reader(pr)
	buf := make([]byte, 4096)
	go pw.Write([]byte("data: {\"x\":1}\n\n"))
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "data: {\"x\":1}\n\n" {
		t.Fatalf("got %q, %v; want the event at once", buf[:n], err)
	}
	go pw.Write([]byte("data: canary-acc"))
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "data: " {
		t.Fatalf("got %q, %v; want the secret's possible beginning held back", buf[:n], err)
	}
	go func() { pw.Write([]byte(access[len("canary-acc"):] + "\n")); pw.Close() }()
	rest := readAll(t, r)
	if want := Replacement(len(access)) + "\n"; rest != want {
		t.Errorf("got %q; want %q", rest, want)
	}
}

// TestReaderErrors: at EOF a held tail is released; after another error it
// is dropped, and the error is returned.
func TestReaderErrors(t *testing.T) {
	r := New(access).Reader(strings.NewReader("x canary-acc"))
	if got := readAll(t, r); got != "x canary-acc" {
		t.Errorf("at EOF: got %q; want the tail released", got)
	}
	r = New(access).Reader(iotest.DataErrReader(io.MultiReader(strings.NewReader("x canary-acc"), iotest.ErrReader(io.ErrUnexpectedEOF))))
	got, err := io.ReadAll(r)
	if err != io.ErrUnexpectedEOF || string(got) != "x " {
		t.Errorf("after an error: got %q, %v; want \"x \", the error", got, err)
	}
}

// FuzzReader compares the Reader with the reference on any body cut into
// any two chunk sizes (make fuzz runs it; seeds in testdata/fuzz).
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, body string, a, b uint8) {
		secrets := []string{access, refresh, secret}
		want, wantN := reference(body, secrets)
		r := New(secrets...).Reader(&chunked{s: body, sizes: []int{1 + int(a), 1 + int(b)}})
		got, err := io.ReadAll(r)
		if err != nil || string(got) != want || r.Count() != wantN {
			t.Fatalf("got %q (%d), %v; want %q (%d)", got, r.Count(), err, want, wantN)
		}
	})
}

// Secrets shaped like real ones (a Google access token, refresh token and
// client secret) for the benchmarks.
const (
	benchAccess  = "ya29.a0AfB_byDkX9bQ3mVt7LpR2sW8nZ4cHq6Jx1Ee5Ug0OiYtReWqAsDfGhJkLzXcVbNm"
	benchRefresh = "1//0gK7Zq2Xv9LmN3pQrS8tUwYz-L9IrAbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
	benchSecret  = "GOCSPX-4fQz9Lm2Nb7Xc3Vd8We1Rf5Tg6"
)

// BenchmarkReader is the scrubbing cost per response body: 64 KiB of JSON
// holding no secret, read in 4 KiB pieces as the proxy relays it, against
// three secrets shaped like real ones. BenchmarkReaderBaseline is the same
// copy without it; the difference is the CPU per KiB that scrubbing adds.
// BenchmarkReaderNearMisses uses the test canaries, whose rarest bytes are
// common in the body: a bad case.
func BenchmarkReader(b *testing.B) {
	benchmarkRead(b, New(benchAccess, benchRefresh, benchSecret))
}

func BenchmarkReaderNearMisses(b *testing.B) {
	benchmarkRead(b, New(access, refresh, secret))
}

func BenchmarkReaderBaseline(b *testing.B) {
	benchmarkRead(b, nil)
}

func benchmarkRead(b *testing.B, set *Set) {
	body := bytes.Repeat([]byte(`{"id":12345,"name":"channel-general","topic":"canary and access tokens","members":[1,2,3]},`), 64<<10/88)
	buf := make([]byte, 4096)
	src := bytes.NewReader(body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(body)
		var r io.Reader = src
		if set != nil {
			r = set.Reader(src)
		}
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	}
}

// BenchmarkString is the cost per response header value without a secret.
func BenchmarkString(b *testing.B) {
	set := New(benchAccess, benchRefresh, benchSecret)
	b.ReportAllocs()
	for b.Loop() {
		set.String("application/json; charset=utf-8")
	}
}

// BenchmarkNew is the cost of building a grant's Set, which the proxy does
// once per request.
func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		New(benchAccess, benchRefresh, benchSecret)
	}
}
