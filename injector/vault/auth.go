package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
)

// Login and token lifetime limits.
const (
	// loginBackoffMin and loginBackoffMax bound the wait between failed
	// logins; the wait doubles (loginBackoffFactor) from the minimum and is
	// jittered by ±loginBackoffJitter so that a fleet of sidecars does not
	// hammer a recovering Vault in lock step. The maximum is short enough
	// that a sidecar recovers within seconds of Vault's return.
	loginBackoffMin    = 250 * time.Millisecond
	loginBackoffMax    = 15 * time.Second
	loginBackoffFactor = 2
	loginBackoffJitter = 0.25
	// reloginMinInterval is the least time between a login and a re-login
	// forced by a 403: a 403 right after a fresh login means the policy
	// denies the path, and logging in again would not help (it would only
	// turn every denied request into a login).
	reloginMinInterval = 2 * time.Second
	// maxCredentialBytes bounds a token, secret id or service-account
	// token file; real ones are well under 4 KiB.
	maxCredentialBytes = 64 << 10
)

// loginResult is a Vault token with what the lifetime watcher needs.
type loginResult struct {
	token     string
	ttl       time.Duration // 0: the token never expires
	renewable bool
}

// tokenState is one login: an API client sending its token, and a channel
// closed when a newer login replaces it.
type tokenState struct {
	client  *api.Client
	gen     uint64
	changed chan struct{}
}

// session logs in, keeps the token alive with the API's lifetime watcher and
// logs in again when renewal ends or a request is denied, all in one
// background goroutine stopped by close.
type session struct {
	cfg  Config
	hc   *http.Client
	anon *api.Client // no token: login calls
	log  *zap.Logger

	mu        sync.Mutex
	cur       *tokenState
	lastLogin time.Time
	loginErr  error // last login failure, nil after a success

	relogin chan struct{} // buffered 1: a re-login request
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	// Counters, for operators (logs) and tests.
	logins   atomic.Int64
	renewals atomic.Int64
}

// newSession prepares a session; start performs the first login.
func newSession(cfg Config, hc *http.Client, log *zap.Logger) (*session, error) {
	anon, err := newAPIClient(hc, cfg, "")
	if err != nil {
		return nil, err
	}
	return &session{
		cfg:     cfg,
		hc:      hc,
		anon:    anon,
		log:     log,
		relogin: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}, nil
}

// start logs in once (bounded by ctx and the configured timeout) and
// starts the background goroutine that keeps the token alive.
func (s *session) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	res, err := s.login(ctx)
	if err != nil {
		return err
	}
	if err := s.install(res); err != nil {
		return err
	}
	s.log.Info("vault login", zap.String("method", s.cfg.Auth.Method),
		zap.Duration("ttl", res.ttl), zap.Bool("renewable", res.renewable))
	go s.run(res)
	return nil
}

// current returns the current login.
func (s *session) current() *tokenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// install makes res the current login.
func (s *session) install(res *loginResult) error {
	c, err := newAPIClient(s.hc, s.cfg, res.token)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &tokenState{client: c, changed: make(chan struct{})}
	if s.cur != nil {
		st.gen = s.cur.gen + 1
		close(s.cur.changed)
	}
	s.cur = st
	s.lastLogin = time.Now()
	s.loginErr = nil
	s.logins.Add(1)
	return nil
}

// invalidate asks for a re-login because a request made with login gen was
// denied. It reports whether the caller should wait for a newer login and
// retry: true when one already replaced gen or a re-login was requested,
// false when gen is fresh (the denial is the policy's, not the token's).
func (s *session) invalidate(gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.gen != gen {
		return true
	}
	// Right after a login the denial is the policy's; while logins fail
	// (and back off) no new token will come within this request's time.
	if time.Since(s.lastLogin) < reloginMinInterval || s.loginErr != nil {
		return false
	}
	select {
	case s.relogin <- struct{}{}:
	default:
	}
	return true
}

