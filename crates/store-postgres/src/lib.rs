//! Postgres adapters for Praxis.
//!
//! The application connects as a runtime role that is subject to row-level security. Every unit of
//! request work runs inside [`begin`], which opens a transaction and sets `app.tenant_id`,
//! `app.user_id` and `app.role` with `set_config(..., true)`: transaction-local, so a pooled
//! connection can never carry one request's identity into the next.

pub mod appointments;
pub mod audit;
mod context;
pub mod identity;
pub mod keys;
pub mod patients;
mod pool;
mod role_check;
mod sql;
pub mod tenant_keys;
pub mod webhooks;

pub use crate::audit::{AuditStoreError, PgAuditLog};
pub use context::{DbContext, ReadOnlyTransaction, begin, begin_read_only};
pub use pool::{PING_IF_IDLE_FOR, PoolOptions, PreparedStatements, connect, connect_lazy, migrate, ping};
pub use role_check::{RoleProblem, verify_runtime_role};

/// Most practices one cross-practice scan (`reminders_due_practices()`,
/// `audit_practices_to_seal()`) may return; the functions refuse a larger limit.
pub const MAX_PRACTICES_PER_SCAN: u32 = 1000;

/// Migrations embedded at compile time from `migrations/` at the workspace root.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Errors of this adapter. Messages never contain query parameters (they may be personal data).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The transaction lost a race with a concurrent one (deadlock detected, serialization
    /// failure) and was rolled back whole: transient, the request may simply be repeated.
    #[error("transaction aborted by a concurrent one: {0}")]
    Contention(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value this code cannot have written (e.g. an unknown role name).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The caller broke a function's documented contract (e.g. one batch for several practices).
    #[error("store misused: {0}")]
    Misuse(&'static str),
}

/// Every sqlx error the store passes on with `?` is classified, so a connection that the server
/// ended (a restart) is `Unavailable` wherever it surfaces, never a plain database error.
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::classify(error)
    }
}

impl StoreError {
    /// Maps connection-level failures (pool timeout, refused, closed; the server shutting down or
    /// refusing connections, see [`is_server_unavailable`]) to `Unavailable` and lost
    /// races (SQLSTATE 40P01 deadlock, 40001 serialization failure) to `Contention`, both of
    /// which the API answers with 503 (try again) rather than 500.
    pub fn classify(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(error)
            }
            sqlx::Error::Database(ref db) if matches!(db.code().as_deref(), Some("40P01" | "40001")) => {
                StoreError::Contention(error)
            }
            sqlx::Error::Database(ref db) if db.code().as_deref().is_some_and(is_server_unavailable) => {
                StoreError::Unavailable(error)
            }
            other => StoreError::Database(other),
        }
    }
}

/// SQLSTATEs that mean "the server cannot serve this now" rather than "this statement is wrong":
/// class 08 (connection exception), 57P01 to 57P05 (admin shutdown, crash shutdown, cannot connect
/// now, database dropped, idle session timeout) and 53300 (too many connections). A restart or
/// failover of Postgres produces them; the request may be repeated once it is back.
pub fn is_server_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") || sqlstate.starts_with("57P") || sqlstate == "53300"
}

#[cfg(test)]
mod sqlstate_tests {
    use super::is_server_unavailable;

    #[test]
    fn shutdown_and_connection_states_are_unavailability_not_bugs() {
        for code in ["57P01", "57P02", "57P03", "08006", "08003", "53300"] {
            assert!(is_server_unavailable(code), "{code}");
        }
        for code in ["23505", "42501", "22P02", "40001", "57014"] {
            assert!(!is_server_unavailable(code), "{code}");
        }
    }
}
