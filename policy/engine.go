package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"go.uber.org/zap"
)

// ErrNotReady is returned by EvalFile when no policy could be loaded.
var ErrNotReady = errors.New("policy not loaded")

// Options carries the engine's collaborators.
type Options struct {
	// Logger receives operational logs, under the name "policy". Nil
	// discards them.
	Logger *zap.Logger
	// OnReload, when set, is called after every load attempt that changed
	// something: a new policy activated (Err nil) or a new policy refused
	// (Err set; the previous policy stays). A failure identical to the
	// previous one is not reported again. It is called from the loading
	// goroutine, one event at a time, and must not block for long.
	OnReload func(ReloadEvent)
}

// ReloadEvent describes one policy load attempt.
type ReloadEvent struct {
	// Revision is the revision activated, or the revision refused when Err
	// is set (empty when the policy could not even be read).
	Revision string
	// Source says where the policy came from: "files:<path>,<path>..." or
	// "bundle:<url>".
	Source string
	// Err is why the policy was refused; nil when it was activated.
	Err error
	// Time is when the attempt finished.
	Time time.Time
}

// Status is the engine's readiness report.
type Status struct {
	// Ready is true once a policy has been loaded. It stays true when a
	// later reload fails, since the last good policy keeps deciding.
	Ready bool
	// Revision is the active policy's revision.
	Revision string
	// LastError is the most recent load failure, cleared by the next
	// successful load.
	LastError string
	// LoadedAt is when the active policy was activated.
	LoadedAt time.Time
}

// Engine evaluates requests against the current policy. Create it with New;
// the zero value is not usable. It is safe for concurrent use.
type Engine struct {
	cfg      Config
	log      *zap.Logger
	onReload func(ReloadEvent)
	source   string

	cur       atomic.Pointer[prepared]
	ready     chan struct{}
	readyOnce sync.Once
	// attempted is closed after the first load attempt, good or bad.
	attempted     chan struct{}
	attemptedOnce sync.Once

	// loadMu serialises activation, so that two sources of change (or a
	// slow reload overtaken by a newer one) never interleave.
	loadMu sync.Mutex

	statusMu sync.Mutex
	lastErr  error // guarded by statusMu

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closers   []func()
	closeOnce sync.Once
}

// prepared is one compiled, tested, prepared policy. It is immutable.
type prepared struct {
	pq       rego.PreparedEvalQuery
	revision string
	digest   string
	loadedAt time.Time
	// queryUndefined is set when the query is a plain data reference that
	// no rule of the policy defines: likely a package name mistake.
	queryUndefined bool
	// decisionRules are the data references of the policy's rules named
	// decision or allow, sorted: what a query probably meant to name.
	decisionRules []string
	// cache memoises decisions; nil when the policy cannot be cached
	// (see decisionCache).
	cache *decisionCache
	// evals counts evaluations (tests check the cache with it).
	evals atomic.Uint64
}

// snapshot is a complete policy set read from a source, not yet compiled.
type snapshot struct {
	modules map[string]*ast.Module
	data    map[string]any
	// revision is what Status and audit records show; digest identifies
	// the content, so that an unchanged set is not rebuilt.
	revision string
	digest   string
}

