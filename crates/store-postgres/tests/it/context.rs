//! The RLS context a transaction starts with, as the database sees it: every form of
//! `DbContext`, including a login whose email is not a plain token (it is bound, never written
//! into the statement), and none of it left on the connection after the transaction.

use kernel::{Role, TenantId, UserId};
use store_postgres::{DbContext, begin};
use testkit::TestDb;

async fn settings(db: &TestDb, context: &DbContext) -> Vec<String> {
    let mut tx = begin(&db.app_pool, context).await.unwrap();
    let row: (String, String, String, String, String) = sqlx::query_as(
        "SELECT current_setting('app.tenant_id'), current_setting('app.user_id'), current_setting('app.role'), \
                current_setting('app.token_hash'), current_setting('app.login_email')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    vec![row.0, row.1, row.2, row.3, row.4]
}

#[tokio::test]
async fn every_context_is_set_exactly_and_only_for_its_transaction() {
    let db = TestDb::new().await;
    let tenant = TenantId::new();
    let user = UserId::new();
    let (t, u) = (tenant.to_string(), user.to_string());

    assert_eq!(settings(&db, &DbContext::user(tenant, user, Role::Therapist)).await, [&t, &u, "therapist", "", ""]);
    assert_eq!(settings(&db, &DbContext::service(tenant)).await, [&t, "", "service", "", ""]);
    let hash = [0xab; 32];
    assert_eq!(settings(&db, &DbContext::token_lookup(tenant, hash)).await, [&t, "", "", &"ab".repeat(32), ""]);
    // Quotes, a backslash and a semicolon: bound as a parameter, stored as given.
    let email = r"o'brien\'; SELECT 1; --@example.org";
    assert_eq!(settings(&db, &DbContext::login_lookup(tenant, email)).await, [&t, "", "", "", email]);
    assert_eq!(settings(&db, &DbContext::anonymous()).await, ["", "", "", "", ""]);

    // Outside a transaction begun with a context, nothing is set.
    let mut conn = db.app_pool.acquire().await.unwrap();
    let tenant_after: Option<String> = sqlx::query_scalar("SELECT nullif(current_setting('app.tenant_id', true), '')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(tenant_after, None);
}

/// The pool hands out a connection in use a moment ago without a ping, and pings one that sat
/// idle: a connection cut while idle (a restart, a failover) is replaced before a request uses it.
#[tokio::test]
async fn a_connection_cut_while_idle_is_replaced_before_it_is_used() {
    let db = TestDb::new().await;
    let options = store_postgres::PoolOptions { max_connections: 1, ..store_postgres::PoolOptions::default() };
    let pool = store_postgres::connect(&db.app_url, &options).await.unwrap();
    let mut tx = begin(&pool, &DbContext::anonymous()).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    // The database ends the pooled connection's session while it is idle in the pool.
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&db.app_pool).await.unwrap();
    assert!(ended);
    tokio::time::sleep(store_postgres::PING_IF_IDLE_FOR + std::time::Duration::from_millis(300)).await;

    let mut tx = begin(&pool, &DbContext::anonymous()).await.unwrap();
    let new_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_ne!(new_pid, pid, "a new connection replaced the one that was cut");
}

/// `audit::record_unsealed` (the group commit of reads) records each practice's entries under
/// that practice's own context, in one statement that commits before it returns, as the runtime
/// role: each practice sees exactly its own; one entry the database refuses (an unknown
/// practice) writes none of the call's; and a caller inside a transaction keeps its context.
#[tokio::test]
async fn one_statement_records_each_practice_under_its_own_context_all_or_nothing() {
    use crate::support::{clock, read_event, seed_tenant};
    use kernel::TenantId;
    use store_postgres::audit;

    let db = TestDb::new().await;
    let (a, b) = (seed_tenant(&db).await, seed_tenant(&db).await);
    let clock = clock();
    let count = |tenant: TenantId| {
        let pool = db.app_pool.clone();
        async move {
            let mut tx = begin(&pool, &DbContext::tenant(tenant)).await.unwrap();
            let count: i64 =
                sqlx::query_scalar("SELECT count(*) FROM audit_entries").fetch_one(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
            count
        }
    };
    let events = vec![read_event(a, 1, &clock), read_event(b, 2, &clock), read_event(a, 3, &clock)];
    let ids = audit::record_unsealed(&db.app_pool, events).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert_eq!((count(a).await, count(b).await), (2, 1), "each practice sees its own entries only");

    let unknown = TenantId::new();
    let refused =
        audit::record_unsealed(&db.app_pool, vec![read_event(a, 4, &clock), read_event(unknown, 5, &clock)]).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(count(a).await, 2, "the refused call wrote nothing, not even A's entry");
    let refused = audit::record_unsealed(&db.app_pool, vec![read_event(unknown, 6, &clock)]).await;
    assert!(matches!(refused, Err(store_postgres::AuditStoreError::UnknownTenant(t)) if t == unknown), "{refused:?}");

    // Called inside B's transaction for an entry of A: A's entry is written under A's context,
    // and the transaction is B's again afterwards.
    let mut tx = begin(&db.app_pool, &DbContext::tenant(b)).await.unwrap();
    let written: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_record_unsealed('1s', ARRAY[$1]::uuid[], ARRAY[sha256('x')], ARRAY['system'], \
             ARRAY[NULL]::uuid[], ARRAY[NULL]::uuid[], ARRAY[NULL]::text[], ARRAY['test'], ARRAY['patient.read'], \
             ARRAY['patient'], ARRAY['r'], ARRAY['success'], ARRAY[NULL]::text[], ARRAY[now()], ARRAY['{}'::jsonb])",
    )
    .bind(a.as_uuid())
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(written, 1);
    let (context, seen): (String, i64) =
        sqlx::query_as("SELECT current_setting('app.tenant_id'), (SELECT count(*) FROM audit_entries)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((context, seen), (b.to_string(), 1), "B's context again: A's new entry is invisible");
    assert_eq!(count(a).await, 3);
}

/// A read-only transaction reads under its context, and Postgres refuses any write in it
/// (SQLSTATE 25006), so ending it without COMMIT cannot lose one. One that is finished after a
/// healthy read is ended on the server without the connection being used again (seen from
/// another connection: the backend is `idle`, not `idle in transaction`), and the next
/// transaction on that connection is writable and has its own context only.
#[tokio::test]
async fn a_read_only_transaction_refuses_writes_and_ends_without_a_commit() {
    use crate::support::{clock, read_event, seed_tenant};
    use store_postgres::{AuditStoreError, StoreError, audit, begin_read_only};

    let db = TestDb::new().await;
    let (tenant, other) = (seed_tenant(&db).await, seed_tenant(&db).await);
    let clock = clock();
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    audit::append(&mut tx, read_event(tenant, 1, &clock)).await.unwrap();
    tx.commit().await.unwrap();

    // One connection, so every transaction below runs on the same one.
    let options = store_postgres::PoolOptions { max_connections: 1, ..store_postgres::PoolOptions::default() };
    let pool = store_postgres::connect(&db.app_url, &options).await.unwrap();
    let mut read = begin_read_only(&pool, &DbContext::tenant(tenant)).await.unwrap();
    let (pid, seen): (i32, i64) =
        sqlx::query_as("SELECT pg_backend_pid(), (SELECT count(*) FROM audit_entries WHERE tenant_id = $1)")
            .bind(tenant.as_uuid())
            .fetch_one(read.conn())
            .await
            .unwrap();
    assert_eq!(seen, 1, "the read sees its practice's rows");
    read.finish();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&db.app_pool)
            .await
            .unwrap();
        if state.as_deref() == Some("idle") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the finished transaction is still open: {state:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let mut tx = begin(&pool, &DbContext::tenant(other)).await.unwrap();
    let (next_pid, read_only, seen): (i32, String, i64) = sqlx::query_as(
        "SELECT pg_backend_pid(), current_setting('transaction_read_only'), (SELECT count(*) FROM audit_entries)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(next_pid, pid, "the same connection");
    assert_eq!(read_only, "off", "the next transaction is not read-only");
    assert_eq!(seen, 0, "and sees only its own practice");
    audit::append(&mut tx, read_event(other, 2, &clock)).await.unwrap();
    tx.commit().await.unwrap();

    let mut read = begin_read_only(&pool, &DbContext::tenant(tenant)).await.unwrap();
    let refused = audit::append(read.conn(), read_event(tenant, 3, &clock)).await.expect_err("a write must fail");
    let AuditStoreError::Store(StoreError::Database(sqlx::Error::Database(error))) = &refused else {
        panic!("not a database refusal: {refused:?}")
    };
    assert_eq!(error.code().as_deref(), Some("25006"), "read_only_sql_transaction: {error}");
    drop(read);

    // A context with a value that is sent bound (a login's email) is read-only as well.
    let email = "o'brien@example.org";
    let mut read = begin_read_only(&pool, &DbContext::login_lookup(tenant, email)).await.unwrap();
    let (read_only, login_email): (String, String) =
        sqlx::query_as("SELECT current_setting('transaction_read_only'), current_setting('app.login_email')")
            .fetch_one(read.conn())
            .await
            .unwrap();
    assert_eq!((read_only.as_str(), login_email.as_str()), ("on", email));
    read.finish();
}

/// The one-statement patient read in the cached form, the default (this test binary never builds a
/// pool for unnamed statements, which would switch the whole process to them): it reads the
/// patient under the context it is given, nothing under another practice's whichever practice
/// it names, and leaves no context on its connection.
#[tokio::test]
async fn the_cached_one_statement_patient_read_sees_its_practice_only() {
    use crate::support::{clock, seed_patient, seed_tenant};
    use store_postgres::patients;

    let db = TestDb::new().await;
    let clock = clock();
    let (tenant, other) = (seed_tenant(&db).await, seed_tenant(&db).await);
    let admin = DbContext::user(tenant, UserId::new(), Role::Admin);
    let patient = seed_patient(&db, &admin, &clock).await;

    let options = store_postgres::PoolOptions { max_connections: 1, ..store_postgres::PoolOptions::default() };
    let pool = store_postgres::connect(&db.app_url, &options).await.unwrap();
    let read = patients::get_in_one_statement(&pool, &admin, tenant, patient).await.unwrap();
    assert_eq!(read.map(|row| (row.id, row.tenant)), Some((patient, tenant)));
    let tenant_after: Option<String> =
        sqlx::query_scalar("SELECT nullif(current_setting('app.tenant_id', true), '')").fetch_one(&pool).await.unwrap();
    assert_eq!(tenant_after, None, "the read left its context on the connection");
    let as_other = DbContext::user(other, UserId::new(), Role::Admin);
    for (context, named) in [(&as_other, tenant), (&as_other, other)] {
        assert!(patients::get_in_one_statement(&pool, context, named, patient).await.unwrap().is_none());
    }
}
