use crate::{keys_under, store};
use cache_redis::{Limit, RateLimiter};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn allows_exactly_max_then_denies_with_retry_after() {
    let redis = testkit::TestRedis::new();
    let limiter = RateLimiter::new(store(&redis));
    let limit = Limit::new(5, Duration::from_secs(60));
    for expected_remaining in (0..5).rev() {
        let d = limiter.check("global", "192.0.2.1", limit).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.limit, 5);
        assert_eq!(d.remaining, expected_remaining);
        assert_eq!(d.retry_after, None);
        assert!(d.reset_after > Duration::ZERO && d.reset_after <= limit.window);
    }
    for _ in 0..3 {
        let d = limiter.check("global", "192.0.2.1", limit).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        let retry = d.retry_after.unwrap();
        // One request comes back every window / max = 12 s; the whole burst by the window's end.
        assert!(retry > Duration::from_secs(11) && retry <= Duration::from_secs(12), "{retry:?}");
        assert!(d.reset_after > Duration::from_secs(59) && d.reset_after <= limit.window, "{:?}", d.reset_after);
        assert_eq!(d.retry_after_secs(), Some(12));
        assert_eq!(d.reset_after_secs(), 60);
    }
    // Other subjects and classes are untouched.
    assert!(limiter.check("global", "192.0.2.2", limit).await.unwrap().allowed);
    assert!(limiter.check("api", "192.0.2.1", limit).await.unwrap().allowed);
}

#[tokio::test]
async fn allowance_comes_back_after_retry_after() {
    let redis = testkit::TestRedis::new();
    let limiter = RateLimiter::new(store(&redis));
    let limit = Limit::new(2, Duration::from_millis(600));
    assert!(limiter.check("global", "s", limit).await.unwrap().allowed);
    assert!(limiter.check("global", "s", limit).await.unwrap().allowed);
    let denied = limiter.check("global", "s", limit).await.unwrap();
    assert!(!denied.allowed);
    tokio::time::sleep(denied.retry_after.unwrap() + Duration::from_millis(20)).await;
    let d = limiter.check("global", "s", limit).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    // The key expires once the bucket is full again: nothing lingers.
    tokio::time::sleep(d.reset_after + Duration::from_millis(50)).await;
    assert!(keys_under(&redis).await.is_empty());
}

#[tokio::test]
async fn two_instances_share_one_limit() {
    let redis = testkit::TestRedis::new();
    // Two stores = two pools = two app instances.
    let a = RateLimiter::new(store(&redis));
    let b = RateLimiter::new(store(&redis));
    let limit = Limit::new(4, Duration::from_secs(60));
    let mut allowed = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        if limiter.check("global", "user-1", limit).await.unwrap().allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_checks_allow_exactly_max() {
    let redis = testkit::TestRedis::new();
    let instances = [Arc::new(RateLimiter::new(store(&redis))), Arc::new(RateLimiter::new(store(&redis)))];
    let limit = Limit::new(10, Duration::from_secs(60));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let limiter = Arc::clone(&instances[i % 2]);
            tokio::spawn(async move { limiter.check("global", "203.0.113.9", limit).await.unwrap() })
        })
        .collect();
    let decisions = futures_util::future::join_all(tasks).await;
    let decisions: Vec<_> = decisions.into_iter().map(Result::unwrap).collect();
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 10);
    let mut remaining: Vec<u32> = decisions.iter().filter(|d| d.allowed).map(|d| d.remaining).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..10).collect::<Vec<_>>());
    assert!(decisions.iter().filter(|d| !d.allowed).all(|d| d.retry_after.is_some()));
}

#[tokio::test]
async fn subject_cannot_inject_key_structure() {
    let redis = testkit::TestRedis::new();
    let limiter = RateLimiter::new(store(&redis));
    let limit = Limit::new(1, Duration::from_secs(60));
    assert!(limiter.check("global", "a:b*", limit).await.unwrap().allowed);
    // Neither the literal prefix nor what the glob would match share its bucket.
    assert!(limiter.check("global", "a", limit).await.unwrap().allowed);
    assert!(limiter.check("global", "a:b", limit).await.unwrap().allowed);
    assert!(limiter.check("global", "a:bc", limit).await.unwrap().allowed);
    // A class with separators is escaped, not split.
    assert!(limiter.check("global:a", "b*", limit).await.unwrap().allowed);
    assert!(!limiter.check("global", "a:b*", limit).await.unwrap().allowed);

    let keys = keys_under(&redis).await;
    assert_eq!(keys.len(), 5);
    for key in &keys {
        let rest = key.strip_prefix(&format!("{}rl:", redis.prefix)).unwrap();
        let (class, subject) = rest.split_once(':').unwrap();
        assert!(class == "global" || class == "global%3Aa", "{key}");
        assert_eq!(subject.len(), 32, "{key}");
        assert!(subject.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    }
    assert_eq!(
        limiter.key_for("global", "a:b*"),
        format!("{}rl:global:{}", redis.prefix, cache_redis::keys::digest("a:b*"))
    );
}

#[tokio::test]
async fn zero_max_denies_without_touching_redis() {
    let redis = testkit::TestRedis::new();
    let limiter = RateLimiter::new(store(&redis));
    let d = limiter.check("global", "s", Limit::new(0, Duration::from_secs(1))).await.unwrap();
    assert!(!d.allowed);
    assert!(keys_under(&redis).await.is_empty());
}

#[tokio::test]
async fn reset_forgets_usage() {
    let redis = testkit::TestRedis::new();
    let limiter = RateLimiter::new(store(&redis));
    let limit = Limit::new(1, Duration::from_secs(60));
    assert!(limiter.check("login", "u", limit).await.unwrap().allowed);
    assert!(!limiter.check("login", "u", limit).await.unwrap().allowed);
    limiter.reset("login", "u").await.unwrap();
    assert!(limiter.check("login", "u", limit).await.unwrap().allowed);
}
