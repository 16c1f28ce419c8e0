package oauth

import (
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Defaults and bounds of RefreshConfig.
const (
	// DefaultLeaseTTL is the lifetime of a refresh lease between two
	// heartbeats. The holder renews it every third of it while its refresh
	// (or the store write after it) is in flight, so it runs out only when
	// the holder stops: then peers wait for it at most this long.
	DefaultLeaseTTL = 15 * time.Second
	// DefaultTakeoverAfter is how long a refresh lease that ran out is
	// still left to its holder before a peer presents the refresh token the
	// holder may have spent. It covers a holder that is paused rather than
	// dead (a stopped container, a VM migration, a long GC pause) and comes
	// back to store what the provider gave it.
	DefaultTakeoverAfter = time.Minute
	// DefaultAnswerDeadline is how long a refresh request that was sent
	// waits for the provider's answer, in the background once the agent's
	// request gave up: a slow provider may still rotate the token, and the
	// answer holds the only copy of the new one.
	DefaultAnswerDeadline = 2 * time.Minute

	// minLeaseTTL is the shortest lease_ttl: heartbeats every third of it
	// must have time for a store round trip.
	minLeaseTTL = time.Second
	// maxTakeoverAfter caps takeover_after: a grant whose holder died stays
	// unusable (when its access token expired) for this long.
	maxTakeoverAfter = time.Hour
	// minTakeoverAfter and minAnswerDeadline are the least values that can
	// be set; tests use short ones.
	minTakeoverAfter  = time.Second
	minAnswerDeadline = time.Second
	// maxAnswerDeadline caps answer_deadline.
	maxAnswerDeadline = 30 * time.Minute
)

// RefreshConfig configures the refresh protocol shared by every provider
// (the sidecar's refresh section). A zero duration selects its default.
type RefreshConfig struct {
	// LeaseTTL is the refresh lease's lifetime between heartbeats.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// TakeoverAfter is how long a run-out refresh lease is still left to
	// its holder when the holder may have spent the refresh token (the
	// grant's generation did not advance). Peers then present the token
	// once; if the provider refuses it, the grant is marked
	// reconnect_required with the reason refresh_lost. A provider with a
	// refresh_reuse_grace lets peers take over at once within the grace.
	TakeoverAfter time.Duration `yaml:"takeover_after"`
	// AnswerDeadline bounds how long a sent refresh request waits for the
	// provider's answer.
	AnswerDeadline time.Duration `yaml:"answer_deadline"`
}

// DefaultRefreshConfig returns the defaults.
func DefaultRefreshConfig() RefreshConfig {
	return RefreshConfig{
		LeaseTTL:       DefaultLeaseTTL,
		TakeoverAfter:  DefaultTakeoverAfter,
		AnswerDeadline: DefaultAnswerDeadline,
	}
}

// withDefaults returns c with zero durations replaced by the defaults.
func (c RefreshConfig) withDefaults() RefreshConfig {
	d := DefaultRefreshConfig()
	if c.LeaseTTL == 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.TakeoverAfter == 0 {
		c.TakeoverAfter = d.TakeoverAfter
	}
	if c.AnswerDeadline == 0 {
		c.AnswerDeadline = d.AnswerDeadline
	}
	return c
}

// Validate reports every problem with c at once, as an errors.Join of
// *config.FieldError with paths relative to the refresh section. Zero
// durations are valid (they select the defaults).
func (c RefreshConfig) Validate() error {
	var p config.Problems
	if c.LeaseTTL != 0 && (c.LeaseTTL < minLeaseTTL || c.LeaseTTL > store.MaxLeaseTTL) {
		p.Addf("lease_ttl", "must be between %s and %s", minLeaseTTL, store.MaxLeaseTTL)
	}
	if c.TakeoverAfter != 0 && (c.TakeoverAfter < minTakeoverAfter || c.TakeoverAfter > maxTakeoverAfter) {
		p.Addf("takeover_after", "must be between %s and %s", minTakeoverAfter, maxTakeoverAfter)
	}
	if c.AnswerDeadline != 0 && (c.AnswerDeadline < minAnswerDeadline || c.AnswerDeadline > maxAnswerDeadline) {
		p.Addf("answer_deadline", "must be between %s and %s", minAnswerDeadline, maxAnswerDeadline)
	}
	return p.Err()
}

// CheckTimeout reports a provider whose timeout exceeds c's answer
// deadline (a sent refresh would be abandoned before the agent's request
// stops waiting for it), as a message for the provider's timeout, or "".
func (c RefreshConfig) CheckTimeout(pc ProviderConfig) string {
	c = c.withDefaults()
	if pc.Timeout > c.AnswerDeadline {
		return "must not exceed refresh.answer_deadline (" + c.AnswerDeadline.String() + ")"
	}
	return ""
}
