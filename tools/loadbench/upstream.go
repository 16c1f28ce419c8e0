package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The upstream runs as a child process of the harness (the same executable,
// told by upstreamDirEnv), so its CPU is not mixed with the load
// generator's in one Go runtime and each can be read from /proc on its own.
const (
	// upstreamDirEnv names the directory where the child writes its CA;
	// when set, the process is the upstream child.
	upstreamDirEnv = "LOADBENCH_UPSTREAM_DIR"
	// upstreamTokenEnv carries the bearer token the upstream accepts, so it
	// never appears on a command line.
	upstreamTokenEnv = "LOADBENCH_TOKEN"
	// upstreamCAFile is the upstream CA's file name inside that directory.
	upstreamCAFile = "upstream-ca.pem"
	// apiPath is the path every workload request posts to.
	apiPath = "/api/chat.postMessage"
	// benchDomain is the wildcard domain of the first-seen-host run.
	benchDomain = "bench.test"
)

// Upstream server limits. They only need to be generous enough never to
// interfere with a run.
const (
	// upstreamReadHeaderTimeout stops a stuck client from holding a
	// goroutine forever; any live request sends its head at once.
	upstreamReadHeaderTimeout = 10 * time.Second
	// upstreamIdleTimeout outlives every proxy's own idle timeout, so pooled
	// proxy-to-upstream connections are closed by the proxy, as with real
	// APIs, not by us.
	upstreamIdleTimeout = 5 * time.Minute
	// upstreamStartTimeout bounds the child's start (key generation,
	// listen).
	upstreamStartTimeout = 20 * time.Second
)

// okBody is the API's answer to an authorised request: small, like a real
// chat API's acknowledgement.
var okBody = []byte(`{"ok":true,"channel":"C0123456789","ts":"1700000000.000100"}` + "\n")

// deniedBody answers a request without the expected credential.
var deniedBody = []byte(`{"ok":false,"error":"not_authed"}` + "\n")

// benchUserHeader names the user a many-users request acts for. The load
// generator sets it beside the user's assertion; the proxy forwards it as an
// ordinary header, and the upstream checks that the injected token is that
// user's (userToken), so a token injected for the wrong user fails the
// request.
const benchUserHeader = "X-Bench-User"

// userToken is the access token stored in user's grant for a many-users
// run: derived from the run's token, so the upstream needs no table of
// thousands of tokens.
func userToken(runToken, user string) string {
	m := hmac.New(sha256.New, []byte(runToken))
	m.Write([]byte(user))
	return "lbu-" + hex.EncodeToString(m.Sum(nil)[:16])
}

// apiHandler answers 200 only when the request carries exactly
// "Authorization: Bearer <token>", or, on a request naming a user in
// benchUserHeader, exactly that user's token, so a run counts as
// successful only when every request had the right credential injected.
// It reads and discards the body and records nothing: the upstream must
// cost as little as possible.
func apiHandler(token string) http.Handler {
	want := "Bearer " + token
	okLen := strconv.Itoa(len(okBody))
	deniedLen := strconv.Itoa(len(deniedBody))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		expect := want
		if u := r.Header[benchUserHeader]; len(u) == 1 {
			expect = "Bearer " + userToken(token, u[0])
		}
		if r.Header.Get("Authorization") != expect {
			h["Content-Length"] = []string{deniedLen}
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write(deniedBody)
			return
		}
		h["Content-Length"] = []string{okLen}
		_, _ = w.Write(okBody)
	})
}

// upstreamMain is the child process: a lean HTTP/1.1 TLS API on a free
// loopback port, valid for localhost, *.bench.test and 127.0.0.1. It
// writes its CA to the directory, prints "port N" on stdout, and exits when
// its standard input closes (the harness ended, however it ended).
func upstreamMain() int {
	dir, token := os.Getenv(upstreamDirEnv), os.Getenv(upstreamTokenEnv)
	if token == "" {
		fmt.Fprintln(os.Stderr, "loadbench upstream: no token in the environment")
		return 2
	}
	ca, err := newAuthority("loadbench upstream CA")
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench upstream:", err)
		return 1
	}
	cert, err := ca.Leaf("localhost", "*."+benchDomain, "127.0.0.1")
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench upstream:", err)
		return 1
	}
	if err := os.WriteFile(filepath.Join(dir, upstreamCAFile), ca.CertPEM, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench upstream:", err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench upstream:", err)
		return 1
	}
	srv := &http.Server{
		Handler:           apiHandler(token),
		ReadHeaderTimeout: upstreamReadHeaderTimeout,
		IdleTimeout:       upstreamIdleTimeout,
		// HTTP/1.1 only: squid speaks nothing else to servers, so every
		// setup reaches the API the same way.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
		},
		ErrorLog: nil,
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = srv.Close()
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "loadbench upstream:", err)
		return 1
	}
	return 0
}

// upstream is the running child.
type upstream struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	port  int
	// caFile is the PEM file of the CA that signed the upstream's
	// certificate; every proxy is told to trust it.
	caFile string
}

// startUpstream starts the upstream child with its files in dir.
func startUpstream(dir, token string) (*upstream, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start upstream: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), upstreamDirEnv+"="+dir, upstreamTokenEnv+"="+token)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start upstream: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start upstream: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start upstream: %w", err)
	}
	u := &upstream{cmd: cmd, stdin: stdin, caFile: filepath.Join(dir, upstreamCAFile)}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		port, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(s, "port ")))
		if err != nil {
			u.stop()
			return nil, fmt.Errorf("start upstream: unexpected first line %q", s)
		}
		u.port = port
	case <-time.After(upstreamStartTimeout):
		u.stop()
		return nil, errors.New("start upstream: no port announced in time")
	}
	return u, nil
}

// addr is the upstream's loopback address.
func (u *upstream) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(u.port)) }

// pid is the child's process id.
func (u *upstream) pid() int { return u.cmd.Process.Pid }

// stop closes the child's standard input and waits for it to exit,
// killing it if it does not.
func (u *upstream) stop() {
	_ = u.stdin.Close()
	done := make(chan struct{})
	go func() { _ = u.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopGrace):
		_ = u.cmd.Process.Kill()
		<-done
	}
}

// sleepContext sleeps for d, or less when ctx ends first.
func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
