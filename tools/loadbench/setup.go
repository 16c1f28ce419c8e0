package main

import (
	"context"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/freeport"
)

// Process management limits.
const (
	// startTimeout bounds a proxy's start until it answers; mitmproxy
	// generates an RSA CA on first start, which takes a moment.
	startTimeout = 30 * time.Second
	// stopGrace is how long a process gets to exit after SIGTERM (or its
	// closed stdin) before it is killed.
	stopGrace = 5 * time.Second
	// cliTimeout bounds one onbehalf CLI call (ca init, keygen, grants).
	cliTimeout = time.Minute
	// assertionTTL is the lifetime of the assertion minted for one
	// onbehalf instance: longer than any instance lives in a run, within
	// the sidecar's default 15-minute maximum.
	assertionTTL = 14 * time.Minute
	// pollInterval is how often start-up readiness is checked.
	pollInterval = 50 * time.Millisecond
)

// Fixed names the onbehalf setup uses.
const (
	benchIssuer   = "https://orchestrator.bench.test"
	benchAudience = "loadbench"
	benchUser     = "alice"
	benchProvider = "chat"
	// assertionHeader is onbehalf's default identity header.
	assertionHeader = "Onbehalf-Assertion"
)

// squidCertgen is Debian's path of squid's certificate generator helper.
const squidCertgen = "/usr/lib/squid/security_file_certgen"

//go:embed inject.py
var mitmAddon []byte

// instance is one running setup.
type instance struct {
	ep *endpoint
	// tree is the proxy's process tree; zero for direct.
	tree processTree
	// stop ends the instance; safe to call more than once.
	stop func()
	// exited is closed when the proxy process has exited.
	exited <-chan struct{}
	// admin is the base URL of onbehalf's admin listener; empty for the
	// other setups.
	admin string
}

// setup is one way of reaching the API: direct, or through a proxy.
type setup struct {
	name string
	// proxied is false for direct.
	proxied bool
	// start launches a fresh instance.
	start func(ctx context.Context, b *bench) (*instance, error)
	// check, when not nil, runs after the last instance stopped and says
	// whether the setup really did its work.
	check func(ctx context.Context, b *bench, r *setupResult) error
}

// setups lists every setup in table order.
func setups() []setup {
	return []setup{
		{name: "direct", start: startDirect},
		{name: "onbehalf", proxied: true, start: startOnbehalf, check: checkOnbehalfAudit},
		{name: "squid", proxied: true, start: startSquid},
		{name: "mitmproxy", proxied: true, start: startMitmproxy},
	}
}

// startDirect "starts" the direct setup: the client trusts the upstream CA
// and sends the credential itself. There is no process to measure, and
// nothing ever exits.
func startDirect(_ context.Context, b *bench) (*instance, error) {
	pool, err := poolFromFile(b.up.caFile)
	if err != nil {
		return nil, fmt.Errorf("read upstream CA: %w", err)
	}
	return &instance{
		ep: &endpoint{
			upstreamAddr: b.up.addr(), apiPort: b.up.port, roots: pool,
			header: http.Header{"Authorization": {"Bearer " + b.token}},
		},
		stop:   func() {},
		exited: make(chan struct{}),
	}, nil
}

