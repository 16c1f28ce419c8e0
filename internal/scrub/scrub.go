// Package scrub replaces known secrets in strings and in streams: the
// sidecar runs every response to a routed request through it, so that an
// API that echoes the injected token (debug endpoints, echo services, error
// pages, WWW-Authenticate, Location) cannot hand it to the agent.
//
// The secrets of one grant are few (an access token, a refresh token, a
// client secret) and known before the response arrives, so a Set scans
// for each with bytes.Index, which the standard library runs with vector
// instructions, and takes the leftmost match (the longest when several
// start at one place). A stream is scanned in the caller's buffer as it is
// read; only a tail that could be the beginning of a secret (at most the
// longest secret's length minus one byte) is held back until the next read
// shows whether it is one, so streamed responses (server-sent events) are
// not delayed by bytes that cannot start a secret.
//
// Each occurrence is overwritten in place by a replacement of the same
// length — the Marker, padded with "*" (only "*" for a secret shorter than
// the marker) — so a body's length, and its Content-Length, stay right
// without re-framing or buffering.
//
// A Set is immutable and safe for concurrent use; a Reader belongs to one
// goroutine.
package scrub

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"sync"
)

// Marker starts the replacement of every secret found.
const Marker = "[onbehalf:redacted]"

// MinSecretLength is the shortest secret a Set looks for: a shorter string
// would match ordinary text, and no token or client secret is that short.
const MinSecretLength = 8

// MaxSecrets bounds the secrets of one Set (a grant has three).
const MaxSecrets = 8

// Set is the secrets to replace. The zero value and nil replace nothing.
type Set struct {
	needles []needle // longest first
	maxLen  int
}

// needle is one secret.
type needle struct {
	b    []byte
	s    string
	rare int // the offset of its rarest byte (see index)
}

// New returns the Set of secrets, ignoring empty ones, those shorter than
// MinSecretLength, duplicates and any beyond MaxSecrets (the longest are
// kept). It costs three allocations: the proxy builds one per request.
func New(secrets ...string) *Set {
	var keep [MaxSecrets + 1]string
	k, total := 0, 0
	for _, s := range secrets {
		if len(s) < MinSecretLength || slices.Contains(keep[:k], s) {
			continue
		}
		// Insert by length, longest first; one past MaxSecrets falls off.
		i := k
		for i > 0 && len(keep[i-1]) < len(s) {
			keep[i] = keep[i-1]
			i--
		}
		keep[i] = s
		k = min(k+1, MaxSecrets)
	}
	for _, s := range keep[:k] {
		total += len(s)
	}
	set := &Set{needles: make([]needle, k)}
	buf := make([]byte, 0, total)
	for i, s := range keep[:k] {
		buf = append(buf, s...)
		set.needles[i] = needle{b: buf[len(buf)-len(s):], s: s, rare: rarest(s)}
		set.maxLen = max(set.maxLen, len(s))
	}
	return set
}

// Replacement returns what a secret of n bytes is replaced by.
func Replacement(n int) string {
	b := make([]byte, n)
	writeReplacement(b)
	return string(b)
}

// writeReplacement overwrites b with the replacement of a secret of its
// length.
func writeReplacement(b []byte) {
	i := 0
	if len(b) >= len(Marker) {
		i = copy(b, Marker)
	}
	for ; i < len(b); i++ {
		b[i] = '*'
	}
}

// Empty reports whether s looks for nothing.
func (s *Set) Empty() bool { return s == nil || len(s.needles) == 0 }

// String returns v with every secret replaced, and how many were. It
// allocates only when v holds one.
func (s *Set) String(v string) (string, int) {
	if s.Empty() {
		return v, 0
	}
	found := false
	for _, n := range s.needles {
		if strings.Contains(v, n.s) {
			found = true
			break
		}
	}
	if !found {
		return v, 0
	}
	b := []byte(v)
	count, _ := s.replace(b, len(b))
	return string(b), count
}

