package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Rate is a token bucket's shape: Count events per Per on average, with
// at most Burst at once.
type Rate struct {
	Count int
	Per   time.Duration
	Burst int
}

// maxRateCount bounds the count of a rate: far above any API's quota, low
// enough that the bucket arithmetic stays exact.
const maxRateCount = 1_000_000_000

// Bounds of a rate's period: a second is the finest grain an operator
// writes a quota in; a week is longer than any provider's quota window.
const (
	minPer = time.Millisecond
	maxPer = 7 * 24 * time.Hour
)

// errRate is what every malformed rate wraps.
var errRate = errors.New(`must be COUNT/PERIOD, such as "60/m", "10/s", "1000/h", "5000/d" or "5/10s"`)

// ParseRate reads "COUNT/PERIOD": a positive count and a period that is s,
// m, h, d (one second, minute, hour or day) or a duration ("10s", "1m30s").
// The burst is the count; set Rate.Burst to change it.
func ParseRate(s string) (Rate, error) {
	count, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, errRate
	}
	n, err := strconv.Atoi(strings.TrimSpace(count))
	if err != nil || n < 1 || n > maxRateCount {
		return Rate{}, fmt.Errorf("%w: the count must be a whole number from 1 to %d", errRate, maxRateCount)
	}
	var d time.Duration
	switch per = strings.TrimSpace(per); per {
	case "s", "sec", "second":
		d = time.Second
	case "m", "min", "minute":
		d = time.Minute
	case "h", "hour":
		d = time.Hour
	case "d", "day":
		d = 24 * time.Hour
	default:
		d, err = time.ParseDuration(per)
		if err != nil {
			return Rate{}, errRate
		}
	}
	if d < minPer || d > maxPer {
		return Rate{}, fmt.Errorf("%w: the period must be between %s and %s", errRate, minPer, maxPer)
	}
	return Rate{Count: n, Per: d, Burst: n}, nil
}

// Validate reports what keeps r from being a bucket.
func (r Rate) Validate() error {
	switch {
	case r.Count < 1 || r.Count > maxRateCount:
		return fmt.Errorf("the count must be from 1 to %d", maxRateCount)
	case r.Per < minPer || r.Per > maxPer:
		return fmt.Errorf("the period must be between %s and %s", minPer, maxPer)
	case r.Burst < 1 || r.Burst > maxRateCount:
		return fmt.Errorf("burst must be from 1 to %d", maxRateCount)
	}
	return nil
}

// String writes r the way ParseRate reads it, with the burst when it is
// not the count.
func (r Rate) String() string {
	s := strconv.Itoa(r.Count) + "/" + perString(r.Per)
	if r.Burst != r.Count {
		s += " burst " + strconv.Itoa(r.Burst)
	}
	return s
}

func perString(d time.Duration) string {
	switch d {
	case time.Second:
		return "s"
	case time.Minute:
		return "m"
	case time.Hour:
		return "h"
	case 24 * time.Hour:
		return "d"
	}
	return d.String()
}

// limit is r's refill rate in events per second, as x/time/rate takes it.
func (r Rate) limit() rate.Limit {
	return rate.Limit(float64(r.Count) / r.Per.Seconds())
}

// interval is the time one token takes to refill, in microseconds, at
// least one (the shared engine's grain).
func (r Rate) interval() int64 {
	us := float64(r.Per.Microseconds()) / float64(r.Count)
	return max(1, int64(math.Round(us)))
}
