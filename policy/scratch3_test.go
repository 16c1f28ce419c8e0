package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func (in *Input) lazyValue() ast.Value {
	h := &in.Attributes.Request.HTTP
	headers := make(map[string]any, len(h.Headers))
	for k, v := range h.Headers {
		headers[k] = v
	}
	query := make(map[string]any, len(in.ParsedQuery))
	for k, v := range in.ParsedQuery {
		query[k] = v
	}
	var route any
	if r := in.Route; r != nil {
		route = map[string]any{"provider": r.Provider, "host": r.Host, "name": r.Name}
	}
	claims := in.Subject.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	return ast.LazyObject(map[string]any{
		"attributes": map[string]any{
			"request": map[string]any{"http": map[string]any{
				"method": h.Method, "host": h.Host, "path": h.Path, "scheme": h.Scheme, "headers": headers,
			}},
			"source": map[string]any{"address": in.Attributes.Source.Address},
		},
		"parsed_path":  in.ParsedPath,
		"parsed_query": query,
		"subject": map[string]any{"user": in.Subject.User, "agent": in.Subject.Agent, "issuer": in.Subject.Issuer, "claims": claims},
		"route":   route,
		"time":    in.Time,
	})
}

func BenchmarkScratchLazy(b *testing.B) {
	for _, name := range exampleDirs(b) {
		e := exampleEngine(b, name)
		in := exampleRequests[name].allow.input()
		p := e.cur.Load()
		b.Run(name+"/direct", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v, _ := in.Value()
				if d := p.decide(context.Background(), v, 1e9); !d.Allow { b.Fatal(d) }
			}
		})
		b.Run(name+"/lazy", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := p.decide(context.Background(), in.lazyValue(), 1e9); !d.Allow { b.Fatal(d) }
			}
		})
	}
}
