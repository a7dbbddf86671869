//! Statements sent unnamed (`database.prepared_statements = "unnamed"`, for a pooler that cannot
//! track named ones) through a PgBouncer in transaction mode with several server connections
//! (`PRAXIS_TEST_PGBOUNCER_WIDE_ADDR`, started by `cargo xtask test`).
//!
//! A test binary of its own: the statement form is process-wide and one-way (`store_postgres::sql`),
//! so the pool built here would switch every test running beside it in the same process to the
//! unnamed form, and the tests of the cached form in `it` would no longer test it.

// Test code: a failed unwrap is a failed test with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The shared set-up of the `it` tests; this binary uses part of it.
#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use kernel::{Role, UserId};
use store_postgres::DbContext;
use support::{clock, read_event, seed_patient, seed_tenant};
use testkit::TestDb;

/// The two calls that are one statement each (a batch of read entries, a patient read) through a
/// pooler in transaction mode with several server connections, with unnamed statements: there a
/// statement's parse and its execution are two exchanges, which the pooler may hand to two server
/// connections, so each call must run inside a transaction. Sixteen clients at once, every call
/// succeeds and reads or writes exactly what it should, and the clients did reach several
/// server connections.
#[tokio::test]
async fn one_statement_calls_are_whole_through_a_pooler_with_several_server_connections() {
    use store_postgres::{PoolOptions, PreparedStatements, audit, patients};

    let db = TestDb::new().await;
    let clock = clock();
    let tenant = seed_tenant(&db).await;
    let admin = DbContext::user(tenant, UserId::new(), Role::Admin);
    let patient = seed_patient(&db, &admin, &clock).await;

    let options =
        PoolOptions { max_connections: 16, prepared_statements: PreparedStatements::Unnamed, ..PoolOptions::default() };
    let pool = store_postgres::connect(&db.wide_pooled_app_url(), &options).await.unwrap();
    let (clients, rounds) = (16_u64, 20_u64);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (pool, admin, clock) = (pool.clone(), admin.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut server_pids = Vec::new();
            for round in 0..rounds {
                let read = patients::get_in_one_statement(&pool, &admin, tenant, patient).await.unwrap();
                assert_eq!(read.map(|row| row.id), Some(patient));
                let n = (client * rounds + round) * 2;
                let events = vec![read_event(tenant, n, &clock), read_event(tenant, n + 1, &clock)];
                assert_eq!(audit::record_unsealed(&pool, events).await.unwrap().len(), 2);
                // The simple protocol: one exchange, whichever server connection serves it.
                let pid = sqlx::raw_sql("SELECT pg_backend_pid()").fetch_one(&pool).await.unwrap();
                server_pids.push(sqlx::Row::get::<i32, _>(&pid, 0));
            }
            server_pids
        }));
    }
    let mut server_pids = Vec::new();
    for task in tasks {
        server_pids.extend(task.await.unwrap());
    }
    server_pids.sort_unstable();
    server_pids.dedup();
    assert!(server_pids.len() > 1, "the clients shared one server connection, which proves nothing: {server_pids:?}");
    let superuser = db.superuser_pool().await;
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_entries WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&superuser)
        .await
        .unwrap();
    assert_eq!(u64::try_from(recorded).unwrap(), clients * rounds * 2);
}
