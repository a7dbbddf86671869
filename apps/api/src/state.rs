use crate::config::Config;
use cache_redis::RedisStore;
use kernel::Clock;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// Everything a handler may use. Cheap to clone; shared by every worker.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Pool of the runtime role: row-level security applies to every query through it.
    pub db: PgPool,
    pub redis: RedisStore,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    /// Builds pools without connecting: readiness tells whether the dependencies answer.
    pub fn from_config(config: Arc<Config>, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let database_url =
            config.database.url.as_ref().ok_or_else(|| anyhow::anyhow!("database.url: required secret is missing"))?;
        let redis_url =
            config.redis.url.as_ref().ok_or_else(|| anyhow::anyhow!("redis.url: required secret is missing"))?;
        let pool_options = store_postgres::PoolOptions {
            max_connections: config.database.max_connections,
            acquire_timeout: Duration::from_millis(config.database.acquire_timeout_ms),
            statement_timeout: Duration::from_millis(config.database.statement_timeout_ms),
        };
        let db = store_postgres::connect_lazy(database_url.expose_secret(), &pool_options)?;
        let redis = RedisStore::new(
            redis_url.expose_secret(),
            &config.redis.key_prefix,
            Duration::from_millis(config.redis.timeout_ms),
        )?;
        Ok(Self { config, db, redis, clock })
    }
}
