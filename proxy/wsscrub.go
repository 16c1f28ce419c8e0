package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Scrubbing the API's side of a WebSocket. Frames from a server are never
// masked (RFC 6455 section 5.1), so an API that echoes the injected token
// in a message puts the token's bytes on the wire as they are, inside one
// frame's payload or split across several. wsScrubber walks the frame
// headers (it needs them to tell payload from framing and to keep the
// relay between frames when it must end the connection) and overwrites
// each secret in the payloads with a replacement of the same length, so no
// frame header changes.
//
// A payload is relayed as it arrives, except a tail that could be the
// start of a secret, held back until the next read shows whether it is
// one: within a frame this costs nothing, since the agent cannot act on a
// frame before its last byte. At the end of a frame everything held goes
// out. If the frame ends inside what looks like a secret — its first
// wsHotPrefix bytes or more — those bytes are overwritten then and the rest
// of the secret is overwritten in the frames that follow; a secret split
// across frames before its wsHotPrefix-th byte can therefore show at most
// wsHotPrefix-1 of its bytes. (A string that merely starts like a secret
// for that many bytes and then differs at a frame boundary is overwritten
// too.)
//
// Control frames (close, ping, pong) carry at most 125 bytes: each is held
// whole and scrubbed on its own. A masked frame, or one with a reserved
// bit set (an extension such as permessage-deflate, which the sidecar
// never offers), cannot be inspected: the relay ends.

// minSecretLen is the shortest secret looked for: shorter strings match
// ordinary text, and no token is that short.
const minSecretLen = 8

// wsHotPrefix is how many bytes of a secret, seen at the end of a frame,
// make the sidecar overwrite them without seeing the rest.
const wsHotPrefix = 8

// scrubMarker starts the replacement of every secret found; the rest of
// the replacement is "*" (only "*" for a secret shorter than the marker).
const scrubMarker = "[onbehalf:redacted]"

// replacement returns what a secret of n bytes is replaced by.
func replacement(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = replacementByte(n, i)
	}
	return string(b)
}

// replacementByte is the byte at offset i of the replacement of a secret
// of n bytes.
func replacementByte(n, i int) byte {
	if n >= len(scrubMarker) && i < len(scrubMarker) {
		return scrubMarker[i]
	}
	return '*'
}

// wsScrubber reads the frames a server sends and scrubs their payloads.
// It is used by one goroutine at a time.
type wsScrubber struct {
	data  streamScrub // data frame payloads, one stream across frames
	count int         // secrets overwritten

	hdr     [14]byte
	hdrLen  int // header bytes read so far
	need    int // header length once known (0 until two bytes are read)
	control bool
	remain  uint64 // payload bytes of the current frame still to come
	inFrame bool   // between a header and the end of its payload
	ctrl    []byte // a control frame's payload so far
}

func newWSScrubber(secrets []string) *wsScrubber {
	z := &wsScrubber{}
	z.data.init(secrets)
	return z
}

// atBoundary reports whether the stream so far ends between frames.
func (z *wsScrubber) atBoundary() bool { return !z.inFrame && z.hdrLen == 0 }

// feed appends to out what can be relayed of p, the next bytes from the
// server, and returns it.
func (z *wsScrubber) feed(out, p []byte) ([]byte, error) {
	for len(p) > 0 {
		if !z.inFrame {
			// Collect the header: 2 bytes, then the extended length.
			for len(p) > 0 && (z.need == 0 || z.hdrLen < z.need) {
				z.hdr[z.hdrLen] = p[0]
				z.hdrLen++
				p = p[1:]
				if z.hdrLen == 2 {
					if err := z.startHeader(); err != nil {
						return out, err
					}
				}
			}
			if z.need == 0 || z.hdrLen < z.need {
				return out, nil
			}
			z.endHeader()
			out = append(out, z.hdr[:z.hdrLen]...)
			z.hdrLen, z.need = 0, 0
			z.inFrame = true
			if z.remain == 0 {
				out = z.endFrame(out)
			}
			continue
		}
		n := min(uint64(len(p)), z.remain)
		chunk := p[:n]
		p = p[n:]
		z.remain -= n
		end := z.remain == 0
		if z.control {
			z.ctrl = append(z.ctrl, chunk...)
			if end {
				var one streamScrub
				one.init(z.data.secrets)
				out = one.write(out, z.ctrl, true)
				z.count += one.count
				z.ctrl = z.ctrl[:0]
			}
		} else {
			out = z.data.write(out, chunk, end)
		}
		if end {
			out = z.endFrame(out)
		}
	}
	return out, nil
}

