//! The in-process limiter used while Redis is unreachable, and the wrapper that chooses.
//!
//! # Why a fallback at all, and its limits
//!
//! Without Redis there is no shared count. Refusing every request would turn a cache outage into a
//! full outage; allowing everything would drop abuse protection exactly when an attacker may have
//! caused the outage. The fallback keeps a per-instance limit: with `n` instances the effective
//! limit is up to `n * max`, which is still a limit. Routes where that is not good enough (login)
//! should fail closed instead: call [`ResilientLimiter::check`] and refuse when it answers
//! [`Backend::Fallback`], or use the [`RateLimiter`] directly and refuse on error.

use crate::rate_limit::gcra_step;
use crate::{CacheError, Claim, Decision, IdempotencyClaims, IpBlockList, Limit, RateLimiter};
use kernel::Clock;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// GCRA in process memory, with the same [`Limit`] semantics as [`RateLimiter`].
///
/// Memory is bounded: at most `max_subjects` buckets are tracked. When a new subject arrives at
/// the cap, the bucket with the oldest TAT is evicted. That is the subject whose allowance is
/// closest to full again (a bucket whose TAT has passed is exactly a full one and carries no
/// information), so a flood of fresh subjects pushes out idle subjects first and the throttled
/// ones last. Expired buckets are also dropped as requests pass, so idle memory shrinks.
///
/// Time comes from a [`kernel::Clock`], so tests control it. If the wall clock steps backwards,
/// buckets look fuller for a while (stricter, never looser).
pub struct FallbackLimiter {
    clock: Arc<dyn Clock>,
    max_subjects: usize,
    hasher: RandomState,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Subject hash -> TAT (µs since the Unix epoch).
    tats: HashMap<u64, i64>,
    /// The same entries ordered by TAT, for eviction and expiry.
    by_tat: BTreeSet<(i64, u64)>,
}

impl std::fmt::Debug for FallbackLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLimiter")
            .field("max_subjects", &self.max_subjects)
            .field("tracked", &self.len())
            .finish_non_exhaustive()
    }
}

impl FallbackLimiter {
    /// Default cap on tracked subjects: about 100,000 buckets is a few MiB.
    pub const DEFAULT_MAX_SUBJECTS: usize = 100_000;

    pub fn new(clock: Arc<dyn Clock>, max_subjects: usize) -> Self {
        Self { clock, max_subjects: max_subjects.max(1), hasher: RandomState::new(), state: Mutex::default() }
    }

    /// Counts one request, like [`RateLimiter::check`] but for this process only.
    pub fn check(&self, class_key: &str, subject: &str, limit: Limit) -> Decision {
        let Some((interval, capacity)) = limit.gcra_params() else {
            return limit.deny_all();
        };
        // Subjects are stored as a keyed 64-bit hash: fixed size per entry whatever the subject's
        // length, and the per-process random key stops anyone crafting collisions.
        let id = self.hasher.hash_one((class_key, subject));
        let now = now_micros(self.clock.as_ref());
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.drop_expired(now, 4);
        let stored = state.tats.get(&id).copied();
        let (decision, new_tat) = gcra_step(now, stored, limit.max, interval, capacity);
        if let Some(new_tat) = new_tat {
            if let Some(old) = stored {
                state.by_tat.remove(&(old, id));
            } else if state.tats.len() >= self.max_subjects {
                state.evict_oldest();
            }
            state.tats.insert(id, new_tat);
            state.by_tat.insert((new_tat, id));
        }
        decision
    }

    /// Number of subjects currently tracked.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).tats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }
}

