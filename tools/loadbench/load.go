package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/onbehalf-dev/onbehalf/policy"
)

// Client-side limits. None of them is reached by a healthy setup; they
// bound how long a broken competitor can hold the harness.
const (
	// requestTimeout bounds one request, connection set-up included.
	requestTimeout = 10 * time.Second
	// dialTimeout bounds one TCP connect on loopback.
	dialTimeout = 5 * time.Second
	// openLoopGrace is how long a fixed-rate run waits, after the last
	// scheduled send, for requests still in flight; what is left then counts
	// as failed.
	openLoopGrace = 10 * time.Second
	// idleOpenTimeout bounds the opening of the idle connections.
	idleOpenTimeout = 90 * time.Second
	// idleOpenConcurrency is how many idle connections are being set up
	// at once.
	idleOpenConcurrency = 16
	// idleSettle is how long the idle connections sit before the proxy's
	// memory is read, so work still queued from setting them up is done.
	idleSettle = 2 * time.Second
)

// requestBody is the workload's small JSON POST (about 100 bytes).
var requestBody = []byte(`{"channel":"C0123456789","text":"Deploy finished: build 4821 is live in staging, all checks green."}`)

// endpoint is how the load generator reaches the API in one setup: through
// a proxy with CONNECT (HTTP/1.1 inside), or straight to the upstream.
// Names are never resolved by the harness: every dial goes to a loopback
// address it already knows.
type endpoint struct {
	// proxyAddr is the proxy's loopback host:port; empty means direct.
	proxyAddr string
	// upstreamAddr is the upstream's loopback host:port.
	upstreamAddr string
	// apiPort is the port in request URLs (the upstream's).
	apiPort int
	// roots are the CAs the client trusts: the proxy's interception CA, or
	// the upstream CA when direct.
	roots *x509.CertPool
	// header is added to every request (the assertion for onbehalf, the
	// token itself when direct).
	header http.Header
	// vary, when set, adds each request's own headers after header (the
	// many-users workload's user and assertion).
	vary func(http.Header)
}

func (e *endpoint) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	addr := e.proxyAddr
	if addr == "" {
		addr = e.upstreamAddr
	}
	d := net.Dialer{Timeout: dialTimeout}
	return d.DialContext(ctx, "tcp", addr)
}

// transport returns a new HTTP/1.1 transport; with keepAlive false every
// request gets a new TCP connection, CONNECT and TLS handshake.
func (e *endpoint) transport(keepAlive bool) *http.Transport {
	t := &http.Transport{
		DialContext:         e.dial,
		TLSClientConfig:     &tls.Config{RootCAs: e.roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: requestTimeout,
		// An empty map disables HTTP/2: the workload is HTTP/1.1 to the
		// proxy, as an agent's HTTPS_PROXY client speaks it.
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableKeepAlives:   !keepAlive,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 1,
	}
	if e.proxyAddr != "" {
		t.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: e.proxyAddr})
	}
	return t
}

// client wraps a transport.
func (e *endpoint) client(keepAlive bool) *http.Client {
	return &http.Client{Transport: e.transport(keepAlive), Timeout: requestTimeout}
}

// url is the API URL on host.
func (e *endpoint) url(host string) string {
	return "https://" + net.JoinHostPort(host, strconv.Itoa(e.apiPort)) + apiPath
}

// do sends one workload request to host and reads the whole answer; any
// status but 200 is an error (the upstream answers 401 when the credential
// was not injected).
func (e *endpoint) do(ctx context.Context, c *http.Client, host string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url(host), bytes.NewReader(requestBody))
	if err != nil {
		return err
	}
	for k, v := range e.header {
		req.Header[k] = v
	}
	if e.vary != nil {
		e.vary(req.Header)
	}
	req.Header["Content-Type"] = []string{"application/json"}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// maxErrorBody bounds how much of an error answer is read for its code.
const maxErrorBody = 4 << 10

