package injector

import (
	"cmp"
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// Use recording limits.
const (
	// UseInterval is the shortest time between two notes of one grant's
	// use by one sidecar: the apps page says "3 minutes ago", not "3
	// seconds ago", and a busy agent must not turn into a store write per
	// request.
	UseInterval = time.Minute
	// useQueueSize bounds the notes waiting for the writer. A store that
	// answers in milliseconds drains it at once; one that is down fills it
	// and later notes are dropped, never waited for.
	useQueueSize = 1024
	// maxTrackedGrants bounds the memory of when each grant was last
	// noted (about 100 bytes each). Beyond it, entries older than
	// UseInterval are swept; if none is, the note is dropped.
	maxTrackedGrants = 100_000
	// useWriteTimeout bounds one store write: a note that cannot land in
	// it is worth less than the next one.
	useWriteTimeout = 5 * time.Second
	// DefaultUseWriteRate bounds the notes one sidecar writes a second,
	// and useWriteBurst how many it writes at once after a quiet spell.
	// A note costs the store a read and a write: unbounded, a sidecar
	// acting for 10,000 people a minute spent half a core of Vault's CPU
	// on them (docs/benchmarks.md, "Many users"). At 20 a second a
	// sidecar notes 1,200 grants a minute; beyond that, notes wait in the
	// queue or are dropped and taken at the grant's next use, so "last
	// used" lags under load but keeps the time of the use it notes.
	DefaultUseWriteRate = 20
	useWriteBurst       = 20
)

// Outcomes of a use note, for metrics.
const (
	UseWritten = "written"
	UseDropped = "dropped"
	UseFailed  = "failed"
)

// UseOptions configure a UseRecorder.
type UseOptions struct {
	// Logger receives failed writes at debug level (a store outage is
	// already reported by the token path); nil discards.
	Logger *zap.Logger
	// Observe, when set, is called with UseWritten, UseDropped or
	// UseFailed for every note that was queued or dropped.
	Observe func(outcome string)
	// WriteRate is the most notes written a second; zero means
	// DefaultUseWriteRate.
	WriteRate float64
}

// UseRecorder notes in the store's activity records that grants were used
// and by which agent, off the request path: Used never blocks and never
// touches the store; one goroutine writes the notes. Each grant is noted at
// most once per UseInterval; a note that finds the queue full is dropped.
//
// A UseRecorder is safe for concurrent use. Close stops its goroutine.
type UseRecorder struct {
	st      store.ActivityStore
	log     *zap.Logger
	observe func(string)

	mu         sync.RWMutex
	last       map[useKey]time.Time // when each grant's use was last queued
	maxTracked int                  // maxTrackedGrants; smaller in tests

	queue chan useNote
	limit *rate.Limiter
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// useKey names a grant.
type useKey struct{ provider, user string }

// useNote is one use waiting to be written.
type useNote struct {
	key   useKey
	agent string
	at    time.Time
}

// NewUseRecorder starts a recorder writing to st.
func NewUseRecorder(st store.ActivityStore, o UseOptions) *UseRecorder {
	r := &UseRecorder{
		st:         st,
		log:        o.Logger,
		observe:    o.Observe,
		last:       make(map[useKey]time.Time),
		maxTracked: maxTrackedGrants,
		queue:      make(chan useNote, useQueueSize),
		limit:      rate.NewLimiter(rate.Limit(cmp.Or(o.WriteRate, DefaultUseWriteRate)), useWriteBurst),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.observe == nil {
		r.observe = func(string) {}
	}
	go r.run()
	return r
}

// Used notes that the grant of user at provider was injected at now (the
// request's start: reading the clock again would cost more than the rest)
// for agent. It returns at once: within UseInterval of the grant's last
// note it only reads a map under a shared lock; otherwise it queues a note,
// or drops it when the queue is full.
func (r *UseRecorder) Used(provider, user, agent string, now time.Time) {
	k := useKey{provider, user}
	r.mu.RLock()
	last, ok := r.last[k]
	r.mu.RUnlock()
	if ok && now.Sub(last) < UseInterval {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.last[k]; ok && now.Sub(last) < UseInterval {
		return // another request queued it meanwhile
	}
	if _, ok := r.last[k]; !ok && len(r.last) >= r.maxTracked && !r.sweep(now) {
		r.observe(UseDropped)
		return
	}
	select {
	case r.queue <- useNote{key: k, agent: agent, at: now}:
		r.last[k] = now
	default:
		r.observe(UseDropped)
	}
}

// sweep forgets grants last noted UseInterval or more ago (their next use
// is noted anyway) and reports whether that made room. r.mu is held.
func (r *UseRecorder) sweep(now time.Time) bool {
	for k, t := range r.last {
		if now.Sub(t) >= UseInterval {
			delete(r.last, k)
		}
	}
	return len(r.last) < r.maxTracked
}

// run writes queued notes, at most r.limit a second, until Close.
func (r *UseRecorder) run() {
	defer close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case n := <-r.queue:
			// Close cuts the wait short, not the note taken.
			_ = r.limit.Wait(ctx)
			r.write(context.Background(), n)
		case <-r.stop:
			return
		}
	}
}

func (r *UseRecorder) write(ctx context.Context, n useNote) {
	ctx, cancel := context.WithTimeout(ctx, useWriteTimeout)
	defer cancel()
	err := r.st.RecordActivity(ctx, n.key.provider, n.key.user, store.Activity{LastUsedAt: n.at, LastUsedBy: n.agent})
	if err != nil {
		r.observe(UseFailed)
		r.log.Debug("grant use not recorded", zap.String("provider", n.key.provider), zap.String("user", n.key.user), zap.Error(err))
		return
	}
	r.observe(UseWritten)
}

// Close writes the notes already queued until ctx ends, then stops the
// writer; notes still queued then are dropped. Used may still be called
// after Close: its notes are never written.
func (r *UseRecorder) Close(ctx context.Context) {
	r.once.Do(func() {
	drain:
		for {
			select {
			case n := <-r.queue:
				if ctx.Err() != nil {
					r.observe(UseDropped)
					continue
				}
				r.write(ctx, n)
			default:
				break drain
			}
		}
		close(r.stop)
	})
	<-r.done
}
