// Package vaulttest starts a real HashiCorp Vault server in dev mode on a
// loopback port for tests and benchmarks. Nothing is mocked: the binary is
// the pinned Vault built from tools/vault (`make vault`).
//
// The binary is found through $ONBEHALF_VAULT_BIN (set by make), else
// <module root>/.cache/bin/vault, else "vault" on PATH. A missing binary is an
// error that says how to build it; callers fail rather than skip.
//
// The server runs with a scrubbed environment (no VAULT_* or proxy variables
// from the parent, HOME in a temporary directory), listens on 127.0.0.1 only,
// and is always killed by Close. Dev mode keeps everything in memory, so
// Restart brings up an empty server on the same address with the same root
// token; tests re-seed what they need. With Options.Persistent the server
// is a real (non-dev) one on file storage instead, initialised and unsealed
// by Start: Stop kills it as a crash would, and Restart brings the same data
// back on the same address, unsealed, the way an operator restarts Vault.
//
// This package does not import testing: packages use it from tests,
// benchmarks and TestMain alike, passing a writer for Vault's output.
//
// Concurrency: a Server's methods may be called from several goroutines, but
// Stop, Restart, Seal, Unseal and Close change the server's state and should
// not race with each other.
package vaulttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
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
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/freeport"
)

// Launcher limits.
const (
	// StartTimeout bounds the wait for a started server to answer
	// sys/health as initialised, unsealed and active. A dev server is ready
	// in well under a second; thirty seconds rides out a loaded CI machine.
	StartTimeout = 30 * time.Second
	// pollInterval is how often start-up readiness is polled.
	pollInterval = 50 * time.Millisecond
	// startAttempts is how many free-port picks Start tries: the port is
	// chosen by binding and releasing it, so another process can take it
	// before Vault binds it.
	startAttempts = 5
	// callTimeout bounds each administrative call to the server.
	callTimeout = 10 * time.Second
	// outputTail is how much of the server's output is kept for error
	// messages when Options.Output is nil.
	outputTail = 64 << 10
	// EnvBinary names the environment variable that points at the binary.
	EnvBinary = "ONBEHALF_VAULT_BIN"
	// buildHint says how to get the binary; it ends every "not found" error.
	buildHint = "build it with `make vault` (which runs `go build -o .cache/bin/vault github.com/hashicorp/vault` in tools/vault), " +
		"or set " + EnvBinary + " to a Vault binary"
)

// ErrBinaryNotFound means no Vault binary could be found; the error text
// says where it looked and how to build it.
var ErrBinaryNotFound = errors.New("vault binary not found")

// Options configure a server.
type Options struct {
	// Output receives the server's stdout and stderr. Nil keeps only a tail
	// in memory for error messages.
	Output io.Writer
	// TLS starts the server with -dev-tls: it serves https with a
	// certificate for 127.0.0.1 signed by a CA written to CAFile.
	TLS bool
	// Persistent runs a non-dev server on file storage in a temporary
	// directory, so that data survives Stop and Restart. It cannot be
	// combined with TLS.
	Persistent bool
}

// Server is a running (or stopped) Vault dev server.
type Server struct {
	bin       string
	opts      Options
	dir       string // temporary HOME and TLS directory, removed by Close
	rootToken string
	port      int

	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	unsealKey string
	client    *api.Client
	tail      *tailBuffer
	closed    bool

	// member is set on a node of a Cluster (cluster.go): the server runs
	// on integrated storage and joins its peers.
	member *member
}

// BinaryPath returns the Vault binary to run: $ONBEHALF_VAULT_BIN when set
// (it must exist), else <module root>/.cache/bin/vault, else vault on PATH.
// The error wraps ErrBinaryNotFound and says how to build the binary.
func BinaryPath() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %w; %s", ErrBinaryNotFound, EnvBinary, p, err, buildHint)
		}
		return p, nil
	}
	var looked []string
	if root, err := moduleRoot(); err == nil {
		p := filepath.Join(root, ".cache", "bin", "vault")
		if checkExecutable(p) == nil {
			return p, nil
		}
		looked = append(looked, p)
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	looked = append(looked, "vault on PATH")
	return "", fmt.Errorf("%w (looked at %s; %s unset): %s", ErrBinaryNotFound, strings.Join(looked, ", "), EnvBinary, buildHint)
}

