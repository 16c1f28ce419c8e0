package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
// /proc/<pid>/stat. It is 100 on every Linux architecture Go supports.
const clockTicksPerSecond = 100

// rssSampleInterval is how often a phase samples the resident memory of a
// process tree: often enough to catch the peak of a phase lasting seconds,
// rarely enough to cost nothing measurable.
const rssSampleInterval = 100 * time.Millisecond

var errNoProcess = errors.New("no such process")

// procStat is what the harness reads from /proc/<pid>/stat.
type procStat struct {
	ppid int
	// cpu is utime+stime+cutime+cstime: the process's own CPU time and
	// that of the children it has reaped, so a helper that exits during a
	// phase is still counted.
	cpu time.Duration
}

// parseStat parses the contents of /proc/<pid>/stat. The command name (field
// 2) may hold spaces and parentheses, so fields are counted from the last
// ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("parse stat: no command name")
	}
	// After ") ": state(3) ppid(4) ... utime(14) stime(15) cutime(16)
	// cstime(17).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("parse stat: %d fields after the command name", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	cutime, err4 := strconv.ParseInt(f[13], 10, 64)
	cstime, err5 := strconv.ParseInt(f[14], 10, 64)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return procStat{}, fmt.Errorf("parse stat: %w", err)
	}
	ticks := utime + stime + cutime + cstime
	return procStat{ppid: ppid, cpu: time.Duration(ticks) * time.Second / clockTicksPerSecond}, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, errNoProcess
	}
	return parseStat(b)
}

// memStatus is a process's memory from /proc/<pid>/status and
// /proc/<pid>/smaps_rollup, in bytes.
type memStatus struct {
	rss int64 // VmRSS
	hwm int64 // VmHWM, the peak of VmRSS over the process's life
	// anon and file split VmRSS: private memory (RssAnon: heap, stacks,
	// what a pod's memory limit is charged for and no other process
	// shares) and pages of mapped files (RssFile: the executable,
	// libraries), which every process mapping the same file shares. Zero
	// when the kernel does not say.
	anon, file int64
	// pss is the proportional set size (smaps_rollup's Pss): private pages
	// plus each shared page divided by the number of processes mapping it.
	// Zero when smaps_rollup cannot be read.
	pss int64
}

// parseStatus reads VmRSS, VmHWM, RssAnon and RssFile from the contents of
// /proc/<pid>/status.
func parseStatus(b []byte) (memStatus, error) {
	var m memStatus
	var seen int
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM" && name != "RssAnon" && name != "RssFile") {
			continue
		}
		kb, err := kbField(name, line, rest)
		if err != nil {
			return m, fmt.Errorf("parse status: %w", err)
		}
		switch name {
		case "VmRSS":
			m.rss = kb << 10
			seen++
		case "VmHWM":
			m.hwm = kb << 10
			seen++
		case "RssAnon":
			m.anon = kb << 10
		case "RssFile":
			m.file = kb << 10
		}
	}
	if seen != 2 {
		return m, errors.New("parse status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// kbField parses the value of a "Name:   123 kB" line of /proc.
func kbField(name, line, rest string) (int64, error) {
	f := strings.Fields(rest)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("odd %s line %q", name, line)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

// parsePss reads Pss from the contents of /proc/<pid>/smaps_rollup.
func parsePss(b []byte) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, err := kbField("Pss", line, rest)
			if err != nil {
				return 0, fmt.Errorf("parse smaps_rollup: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("parse smaps_rollup: no Pss line")
}

func readStatus(pid int) (memStatus, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return memStatus{}, errNoProcess
	}
	return parseStatus(b)
}

// readPss is the process's proportional set size, or 0 when it cannot be
// read (a kernel before 4.14, or no permission). Reading smaps_rollup walks
// every mapping under the process's memory lock, so only the memory
// phases read it, never the sampler that runs beside a load phase.
func readPss(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0
	}
	pss, _ := parsePss(b)
	return pss
}

// processTree is a measured process and, at each reading, its descendants
// (squid's certificate helpers, for one). A zero root means "nothing to
// measure" (the direct setup), and every reading is zero.
type processTree struct {
	root int
}

// pids lists root and its live descendants.
func (t processTree) pids() []int {
	if t.root == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{t.root}
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	out := []int{t.root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// cpu is the CPU time the tree's live processes have used so far.
func (t processTree) cpu() time.Duration {
	var sum time.Duration
	for _, pid := range t.pids() {
		if st, err := readStat(pid); err == nil {
			sum += st.cpu
		}
	}
	return sum
}

// mem is the tree's summed VmRSS and RssAnon, and the root's VmHWM.
func (t processTree) mem() (rss, anon, rootHWM int64) {
	m := t.memStatus()
	return m.rss, m.anon, m.hwm
}

// memStatus sums the tree's resident memory; hwm is the root's. PSS is
// not read (see memory).
func (t processTree) memStatus() memStatus {
	return t.sum(false)
}

// memory is memStatus with the tree's PSS.
func (t processTree) memory() memStatus {
	return t.sum(true)
}

func (t processTree) sum(pss bool) memStatus {
	var sum memStatus
	for _, pid := range t.pids() {
		m, err := readStatus(pid)
		if err != nil {
			continue
		}
		sum.rss += m.rss
		sum.anon += m.anon
		sum.file += m.file
		if pss {
			sum.pss += readPss(pid)
		}
		if pid == t.root {
			sum.hwm = m.hwm
		}
	}
	return sum
}

// rssSampler follows a tree's resident and private memory in the
// background and keeps their peaks. It is safe for concurrent use.
type rssSampler struct {
	tree processTree
	stop chan struct{}
	done chan struct{}

	mu             sync.Mutex
	peak, peakAnon int64
}

// sampleRSS starts sampling t.
func sampleRSS(t processTree) *rssSampler {
	s := &rssSampler{tree: t, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		tick := time.NewTicker(rssSampleInterval)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	rss, anon, hwm := s.tree.mem()
	s.mu.Lock()
	s.peak = max(s.peak, rss, hwm)
	s.peakAnon = max(s.peakAnon, anon)
	s.mu.Unlock()
}

// finish stops sampling and returns the peaks: the largest sampled tree
// RSS, or the root's own high-water mark when that is larger (it sees
// peaks between samples), and the largest sampled private memory (the
// kernel keeps no high-water mark of it, so a peak between samples is
// missed).
func (s *rssSampler) finish() (rss, anon int64) {
	close(s.stop)
	<-s.done
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.peakAnon
}