impl State {
    /// Drops up to `budget` buckets that are full again: amortised O(log n) per request.
    fn drop_expired(&mut self, now: i64, budget: usize) {
        for _ in 0..budget {
            match self.by_tat.first() {
                Some(&(tat, id)) if tat <= now => {
                    self.by_tat.pop_first();
                    self.tats.remove(&id);
                }
                _ => break,
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((_, id)) = self.by_tat.pop_first() {
            self.tats.remove(&id);
        }
    }
}

fn now_micros(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now().unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// Which limiter answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The shared Redis limiter: the limit holds across all instances.
    Redis,
    /// The in-process fallback: Redis was unreachable; the limit holds per instance only.
    Fallback,
}

/// The answer of [`ResilientLimiter::check_ip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCheck {
    /// Whether the address is blocked; `None` when the block list could not be read (Redis
    /// unavailable): the caller decides whether to fail open or closed.
    pub blocked: Option<bool>,
    pub decision: Decision,
    pub backend: Backend,
}

/// The idempotency claims [`ResilientLimiter::check_and_claim`] makes: `event_ids` under
/// `namespace`, each for `ttl`; and, when `sender` is set, whether that address is on the block
/// list, asked in the same round trip.
#[derive(Debug, Clone, Copy)]
pub struct ClaimsToMake<'a> {
    pub store: &'a IdempotencyClaims,
    pub namespace: &'a str,
    pub event_ids: &'a [&'a str],
    pub ttl: Duration,
    pub sender: Option<(&'a IpBlockList, IpAddr)>,
}

/// The answer of [`ResilientLimiter::check_and_claim`].
#[derive(Debug)]
pub struct ClaimCheck {
    pub decision: Decision,
    pub backend: Backend,
    /// Whether the sender is blocked: `None` when no sender was given or the block list could
    /// not be read (Redis unavailable), for the caller to decide whether to fail open or closed.
    pub blocked: Option<bool>,
    /// When the request is within its limit and its sender not blocked, one answer per event id,
    /// in order; empty otherwise (its claims were released).
    pub claims: Vec<Result<Claim, CacheError>>,
}

/// Redis first, the in-process limiter when Redis fails.
///
/// After a failure, Redis is not tried again for `retry_interval` (a small circuit breaker): a
/// Redis that times out would otherwise add the full timeout to every request. The next request
/// after the interval probes Redis again, and success restores it.
pub struct ResilientLimiter {
    redis: RateLimiter,
    fallback: FallbackLimiter,
    healthy: AtomicBool,
    /// Unix µs (from the fallback's clock) before which Redis is skipped.
    skip_redis_until: AtomicI64,
    retry_interval: Duration,
}

impl std::fmt::Debug for ResilientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientLimiter")
            .field("redis", &self.redis)
            .field("fallback", &self.fallback)
            .field("redis_healthy", &self.redis_healthy())
            .finish_non_exhaustive()
    }
}

impl ResilientLimiter {
    pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

    pub fn new(redis: RateLimiter, fallback: FallbackLimiter) -> Self {
        Self {
            redis,
            fallback,
            healthy: AtomicBool::new(true),
            skip_redis_until: AtomicI64::new(i64::MIN),
            retry_interval: Self::DEFAULT_RETRY_INTERVAL,
        }
    }

    /// How long to use only the fallback after Redis failed.
    pub fn with_retry_interval(mut self, retry_interval: Duration) -> Self {
        self.retry_interval = retry_interval;
        self
    }

    pub fn redis(&self) -> &RateLimiter {
        &self.redis
    }

    pub fn fallback(&self) -> &FallbackLimiter {
        &self.fallback
    }

    /// Checks with Redis, or with the fallback when Redis fails (any error: without a shared
    /// answer there is nothing better to do) or failed less than `retry_interval` ago.
    pub async fn check(&self, class_key: &str, subject: &str, limit: Limit) -> (Decision, Backend) {
        let now = now_micros(self.fallback.clock());
        if now >= self.skip_redis_until.load(Ordering::Relaxed) {
            match self.redis.check(class_key, subject, limit).await {
                Ok(decision) => {
                    self.mark_healthy();
                    return (decision, Backend::Redis);
                }
                Err(error) => self.mark_unhealthy(now, &error),
            }
        }
        (self.fallback.check(class_key, subject, limit), Backend::Fallback)
    }

