// Package outbound builds every HTTP client and transport with which
// onbehalf calls out: the proxy's upstream transport, token, revocation and
// account endpoints, Vault, JWKS, policy bundles, the tracing exporter and
// the connect server's identity provider.
//
// Each of them gets the same guarantees from one constructor: TLS verified
// against the system roots plus an optional extra CA bundle (never
// InsecureSkipVerify), TLS 1.2 at least, no proxy taken from the environment
// (HTTPS_PROXY in a sidecar's environment may point at the sidecar itself,
// and a proxy would see every token), a bounded dial, TLS handshake and
// idle period, and, where a destination is chosen by the agent, a dial
// function supplied by the caller (the egress guard). Call sites differ only
// in the values of Options, chosen and commented where they are built.
//
// Transport, Client and Roots may be called concurrently; what they return
// is safe for concurrent use, as net/http's clients and transports are.
package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Defaults of Options, each the value most call sites need.
const (
	// DefaultDialTimeout bounds a TCP connect. A service reachable at all
	// connects in milliseconds; 5 s still covers two SYN retransmissions
	// (at 1 s and 3 s) on a lossy path, and an unroutable address fails
	// well within any caller's own deadline.
	DefaultDialTimeout = 5 * time.Second
	// DefaultTLSHandshakeTimeout bounds the TLS handshake, for the same
	// reason: a server that accepts but never answers must not hold a
	// connection (and its caller) for longer than a failed connect would.
	DefaultTLSHandshakeTimeout = 5 * time.Second
	// DefaultIdleConnTimeout closes pooled connections left unused. It is
	// net/http's default and shorter than most servers' keep-alive, so a
	// request rarely meets a connection the server is closing.
	DefaultIdleConnTimeout = 90 * time.Second
	// DefaultExpectContinueTimeout is how long a request with
	// "Expect: 100-continue" waits before sending its body anyway;
	// net/http's default.
	DefaultExpectContinueTimeout = time.Second
	// DefaultMaxRedirects is how many redirects FollowRedirects callers
	// usually allow: net/http's own limit.
	DefaultMaxRedirects = 10

	// keepAlive is the TCP keep-alive period of connections dialled by
	// the default dialer: net/http's default, which notices a dead peer
	// on a pooled connection within a few minutes.
	keepAlive = 30 * time.Second
)

// DialFunc opens a network connection, like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Options configures a transport or client. Start from DefaultOptions and
// change what the call site needs; Transport and Client refuse options that
// fail Validate, so a site cannot leave a phase unbounded by accident.
type Options struct {
	// Roots are the certificate authorities trusted for servers. Nil
	// means the system roots. The pool is copied, never modified.
	Roots *x509.CertPool
	// CAFile is a PEM bundle trusted in addition to Roots (or the system
	// roots). Empty adds nothing.
	CAFile string
	// CAFileKey names CAFile in errors: the configuration key it came
	// from ("vault.ca_file"). Empty means "ca file".
	CAFileKey string

	// Dial, when set, opens every connection in place of the default
	// dialer (a net.Dialer with DialTimeout and TCP keep-alive). Pass the
	// egress guard's DialContext where the agent chooses the destination.
	// DialTimeout bounds each call either way.
	Dial DialFunc

	// DialTimeout bounds connecting, name resolution included. Required.
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake. Required.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response head once the
	// request is written. Zero means no bound of its own (Timeout, or the
	// request's context, then bounds it).
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout closes pooled connections left unused. Required.
	IdleConnTimeout time.Duration
	// ExpectContinueTimeout is how long a request with "Expect:
	// 100-continue" waits for the server before sending its body. Zero
	// sends the body at once.
	ExpectContinueTimeout time.Duration

	// MaxIdleConns bounds the pooled idle connections over all hosts; zero
	// means no bound.
	MaxIdleConns int
	// MaxIdleConnsPerHost bounds the pooled idle connections per host;
	// zero means net/http's default of 2.
	MaxIdleConnsPerHost int
	// HTTP2 lets connections use HTTP/2 when the server offers it; false
	// keeps them on HTTP/1.1.
	HTTP2 bool
	// DisableCompression stops the transport from asking for gzip and
	// decoding it, so a response body is passed on as the server sent it.
	DisableCompression bool

	// Timeout bounds a whole exchange, response body included (Client
	// only). Zero means no bound beyond the request's context.
	Timeout time.Duration
	// CheckRedirect decides about redirects (Client only), as
	// http.Client.CheckRedirect does. Nil refuses every redirect: the
	// response is returned as is (see RefuseRedirect). Use
	// FollowRedirects where a server may legitimately move a document.
	CheckRedirect func(req *http.Request, via []*http.Request) error
}