// checkExecutable reports whether p is an executable regular file.
func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// moduleRoot finds the directory of this module's go.mod by walking up from
// the working directory (tests run in their package directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module github.com/onbehalf-dev/onbehalf\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root not found")
		}
		dir = parent
	}
}

// Start finds the binary and starts a dev server on a free loopback port,
// waiting (at most StartTimeout) until it is unsealed and active with the
// KV v2 engine mounted at secret/.
func Start(o Options) (*Server, error) {
	bin, err := BinaryPath()
	if err != nil {
		return nil, fmt.Errorf("start vault: %w", err)
	}
	dir, err := os.MkdirTemp("", "onbehalf-vaulttest-")
	if err != nil {
		return nil, fmt.Errorf("start vault: %w", err)
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start vault: root token: %w", err)
	}
	if o.Persistent && o.TLS {
		_ = os.RemoveAll(dir)
		return nil, errors.New("start vault: Persistent and TLS cannot be combined")
	}
	s := &Server{bin: bin, opts: o, dir: dir, rootToken: "root-" + hex.EncodeToString(tok[:])}
	var errs []error
	for range startAttempts {
		port, err := freePortPair()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.port = port
		if err := s.launch(); err != nil {
			errs = append(errs, err)
			continue
		}
		return s, nil
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("start vault: %w", errors.Join(errs...))
}

// freePortPair returns a loopback port p such that p and p+1 were both free:
// a dev server also binds its cluster listener on the next port.
func freePortPair() (int, error) { return freeport.Pick(2) }

// launch starts the process on s.port and waits until it is ready. On
// failure the process is killed and the error carries its output's tail.
func (s *Server) launch() error {
	args := []string{
		"server", "-dev",
		"-dev-root-token-id=" + s.rootToken,
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(s.port),
		"-dev-no-store-token",
	}
	if s.opts.TLS {
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+s.dir)
	}
	if s.opts.Persistent {
		cfgFile, err := s.writePersistentConfig()
		if err != nil {
			return err
		}
		args = []string{"server", "-config=" + cfgFile}
	}
	if s.member != nil {
		cfgFile, err := s.writeRaftConfig()
		if err != nil {
			return err
		}
		args = []string{"server", "-config=" + cfgFile}
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	// A scrubbed environment: nothing from the parent's VAULT_* or proxy
	// variables may change how the test server behaves.
	cmd.Env = []string{"HOME=" + s.dir, "PATH=/usr/bin:/bin", "TMPDIR=" + s.dir}
	tail := &tailBuffer{max: outputTail}
	keyCh := make(chan string, 1)
	pr, pw := io.Pipe()
	var out io.Writer = tail
	if s.opts.Output != nil {
		out = io.MultiWriter(tail, s.opts.Output)
	}
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		_ = pw.Close()
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	// exited is closed once the process is gone and all its output has
	// been copied, so nothing is written to Options.Output after Stop or
	// Close returns.
	exited := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		scanOutput(pr, out, keyCh)
	}()
	go func() {
		_ = cmd.Wait()
		_ = pw.Close()
		<-scanned
		close(exited)
	}()

	s.mu.Lock()
	s.cmd, s.exited, s.tail = cmd, exited, tail
	s.mu.Unlock()

	wait := s.waitReady
	if s.opts.Persistent {
		wait = s.waitPersistent
	}
	if s.member != nil {
		wait = s.waitMember
	}
	if err := wait(keyCh, exited); err != nil {
		s.kill()
		return fmt.Errorf("vault on port %d: %w; output:\n%s", s.port, err, tail.String())
	}
	return nil
}

