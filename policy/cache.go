package policy

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// decisionCacheSize bounds the decision cache per loaded policy. An agent
// repeats a small set of calls (same user, route, method and path) for
// each user it acts for; a sidecar in front of a shared agent service acts
// for thousands of people, so the bound matches the token cache's
// (injector.DefaultCacheSize): one entry per active user at the least. An
// entry is its key (bounded by maxKeyBytes, usually under 200 bytes) and a
// Decision, a few hundred bytes in all.
const decisionCacheSize = 10000

// maxKeyBytes bounds one cache key. A policy that reads a large part of the
// input (every header, a long path) makes keys as large as that part; such
// requests are evaluated every time rather than letting a few thousand of
// them pin megabytes.
const maxKeyBytes = 4 << 10

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
// data) starts empty.
//
// The key is the values at those paths in a self-delimiting byte encoding
// (appendValue), so two keys are equal only when every value is: a hit is
// exact, never a hash match. Building it converts nothing to OPA values for
// the fields a policy usually reads, and looking it up allocates nothing.
// When full, an arbitrary entry makes room: the working set is small, and
// a hit then needs only a read lock.
type decisionCache struct {
	paths []inputPath

	mu      sync.RWMutex
	entries map[string]Decision // guarded by mu
}

// inputPath is one path into input that a policy reads, as the terms of a
// reference and as plain keys.
type inputPath struct {
	terms []*ast.Term
	keys  []string
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
	c := &decisionCache{entries: make(map[string]Decision)}
	for _, terms := range a.paths {
		p := inputPath{terms: terms}
		for _, t := range terms {
			p.keys = append(p.keys, string(t.Value.(ast.String))) // addRef keeps string terms only
		}
		c.paths = append(c.paths, p)
	}
	// A fixed order, so that one input always gives one key.
	slices.SortFunc(c.paths, func(a, b inputPath) int { return slices.Compare(a.keys, b.keys) })
	return c
}

// cacheKey is a decision cache key being built or looked up. Keys are
// pooled: a hit allocates nothing.
type cacheKey struct {
	b []byte
}

var cacheKeys = sync.Pool{New: func() any { return new(cacheKey) }}

// key returns the key for the input whose values appendAt encodes. The
// caller releases it.
func (c *decisionCache) key(appendAt func(b []byte, p inputPath) []byte) *cacheKey {
	k := cacheKeys.Get().(*cacheKey)
	b := k.b[:0]
	for _, p := range c.paths {
		b = appendAt(b, p)
	}
	k.b = b
	return k
}

func (k *cacheKey) release() {
	if cap(k.b) > maxKeyBytes {
		k.b = nil // do not keep an outsized buffer alive
	}
	cacheKeys.Put(k)
}

// get returns the decision cached under k.
func (c *decisionCache) get(k *cacheKey) (Decision, bool) {
	if len(k.b) > maxKeyBytes {
		return Decision{}, false
	}
	c.mu.RLock()
	d, ok := c.entries[string(k.b)] // no allocation: the conversion is only a lookup
	c.mu.RUnlock()
	return d, ok
}

// put caches d under k, making room when the cache is full.
func (c *decisionCache) put(k *cacheKey, d Decision) {
	if len(k.b) > maxKeyBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[string(k.b)]; !ok && len(c.entries) >= decisionCacheSize {
		for old := range c.entries { // an arbitrary entry
			delete(c.entries, old)
			break
		}
	}
	c.entries[string(k.b)] = d
}

// Tags of the key encoding. Every value starts with one; strings, numbers
// and other scalars then carry their length, arrays, sets and objects
// their element count, so the encoding is self-delimiting and a sequence
// of encoded values decodes one way only.
const (
	tagAbsent = 'u' // the path leads nowhere
	tagNull   = 'n'
	tagFalse  = 'f'
	tagTrue   = 't'
	tagNumber = 'd'
	tagString = 's'
	tagArray  = 'a'
	tagSet    = 'e'
	tagObject = 'o'
	tagOther  = 'x' // refs, vars, comprehensions: not in input, written as text
)

// appendValue appends the key encoding of v (nil: absent) to b. Sets and
// objects are written in OPA's sorted order, so equal values encode
// equally; numbers are written as given, so 1 and 1.0 differ (a miss, never
// a wrong hit).
func appendValue(b []byte, v ast.Value) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, tagAbsent)
	case ast.Null:
		return append(b, tagNull)
	case ast.Boolean:
		if v {
			return append(b, tagTrue)
		}
		return append(b, tagFalse)
	case ast.Number:
		return appendTagged(b, tagNumber, string(v))
	case ast.String:
		return appendString(b, string(v))
	case *ast.Array:
		b = appendCount(b, tagArray, v.Len())
		for i := range v.Len() {
			b = appendValue(b, v.Elem(i).Value)
		}
		return b
	case ast.Set:
		b = appendCount(b, tagSet, v.Len())
		v.Foreach(func(t *ast.Term) { b = appendValue(b, t.Value) })
		return b
	case ast.Object:
		b = appendCount(b, tagObject, v.Len())
		v.Foreach(func(k, x *ast.Term) {
			b = appendValue(b, k.Value)
			b = appendValue(b, x.Value)
		})
		return b
	}
	return appendTagged(b, tagOther, v.String())
}

func appendString(b []byte, s string) []byte { return appendTagged(b, tagString, s) }

func appendTagged(b []byte, tag byte, s string) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendCount(b []byte, tag byte, n int) []byte {
	b = append(b, tag)
	return binary.AppendUvarint(b, uint64(n))
}

// appendStringMap appends m as appendValue writes the object of its
// entries: keys in order (OPA sorts string keys bytewise, as Go does).
func appendStringMap(b []byte, m map[string]string) []byte {
	b = appendCount(b, tagObject, len(m))
	var buf [32]string // most requests carry fewer headers: no allocation
	for _, k := range sortedKeys(buf[:0], m) {
		b = appendString(b, k)
		b = appendString(b, m[k])
	}
	return b
}

// appendStrings appends s as appendValue writes an array of strings.
func appendStrings(b []byte, s []string) []byte {
	b = appendCount(b, tagArray, len(s))
	for _, x := range s {
		b = appendString(b, x)
	}
	return b
}

// sortedKeys appends m's keys to keys and sorts them.
func sortedKeys[V any](keys []string, m map[string]V) []string {
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
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
