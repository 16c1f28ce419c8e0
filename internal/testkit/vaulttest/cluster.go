package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

// Cluster limits.
const (
	// DefaultClusterSize is the number of nodes of a Cluster: the smallest
	// Raft cluster that keeps a quorum with one node down.
	DefaultClusterSize = 3
	// ElectionTimeout bounds the wait for a cluster to have an active node
	// again after the active one was killed. Raft elects a leader within a
	// few election timeouts (one second each at performance multiplier 1);
	// the new leader then takes Vault's HA lock and sets up its mounts.
	// Thirty seconds rides out a loaded CI machine.
	ElectionTimeout = 30 * time.Second
	// stabilization is the autopilot server-stabilisation time set on the
	// cluster: how long a joined node must be healthy before it becomes a
	// voter. Vault's default of ten seconds would only slow start-up; a
	// non-voter cannot take over, so Start waits for every node to vote.
	stabilization = "1s"
)

// ClusterOptions configure a Cluster.
type ClusterOptions struct {
	// Nodes is the number of nodes; zero means DefaultClusterSize.
	Nodes int
	// Output, when set, returns the writer that receives node i's output.
	Output func(i int) io.Writer
	// PerformanceMultiplier scales Raft's timing (heartbeat, election and
	// leader-lease timeouts). Zero means 1, the fastest timing Vault
	// offers and HashiCorp's recommendation for production; Vault's own
	// default (5) would lengthen every election fivefold.
	PerformanceMultiplier int
}

// Cluster is a Vault high-availability cluster of real, non-dev servers on
// integrated storage (Raft), every node on its own loopback API and cluster
// ports with its own data directory. Start initialises the first node,
// joins the others to it (`vault operator raft join`), unseals every node
// with the one unseal key, mounts KV v2 at secret/ and waits until every
// node is a voter. Nodes are killed and restarted with Server.Stop and
// Server.Restart; a restarted node rejoins with its data and is unsealed.
//
// Every node forwards requests it cannot serve as a standby to the active
// node over the cluster port (Vault CE's request forwarding), so a client
// may talk to any unsealed node.
type Cluster struct {
	// Nodes are the cluster's servers, in start order.
	Nodes []*Server

	dir  string
	opts ClusterOptions

	mu        sync.Mutex
	rootToken string
	unsealKey string
}

// member is a Server's place in its Cluster.
type member struct {
	c           *Cluster
	index       int
	clusterPort int
}

// StartCluster starts a cluster on free loopback ports and waits (at most
// StartTimeout per node, and ElectionTimeout for the voters) until it is
// ready: one active node, every node unsealed and voting, secret/ writable.
func StartCluster(o ClusterOptions) (*Cluster, error) {
	if o.Nodes == 0 {
		o.Nodes = DefaultClusterSize
	}
	if o.PerformanceMultiplier == 0 {
		o.PerformanceMultiplier = 1
	}
	bin, err := BinaryPath()
	if err != nil {
		return nil, fmt.Errorf("start vault cluster: %w", err)
	}
	dir, err := os.MkdirTemp("", "onbehalf-vaultcluster-")
	if err != nil {
		return nil, fmt.Errorf("start vault cluster: %w", err)
	}
	c := &Cluster{dir: dir, opts: o}
	for i := range o.Nodes {
		ndir := filepath.Join(dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(filepath.Join(ndir, "raft"), 0o700); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("start vault cluster: %w", err)
		}
		var out io.Writer
		if o.Output != nil {
			out = o.Output(i)
		}
		s := &Server{bin: bin, dir: ndir, opts: Options{Output: out}, member: &member{c: c, index: i}}
		var errs []error
		for range startAttempts {
			port, err := freePortPair()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s.port, s.member.clusterPort = port, port+1
			if err := s.launch(); err != nil {
				errs = append(errs, err)
				continue
			}
			errs = nil
			break
		}
		if errs != nil {
			_ = c.Close()
			return nil, fmt.Errorf("start vault cluster: node %d: %w", i, errors.Join(errs...))
		}
		c.Nodes = append(c.Nodes, s)
	}
	if err := c.waitVoters(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("start vault cluster: %w", err)
	}
	return c, nil
}

