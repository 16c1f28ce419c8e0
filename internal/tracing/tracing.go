// Package tracing sets up OpenTelemetry tracing for the sidecar: off by
// default (a no-op tracer that costs nothing), an OTLP/HTTP exporter when
// an endpoint is configured. Spans carry the decision id, route, provider,
// method, status and error code — never a token, an assertion, a user id
// or a path, for the same reasons as metric labels.
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// exportTimeout bounds one export to the collector; spans are batched, so a
// slow collector delays nothing on the request path.
const exportTimeout = 10 * time.Second

// Config configures tracing.
type Config struct {
	// Endpoint is the OTLP/HTTP traces URL of a collector
	// (https://collector:4318/v1/traces). Empty turns tracing off.
	Endpoint string `yaml:"endpoint"`
	// CAFile is a PEM bundle trusted for an https endpoint, in addition
	// to the system roots.
	CAFile string `yaml:"ca_file"`
	// SampleRatio is the share of requests traced, 0 to 1.
	SampleRatio float64 `yaml:"sample_ratio"`
	// ServiceName names the sidecar in traces.
	ServiceName string `yaml:"service_name"`
}

// DefaultConfig returns tracing off, sampling everything once on.
func DefaultConfig() Config {
	return Config{SampleRatio: 1, ServiceName: "onbehalf-sidecar"}
}

// Validate reports every problem in c.
func (c Config) Validate() error {
	var p config.Problems
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.Addf("endpoint", "must be an http(s) URL, got %q", c.Endpoint)
		}
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		p.Addf("sample_ratio", "must be between 0 and 1")
	}
	if c.ServiceName == "" {
		p.Addf("service_name", "required")
	}
	return p.Err()
}

// Provider is a tracer provider and its shutdown.
type Provider struct {
	trace.TracerProvider
	shutdown func(context.Context) error
}

// Shutdown flushes buffered spans and stops the exporter.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p.shutdown == nil {
		return nil
	}
	return p.shutdown(ctx)
}

// New builds the provider c describes: a no-op one when c.Endpoint is empty.
func New(ctx context.Context, c Config, version string) (*Provider, error) {
	if c.Endpoint == "" {
		return &Provider{TracerProvider: noop.NewTracerProvider()}, nil
	}
	// The exporter's own client would use proxy environment variables; the
	// sidecar never does. The collector is the operator's, so the egress
	// guard is not applied; HTTP/2 stays off, as OTLP/HTTP needs none.
	o := outbound.DefaultOptions()
	o.CAFile, o.CAFileKey = c.CAFile, "tracing.ca_file"
	o.HTTP2 = false
	o.Timeout = exportTimeout
	o.CheckRedirect = outbound.FollowRedirects(outbound.DefaultMaxRedirects)
	client, err := outbound.Client(o)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(c.Endpoint),
		otlptracehttp.WithHTTPClient(client),
		otlptracehttp.WithTimeout(exportTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res := resource.NewWithAttributes("",
		attribute.String("service.name", c.ServiceName),
		attribute.String("service.version", version),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	)
	return &Provider{TracerProvider: tp, shutdown: tp.Shutdown}, nil
}