// New builds an engine for cfg. Files are loaded before New returns; bundles
// are downloaded in the background. A policy that fails to load does not fail
// New: the engine starts not ready (every decision denies with
// ReasonNotLoaded), reports the failure through Status and OnReload, and keeps
// watching or polling for a good policy. New fails only when cfg is invalid or
// the source cannot be set up. ctx bounds the initial load; background work
// runs until Close.
func New(ctx context.Context, cfg Config, o Options) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("policy config: %w", err)
	}
	cfg = cfg.withDefaults()
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	e := &Engine{
		cfg:       cfg,
		log:       log.Named("policy"),
		onReload:  o.OnReload,
		ready:     make(chan struct{}),
		attempted: make(chan struct{}),
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	e.stop = stop

	var err error
	if cfg.Bundle.URL != "" {
		e.source = "bundle:" + cfg.Bundle.URL
		err = e.startBundle(runCtx)
	} else {
		e.source = "files:" + strings.Join(cfg.Paths, ",")
		err = e.startFiles(ctx, runCtx)
	}
	if err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Decide evaluates the policy for in. It never blocks on a reload and never
// allows on an error: an unloaded policy, an undefined result, an evaluation
// error or a timeout (Config.Timeout, or ctx's deadline if sooner) all deny,
// with the reason saying which.
func (e *Engine) Decide(ctx context.Context, in *Input) Decision {
	p := e.cur.Load()
	if p == nil {
		return deny(ReasonNotLoaded)
	}
	if in == nil {
		return p.stamp(deny(ReasonError + ": no input"))
	}
	if p.cache == nil {
		return p.decide(ctx, in.Value, e.cfg.Timeout)
	}
	// With a decision cache, only the parts of the input the policy reads
	// are looked at unless the decision has to be made.
	k := p.cache.key(in.appendAt)
	defer k.release()
	if d, hit := p.cache.get(k); hit {
		return d
	}
	return p.decideAndStore(ctx, in.Value, e.cfg.Timeout, k)
}

// noMetrics spares each evaluation the allocation of a metrics registry
// nobody reads.
var noMetrics = metrics.NoOp()

// decide evaluates the input value returns, through the decision cache
// when the policy has one.
func (p *prepared) decide(ctx context.Context, value func() (ast.Value, error), timeout time.Duration) Decision {
	if p.cache == nil {
		v, err := value()
		if err != nil {
			return p.stamp(deny(fmt.Sprintf("%s: convert input: %v", ReasonError, err)))
		}
		d, _ := p.evalReport(ctx, v, timeout)
		return d
	}
	v, err := value()
	if err != nil {
		return p.stamp(deny(fmt.Sprintf("%s: convert input: %v", ReasonError, err)))
	}
	k := p.cache.key(func(b []byte, path inputPath) []byte { return appendValue(b, valueAt(v, path.terms)) })
	defer k.release()
	if d, hit := p.cache.get(k); hit {
		return d
	}
	return p.decideAndStore(ctx, func() (ast.Value, error) { return v, nil }, timeout, k)
}

// decideAndStore evaluates and caches the decision under k.
func (p *prepared) decideAndStore(ctx context.Context, value func() (ast.Value, error), timeout time.Duration, k *cacheKey) Decision {
	v, err := value()
	if err != nil {
		return p.stamp(deny(fmt.Sprintf("%s: convert input: %v", ReasonError, err)))
	}
	d, outcome := p.evalReport(ctx, v, timeout)
	if outcome != outcomeFailed {
		// Only decisions the policy made are cached, never timeouts,
		// cancellations or evaluation errors.
		p.cache.put(k, d)
	}
	return d
}

// evalOutcome says where a decision came from.
type evalOutcome int

const (
	// outcomeDecided: the policy produced the decision.
	outcomeDecided evalOutcome = iota
	// outcomeUndefined: the query has no value for this input (a deny).
	outcomeUndefined
	// outcomeFailed: no decision came from the policy itself (timeout,
	// cancellation, evaluation error); a deny.
	outcomeFailed
)

// evalReport evaluates input and says where the decision came from.
func (p *prepared) evalReport(ctx context.Context, input ast.Value, timeout time.Duration) (d Decision, outcome evalOutcome) {
	p.evals.Add(1)
	if err := ctx.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return p.stamp(deny(ReasonTimeout)), outcomeFailed
		}
		return p.stamp(deny(ReasonCanceled)), outcomeFailed
	}
	// Cancellation is wired by hand rather than with context.WithTimeout:
	// given a context, OPA starts a goroutine per evaluation to watch it,
	// while a timer and a context callback flipping OPA's cancel flag cost
	// neither a goroutine nor a channel.
	cancel := topdown.NewCancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		timedOut.Store(true)
		cancel.Cancel()
	})
	stop := context.AfterFunc(ctx, cancel.Cancel)
	rs, err := p.pq.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalMetrics(noMetrics),
		rego.EvalExternalCancel(cancel))
	timer.Stop()
	stop()

	switch {
	case err != nil && (timedOut.Load() || errors.Is(ctx.Err(), context.DeadlineExceeded)):
		return p.stamp(deny(ReasonTimeout)), outcomeFailed
	case err != nil && ctx.Err() != nil:
		return p.stamp(deny(ReasonCanceled)), outcomeFailed
	case err != nil:
		return p.stamp(deny(truncate(ReasonError+": "+err.Error(), maxReasonBytes))), outcomeFailed
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		return p.stamp(deny(ReasonUndefined)), outcomeUndefined
	case len(rs) > 1:
		return p.stamp(deny(ReasonError + ": query has more than one result")), outcomeDecided
	}
	return p.stamp(parseDecision(rs[0].Expressions[0].Value)), outcomeDecided
}

