//go:build integration

package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/internal/testkit/testenv"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// otlpReceiver is a real OTLP/HTTP trace endpoint on loopback: it decodes
// what the sidecar exports.
type otlpReceiver struct {
	mu    sync.Mutex
	spans map[string]int
	raw   []byte
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req collector.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.raw = append(o.raw, body...)
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				o.spans[sp.Name]++
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
	w.Write(out)
}

func (o *otlpReceiver) count(name string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.spans[name]
}

// TestTracingOTLP exports the pipeline's spans to a real OTLP/HTTP
// endpoint: one request span with a child per stage, and nothing secret.
func TestTracingOTLP(t *testing.T) {
	recv := &otlpReceiver{spans: map[string]int{}}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	e := testenv.New(t, testenv.Options{Config: func(c *sidecar.Config) {
		c.Tracing.Endpoint = srv.URL + "/v1/traces"
	}})
	assertion := e.Assert(t, testenv.User)
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, e.APIURL("/api/traced"), nil)
		req.Header.Set(identity.DefaultHeader, assertion)
		resp, err := e.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	deadline := time.Now().Add(15 * time.Second) // the batcher exports every 5 s
	for recv.count("onbehalf.request") < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, name := range []string{"onbehalf.request", "identity", "policy", "token", "upstream"} {
		if got := recv.count(name); got < 3 {
			t.Errorf("%d %q spans exported; want 3", got, name)
		}
	}
	recv.mu.Lock()
	raw := string(recv.raw)
	recv.mu.Unlock()
	for what, secret := range map[string]string{"token": testenv.CanaryToken, "assertion": assertion, "user": testenv.User, "path": "/api/traced"} {
		if strings.Contains(raw, secret) {
			t.Errorf("the exported spans contain the %s", what)
		}
	}
}
