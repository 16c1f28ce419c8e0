package ratelimit

import (
	"context"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// Bucket is one token bucket a request takes from.
type Bucket struct {
	// Key names the bucket: the rule's name (or "policy") and the values
	// of what it is keyed by, as audit records show it (limit_key).
	Key  string
	Rate Rate
	// N is how many tokens the request takes.
	N int
	// reason is what set the bucket (ReasonRule or ReasonPolicy).
	reason string
}

// verdict is an engine's answer: every bucket had its tokens (ok), or the
// index of the one that kept the request waiting longest, and for how long.
type verdict struct {
	ok      bool
	refused int
	wait    time.Duration
}

// engine takes tokens from buckets, all or none. Buckets are sorted by key
// and hold each key once.
type engine interface {
	take(ctx context.Context, now time.Time, bs []Bucket) (verdict, error)
}

// localShards spreads the buckets over independently locked LRUs, so that
// concurrent requests for different keys rarely wait for each other.
const localShards = 32

// local keeps buckets in memory: x/time/rate limiters in sharded LRUs
// bounded to maxKeys in all. It is safe for concurrent use.
type local struct {
	seed    maphash.Seed
	shards  [localShards]localShard
	evicted atomic.Uint64
}

type localShard struct {
	mu  sync.Mutex
	lru *simplelru.LRU[string, *localBucket]
}

// localBucket is one limiter; mu serialises the check-then-take of a
// request across every bucket it takes from (see take).
type localBucket struct {
	mu   sync.Mutex
	lim  *rate.Limiter
	rate Rate
}

var _ engine = (*local)(nil)

func newLocal(maxKeys int) *local {
	l := &local{seed: maphash.MakeSeed()}
	per := max(1, maxKeys/localShards)
	for i := range l.shards {
		// An evicted bucket is dropped; a request that still holds it
		// finishes on it, and the next one for its key starts full.
		lru, _ := simplelru.NewLRU(per, func(string, *localBucket) { l.evicted.Add(1) })
		l.shards[i].lru = lru
	}
	return l
}

// bucket returns the limiter of key, created full when new, with r as its
// shape (a policy may change a key's rate between decisions).
func (l *local) bucket(key string, r Rate) *localBucket {
	sh := &l.shards[maphash.String(l.seed, key)%localShards]
	sh.mu.Lock()
	b, ok := sh.lru.Get(key)
	if !ok {
		b = &localBucket{lim: rate.NewLimiter(r.limit(), r.Burst), rate: r}
		sh.lru.Add(key, b)
	}
	sh.mu.Unlock()
	return b
}

// take takes each bucket's tokens, or none when any bucket lacks them. The
// buckets' locks are held in key order while all are checked and then
// taken from, so that concurrent requests get exactly the tokens there are.
func (l *local) take(_ context.Context, now time.Time, bs []Bucket) (verdict, error) {
	var one [1]*localBucket
	held := one[:0]
	if len(bs) > 1 {
		held = make([]*localBucket, 0, len(bs))
	}
	for i := range bs {
		lb := l.bucket(bs[i].Key, bs[i].Rate)
		lb.mu.Lock()
		held = append(held, lb)
	}
	defer func() {
		for _, lb := range held {
			lb.mu.Unlock()
		}
	}()
	v := verdict{ok: true, refused: -1}
	for i, lb := range held {
		r := bs[i].Rate
		if lb.rate != r {
			lb.lim.SetLimitAt(now, r.limit())
			lb.lim.SetBurstAt(now, r.Burst)
			lb.rate = r
		}
		need := float64(bs[i].N)
		have := lb.lim.TokensAt(now)
		if have >= need {
			continue
		}
		wait := r.Per // more than the bucket holds: never, so a period
		if bs[i].N <= r.Burst {
			wait = time.Duration(math.Ceil((need - have) / float64(r.limit()) * float64(time.Second)))
		}
		if v.ok || wait > v.wait {
			v = verdict{refused: i, wait: wait}
		}
	}
	if !v.ok {
		return v, nil
	}
	for i, lb := range held {
		lb.lim.AllowN(now, bs[i].N)
	}
	return v, nil
}

// len returns how many buckets are held.
func (l *local) len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += sh.lru.Len()
		sh.mu.Unlock()
	}
	return n
}
