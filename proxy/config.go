package proxy

import (
	"net"
	"net/url"
	"os"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Unrouted modes: what happens to CONNECT and plain-HTTP requests for hosts
// that have no route.
const (
	// UnroutedRefuse answers 403 no_route. It is the default: an agent
	// reaches only what routes name.
	UnroutedRefuse = "refuse"
	// UnroutedTunnel passes the traffic on without interception or
	// injection, after identity and policy allow it.
	UnroutedTunnel = "tunnel"
)

// Upstream pool modes: which requests may share a pooled upstream
// connection.
const (
	// PoolShared pools connections by host and port across users: the
	// default, and the cheapest. A connection goes back to the pool only
	// when nothing arrived after the response it carried.
	PoolShared = "shared"
	// PoolPerUser pools connections by host, port and user, so that no
	// connection ever carries two users' requests.
	PoolPerUser = "per_user"
)

// Config configures the proxy listener.
type Config struct {
	// Listen is the proxy's address. Keep it on loopback in a pod: the
	// agent shares the network namespace.
	Listen string `yaml:"listen"`
	// Unrouted is UnroutedRefuse or UnroutedTunnel.
	Unrouted string `yaml:"unrouted"`
	// ConnectURL is the connect server's base URL; error responses that
	// need a human (grant_missing, reconnect_required) point there.
	ConnectURL string `yaml:"connect_url"`
	// Upstream configures connections to APIs.
	Upstream UpstreamConfig `yaml:"upstream"`
	// ScrubResponses replaces the injected token, and the other secrets of
	// its grant, wherever they appear in a routed response before it
	// reaches the agent (docs/security.md). On by default; turning it off
	// trusts every routed API never to echo a credential.
	ScrubResponses bool `yaml:"scrub_responses"`
	// Limits bounds what one client can hold.
	Limits Limits `yaml:"limits"`
	// HTTP2 configures HTTP/2 between the agent and the sidecar inside
	// intercepted tunnels (Upstream.HTTP2 is the sidecar-to-API side).
	HTTP2 AgentHTTP2 `yaml:"http2"`
	// WebSocket bounds WebSocket connections on routes that allow them.
	WebSocket WebSocketConfig `yaml:"websocket"`
}

// AgentHTTP2 configures HTTP/2 from agents inside intercepted tunnels.
// Every stream is one pass through the pipeline, bound to the tunnel's
// target like an HTTP/1.1 request; the header list is bounded by
// limits.max_header_bytes and limits.max_header_count.
type AgentHTTP2 struct {
	// Enabled offers h2 by ALPN on intercepted tunnels. On by default:
	// gRPC clients and many SDKs speak only HTTP/2, and the others still
	// pick http/1.1.
	Enabled bool `yaml:"enabled"`
	// MaxConcurrentStreams bounds the streams one connection has open at
	// once (SETTINGS_MAX_CONCURRENT_STREAMS). Further streams wait.
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
	// MaxResets is how many streams a client may reset within ten
	// seconds before the sidecar closes the connection (the rapid-reset
	// attack, CVE-2023-44487: each reset stream has cost a pipeline pass).
	MaxResets int `yaml:"max_resets"`
}

// WebSocketConfig bounds relayed WebSocket connections.
type WebSocketConfig struct {
	// MaxLifetime closes a WebSocket connection this long after it opened:
	// the decision that allowed it is not taken again while it lasts.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// IdleTimeout closes a WebSocket connection on which nothing moved
	// either way for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RevocationCheck is how often an open WebSocket checks (through the
	// token cache) that the grant it was opened with still exists; one
	// whose grant was revoked or needs reconnecting is closed.
	RevocationCheck time.Duration `yaml:"revocation_check"`
}

// UpstreamConfig configures the outbound transport.
type UpstreamConfig struct {
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string `yaml:"ca_file"`
	// DialTimeout bounds connection set-up to an upstream.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// TLSHandshakeTimeout bounds the upstream TLS handshake.
	TLSHandshakeTimeout time.Duration `yaml:"tls_handshake_timeout"`
	// ResponseHeaderTimeout bounds the wait for response headers after the
	// request is sent.
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	// IdleConnTimeout closes pooled upstream connections left unused.
	IdleConnTimeout time.Duration `yaml:"idle_conn_timeout"`
	// MaxIdleConnsPerHost sizes the keep-alive pool per upstream.
	MaxIdleConnsPerHost int `yaml:"max_idle_conns_per_host"`
	// Pool is PoolShared or PoolPerUser (docs/design.md says which to
	// choose).
	Pool string `yaml:"pool"`
	// MaxResponseHeaderBytes bounds an upstream response's status line and
	// header section (and those of each informational response before
	// it). A larger one is refused with 502 upstream_invalid after reading
	// at most about this much.
	MaxResponseHeaderBytes int `yaml:"max_response_header_bytes"`
	// HTTP2 lets upstream connections use HTTP/2 when the API offers it.
	// Off by default: every API speaks HTTP/1.1, and HTTP/1.1 costs the
	// sidecar less CPU per request (no framing, flow-control frames or
	// extra goroutine hand-offs); turn it on for APIs that limit
	// connections.
	HTTP2 bool `yaml:"http2"`
}

// Limits bounds client connections (docs/security.md, invariant 12).
type Limits struct {
	// MaxHeaderBytes bounds a request head (request line and headers).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxHeaderCount bounds the number of header fields in a request.
	MaxHeaderCount int `yaml:"max_header_count"`
	// ReadHeaderTimeout bounds the time to receive a request head once its
	// first byte has arrived (slowloris).
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// HandshakeTimeout bounds the TLS handshake with the client inside an
	// intercepted tunnel.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes a client connection or blind tunnel on which
	// nothing has been read for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConns bounds concurrent client connections; further connections
	// wait in the kernel's accept queue.
	MaxConns int `yaml:"max_conns"`
}

// Defaults. Each is a compromise between real agent traffic (slow LLM-driven
// clients, long-polling APIs) and what an abusive client may hold.
const (
	// defaultMaxHeaderBytes matches common servers (nginx large buffers,
	// Go's 1 MB is far more than any API needs).
	defaultMaxHeaderBytes = 64 << 10
	// defaultMaxHeaderCount: real API requests carry 10-30 fields.
	defaultMaxHeaderCount = 100
	// defaultReadHeaderTimeout: a whole head arrives in one or two packets;
	// ten seconds covers congested links but not a slowloris.
	defaultReadHeaderTimeout = 10 * time.Second
	// defaultHandshakeTimeout mirrors Go's TLS client default.
	defaultHandshakeTimeout = 10 * time.Second
	// defaultIdleTimeout matches net/http.Transport's keep-alive default,
	// so clients usually close idle connections first.
	defaultIdleTimeout = 90 * time.Second
	// defaultMaxConns allows many concurrent agent calls while bounding
	// file descriptors well under common ulimits.
	defaultMaxConns = 1024
	// defaultDialTimeout: loopback-to-internet connects take well under a
	// second; a dead address should fail fast.
	defaultDialTimeout = 10 * time.Second
	// defaultResponseHeaderTimeout: APIs answering slower than this are
	// broken; streaming bodies are not bounded by it.
	defaultResponseHeaderTimeout = 60 * time.Second
	// defaultMaxResponseHeaderBytes: API response heads are a few KiB;
	// 1 MiB leaves room for large cookies and link headers while bounding
	// what one response can make the sidecar hold.
	defaultMaxResponseHeaderBytes = 1 << 20
	// defaultMaxIdleConnsPerHost: an agent talks to few hosts, often in
	// parallel; Go's default of 2 would force new handshakes.
	defaultMaxIdleConnsPerHost = 64
	// defaultMaxConcurrentStreams: nginx's default (128) is of the same
	// order; an agent rarely has more calls in flight to one host, and
	// each stream may hold a pipeline pass.
	defaultMaxConcurrentStreams = 100
	// defaultMaxResets: a client cancelling calls now and then resets a
	// few streams; 200 within ten seconds is an attack, not a client.
	defaultMaxResets = 200
	// defaultWebSocketLifetime: realtime sessions (model APIs, chat
	// sockets) last minutes and reconnect on close; an hour bounds how
	// long one decision is relied on.
	defaultWebSocketLifetime = time.Hour
	// defaultWebSocketIdle: WebSocket clients and servers ping every 20
	// to 60 seconds; five minutes of silence is a dead connection.
	defaultWebSocketIdle = 5 * time.Minute
	// defaultRevocationCheck matches the token cache's default TTL, the
	// bound on revocation for ordinary requests; each check is a cache
	// lookup.
	defaultRevocationCheck = 10 * time.Second
)

// DefaultConfig returns the proxy defaults.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:8080",
		Unrouted:       UnroutedRefuse,
		ScrubResponses: true,
		Upstream: UpstreamConfig{
			DialTimeout:            defaultDialTimeout,
			TLSHandshakeTimeout:    defaultHandshakeTimeout,
			ResponseHeaderTimeout:  defaultResponseHeaderTimeout,
			IdleConnTimeout:        defaultIdleTimeout,
			MaxIdleConnsPerHost:    defaultMaxIdleConnsPerHost,
			MaxResponseHeaderBytes: defaultMaxResponseHeaderBytes,
			Pool:                   PoolShared,
		},
		Limits: Limits{
			MaxHeaderBytes:    defaultMaxHeaderBytes,
			MaxHeaderCount:    defaultMaxHeaderCount,
			ReadHeaderTimeout: defaultReadHeaderTimeout,
			HandshakeTimeout:  defaultHandshakeTimeout,
			IdleTimeout:       defaultIdleTimeout,
			MaxConns:          defaultMaxConns,
		},
		HTTP2: AgentHTTP2{
			Enabled:              true,
			MaxConcurrentStreams: defaultMaxConcurrentStreams,
			MaxResets:            defaultMaxResets,
		},
		WebSocket: WebSocketConfig{
			MaxLifetime:     defaultWebSocketLifetime,
			IdleTimeout:     defaultWebSocketIdle,
			RevocationCheck: defaultRevocationCheck,
		},
	}
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var p config.Problems
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.Addf("listen", "must be host:port, got %q", c.Listen)
	}
	if c.Unrouted != UnroutedRefuse && c.Unrouted != UnroutedTunnel {
		p.Addf("unrouted", "must be %q or %q, got %q", UnroutedRefuse, UnroutedTunnel, c.Unrouted)
	}
	if c.ConnectURL != "" {
		if u, err := url.Parse(c.ConnectURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			p.Addf("connect_url", "must be an absolute http(s) URL, got %q", c.ConnectURL)
		}
	}
	if c.Upstream.CAFile != "" {
		if _, err := os.Stat(c.Upstream.CAFile); err != nil {
			p.Addf("upstream.ca_file", "cannot read: %v", err)
		}
	}
	positive := func(path string, d time.Duration) {
		if d <= 0 {
			p.Addf(path, "must be positive")
		}
	}
	positive("upstream.dial_timeout", c.Upstream.DialTimeout)
	positive("upstream.tls_handshake_timeout", c.Upstream.TLSHandshakeTimeout)
	positive("upstream.response_header_timeout", c.Upstream.ResponseHeaderTimeout)
	positive("upstream.idle_conn_timeout", c.Upstream.IdleConnTimeout)
	positive("limits.read_header_timeout", c.Limits.ReadHeaderTimeout)
	positive("limits.handshake_timeout", c.Limits.HandshakeTimeout)
	positive("limits.idle_timeout", c.Limits.IdleTimeout)
	positive("websocket.max_lifetime", c.WebSocket.MaxLifetime)
	positive("websocket.idle_timeout", c.WebSocket.IdleTimeout)
	positive("websocket.revocation_check", c.WebSocket.RevocationCheck)
	if c.HTTP2.MaxConcurrentStreams < 1 || c.HTTP2.MaxConcurrentStreams > 1000 {
		p.Addf("http2.max_concurrent_streams", "must be between 1 and 1000")
	}
	if c.HTTP2.MaxResets < 1 {
		p.Addf("http2.max_resets", "must be at least 1")
	}
	if c.Upstream.MaxIdleConnsPerHost < 1 {
		p.Addf("upstream.max_idle_conns_per_host", "must be at least 1")
	}
	if c.Upstream.Pool != PoolShared && c.Upstream.Pool != PoolPerUser {
		p.Addf("upstream.pool", "must be %q or %q, got %q", PoolShared, PoolPerUser, c.Upstream.Pool)
	}
	if c.Upstream.MaxResponseHeaderBytes < 4096 || c.Upstream.MaxResponseHeaderBytes > 64<<20 {
		p.Addf("upstream.max_response_header_bytes", "must be between 4096 and 67108864")
	}
	if c.Limits.MaxHeaderBytes < 4096 || c.Limits.MaxHeaderBytes > 1<<20 {
		p.Addf("limits.max_header_bytes", "must be between 4096 and 1048576")
	}
	if c.Limits.MaxHeaderCount < 16 || c.Limits.MaxHeaderCount > 1000 {
		p.Addf("limits.max_header_count", "must be between 16 and 1000")
	}
	if c.Limits.MaxConns < 1 {
		p.Addf("limits.max_conns", "must be at least 1")
	}
	return p.Err()
}
