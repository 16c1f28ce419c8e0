// Command loadbench is onbehalf's side-by-side load harness. In one
// invocation on one machine it sends the same small HTTPS workload (JSON
// POSTs of about 100 bytes, keep-alive, HTTP/1.1 through CONNECT) to a
// local TLS API four ways: direct, which is the limit; through the onbehalf
// sidecar doing its full work (assertion verification, policy, cached token,
// injection, audit to a file); through squid with ssl-bump and
// request_header_add; and through mitmproxy with an addon that injects the
// Authorization header. For each it measures throughput at saturation,
// latency at a fixed request rate, new connections per second (with one
// host and with first-seen hosts), and CPU and memory of the proxy process
// read from /proc, and prints a Markdown table; --write puts it in
// docs/benchmarks.md with the date and the machine.
//
// Every proxy is a real separate process; the API is a child process of
// the harness (the same executable, started with LOADBENCH_UPSTREAM_DIR);
// the harness process itself is only the load generator. Everything listens
// and connects on 127.0.0.1, and the harness never resolves a name: proxies
// resolve localhost and the *.bench.test names through a private
// /etc/hosts, mounted in their own mount namespace with unshare (root
// only).
//
// Usage:
//
//	go run ./tools/loadbench [--only direct,onbehalf,squid,mitmproxy] [--duration 10s] [--rate 500]
//	    [--workers 32] [--idle-conns 1000] [--onbehalf bin/onbehalf] [--write docs/benchmarks.md] [--smoke]
//
// With --users it runs the many-users workload instead (users.go,
// manyusers.go): one onbehalf sidecar acting for thousands of people, each
// with a grant and an assertion of their own that the harness rotates as
// an orchestrator would, requests spread over them uniformly or
// Zipf-skewed, on the embedded store and on a real Vault (the pinned test
// binary, with the example's least-privilege sidecar policy):
//
//	go run ./tools/loadbench --users 1000,10000 [--stores embedded,vault] [--dists uniform,zipf]
//	    [--zipf-s 1.1] [--rotate 30s] [--write docs/benchmarks.md]
//
// A competitor that is not installed, does not start or fails under load
// is reported as such in the table; only direct and onbehalf failing makes
// the exit status non-zero.
//
// Setups and phases run one after another, never overlapping; within a
// phase each worker is a goroutine with its own connection, and results
// are merged after the phase.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(upstreamDirEnv) != "" {
		os.Exit(upstreamMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Defaults of the full run (issue 8: 32 workers, 500 requests per second,
// 1,000 idle connections).
const (
	defaultDuration  = 10 * time.Second
	defaultRate      = 500
	defaultWorkers   = 32
	defaultIdleConns = 1000
	// fullWarmup precedes every closed-loop measurement: tunnels, leaf
	// certificates, assertion and token caches, and the runtimes' heaps
	// settle first.
	fullWarmup = 2 * time.Second
	// hostsPerSecond sizes the first-seen-host run's supply of names: more
	// than any setup opens per second here (direct manages about 1,500).
	hostsPerSecond = 2500
	// maxDuration keeps one onbehalf instance (four phases and their
	// warm-ups) within the lifetime of the assertion minted for it, which
	// the sidecar's default identity.max_lifetime caps at 15 minutes.
	maxDuration = 3 * time.Minute
	// maxHostNames caps the hosts file (glibc reads it linearly on every
	// lookup, which would tax mitmproxy unfairly beyond this).
	maxHostNames = 40000
)

// Smoke mode: a few hundred requests per phase, direct and onbehalf only.
const (
	smokeRequests  = 300
	smokeWarmup    = 40
	smokeConns     = 100
	smokeIdleConns = 50
	smokeDuration  = 5 * time.Second
	smokeHostNames = 500
)

// options are the command-line flags.
type options struct {
	only      []string
	duration  time.Duration
	rate      int
	workers   int
	idleConns int
	onbehalf  string
	policy    string
	write     string
	smoke     bool
	keep      bool
	// cpuprofile, when set, is where the CPU profile of onbehalf over the
	// saturation phase is written.
	cpuprofile string
	// newHostProfile, when set, is where the CPU profile of onbehalf over
	// the first-seen-host phase is written.
	newHostProfile string
	// heapprofile, when set, is where onbehalf's heap profile at rest
	// (after the first request) is written.
	heapprofile string
	// rateLimits configures onbehalf with rate limits every request takes
	// from (never refusing), to measure what limiting costs.
	rateLimits bool
	// baseline is the earlier binary of --versus build.
	baseline string
	// versus, when set, names the feature of the --versus workload;
	// rounds is its number of rounds.
	versus string
	rounds int
	// command is how the run was invoked, for the report.
	command string

	// The many-users workload (--users): user counts, stores,
	// distributions, the Zipf exponent and the assertion rotation period.
	users  []int
	stores []string
	dists  []string
	zipfS  float64
	rotate time.Duration
	// vaultPolicy is the sidecar's Vault policy file.
	vaultPolicy string
}

// limits are the per-phase bounds derived from the options.
type limits struct {
	warmup      time.Duration
	warmupReqs  int
	requests    int // per closed/open-loop phase; 0 = bounded by duration only
	connections int // per new-connection phase; 0 = bounded by duration only
	hostNames   int
}

func (o options) limits() limits {
	if o.smoke {
		return limits{warmup: o.duration, warmupReqs: smokeWarmup, requests: smokeRequests, connections: smokeConns, hostNames: smokeHostNames}
	}
	return limits{
		warmup:    fullWarmup,
		hostNames: min(max(int(o.duration.Seconds()*hostsPerSecond), 1000), maxHostNames),
	}
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("loadbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	only := fs.String("only", "", "comma-separated setups to run: direct,onbehalf,squid,mitmproxy (default all; direct,onbehalf with --smoke)")
	fs.DurationVar(&o.duration, "duration", defaultDuration, "length of each measured phase")
	fs.IntVar(&o.rate, "rate", defaultRate, "request rate of the fixed-rate (latency) phase, per second")
	fs.IntVar(&o.workers, "workers", defaultWorkers, "concurrent clients (one keep-alive connection each)")
	fs.IntVar(&o.idleConns, "idle-conns", defaultIdleConns, "idle intercepted connections of the memory phase")
	defBin := os.Getenv("ONBEHALF_BIN")
	if defBin == "" {
		defBin = filepath.Join("bin", "onbehalf")
	}
	fs.StringVar(&o.onbehalf, "onbehalf", defBin, "the onbehalf binary (make build)")
	fs.StringVar(&o.policy, "policy", filepath.Join("examples", "policies", "default"), "policy directory the sidecar loads")
	fs.StringVar(&o.write, "write", "", "also write the results into this Markdown file (docs/benchmarks.md)")
	fs.BoolVar(&o.smoke, "smoke", false, "a few hundred requests per phase, direct and onbehalf only: checks the harness works, measures nothing")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory (configs, logs, audit file) for inspection")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write onbehalf's CPU profile over the saturation phase to this file (go tool pprof)")
	fs.StringVar(&o.newHostProfile, "newhost-cpuprofile", "", "write onbehalf's CPU profile over the first-seen-host phase to this file (go tool pprof)")
	fs.StringVar(&o.heapprofile, "heapprofile", "", "write onbehalf's heap profile at rest, after its first request, to this file (go tool pprof)")
	fs.BoolVar(&o.rateLimits, "rate-limits", false, "configure onbehalf with two rate limits every request takes from (set far above the load): what limiting costs")
	fs.StringVar(&o.versus, "versus", "", "run the side-by-side workload instead: two onbehalf instances, with and without this feature (scrub, rate-limits; build: --baseline against --onbehalf), taking turns")
	fs.StringVar(&o.baseline, "baseline", "", "--versus build: the earlier onbehalf binary the one of --onbehalf is compared with")
	fs.IntVar(&o.rounds, "rounds", defaultVersusRounds, "--versus: rounds, each a saturation and a fixed-rate slice of --duration per instance")
	usersFlag := fs.String("users", "", "run the many-users workload instead, with these user counts (e.g. 1000,10000), onbehalf only")
	storesFlag := fs.String("stores", storeEmbedded+","+storeVault, "many-users workload: grant stores to run on")
	distsFlag := fs.String("dists", distUniform+","+distZipf, "many-users workload: how requests spread over users")
	fs.Float64Var(&o.zipfS, "zipf-s", defaultZipfS, "many-users workload: Zipf exponent (> 1)")
	fs.DurationVar(&o.rotate, "rotate", defaultRotate, "many-users workload: how often each user's assertion is minted anew")
	fs.StringVar(&o.vaultPolicy, "vault-policy", filepath.Join("examples", "vault", "onbehalf-sidecar.hcl"), "many-users workload: the Vault policy the sidecar runs with")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	durationSet := false
	fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
	if o.smoke && !durationSet {
		o.duration = smokeDuration
	}
	if o.versus != "" && !durationSet {
		o.duration = defaultVersusSlice
	}
	if o.smoke && o.idleConns == defaultIdleConns {
		o.idleConns = smokeIdleConns
	}
	known := []string{}
	for _, s := range setups() {
		known = append(known, s.name)
	}
	switch {
	case *only != "":
		for _, n := range strings.Split(*only, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains(known, n) {
				return o, fmt.Errorf("--only: unknown setup %q (want some of %s)", n, strings.Join(known, ","))
			}
			o.only = append(o.only, n)
		}
	case o.smoke:
		o.only = []string{"direct", "onbehalf"}
	default:
		o.only = known
	}
	var errs []error
	if o.duration <= 0 || o.duration > maxDuration {
		errs = append(errs, fmt.Errorf("--duration must be positive and at most %s", maxDuration))
	}
	if o.rate < 1 || o.rate > 1_000_000 {
		errs = append(errs, errors.New("--rate must be between 1 and 1000000"))
	}
	if o.workers < 1 || o.workers > 4096 {
		errs = append(errs, errors.New("--workers must be between 1 and 4096"))
	}
	if o.idleConns < 1 || o.idleConns > 10000 {
		errs = append(errs, errors.New("--idle-conns must be between 1 and 10000"))
	}
	if o.versus != "" {
		if _, ok := features[o.versus]; !ok {
			errs = append(errs, fmt.Errorf("--versus: unknown feature %q (want scrub, rate-limits or build)", o.versus))
		}
		if (o.versus == "build") != (o.baseline != "") {
			errs = append(errs, errors.New("--baseline goes with --versus build, and --versus build needs it"))
		}
		if *usersFlag != "" || o.rateLimits || o.smoke {
			errs = append(errs, errors.New("--versus runs alone: drop --users, --rate-limits and --smoke"))
		}
	}
	if o.rounds < 1 || o.rounds > 100 {
		errs = append(errs, errors.New("--rounds must be between 1 and 100"))
	}
	if *usersFlag != "" {
		for _, f := range strings.Split(*usersFlag, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > maxUsers {
				errs = append(errs, fmt.Errorf("--users: %q is not a count between 1 and %d", f, maxUsers))
				continue
			}
			o.users = append(o.users, n)
		}
		o.stores = listFlag(*storesFlag, "--stores", []string{storeEmbedded, storeVault}, &errs)
		o.dists = listFlag(*distsFlag, "--dists", []string{distUniform, distZipf}, &errs)
		if o.zipfS <= 1 {
			errs = append(errs, errors.New("--zipf-s must be greater than 1"))
		}
		if o.rotate < time.Second || o.rotate > assertionLifetime/2 {
			errs = append(errs, fmt.Errorf("--rotate must be between 1s and %s", assertionLifetime/2))
		}
	}
	o.command = commandLine(args)
	return o, errors.Join(errs...)
}

// maxUsers bounds --users: the harness mints and holds an assertion per
// user, and fills the store with a grant per user.
const maxUsers = 100000

// listFlag splits a comma-separated flag and checks each item is known.
func listFlag(v, name string, known []string, errs *[]error) []string {
	var out []string
	for _, it := range strings.Split(v, ",") {
		it = strings.TrimSpace(it)
		if !slices.Contains(known, it) {
			*errs = append(*errs, fmt.Errorf("%s: unknown %q (want some of %s)", name, it, strings.Join(known, ",")))
			continue
		}
		out = append(out, it)
	}
	return out
}

// commandLine reconstructs the invocation for the report: `go run` builds
// into a temporary directory whose name means nothing to a reader.
func commandLine(args []string) string {
	prog := "loadbench"
	if exe, err := os.Executable(); err == nil && !strings.Contains(exe, "go-build") {
		prog = filepath.Base(exe)
	} else {
		prog = "go run ./tools/loadbench"
	}
	return strings.TrimSpace(prog + " " + strings.Join(args, " "))
}

// run is the whole command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "loadbench:", err)
		}
		return 2
	}
	if len(o.users) > 0 {
		return runUsers(ctx, o, stdout, stderr)
	}
	if o.versus != "" {
		return runVersus(ctx, o, stdout, stderr)
	}
	rep, err := execute(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "loadbench:", err)
		return 1
	}
	fmt.Fprint(stdout, rep.markdown())
	if o.write != "" {
		if err := writeReport(o.write, rep.markdown(), beginMarker, endMarker); err != nil {
			fmt.Fprintln(stderr, "loadbench:", err)
			return 1
		}
		fmt.Fprintf(stderr, "loadbench: results written to %s\n", o.write)
	}
	if bad := rep.requiredFailures(); len(bad) > 0 {
		fmt.Fprintf(stderr, "loadbench: %s did not complete every phase\n", strings.Join(bad, ", "))
		return 1
	}
	return 0
}

