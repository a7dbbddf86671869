//! The limiter's one-round-trip forms: the request guard's block-list lookup and the webhook
//! claims, sent in a pipeline with the rate-limit check.

use crate::store;
use cache_redis::{
    Backend, Claim, ClaimsToMake, FallbackLimiter, IdempotencyClaims, IpBlockList, Limit, RateLimiter, RedisStore,
    ResilientLimiter,
};
use kernel::SystemClock;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(60);

fn to_make<'a>(store: &'a IdempotencyClaims, event_ids: &'a [&'a str]) -> ClaimsToMake<'a> {
    ClaimsToMake { store, namespace: "stripe", event_ids, ttl: TTL, sender: None }
}

fn limiter(store: RedisStore) -> ResilientLimiter {
    ResilientLimiter::new(RateLimiter::new(store), FallbackLimiter::new(Arc::new(SystemClock), 1_000))
}

#[tokio::test]
async fn check_ip_answers_the_block_list_and_the_limit_together() {
    let redis = testkit::TestRedis::new();
    let limiter = limiter(store(&redis));
    let blocklist = IpBlockList::new(store(&redis));
    let blocked: IpAddr = "192.0.2.7".parse().unwrap();
    let free: IpAddr = "192.0.2.8".parse().unwrap();
    blocklist.block(blocked, TTL, "test").await.unwrap();
    let limit = Limit::new(2, Duration::from_secs(60));

    let check = limiter.check_ip(&blocklist, blocked, "global", limit).await;
    assert_eq!((check.blocked, check.backend), (Some(true), Backend::Redis));
    let check = limiter.check_ip(&blocklist, free, "global", limit).await;
    assert_eq!((check.blocked, check.backend), (Some(false), Backend::Redis));
    assert!(check.decision.allowed);
    assert_eq!(check.decision.remaining, 1);
    limiter.check_ip(&blocklist, free, "global", limit).await;
    let check = limiter.check_ip(&blocklist, free, "global", limit).await;
    assert!(!check.decision.allowed, "the limit counts as `check` does");
    assert_eq!(check.blocked, Some(false));
}

#[tokio::test]
async fn check_and_claim_claims_once_within_the_limit_and_gives_claims_back_over_it() {
    let redis = testkit::TestRedis::new();
    let limiter = limiter(store(&redis));
    let claims = IdempotencyClaims::new(store(&redis));
    let limit = Limit::new(2, Duration::from_secs(60));

    let first = limiter.check_and_claim("webhook", "p", limit, to_make(&claims, &["evt_1", "evt_2"])).await;
    assert!(first.decision.allowed);
    assert_eq!(first.backend, Backend::Redis);
    assert!(first.claims.iter().all(|c| matches!(c, Ok(Claim::Claimed(_)))), "{:?}", first.claims);
    let second = limiter.check_and_claim("webhook", "p", limit, to_make(&claims, &["evt_1", "evt_3"])).await;
    assert!(second.decision.allowed);
    assert!(matches!(second.claims[0], Ok(Claim::Duplicate)));
    assert!(matches!(second.claims[1], Ok(Claim::Claimed(_))));

    // Over the limit: refused, no claims returned, and the one it made is released.
    let over = limiter.check_and_claim("webhook", "p", limit, to_make(&claims, &["evt_4"])).await;
    assert!(!over.decision.allowed);
    assert!(over.claims.is_empty());
    assert!(claims.claim("stripe", "evt_4", TTL).await.unwrap().is_claimed(), "evt_4 was released");
    assert!(!claims.claim("stripe", "evt_1", TTL).await.unwrap().is_claimed(), "evt_1 is still held");
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_without_claiming_twice() {
    let redis = testkit::TestRedis::new();
    let limiter = limiter(store(&redis));
    let claims = IdempotencyClaims::new(store(&redis));
    let limit = Limit::new(10, Duration::from_secs(60));
    // Redis forgets every cached script (as after a restart); other tests' scripts reload too.
    let mut conn = store(&redis).connection().await.unwrap();
    let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();

    let check = limiter.check_and_claim("webhook", "p", limit, to_make(&claims, &["evt_1"])).await;
    assert_eq!(check.backend, Backend::Redis);
    assert!(check.decision.allowed);
    assert_eq!(check.decision.remaining, 9, "the check ran once");
    assert!(matches!(check.claims[0], Ok(Claim::Claimed(_))), "the claim ran once: {:?}", check.claims);
}

#[tokio::test]
async fn without_redis_the_fallback_decides_and_no_claim_is_answered() {
    // Port 1 on loopback: nothing listens there.
    let unreachable = RedisStore::new("redis://127.0.0.1:1", "p:", Duration::from_millis(300)).unwrap();
    let limiter = limiter(unreachable.clone());
    let claims = IdempotencyClaims::new(unreachable.clone());
    let limit = Limit::new(1, Duration::from_secs(60));
    let check = limiter.check_and_claim("webhook", "p", limit, to_make(&claims, &["evt_1", "evt_2"])).await;
    assert_eq!(check.backend, Backend::Fallback);
    assert!(check.decision.allowed);
    assert_eq!(check.claims.len(), 2);
    assert!(check.claims.iter().all(Result::is_err));
    let over = limiter.check_and_claim("webhook", "p", limit, to_make(&claims, &["evt_3"])).await;
    assert!(!over.decision.allowed, "the fallback still limits");

    let blocklist = IpBlockList::new(unreachable);
    let check = limiter.check_ip(&blocklist, "192.0.2.1".parse().unwrap(), "global", limit).await;
    assert_eq!((check.blocked, check.backend), (None, Backend::Fallback));
}

#[tokio::test]
async fn check_and_claim_asks_the_block_list_in_the_same_round_trip_and_refuses_a_blocked_sender() {
    let redis = testkit::TestRedis::new();
    let limiter = limiter(store(&redis));
    let claims = IdempotencyClaims::new(store(&redis));
    let blocklist = IpBlockList::new(store(&redis));
    let blocked: IpAddr = "192.0.2.9".parse().unwrap();
    let free: IpAddr = "192.0.2.10".parse().unwrap();
    blocklist.block(blocked, TTL, "test").await.unwrap();
    let limit = Limit::new(10, Duration::from_secs(60));
    let from = |ip, event_ids| ClaimsToMake { sender: Some((&blocklist, ip)), ..to_make(&claims, event_ids) };

    let refused = limiter.check_and_claim("webhook", "p", limit, from(blocked, &["evt_1"])).await;
    assert_eq!((refused.blocked, refused.backend), (Some(true), Backend::Redis));
    assert!(refused.claims.is_empty());
    assert!(claims.claim("stripe", "evt_1", TTL).await.unwrap().is_claimed(), "a blocked sender's claim is released");

    let accepted = limiter.check_and_claim("webhook", "p", limit, from(free, &["evt_2", "evt_3"])).await;
    assert_eq!(accepted.blocked, Some(false));
    assert!(accepted.decision.allowed);
    assert!(accepted.claims.iter().all(|c| matches!(c, Ok(Claim::Claimed(_)))), "{:?}", accepted.claims);

    // Without a sender the block list is not asked.
    let unasked = limiter.check_and_claim("webhook", "p", limit, to_make(&claims, &["evt_4"])).await;
    assert_eq!(unasked.blocked, None);
    assert_eq!(unasked.claims.len(), 1);
}