// statusError describes a non-200 answer by its status and, when the body
// is a JSON error like onbehalf's or the upstream's, its error code (codes
// are fixed words, never secrets). It consumes and closes the body.
func statusError(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, resp.Body)
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" && len(e.Error) < 64 {
		// A deny the policy engine made on its own account (a timeout
		// under load, an error) names its fixed reason: say which.
		for _, r := range []string{policy.ReasonTimeout, policy.ReasonCanceled, policy.ReasonError, policy.ReasonNotLoaded} {
			if e.Error == "policy_denied" && strings.Contains(e.Message, ": "+r) {
				return fmt.Errorf("status %d %s (%s)", resp.StatusCode, e.Error, r)
			}
		}
		return fmt.Errorf("status %d %s", resp.StatusCode, e.Error)
	}
	return fmt.Errorf("status %d", resp.StatusCode)
}

// loadResult is what a load loop observed.
type loadResult struct {
	ok, failed int
	// firstErr is the first error's text (never a secret: transport errors
	// and status codes only).
	firstErr string
	// elapsed is the measured window.
	elapsed time.Duration
	// latencies of successful requests, sorted; only loops that measure
	// latency fill it.
	latencies []time.Duration
	// scheduled is how many requests an open loop scheduled.
	scheduled int
}

// tally collects one worker's results; merged after the loop.
type tally struct {
	ok, failed int
	firstErr   error
	lat        []time.Duration
}

func (t *tally) add(err error, lat time.Duration, keepLat bool) {
	if err != nil {
		t.failed++
		if t.firstErr == nil {
			t.firstErr = err
		}
		return
	}
	t.ok++
	if keepLat {
		t.lat = append(t.lat, lat)
	}
}

func merge(ts []tally) loadResult {
	var r loadResult
	for _, t := range ts {
		r.ok += t.ok
		r.failed += t.failed
		if r.firstErr == "" && t.firstErr != nil {
			r.firstErr = t.firstErr.Error()
		}
		r.latencies = append(r.latencies, t.lat...)
	}
	slices.Sort(r.latencies)
	return r
}

// closedLoop runs one worker per client, each sending its next request as
// soon as the previous answer arrived, until d has passed or limit requests
// (when limit > 0) were started. host names the destination of each request.
func (e *endpoint) closedLoop(ctx context.Context, clients []*http.Client, d time.Duration, limit int, host func() string) loadResult {
	var started atomic.Int64
	ts := make([]tally, len(clients))
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if limit > 0 && started.Add(1) > int64(limit) {
					return
				}
				ts[i].add(e.do(ctx, c, host()), 0, false)
			}
		}()
	}
	wg.Wait()
	r := merge(ts)
	r.elapsed = time.Since(start)
	return r
}

// openLoop schedules requests at rate per second for d (at most limit when
// limit > 0) and hands them to one worker per client. Latency runs from the
// scheduled send time, not the actual one, so a stalled setup is charged
// for the requests that queued behind the stall (no coordinated omission).
func (e *endpoint) openLoop(ctx context.Context, clients []*http.Client, rate int, d time.Duration, limit int, host func() string) loadResult {
	n := int(float64(rate) * d.Seconds())
	if limit > 0 && n > limit {
		n = limit
	}
	interval := time.Second / time.Duration(rate)
	jobs := make(chan time.Time, n)
	start := time.Now().Add(10 * time.Millisecond)
	runCtx, cancel := context.WithDeadline(ctx, start.Add(time.Duration(n)*interval+openLoopGrace))
	defer cancel()

	ts := make([]tally, len(clients))
	var last atomic.Int64 // unix nanoseconds of the last completion
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sched := range jobs {
				if runCtx.Err() != nil {
					ts[i].add(errors.New("not sent: the run's grace period ended"), 0, false)
					continue
				}
				err := e.do(runCtx, c, host())
				now := time.Now()
				ts[i].add(err, now.Sub(sched), true)
				for {
					old := last.Load()
					if now.UnixNano() <= old || last.CompareAndSwap(old, now.UnixNano()) {
						break
					}
				}
			}
		}()
	}
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		// The thread is never unlocked, so the runtime discards it, with
		// its changed timer slack, when this goroutine ends.
		lockPreciseThread()
		for i := 0; i < n; i++ {
			sched := start.Add(time.Duration(i) * interval)
			if sleepUntil(runCtx, sched) != nil {
				for ; i < n; i++ {
					jobs <- sched
				}
				break
			}
			jobs <- sched
		}
		close(jobs)
	}()
	<-dispatched
	wg.Wait()
	r := merge(ts)
	r.scheduled = n
	r.elapsed = time.Duration(n) * interval
	if l := last.Load(); l > 0 {
		r.elapsed = max(r.elapsed, time.Unix(0, l).Sub(start))
	}
	return r
}

