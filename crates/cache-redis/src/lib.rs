//! Redis adapters for Praxis.
//!
//! Every key Praxis writes starts with a configured prefix (`praxis:` by default), so several
//! deployments or test runs can share one Redis without seeing each other's keys.
//!
//! On top of [`RedisStore`] (one multiplexed connection per thread, prefix, timeout, health):
//!
//! - [`RateLimiter`]: GCRA in one Lua script, timed by the Redis server's clock, so every app
//!   instance enforces one shared limit. [`FallbackLimiter`] is the same algorithm in process for
//!   when Redis is down, and [`ResilientLimiter`] switches between them and reports the degradation.
//! - [`FailureCounter`]: fixed-window failure counters for login lockout and suspicious-activity
//!   detection.
//! - [`IpBlockList`]: blocked addresses with an expiry, one key each.
//! - [`IdempotencyClaims`]: webhook event claims (`SET NX PX`) with owner-only release.
//! - [`RevocationMarkers`]: short-lived "revoked" markers that tell every instance to stop
//!   trusting a principal it cached, checked in the rate limit's round trip.
//!
//! # Key naming
//!
//! Every key is `prefix + kind + ":" + ...`. Caller-supplied parts that identify a *class* (a
//! rate-limit class, a webhook provider) are escaped ([`keys::escape`]); parts that identify a
//! *subject* (an IP, a user id, a login name, a webhook event id) are hashed ([`keys::digest`]).
//! So no caller input can add a `:` level, a glob character or a second key family, and raw IPs and
//! account ids are not written into Redis key names, where `SCAN`/`MONITOR` would show them.
//! The block list is the exception: it must list addresses, so its keys end with the address in
//! its canonical text form (which [`std::net::IpAddr`] parsing has already validated).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod blocklist;
mod connection;
mod failures;
mod fallback;
mod idempotency;
pub mod keys;
mod rate_limit;
mod revocations;

pub use blocklist::{BlockEntry, IpBlockList};
pub use connection::Connection;
use connection::{Client, Target};
pub use failures::{FailureCounter, FailureStatus};
pub use fallback::{Backend, ClaimCheck, ClaimsToMake, FallbackLimiter, IpCheck, ResilientLimiter};
pub use idempotency::{Claim, ClaimToken, IdempotencyClaims};
pub use rate_limit::{Decision, Limit, RateLimiter};
pub use revocations::{MARKER_TTL, PrincipalCheck, RevocationMarkers, Revoked};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis.url: {0}")]
    InvalidUrl(String),
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

