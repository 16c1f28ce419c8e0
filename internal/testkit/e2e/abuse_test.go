//go:build integration

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// abuseTimeout is the short timeout the abuse test configures, so abusive
// connections are cut quickly.
const abuseTimeout = 500 * time.Millisecond

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(ents)
}

// TestAbuseLeavesNoLeak throws slow, garbage and half-finished
// connections at the proxy, then checks that goroutines and file
// descriptors return to where they were and that the proxy still serves.
func TestAbuseLeavesNoLeak(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Proxy.Limits.ReadHeaderTimeout = abuseTimeout
		c.Proxy.Limits.HandshakeTimeout = abuseTimeout
		c.Proxy.Limits.IdleTimeout = abuseTimeout
	}})
	assertion := e.Assert(t, testenv.User)
	target := fmt.Sprintf("%s:%d", testenv.APIHost, e.Upstream.Port())
	proxyAddr := e.Sidecar.ProxyAddr()

	serve := func() {
		t.Helper()
		c := e.Client()
		defer c.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/ok"), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("proxy stopped serving: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d; want 200", resp.StatusCode)
		}
	}
	serve()
	e.Sidecar.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)

	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", proxyAddr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	abuses := map[string]func(){
		"slowloris on the proxy port": func() {
			c := dial()
			defer c.Close()
			io.WriteString(c, "GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\n")
			for range 5 {
				time.Sleep(abuseTimeout / 3)
				if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
					return
				}
			}
			readUntilClosed(c)
		},
		"random bytes to the proxy port": func() {
			c := dial()
			defer c.Close()
			b := make([]byte, 4096)
			rand.Read(b)
			c.Write(b)
			readUntilClosed(c)
		},
		"random bytes after CONNECT": func() {
			c, resp, err := e.Connect(target, "")
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("connect: %v %v", err, resp)
				return
			}
			defer c.Close()
			b := make([]byte, 4096)
			rand.Read(b)
			c.Write(b)
			readUntilClosed(c)
		},
		"silence after CONNECT": func() {
			c, _, err := e.Connect(target, "")
			if err != nil {
				return
			}
			defer c.Close()
			readUntilClosed(c)
		},
		"slowloris inside a tunnel": func() {
			tc, _, err := e.DialTLSThroughProxy(target, testenv.APIHost, "")
			if err != nil {
				t.Errorf("tunnel: %v", err)
				return
			}
			defer tc.Close()
			io.WriteString(tc, "GET /api/x HTTP/1.1\r\nHost: "+target+"\r\n")
			for range 5 {
				time.Sleep(abuseTimeout / 3)
				if _, err := io.WriteString(tc, "X-Slow: 1\r\n"); err != nil {
					return
				}
			}
			readUntilClosed(tc)
		},
		"HTTP/2 preface inside a tunnel": func() {
			tc, _, err := e.DialTLSThroughProxy(target, testenv.APIHost, "")
			if err != nil {
				t.Errorf("tunnel: %v", err)
				return
			}
			defer tc.Close()
			io.WriteString(tc, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
			readUntilClosed(tc)
		},
		"body that never arrives": func() {
			tc, _, err := e.DialTLSThroughProxy(target, testenv.APIHost, "")
			if err != nil {
				t.Errorf("tunnel: %v", err)
				return
			}
			defer tc.Close()
			fmt.Fprintf(tc, "POST /api/x HTTP/1.1\r\nHost: %s\r\n%s: %s\r\nContent-Length: 100000\r\n\r\nabc", target, identity.DefaultHeader, assertion)
			readUntilClosed(tc)
		},
		"abandoned CONNECT halfway": func() {
			c := dial()
			io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\n")
			c.Close()
		},
		"huge header": func() {
			c := dial()
			defer c.Close()
			io.WriteString(c, "GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nX-Big: "+strings.Repeat("a", 200<<10)+"\r\n\r\n")
			readUntilClosed(c)
		},
	}
	var wg sync.WaitGroup
	for range 3 {
		for _, abuse := range abuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				abuse()
			}()
		}
	}
	wg.Wait()
	serve()

	deadline := time.Now().Add(10 * time.Second)
	var g, fd int
	for time.Now().Before(deadline) {
		e.Sidecar.CloseIdleConnections()
		g, fd = runtime.NumGoroutine(), openFDs(t)
		if g <= baseG+2 && fd <= baseFD+2 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	t.Errorf("after abuse: %d goroutines (baseline %d), %d fds (baseline %d)\n%s", g, baseG, fd, baseFD, buf[:n])
}

// readUntilClosed reads until the peer closes or 5 s pass.
func readUntilClosed(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, c)
}

