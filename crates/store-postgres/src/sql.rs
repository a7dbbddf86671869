//! `sqlx::query`, `query_as` and `query_scalar` as this crate sends them: named and cached, or
//! unnamed, as the pools of the process were configured ([`crate::PreparedStatements`]).
//!
//! sqlx names every statement it prepares (`sqlx_s_1`, `sqlx_s_2`, ...) and keeps it on the
//! connection for reuse: after its first use on a connection a query is one round trip (bind and
//! execute) and is not planned again. That is the default, for a direct connection to Postgres.
//!
//! A connection pooler in transaction mode (PgBouncer, RDS Proxy) hands each transaction
//! whichever server connection is free, so a named statement is missing on the next one
//! ("prepared statement sqlx_s_3 does not exist") or collides with another client's of the same
//! name ("already exists"). PgBouncer 1.21 and later can track named statements
//! (`max_prepared_statements`); older ones (Debian 12's 1.18) cannot. For those,
//! `database.prepared_statements = "unnamed"`: each statement is parsed and executed within the
//! transaction that sends it, which works with every pooler. The cost is a second round trip per
//! query (sqlx waits for the parse before it binds) and a parse on the server each time; the
//! `patient_read` benchmark measures both forms side by side. Every query of this crate goes
//! through here (`cargo xtask tidy` refuses `sqlx::query` elsewhere in it).
//!
//! Unnamed statements are only safe *inside* a transaction behind a transaction pooler: sqlx
//! parses (one `Sync`) and then executes (a second `Sync`), and between the two the pooler may
//! give an idle server connection to another client. Every query here runs in a transaction
//! (`context::begin`); the few that do not use the simple protocol (`sqlx::raw_sql`), and the two
//! that are their own implicit transaction when statements are cached
//! (`audit::record_unsealed`, `patients::get_in_one_statement`) open one when they are unnamed.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{FromRow, Postgres, SqlSafeStr};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether statements go unnamed: process-wide, and one-way. Once any pool of the process was
/// built for [`crate::PreparedStatements::Unnamed`], every statement of the process goes
/// unnamed, which is correct on every connection; the cached form is only right when no pool of
/// the process needs the unnamed one. A server builds its pools from one configuration.
static UNNAMED_STATEMENTS: AtomicBool = AtomicBool::new(false);

/// From now on, every statement of the process goes unnamed (see [`UNNAMED_STATEMENTS`]).
pub(crate) fn send_unnamed_statements() {
    UNNAMED_STATEMENTS.store(true, Ordering::Relaxed);
}

/// Whether statements go unnamed: then a statement must run inside a transaction behind a pooler
/// (see the module docs).
pub(crate) fn statements_are_unnamed() -> bool {
    !persistent()
}

/// Whether statements are kept on the connection (named and cached).
fn persistent() -> bool {
    !UNNAMED_STATEMENTS.load(Ordering::Relaxed)
}

pub(crate) fn query<'q>(sql: impl SqlSafeStr) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(sql).persistent(persistent())
}

pub(crate) fn query_as<'q, O>(sql: impl SqlSafeStr) -> QueryAs<'q, Postgres, O, PgArguments>
where
    O: for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_as(sql).persistent(persistent())
}

pub(crate) fn query_scalar<'q, O>(sql: impl SqlSafeStr) -> QueryScalar<'q, Postgres, O, PgArguments>
where
    (O,): for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_scalar(sql).persistent(persistent())
}
