package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// maxRequestBytes bounds a request body kept for a resend to another node;
// a grant write or a Transit batch is far below it.
const maxRequestBytes = 8 << 20

// nodeDownFor is how long a node that refused a connection (or could not
// be reached within the dial timeout) is tried only after the others: long
// enough that a dead node does not cost every request a dial, short enough
// that a restarted node is used again within seconds.
const nodeDownFor = 5 * time.Second

// peekBytes bounds how much of a 500 or 503 answer is read to tell a
// sealed node or a standby without an active node from other failures;
// Vault's error bodies are a few hundred bytes.
const peekBytes = 4 << 10

// failover sends every Vault request to one node of a cluster (the
// preferred address) and moves to the next configured address when that
// node surely did not process the request:
//
//   - the connection could not be made (the node is down);
//   - the node answered with a redirect: a Vault CE standby answers 307 to
//     the active node's address when it cannot forward the request (no
//     forwarding connection yet, or X-Vault-No-Request-Forwarding); the
//     redirect is never followed, so the token only goes to configured
//     addresses;
//   - the node is sealed (503 "Vault is sealed"), or is a standby that knows
//     no active node (500 "local node not active but active cluster node not
//     found"), or answered sys/health as a standby (so Ping finds the active
//     node and the next calls go to it without a forwarding hop).
//
// A request that may have been processed (it was sent and the answer was
// lost, timed out or was another error) is never resent here: its error goes
// to the store operation, which answers ErrUnavailable (503
// store_unavailable to the agent); the next request starts at the next node.
// When every node fails (an election), the last answer is returned and the
// preference stays.
// An unsealed standby with a live active node forwards requests itself
// (Vault CE request forwarding over the cluster port), so its answers are
// served as they are.
//
// The preferred address sticks until a node fails, so a healthy cluster
// sees one connection pool. A node that could not be reached is tried last
// for nodeDownFor, so a dead node does not cost every request a dial
// timeout. Requests run under the operation's context:
// trying every node never outlasts the store timeout.
type failover struct {
	next  http.RoundTripper
	addrs []*url.URL
	// cur is the index of the preferred address.
	cur atomic.Uint32
	// down holds, per address, until when (Unix nanoseconds) it is tried
	// only after the others: its node could not be reached.
	down []atomic.Int64
	log  *zap.Logger
}

// newFailover returns a RoundTripper over next for the given addresses
// (validated by Config.Validate).
func newFailover(next http.RoundTripper, addrs []string, log *zap.Logger) (*failover, error) {
	f := &failover{next: next, log: log}
	for _, a := range addrs {
		u, err := url.Parse(strings.TrimSuffix(a, "/"))
		if err != nil {
			return nil, fmt.Errorf("vault address %d: %w", len(f.addrs), err)
		}
		f.addrs = append(f.addrs, u)
	}
	if len(f.addrs) == 0 {
		return nil, errors.New("no vault address")
	}
	f.down = make([]atomic.Int64, len(f.addrs))
	return f, nil
}

// RoundTrip implements http.RoundTripper.
func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	n := uint32(len(f.addrs))
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(req.Body, maxRequestBytes+1))
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read vault request body: %w", err)
		}
		if len(b) > maxRequestBytes {
			return nil, errors.New("vault request body too large")
		}
		body = b
	}
	start := f.cur.Load()
	order := f.order(start)
	var (
		resp *http.Response
		err  error
		why  string // why the first node tried was skipped
	)
	for i, idx := range order {
		resp, err = f.next.RoundTrip(f.target(req, idx, body))
		reason := notProcessed(req, resp, err)
		if reason == "unreachable" {
			f.down[idx].Store(time.Now().Add(nodeDownFor).UnixNano())
		} else {
			f.down[idx].Store(0)
		}
		if reason == "" {
			if err != nil || resp.StatusCode >= 500 {
				// Maybe processed: not resent, but the next operation
				// starts at the next node.
				f.move(idx, n, "vault node failed", err, resp)
			} else if idx != start && f.cur.CompareAndSwap(start, idx) {
				f.log.Info("vault: using another node", zap.String("node", f.addrs[idx].Host),
					zap.String("previous", f.addrs[start].Host), zap.String("reason", why))
			}
			return resp, err
		}
		if i == len(order)-1 || req.Context().Err() != nil {
			// Every node failed (an election): the preference stays;
			// nodes that could not be reached are tried last anyway.
			f.log.Debug("vault: no node could serve", zap.String("last", f.addrs[idx].Host), zap.String("reason", reason))
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, peekBytes))
			_ = resp.Body.Close()
		}
		if why == "" {
			why = reason
			if idx != start {
				why = "preferred node unreachable"
			}
		}
		f.log.Debug("vault node skipped", zap.String("node", f.addrs[idx].Host), zap.String("reason", reason))
	}
	return resp, err
}

// order returns the node indexes to try, starting at start: the nodes not
// marked down first, in address order, then those marked down (they may be
// back).
func (f *failover) order(start uint32) []uint32 {
	n := uint32(len(f.addrs))
	now := time.Now().UnixNano()
	up := make([]uint32, 0, n)
	var down []uint32
	for i := range n {
		idx := (start + i) % n
		if f.down[idx].Load() > now {
			down = append(down, idx)
		} else {
			up = append(up, idx)
		}
	}
	return append(up, down...)
}

// move makes the address after idx the preferred one, unless another
// request moved it already.
func (f *failover) move(idx, n uint32, reason string, err error, resp *http.Response) {
	if n == 1 {
		return
	}
	if f.cur.CompareAndSwap(idx, (idx+1)%n) {
		fields := []zap.Field{zap.String("node", f.addrs[idx].Host), zap.String("next", f.addrs[(idx+1)%n].Host), zap.String("reason", reason)}
		if err != nil {
			fields = append(fields, zap.Error(transportError(err)))
		}
		if resp != nil {
			fields = append(fields, zap.Int("status", resp.StatusCode))
		}
		f.log.Info("vault: node failed; the next request goes to the next node", fields...)
	}
}

// target returns req aimed at address idx, with its own copy of body.
func (f *failover) target(req *http.Request, idx uint32, body []byte) *http.Request {
	r := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = f.addrs[idx].Scheme, f.addrs[idx].Host
	r.URL, r.Host = &u, f.addrs[idx].Host
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		r.ContentLength = int64(len(body))
	}
	return r
}

// Vault's answers that mean a node did not process a request.
const (
	msgSealed   = "Vault is sealed"
	msgNoActive = "active cluster node not found"
)

// notProcessed says why the outcome of one attempt shows that the node did
// not process req ("" when it may have): see failover.
func notProcessed(req *http.Request, resp *http.Response, err error) string {
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return "unreachable"
		}
		return ""
	}
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return "standby redirect"
	case strings.HasSuffix(req.URL.Path, "/sys/health") && resp.StatusCode != http.StatusOK:
		// 429 standby, 472/473 DR or performance standby, 501 not
		// initialised, 503 sealed: not the node to prefer.
		return "not active"
	case resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusInternalServerError:
		// Peek at the error text; the caller still reads the whole body.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, peekBytes))
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
		switch {
		case bytes.Contains(b, []byte(msgSealed)):
			return "sealed"
		case bytes.Contains(b, []byte(msgNoActive)):
			return "no active node known"
		}
	}
	return ""
}

// CloseIdleConnections closes the idle connections of the transport below.
func (f *failover) CloseIdleConnections() {
	if c, ok := f.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
