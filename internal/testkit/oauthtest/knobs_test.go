package oauthtest

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

func TestFailNext(t *testing.T) {
	tests := []struct {
		status   int
		wantCode string
	}{
		{http.StatusServiceUnavailable, "temporarily_unavailable"},
		{http.StatusInternalServerError, "server_error"},
		{http.StatusBadGateway, "server_error"},
		{http.StatusTooManyRequests, "invalid_request"},
		{http.StatusUnauthorized, "invalid_client"},
		{http.StatusOK, "server_error"}, // not a failure status: becomes 500
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			s := newServer(t, testOptions())
			cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
			tok := issue(t, s, confID, "alice")
			s.FailNext(2, tt.status)
			for i := range 2 {
				_, err := refresh(s, cfg, tok.RefreshToken)
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) {
					t.Fatalf("refresh %d: error %v; want an OAuth error response", i, err)
				}
				wantStatus := tt.status
				if wantStatus == http.StatusOK {
					wantStatus = http.StatusInternalServerError
				}
				if re.Response.StatusCode != wantStatus || re.ErrorCode != tt.wantCode {
					t.Errorf("refresh %d: status %d code %q; want %d %q", i, re.Response.StatusCode, re.ErrorCode, wantStatus, tt.wantCode)
				}
			}
			// Failed requests were not processed: the refresh token is
			// still unused.
			if _, err := refresh(s, cfg, tok.RefreshToken); err != nil {
				t.Fatalf("refresh after the failures: %v", err)
			}
			if got := s.Stats(); got.TokenRequests != 3 || got.Refreshes != 1 || got.ReuseDetections != 0 {
				t.Errorf("Stats = %+v; want 3 token requests, 1 refresh, no reuse", got)
			}
		})
	}
}

func TestFailNextCleared(t *testing.T) {
	s := newServer(t, testOptions())
	tok := issue(t, s, confID, "alice")
	s.FailNext(5, http.StatusServiceUnavailable)
	s.FailNext(0, 0)
	if _, err := refresh(s, oauthConfig(s, confID, oauth2.AuthStyleInHeader), tok.RefreshToken); err != nil {
		t.Errorf("refresh after FailNext(0): %v", err)
	}
}

func TestDropNextResponses(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")
	// A first refresh puts a keep-alive connection in the client's pool, so
	// the dropped request below travels on a reused connection, where a
	// careless client might retry.
	tok, err := refresh(s, cfg, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}

	s.DropNextResponses(1)
	_, err = refresh(s, cfg, tok.RefreshToken)
	if err == nil {
		t.Fatalf("refresh with dropped response succeeded; want a transport error")
	}
	if got := errorCode(err); got != "" {
		t.Fatalf("dropped response: got OAuth error %q; want a transport error", got)
	}
	if got := s.Stats(); got.TokenRequests != 2 || got.Refreshes != 2 {
		t.Fatalf("Stats = %+v; want 2 token requests and 2 refreshes (the dropped one rotated)", got)
	}
	// The server rotated before dropping, so the client's token is now a
	// used one: trying it again is reuse, and the grant is gone.
	_, err = refresh(s, cfg, tok.RefreshToken)
	if got := errorCode(err); got != "invalid_grant" {
		t.Errorf("retry after dropped response: error %v; want invalid_grant", err)
	}
	if got := s.Stats().ReuseDetections; got != 1 {
		t.Errorf("ReuseDetections = %d; want 1", got)
	}
	// Only one response was dropped.
	fresh := issue(t, s, confID, "alice")
	if _, err := refresh(s, cfg, fresh.RefreshToken); err != nil {
		t.Errorf("refresh after the drop: %v", err)
	}
}

func TestDropNextResponsesOnError(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	s.DropNextResponses(1)
	_, err := refresh(s, cfg, "ory_rt_unknown.unknown")
	if err == nil || errorCode(err) != "" {
		t.Errorf("dropped error response: error %v; want a transport error", err)
	}
}

