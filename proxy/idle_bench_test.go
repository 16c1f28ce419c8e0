package proxy_test

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// idleTunnels is how many intercepted connections BenchmarkIdleTunnelMemory
// holds open at once.
const idleTunnels = 200

// BenchmarkIdleTunnelMemory measures what an idle intercepted connection
// costs the process: each iteration opens idleTunnels tunnels, sends one
// request on each (CONNECT, handshake, policy, token, upstream, audit) and
// leaves them open, then reads the goroutine stacks and heap in use
// without a garbage collection (which would shrink stacks and hide what an
// idle sidecar holds between collections). stack-B/conn is the figure
// onOwnStack exists for; client and upstream goroutines are in it too, the
// same with and without it, so compare before and after (benchstat).
func BenchmarkIdleTunnelMemory(b *testing.B) {
	e := testenv.New(b, testenv.Options{Config: func(c *sidecar.Config) {
		c.Log.Level = "info"
	}})
	assertion := e.Assert(b, testenv.User)
	url := e.APIURL("/api/chat.postMessage")
	var stack, heap float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		clients := make([]*http.Client, idleTunnels)
		for i := range clients {
			clients[i] = e.Client()
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"channel":"general","text":"idle"}`))
			req.Header.Set(identity.DefaultHeader, assertion)
			req.Header.Set("Content-Type", "application/json")
			resp, err := clients[i].Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		runtime.ReadMemStats(&after)
		stack += float64(after.StackInuse) - float64(before.StackInuse)
		heap += float64(after.HeapInuse) - float64(before.HeapInuse)
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}
	n := float64(b.N) * idleTunnels
	b.ReportMetric(stack/n, "stack-B/conn")
	b.ReportMetric(heap/n, "heap-B/conn")
}
