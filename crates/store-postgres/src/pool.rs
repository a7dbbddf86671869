use crate::{MIGRATOR, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Server-side cap on any one statement, so a runaway query cannot hold a connection forever.
    pub statement_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// A pooled connection idle at least this long is pinged before it is handed out; one in use
/// more recently is handed out as it is.
///
/// sqlx's default pings on every acquire: one more round trip per transaction, which on a busy
/// instance is a sixth of a webhook batch's. A connection that was in use a moment ago is as
/// good as known to be alive; one that sat idle may have been cut (a database restart, a
/// failover, an idle timeout in a proxy), and a ping finds that before a request does. What is
/// left, a connection broken in the last second, fails its first query: the request answers 503
/// and sqlx drops the connection.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

fn pool_options(options: &PoolOptions) -> PgPoolOptions {
    let statement_timeout_ms = options.statement_timeout.as_millis();
    PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(AssertSqlSafe(format!("SET statement_timeout = {statement_timeout_ms}"))).await?;
                Ok(())
            })
        })
}

fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url).map_err(StoreError::Database)
}

/// Connects now; fails when the database does not answer.
pub async fn connect(url: &str, options: &PoolOptions) -> Result<PgPool, StoreError> {
    pool_options(options).connect_with(connect_options(url)?).await.map_err(StoreError::classify)
}

/// A pool that connects on first use: the server starts and reports "not ready" rather than
/// crash-looping while the database is down.
pub fn connect_lazy(url: &str, options: &PoolOptions) -> Result<PgPool, StoreError> {
    Ok(pool_options(options).connect_lazy_with(connect_options(url)?))
}

/// Runs the embedded migrations. Call with the owner role's pool, never the runtime role's.
pub async fn migrate(owner_pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(owner_pool).await?;
    Ok(())
}

/// Readiness probe: one round trip.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(StoreError::classify)
}
