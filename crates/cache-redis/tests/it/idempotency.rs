use crate::store;
use cache_redis::{Claim, IdempotencyClaims};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_claims_one_winner() {
    let redis = testkit::TestRedis::new();
    // Two instances racing, like two replicas receiving the same delivery.
    let instances = [Arc::new(IdempotencyClaims::new(store(&redis))), Arc::new(IdempotencyClaims::new(store(&redis)))];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let claims = Arc::clone(&instances[i % 2]);
            tokio::spawn(async move { claims.claim("stripe", "evt_1", Duration::from_secs(60)).await.unwrap() })
        })
        .collect();
    let results: Vec<Claim> = futures_util::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|c| c.is_claimed()).count(), 1);
    assert_eq!(results.iter().filter(|c| **c == Claim::Duplicate).count(), 49);
}

#[tokio::test]
async fn only_the_owner_releases_and_release_allows_a_retry() {
    let redis = testkit::TestRedis::new();
    let claims = IdempotencyClaims::new(store(&redis));
    let ttl = Duration::from_secs(60);
    let Claim::Claimed(token) = claims.claim("stripe", "evt_2", ttl).await.unwrap() else { panic!("not claimed") };
    assert_eq!(claims.claim("stripe", "evt_2", ttl).await.unwrap(), Claim::Duplicate);

    // Someone else's token (another claim's) does not release it.
    let Claim::Claimed(other) = claims.claim("stripe", "evt_other", ttl).await.unwrap() else { panic!() };
    assert!(!claims.release("stripe", "evt_2", &other).await.unwrap());
    assert_eq!(claims.claim("stripe", "evt_2", ttl).await.unwrap(), Claim::Duplicate);

    // The owner's release (handler failed) lets the provider's retry claim it.
    assert!(claims.release("stripe", "evt_2", &token).await.unwrap());
    assert!(!claims.release("stripe", "evt_2", &token).await.unwrap());
    assert!(claims.claim("stripe", "evt_2", ttl).await.unwrap().is_claimed());
}

#[tokio::test]
async fn after_the_ttl_the_event_can_be_claimed_again_and_a_late_release_is_harmless() {
    let redis = testkit::TestRedis::new();
    let claims = IdempotencyClaims::new(store(&redis));
    let Claim::Claimed(first) = claims.claim("twilio", "SM123", Duration::from_millis(300)).await.unwrap() else {
        panic!("not claimed")
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let Claim::Claimed(second) = claims.claim("twilio", "SM123", Duration::from_secs(60)).await.unwrap() else {
        panic!("not claimable after the ttl")
    };
    assert_ne!(first, second);
    // The slow first handler fails late: its release must not free the second claim.
    assert!(!claims.release("twilio", "SM123", &first).await.unwrap());
    assert_eq!(claims.claim("twilio", "SM123", Duration::from_secs(60)).await.unwrap(), Claim::Duplicate);
}

#[tokio::test]
async fn providers_and_ids_are_separate_and_contained() {
    let redis = testkit::TestRedis::new();
    let claims = IdempotencyClaims::new(store(&redis));
    let ttl = Duration::from_secs(60);
    assert!(claims.claim("stripe", "evt:1*", ttl).await.unwrap().is_claimed());
    assert!(claims.claim("whatsapp", "evt:1*", ttl).await.unwrap().is_claimed());
    assert!(claims.claim("stripe", "evt:1", ttl).await.unwrap().is_claimed());
    assert!(claims.claim("stripe:evt", "1*", ttl).await.unwrap().is_claimed());
    let key = claims.key_for("stripe:evt", "1*");
    assert!(key.starts_with(&format!("{}idem:stripe%3Aevt:", redis.prefix)), "{key}");
}
