//! Shared rate limiting: GCRA in one Lua script, timed by the Redis server.
//!
//! # Why GCRA
//!
//! The generic cell rate algorithm ("leaky bucket as a meter") keeps one number per subject: the
//! theoretical arrival time (TAT) at which the subject's allowance is fully used up. A request is
//! allowed when `TAT + interval - now <= capacity` (with `interval = window / max` and
//! `capacity = max * interval`), and then moves TAT forward by `interval`. Compared with the
//! alternatives:
//!
//! - a fixed window (`INCR` + `EXPIRE`) lets a client send `2 * max` requests across a window
//!   boundary and then starves it until the next window;
//! - a sliding log (a sorted set of timestamps) is exact but O(max) memory and work per subject;
//! - GCRA is smooth (a client that used its burst gets one request back every `interval`), O(1)
//!   in time and memory (one short string key with a TTL), and yields every header value directly:
//!   `remaining`, "when is the bucket full again" (`reset_after`) and `retry_after`.
//!
//! A burst of exactly `max` requests is allowed from a full bucket; after that, requests are
//! allowed at the sustained rate `max / window`.
//!
//! # Why one script, and why the server's TIME
//!
//! Read-decide-write must be atomic: two app instances reading the same TAT and both writing
//! `TAT + interval` would let twice the allowance through. Redis runs a script without
//! interleaving other commands, so the script is the critical section, across every instance.
//!
//! The script reads `now` from Redis' `TIME`, not from the caller. Every app instance then measures
//! against one clock; with caller-supplied time, an instance whose clock runs 2 s behind would
//! see every bucket as less full than it is (and one running ahead would lock subjects out).
//! Redis 7 replicates a script's effects (the `SET`), not the script, so calling `TIME` before a
//! write is allowed and replicas store the same TAT.
//!
//! Scripts are sent with `EVALSHA`; `redis::Script` loads the script and retries on `NOSCRIPT`
//! (after a Redis restart or `SCRIPT FLUSH`), so the body crosses the network once per server.

use crate::{CacheError, RedisStore, keys, micros};
use std::time::Duration;

/// "At most `max` requests per `window`", enforced smoothly (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

impl Limit {
    pub const fn new(max: u32, window: Duration) -> Self {
        Self { max, window }
    }

    /// GCRA parameters in microseconds: `(interval, capacity)`, or `None` when the limit admits
    /// nothing (`max == 0`).
    ///
    /// `interval` is `window / max` rounded down to whole microseconds (at least 1), and
    /// `capacity = max * interval` rather than `window`, so a burst is exactly `max` whatever
    /// the rounding (the sustained rate is at most `max` per `window` plus rounding, < 1 ppm for
    /// realistic windows).
    pub(crate) fn gcra_params(&self) -> Option<(i64, i64)> {
        if self.max == 0 {
            return None;
        }
        // Windows beyond ~292,000 years are clamped; all values stay far below 2^53, where the
        // script's Lua doubles are still exact integers.
        let window = i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX).min(1 << 50);
        let interval = (window / i64::from(self.max)).max(1);
        Some((interval, interval.saturating_mul(i64::from(self.max))))
    }

    /// The decision for a limit that admits nothing: no Redis round trip needed.
    pub(crate) fn deny_all(&self) -> Decision {
        Decision { allowed: false, limit: 0, remaining: 0, reset_after: Duration::ZERO, retry_after: Some(self.window) }
    }
}