// writePersistentConfig writes the configuration of a persistent server:
// file storage under the temporary directory (the same across restarts),
// plain http on the loopback port, no mlock (tests run unprivileged).
func (s *Server) writePersistentConfig() (string, error) {
	data := filepath.Join(s.dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`storage "file" {
  path = %q
}
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}
api_addr      = "http://127.0.0.1:%d"
cluster_addr  = "http://127.0.0.1:%d"
disable_mlock = true
ui            = false
`, data, s.port, s.port, s.port+1)
	path := filepath.Join(s.dir, "vault.hcl")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// waitPersistent waits until a persistent server answers, initialises it on
// its first start (one key share; the root token and unseal key are kept),
// unseals it and, the first time, mounts KV v2 at secret/.
func (s *Server) waitPersistent(_ <-chan string, exited <-chan struct{}) error {
	deadline := time.Now().Add(StartTimeout)
	c, err := s.newClient()
	if err != nil {
		return err
	}
	c.ClearToken()
	var h *api.HealthResponse
	for {
		select {
		case <-exited:
			return errors.New("exited during start-up")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err = c.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering within %s: %w", StartTimeout, err)
		}
		time.Sleep(pollInterval)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	first := !h.Initialized
	if first {
		init, err := c.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		if err != nil {
			return fmt.Errorf("init: %w", err)
		}
		s.mu.Lock()
		s.rootToken, s.unsealKey = init.RootToken, init.Keys[0]
		s.mu.Unlock()
	}
	if _, err := c.Sys().UnsealWithContext(ctx, s.UnsealKey()); err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	c.SetToken(s.rootToken)
	for {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && !h.Sealed && !h.Standby {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not active within %s: %w", StartTimeout, errors.Join(err, ctx.Err()))
		case <-exited:
			return errors.New("exited during start-up")
		case <-time.After(pollInterval):
		}
	}
	if first {
		if err := c.Sys().MountWithContext(ctx, "secret", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
			return fmt.Errorf("mount secret/: %w", err)
		}
	}
	if err := waitWritable(ctx, c); err != nil {
		return err
	}
	s.mu.Lock()
	s.client = c
	s.mu.Unlock()
	return nil
}

// waitWritable waits until secret/ takes a write: KV v2 upgrades its
// storage after a mount or an unseal, and writes fail until it is done.
func waitWritable(ctx context.Context, c *api.Client) error {
	for {
		_, err := c.Logical().WriteWithContext(ctx, "secret/data/vaulttest-ready", map[string]any{"data": map[string]any{"ok": true}})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("secret/ not writable within %s: %w", StartTimeout, err)
		case <-time.After(pollInterval):
		}
	}
}

// scanOutput copies the server's output to out and sends the unseal key
// once it is printed.
func scanOutput(r io.Reader, out io.Writer, keyCh chan<- string) {
	br := bufio.NewReader(r)
	sent := false
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			_, _ = io.WriteString(out, line)
			if k, ok := strings.CutPrefix(line, "Unseal Key: "); ok && !sent {
				keyCh <- strings.TrimSpace(k)
				sent = true
			}
		}
		if err != nil {
			// Drain so the process never blocks on a full pipe.
			_, _ = io.Copy(io.Discard, r)
			return
		}
	}
}

// waitReady waits for the unseal key line, a healthy active server and the
// secret/ mount.
func (s *Server) waitReady(keyCh <-chan string, exited <-chan struct{}) error {
	deadline := time.Now().Add(StartTimeout)
	var key string
	select {
	case key = <-keyCh:
	case <-exited:
		return errors.New("exited during start-up")
	case <-time.After(time.Until(deadline)):
		return fmt.Errorf("no unseal key printed within %s", StartTimeout)
	}
	c, err := s.newClient()
	if err != nil {
		return err
	}
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited during start-up")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			var m *api.MountOutput
			m, err = c.Sys().GetMountWithContext(ctx, "secret")
			if err == nil && m.Type == "kv" && m.Options["version"] == "2" {
				cancel()
				s.mu.Lock()
				s.unsealKey, s.client = key, c
				s.mu.Unlock()
				return nil
			}
		}
		cancel()
		if err != nil {
			last = err
		} else {
			last = errors.New("not yet unsealed and active with secret/ mounted")
		}
		time.Sleep(pollInterval)
	}
	return fmt.Errorf("not ready within %s: %w", StartTimeout, last)
}

