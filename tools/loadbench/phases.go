package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Phases of one setup, in the order they run.
const (
	phaseIdle       = "idle"       // fresh instance: memory at rest, then per idle connection
	phaseSaturation = "saturation" // closed loop, keep-alive
	phaseRate       = "rate"       // open loop at --rate, keep-alive
	phaseNewConn    = "newconn"    // closed loop, a new connection per request, one host
	phaseNewHost    = "newhost"    // closed loop, a new connection per request, a new host each time
)

// phaseOrder lists the phases a setup reports.
var phaseOrder = []string{phaseIdle, phaseSaturation, phaseRate, phaseNewConn, phaseNewHost}

// phaseResult is one phase's measurements.
type phaseResult struct {
	load loadResult
	// notRun says why the phase did not run (empty when it ran).
	notRun string
	// proxyCPU, upstreamCPU and harnessCPU are the CPU time each process
	// used during the measured window.
	proxyCPU, upstreamCPU, harnessCPU time.Duration
	// peakRSS is the proxy's peak resident memory up to the end of the
	// phase (its own high-water mark, or the sampled sum over its process
	// tree when larger); peakAnon is the largest sampled private memory.
	peakRSS, peakAnon int64
	// exited is set when the proxy process died during the phase.
	exited bool
	// steal is the share of the machine's CPU time the hypervisor gave
	// to other guests during the measured window (-1 if unknown): a run
	// whose phases differ in it compares unlike machines.
	steal float64

	// Idle phase only: memory after start and one request (rest); the
	// growth per idle connection of private memory (perConn) and of
	// VmRSS (perConnRSS); how many were opened.
	rest                memStatus
	perConn, perConnRSS int64
	idleOpened          int
	idleErr             string
}

// failed reports whether the phase ran and went wrong.
func (p *phaseResult) failed() bool {
	if p.exited {
		return true
	}
	return p.notRun == "" && (p.load.failed > 0 || p.idleErr != "")
}

// setupResult is everything measured for one setup.
type setupResult struct {
	name    string
	proxied bool
	// err is set when the setup could not start at all.
	err string
	// checkErr is set when the setup's after-run check failed.
	checkErr string
	phases   map[string]*phaseResult
}

func (r *setupResult) phase(name string) *phaseResult {
	if p := r.phases[name]; p != nil {
		return p
	}
	return &phaseResult{notRun: "not run"}
}

// runSetup measures one setup, then runs its after-run check.
func (b *bench) runSetup(ctx context.Context, s setup) *setupResult {
	r := b.runPhases(ctx, s)
	if s.check != nil && r.err == "" {
		if err := s.check(ctx, b, r); err != nil {
			r.checkErr = err.Error()
		}
	}
	return r
}

// runPhases runs the idle phase on a fresh instance, the load phases on a
// second fresh instance, so neither sees the other's heap, and the
// first-seen-host phase on a third: only that one needs the hosts file
// naming tens of thousands of hosts (see restHostsFile).
func (b *bench) runPhases(ctx context.Context, s setup) *setupResult {
	r := &setupResult{name: s.name, proxied: s.proxied, phases: map[string]*phaseResult{}}
	b.launchHosts = b.restHostsFile
	defer func() { b.launchHosts = b.hostsFile }()
	if s.proxied {
		inst, err := s.start(ctx, b)
		if err != nil {
			r.err = err.Error()
			return r
		}
		r.phases[phaseIdle] = b.idle(ctx, inst)
		inst.stop()
	} else {
		r.phases[phaseIdle] = &phaseResult{notRun: "no proxy"}
	}
	inst, err := s.start(ctx, b)
	if err != nil {
		r.err = err.Error()
		return r
	}
	defer func() { inst.stop() }() // the instance running when runPhases returns
	clients := make([]*http.Client, b.opts.workers)
	for i := range clients {
		clients[i] = inst.ep.client(true)
	}
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	localhost := func() string { return "localhost" }
	lim := b.lim

	r.phases[phaseSaturation] = b.measure(ctx, inst, func() loadResult {
		return b.profiled(ctx, inst, b.opts.cpuprofile, func() loadResult {
			return inst.ep.closedLoop(ctx, clients, b.opts.duration, lim.requests, localhost)
		})
	}, func() { inst.ep.closedLoop(ctx, clients, lim.warmup, lim.warmupReqs, localhost) })

	r.phases[phaseRate] = b.measure(ctx, inst, func() loadResult {
		return inst.ep.openLoop(ctx, clients, b.opts.rate, b.opts.duration, lim.requests, localhost)
	}, nil)

	fresh := inst.ep.client(false)
	defer func() { fresh.CloseIdleConnections() }()
	freshClients := make([]*http.Client, b.opts.workers)
	for i := range freshClients {
		freshClients[i] = fresh
	}
	r.phases[phaseNewConn] = b.measure(ctx, inst, func() loadResult {
		return inst.ep.closedLoop(ctx, freshClients, b.opts.duration, lim.connections, localhost)
	}, func() { inst.ep.closedLoop(ctx, freshClients, lim.warmup/4, lim.warmupReqs, localhost) })

	if s.proxied && !b.isolate {
		r.phases[phaseNewHost] = &phaseResult{notRun: b.noIsolation}
		return r
	}
	if s.proxied {
		inst.stop()
		fresh.CloseIdleConnections()
		b.launchHosts = b.hostsFile
		if inst, err = s.start(ctx, b); err != nil {
			r.phases[phaseNewHost] = &phaseResult{notRun: "the proxy did not start for this phase: " + oneLine(err.Error())}
			inst = &instance{stop: func() {}}
			return r
		}
		fresh = inst.ep.client(false)
		for i := range freshClients {
			freshClients[i] = fresh
		}
	}
	// Each request names a host the proxy has never seen: a new leaf
	// certificate and a new upstream connection every time. The supply of
	// names bounds the phase.
	var next atomic.Int64
	newHost := func() string { return hostName(int(next.Add(1)-1) % lim.hostNames) }
	hostLimit := lim.hostNames
	if lim.connections > 0 {
		hostLimit = min(hostLimit, lim.connections)
	}
	r.phases[phaseNewHost] = b.measure(ctx, inst, func() loadResult {
		return b.profiled(ctx, inst, b.opts.newHostProfile, func() loadResult {
			return inst.ep.closedLoop(ctx, freshClients, b.opts.duration, hostLimit, newHost)
		})
	}, nil)
	return r
}

