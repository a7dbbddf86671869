use crate::store;
use cache_redis::FailureCounter;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn counts_failures_in_a_fixed_window() {
    let redis = testkit::TestRedis::new();
    let counter = FailureCounter::new(store(&redis));
    let key = "login:acct:6f1c|ip:192.0.2.1";
    assert_eq!(counter.failures(key).await.unwrap(), 0);
    for expected in 1..=5 {
        assert_eq!(counter.record_failure(key, Duration::from_secs(900)).await.unwrap(), expected);
    }
    // The app refuses the 6th attempt before verifying the password.
    assert_eq!(counter.failures(key).await.unwrap(), 5);
    let status = counter.status(key).await.unwrap();
    assert_eq!(status.count, 5);
    let reset = status.reset_after.unwrap();
    assert!(reset > Duration::from_secs(890) && reset <= Duration::from_secs(900), "{reset:?}");
    // Other keys are separate.
    assert_eq!(counter.failures("login:ip:192.0.2.1").await.unwrap(), 0);
    // Admin unlock.
    assert!(counter.reset(key).await.unwrap());
    assert_eq!(counter.failures(key).await.unwrap(), 0);
    assert!(!counter.reset(key).await.unwrap());
    assert_eq!(counter.status(key).await.unwrap().reset_after, None);
}

#[tokio::test]
async fn window_starts_at_first_failure_and_is_not_extended() {
    let redis = testkit::TestRedis::new();
    let counter = FailureCounter::new(store(&redis));
    let window = Duration::from_millis(800);
    assert_eq!(counter.record_failure("k", window).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counter.record_failure("k", window).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(450)).await;
    // 950 ms after the first failure: the window has closed despite the failure at 500 ms.
    assert_eq!(counter.failures("k").await.unwrap(), 0);
    assert_eq!(counter.record_failure("k", window).await.unwrap(), 1);
}

#[tokio::test]
async fn a_counter_without_expiry_is_repaired() {
    let redis = testkit::TestRedis::new();
    let counter = FailureCounter::new(store(&redis));
    counter.record_failure("k", Duration::from_secs(60)).await.unwrap();
    let mut conn = store(&redis).connection().await.unwrap();
    let _: i64 = redis::cmd("PERSIST").arg(counter.key_for("k")).query_async(&mut conn).await.unwrap();
    assert_eq!(counter.status("k").await.unwrap().reset_after, None);
    counter.record_failure("k", Duration::from_secs(60)).await.unwrap();
    assert!(counter.status("k").await.unwrap().reset_after.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_each_see_a_distinct_count() {
    // "More than 10 failures in 5 minutes" must write exactly one suspicious-activity entry:
    // exactly one caller may see the count 11.
    let redis = testkit::TestRedis::new();
    let counter = Arc::new(FailureCounter::new(store(&redis)));
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                counter.record_failure("login:ip:198.51.100.7", Duration::from_secs(300)).await.unwrap()
            })
        })
        .collect();
    let mut counts: Vec<u64> = futures_util::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=30).collect::<Vec<_>>());
    assert_eq!(counts.iter().filter(|&&c| c == 11).count(), 1);
}