// newClient returns an API client for the server with the root token, built
// without reading the environment.
func (s *Server) newClient() (*api.Client, error) {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	if s.opts.TLS {
		pem, err := os.ReadFile(s.CAFile())
		if err != nil {
			return nil, fmt.Errorf("read dev TLS CA: %w", err)
		}
		tc, err := tlsConfig(pem)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tc
	}
	cfg := &api.Config{
		Address:      s.Addr(),
		HttpClient:   &http.Client{Transport: tr, Timeout: callTimeout},
		Timeout:      callTimeout,
		MinRetryWait: 100 * time.Millisecond,
		MaxRetryWait: time.Second,
		MaxRetries:   0,
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.ClearNamespace()
	c.SetToken(s.rootToken)
	return c, nil
}

// tlsConfig trusts the system roots plus the CA certificates in pem.
func tlsConfig(pem []byte) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("dev TLS CA: no certificate in PEM")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Addr returns the server's address, http(s)://127.0.0.1:PORT.
func (s *Server) Addr() string {
	scheme := "http"
	if s.opts.TLS {
		scheme = "https"
	}
	return scheme + "://127.0.0.1:" + strconv.Itoa(s.port)
}

// CAFile returns the CA certificate file of a TLS server ("" without TLS).
func (s *Server) CAFile() string {
	if !s.opts.TLS {
		return ""
	}
	return filepath.Join(s.dir, "vault-ca.pem")
}

// RootToken returns the root token. It stays the same across Restart.
func (s *Server) RootToken() string { return s.rootToken }

// Client returns an API client of the current process, authenticated with
// the root token. Without TLS a client stays usable across Restart; with TLS
// the restarted server has a new CA, so call Client again.
func (s *Server) Client() *api.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// UnsealKey returns the unseal key printed by the current process.
func (s *Server) UnsealKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unsealKey
}

// adminCtx returns a context for one administrative call.
func adminCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// EnableTransit mounts the Transit engine at transit/ (if not mounted yet)
// and creates key as a derived key (derived=true), so every operation needs
// a context.
func (s *Server) EnableTransit(key string) error {
	ctx, cancel := adminCtx()
	defer cancel()
	c := s.Client()
	if err := s.mount(ctx, "transit", "transit"); err != nil {
		return fmt.Errorf("enable transit: %w", err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/"+key, map[string]any{
		"derived": true,
		"type":    "aes256-gcm96",
	}); err != nil {
		return fmt.Errorf("enable transit: create key %s: %w", key, err)
	}
	return nil
}

// mount enables a secrets engine at path unless something is mounted there.
func (s *Server) mount(ctx context.Context, path, typ string) error {
	c := s.Client()
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return err
	}
	if _, ok := mounts[path+"/"]; ok {
		return nil
	}
	return c.Sys().MountWithContext(ctx, path, &api.MountInput{Type: typ})
}

// EnableAuth enables an auth method of type typ at path unless one is
// enabled there already.
func (s *Server) EnableAuth(path, typ string) error {
	ctx, cancel := adminCtx()
	defer cancel()
	c := s.Client()
	auths, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("enable auth %s: %w", path, err)
	}
	if _, ok := auths[path+"/"]; ok {
		return nil
	}
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, path, &api.EnableAuthOptions{Type: typ}); err != nil {
		return fmt.Errorf("enable auth %s: %w", path, err)
	}
	return nil
}