// writeRaftConfig writes a cluster node's configuration: Raft storage in the
// node's own directory (the same across restarts), plain http on the
// loopback API port and the cluster listener (TLS, Vault's own certificates)
// on the next port. There is no retry_join: a node joins once, explicitly
// (waitMember), and its Raft data brings it back into the cluster after a
// restart.
func (s *Server) writeRaftConfig() (string, error) {
	m := s.member
	cfg := fmt.Sprintf(`storage "raft" {
  path    = %q
  node_id = "node%d"
  performance_multiplier = %d
}
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:%d"
cluster_addr  = "https://127.0.0.1:%d"
disable_mlock = true
ui            = false
`, filepath.Join(s.dir, "raft"), m.index, m.c.opts.PerformanceMultiplier, s.port, m.clusterPort, s.port, m.clusterPort)
	path := filepath.Join(s.dir, "vault.hcl")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// waitMember brings a started cluster node into service. The first node's
// first start initialises the cluster (one key share), unseals it, waits
// until it is active and mounts KV v2 at secret/. Another node's first
// start joins it to the active node and unseals it. A restart only
// unseals: the node's Raft data says which cluster it belongs to.
func (s *Server) waitMember(_ <-chan string, exited <-chan struct{}) error {
	m := s.member
	deadline := time.Now().Add(StartTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	c, err := s.newClient()
	if err != nil {
		return err
	}
	c.ClearToken()
	h, err := waitAnswer(ctx, c, exited)
	if err != nil {
		return err
	}
	switch {
	case !h.Initialized && m.index == 0 && m.c.RootToken() == "":
		init, err := c.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		if err != nil {
			return fmt.Errorf("init: %w", err)
		}
		m.c.mu.Lock()
		m.c.rootToken, m.c.unsealKey = init.RootToken, init.Keys[0]
		m.c.mu.Unlock()
	case !h.Initialized:
		active, err := m.c.activeNode(ctx, s)
		if err != nil {
			return fmt.Errorf("join: %w", err)
		}
		r, err := c.Sys().RaftJoinWithContext(ctx, &api.RaftJoinRequest{LeaderAPIAddr: active.Addr()})
		if err != nil {
			return fmt.Errorf("join %s: %w", active.Addr(), err)
		}
		if !r.Joined {
			return fmt.Errorf("join %s: not joined", active.Addr())
		}
	}
	s.mu.Lock()
	s.rootToken, s.unsealKey = m.c.RootToken(), m.c.UnsealKey()
	s.mu.Unlock()
	if _, err := c.Sys().UnsealWithContext(ctx, s.unsealKey); err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	c.SetToken(s.rootToken)
	// Unsealed is not enough: until a standby has learned the active
	// node, it answers 500 "local node not active but active cluster node
	// not found" instead of forwarding.
	for {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed && (m.index != 0 || !h.Standby || m.c.ready()) {
			var l *api.LeaderResponse
			if l, err = c.Sys().LeaderWithContext(ctx); err == nil && l.LeaderAddress != "" {
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not unsealed within %s: %w", StartTimeout, errors.Join(err, ctx.Err()))
		case <-exited:
			return errors.New("exited during start-up")
		case <-time.After(pollInterval):
		}
	}
	if m.index == 0 && !m.c.ready() {
		if err := c.Sys().MountWithContext(ctx, "secret", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
			return fmt.Errorf("mount secret/: %w", err)
		}
		if _, err := c.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration", map[string]any{
			"server_stabilization_time": stabilization,
		}); err != nil {
			return fmt.Errorf("autopilot configuration: %w", err)
		}
		if err := waitWritable(ctx, c); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.client = c
	s.mu.Unlock()
	return nil
}

// waitAnswer polls sys/health until the server answers.
func waitAnswer(ctx context.Context, c *api.Client, exited <-chan struct{}) (*api.HealthResponse, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		h, err := c.Sys().HealthWithContext(cctx)
		cancel()
		if err == nil {
			return h, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("not answering within %s: %w", StartTimeout, err)
		case <-exited:
			return nil, errors.New("exited during start-up")
		case <-time.After(pollInterval):
		}
	}
}

// ready reports whether the cluster was set up (its first node's start
// completed).
func (c *Cluster) ready() bool {
	return len(c.Nodes) > 0
}

// RootToken returns the cluster's root token.
func (c *Cluster) RootToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rootToken
}

// UnsealKey returns the cluster's unseal key (one share).
func (c *Cluster) UnsealKey() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unsealKey
}

// Addrs returns every node's API address, in node order.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// Active returns the index of the node that reports itself active (initialised,
// unsealed, not a standby), or -1 when none does right now.
func (c *Cluster) Active(ctx context.Context) int {
	for i, n := range c.Nodes {
		if n.isActive(ctx) {
			return i
		}
	}
	return -1
}

