use crate::store;
use cache_redis::{Backend, FallbackLimiter, Limit, RateLimiter, RedisStore, ResilientLimiter};
use kernel::SystemClock;
use std::sync::Arc;
use std::time::Duration;

fn fallback() -> FallbackLimiter {
    FallbackLimiter::new(Arc::new(SystemClock), 1_000)
}

#[tokio::test]
async fn unreachable_redis_falls_back_and_reports_degraded() {
    // Port 1 on loopback: nothing listens there.
    let unreachable = RedisStore::new("redis://127.0.0.1:1", "p:", Duration::from_millis(300)).unwrap();
    let limiter = ResilientLimiter::new(RateLimiter::new(unreachable), fallback());
    assert!(limiter.redis_healthy());
    let limit = Limit::new(3, Duration::from_secs(60));
    for remaining in (0..3).rev() {
        let (d, backend) = limiter.check("global", "192.0.2.1", limit).await;
        assert_eq!(backend, Backend::Fallback);
        assert!(d.allowed);
        assert_eq!(d.remaining, remaining);
        assert!(!limiter.redis_healthy());
    }
    // The fallback still limits.
    let (d, backend) = limiter.check("global", "192.0.2.1", limit).await;
    assert_eq!(backend, Backend::Fallback);
    assert!(!d.allowed);
    assert!(d.retry_after.is_some());
    assert!(!limiter.probe().await);
}

#[tokio::test]
async fn unreachable_redis_is_not_retried_on_every_request() {
    let unreachable = RedisStore::new("redis://127.0.0.1:1", "p:", Duration::from_millis(300)).unwrap();
    let limiter =
        ResilientLimiter::new(RateLimiter::new(unreachable), fallback()).with_retry_interval(Duration::from_secs(60));
    let limit = Limit::new(1_000, Duration::from_secs(60));
    limiter.check("global", "s", limit).await;
    let started = tokio::time::Instant::now();
    for _ in 0..100 {
        assert_eq!(limiter.check("global", "s", limit).await.1, Backend::Fallback);
    }
    // Inside the retry interval the fallback answers without a connection attempt.
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
}

#[tokio::test]
async fn healthy_redis_is_used() {
    let redis = testkit::TestRedis::new();
    let limiter = ResilientLimiter::new(RateLimiter::new(store(&redis)), fallback());
    let limit = Limit::new(2, Duration::from_secs(60));
    let (d, backend) = limiter.check("global", "s", limit).await;
    assert_eq!(backend, Backend::Redis);
    assert!(d.allowed);
    assert!(limiter.redis_healthy());
    assert!(limiter.probe().await);
    assert!(limiter.fallback().is_empty());
}