func TestLatency(t *testing.T) {
	const latency = 150 * time.Millisecond
	s := newServer(t, testOptions())
	tok := issue(t, s, confID, "alice")
	s.SetLatency(latency)

	endpoints := []struct {
		name string
		do   func() error
	}{
		{"token", func() error {
			next, err := refresh(s, oauthConfig(s, confID, oauth2.AuthStyleInHeader), tok.RefreshToken)
			if err == nil {
				tok = next
			}
			return err
		}},
		{"userinfo", func() error {
			req, _ := http.NewRequest(http.MethodGet, s.UserinfoURL(), nil)
			req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			resp, err := s.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
			return err
		}},
		{"revoke", func() error {
			status, _ := postForm(t, s, PathRevoke, url.Values{"token": {"nothing"}}, confID, confSecret)
			if status != http.StatusOK {
				return errors.New(http.StatusText(status))
			}
			return nil
		}},
	}
	for _, ep := range endpoints {
		t.Run(ep.name, func(t *testing.T) {
			start := time.Now()
			if err := ep.do(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < latency {
				t.Errorf("request took %v; want at least %v", d, latency)
			}
		})
	}
}

func TestLatencyClientGivesUp(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")
	s.SetLatency(5 * time.Second)

	ctx, cancel := context.WithTimeout(clientCtx(s), 100*time.Millisecond)
	defer cancel()
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
		t.Fatalf("refresh within 100ms against 5s latency succeeded")
	}
	s.SetLatency(0)
	// The abandoned request was never processed: the token is unused.
	if _, err := refresh(s, cfg, tok.RefreshToken); err != nil {
		t.Errorf("refresh after abandoned request: %v", err)
	}
	if got := s.Stats(); got.Refreshes != 1 || got.ReuseDetections != 0 {
		t.Errorf("Stats = %+v; want 1 refresh, no reuse", got)
	}
}

func TestSetInvalidClient(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")

	s.SetInvalidClient(true)
	_, err := refresh(s, cfg, tok.RefreshToken)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" || re.Response.StatusCode != http.StatusUnauthorized {
		t.Errorf("refresh: error %v; want 401 invalid_client", err)
	}
	if status, _ := postForm(t, s, PathRevoke, url.Values{"token": {tok.AccessToken}}, confID, confSecret); status != http.StatusUnauthorized {
		t.Errorf("revoke: status %d; want 401", status)
	}
	if _, _, active := s.Introspect(tok.AccessToken); !active {
		t.Errorf("access token inactive after refused revocation")
	}
	if got := s.Stats(); got.FailedAuth != 2 || got.Refreshes != 0 || got.Revocations != 0 {
		t.Errorf("Stats = %+v; want 2 failed auth, nothing else", got)
	}

	s.SetInvalidClient(false)
	if _, err := refresh(s, cfg, tok.RefreshToken); err != nil {
		t.Errorf("refresh after SetInvalidClient(false): %v", err)
	}
}

func TestCloseWithRequestInFlight(t *testing.T) {
	s, err := Start(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	tok := issue(t, s, confID, "alice")
	s.SetLatency(time.Minute)
	errc := make(chan error, 1)
	go func() {
		_, err := refresh(s, oauthConfig(s, confID, oauth2.AuthStyleInHeader), tok.RefreshToken)
		errc <- err
	}()
	for s.Stats().TokenRequests == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a request waiting on latency; want prompt", d)
	}
	if err := <-errc; err == nil {
		t.Errorf("request in flight at Close succeeded")
	}
	s.Close() // idempotent
	if _, err := s.Client().Get(s.URL() + PathMetadata); err == nil {
		t.Errorf("server answers after Close")
	}
}

