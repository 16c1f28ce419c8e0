package memtrim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Release returns the freed Go heap to the operating system and unmaps the
// executable's read-only pages (see the package documentation). It returns
// how many bytes of the executable were resident before and were released;
// an error means nothing of the executable was released, and the process is
// unharmed.
func Release() (int64, error) {
	debug.FreeOSMemory()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("release start-up memory: %w", err)
	}
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		return 0, fmt.Errorf("release start-up memory: %w", err)
	}
	var released int64
	for _, m := range parseSmaps(smaps) {
		if !m.releasable(uint64(exe.Dev), exe.Ino) {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("release start-up memory: madvise: %w", errno)
		}
		released += m.rss
	}
	return released, nil
}

// mapping is one entry of /proc/self/smaps.
type mapping struct {
	start, end uintptr
	perms      string
	dev        uint64 // device of the backing file, as stat reports it
	inode      uint64
	rss        int64 // resident bytes
	anon       int64 // bytes of private copies (Anonymous)
}

// releasable reports whether m is a read-only private mapping of the file
// (dev, ino) with no private copy of any page, so that dropping its pages
// loses nothing.
func (m mapping) releasable(dev, ino uint64) bool {
	return m.inode == ino && m.dev == dev && m.anon == 0 && m.rss > 0 &&
		(m.perms == "r--p" || m.perms == "r-xp")
}

// parseSmaps reads the mappings of an smaps file; entries it cannot parse
// are left out, which only makes Release release less.
func parseSmaps(b []byte) []mapping {
	var (
		out []mapping
		cur *mapping
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if key, val, ok := strings.Cut(line, ":"); ok && !strings.Contains(key, " ") && !strings.Contains(key, "-") {
			if cur == nil {
				continue
			}
			switch key {
			case "Rss":
				cur.rss = parseKB(val)
			case "Anonymous":
				cur.anon = parseKB(val)
			}
			continue
		}
		m, ok := parseMapsLine(line)
		if !ok {
			cur = nil
			continue
		}
		out = append(out, m)
		cur = &out[len(out)-1]
	}
	return out
}

// parseMapsLine parses a mapping header such as
// "00400000-013ff000 r-xp 00000000 fe:00 10903650   /path/to/exe".
func parseMapsLine(line string) (mapping, bool) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return mapping{}, false
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	if !ok {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	major, minor, ok := strings.Cut(f[3], ":")
	if err1 != nil || err2 != nil || !ok || end <= start {
		return mapping{}, false
	}
	maj, err1 := strconv.ParseUint(major, 16, 32)
	mnr, err2 := strconv.ParseUint(minor, 16, 32)
	ino, err3 := strconv.ParseUint(f[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return mapping{}, false
	}
	return mapping{
		start: uintptr(start), end: uintptr(end), perms: f[1],
		dev: unix.Mkdev(uint32(maj), uint32(mnr)), inode: ino,
	}, true
}

// parseKB parses " 1234 kB" into bytes; anything else is -1, which no
// check accepts as zero.
func parseKB(s string) int64 {
	n, ok := strings.CutSuffix(strings.TrimSpace(s), " kB")
	if !ok {
		return -1
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return -1
	}
	return v << 10
}