/// The outcome of one [`RateLimiter::check`], with what the rate-limit response headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `X-RateLimit-Limit`: the `max` of the limit checked.
    pub limit: u32,
    /// `X-RateLimit-Remaining`: requests still allowed right now (after this one, if allowed).
    pub remaining: u32,
    /// `X-RateLimit-Reset`: time until the full allowance of `max` is available again.
    pub reset_after: Duration,
    /// `Retry-After`: when denied, time until one request would be allowed; `None` when allowed.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// `reset_after` in whole seconds, rounded up (for `X-RateLimit-Reset` as delta seconds).
    pub fn reset_after_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }

    /// `retry_after` in whole seconds, rounded up and at least 1: `Retry-After` is an integer and
    /// rounding down would invite a retry that is denied again.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(d).max(1))
    }

    /// Builds a decision from GCRA quantities in microseconds (shared with the in-process limiter
    /// so both backends answer alike).
    pub(crate) fn from_gcra(limit: u32, allowed: bool, remaining: i64, reset_us: i64, retry_us: i64) -> Self {
        Self {
            allowed,
            limit,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX).min(limit),
            reset_after: micros(reset_us),
            retry_after: (!allowed).then(|| micros(retry_us)),
        }
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// One GCRA step, the same arithmetic as the Lua script (kept side by side on purpose).
/// Returns the decision and, when allowed, the new TAT to store.
pub(crate) fn gcra_step(
    now: i64,
    stored_tat: Option<i64>,
    limit: u32,
    interval: i64,
    capacity: i64,
) -> (Decision, Option<i64>) {
    let tat = stored_tat.map_or(now, |t| t.max(now));
    let new_tat = tat.saturating_add(interval);
    let allow_at = new_tat.saturating_sub(capacity);
    if allow_at > now {
        (Decision::from_gcra(limit, false, 0, tat - now, allow_at - now), None)
    } else {
        let remaining = (capacity - (new_tat - now)) / interval;
        (Decision::from_gcra(limit, true, remaining, new_tat - now, -1), Some(new_tat))
    }
}

/// KEYS[1]: the subject's TAT key. ARGV[1]: interval (µs), ARGV[2]: capacity (µs).
/// Returns `{allowed (0|1), remaining, reset_after (µs), retry_after (µs, -1 if allowed)}`.
///
/// TAT is stored as an integer string (`%.0f`): Redis turns a Lua number argument into text with
/// limited precision, which would round a µs timestamp. Values stay below 2^53, where Lua's
/// doubles are exact. A denied request writes nothing, so hammering does not push TAT further.
/// The key expires when the bucket is full again, when it carries no information.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored) or now, now)
end
local new_tat = tat + interval
local allow_at = new_tat - capacity
if allow_at > now then
  return {0, 0, tat - now, allow_at - now}
end
local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl_ms))
local remaining = math.floor((capacity - (new_tat - now)) / interval)
return {1, remaining, new_tat - now, -1}
";

/// The script's reply: allowed (0|1), remaining, reset after (µs), retry after (µs, -1 if allowed).
type GcraReply = (i64, i64, i64, i64);

/// The shared, Redis-backed rate limiter.
#[derive(Clone)]
pub struct RateLimiter {
    store: RedisStore,
    script: redis::Script,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("store", &self.store).finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(store: RedisStore) -> Self {
        Self { store, script: redis::Script::new(GCRA_SCRIPT) }
    }

    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// The key holding `subject`'s TAT under `class`: `prefix + "rl:" + escape(class) + ":" +
    /// digest(subject)`. A subject such as `"a:b*"` is hashed, so it can neither reach another
    /// subject's key nor act as a pattern.
    pub fn key_for(&self, class_key: &str, subject: &str) -> String {
        self.store.key(&format!("rl:{}:{}", keys::escape(class_key), keys::digest(subject)))
    }

    /// Counts one request of `subject` against `limit` in `class_key` (e.g. `"global"`,
    /// `"login"`), atomically across every app instance sharing this Redis.
    ///
    /// Use one class per distinct limit: the bucket is keyed by class and subject, not by the
    /// limit's numbers, so checking one subject against two limits in one class mixes them.
    pub async fn check(&self, class_key: &str, subject: &str, limit: Limit) -> Result<Decision, CacheError> {
        let Some((interval, capacity)) = limit.gcra_params() else {
            return Ok(limit.deny_all());
        };
        let key = self.key_for(class_key, subject);
        let script = &self.script;
        let (allowed, remaining, reset_us, retry_us): (i64, i64, i64, i64) = self
            .store
            .with_connection(|mut conn| async move {
                Ok(script.key(&key).arg(interval).arg(capacity).invoke_async(&mut conn).await?)
            })
            .await?;
        Ok(Decision::from_gcra(limit.max, allowed == 1, remaining, reset_us, retry_us))
    }