// startHeader reads a header's first two bytes.
func (z *wsScrubber) startHeader() error {
	b0, b1 := z.hdr[0], z.hdr[1]
	if b0&0x70 != 0 {
		return fmt.Errorf("%w: reserved bits set (an extension)", errWSUnscrubbable)
	}
	if b1&0x80 != 0 {
		return fmt.Errorf("%w: a masked frame from the server", errWSUnscrubbable)
	}
	opcode := b0 & 0x0f
	z.control = opcode >= 8
	switch l := b1 & 0x7f; {
	case z.control && (l > 125 || b0&0x80 == 0):
		return fmt.Errorf("%w: an invalid control frame", errWSUnscrubbable)
	case l == 126:
		z.need = 4
	case l == 127:
		z.need = 10
	default:
		z.need = 2
	}
	return nil
}

// endHeader reads the payload length of a complete header.
func (z *wsScrubber) endHeader() {
	switch z.need {
	case 4:
		z.remain = uint64(binary.BigEndian.Uint16(z.hdr[2:4]))
	case 10:
		z.remain = binary.BigEndian.Uint64(z.hdr[2:10])
	default:
		z.remain = uint64(z.hdr[1] & 0x7f)
	}
}

func (z *wsScrubber) endFrame(out []byte) []byte {
	z.inFrame = false
	z.count += z.data.takeCount()
	return out
}

// streamScrub overwrites secrets in a stream of bytes relayed in pieces.
// Each secret has a Knuth-Morris-Pratt matcher, so a secret is found
// however the stream is cut; bytes that may be the start of one are held
// back until a later write, or until a write marked as the end of a frame.
type streamScrub struct {
	secrets []string
	needles [][]byte
	fail    [][]int // KMP failure function per needle
	m       []int   // bytes of each needle matched at the end of the stream
	pend    []byte  // bytes not yet relayed
	count   int
}

func (z *streamScrub) init(secrets []string) {
	z.secrets = secrets
	for _, s := range secrets {
		if len(s) < minSecretLen {
			continue
		}
		n := []byte(s)
		f := make([]int, len(n))
		for i, k := 1, 0; i < len(n); i++ {
			for k > 0 && n[i] != n[k] {
				k = f[k-1]
			}
			if n[i] == n[k] {
				k++
			}
			f[i] = k
		}
		z.needles = append(z.needles, n)
		z.fail = append(z.fail, f)
		z.m = append(z.m, 0)
	}
}

// idle reports whether no secret is partly matched.
func (z *streamScrub) idle() bool {
	for _, m := range z.m {
		if m != 0 {
			return false
		}
	}
	return true
}

func (z *streamScrub) takeCount() int {
	n := z.count
	z.count = 0
	return n
}

// write appends to out the bytes of p that can be relayed now; end says
// the frame ends with p, so nothing may be held back.
func (z *streamScrub) write(out, p []byte, end bool) []byte {
	if len(z.needles) == 0 {
		return append(out, p...)
	}
	for k := 0; k < len(p); k++ {
		if z.idle() {
			// No match in progress: skip to the next byte that starts
			// one (bytes.IndexByte is vectorised).
			next := len(p)
			for _, n := range z.needles {
				if j := bytes.IndexByte(p[k:next], n[0]); j >= 0 {
					next = k + j
				}
			}
			z.pend = append(z.pend, p[k:next]...)
			if k = next; k == len(p) {
				break
			}
		}
		c := p[k]
		z.pend = append(z.pend, c)
		for i, n := range z.needles {
			m := z.m[i]
			for m > 0 && n[m] != c {
				m = z.fail[i][m-1]
			}
			if n[m] == c {
				m++
			}
			if m == len(n) {
				z.overwrite(len(n), len(n))
				z.count++
				m = 0
			}
			z.m[i] = m
		}
	}
	hold := 0
	for i, m := range z.m {
		switch {
		case !end:
			hold = max(hold, m)
		case m >= min(wsHotPrefix, len(z.needles[i])):
			z.overwrite(len(z.needles[i]), m)
		}
	}
	hold = min(hold, len(z.pend))
	out = append(out, z.pend[:len(z.pend)-hold]...)
	z.pend = z.pend[:copy(z.pend, z.pend[len(z.pend)-hold:])]
	return out
}

// overwrite replaces the pending bytes of a match of the first m bytes of
// a secret of n bytes that ends at the end of pend.
func (z *streamScrub) overwrite(n, m int) {
	k := min(m, len(z.pend))
	tail := z.pend[len(z.pend)-k:]
	for j := range tail {
		tail[j] = replacementByte(n, m-k+j)
	}
}