// runUsers is run for the many-users workload.
func runUsers(ctx context.Context, o options, stdout, stderr io.Writer) int {
	rep, err := executeUsers(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "loadbench:", err)
		return 1
	}
	fmt.Fprint(stdout, rep.markdown())
	if o.write != "" {
		if err := writeReport(o.write, rep.markdown(), beginUsersMarker, endUsersMarker); err != nil {
			fmt.Fprintln(stderr, "loadbench:", err)
			return 1
		}
		fmt.Fprintf(stderr, "loadbench: results written to %s\n", o.write)
	}
	if bad := rep.requiredFailures(); len(bad) > 0 {
		fmt.Fprintf(stderr, "loadbench: %s did not complete\n", strings.Join(bad, ", "))
		return 1
	}
	return 0
}

// bench is one run's shared state: the working directory, the API, the
// credential and the hosts file.
type bench struct {
	opts     options
	lim      limits
	dir      string
	token    string
	up       *upstream
	progress io.Writer

	// hostsFile maps localhost and h000000..h<N-1>.bench.test to 127.0.0.1.
	hostsFile string
	// restHostsFile maps localhost only. The memory phases run with it:
	// a resolver reads the whole hosts file into memory at its first
	// lookup, and tens of thousands of first-seen-host names would count
	// as the proxy's memory at rest.
	restHostsFile string
	// launchHosts is the hosts file the next proxy started gets.
	launchHosts string
	// isolate is true when proxies can run with hostsFile as /etc/hosts.
	isolate bool
	// noIsolation says why isolate is false.
	noIsolation string

	// obDir holds the onbehalf CA, keys, store, config and audit file.
	obDir, obPolicy string
	// many, when set, is the store of the many-users workload's sidecars.
	many *manyState
	// variant, when set, is the --versus instance started next.
	variant *variant
}