func (p *prepared) stamp(d Decision) Decision {
	d.Revision = p.revision
	return d
}

// Revision returns the active policy's revision: the bundle's manifest
// revision, or a content hash of the loaded modules and data. It is empty
// until a policy is loaded.
func (e *Engine) Revision() string {
	if p := e.cur.Load(); p != nil {
		return p.revision
	}
	return ""
}

// Ready returns a channel closed once the first policy has been loaded.
func (e *Engine) Ready() <-chan struct{} {
	return e.ready
}

// Status reports readiness, the active revision and the last load error.
func (e *Engine) Status() Status {
	var s Status
	if p := e.cur.Load(); p != nil {
		s.Ready = true
		s.Revision = p.revision
		s.LoadedAt = p.loadedAt
	}
	e.statusMu.Lock()
	if e.lastErr != nil {
		s.LastError = e.lastErr.Error()
	}
	e.statusMu.Unlock()
	return s
}

// Close stops watching and polling and waits for the background goroutines.
// Decide keeps answering with the last policy. Close is idempotent.
func (e *Engine) Close() {
	e.closeOnce.Do(func() {
		e.stop()
		for i := len(e.closers) - 1; i >= 0; i-- { // last set up, first torn down
			e.closers[i]()
		}
		e.wg.Wait()
	})
}

// lastError returns the last load error, nil if the last load succeeded.
func (e *Engine) lastError() error {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	return e.lastErr
}

// activate compiles s and, when it compiles and its tests pass, makes it the
// active policy. An unchanged policy (same digest) is left as it is.
func (e *Engine) activate(ctx context.Context, s *snapshot) error {
	e.loadMu.Lock()
	defer e.loadMu.Unlock()

	if cur := e.cur.Load(); cur != nil && cur.digest == s.digest {
		e.setErr(nil) // the active policy is what the source holds again
		return nil
	}
	start := time.Now()
	p, err := build(ctx, s, e.cfg)
	if err != nil {
		if ctx.Err() == nil { // not a failure of the policy: the engine is closing
			e.refuse(s.revision, err)
		}
		return err
	}
	p.loadedAt = time.Now()
	e.cur.Store(p)
	e.setErr(nil)
	e.readyOnce.Do(func() { close(e.ready) })
	e.attemptedOnce.Do(func() { close(e.attempted) })
	if p.queryUndefined {
		e.log.Warn("the policy defines nothing at the query; every request will be denied as undefined",
			zap.String("query", e.cfg.Query), zap.String("revision", p.revision))
	}
	e.log.Info("policy loaded",
		zap.String("revision", p.revision),
		zap.String("source", e.source),
		zap.Int("modules", len(s.modules)),
		zap.Duration("took", p.loadedAt.Sub(start)))
	e.emit(ReloadEvent{Revision: p.revision, Source: e.source, Time: p.loadedAt})
	return nil
}

