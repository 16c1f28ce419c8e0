package memtrim

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestParseSmaps(t *testing.T) {
	b, err := os.ReadFile("testdata/smaps")
	if err != nil {
		t.Fatal(err)
	}
	got := parseSmaps(b)
	want := []mapping{
		{start: 0x400000, end: 0x13ff000, perms: "r-xp", dev: unix.Mkdev(0xfe, 0), inode: 10903650, rss: 14192 << 10},
		{start: 0x13ff000, end: 0x29f2000, perms: "r--p", dev: unix.Mkdev(0xfe, 0), inode: 10903650, rss: 13004 << 10},
		{start: 0x29f2000, end: 0x2b7a000, perms: "rw-p", dev: unix.Mkdev(0xfe, 0), inode: 10903650, rss: 736 << 10, anon: 280 << 10},
		{start: 0x2b7a000, end: 0x2b8a000, perms: "r--p", dev: unix.Mkdev(0xfe, 0), inode: 10903650, rss: 64 << 10, anon: 4 << 10},
		{start: 0x7fa3382c3000, end: 0x7fa338419000, perms: "r-xp", dev: unix.Mkdev(0xfe, 0), inode: 326269, rss: 756 << 10},
		{start: 0x342dc2c00000, end: 0x342dc3800000, perms: "rw-p", rss: 5208 << 10, anon: 5208 << 10},
		{start: 0x7fa3384ba000, end: 0x7fa3384bb000, perms: "r--p", dev: unix.Mkdev(0xfe, 0), inode: 10903650, rss: -1},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(mapping{})); diff != "" {
		t.Fatalf("parseSmaps (-want +got):\n%s", diff)
	}
	var releasable []uintptr
	for _, m := range got {
		if m.releasable(unix.Mkdev(0xfe, 0), 10903650) {
			releasable = append(releasable, m.start)
		}
	}
	// Only the text and read-only data of the executable: not its data
	// (writable), not the RELRO page holding a private copy, not libc, not
	// the heap, not an entry whose sizes could not be read.
	if diff := cmp.Diff([]uintptr{0x400000, 0x13ff000}, releasable); diff != "" {
		t.Fatalf("releasable mappings (-want +got):\n%s", diff)
	}
}

// TestRelease releases this test binary's pages and checks that its
// file-backed resident size fell and that the code still runs.
func TestRelease(t *testing.T) {
	before := rssFile(t)
	released, err := Release()
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	after := rssFile(t)
	if released <= 0 {
		t.Fatalf("Release released %d bytes; want more than 0", released)
	}
	if after >= before {
		t.Fatalf("RssFile after Release = %d kB; want less than before, %d kB", after, before)
	}
	// The released code is mapped back as it runs: parse something.
	if got := parseKB(" 12 kB"); got != 12<<10 {
		t.Fatalf("parseKB after Release = %d; want %d", got, 12<<10)
	}
	if _, err := Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
}

func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("RssFile %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
