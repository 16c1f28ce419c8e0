package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// Transport limits of the Vault client.
const (
	// dialTimeout bounds connecting to Vault; a refused or unroutable
	// address fails well within an operation's timeout.
	dialTimeout = 3 * time.Second
	// tlsHandshakeTimeout bounds the TLS handshake for the same reason.
	tlsHandshakeTimeout = 3 * time.Second
	// maxIdleConnsPerHost keeps enough warm connections for a burst of
	// concurrent grant reads (the default of 2 would redial under load).
	maxIdleConnsPerHost = 64
	// maxResponseBytes bounds a Vault response body read into memory; a
	// grant or a list of a few thousand keys is far below it.
	maxResponseBytes = 8 << 20
	// maxErrorText bounds the Vault error text quoted in an error, so an
	// HTML page from a misrouted proxy does not flood the logs.
	maxErrorText = 200
)

// errPermissionDenied marks a 403 from Vault: the token is invalid, expired
// or lacks the capability. Operations re-login once on it.
var errPermissionDenied = errors.New("permission denied")

// newHTTPClient builds the HTTP client every Vault call goes through (see
// package outbound). It never uses a proxy from the environment (the
// sidecar's own HTTPS_PROXY may point at itself, and a proxy would see the
// Vault token), trusts the system roots plus cfg.CAFile, never follows
// redirects (one could carry the token to another host) and bounds every
// phase. Vault's address is the operator's, so the egress guard is not
// applied. With several addresses (a cluster's nodes), requests go through
// failover, which moves to another node when one is down, sealed or
// redirecting.
func newHTTPClient(cfg Config, log *zap.Logger) (*http.Client, error) {
	o := outbound.DefaultOptions()
	o.CAFile, o.CAFileKey = cfg.CAFile, "ca_file"
	o.DialTimeout = dialTimeout
	o.TLSHandshakeTimeout = tlsHandshakeTimeout
	o.ResponseHeaderTimeout = cfg.Timeout
	o.MaxIdleConnsPerHost = maxIdleConnsPerHost
	// A backstop: each operation's context already carries the timeout.
	o.Timeout = cfg.Timeout
	o.CheckRedirect = outbound.RefuseRedirect
	hc, err := outbound.Client(o)
	if err != nil {
		return nil, err
	}
	if addrs := cfg.Endpoints(); len(addrs) > 1 {
		f, err := newFailover(hc.Transport, addrs, log)
		if err != nil {
			return nil, err
		}
		hc.Transport = f
	}
	return hc, nil
}

// newAPIClient builds a Vault API client over hc that sends token ("" for
// none). It never reads VAULT_* environment variables: the api.Config is
// filled here (api.DefaultConfig would read them), and what api.NewClient
// still copies from the environment (VAULT_TOKEN, VAULT_NAMESPACE,
// VAULT_HEADERS) is reset. Client.Clone is not used for the same reason: it
// calls api.NewClient again and drops DisableRedirects.
func newAPIClient(hc *http.Client, cfg Config, token string) (*api.Client, error) {
	ac := &api.Config{
		Address:    strings.TrimSuffix(cfg.Endpoints()[0], "/"),
		HttpClient: hc,
		// Zero on purpose: with a Timeout, Logical().WriteRawWithContext
		// cancels its context when it returns, before the caller has read
		// the body (a long Transit answer then fails with "context
		// canceled"). Every operation's context carries the timeout, and
		// hc.Timeout bounds the calls the API makes on its own (renewals).
		Timeout: 0,
		// No retries inside the client: the operation's timeout is the
		// budget, and the refresh logic above decides what to retry.
		MaxRetries:       0,
		MinRetryWait:     100 * time.Millisecond,
		MaxRetryWait:     time.Second,
		DisableRedirects: true,
	}
	c, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.ClearNamespace()
	c.SetHeaders(http.Header{api.RequestHeaderName: []string{"true"}})
	if token == "" {
		c.ClearToken()
	} else {
		c.SetToken(token)
	}
	return c, nil
}