// prSetTimerSlack is prctl's PR_SET_TIMERSLACK.
const prSetTimerSlack = 29

// maxSleepChunk bounds one nanosleep so a cancelled run stops promptly.
const maxSleepChunk = 50 * time.Millisecond

// lockPreciseThread wires the calling goroutine to its OS thread and sets
// the thread's timer slack to 1 ns (the default is 50 µs), for
// sleepUntil.
func lockPreciseThread() {
	runtime.LockOSThread()
	_, _, _ = syscall.Syscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
}

// sleepUntil blocks the calling thread until t (or ctx ends) with a
// nanosleep, waking within tens of microseconds. Go's own timers would do
// worse: the runtime waits for them in epoll with a millisecond timeout,
// so a timer fires half a millisecond late on average, and that would be
// added to every latency of the fixed-rate run.
func sleepUntil(ctx context.Context, t time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := time.Until(t)
		if d <= 0 {
			return nil
		}
		ts := syscall.NsecToTimespec(int64(min(d, maxSleepChunk)))
		_ = syscall.Nanosleep(&ts, nil)
	}
}

// idleConn is one intercepted connection held open after one request.
type idleConn struct {
	raw net.Conn
	tls *tls.Conn
}

func (c idleConn) Close() {
	if c.tls != nil {
		c.tls.Close()
	} else {
		c.raw.Close()
	}
}

// openIdle sets up one intercepted connection by hand: CONNECT, TLS with
// the proxy's certificate, one workload request; then leaves it open.
func (e *endpoint) openIdle(ctx context.Context) (idleConn, error) {
	raw, err := e.dial(ctx, "tcp", "")
	if err != nil {
		return idleConn{}, err
	}
	c := idleConn{raw: raw}
	fail := func(err error) (idleConn, error) {
		c.Close()
		return idleConn{}, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	target := net.JoinHostPort("localhost", strconv.Itoa(e.apiPort))
	if _, err := fmt.Fprintf(raw, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return fail(err)
	}
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fail(fmt.Errorf("read CONNECT answer: %w", err))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("CONNECT answered %d", resp.StatusCode))
	}
	if br.Buffered() > 0 {
		return fail(errors.New("proxy sent bytes after its CONNECT answer"))
	}
	c.tls = tls.Client(raw, &tls.Config{ServerName: "localhost", RootCAs: e.roots, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12})
	if err := c.tls.HandshakeContext(ctx); err != nil {
		return fail(fmt.Errorf("TLS inside the tunnel: %w", err))
	}
	req, _ := http.NewRequest(http.MethodPost, e.url("localhost"), bytes.NewReader(requestBody))
	for k, v := range e.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	if err := req.Write(c.tls); err != nil {
		return fail(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(c.tls), req)
	if err != nil {
		return fail(fmt.Errorf("read answer: %w", err))
	}
	if resp.StatusCode != http.StatusOK {
		return fail(statusError(resp))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// openIdleConns opens n idle intercepted connections, a few at a time,
// and returns those that worked with the first error.
func (e *endpoint) openIdleConns(ctx context.Context, n int) ([]idleConn, error) {
	ctx, cancel := context.WithTimeout(ctx, idleOpenTimeout)
	defer cancel()
	var (
		mu       sync.Mutex
		conns    []idleConn
		firstErr error
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for range idleOpenConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, requestTimeout)
				c, err := e.openIdle(rctx)
				rcancel()
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns, firstErr
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted samples
// by the nearest-rank method, or 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