// status returns the last login failure (nil when the last login
// succeeded).
func (s *session) status() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loginErr
}

// close stops the background goroutine and waits for it.
func (s *session) close() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// run keeps res alive, then logs in again whenever renewal ends or a
// re-login is requested, backing off after failures, until close.
func (s *session) run(res *loginResult) {
	defer close(s.done)
	backoff := loginBackoffMin
	for {
		if res != nil {
			if s.keepAlive(res) {
				return
			}
			res = nil
			// At most one login per reloginMinInterval: a token file that
			// still holds an almost expired token would otherwise be
			// "logged in" with again and again until it expires.
			if !s.sleep(time.Until(s.lastLoginTime().Add(reloginMinInterval))) {
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		r, err := s.login(ctx)
		if err == nil {
			err = s.install(r)
		}
		cancel()
		if err == nil {
			// A re-login asked for before this one is now satisfied.
			select {
			case <-s.relogin:
			default:
			}
			s.log.Info("vault login", zap.String("method", s.cfg.Auth.Method),
				zap.Duration("ttl", r.ttl), zap.Bool("renewable", r.renewable))
			res, backoff = r, loginBackoffMin
			continue
		}
		s.mu.Lock()
		s.loginErr = err
		s.mu.Unlock()
		wait := jitter(backoff)
		s.log.Warn("vault login failed", zap.String("method", s.cfg.Auth.Method),
			zap.Error(err), zap.Duration("retry_in", wait))
		backoff = min(backoff*loginBackoffFactor, loginBackoffMax)
		if !s.sleep(wait) {
			return
		}
	}
}

// sleep waits for d (nothing when d <= 0) and reports false if the session
// stopped meanwhile.
func (s *session) sleep(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-s.stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.stop:
		return false
	case <-t.C:
		return true
	}
}

// lastLoginTime returns when the current token was obtained.
func (s *session) lastLoginTime() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastLogin
}

// jitter spreads d by ±loginBackoffJitter.
func jitter(d time.Duration) time.Duration {
	f := 1 + loginBackoffJitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// keepAlive renews res with a lifetime watcher (when it expires at all)
// until renewal ends, a re-login is requested or the session stops. It
// reports whether the session stopped.
func (s *session) keepAlive(res *loginResult) (stopped bool) {
	var (
		doneCh  <-chan error
		renewCh <-chan *api.RenewOutput
		stopW   = func() {}
	)
	if res.ttl > 0 {
		w, err := s.current().client.NewLifetimeWatcher(&api.LifetimeWatcherInput{
			Secret: &api.Secret{Auth: &api.SecretAuth{
				ClientToken:   res.token,
				Renewable:     res.renewable,
				LeaseDuration: int(res.ttl / time.Second),
			}},
		})
		if err != nil {
			s.log.Error("vault token lifetime watcher", zap.Error(err))
		} else {
			exited := make(chan struct{})
			go func() {
				defer close(exited)
				w.Start()
			}()
			doneCh, renewCh = w.DoneCh(), w.RenewCh()
			stopW = func() { w.Stop(); <-exited }
		}
	}
	defer stopW()
	for {
		select {
		case <-s.stop:
			return true
		case r := <-renewCh:
			s.renewals.Add(1)
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				s.log.Debug("vault token renewed", zap.Int("ttl_seconds", r.Secret.Auth.LeaseDuration))
			}
		case err := <-doneCh:
			// The watcher ends when the token reaches its maximum TTL or
			// renewal keeps failing until expiry; either way a new login
			// is due.
			if err != nil {
				s.log.Info("vault token renewal ended", zap.Error(err))
			} else {
				s.log.Info("vault token renewal ended")
			}
			return false
		case <-s.relogin:
			s.log.Info("vault request denied; logging in again")
			return false
		}
	}
}

