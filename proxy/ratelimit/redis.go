package ratelimit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/onbehalf-dev/onbehalf/internal/outbound"
)

// The shared engine: one Redis server holds every bucket as a GCRA
// "theoretical arrival time" (the generic cell rate algorithm, the form of
// a token bucket that needs one number per key; go-redis/redis_rate and
// most Redis limiters use it). One Lua script takes a request's tokens from
// all its buckets or none — a request over any limit takes from no bucket,
// as with the local engine — in one round trip, and reads the clock from
// Redis (TIME), so replicas whose clocks differ still agree.
//
// Per key: interval is the time one token takes to refill and tolerance
// the burst's worth of it (interval × burst), both in microseconds. A
// request of n tokens at now moves the key's arrival time tat to
// max(tat, now) + n × interval, and may go if that is at most now +
// tolerance. The key expires when its bucket would be full again.
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local worst, worst_i = 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3*i-2])
  local tolerance = tonumber(ARGV[3*i-1])
  local n = tonumber(ARGV[3*i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * n
  local wait = new_tat - tolerance - now
  if wait > 0 and (worst_i == 0 or wait > worst) then
    worst, worst_i = wait, i
  end
  tats[i] = new_tat
end
if worst_i > 0 then
  return {0, worst_i, math.ceil(worst)}
end
for i, key in ipairs(KEYS) do
  local ttl = math.max(1, math.ceil((tats[i] - now) / 1000))
  redis.call('SET', key, string.format('%d', tats[i]), 'PX', ttl)
end
return {1, 0, 0}
`)

// maxTolerance caps a bucket's tolerance (30 years in µs): the script's
// numbers are doubles, exact below 2^53, and no real burst lasts longer.
const maxTolerance = int64(30 * 365 * 24 * time.Hour / time.Microsecond)

// redisEngine is the shared engine.
type redisEngine struct {
	client  *redis.Client
	prefix  string
	timeout time.Duration
}

var _ engine = (*redisEngine)(nil)

// maxRedisConns bounds the connections to Redis: each check holds one for
// a round trip of well under a millisecond, so a few serve thousands of
// requests a second.
const maxRedisConns = 16

func newRedis(c RedisConfig) (*redisEngine, error) {
	opt := &redis.Options{
		Addr:     c.Address,
		Username: c.Username,
		DB:       c.DB,
		// One attempt per check: a failed check is decided locally, and
		// a retry would only make the request wait longer.
		MaxRetries:            -1,
		DialTimeout:           c.Timeout,
		ReadTimeout:           c.Timeout,
		WriteTimeout:          c.Timeout,
		ContextTimeoutEnabled: true,
		PoolSize:              maxRedisConns,
		PoolTimeout:           c.Timeout,
		// No CLIENT SETINFO or maintenance-notification handshake: plain
		// Redis 6 and 7 servers need neither.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read redis.password_file: %w", err)
		}
		opt.Password = strings.TrimRight(string(b), "\r\n")
	}
	if c.TLS {
		roots, err := outbound.Roots(nil, c.CAFile, "redis.ca_file")
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(c.Address)
		if err != nil {
			return nil, fmt.Errorf("redis.address: %w", err)
		}
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: host}
	}
	return &redisEngine{client: redis.NewClient(opt), prefix: c.KeyPrefix, timeout: c.Timeout}, nil
}

// errRedisAnswer is an answer of the script that is not the expected shape.
var errRedisAnswer = errors.New("unexpected answer from the rate-limit script")

func (r *redisEngine) take(ctx context.Context, _ time.Time, bs []Bucket) (verdict, error) {
	keys := make([]string, len(bs))
	args := make([]any, 0, 3*len(bs))
	for i := range bs {
		b := &bs[i]
		keys[i] = r.prefix + b.Key
		interval := b.Rate.interval()
		tolerance := min(maxTolerance, interval*int64(b.Rate.Burst))
		args = append(args, interval, tolerance, b.N)
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	res, err := takeScript.Run(ctx, r.client, keys, args...).Int64Slice()
	if err != nil {
		return verdict{}, fmt.Errorf("redis: %w", err)
	}
	if len(res) != 3 {
		return verdict{}, errRedisAnswer
	}
	if res[0] == 1 {
		return verdict{ok: true, refused: -1}, nil
	}
	i := int(res[1]) - 1
	if i < 0 || i >= len(bs) {
		return verdict{}, errRedisAnswer
	}
	return verdict{refused: i, wait: time.Duration(res[2]) * time.Microsecond}, nil
}

func (r *redisEngine) close() error { return r.client.Close() }
