//go:build integration

package e2e

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Soak bounds: a minute of load at most, and a request cap per worker.
const (
	soakWorkers        = 300
	soakDuration       = 40 * time.Second
	soakMaxPerWorker   = 400
	soakRefreshEvery   = 2 * time.Second
	soakSettleDeadline = 15 * time.Second
	soakAuditRotateMB  = 16
)

// TestSoak runs several hundred concurrent connections for several users
// through one sidecar while grants expire and are refreshed, then checks
// that every request was answered and audited exactly once, the audit chain
// holds, and goroutines, file descriptors and heap return to baseline.
func TestSoak(t *testing.T) {
	prov := testenv.StartProvider(t, oauthtest.Options{})
	// The trail rotates several times during the soak (about 1.3 KB of
	// records a request), and every record is still found, and the chain
	// verified, across the rotated files.
	e := testenv.New(t, testenv.Options{Provider: prov, Config: func(c *sidecar.Config) {
		c.Audit.File.MaxSizeMB = soakAuditRotateMB
		c.Audit.File.MaxFiles = 1000
	}})
	users := []string{testenv.User, "bob", "carol", "dave", "erin"}
	for _, u := range users[1:] {
		e.IssueGrant(t, u)
	}
	assertions := map[string]string{}
	for _, u := range users {
		assertions[u] = e.Assert(t, u)
	}

	warm := e.Client()
	if code, _ := get(t, warm, e, assertions[testenv.User]); code != 200 {
		t.Fatalf("warm-up: %d", code)
	}
	warm.CloseIdleConnections()
	e.Sidecar.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	runtime.GC()
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc

	ctx, cancel := context.WithTimeout(context.Background(), soakDuration)
	defer cancel()
	// Expire a random user's token now and then: refreshes under load.
	var refresher sync.WaitGroup
	refresher.Add(1)
	go func() {
		defer refresher.Done()
		tick := time.NewTicker(soakRefreshEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := e.TrySetExpiry(users[rand.IntN(len(users))], time.Now().Add(-time.Minute)); err != nil {
					t.Errorf("expire a grant: %v", err)
				}
			}
		}
	}()

	var (
		mu        sync.Mutex
		ids       = map[string]bool{}
		bad       = map[int]int{}
		badBodies []string
		sent      atomic.Int64
		clients   []*http.Client
	)
	var wg sync.WaitGroup
	for w := range soakWorkers {
		c := e.Client()
		clients = append(clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := users[w%len(users)]
			for range soakMaxPerWorker {
				if ctx.Err() != nil {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, e.APIURL("/api/soak"), strings.NewReader(`{"n":1}`))
				req.Header.Set(identity.DefaultHeader, assertions[user])
				resp, err := c.Do(req)
				sent.Add(1)
				if err != nil {
					mu.Lock()
					bad[0]++
					mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				ids[resp.Header.Get("Onbehalf-Decision-Id")] = true
				if resp.StatusCode != 200 {
					bad[resp.StatusCode]++
					if len(badBodies) < 10 {
						badBodies = append(badBodies, string(b))
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	cancel()
	refresher.Wait()
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	clients = nil
	e.Upstream.Reset() // the recording upstream holds every request
	t.Logf("soak: %d requests, %d distinct decision ids, %d refreshes at the provider, non-200: %v",
		sent.Load(), len(ids), prov.Stats().Refreshes, bad)
	if len(bad) > 0 {
		t.Errorf("non-200 answers: %v (status 0 = client error); first bodies: %q", bad, badBodies)
	}
	if int64(len(ids)) != sent.Load() {
		t.Errorf("%d decision ids for %d requests", len(ids), sent.Load())
	}
	if prov.Stats().Refreshes == 0 || prov.Stats().ReuseDetections != 0 {
		t.Errorf("provider: %d refreshes, %d reuse detections; want refreshes and no reuse", prov.Stats().Refreshes, prov.Stats().ReuseDetections)
	}

	// Resources back to baseline.
	deadline := time.Now().Add(soakSettleDeadline)
	var g, fd int
	for {
		e.Sidecar.CloseIdleConnections()
		runtime.GC()
		g, fd = runtime.NumGoroutine(), openFDs(t)
		runtime.ReadMemStats(&ms)
		if g <= baseG+5 && fd <= baseFD+5 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Errorf("after the soak: %d goroutines (baseline %d), %d fds (baseline %d)\n%s", g, baseG, fd, baseFD, buf[:n])
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ms.HeapAlloc > 2*baseHeap+32<<20 {
		t.Errorf("heap after the soak %d MB; baseline %d MB", ms.HeapAlloc>>20, baseHeap>>20)
	}

	// Every request accounted for: exactly one request record per decision
	// id, and the chain verifies.
	counts := map[string]int{}
	records := e.WaitRequestRecords(t, len(ids), func(r map[string]any) bool {
		id, _ := r["decision_id"].(string)
		return ids[id]
	})
	for _, r := range records {
		if r["event"] == audit.EventRequest {
			id, _ := r["decision_id"].(string)
			counts[id]++
		}
	}
	for id := range ids {
		if counts[id] != 1 {
			t.Errorf("decision %s has %d request records; want 1", id, counts[id])
			break
		}
	}
	files, err := audit.RotatedFiles(e.AuditPath)
	if err != nil || len(files) < 2 {
		t.Errorf("audit files %v (%v); want the trail rotated at %d MB", files, err, soakAuditRotateMB)
	}
	if rep, err := audit.VerifyRotated(e.AuditPath); err != nil || rep.Broken != nil {
		t.Errorf("audit chain: %v %v", err, rep.Broken)
	}
}