// replace overwrites the secrets in b that start before limit, leftmost
// first (the longest of those starting at one position), and returns how
// many it replaced and where the last replacement ended (0 when none). A
// secret starting at most len(b)-maxLen is final: any secret starting
// at or before it lies within b, so none found later can take its place.
func (s *Set) replace(b []byte, limit int) (count, end int) {
	var next [MaxSecrets]int // where each needle next occurs at or after pos; -1 for never
	for i := range s.needles {
		next[i] = s.index(b, 0, i)
	}
	pos := 0
	for {
		best := -1
		for i := range s.needles {
			// Needles are longest first: on a tie the first found wins.
			if next[i] >= 0 && (best < 0 || next[i] < next[best]) {
				best = i
			}
		}
		if best < 0 || next[best] >= limit {
			return count, end
		}
		at := next[best]
		writeReplacement(b[at : at+len(s.needles[best].b)])
		count++
		pos = at + len(s.needles[best].b)
		end = pos
		for i := range s.needles {
			if next[i] >= 0 && next[i] < pos {
				next[i] = s.index(b, pos, i)
			}
		}
	}
}

// index returns where needle i first occurs in b at or after from, or -1.
// It looks for the needle's rarest byte with bytes.IndexByte (vectorised)
// and compares the needle around each hit; bytes.Index looks for the first
// byte, which in a token is often common in text ("e" of "eyJ", "c" of a
// prefix). After many false hits it hands over to bytes.Index, whose
// worst case is bounded.
func (s *Set) index(b []byte, from, i int) int {
	n, k := s.needles[i].b, s.needles[i].rare
	c := n[k]
	last := len(b) - len(n) // the last start at which n fits
	fails := 0
	for at := from; at <= last; {
		j := bytes.IndexByte(b[at+k:last+k+1], c)
		if j < 0 {
			return -1
		}
		start := at + j
		if bytes.Equal(b[start:start+len(n)], n) {
			return start
		}
		if fails++; fails > indexCutover {
			if j := bytes.Index(b[start+1:], n); j >= 0 {
				return start + 1 + j
			}
			return -1
		}
		at = start + 1
	}
	return -1
}

// indexCutover is how many false hits of a needle's rare byte index takes
// before it hands over to bytes.Index.
const indexCutover = 64

// commonBytes ranks bytes from the most to the least frequent in API
// responses (JSON, HTML, English text); bytes not listed rank below all of
// them. The ranking is coarse, and only has to make rarest pick a byte
// that text seldom holds (an upper-case letter, a digit) over a common one.
const commonBytes = " etaoinsrhld\"cu:m,fpgwyb0v1k2x.3j4q5z6789_-/{}[]ETAOINSRHLDCUMFPGWYBVKXJQZ=&?%+\n\r\t;()'@#!*$<>"

// byteRank is each byte's position in commonBytes (len(commonBytes) for
// bytes not listed).
var byteRank = func() (r [256]uint8) {
	for i := range r {
		r[i] = uint8(len(commonBytes))
	}
	for i := 0; i < len(commonBytes); i++ {
		r[commonBytes[i]] = uint8(i)
	}
	return r
}()

// rarest returns the offset in s of its rarest byte by commonBytes (the
// first of equally rare ones).
func rarest(s string) int {
	best, bestRank := 0, -1
	for i := 0; i < len(s); i++ {
		if rank := int(byteRank[s[i]]); rank > bestRank {
			best, bestRank = i, rank
		}
	}
	return best
}

// heldBack returns how many bytes at the end of b must wait for the next
// read: from the first position, at or after from and within the last
// maxLen-1 bytes, where a secret could start — b's end is the beginning of
// a secret there, or a whole secret starts there that a longer or earlier
// one finishing in the next read may yet replace.
func (s *Set) heldBack(b []byte, from int) int {
	first := len(b)
	zone := max(from, len(b)-s.maxLen+1)
	for _, nd := range s.needles {
		n := nd.b
		for lo := zone; lo < first; {
			i := bytes.IndexByte(b[lo:first], n[0])
			if i < 0 {
				break
			}
			at := lo + i
			if rest := b[at:]; bytes.HasPrefix(n, rest) || bytes.HasPrefix(rest, n) {
				first = at
				break
			}
			lo = at + 1
		}
	}
	return len(b) - first
}