    /// [`check`](Self::check) with other commands sent in the same round trip: a pipeline, not a
    /// transaction. Each command is still atomic on its own, nothing is atomic across them, and
    /// the keys may live in different Redis Cluster slots (`Connection::send_all` sends one
    /// pipeline per slot, concurrently). Returns the decision and the
    /// companions' replies in order; a companion Redis refused is returned as its error value
    /// (`redis::Value::ServerError`), for the caller to judge.
    ///
    /// The script is sent by hash. When Redis does not have it cached (a restart, `SCRIPT
    /// FLUSH`), the companions have run already; only the check is sent again, loading the script.
    pub(crate) async fn check_with(
        &self,
        class_key: &str,
        subject: &str,
        limit: Limit,
        companions: Vec<redis::Cmd>,
    ) -> Result<(Decision, Vec<redis::Value>), CacheError> {
        let params = limit.gcra_params();
        let expected = companions.len();
        let key = self.key_for(class_key, subject);
        let script = &self.script;
        let (gcra, replies): (Option<GcraReply>, Vec<redis::Value>) = self
            .store
            .with_connection(|mut conn| async move {
                // A limit that admits nothing needs no script (see `check`).
                let Some((interval, capacity)) = params else {
                    return Ok((None, conn.send_all(companions).await?));
                };
                let mut commands = companions;
                let mut evalsha = redis::cmd("EVALSHA");
                evalsha.arg(script.get_hash()).arg(1).arg(&key).arg(interval).arg(capacity);
                commands.push(evalsha);
                let mut replies: Vec<redis::Value> = conn.send_all(commands).await?;
                let check = replies.pop().filter(|_| replies.len() == expected).ok_or_else(|| {
                    CacheError::Unavailable(format!("a pipeline of {} commands got other replies", expected + 1))
                })?;
                let gcra: GcraReply = match check {
                    redis::Value::ServerError(error) if error.kind() == Some(redis::ServerErrorKind::NoScript) => {
                        script.key(&key).arg(interval).arg(capacity).invoke_async(&mut conn).await?
                    }
                    reply => redis::from_redis_value(reply).map_err(redis::RedisError::from)?,
                };
                Ok((Some(gcra), replies))
            })
            .await?;
        let decision = match gcra {
            Some((allowed, remaining, reset_us, retry_us)) => {
                Decision::from_gcra(limit.max, allowed == 1, remaining, reset_us, retry_us)
            }
            None => limit.deny_all(),
        };
        Ok((decision, replies))
    }

    /// Forgets `subject`'s usage in `class_key` (an operator's "unthrottle").
    pub async fn reset(&self, class_key: &str, subject: &str) -> Result<(), CacheError> {
        let key = self.key_for(class_key, subject);
        self.store
            .with_connection(|mut conn| async move {
                let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_make_bursts_exact() {
        let limit = Limit::new(3, Duration::from_secs(1));
        assert_eq!(limit.gcra_params(), Some((333_333, 999_999)));
        let limit = Limit::new(4, Duration::from_micros(10));
        assert_eq!(limit.gcra_params(), Some((2, 8)));
        assert_eq!(Limit::new(0, Duration::from_secs(1)).gcra_params(), None);
        // Zero window: interval clamps to 1 µs.
        assert_eq!(Limit::new(5, Duration::ZERO).gcra_params(), Some((1, 5)));
    }

    #[test]
    fn gcra_allows_burst_then_paces() {
        let limit = Limit::new(4, Duration::from_micros(10));
        let (interval, capacity) = limit.gcra_params().unwrap();
        let mut tat = None;
        let now = 1_000;
        for expected_remaining in [3, 2, 1, 0] {
            let (d, new) = gcra_step(now, tat, 4, interval, capacity);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            assert_eq!(d.retry_after, None);
            tat = new;
        }
        let (d, new) = gcra_step(now, tat, 4, interval, capacity);
        assert!(!d.allowed);
        assert!(new.is_none());
        assert_eq!(d.retry_after, Some(Duration::from_micros(2)));
        assert_eq!(d.reset_after, Duration::from_micros(8));
        let (d, _) = gcra_step(now + 2, tat, 4, interval, capacity);
        assert!(d.allowed);
    }

    #[test]
    fn header_seconds_round_up() {
        let d = Decision::from_gcra(10, false, 0, 1_500_000, 1);
        assert_eq!(d.reset_after_secs(), 2);
        assert_eq!(d.retry_after_secs(), Some(1));
        let d = Decision::from_gcra(10, true, 9, 0, -1);
        assert_eq!(d.reset_after_secs(), 0);
        assert_eq!(d.retry_after_secs(), None);
    }
}