// TestManyHostsBoundedCertCache intercepts thousands of distinct hosts
// through a wildcard route with a leaf per host (ca.leaf_names exact;
// with the default they would share one): the leaf cache stays within its
// bound, every host still gets a valid certificate, and nothing leaks.
func TestManyHostsBoundedCertCache(t *testing.T) {
	const hosts, capacity = 10000, 256
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.CA.CacheSize = capacity
		c.CA.LeafNames = sidecar.LeafNamesExact
		c.Routes = append(c.Routes, injector.RouteConfig{Host: "*.many.test", Port: 443, Provider: testenv.Provider})
		c.Log.Level = "info"
	}})
	baseG := runtime.NumGoroutine()
	var wg sync.WaitGroup
	errs := make(chan error, hosts)
	sem := make(chan struct{}, 16)
	for i := range hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			host := fmt.Sprintf("h%05d.many.test", i)
			tc, _, err := e.DialTLSThroughProxy(host+":443", host, "")
			if err != nil {
				errs <- fmt.Errorf("%s: %w", host, err)
				return
			}
			tc.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
		break
	}
	// A client of its own, whose kept-alive connection (two goroutines
	// here, one in the admin server) is closed before goroutines are
	// counted.
	metrics := &http.Client{Transport: &http.Transport{}}
	resp, err := metrics.Get("http://" + e.Sidecar.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics.CloseIdleConnections()
	var entries, signings float64
	for line := range strings.SplitSeq(string(b), "\n") {
		fmt.Sscanf(line, "onbehalf_cert_cache_entries %g", &entries)
		fmt.Sscanf(line, "onbehalf_cert_signings_total %g", &signings)
	}
	if entries > capacity || signings < hosts {
		t.Errorf("cache holds %v leaves (bound %d) after %v signings for %d hosts", entries, capacity, signings, hosts)
	}
	// Tunnels end as their clients' closes arrive, and the sidecar's
	// handshake workers a second after their last call; under a loaded
	// CI machine both can take a while.
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > baseG+5 && time.Now().Before(deadline) {
		e.Sidecar.CloseIdleConnections()
		time.Sleep(50 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > baseG+5 {
		t.Errorf("%d goroutines after the hosts (baseline %d)", g, baseG)
	}
}

// TestSiblingHostsShareLeaf: with the default ca.leaf_names, the tenants
// of one service get one wildcard leaf, signed once, that a client
// trusting only the CA verifies for each of them; each tunnel still serves
// only its CONNECT target.
func TestSiblingHostsShareLeaf(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Routes = append(c.Routes, injector.RouteConfig{Host: "*.tenants.test", Port: 443, Provider: testenv.Provider})
	}})
	for _, host := range []string{"acme.tenants.test", "globex.tenants.test", "initech.tenants.test"} {
		tc, _, err := e.DialTLSThroughProxy(host+":443", host, "")
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		if names := tc.ConnectionState().PeerCertificates[0].DNSNames; !slices.Equal(names, []string{"*.tenants.test"}) {
			t.Errorf("%s: leaf names %v; want [*.tenants.test]", host, names)
		}
		tc.Close()
	}
	if n := metricValue(t, e.Sidecar, "onbehalf_cert_signings_total"); n != 1 {
		t.Errorf("%v signings for three sibling hosts; want 1", n)
	}
	// The shared leaf does not widen the tunnel: SNI must still name the
	// CONNECT target.
	if tc, _, err := e.DialTLSThroughProxy("acme.tenants.test:443", "globex.tenants.test", ""); err == nil {
		tc.Close()
		t.Error("a tunnel to acme.tenants.test completed a handshake for globex.tenants.test")
	}
}

// TestCAFilesRemovedWhileRunning: the CA is loaded at start-up; removing
// its files later changes nothing for new hosts (only a restart needs
// them, and refuses to start without them).
func TestCAFilesRemovedWhileRunning(t *testing.T) {
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Routes = append(c.Routes, injector.RouteConfig{Host: "*.later.test", Port: 443, Provider: testenv.Provider})
	}})
	for _, f := range []string{e.Config.CA.Cert, e.Config.CA.Key} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	tc, _, err := e.DialTLSThroughProxy("new.later.test:443", "new.later.test", "")
	if err != nil {
		t.Fatalf("interception after the CA files were removed: %v", err)
	}
	tc.Close()
	if rd := readyz(t, e); !strings.Contains(rd, `"ready":true`) {
		t.Errorf("/readyz after the CA files were removed: %s", rd)
	}
	// A restart refuses to start without them.
	cfg := e.Config
	cfg.Proxy.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Audit.File.Path = filepath.Join(t.TempDir(), "audit.log")
	if _, err := sidecar.New(context.Background(), cfg, sidecar.Options{Store: e.Store}); err == nil || !strings.Contains(err.Error(), "interception CA") {
		t.Errorf("start without CA files: %v; want a clear refusal", err)
	}
}