// refuse records a failed load; the active policy (if any) stays.
func (e *Engine) refuse(revision string, err error) {
	prev := e.lastError()
	e.setErr(err)
	e.attemptedOnce.Do(func() { close(e.attempted) })
	if prev != nil && prev.Error() == err.Error() {
		e.log.Debug("policy still failing to load", zap.Error(err))
		return
	}
	e.log.Error("policy refused; keeping the previous policy",
		zap.String("source", e.source),
		zap.String("refused_revision", revision),
		zap.String("active_revision", e.Revision()),
		zap.Error(err))
	e.emit(ReloadEvent{Revision: revision, Source: e.source, Err: err, Time: time.Now()})
}

func (e *Engine) setErr(err error) {
	e.statusMu.Lock()
	e.lastErr = err
	e.statusMu.Unlock()
}

func (e *Engine) emit(ev ReloadEvent) {
	if e.onReload != nil {
		e.onReload(ev)
	}
}

// build compiles s with the restricted capabilities, runs its tests when
// configured, and prepares the query. Nothing is compiled per request after
// this.
func build(ctx context.Context, s *snapshot, cfg Config) (*prepared, error) {
	compiler := newCompiler()
	if compiler.Compile(s.modules); compiler.Failed() {
		return nil, fmt.Errorf("compile policy: %w", explainCompileError(compiler.Errors))
	}
	// The store hands out AST values, so reads of data need no conversion
	// per evaluation.
	store := inmem.NewFromObjectWithOpts(s.data, inmem.OptReturnASTValuesOnRead(true))
	if cfg.RunTestsOnReload {
		if err := runReloadTests(ctx, s.modules, store); err != nil {
			return nil, err
		}
	}
	pq, err := rego.New(
		rego.Query(cfg.Query),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.Capabilities(capabilities()),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare query %s: %w", cfg.Query, explainCompileError(err))
	}
	var cache *decisionCache
	if body, err := ast.ParseBody(cfg.Query); err == nil {
		cache = newDecisionCache(compiler.Modules, body)
	}
	return &prepared{
		pq:             pq,
		revision:       s.revision,
		digest:         s.digest,
		queryUndefined: !definesQuery(compiler, s.data, cfg.Query),
		decisionRules:  decisionRules(compiler),
		cache:          cache,
	}, nil
}

// decisionRules lists the data references of rules named decision or allow
// in the compiled modules (data.envoy.authz.allow), sorted.
func decisionRules(c *ast.Compiler) []string {
	var out []string
	for _, m := range c.Modules {
		for _, r := range m.Rules {
			head := r.Head.Ref().Copy()
			if v, ok := head[0].Value.(ast.Var); ok { // a rule's name is a variable in its head
				head[0] = ast.StringTerm(string(v))
			}
			ref := m.Package.Path.Concat(head).GroundPrefix()
			last, ok := ref[len(ref)-1].Value.(ast.String)
			if ok && (last == "decision" || last == "allow") {
				out = append(out, ref.String())
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// definesQuery reports whether a query that is a plain data reference
// (data.onbehalf.authz.decision) names a rule or a data document. Other
// queries are assumed to be defined.
func definesQuery(c *ast.Compiler, data map[string]any, query string) bool {
	body, err := ast.ParseBody(query)
	if err != nil || len(body) != 1 {
		return true
	}
	term, ok := body[0].Terms.(*ast.Term)
	if !ok {
		return true
	}
	ref, ok := term.Value.(ast.Ref)
	if !ok || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() {
		return true
	}
	if len(c.GetRules(ref)) > 0 {
		return true
	}
	var node any = data
	for _, t := range ref[1:] {
		key, ok := t.Value.(ast.String)
		m, isMap := node.(map[string]any)
		if !ok || !isMap {
			return false
		}
		if node, ok = m[string(key)]; !ok {
			return false
		}
	}
	return true
}