    /// [`Self::check`] with `companions` sent in the same Redis round trip; their replies are
    /// `None` when Redis was not asked or did not answer (the fallback decided).
    pub(crate) async fn check_with(
        &self,
        class_key: &str,
        subject: &str,
        limit: Limit,
        companions: Vec<redis::Cmd>,
    ) -> (Decision, Backend, Option<Vec<redis::Value>>) {
        let now = now_micros(self.fallback.clock());
        if now >= self.skip_redis_until.load(Ordering::Relaxed) {
            match self.redis.check_with(class_key, subject, limit, companions).await {
                Ok((decision, replies)) => {
                    self.mark_healthy();
                    return (decision, Backend::Redis, Some(replies));
                }
                Err(error) => self.mark_unhealthy(now, &error),
            }
        }
        (self.fallback.check(class_key, subject, limit), Backend::Fallback, None)
    }

    /// The request guard's two questions about a client address, in one Redis round trip: is
    /// it on `blocklist`, and is it within `limit` in `class_key`? `blocklist` must use the same
    /// Redis as this limiter. A blocked address's request counts against its limit too.
    pub async fn check_ip(&self, blocklist: &IpBlockList, ip: IpAddr, class_key: &str, limit: Limit) -> IpCheck {
        let companions = vec![blocklist.is_blocked_command(ip)];
        let (decision, backend, replies) = self.check_with(class_key, &ip.to_string(), limit, companions).await;
        let blocked = replies
            .and_then(|mut replies| replies.pop())
            .and_then(|reply| redis::from_redis_value::<i64>(reply).ok())
            .map(|exists| exists > 0);
        IpCheck { blocked, decision, backend }
    }

    /// A rate-limit check and idempotency claims (and, with `claims.sender`, the sender's block
    /// list entry), in one Redis round trip. `claims.store` and the block list must use the same
    /// Redis as this limiter.
    ///
    /// When the check denies the request or the sender is blocked, the claims it made are released
    /// again (the request is refused, so the provider's retry must find the events unclaimed) and
    /// none are returned. Otherwise there is one answer per event id, in order: the claim, or the
    /// reason Redis could not give one (unavailable: the fallback limiter decided), for the caller
    /// to decide without.
    pub async fn check_and_claim(
        &self,
        class_key: &str,
        subject: &str,
        limit: Limit,
        claims: ClaimsToMake<'_>,
    ) -> ClaimCheck {
        let ClaimsToMake { store, namespace, event_ids, ttl, sender } = claims;
        let (mut commands, tokens): (Vec<_>, Vec<_>) =
            event_ids.iter().map(|id| store.claim_command(namespace, id, ttl)).unzip();
        if let Some((blocklist, ip)) = sender {
            commands.push(blocklist.is_blocked_command(ip));
        }
        let (decision, backend, replies) = self.check_with(class_key, subject, limit, commands).await;
        let (answers, blocked): (Vec<Result<Claim, CacheError>>, Option<bool>) = match replies {
            Some(mut replies) => {
                let blocked = match sender {
                    Some(_) => {
                        replies.pop().and_then(|reply| redis::from_redis_value::<i64>(reply).ok()).map(|n| n > 0)
                    }
                    None => None,
                };
                let answers = replies
                    .into_iter()
                    .zip(tokens)
                    .map(|(reply, token)| {
                        redis::from_redis_value::<Option<String>>(reply)
                            .map(|reply| IdempotencyClaims::claim_from_reply(reply, token))
                            .map_err(|error| CacheError::Redis(error.into()))
                    })
                    .collect();
                (answers, blocked)
            }
            None => {
                (event_ids.iter().map(|_| Err(CacheError::Unavailable("redis was not asked".into()))).collect(), None)
            }
        };
        if decision.allowed && blocked != Some(true) {
            return ClaimCheck { decision, backend, blocked, claims: answers };
        }
        for (id, answer) in event_ids.iter().zip(&answers) {
            if let Ok(Claim::Claimed(token)) = answer {
                // A claim that cannot be released expires after `ttl`; until then a retry finds
                // it taken, checks the durable record, finds nothing, and is processed anyway.
                let _ = store.release(namespace, id, token).await;
            }
        }
        ClaimCheck { decision, backend, blocked, claims: Vec::new() }
    }