func TestKnobsUnderLoad(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	const workers = 4
	stop := make(chan struct{})
	knobsDone := make(chan struct{})
	go func() {
		defer close(knobsDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.SetLatency(time.Duration(i%2) * time.Millisecond)
			s.FailNext(i%2, http.StatusServiceUnavailable)
			s.SetInvalidClient(false)
			_ = s.Stats()
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := s.IssueGrant(confID, "alice", nil)
			if err != nil {
				errs[w] = err
				return
			}
			for range 10 {
				next, err := refresh(s, cfg, tok.RefreshToken)
				if err != nil {
					if errorCode(err) != "temporarily_unavailable" {
						errs[w] = err
						return
					}
					continue
				}
				tok = next
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-knobsDone
	for w, err := range errs {
		if err != nil {
			t.Errorf("worker %d: %v", w, err)
		}
	}
	if got := s.Stats().ReuseDetections; got != 0 {
		t.Errorf("ReuseDetections = %d; want 0 (each worker refreshes its own grant)", got)
	}
}

// TestStallAbandonedRequestIsProcessed: a stalled token endpoint holds the
// request; the client gives up; after Resume the provider still processes
// it, so the refresh token is spent although nobody got the new one.
func TestStallAbandonedRequestIsProcessed(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")
	rotated := make(chan string, 1)
	s.OnRotate(func(user string) { rotated <- user })
	s.Stall()

	ctx, cancel := context.WithCancel(clientCtx(s))
	errc := make(chan error, 1)
	go func() {
		_, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		errc <- err
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := s.WaitStalled(wctx, 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("refresh against a stalled endpoint succeeded")
	}
	s.Resume()
	select {
	case user := <-rotated:
		if user != "alice" {
			t.Errorf("OnRotate user = %q; want alice", user)
		}
	case <-wctx.Done():
		t.Fatal("the held request was not processed after Resume")
	}
	s.OnRotate(nil)
	// The spent token is reuse now.
	if _, err := refresh(s, cfg, tok.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Errorf("presenting the spent token: error %v; want invalid_grant", err)
	}
	if got := s.Stats(); got.Refreshes != 1 || got.ReuseDetections != 1 || got.TokenRequests != 2 {
		t.Errorf("Stats = %+v; want 2 token requests, 1 refresh, 1 reuse detection", got)
	}
}

// TestStallResumeBeforeArrival: requests after Resume pass at once, and
// WaitStalled counts only requests of the current stall.
func TestStallResumeBeforeArrival(t *testing.T) {
	s := newServer(t, testOptions())
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")
	s.Stall()
	s.Resume()
	if _, err := refresh(s, cfg, tok.RefreshToken); err != nil {
		t.Fatalf("refresh after Resume: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitStalled(ctx, 1); err == nil {
		t.Errorf("WaitStalled counted a request that was not held")
	}
}

// TestCloseReleasesStalled: Close does not wait for a stall to end.
func TestCloseReleasesStalled(t *testing.T) {
	s, err := Start(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")
	s.Stall()
	errc := make(chan error, 1)
	go func() {
		_, err := refresh(s, cfg, tok.RefreshToken)
		errc <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitStalled(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := <-errc; err == nil {
		t.Errorf("a held request succeeded after Close")
	}
}

func TestRefreshReuseGrace(t *testing.T) {
	o := testOptions()
	o.RefreshReuseGrace = 300 * time.Millisecond
	s := newServer(t, o)
	cfg := oauthConfig(s, confID, oauth2.AuthStyleInHeader)
	tok := issue(t, s, confID, "alice")
	first, err := refresh(s, cfg, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	// Within the grace, the spent token is accepted again and both new
	// refresh tokens work.
	second, err := refresh(s, cfg, tok.RefreshToken)
	if err != nil {
		t.Fatalf("reuse within the grace: %v", err)
	}
	if second.RefreshToken == first.RefreshToken {
		t.Errorf("reuse within the grace returned the same refresh token; want a new one")
	}
	if got := s.Stats(); got.GraceReuses != 1 || got.ReuseDetections != 0 || got.Refreshes != 2 {
		t.Errorf("Stats = %+v; want 2 refreshes, 1 grace reuse, no reuse detection", got)
	}
	// After the grace, reuse revokes the family, the newer tokens too.
	s.store.mu.Lock()
	s.store.now = func() time.Time { return time.Now().Add(time.Second) }
	s.store.mu.Unlock()
	if _, err := refresh(s, cfg, tok.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("reuse after the grace: error %v; want invalid_grant", err)
	}
	if _, err := refresh(s, cfg, second.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Errorf("newest token after the family was revoked: error %v; want invalid_grant", err)
	}
	if got := s.Stats(); got.ReuseDetections != 1 {
		t.Errorf("ReuseDetections = %d; want 1", got.ReuseDetections)
	}
}
