//! Redis adapters for Praxis.
//!
//! Every key Praxis writes starts with a configured prefix (`praxis:` by default), so several
//! deployments or test runs can share one Redis without seeing each other's keys.

use deadpool_redis::{Config, Pool, Runtime};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis.url: {0}")]
    InvalidUrl(String),
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A Redis pool and the key prefix for this deployment.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Builds the pool without connecting: the first command connects. `timeout` bounds how long
    /// any one command may wait for a connection and an answer.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, CacheError> {
        let mut config = Config::from_url(url);
        let mut pool_config = deadpool_redis::PoolConfig::new(32);
        pool_config.timeouts.wait = Some(timeout);
        pool_config.timeouts.create = Some(timeout);
        pool_config.timeouts.recycle = Some(timeout);
        config.pool = Some(pool_config);
        let pool = config.create_pool(Some(Runtime::Tokio1)).map_err(|e| CacheError::InvalidUrl(e.to_string()))?;
        Ok(Self { pool, prefix: prefix.to_owned(), timeout })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `prefix` + `key`: the only way adapters should name keys.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub async fn connection(&self) -> Result<deadpool_redis::Connection, CacheError> {
        self.pool.get().await.map_err(|e| CacheError::Unavailable(e.to_string()))
    }

    /// Readiness probe: PING within the configured timeout.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let attempt = async {
            let mut conn = self.connection().await?;
            let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(CacheError::Unavailable(format!("unexpected PING reply {pong:?}")))
            }
        };
        tokio_timeout(self.timeout, attempt).await
    }
}

async fn tokio_timeout<T>(
    timeout: Duration,
    future: impl std::future::Future<Output = Result<T, CacheError>>,
) -> Result<T, CacheError> {
    // deadpool's timeouts cover getting a connection; this also bounds the command itself.
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => Err(CacheError::Unavailable(format!("no answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ping_answers_against_real_redis() {
        let redis = testkit::TestRedis::new();
        let store = RedisStore::new(&redis.url, &redis.prefix, Duration::from_secs(2)).unwrap();
        store.ping().await.unwrap();
        assert!(store.key("rl:x").starts_with("praxis-test:"));
    }

    #[tokio::test]
    async fn ping_reports_unreachable_redis() {
        // Port 1 on loopback: nothing listens there.
        let store = RedisStore::new("redis://127.0.0.1:1", "p:", Duration::from_millis(500)).unwrap();
        assert!(matches!(store.ping().await, Err(CacheError::Unavailable(_))));
    }
}
