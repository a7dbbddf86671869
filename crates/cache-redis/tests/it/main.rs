//! Integration tests against a real Redis (`PRAXIS_TEST_REDIS_URL`); each test uses its own key
//! prefix from `testkit::TestRedis`.

// Helpers outside #[test] functions: a failed set-up is a failed test, so they may unwrap too.
#![allow(clippy::unwrap_used)]

mod blocklist;
mod cluster;
mod connection;
mod failures;
mod fallback;
mod idempotency;
mod pipelined;
mod rate_limit;
mod tls;

use cache_redis::RedisStore;
use std::time::Duration;

/// A store on the test Redis under this test's own prefix. Each call builds a new pool, so two
/// calls with one `TestRedis` behave like two app instances sharing one Redis.
pub fn store(redis: &testkit::TestRedis) -> RedisStore {
    RedisStore::new(&redis.url, &redis.prefix, Duration::from_secs(5)).unwrap()
}

/// Every key under `prefix` (test prefixes contain no glob characters).
pub async fn keys_under(redis: &testkit::TestRedis) -> Vec<String> {
    let mut conn = store(redis).connection().await.unwrap();
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", redis.prefix)).query_async(&mut conn).await.unwrap();
    keys.sort();
    keys
}