// EnableAppRole enables AppRole at approle/ (if needed), creates role with
// the given policies and returns its role id and a new secret id. Further
// role settings (token_ttl, token_max_ttl, …) can be written to
// auth/approle/role/<role> with Client.
func (s *Server) EnableAppRole(role string, policies ...string) (roleID, secretID string, err error) {
	if err := s.EnableAuth("approle", "approle"); err != nil {
		return "", "", err
	}
	ctx, cancel := adminCtx()
	defer cancel()
	l := s.Client().Logical()
	if _, err := l.WriteWithContext(ctx, "auth/approle/role/"+role, map[string]any{
		"token_policies": policies,
	}); err != nil {
		return "", "", fmt.Errorf("create approle %s: %w", role, err)
	}
	r, err := l.ReadWithContext(ctx, "auth/approle/role/"+role+"/role-id")
	if err != nil || r == nil {
		return "", "", fmt.Errorf("read role id of %s: %w", role, errors.Join(err, errIfNil(r)))
	}
	roleID, _ = r.Data["role_id"].(string)
	w, err := l.WriteWithContext(ctx, "auth/approle/role/"+role+"/secret-id", nil)
	if err != nil || w == nil {
		return "", "", fmt.Errorf("create secret id of %s: %w", role, errors.Join(err, errIfNil(w)))
	}
	secretID, _ = w.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		return "", "", fmt.Errorf("approle %s: empty role or secret id in response", role)
	}
	return roleID, secretID, nil
}

// errIfNil returns an error for a nil response.
func errIfNil(s *api.Secret) error {
	if s == nil {
		return errors.New("empty response")
	}
	return nil
}

// WritePolicy writes an ACL policy.
func (s *Server) WritePolicy(name, hcl string) error {
	ctx, cancel := adminCtx()
	defer cancel()
	if err := s.Client().Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
		return fmt.Errorf("write policy %s: %w", name, err)
	}
	return nil
}

// Seal seals the server: every request but sys/health and unseal answers
// 503 until Unseal.
func (s *Server) Seal() error {
	ctx, cancel := adminCtx()
	defer cancel()
	if err := s.Client().Sys().SealWithContext(ctx); err != nil {
		return fmt.Errorf("seal vault: %w", err)
	}
	return nil
}

// Unseal unseals the server with the key it printed at start and waits
// until it is active again.
func (s *Server) Unseal() error {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	c := s.Client()
	st, err := c.Sys().UnsealWithContext(ctx, s.UnsealKey())
	if err != nil {
		return fmt.Errorf("unseal vault: %w", err)
	}
	if st.Sealed {
		return errors.New("unseal vault: still sealed after the unseal key")
	}
	for {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && !h.Sealed && !h.Standby {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unseal vault: not active within %s: %w", StartTimeout, errors.Join(err, ctx.Err()))
		case <-time.After(pollInterval):
		}
	}
}

// PID is the server process's id, or 0 while it is stopped (for reading
// its CPU time from /proc).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop kills the server process (SIGKILL) and waits for it to exit, as a
// crash would. The address stays reserved for Restart.
func (s *Server) Stop() {
	s.kill()
}

// kill kills the current process, if any, and waits for it.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart stops the server if it runs and starts a new, empty one on the
// same address with the same root token. The unseal key changes. A
// persistent server comes back with its data instead, unsealed with the
// same key.
func (s *Server) Restart() error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("restart vault: server closed")
	}
	s.kill()
	// The port was just released; a brief retry covers the moment before
	// the kernel lets it be bound again.
	var err error
	for range startAttempts {
		if err = s.launch(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("restart vault: %w", err)
}

// Output returns the tail of the current process's output.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tail == nil {
		return ""
	}
	return s.tail.String()
}

// Close kills the server and removes its temporary directory. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	c := s.client
	s.mu.Unlock()
	s.kill()
	if c != nil {
		if t, ok := c.CloneConfig().HttpClient.Transport.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
	}
	return os.RemoveAll(s.dir)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
