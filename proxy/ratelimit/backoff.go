package ratelimit

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Reset formats of a provider's rate-limit reset header
// (ProviderHeaders.ResetFormat).
const (
	// ResetEpochSeconds: Unix time in seconds (GitHub's x-ratelimit-reset).
	ResetEpochSeconds = "epoch_seconds"
	// ResetEpochMillis: Unix time in milliseconds.
	ResetEpochMillis = "epoch_millis"
	// ResetDeltaSeconds: seconds from now.
	ResetDeltaSeconds = "delta_seconds"
	// ResetHTTPDate: an HTTP date, as Retry-After may carry.
	ResetHTTPDate = "http_date"
)

// ResetFormats lists the reset formats, for configuration errors.
var ResetFormats = []string{ResetEpochSeconds, ResetEpochMillis, ResetDeltaSeconds, ResetHTTPDate}

// ProviderHeaders are the response headers through which a provider says
// its quota for the user is spent, besides Retry-After: when Remaining is
// "0", the quota refills at the time Reset says.
type ProviderHeaders struct {
	// Remaining is the header counting the requests left.
	Remaining string
	// Reset is the header saying when the quota refills, in ResetFormat.
	Reset       string
	ResetFormat string
}

// Backoff reads, from one upstream answer, until when the provider asks
// not to be called again: Retry-After on a 429 or 503 (seconds or an HTTP
// date), or the provider's headers saying the quota is spent (on any
// status: the answer that spent the last request is itself a success). It
// returns false when the answer asks for nothing.
func Backoff(now time.Time, status int, h http.Header, ph ProviderHeaders) (time.Time, bool) {
	var until time.Time
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		if t, ok := parseReset(now, h.Get("Retry-After"), ""); ok {
			until = t
		}
	}
	if ph.Remaining != "" && ph.Reset != "" && strings.TrimSpace(h.Get(ph.Remaining)) == "0" {
		if t, ok := parseReset(now, h.Get(ph.Reset), ph.ResetFormat); ok && t.After(until) {
			until = t
		}
	}
	if !until.After(now) {
		return time.Time{}, false
	}
	return until, true
}

// parseReset reads a reset time in format; "" means Retry-After's own
// (delta seconds or an HTTP date).
func parseReset(now time.Time, v, format string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	num := func() (int64, bool) {
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil && n >= 0
	}
	switch format {
	case "", ResetDeltaSeconds:
		if n, ok := num(); ok {
			return now.Add(time.Duration(min(n, int64(maxPer/time.Second))) * time.Second), true
		}
		if format != "" {
			return time.Time{}, false
		}
		t, err := http.ParseTime(v)
		return t, err == nil
	case ResetEpochSeconds:
		n, ok := num()
		return time.Unix(n, 0), ok
	case ResetEpochMillis:
		n, ok := num()
		return time.UnixMilli(n), ok
	case ResetHTTPDate:
		t, err := http.ParseTime(v)
		return t, err == nil
	}
	return time.Time{}, false
}

// blockKey is one user's standing with one provider.
type blockKey struct{ provider, user string }

// blocks remembers until when each (provider, user) must not be called,
// bounded like the buckets. Reads are the common case (every routed request
// while any block is held) and take a read lock only.
type blocks struct {
	mu  sync.RWMutex
	lru *simplelru.LRU[blockKey, time.Time]
	n   atomic.Int32 // entries held, so that none costs no lock
}

func newBlocks(size int) *blocks {
	lru, _ := simplelru.NewLRU[blockKey, time.Time](size, nil)
	return &blocks{lru: lru}
}

// until returns when provider may be called for user again, or false when
// it may be now.
func (b *blocks) until(now time.Time, provider, user string) (time.Time, bool) {
	if b.n.Load() == 0 {
		return time.Time{}, false
	}
	k := blockKey{provider, user}
	b.mu.RLock()
	t, ok := b.lru.Peek(k)
	b.mu.RUnlock()
	if !ok {
		return time.Time{}, false
	}
	if !t.After(now) {
		b.mu.Lock()
		if t2, ok := b.lru.Peek(k); ok && !t2.After(now) {
			b.lru.Remove(k)
			b.n.Store(int32(b.lru.Len()))
		}
		b.mu.Unlock()
		return time.Time{}, false
	}
	return t, true
}

// set blocks provider for user until t, unless a later block is held.
func (b *blocks) set(provider, user string, t time.Time) {
	k := blockKey{provider, user}
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.lru.Peek(k); ok && !t.After(old) {
		return
	}
	b.lru.Add(k, t)
	b.n.Store(int32(b.lru.Len()))
}