// execute runs every selected setup and returns the report.
func execute(ctx context.Context, o options, progress io.Writer) (*report, error) {
	b, err := newBench(o, progress)
	if err != nil {
		return nil, err
	}
	defer b.close()
	rep := &report{opts: o, started: time.Now(), machine: describeMachine(o), isolated: b.isolate, noIsolation: b.noIsolation}
	for _, s := range setups() {
		if !slices.Contains(o.only, s.name) {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		fmt.Fprintf(progress, "loadbench: %s\n", s.name)
		rep.results = append(rep.results, b.runSetup(ctx, s))
	}
	rep.finished = time.Now()
	rep.machine.loadAvgEnd = loadAverage()
	return rep, ctx.Err()
}

func newBench(o options, progress io.Writer) (*bench, error) {
	dir, err := os.MkdirTemp("", "loadbench-")
	if err != nil {
		return nil, err
	}
	// Squid drops to its own user and must reach its directory and the
	// upstream CA; the onbehalf directory (keys, grants) stays 0700.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	b := &bench{opts: o, lim: o.limits(), dir: dir, progress: progress}
	tok := make([]byte, 24)
	_, _ = rand.Read(tok)
	b.token = "lb-" + hex.EncodeToString(tok)
	if err := os.MkdirAll(filepath.Join(dir, "upstream"), 0o755); err != nil {
		b.close()
		return nil, err
	}
	if b.up, err = startUpstream(filepath.Join(dir, "upstream"), b.token); err != nil {
		b.close()
		return nil, err
	}
	if err := b.writeHosts(); err != nil {
		b.close()
		return nil, err
	}
	b.checkIsolation()
	if !b.isolate {
		fmt.Fprintf(progress, "loadbench: first-seen-host runs through proxies are skipped: %s\n", b.noIsolation)
	}
	return b, nil
}

// hostName is the i-th name of the first-seen-host run.
func hostName(i int) string { return fmt.Sprintf("h%06d.%s", i, benchDomain) }

func (b *bench) writeHosts() error {
	var sb strings.Builder
	sb.WriteString("# loadbench: every name on loopback\n127.0.0.1 localhost\n")
	b.restHostsFile = filepath.Join(b.dir, "hosts-rest")
	if err := os.WriteFile(b.restHostsFile, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	for i := range b.lim.hostNames {
		fmt.Fprintf(&sb, "127.0.0.1 %s\n", hostName(i))
	}
	b.hostsFile = filepath.Join(b.dir, "hosts")
	b.launchHosts = b.hostsFile
	return os.WriteFile(b.hostsFile, []byte(sb.String()), 0o644)
}

// checkIsolation tries the private /etc/hosts once. It reads the mounted
// file; it never looks a name up, so a failure sends no DNS query anywhere.
func (b *bench) checkIsolation() {
	if os.Geteuid() != 0 {
		b.noIsolation = "a private /etc/hosts needs root (unshare --mount)"
		return
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		b.noIsolation = "unshare (util-linux) is not installed"
		return
	}
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /etc/hosts && grep -q "$1" /etc/hosts`, b.hostsFile, hostName(0)).CombinedOutput()
	if err != nil {
		b.noIsolation = fmt.Sprintf("cannot mount a private /etc/hosts: %v %s", err, strings.TrimSpace(string(out)))
		return
	}
	b.isolate = true
}

func (b *bench) close() {
	if b.up != nil {
		b.up.stop()
	}
	if b.opts.keep {
		fmt.Fprintf(b.progress, "loadbench: working directory kept: %s\n", b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}