// profiled runs load, writing onbehalf's CPU profile over it to path when
// path is set. Fetching the profile costs the proxy a little CPU, so
// profiled figures are for reading, not for the report.
func (b *bench) profiled(ctx context.Context, inst *instance, path string, load func() loadResult) loadResult {
	if path == "" || inst.admin == "" {
		return load()
	}
	done := make(chan error, 1)
	go func() { done <- cpuProfile(ctx, inst.admin, b.opts.duration, path) }()
	res := load()
	if err := <-done; err != nil {
		fmt.Fprintf(os.Stderr, "loadbench: %v\n", err)
	} else {
		fmt.Fprintf(os.Stderr, "loadbench: onbehalf CPU profile written to %s\n", path)
	}
	return res
}

// measure runs warm (when not nil, unmeasured) and then load, reading the
// CPU time of the proxy, the upstream and the harness around load and
// following the proxy's memory.
func (b *bench) measure(ctx context.Context, inst *instance, load func() loadResult, warm func()) *phaseResult {
	select {
	case <-inst.exited:
		return &phaseResult{exited: true, notRun: "the proxy process had exited"}
	default:
	}
	if ctx.Err() != nil {
		return &phaseResult{notRun: "interrupted"}
	}
	if warm != nil {
		warm()
	}
	up := processTree{root: b.up.pid()}
	rss := sampleRSS(inst.tree)
	p0, u0, h0 := inst.tree.cpu(), up.cpu(), selfCPU()
	m0 := readMachineCPU()
	res := &phaseResult{load: load()}
	res.proxyCPU, res.upstreamCPU, res.harnessCPU = inst.tree.cpu()-p0, up.cpu()-u0, selfCPU()-h0
	res.steal = readMachineCPU().stealSince(m0)
	res.peakRSS, res.peakAnon = rss.finish()
	select {
	case <-inst.exited:
		res.exited = true
	default:
	}
	return res
}

// idle measures the proxy's memory at rest, then with opts.idleConns
// intercepted keep-alive connections open, each having carried one
// request.
func (b *bench) idle(ctx context.Context, inst *instance) *phaseResult {
	res := &phaseResult{}
	res.rest = inst.tree.memory()
	if b.opts.heapprofile != "" && inst.admin != "" {
		if err := fetchProfile(ctx, inst.admin+"/debug/pprof/heap", 30*time.Second, b.opts.heapprofile); err != nil {
			fmt.Fprintf(os.Stderr, "loadbench: %v\n", err)
		} else {
			fmt.Fprintf(os.Stderr, "loadbench: onbehalf heap profile at rest written to %s\n", b.opts.heapprofile)
		}
	}
	conns, err := inst.ep.openIdleConns(ctx, b.opts.idleConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	res.idleOpened = len(conns)
	if err != nil {
		res.idleErr = fmt.Sprintf("%d of %d connections failed; first: %v", b.opts.idleConns-len(conns), b.opts.idleConns, err)
	}
	_ = sleepContext(ctx, idleSettle)
	after, anon, hwm := inst.tree.mem()
	res.peakRSS, res.peakAnon = max(after, hwm), anon
	if len(conns) > 0 {
		res.perConn = (anon - res.rest.anon) / int64(len(conns))
		res.perConnRSS = (after - res.rest.rss) / int64(len(conns))
	}
	select {
	case <-inst.exited:
		res.exited = true
	default:
	}
	return res
}

// selfCPU is the harness's own CPU time so far.
// machineCPU is the first line of /proc/stat: the machine's CPU time by
// state, in clock ticks, summed over its cores.
type machineCPU struct {
	total, steal uint64
	ok           bool
}

func readMachineCPU() machineCPU {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq steal [guest guest_nice]:
	// guest time is counted in user time already.
	if len(fields) < 9 || fields[0] != "cpu" {
		return machineCPU{}
	}
	var m machineCPU
	for i, f := range fields[1:9] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return machineCPU{}
		}
		m.total += v
		if i == 7 {
			m.steal = v
		}
	}
	m.ok = true
	return m
}

// stealSince returns the share of the machine's CPU time stolen between
// earlier and m, or -1 when either reading failed.
func (m machineCPU) stealSince(earlier machineCPU) float64 {
	if !m.ok || !earlier.ok || m.total <= earlier.total {
		return -1
	}
	return float64(m.steal-earlier.steal) / float64(m.total-earlier.total)
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