thread_local! {
    /// Each thread's connection of each store, created on the thread's first command inside its
    /// async runtime (the manager spawns its I/O task there), and dropped after a connection-level
    /// failure so the next command builds a new one (see [`RedisStore::with_connection`]). Per
    /// thread because each HTTP worker is a single-threaded runtime: a connection shared by all of
    /// them would have its I/O task on one worker, every other worker's commands would wait for that
    /// worker to be scheduled (twice per round trip), and a worker that stopped would take the
    /// others' connection down. A thread's connections end with the thread.
    static CONNECTIONS: RefCell<HashMap<u64, Connection>> = RefCell::new(HashMap::new());
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

/// The Redis connection and the key prefix for this deployment: one server or a Redis Cluster
/// (see [`connection`] for the URL forms and how commands are routed in a cluster).
///
/// # One multiplexed connection per thread, not a pool
///
/// Every command goes over its thread's connection (redis-rs' `ConnectionManager`): commands
/// that tasks send at the same moment are written together and their replies read together, so
/// under load Redis and Praxis each make one read and one write for many commands instead of one
/// pair per command on a connection of a pool. Every command Praxis sends is short and
/// non-blocking (no `BLPOP`, no `SUBSCRIBE`, no `MULTI` spanning awaits), which is what makes
/// sharing one connection safe. The manager reconnects after the connection breaks. An HTTP
/// worker is one thread, so each worker has its own connection (see [`CONNECTIONS`]).
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    /// Names this store's connections in [`CONNECTIONS`] (clones share it: one store).
    id: u64,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Checks the URL without connecting: the first command connects. `timeout` bounds how long
    /// any one command may wait for a connection and an answer.
    ///
    /// `rediss://` connects over TLS (rustls) and verifies the server's certificate and name
    /// against the platform's trust store, as a managed Redis with a publicly issued certificate
    /// needs; [`RedisStore::with_ca`] trusts a private CA instead. `redis+cluster://` and
    /// `rediss+cluster://` followed by comma-separated seed nodes connect to a Redis Cluster.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, CacheError> {
        let target = Target::parse(url).map_err(CacheError::InvalidUrl)?;
        let client = Client::new(&target, None, timeout).map_err(CacheError::InvalidUrl)?;
        Ok(Self::from_client(client, prefix, timeout))
    }

    /// [`RedisStore::new`] for a `rediss://` server whose certificate a private CA issued:
    /// `ca_pem` (PEM, one or more certificates) is the only trust anchor. Refuses a URL without
    /// TLS, where a CA would silently be ignored.
    pub fn with_ca(url: &str, ca_pem: Vec<u8>, prefix: &str, timeout: Duration) -> Result<Self, CacheError> {
        let target = Target::parse(url).map_err(CacheError::InvalidUrl)?;
        if !target.is_tls() {
            return Err(CacheError::InvalidUrl("a CA certificate needs a rediss:// (TLS) url".into()));
        }
        let client = Client::new(&target, Some(ca_pem), timeout).map_err(CacheError::InvalidUrl)?;
        Ok(Self::from_client(client, prefix, timeout))
    }

    fn from_client(client: Client, prefix: &str, timeout: Duration) -> Self {
        Self { client, id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed), prefix: prefix.to_owned(), timeout }
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// `prefix` + `key`: the only way adapters should name keys.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The key prefix of this deployment.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How long one operation may take (connection wait plus commands).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// This thread's connection (cheap to clone: clones send over the same connection).
    pub async fn connection(&self) -> Result<Connection, CacheError> {
        tokio_timeout(self.timeout, async { Ok(self.this_threads_connection().await?) }).await
    }

    async fn this_threads_connection(&self) -> Result<Connection, redis::RedisError> {
        if let Some(connection) = CONNECTIONS.with(|c| c.borrow().get(&self.id).cloned()) {
            return Ok(connection);
        }
        // One server: lazy, nothing is sent until the first command. A cluster: the topology
        // is read now. A failure here leaves nothing behind; the next command tries again.
        let connection = self.client.connect(self.timeout).await?;
        CONNECTIONS.with(|c| c.borrow_mut().insert(self.id, connection.clone()));
        Ok(connection)
    }

    /// Forgets this thread's connection after a connection-level failure. The manager reconnects
    /// by itself only after I/O errors; a failed AUTH, a connection that stopped answering, or an
    /// I/O task whose runtime stopped would otherwise fail every later command.
    fn discard_connection(&self) {
        CONNECTIONS.with(|c| c.borrow_mut().remove(&self.id));
    }

    /// Readiness probe: PING within the configured timeout.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.with_connection(|mut conn| async move {
            let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(CacheError::Unavailable(format!("unexpected PING reply {pong:?}")))
            }
        })
        .await
    }

    /// Gets a connection and runs `operation` on it, the whole within the configured timeout: a
    /// Redis that accepts connections but never answers must not hold a request hostage.
    pub(crate) async fn with_connection<T, F, Fut>(&self, operation: F) -> Result<T, CacheError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, CacheError>>,
    {
        let result = tokio_timeout(self.timeout, async {
            let conn = self.this_threads_connection().await.map_err(CacheError::Redis);
            let result = match conn {
                Ok(conn) => operation(conn).await,
                Err(error) => Err(error),
            };
            match result {
                // No usable connection (refused, dropped, timed out, AUTH refused): Redis is
                // unavailable, as opposed to a command it answered with an error.
                Err(CacheError::Redis(error))
                    if error.is_io_error()
                        || error.is_connection_refusal()
                        || error.is_connection_dropped()
                        || error.is_timeout()
                        || error.is_unrecoverable_error() =>
                {
                    Err(CacheError::Unavailable(error.to_string()))
                }
                other => other,
            }
        })
        .await;
        if matches!(result, Err(CacheError::Unavailable(_))) {
            // On the thread the task is on now: with a multi-threaded runtime that may be another
            // thread's connection, which is then rebuilt on its next command (harmless).
            self.discard_connection();
        }
        result
    }
}

async fn tokio_timeout<T>(
    timeout: Duration,
    future: impl std::future::Future<Output = Result<T, CacheError>>,
) -> Result<T, CacheError> {
    // The manager's timeouts cover connecting and each reply; this bounds the whole operation.
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => Err(CacheError::Unavailable(format!("no answer within {timeout:?}"))),
    }
}

/// A duration as whole milliseconds for `PX`/`PEXPIRE`, rounded up and at least 1: Redis refuses
/// an expiry of 0, and rounding down could expire a key (a claim, a block) before its time.
pub(crate) fn millis_ceil(duration: Duration) -> u64 {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX / 2).clamp(1, i64::MAX as u64 / 2)
}

/// A non-negative microsecond count from a script reply as a `Duration` (negative means none).
pub(crate) fn micros(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
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

    #[test]
    fn expiries_round_up_and_are_never_zero() {
        assert_eq!(millis_ceil(Duration::ZERO), 1);
        assert_eq!(millis_ceil(Duration::from_micros(1)), 1);
        assert_eq!(millis_ceil(Duration::from_micros(1_001)), 2);
        assert_eq!(millis_ceil(Duration::from_secs(1)), 1_000);
    }
}