// Reader replaces secrets in what it reads from another reader.
type Reader struct {
	src   io.Reader
	set   *Set
	held  []byte // the end of the last read, which could begin a secret
	err   error  // from src, returned once held and pending bytes are out
	count int

	// A caller whose buffer cannot hold the held bytes and a secret (a
	// relay that reads exactly the Content-Length left) gets the data
	// through scratch, a pooled buffer held only while pending is not
	// empty.
	scratch *[]byte
	pending []byte
}

// scratchSize is the pooled scratch buffer's size; Sets with secrets
// longer than half of it allocate their own.
const scratchSize = 8 << 10

var scratches = sync.Pool{New: func() any { b := make([]byte, scratchSize); return &b }}

// Reader returns a Reader of src that replaces s's secrets.
func (s *Set) Reader(src io.Reader) *Reader {
	r := &Reader{}
	r.Reset(s, src)
	return r
}

// Reset makes r a Reader of src for s, as Set.Reader does, so that a
// Reader can live inside another value instead of being allocated.
func (r *Reader) Reset(s *Set, src io.Reader) {
	r.release()
	*r = Reader{src: src, set: s, held: r.held[:0]}
}

// release returns the scratch buffer to its pool.
func (r *Reader) release() {
	if r.scratch != nil && len(*r.scratch) == scratchSize {
		scratches.Put(r.scratch)
	}
	r.scratch, r.pending = nil, nil
}

// Count is how many secrets the Reader has replaced so far.
func (r *Reader) Count() int { return r.count }

// Read reads from the source into p, replacing secrets. Bytes that could
// begin a secret are held back until the next read decides; at the end of
// the source they are released as they are (a secret's beginning alone is
// not the secret). After any other error from the source they are dropped.
func (r *Reader) Read(p []byte) (int, error) {
	if r.set.Empty() {
		n, err := r.src.Read(p)
		return n, err
	}
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	if len(p) < 2*r.set.maxLen {
		if r.scratch == nil {
			if 2*r.set.maxLen <= scratchSize {
				r.scratch = scratches.Get().(*[]byte)
			} else {
				b := make([]byte, 2*r.set.maxLen)
				r.scratch = &b
			}
		}
		n, err := r.fill(*r.scratch)
		r.pending = (*r.scratch)[:n]
		k := copy(p, r.pending)
		r.pending = r.pending[k:]
		if len(r.pending) == 0 {
			r.release()
		}
		if k == 0 {
			return 0, err
		}
		return k, nil
	}
	return r.fill(p)
}

// fill reads into p, which has room for the held bytes and a secret after
// them, and returns how many bytes of p are ready.
func (r *Reader) fill(p []byte) (int, error) {
	for {
		n := copy(p, r.held)
		r.held = r.held[:0]
		if r.err == nil {
			k, err := r.src.Read(p[n:])
			n += k
			r.err = err
		}
		if n == 0 {
			if r.err == nil {
				continue // a source may return 0, nil
			}
			return 0, r.err
		}
		limit := n
		if r.err == nil {
			limit = n - r.set.maxLen + 1 // later starts are decided next time
		}
		count, end := r.set.replace(p[:n], limit)
		r.count += count
		switch {
		case r.err == nil:
			h := r.set.heldBack(p[:n], end)
			r.held = append(r.held, p[n-h:n]...)
			n -= h
			if n == 0 {
				continue
			}
		case r.err != io.EOF:
			// The response broke off: whatever could have begun a secret
			// goes nowhere (whole secrets were replaced above).
			n -= r.set.heldBack(p[:n], end)
			if n == 0 {
				return 0, r.err
			}
		}
		return n, nil
	}
}
