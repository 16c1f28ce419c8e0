package webhook

import (
	"bytes"
	"net/http"
	"testing"
)

// BenchmarkAdmit measures deciding and patching a typical pod, without
// HTTP.
func BenchmarkAdmit(b *testing.B) {
	in, err := NewInjector(loadTestConfig(b, "native", newTestPKI(b)))
	if err != nil {
		b.Fatal(err)
	}
	req := &Request{Kind: GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: "CREATE",
		Object: reviewObject(b, readReview(b, "multi"))}
	b.ReportAllocs()
	for b.Loop() {
		res := in.Admit(req)
		if res.Outcome != OutcomeInjected {
			b.Fatalf("got %s; want injected", res.Outcome)
		}
		if _, err := MarshalPatch(res.Patch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMutateTLS measures one admission as the API server sees it:
// a POST over a kept-alive TLS connection.
func BenchmarkMutateTLS(b *testing.B) {
	ws := startServer(b, "native")
	body := readReview(b, "multi")
	b.ReportAllocs()
	for b.Loop() {
		resp, err := ws.client.Post(ws.url+"/mutate", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("got %d", resp.StatusCode)
		}
	}
}