// proc is a started proxy process.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// launch starts argv with output to logPath. When the bench isolates
// proxies, the process runs in its own mount namespace where /etc/hosts is
// the bench's hosts file (the *.bench.test names of the first-seen-host
// run resolve to 127.0.0.1 there, and nowhere else): `unshare` and `sh`
// both exec, so the returned pid is the proxy's own.
func (b *bench) launch(logPath string, env []string, argv ...string) (*proc, error) {
	if b.isolate {
		argv = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount --bind "$0" /etc/hosts && exec "$@"`, b.launchHosts}, argv...)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so stopping it also stops its helpers
	// (squid's certificate generators) and nothing else.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after stopGrace.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
	// Helpers that outlived their parent belong to the same group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	const keep = 1500
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return strings.TrimSpace(string(b))
}

// waitFor polls ready until it returns nil, the process exits, or the
// start timeout passes.
func (p *proc) waitFor(ctx context.Context, what string, ready func() error) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during start-up:\n%s", what, p.tail())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v\n%s", what, startTimeout, last, p.tail())
		case <-time.After(pollInterval):
		}
	}
}

// finishStart turns a started proxy into an instance: it checks one
// workload request end to end, so a setup that does not work fails here
// and not in the middle of a measurement.
func (b *bench) finishStart(ctx context.Context, p *proc, ep *endpoint) (*instance, error) {
	inst := &instance{ep: ep, tree: processTree{root: p.cmd.Process.Pid}, stop: p.stop, exited: p.exited}
	c := ep.client(true)
	defer c.CloseIdleConnections()
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if err := ep.do(rctx, c, "localhost"); err != nil {
		p.stop()
		return nil, fmt.Errorf("first request: %w\n%s", err, p.tail())
	}
	return inst, nil
}

// freePort picks a port for a child process to listen on, below the
// ephemeral range, so that no connection the harness opens meanwhile can
// take it before the child binds it (see freeport).
func freePort() (int, error) { return freeport.Pick(1) }

func portOpen(port int) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func poolFromFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificate in %s", path)
	}
	return pool, nil
}

// minimalEnv is the environment proxies get: no proxy variables, nothing
// of the harness's own.
func minimalEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LANG=C.UTF-8"}, extra...)
}

// embeddedStoreYAML is the store section of the sidecar's configuration
// with the embedded store.
const embeddedStoreYAML = "{embedded: {path: grants.db, key_file: grants.key}}"

// onbehalfConfig is the sidecar configuration of the bench: the example
// default policy, a grant store, the token cache on (TTL 1 minute, or the
// default 10 s in the many-users workload), audit to a file with one write
// per record.
const onbehalfConfig = `# Generated by loadbench.
proxy:
  listen: 127.0.0.1:%d
  connect_url: https://connect.bench.test
  upstream: {ca_file: %s}
admin: {listen: 127.0.0.1:%d, pprof: %t}
ca: {cert: ca.pem, key: ca-key.pem}
identity:
  audience: %s
  issuers: [%s]
  keys: [{id: orch, file: orch.pub}]
token_cache: {ttl: %s}
routes:
  - host: localhost
    port: %d
    provider: %s
  - host: "*.%s"
    port: %d
    provider: %s
policy: {paths: [%s]}
store: %s
egress: {allow: [127.0.0.1/32]}
audit:
  sink: file
  file: {path: %s, durability: write}
  fail_closed: true
  fingerprint_key_file: fingerprint.key
log: {level: info, format: json}
`

// benchRateLimits are the limits of --rate-limits: one bucket per user and
// route, one per user and path prefix for POSTs; far above any rate the
// harness reaches, so that every request takes tokens and none is refused.
const benchRateLimits = `rate_limits:
  rules:
    - {name: per-user, rate: 100000000/s, by: [user, route]}
    - {name: posts, rate: 100000000/s, by: [user, path], methods: [POST], paths: [/]}
`

// prepareOnbehalf creates the CA, keys, configuration and grant once per
// run, the way an operator would with the CLI.
func (b *bench) prepareOnbehalf(ctx context.Context) error {
	if b.obDir != "" {
		return nil
	}
	if _, err := os.Stat(b.opts.onbehalf); err != nil {
		return fmt.Errorf("onbehalf binary %s: %w (run make build or pass --onbehalf)", b.opts.onbehalf, err)
	}
	if b.opts.baseline != "" {
		if _, err := os.Stat(b.opts.baseline); err != nil {
			return fmt.Errorf("--baseline binary %s: %w", b.opts.baseline, err)
		}
	}
	policy, err := filepath.Abs(b.opts.policy)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(policy, "policy.rego")); err != nil {
		return fmt.Errorf("policy %s: %w (run from the repository root or pass --policy)", policy, err)
	}
	dir := filepath.Join(b.dir, "onbehalf")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b.obDir, b.obPolicy = dir, policy
	if err := b.initOnbehalf(ctx); err != nil {
		b.obDir = "" // try again on the next start
		return err
	}
	return nil
}

// initOnbehalf runs the CLI steps of prepareOnbehalf in b.obDir.
func (b *bench) initOnbehalf(ctx context.Context) error {
	dir := b.obDir
	if _, err := b.cli(ctx, "", "ca", "init", "--dir", dir); err != nil {
		return err
	}
	if _, err := b.cli(ctx, "", "assert", "keygen", "--private", filepath.Join(dir, "orch.key"), "--public", filepath.Join(dir, "orch.pub")); err != nil {
		return err
	}
	// Ports are chosen per instance; the CLI only reads the store section.
	cfg, err := b.writeOnbehalfConfig(1, 2)
	if err != nil {
		return err
	}
	_, err = b.cli(ctx, b.token+"\n", "grants", "put", "--config", cfg, "--provider", benchProvider, "--user", benchUser,
		"--access-token-file", "-", "--expiry", "24h", "--scopes", "chat:write")
	return err
}

func (b *bench) writeOnbehalfConfig(port, admin int) (string, error) {
	// A --versus instance has a configuration and audit file of its own:
	// two instances run at once, and an audit file has one writer.
	name, auditFile, limits := "onbehalf.yaml", "audit.log", b.opts.rateLimits
	if v := b.variant; v != nil {
		name, auditFile, limits = "onbehalf-"+v.name+".yaml", "audit-"+v.name+".log", v.rateLimits
	}
	path := filepath.Join(b.obDir, name)
	cacheTTL, storeYAML := "1m", embeddedStoreYAML
	if b.many != nil {
		cacheTTL, storeYAML = manyUsersCacheTTL, b.many.storeYAML
	}
	text := fmt.Sprintf(onbehalfConfig, port, b.up.caFile, admin, b.opts.cpuprofile != "" || b.opts.newHostProfile != "" || b.opts.heapprofile != "", benchAudience, benchIssuer,
		cacheTTL, b.up.port, benchProvider, benchDomain, b.up.port, benchProvider, b.obPolicy, storeYAML, auditFile)
	if limits {
		text += benchRateLimits
	}
	return path, os.WriteFile(path, []byte(text), 0o600)
}

// cli runs the onbehalf CLI and returns its standard output.
func (b *bench) cli(ctx context.Context, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.opts.onbehalf, args...)
	cmd.Env = minimalEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		// Output of these commands names files, never secrets.
		return "", fmt.Errorf("onbehalf %s: %w: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func startOnbehalf(ctx context.Context, b *bench) (*instance, error) {
	if err := b.prepareOnbehalf(ctx); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg, err := b.writeOnbehalfConfig(port, admin)
	if err != nil {
		return nil, err
	}
	assertion, err := b.cli(ctx, "", "assert", "--key", filepath.Join(b.obDir, "orch.key"), "--kid", "orch",
		"--iss", benchIssuer, "--aud", benchAudience, "--sub", benchUser, "--act", "loadbench-agent",
		"--ttl", assertionTTL.String())
	if err != nil {
		return nil, err
	}
	roots, err := poolFromFile(filepath.Join(b.obDir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	logName, env, bin := "onbehalf.log", minimalEnv(), b.opts.onbehalf
	if v := b.variant; v != nil {
		logName, env = "onbehalf-"+v.name+".log", minimalEnv(v.env...)
		if v.bin != "" {
			bin = v.bin
		}
	}
	p, err := b.launch(filepath.Join(b.obDir, logName), env, bin, "serve", "--config", cfg)
	if err != nil {
		return nil, err
	}
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", admin)
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	err = p.waitFor(ctx, "onbehalf", func() error {
		resp, err := hc.Get(readyz)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		p.stop()
		return nil, err
	}
	inst, err := b.finishStart(ctx, p, &endpoint{
		proxyAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), upstreamAddr: b.up.addr(), apiPort: b.up.port,
		roots: roots, header: http.Header{assertionHeader: {strings.TrimSpace(assertion)}},
	})
	if err != nil {
		return nil, err
	}
	inst.admin = fmt.Sprintf("http://127.0.0.1:%d", admin)
	return inst, nil
}

// cpuProfile fetches a CPU profile of d from onbehalf's admin listener
// (pprof on) and writes it to path. It returns when the profile is written.
func cpuProfile(ctx context.Context, admin string, d time.Duration, path string) error {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	return fetchProfile(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, secs), d+30*time.Second, path)
}

// fetchProfile fetches a pprof profile from url and writes it to path.
func fetchProfile(ctx context.Context, url string, timeout time.Duration, path string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: admin listener answered %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	return os.WriteFile(path, body, 0o644)
}

// checkOnbehalfAudit verifies the sidecar's audit trail after the run: the
// hash chain holds across rotations, and it has at least one record per
// successful measured request (warm-up requests add more).
func checkOnbehalfAudit(ctx context.Context, b *bench, r *setupResult) error {
	if b.obDir == "" {
		return nil
	}
	base := filepath.Join(b.obDir, "audit.log")
	rotated, _ := filepath.Glob(base + ".*")
	// Oldest first: audit.log.N … audit.log.1, then audit.log.
	slices.SortFunc(rotated, func(x, y string) int {
		nx, _ := strconv.Atoi(strings.TrimPrefix(x, base+"."))
		ny, _ := strconv.Atoi(strings.TrimPrefix(y, base+"."))
		return ny - nx
	})
	out, err := b.cli(ctx, "", append([]string{"audit", "verify"}, append(rotated, base)...)...)
	if err != nil {
		return fmt.Errorf("audit trail: %w", err)
	}
	var records int
	if _, err := fmt.Sscanf(out, "ok: %d records", &records); err != nil {
		return fmt.Errorf("audit verify said %q", strings.TrimSpace(out))
	}
	want := 0
	for _, p := range r.phases {
		want += p.load.ok + p.idleOpened
	}
	// Files beyond max_files are deleted at rotation; only a complete set
	// can be counted.
	if records < want && len(rotated) < 10 {
		return fmt.Errorf("audit trail has %d records for %d successful requests", records, want)
	}
	return nil
}

// squidConfig peeks at the client's TLS hello, then bumps every
// connection, adds the credential, verifies the upstream with its CA,
// caches nothing and logs nothing per request.
//
// Peek-then-bump is squid's standard ssl-bump set-up, and it matters here:
// the server connection is opened while bumping and pinned to the client
// connection, so keep-alive POSTs reuse it. With a bare "ssl_bump bump all"
// (client-first bumping) squid takes server connections from its idle pool
// instead, and it never reuses a pooled connection for a non-idempotent
// request: every POST then costs a new upstream TCP and TLS handshake, and
// squid runs about ten times slower.
const squidConfig = `# Generated by loadbench.
http_port 127.0.0.1:%d ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=16MB tls-cert=%[2]s/ca.pem tls-key=%[2]s/ca-key.pem
sslcrtd_program %[3]s -s %[2]s/ssl_db -M 16MB
sslcrtd_children 8 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=%[4]s
request_header_add Authorization "Bearer %[5]s" all
acl bench src 127.0.0.1/32
http_access allow bench
http_access deny all
cache deny all
cache_mem 8 MB
access_log none
cache_store_log none
cache_log %[2]s/cache.log
pid_filename %[2]s/squid.pid
coredump_dir %[2]s
netdb_filename none
hosts_file /etc/hosts
dns_nameservers 127.0.0.1
pinger_enable off
icp_port 0
max_filedescriptors 8192
shutdown_lifetime 0 seconds
visible_hostname loadbench
%[6]s`

func startSquid(ctx context.Context, b *bench) (*instance, error) {
	squid, err := exec.LookPath("squid")
	if err != nil {
		return nil, errors.New("not installed (apt-get install squid-openssl)")
	}
	if v, _ := exec.Command(squid, "-v").Output(); !strings.Contains(string(v), "--with-openssl") {
		return nil, errors.New("squid lacks ssl-bump (install squid-openssl, not squid)")
	}
	if _, err := os.Stat(squidCertgen); err != nil {
		return nil, fmt.Errorf("squid certificate helper missing: %w", err)
	}
	dir := filepath.Join(b.dir, "squid")
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ca, err := newAuthority("loadbench squid CA")
	if err != nil {
		return nil, err
	}
	if err := errors.Join(
		os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644),
		os.WriteFile(filepath.Join(dir, "ca-key.pem"), ca.KeyPEM, 0o600),
	); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, squidCertgen, "-c", "-s", filepath.Join(dir, "ssl_db"), "-M", "16MB").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("init squid certificate db: %w: %s", err, out)
	}
	userLine := ""
	if os.Geteuid() == 0 {
		// Squid will not run as root; it drops to the packaged user, which
		// must own its files.
		userLine = "cache_effective_user proxy\n"
		if err := chownTree(dir, "proxy"); err != nil {
			return nil, err
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "squid.conf")
	text := fmt.Sprintf(squidConfig, port, dir, squidCertgen, b.up.caFile, b.token, userLine)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := chownTree(dir, "proxy"); err != nil {
			return nil, err
		}
	}
	p, err := b.launch(filepath.Join(dir, "squid.out"), minimalEnv(), squid, "-N", "-f", conf)
	if err != nil {
		return nil, err
	}
	if err := p.waitFor(ctx, "squid", func() error { return portOpen(port) }); err != nil {
		p.stop()
		if log, _ := os.ReadFile(filepath.Join(dir, "cache.log")); len(log) > 0 {
			err = fmt.Errorf("%w\ncache.log: %s", err, lastLines(string(log), 10))
		}
		return nil, err
	}
	return b.finishStart(ctx, p, &endpoint{
		proxyAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), upstreamAddr: b.up.addr(), apiPort: b.up.port,
		roots: poolOf(ca.Cert),
	})
}

func poolOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// chownTree gives dir and everything in it to the named user.
func chownTree(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func startMitmproxy(ctx context.Context, b *bench) (*instance, error) {
	mitmdump, err := exec.LookPath("mitmdump")
	if err != nil {
		return nil, errors.New("not installed (apt-get install mitmproxy)")
	}
	dir := filepath.Join(b.dir, "mitmproxy")
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "conf"), 0o700); err != nil {
		return nil, err
	}
	addon := filepath.Join(dir, "inject.py")
	if err := os.WriteFile(addon, mitmAddon, 0o644); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := b.launch(filepath.Join(dir, "mitmdump.out"), minimalEnv(upstreamTokenEnv+"="+b.token), mitmdump,
		"--listen-host", "127.0.0.1", "--listen-port", strconv.Itoa(port),
		"--set", "confdir="+filepath.Join(dir, "conf"),
		"--set", "ssl_verify_upstream_trusted_ca="+b.up.caFile,
		"--set", "flow_detail=0", "--set", "termlog_verbosity=warn",
		"-s", addon)
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "conf", "mitmproxy-ca-cert.pem")
	var roots *x509.CertPool
	err = p.waitFor(ctx, "mitmdump", func() error {
		if err := portOpen(port); err != nil {
			return err
		}
		roots, err = poolFromFile(caFile)
		return err
	})
	if err != nil {
		p.stop()
		return nil, err
	}
	return b.finishStart(ctx, p, &endpoint{
		proxyAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), upstreamAddr: b.up.addr(), apiPort: b.up.port,
		roots: roots,
	})
}
