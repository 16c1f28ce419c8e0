package tracing

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace/noop"
)

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	c := Config{Endpoint: "collector:4318", SampleRatio: 2}
	err := c.Validate()
	for _, want := range []string{"endpoint: must be an http(s) URL", "sample_ratio", "service_name: required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v; want it to mention %q", err, want)
		}
	}
}

func TestOffByDefault(t *testing.T) {
	p, err := New(context.Background(), DefaultConfig(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.TracerProvider.(noop.TracerProvider); !ok {
		t.Errorf("provider %T; want the no-op provider when no endpoint is set", p.TracerProvider)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}