// login obtains a token with the configured method, reading the credential
// file anew each time.
func (s *session) login(ctx context.Context) (*loginResult, error) {
	a := s.cfg.Auth
	switch a.Method {
	case AuthToken:
		tok, err := readCredential(a.TokenFile, "token_file")
		if err != nil {
			return nil, fmt.Errorf("vault login (token): %w", err)
		}
		return s.lookupSelf(ctx, tok)
	case AuthAppRole:
		sid, err := readCredential(a.SecretIDFile, "secret_id_file")
		if err != nil {
			return nil, fmt.Errorf("vault login (approle): %w", err)
		}
		res, err := s.loginWith(ctx, "auth/"+a.AppRoleMount+"/login", map[string]string{"role_id": a.RoleID, "secret_id": sid})
		if err != nil {
			return nil, fmt.Errorf("vault login (approle): %w", err)
		}
		return res, nil
	case AuthKubernetes:
		jwt, err := readCredential(a.KubernetesTokenFile, "kubernetes_token_file")
		if err != nil {
			return nil, fmt.Errorf("vault login (kubernetes): %w", err)
		}
		res, err := s.loginWith(ctx, "auth/"+a.KubernetesMount+"/login", map[string]string{"role": a.KubernetesRole, "jwt": jwt})
		if err != nil {
			return nil, fmt.Errorf("vault login (kubernetes): %w", err)
		}
		return res, nil
	}
	return nil, fmt.Errorf("vault login: unknown method %q", a.Method)
}

// authResponse is the auth block of a login response.
type authResponse struct {
	Auth *struct {
		ClientToken   string `json:"client_token"`
		LeaseDuration int64  `json:"lease_duration"`
		Renewable     bool   `json:"renewable"`
	} `json:"auth"`
}

// loginWith posts body to a login path.
func (s *session) loginWith(ctx context.Context, path string, body any) (*loginResult, error) {
	var out authResponse
	if _, err := request(ctx, s.anon, http.MethodPut, path, body, &out); err != nil {
		return nil, err
	}
	if out.Auth == nil || out.Auth.ClientToken == "" {
		return nil, errors.New("login response carries no token")
	}
	return &loginResult{
		token:     out.Auth.ClientToken,
		ttl:       time.Duration(out.Auth.LeaseDuration) * time.Second,
		renewable: out.Auth.Renewable,
	}, nil
}

// lookupSelf checks tok and learns its TTL and renewability.
func (s *session) lookupSelf(ctx context.Context, tok string) (*loginResult, error) {
	c, err := newAPIClient(s.hc, s.cfg, tok)
	if err != nil {
		return nil, err
	}
	var out struct {
		Data struct {
			TTL        json.Number `json:"ttl"`
			ExpireTime *time.Time  `json:"expire_time"`
			Renewable  bool        `json:"renewable"`
		} `json:"data"`
	}
	if _, err := request(ctx, c, http.MethodGet, "auth/token/lookup-self", nil, &out); err != nil {
		return nil, fmt.Errorf("vault login (token): look up token: %w", err)
	}
	// ttl is whole seconds and 0 both for a token that never expires and
	// for one in its last second; expire_time tells them apart.
	secs, _ := out.Data.TTL.Int64()
	ttl := time.Duration(secs) * time.Second
	if out.Data.ExpireTime != nil {
		if ttl = time.Until(*out.Data.ExpireTime); ttl < time.Second {
			return nil, errors.New("vault login (token): the token in token_file has expired or is about to")
		}
	}
	return &loginResult{token: tok, ttl: ttl, renewable: out.Data.Renewable}, nil
}

// readCredential reads a credential file, bounded and trimmed. Errors name
// the file and the key, never the content.
func readCredential(path, key string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s %s: %w", key, path, err)
	}
	if len(b) > maxCredentialBytes {
		return "", fmt.Errorf("%s %s: larger than %d bytes", key, path, maxCredentialBytes)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s %s is empty", key, path)
	}
	if strings.ContainsAny(v, "\r\n\x00") {
		return "", fmt.Errorf("%s %s: must hold one line", key, path)
	}
	return v, nil
}