// DefaultOptions returns options with the default timeouts, system roots,
// the default dialer, HTTP/2 allowed and redirects refused.
func DefaultOptions() Options {
	return Options{
		DialTimeout:           DefaultDialTimeout,
		TLSHandshakeTimeout:   DefaultTLSHandshakeTimeout,
		IdleConnTimeout:       DefaultIdleConnTimeout,
		ExpectContinueTimeout: DefaultExpectContinueTimeout,
		HTTP2:                 true,
	}
}

// Validate reports every problem in o, each with the name of its field.
func (o Options) Validate() error {
	var p config.Problems
	required := func(name string, d time.Duration) {
		if d <= 0 {
			p.Addf(name, "must be positive")
		}
	}
	nonNegative := func(name string, d time.Duration) {
		if d < 0 {
			p.Addf(name, "must not be negative")
		}
	}
	required("DialTimeout", o.DialTimeout)
	required("TLSHandshakeTimeout", o.TLSHandshakeTimeout)
	required("IdleConnTimeout", o.IdleConnTimeout)
	nonNegative("ResponseHeaderTimeout", o.ResponseHeaderTimeout)
	nonNegative("ExpectContinueTimeout", o.ExpectContinueTimeout)
	nonNegative("Timeout", o.Timeout)
	if o.MaxIdleConns < 0 {
		p.Addf("MaxIdleConns", "must not be negative")
	}
	if o.MaxIdleConnsPerHost < 0 {
		p.Addf("MaxIdleConnsPerHost", "must not be negative")
	}
	return p.Err()
}

// Transport returns the transport o describes. The client-level fields
// (Timeout, CheckRedirect) are not used. Its TLSClientConfig and DialContext
// may be reused by a hand-made client (the proxy's HTTP/1.1 upstream client
// does) to keep the same trust and dialing.
func Transport(o Options) (*http.Transport, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("outbound options: %w", err)
	}
	roots, err := Roots(o.Roots, o.CAFile, o.CAFileKey)
	if err != nil {
		return nil, err
	}
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: keepAlive}).DialContext
	} else {
		guarded, timeout := o.Dial, o.DialTimeout
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return guarded(ctx, network, addr)
		}
	}
	return &http.Transport{
		// Never a proxy from the environment: the sidecar's own
		// HTTPS_PROXY may point at itself, and a proxy would see tokens.
		Proxy:       nil,
		DialContext: dial,
		// RootCAs is always set, so verification never falls back to
		// anything else; InsecureSkipVerify is never set.
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   o.TLSHandshakeTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		IdleConnTimeout:       o.IdleConnTimeout,
		ExpectContinueTimeout: o.ExpectContinueTimeout,
		MaxIdleConns:          o.MaxIdleConns,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		// With a custom dialer and TLS config net/http speaks HTTP/1.1
		// only, unless asked to try HTTP/2.
		ForceAttemptHTTP2:  o.HTTP2,
		DisableCompression: o.DisableCompression,
	}, nil
}

// Client returns a client over Transport(o) with o.Timeout and
// o.CheckRedirect (nil: redirects refused).
func Client(o Options) (*http.Client, error) {
	tr, err := Transport(o)
	if err != nil {
		return nil, err
	}
	check := o.CheckRedirect
	if check == nil {
		check = RefuseRedirect
	}
	return &http.Client{Transport: tr, Timeout: o.Timeout, CheckRedirect: check}, nil
}

// RefuseRedirect is a CheckRedirect that returns a redirect response as is
// instead of following it: a request carrying a credential must reach
// exactly the configured endpoint, and the caller then fails on the 3xx
// status.
func RefuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// FollowRedirects returns a CheckRedirect that follows at most limit
// redirects: net/http's own behaviour when limit is DefaultMaxRedirects.
func FollowRedirects(limit int) func(*http.Request, []*http.Request) error {
	return func(_ *http.Request, via []*http.Request) error {
		if len(via) >= limit {
			return fmt.Errorf("stopped after %d redirects", limit)
		}
		return nil
	}
}

// Roots returns the certificate pool trusted for servers: a copy of base
// (nil: the system roots) plus the PEM certificates in caFile (none when
// empty), which errors name by key (empty: "ca file"). A failure to load
// the system roots is an error, never an empty pool: a process that
// silently trusted nothing, or only a private CA, would fail every call
// later with a misleading message.
func Roots(base *x509.CertPool, caFile, key string) (*x509.CertPool, error) {
	var pool *x509.CertPool
	if base != nil {
		pool = base.Clone()
	} else {
		sys, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("load system roots: %w", err)
		}
		pool = sys
	}
	if caFile == "" {
		return pool, nil
	}
	if key == "" {
		key = "ca file"
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: %w", key, caFile, ErrNoCertificates)
	}
	return pool, nil
}

// ErrNoCertificates means a CA file holds no PEM certificate.
var ErrNoCertificates = errors.New("no PEM certificates found")
