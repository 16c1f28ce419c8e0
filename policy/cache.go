package policy

import (
	"encoding/binary"
	"hash/maphash"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"
)

// decisionCacheSize bounds the decision cache per loaded policy. An agent
// repeats a small set of calls (same user, route, method and path), so a
// few thousand entries hold its working set.
const decisionCacheSize = 4096

// decisionCache memoises decisions of a deterministic policy, keyed by the
// parts of the input the policy can read. It exists because OPA's
// evaluation dominates the sidecar's CPU per request while agents send the
// same few requests over and over.
//
// Correctness rests on three checks made once, when the policy is
// prepared: every reference to input in the modules and the query starts
// with a static path (the key then holds the values under those paths, so
// anything the policy could read is in the key); no non-deterministic
// builtin is called (time.now_ns, rand.*, uuid, …) — a policy that reads
// the clock must take it from input.time; and no `with` keyword rewrites
// input. A policy failing any check is evaluated every time. The cache
// lives and dies with one prepared policy, so a reload (new modules or
// data) starts empty. Hits compare the stored values exactly; the hash only
// picks the entry.
type decisionCache struct {
	paths [][]*ast.Term // input paths the policy reads, as string terms
	seed  maphash.Seed
	lru   *lru.Cache[uint64, cachedDecision]
}

type cachedDecision struct {
	values []ast.Value // the input's values at paths (nil: absent)
	d      Decision
}

// newDecisionCache returns a cache for a policy made of modules queried
// with query, or nil when the policy cannot be cached safely.
func newDecisionCache(modules map[string]*ast.Module, query ast.Body) *decisionCache {
	a := &inputAnalysis{paths: map[string][]*ast.Term{}}
	for _, m := range modules {
		for _, r := range m.Rules {
			// Unit tests (test_*, todo_test_*) run only under the tester;
			// their `with input as` would otherwise disable the cache.
			if name := r.Head.Name.String(); strings.HasPrefix(name, "test_") || strings.HasPrefix(name, "todo_test_") {
				continue
			}
			a.walk(r)
		}
	}
	a.walk(query)
	if !a.cacheable {
		return nil
	}
	if len(a.paths) == 0 {
		a.paths[""] = nil // the policy reads no input: one entry serves all
	}
	c := &decisionCache{seed: maphash.MakeSeed()}
	for _, p := range a.paths {
		c.paths = append(c.paths, p)
	}
	c.lru, _ = lru.New[uint64, cachedDecision](decisionCacheSize) // size is positive
	return c
}

// lookup returns the cached decision for the input whose values at paths
// at returns, and the extracted values to store with a decision made now.
func (c *decisionCache) lookup(at func(path []*ast.Term) ast.Value) (Decision, uint64, []ast.Value, bool) {
	values := make([]ast.Value, len(c.paths))
	var h maphash.Hash
	h.SetSeed(c.seed)
	var num [8]byte
	for i, p := range c.paths {
		values[i] = at(p)
		if values[i] == nil {
			h.WriteByte(0)
			continue
		}
		// OPA's structural hash is cheap and may collide; a hit compares
		// the values themselves.
		binary.LittleEndian.PutUint64(num[:], uint64(values[i].Hash()))
		h.Write(num[:])
	}
	key := h.Sum64()
	if e, ok := c.lru.Get(key); ok && sameValues(e.values, values) {
		return e.d, key, values, true
	}
	return Decision{}, key, values, false
}

func (c *decisionCache) store(key uint64, values []ast.Value, d Decision) {
	c.lru.Add(key, cachedDecision{values: values, d: d})
}

func sameValues(a, b []ast.Value) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if (a[i] == nil) != (b[i] == nil) || (a[i] != nil && a[i].Compare(b[i]) != 0) {
			return false
		}
	}
	return true
}

// valueAt follows path (string keys) into v; nil when a step is missing.
func valueAt(v ast.Value, path []*ast.Term) ast.Value {
	for _, k := range path {
		obj, ok := v.(ast.Object)
		if !ok {
			return nil
		}
		t := obj.Get(k)
		if t == nil {
			return nil
		}
		v = t.Value
	}
	return v
}

// inputAnalysis finds what a policy reads from input, and whether caching
// its decisions is safe.
type inputAnalysis struct {
	paths     map[string][]*ast.Term
	cacheable bool
	started   bool
}

func (a *inputAnalysis) walk(x any) {
	if !a.started {
		a.cacheable, a.started = true, true
	}
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		if len(e.With) > 0 {
			a.cacheable = false
		}
		if e.IsCall() {
			if name := e.Operator().String(); isNondeterministic(name) {
				a.cacheable = false
			}
		}
		return false
	})
	a.walkTerms(x)
}

// walkTerms visits every term of x. (ast.WalkTerms stops descending when
// its visitor returns true.)
func (a *inputAnalysis) walkTerms(x any) {
	ast.WalkTerms(x, func(t *ast.Term) bool {
		switch v := t.Value.(type) {
		case ast.Call:
			if len(v) > 0 && isNondeterministic(v[0].String()) {
				a.cacheable = false
			}
		case ast.Ref:
			if v.HasPrefix(ast.InputRootRef) {
				a.addRef(v)
				// The head is input itself; the keys may hold calls or
				// further references.
				for _, k := range v[1:] {
					a.walkTerms(k)
				}
				return true
			}
		case ast.Var:
			if v.Equal(ast.InputRootDocument.Value) {
				a.cacheable = false // all of input, outside a reference
			}
		}
		return false
	})
}

// addRef records the static prefix of an input reference: the path up to
// its first non-string term. A reference to input as a whole makes the
// policy uncacheable (its key would be every field, including the client
// port, and never hit).
func (a *inputAnalysis) addRef(r ast.Ref) {
	var path []*ast.Term
	for _, t := range r[1:] {
		if _, ok := t.Value.(ast.String); !ok {
			break
		}
		path = append(path, t)
	}
	if len(path) == 0 {
		a.cacheable = false
		return
	}
	key := ast.Ref(append([]*ast.Term{ast.InputRootDocument}, path...)).String()
	a.paths[key] = path
}

// isNondeterministic reports whether the builtin called name may return
// different results for the same arguments. Unknown names (user functions)
// are deterministic: their bodies are walked too.
func isNondeterministic(name string) bool {
	if clockDependent[name] {
		return true
	}
	b, ok := ast.BuiltinMap[name]
	return ok && b.Nondeterministic
}

// clockDependent are builtins OPA does not mark non-deterministic but whose
// result depends on the current time (token and certificate validity).
var clockDependent = map[string]bool{
	"io.jwt.decode_verify":                                   true,
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}
