use crate::{MIGRATOR, StoreError};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The statement timeout every transaction sets (`context::begin`), in milliseconds: the last
/// pool built in this process decides (a server builds its pools from one configuration).
///
/// Set per transaction (`set_config('statement_timeout', ..., true)`), not per connection with
/// `SET`: behind a transaction pooler a connection's `SET` stays on whichever server connection
/// ran it and reaches every later client of that connection, while the connection this client
/// gets next has none.
static STATEMENT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(30_000);

pub(crate) fn statement_timeout_ms() -> u64 {
    STATEMENT_TIMEOUT_MS.load(Ordering::Relaxed)
}

/// How this crate's statements reach the server (see `crate::sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreparedStatements {
    /// Named and kept on each connection for reuse: one round trip per query after its first
    /// use on a connection, and no re-planning. For a direct connection to Postgres, and for a
    /// pooler that tracks prepared statements (PgBouncer 1.21+ with `max_prepared_statements`).
    #[default]
    Cached,
    /// Unnamed, parsed anew within the transaction that sends it: two round trips per query.
    /// Works behind any transaction pooler (PgBouncer before 1.21, or with
    /// `max_prepared_statements = 0`).
    Unnamed,
}

/// Pool sizing, timeouts and the statement form.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Server-side cap on any one statement, so a runaway query cannot hold a connection forever.
    pub statement_timeout: Duration,
    pub prepared_statements: PreparedStatements,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            prepared_statements: PreparedStatements::default(),
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
    let statement_timeout_ms = u64::try_from(options.statement_timeout.as_millis()).unwrap_or(u64::MAX).max(1);
    STATEMENT_TIMEOUT_MS.store(statement_timeout_ms, Ordering::Relaxed);
    if options.prepared_statements == PreparedStatements::Unnamed {
        crate::sql::send_unnamed_statements();
    }
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
}

/// No `extra_float_digits` start-up parameter (sqlx sends one by default): PgBouncer refuses a
/// connection with a start-up parameter it does not know unless told to ignore it, and Praxis
/// stores no floating-point columns whose text form it would change.
fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    Ok(PgConnectOptions::from_str(url).map_err(StoreError::Database)?.extra_float_digits(None))
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
    crate::sql::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(StoreError::classify)
}
