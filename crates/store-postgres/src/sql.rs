//! `sqlx::query`, `query_as` and `query_scalar` as this crate sends them: unnamed statements.
//!
//! sqlx names every statement it prepares (`sqlx_s_1`, `sqlx_s_2`, ...) and keeps it on the
//! connection for reuse; `statement_cache_capacity(0)` only stops the reuse, not the naming. A
//! connection pooler in transaction mode (PgBouncer, RDS Proxy) hands each transaction whichever
//! server connection is free, so a named statement is missing on the next one ("prepared
//! statement sqlx_s_3 does not exist") or collides with another client's of the same name
//! ("already exists"). PgBouncer 1.21 and later can track named statements
//! (`max_prepared_statements`); older ones (Debian's 1.18) cannot. Unnamed statements work with
//! every pooler: each is parsed and executed within the transaction that sends it.
//!
//! The cost is one parse per query on the server (no plan reuse across transactions), which for
//! Praxis' short indexed queries is small next to the round trip. Every query of this crate goes
//! through here (`cargo xtask tidy` refuses `sqlx::query` elsewhere in it).
//!
//! Unnamed statements are only safe *inside* a transaction behind a transaction pooler: sqlx
//! parses (one `Sync`) and then executes (a second `Sync`), and between the two the pooler may
//! give an idle server connection to another client. Every query here runs in a transaction
//! (`context::begin`); the few that do not use the simple protocol (`sqlx::raw_sql`).

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{FromRow, Postgres, SqlSafeStr};

pub(crate) fn query<'q>(sql: impl SqlSafeStr) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(sql).persistent(false)
}

pub(crate) fn query_as<'q, O>(sql: impl SqlSafeStr) -> QueryAs<'q, Postgres, O, PgArguments>
where
    O: for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_as(sql).persistent(false)
}

pub(crate) fn query_scalar<'q, O>(sql: impl SqlSafeStr) -> QueryScalar<'q, Postgres, O, PgArguments>
where
    (O,): for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_scalar(sql).persistent(false)
}