// request performs one Vault request with c (which carries the token) and
// decodes a JSON response body into out (when out is not nil and the body is
// not empty). It returns the HTTP status (0 when no response arrived) and an
// error classified by classify. LIST is sent as GET with list=true.
func request(ctx context.Context, c *api.Client, method, path string, body, out any) (int, error) {
	var (
		resp *api.Response
		err  error
	)
	l := c.Logical()
	switch method {
	case http.MethodGet:
		resp, err = l.ReadRawWithContext(ctx, path)
	case "LIST":
		resp, err = l.ReadRawWithDataWithContext(ctx, path, map[string][]string{"list": {"true"}})
	case http.MethodDelete:
		resp, err = l.DeleteRawWithContext(ctx, path)
	case http.MethodPut, http.MethodPost:
		var b []byte
		if body != nil {
			if b, err = json.Marshal(body); err != nil {
				return 0, fmt.Errorf("encode request: %w", err)
			}
		}
		resp, err = l.WriteRawWithContext(ctx, path, b)
	default:
		return 0, fmt.Errorf("unsupported method %s", method)
	}
	status := 0
	if resp != nil {
		status = resp.StatusCode
		defer func() {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
			_ = resp.Body.Close()
		}()
	}
	if err != nil {
		// An error answer's body is still decoded for the caller: a 404
		// carries a deleted KV version's metadata, a Transit 400 the
		// per-item errors.
		if status >= 400 && out != nil {
			_ = decodeBody(resp.Body, out)
		}
		return status, classify(ctx, err)
	}
	if status >= 300 && status < 400 {
		// The API client treats a redirect as success. A Vault CE standby
		// answers 307 when it cannot forward to the active node; it is
		// never followed (see failover), and the operation fails.
		return status, fmt.Errorf("%w: vault answered %d: a standby that could not forward the request to the active node", store.ErrUnavailable, status)
	}
	if out != nil {
		if err := decodeBody(resp.Body, out); err != nil {
			return status, fmt.Errorf("%w: decode vault response: %w", store.ErrUnavailable, err)
		}
	}
	return status, nil
}

// decodeBody decodes a JSON body into out; an empty body leaves out as is.
func decodeBody(r io.Reader, out any) error {
	b, err := io.ReadAll(io.LimitReader(r, maxResponseBytes))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return json.Unmarshal(b, out)
}

// statusError is Vault's answer to a failed request: the status and Vault's
// error messages, without the request URL or body.
type statusError struct {
	Status int
	Msgs   []string
}

func (e *statusError) Error() string {
	// Vault's messages may span lines ("2 errors occurred:\n\t* …"); one
	// line reads better in logs.
	msg := strings.Join(strings.Fields(strings.Join(e.Msgs, "; ")), " ")
	if len(msg) > maxErrorText {
		msg = msg[:maxErrorText] + "…"
	}
	if msg == "" {
		return fmt.Sprintf("vault answered %d", e.Status)
	}
	return fmt.Sprintf("vault answered %d: %s", e.Status, msg)
}

// has reports whether one of Vault's messages contains s.
func (e *statusError) has(s string) bool {
	for _, m := range e.Msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// classify maps an error from the API client to this package's errors:
//   - the caller's context ended: its error (context.Canceled or
//     DeadlineExceeded) unchanged in the chain;
//   - 403: errPermissionDenied (and ErrUnavailable);
//   - 404: a *statusError the caller interprets;
//   - 400: a *statusError (CAS mismatch, bad input), also ErrUnavailable
//     unless the caller interprets it first;
//   - everything else (connection refused, timeouts, 5xx and 503 sealed,
//     429, unexpected answers): ErrUnavailable.
//
// The request URL is left out (it names Vault's address and store paths),
// and no token ever appears: tokens travel in headers and bodies only.
func classify(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
		return cerr
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		se := &statusError{Status: re.StatusCode, Msgs: re.Errors}
		switch {
		case re.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%w: %w: %w", store.ErrUnavailable, errPermissionDenied, se)
		case re.StatusCode == http.StatusNotFound, re.StatusCode == http.StatusBadRequest:
			return se
		default:
			return fmt.Errorf("%w: %w", store.ErrUnavailable, se)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return fmt.Errorf("%w: vault did not answer in time", store.ErrUnavailable)
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, transportError(err))
}

// transportError strips the method and URL that net/http wraps around a
// transport failure, keeping the cause (for example "dial tcp
// 127.0.0.1:8200: connect: connection refused").
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}