// isActive asks s's sys/health whether it is the active node.
func (s *Server) isActive(ctx context.Context) bool {
	cl := s.Client()
	s.mu.Lock()
	running := s.cmd != nil
	s.mu.Unlock()
	if cl == nil || !running {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	h, err := cl.Sys().HealthWithContext(ctx)
	return err == nil && h.Initialized && !h.Sealed && !h.Standby
}

// activeNode returns the active node other than except, waiting for one.
func (c *Cluster) activeNode(ctx context.Context, except *Server) (*Server, error) {
	for {
		for _, n := range c.Nodes {
			if n != except && n.isActive(ctx) {
				return n, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no active node: %w", ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// WaitActive waits (at most ElectionTimeout) until a node is active and
// serves KV writes, and returns its index: after the active node was
// killed, this is the end of the election.
func (c *Cluster) WaitActive() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ElectionTimeout)
	defer cancel()
	for {
		if i := c.Active(ctx); i >= 0 {
			wctx, wcancel := context.WithTimeout(ctx, time.Second)
			_, err := c.Nodes[i].Client().Logical().WriteWithContext(wctx, "secret/data/vaulttest-ready", map[string]any{"data": map[string]any{"ok": true}})
			wcancel()
			if err == nil {
				return i, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("vault cluster: no active node within %s", ElectionTimeout)
		case <-time.After(pollInterval):
		}
	}
}

// Voters returns the node ids of the Raft configuration's voters, as the
// active node reports them.
func (c *Cluster) Voters(ctx context.Context) ([]string, error) {
	i := c.Active(ctx)
	if i < 0 {
		return nil, errors.New("vault cluster: no active node")
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	r, err := c.Nodes[i].Client().Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
	if err != nil || r == nil {
		return nil, fmt.Errorf("vault cluster: raft configuration: %w", errors.Join(err, errIfNil(r)))
	}
	cfg, _ := r.Data["config"].(map[string]any)
	list, _ := cfg["servers"].([]any)
	var out []string
	for _, e := range list {
		m, _ := e.(map[string]any)
		if v, _ := m["voter"].(bool); v {
			id, _ := m["node_id"].(string)
			out = append(out, id)
		}
	}
	return out, nil
}

// waitVoters waits until every node is a Raft voter, so that the cluster
// survives the loss of any one node.
func (c *Cluster) waitVoters() error {
	ctx, cancel := context.WithTimeout(context.Background(), ElectionTimeout)
	defer cancel()
	var last error
	for {
		v, err := c.Voters(ctx)
		if err == nil && len(v) == len(c.Nodes) {
			return nil
		}
		last = errors.Join(err, fmt.Errorf("voters %v", v))
		select {
		case <-ctx.Done():
			return fmt.Errorf("not every node votes within %s: %w", ElectionTimeout, last)
		case <-time.After(pollInterval):
		}
	}
}

// Close kills every node and removes the cluster's directories. It is safe
// to call more than once.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.Close())
	}
	errs = append(errs, os.RemoveAll(c.dir))
	return errors.Join(errs...)
}

// Running reports whether the server's process runs (it was not stopped).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Shutdown stops the server gracefully, as an operator's `systemctl stop`
// would (SIGTERM; an active node gives up leadership on the way out), and
// waits for it to exit, at most StartTimeout before it is killed. Restart
// brings it back.
func (s *Server) Shutdown() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(StartTimeout):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// StepDown asks node i, which must be the active node, to give up
// leadership (`vault operator step-down`); another node takes over.
func (c *Cluster) StepDown(i int) error {
	ctx, cancel := adminCtx()
	defer cancel()
	if err := c.Nodes[i].Client().Sys().StepDownWithContext(ctx); err != nil {
		return fmt.Errorf("step down node %d: %w", i, err)
	}
	return nil
}

// WaitHealthy waits (at most ElectionTimeout) until autopilot reports the
// cluster healthy: every voter up, caught up with the leader's log and in
// contact with it (`vault operator raft autopilot state`). An operator
// restarting nodes in turn waits for this before the next one, so that the
// cluster never loses its quorum.
func (c *Cluster) WaitHealthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), ElectionTimeout)
	defer cancel()
	var last error
	for {
		if i := c.Active(ctx); i >= 0 {
			st, err := c.Nodes[i].Client().Sys().RaftAutopilotStateWithContext(ctx)
			switch {
			case err != nil:
				last = err
			case st == nil:
				last = errors.New("no autopilot state")
			case st.Healthy && len(st.Voters) == len(c.Nodes):
				return nil
			default:
				last = fmt.Errorf("autopilot: healthy %v, voters %v, failure tolerance %d", st.Healthy, st.Voters, st.FailureTolerance)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vault cluster: not healthy within %s: %w", ElectionTimeout, errors.Join(last, ctx.Err()))
		case <-time.After(pollInterval):
		}
	}
}
