package main

import (
	"context"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{
		{
			name: "plain",
			in:   "1234 (onbehalf) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 3 7 20 0 8 0 100 1000 200",
			want: procStat{ppid: 1, cpu: 3100 * time.Millisecond},
		},
		{
			name: "command with spaces and parentheses",
			in:   "77 (a b) (c)) R 12 77 77 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1",
			want: procStat{ppid: 12, cpu: 30 * time.Millisecond},
		},
		{name: "no command", in: "1234 S 1", wantErr: true},
		{name: "truncated", in: "1 (x) S 1 1 1", wantErr: true},
		{name: "not a number", in: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 zz 2 0 0 20", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v; want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    memStatus
		wantErr bool
	}{
		{
			name: "both",
			in:   "Name:\tsquid\nVmPeak:\t  9000 kB\nVmHWM:\t   45056 kB\nVmRSS:\t   40960 kB\nThreads:\t1\n",
			want: memStatus{rss: 40960 << 10, hwm: 45056 << 10},
		},
		{
			name: "split",
			in:   "VmHWM:\t   45056 kB\nVmRSS:\t   40960 kB\nRssAnon:\t    8116 kB\nRssFile:\t   32844 kB\nRssShmem:\t       0 kB\n",
			want: memStatus{rss: 40960 << 10, hwm: 45056 << 10, anon: 8116 << 10, file: 32844 << 10},
		},
		{name: "odd split unit", in: "VmHWM:\t1 kB\nVmRSS:\t1 kB\nRssAnon:\t1 MB\n", wantErr: true},
		{name: "kernel thread", in: "Name:\tkthreadd\nThreads:\t1\n", wantErr: true},
		{name: "odd unit", in: "VmHWM:\t1 MB\nVmRSS:\t1 kB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v; want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestParsePss(t *testing.T) {
	in := "55d0-7ffc ---p 00000000 00:00 0   [rollup]\nRss:    1644 kB\nPss:     279 kB\nPss_Dirty:  116 kB\n"
	if got, err := parsePss([]byte(in)); err != nil || got != 279<<10 {
		t.Errorf("got %d, %v; want %d", got, err, 279<<10)
	}
	if _, err := parsePss([]byte("Rss: 1 kB\n")); err == nil {
		t.Error("got no error for a rollup without Pss")
	}
	if _, err := parsePss([]byte("Pss: 1 MB\n")); err == nil {
		t.Error("got no error for an odd unit")
	}
}

// TestProcessTreeSelf reads this process's own figures: the parsers agree
// with the running kernel's /proc.
func TestProcessTreeSelf(t *testing.T) {
	tree := processTree{root: os.Getpid()}
	if got := tree.pids(); len(got) == 0 || got[0] != os.Getpid() {
		t.Fatalf("pids: got %v; want this process first", got)
	}
	rss, anon, hwm := tree.mem()
	if rss <= 0 || hwm < rss/2 || anon <= 0 || anon > rss {
		t.Errorf("mem: got rss %d, anon %d, hwm %d; want all positive, anon within rss", rss, anon, hwm)
	}
	if m := tree.memory(); m.pss <= 0 || m.pss > m.rss {
		t.Errorf("memory: got pss %d, rss %d; want a positive pss within rss", m.pss, m.rss)
	}
	if m := tree.memStatus(); m.anon <= 0 || m.file <= 0 || m.anon+m.file > 2*m.rss {
		t.Errorf("memStatus: got anon %d, file %d, rss %d; want a positive split of about rss", m.anon, m.file, m.rss)
	}
	var zero processTree
	if zero.cpu() != 0 || zero.pids() != nil {
		t.Error("a zero tree must read as nothing")
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of four is the second", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 1..100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100", hundred, 100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestSpliceSection(t *testing.T) {
	section := beginMarker + "\nNEW\n" + endMarker + "\n"
	tests := []struct {
		name, doc, want string
		wantErr         bool
	}{
		{name: "empty", doc: "", want: section},
		{name: "no markers", doc: "# Benchmarks\nprose", want: "# Benchmarks\nprose\n\n" + section},
		{name: "no markers, trailing blank lines", doc: "# Benchmarks\n\n\n", want: "# Benchmarks\n\n" + section},
		{
			name: "replaces between markers, keeps the rest",
			doc:  "# B\nbefore\n" + beginMarker + "\nOLD\n" + endMarker + "\nafter\n",
			want: "# B\nbefore\n" + section + "after\n",
		},
		{name: "end before begin", doc: endMarker + "\n" + beginMarker, wantErr: true},
		{name: "begin only", doc: beginMarker + "\nOLD", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spliceSection(tt.doc, section, beginMarker, endMarker)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v; want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); err == nil && diff != "" {
				t.Errorf("document (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRateFails(t *testing.T) {
	tests := []struct {
		name string
		p    phaseResult
		want string // substring; empty means it kept up
	}{
		{"kept up", phaseResult{load: loadResult{ok: 5000, scheduled: 5000, elapsed: 10 * time.Second}}, ""},
		{"one percent failed is tolerated", phaseResult{load: loadResult{ok: 4950, failed: 50, scheduled: 5000, elapsed: 10 * time.Second}}, ""},
		{"errors", phaseResult{load: loadResult{ok: 4000, failed: 1000, scheduled: 5000, elapsed: 10 * time.Second, firstErr: "status 502"}}, "1000 of 5000 requests failed"},
		{"fell behind", phaseResult{load: loadResult{ok: 5000, scheduled: 5000, elapsed: 20 * time.Second}}, "fell behind: 250 req/s"},
		{"exited", phaseResult{exited: true}, "exited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rateFails(&tt.p, 500)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantOnly []string
		wantErr  string
	}{
		{name: "defaults run everything", args: nil, wantOnly: []string{"direct", "onbehalf", "squid", "mitmproxy"}},
		{name: "smoke runs direct and onbehalf", args: []string{"--smoke"}, wantOnly: []string{"direct", "onbehalf"}},
		{name: "only", args: []string{"--only", "squid, direct"}, wantOnly: []string{"squid", "direct"}},
		{name: "unknown setup", args: []string{"--only", "envoy"}, wantErr: `unknown setup "envoy"`},
		{name: "bad numbers", args: []string{"--rate", "0", "--workers", "0", "--duration", "0s"}, wantErr: "--rate"},
		{name: "phases too long for one assertion", args: []string{"--duration", "5m"}, wantErr: "--duration"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected argument"},
		{name: "users", args: []string{"--users", "1000, 10000", "--stores", "vault"}, wantOnly: []string{"direct", "onbehalf", "squid", "mitmproxy"}},
		{name: "bad user count", args: []string{"--users", "1000,lots"}, wantErr: `--users: "lots"`},
		{name: "unknown store", args: []string{"--users", "10", "--stores", "redis"}, wantErr: `--stores: unknown "redis"`},
		{name: "unknown spread", args: []string{"--users", "10", "--dists", "pareto"}, wantErr: `--dists: unknown "pareto"`},
		{name: "zipf exponent", args: []string{"--users", "10", "--zipf-s", "1"}, wantErr: "--zipf-s"},
		{name: "rotation longer than an assertion lives", args: []string{"--users", "10", "--rotate", "5m"}, wantErr: "--rotate"},
		{name: "versus", args: []string{"--versus", "scrub", "--rounds", "4"}, wantOnly: []string{"direct", "onbehalf", "squid", "mitmproxy"}},
		{name: "unknown versus feature", args: []string{"--versus", "tracing"}, wantErr: `--versus: unknown feature "tracing"`},
		{name: "versus runs alone", args: []string{"--versus", "scrub", "--rate-limits"}, wantErr: "--versus runs alone"},
		{name: "rounds", args: []string{"--versus", "scrub", "--rounds", "0"}, wantErr: "--rounds"},
		{name: "versus build", args: []string{"--versus", "build", "--baseline", "/tmp/old-onbehalf"}, wantOnly: []string{"direct", "onbehalf", "squid", "mitmproxy"}},
		{name: "versus build needs a baseline", args: []string{"--versus", "build"}, wantErr: "--versus build needs it"},
		{name: "baseline without versus build", args: []string{"--versus", "scrub", "--baseline", "/tmp/old-onbehalf"}, wantErr: "--baseline goes with --versus build"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v; want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantOnly, o.only); diff != "" {
				t.Errorf("only (-want +got):\n%s", diff)
			}
		})
	}
	o, _ := parseFlags([]string{"--smoke"}, io.Discard)
	if o.duration != smokeDuration || o.idleConns != smokeIdleConns {
		t.Errorf("smoke: got duration %v, idle %d; want %v, %d", o.duration, o.idleConns, smokeDuration, smokeIdleConns)
	}
	o, _ = parseFlags([]string{"--versus", "rate-limits"}, io.Discard)
	if o.duration != defaultVersusSlice || o.rounds != defaultVersusRounds {
		t.Errorf("versus: got duration %v, rounds %d; want %v, %d", o.duration, o.rounds, defaultVersusSlice, defaultVersusRounds)
	}
}

// TestAPIHandler: the upstream answers 200 only to the injected token.
func TestAPIHandler(t *testing.T) {
	h := apiHandler("tok-1")
	tests := []struct {
		auth, user string
		want       int
	}{
		{"Bearer tok-1", "", http.StatusOK},
		{"", "", http.StatusUnauthorized},
		{"Bearer tok-2", "", http.StatusUnauthorized},
		{"bearer tok-1", "", http.StatusUnauthorized},
		{"Bearer " + userToken("tok-1", "u00007"), "u00007", http.StatusOK},
		{"Bearer " + userToken("tok-1", "u00007"), "u00008", http.StatusUnauthorized},
		{"Bearer tok-1", "u00007", http.StatusUnauthorized},
		{"Bearer " + userToken("tok-2", "u00007"), "u00007", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(http.MethodPost, apiPath, strings.NewReader(string(requestBody)))
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		if tt.user != "" {
			req.Header.Set(benchUserHeader, tt.user)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("Authorization %q: got %d; want %d", tt.auth, rec.Code, tt.want)
		}
		if got := rec.Header().Get("Content-Length"); got != strconv.Itoa(rec.Body.Len()) {
			t.Errorf("Authorization %q: Content-Length %s for a %d-byte body", tt.auth, got, rec.Body.Len())
		}
	}
}

// TestLoopsAgainstHandler drives the closed and open loops against an
// in-process TLS server: counts add up and latencies are recorded.
func TestLoopsAgainstHandler(t *testing.T) {
	srv := httptest.NewUnstartedServer(apiHandler("tok"))
	srv.StartTLS()
	defer srv.Close()
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ep := &endpoint{
		upstreamAddr: srv.Listener.Addr().String(),
		apiPort:      srv.Listener.Addr().(*net.TCPAddr).Port,
		roots:        pool,
		header:       http.Header{"Authorization": {"Bearer tok"}},
	}
	clients := []*http.Client{ep.client(true), ep.client(true), ep.client(false)}
	ctx := context.Background()
	host := func() string { return "127.0.0.1" }

	closed := ep.closedLoop(ctx, clients, time.Minute, 60, host)
	if closed.ok != 60 || closed.failed != 0 {
		t.Errorf("closed loop: got %d ok, %d failed (%s); want 60, 0", closed.ok, closed.failed, closed.firstErr)
	}
	open := ep.openLoop(ctx, clients, 200, 250*time.Millisecond, 0, host)
	if open.scheduled != 50 || open.ok != 50 || len(open.latencies) != 50 {
		t.Errorf("open loop: got %d scheduled, %d ok, %d latencies (%s); want 50 each", open.scheduled, open.ok, len(open.latencies), open.firstErr)
	}

	ep.header = http.Header{"Authorization": {"Bearer wrong"}}
	denied := ep.closedLoop(ctx, clients[:1], time.Minute, 3, host)
	if denied.failed != 3 || !strings.Contains(denied.firstErr, "status 401 not_authed") {
		t.Errorf("wrong token: got %d failed, first %q; want 3 failed with status 401 not_authed", denied.failed, denied.firstErr)
	}
	for _, c := range clients {
		c.CloseIdleConnections()
	}
}

// TestZipf: the sampler follows its distribution (user i drawn with
// probability ∝ 1/(1+i)^s), and the default exponent gives the shape the
// constant's comment describes.
func TestZipf(t *testing.T) {
	const n, draws = 10000, 200000
	z := newZipf(rand.New(rand.NewPCG(1, 2)), defaultZipfS, n)
	if got := z.share(1); got < 0.13 || got > 0.17 {
		t.Errorf("first user's share = %.3f; want about 0.15", got)
	}
	if got := z.share(100); got < 0.6 || got > 0.7 {
		t.Errorf("first 100 users' share = %.3f; want about two thirds", got)
	}
	if got := 1 - z.share(1000); got < 0.13 || got > 0.2 {
		t.Errorf("last 9,000 users' share = %.3f; want about a sixth", got)
	}
	counts := make([]int, n)
	for range draws {
		i := z.next()
		if i < 0 || i >= n {
			t.Fatalf("drew %d; want 0..%d", i, n-1)
		}
		counts[i]++
	}
	for _, k := range []int{1, 10, 100, 1000} {
		got := 0
		for _, c := range counts[:k] {
			got += c
		}
		if share, want := float64(got)/draws, z.share(k); math.Abs(share-want) > 0.01 {
			t.Errorf("first %d users drawn %.3f of the time; want %.3f", k, share, want)
		}
	}
}

// TestRotationSpread: over one rotation period every user's assertion is
// rotated exactly once, at times spread over the period.
func TestRotationSpread(t *testing.T) {
	const n = 1000
	u := &users{rotate: 30 * time.Second, names: make([]string, n), start: time.Unix(1700000000, 0)}
	perTick := map[int64]int{}
	for i := range n {
		e0 := u.epochOf(i, u.start)
		e1 := u.epochOf(i, u.start.Add(u.rotate))
		if e1-e0 != 1 {
			t.Fatalf("user %d rotated %d times in one period; want 1", i, e1-e0)
		}
		// The moment within the period the user's epoch changes.
		for s := int64(1); s <= 30; s++ {
			if u.epochOf(i, u.start.Add(time.Duration(s)*time.Second)) != e0 {
				perTick[s]++
				break
			}
		}
	}
	for s, c := range perTick {
		if c > 2*n/30 {
			t.Errorf("%d of %d users rotated in second %d; want them spread (about %d a second)", c, n, s, n/30)
		}
	}
}

func TestStealSince(t *testing.T) {
	now := readMachineCPU()
	if !now.ok || now.total == 0 {
		t.Fatalf("readMachineCPU() = %+v; want a reading of /proc/stat", now)
	}
	tests := []struct {
		earlier, later machineCPU
		want           float64
	}{
		{machineCPU{total: 1000, steal: 10, ok: true}, machineCPU{total: 1200, steal: 60, ok: true}, 0.25},
		{machineCPU{total: 1000, steal: 10, ok: true}, machineCPU{total: 1200, steal: 10, ok: true}, 0},
		{machineCPU{total: 1000, ok: true}, machineCPU{total: 1000, ok: true}, -1}, // no time passed
		{machineCPU{}, machineCPU{total: 1200, ok: true}, -1},                      // a reading failed
	}
	for _, tt := range tests {
		if got := tt.later.stealSince(tt.earlier); got != tt.want {
			t.Errorf("%+v.stealSince(%+v) = %v; want %v", tt.later, tt.earlier, got, tt.want)
		}
	}
}