    /// Whether the last attempt to reach Redis succeeded: readiness reports "degraded" when not.
    pub fn redis_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// PINGs Redis now and updates [`Self::redis_healthy`]; for readiness probes on idle instances.
    pub async fn probe(&self) -> bool {
        let now = now_micros(self.fallback.clock());
        match self.redis.store().ping().await {
            Ok(()) => {
                self.mark_healthy();
                true
            }
            Err(error) => {
                self.mark_unhealthy(now, &error);
                false
            }
        }
    }

    fn mark_healthy(&self) {
        self.skip_redis_until.store(i64::MIN, Ordering::Relaxed);
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("redis rate limiter recovered; shared limits restored");
        }
    }

    fn mark_unhealthy(&self, now: i64, error: &crate::CacheError) {
        let retry = i64::try_from(self.retry_interval.as_micros()).unwrap_or(i64::MAX);
        self.skip_redis_until.store(now.saturating_add(retry), Ordering::Relaxed);
        // Log the transition only: one line per outage, not one per request.
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "redis rate limiter unavailable; using the in-process fallback");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::FixedClock;
    use time::macros::datetime;

    fn limiter(cap: usize) -> (FixedClock, FallbackLimiter) {
        let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
        (clock.clone(), FallbackLimiter::new(Arc::new(clock), cap))
    }

    #[test]
    fn allows_exactly_max_then_refills_smoothly() {
        let (clock, fallback) = limiter(100);
        let limit = Limit::new(5, Duration::from_secs(10));
        for remaining in (0..5).rev() {
            let d = fallback.check("global", "1.2.3.4", limit);
            assert!(d.allowed);
            assert_eq!(d.remaining, remaining);
        }
        let denied = fallback.check("global", "1.2.3.4", limit);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(denied.reset_after, Duration::from_secs(10));
        // Another subject and another class are separate buckets.
        assert!(fallback.check("global", "5.6.7.8", limit).allowed);
        assert!(fallback.check("login", "1.2.3.4", limit).allowed);
        clock.advance(time::Duration::seconds(2));
        assert!(fallback.check("global", "1.2.3.4", limit).allowed);
        assert!(!fallback.check("global", "1.2.3.4", limit).allowed);
    }

    #[test]
    fn memory_is_bounded_and_idle_subjects_go_first() {
        let (clock, fallback) = limiter(3);
        let limit = Limit::new(2, Duration::from_secs(60));
        // "hot" uses its whole burst: its TAT is furthest in the future.
        assert!(fallback.check("c", "hot", limit).allowed);
        assert!(fallback.check("c", "hot", limit).allowed);
        assert!(!fallback.check("c", "hot", limit).allowed);
        for i in 0..50 {
            clock.advance(time::Duration::milliseconds(1));
            fallback.check("c", &format!("fresh-{i}"), limit);
            assert!(fallback.len() <= 3);
        }
        // The throttled subject was never evicted by the flood of single requests.
        assert!(!fallback.check("c", "hot", limit).allowed);
    }

    #[test]
    fn expired_buckets_are_dropped() {
        let (clock, fallback) = limiter(100);
        let limit = Limit::new(2, Duration::from_secs(1));
        for i in 0..4 {
            fallback.check("c", &i.to_string(), limit);
        }
        assert_eq!(fallback.len(), 4);
        clock.advance(time::Duration::seconds(2));
        fallback.check("c", "new", limit);
        assert_eq!(fallback.len(), 1);
    }

    #[test]
    fn zero_max_denies() {
        let (_, fallback) = limiter(10);
        let d = fallback.check("c", "s", Limit::new(0, Duration::from_secs(1)));
        assert!(!d.allowed);
        assert!(fallback.is_empty());
    }
}
