// Package redistest starts a real Redis server (Debian's redis-server) on a
// loopback port for tests. Nothing is mocked.
//
// The server listens on 127.0.0.1 only, keeps nothing on disk (no RDB, no
// AOF), runs in a temporary directory with a scrubbed environment, and is
// always killed by Close. Kill stops it as a crash would; Restart brings up
// an empty one on the same address.
//
// This package does not import testing: tests and benchmarks pass a writer
// for the server's output. A Server's methods must not race with each
// other.
package redistest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/freeport"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testpki"
)

// StartTimeout bounds the wait for a started server to answer PING: it is
// ready within milliseconds; ten seconds rides out a loaded CI machine.
const StartTimeout = 10 * time.Second

// Server is a running redis-server.
type Server struct {
	dir  string
	port int
	opts Options
	// roots trusts the server's certificate (with Options.TLS).
	roots *x509.CertPool
	cmd   *exec.Cmd
	out   *lockedBuffer
	done  chan struct{}
}

// Options configure a server. The zero value is an open server, as Start
// gives.
type Options struct {
	// User, when set, turns the default user off and lets only this ACL
	// user in, with Password, on the keys matching KeyPattern (a Redis
	// glob, default every key) and the commands of Commands (ACL rules,
	// default "+@all").
	User, Password, KeyPattern, Commands string
	// TLS serves TLS only (no plain port), with a certificate for
	// 127.0.0.1 from a throwaway CA (CAFile); clients are not asked for
	// certificates.
	TLS bool
}

// Start launches redis-server on a free port of 127.0.0.1. A missing
// binary is an error saying how to install it.
func Start() (*Server, error) { return StartWith(Options{}) }

// StartWith is Start with options.
func StartWith(o Options) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redistest: redis-server not found: install Debian's redis-server (apt-get install redis-server; .ci/run does)")
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, opts: o, out: &lockedBuffer{}}
	if o.TLS {
		if err := s.writeTLSFiles(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	var lastErr error
	for range 5 { // a freed port can be taken before redis binds it
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if lastErr = s.launch(); lastErr == nil {
			return s, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// freePort picks the port redis-server is told to bind (see freeport).
func freePort() (int, error) { return freeport.Pick(1) }

func (s *Server) launch() error {
	port := []string{"--port", strconv.Itoa(s.port)}
	if s.opts.TLS {
		port = []string{"--port", "0", "--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", s.path("tls.crt"), "--tls-key-file", s.path("tls.key"),
			"--tls-ca-cert-file", s.CAFile(), "--tls-auth-clients", "no"}
	}
	args := append(port,
		"--bind", "127.0.0.1", "--protected-mode", "yes",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no",
		"--loglevel", "warning",
	)
	if o := s.opts; o.User != "" {
		keys, cmds := o.KeyPattern, o.Commands
		if keys == "" {
			keys = "*"
		}
		if cmds == "" {
			cmds = "+@all"
		}
		args = append(args, "--user", "default", "off",
			"--user", o.User, "on", ">"+o.Password, "~"+keys)
		args = append(args, strings.Fields(cmds)...)
	}
	s.cmd = exec.Command("redis-server", args...)
	s.cmd.Dir = s.dir
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.dir}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	c := s.Client()
	defer c.Close()
	deadline := time.Now().Add(StartTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("redistest: redis-server exited at start: %s", s.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Kill()
	return fmt.Errorf("redistest: redis-server did not answer PING within %s: %s", StartTimeout, s.out.String())
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Client returns a new client of the server, as its ACL user if it has
// one, over TLS if it serves TLS.
func (s *Server) Client() *redis.Client {
	opt := &redis.Options{
		Addr: s.Addr(), MaxRetries: -1, DisableIdentity: true,
		Username: s.opts.User, Password: s.opts.Password,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if s.opts.TLS {
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.roots, ServerName: "127.0.0.1"}
	}
	return redis.NewClient(opt)
}

// CAFile is the PEM file of the CA that issued a TLS server's certificate.
func (s *Server) CAFile() string { return s.path("ca.crt") }

func (s *Server) path(name string) string { return filepath.Join(s.dir, name) }

// writeTLSFiles writes the server's certificate, key and CA into its
// directory.
func (s *Server) writeTLSFiles() error {
	ca, err := testpki.NewCA("redistest CA")
	if err != nil {
		return err
	}
	leaf, err := ca.Leaf("127.0.0.1")
	if err != nil {
		return err
	}
	var chain []byte
	for _, der := range leaf.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		return err
	}
	s.roots = ca.Pool()
	return errors.Join(
		os.WriteFile(s.path("tls.crt"), chain, 0o600),
		os.WriteFile(s.path("tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600),
		os.WriteFile(s.CAFile(), ca.CertPEM, 0o600),
	)
}

// Kill stops the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Restart starts an empty server on the same address after Kill.
func (s *Server) Restart() error {
	s.Kill()
	return s.launch()
}

// Output returns what the server printed.
func (s *Server) Output() string { return s.out.String() }

// Close kills the server and removes its directory.
func (s *Server) Close() error {
	s.Kill()
	return os.RemoveAll(s.dir)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
