//! The first line of defence: privileges and the append-only triggers.

use crate::support::{append_reads, as_owner, clock, run_in_context, seed_tenant, stored_seqs};
use audit::AuditLog;
use store_postgres::PgAuditLog;
use testkit::TestDb;

const MUTATIONS: [&str; 6] = [
    "UPDATE audit_entries SET resource_id = 'x'",
    "DELETE FROM audit_entries",
    "TRUNCATE audit_entries",
    "UPDATE audit_checkpoints SET signature = NULL",
    "DELETE FROM audit_checkpoints",
    "TRUNCATE audit_checkpoints",
];

async fn seeded() -> (TestDb, kernel::TenantId) {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 3, &clock).await;
    store_postgres::audit::write_checkpoint(&db.app_pool, tenant, None, &clock).await.unwrap();
    (db, tenant)
}

#[tokio::test]
async fn the_runtime_role_can_only_insert_and_select_entries_and_checkpoints() {
    let db = TestDb::new().await;
    for (table, expected) in [
        ("audit_entries", vec!["INSERT", "SELECT"]),
        ("audit_checkpoints", vec!["INSERT", "SELECT"]),
        ("audit_heads", vec!["INSERT", "SELECT", "UPDATE"]),
    ] {
        let granted: Vec<String> = sqlx::query_scalar(
            "SELECT p FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) p \
              WHERE has_table_privilege('praxis_runtime', $1, p) ORDER BY p",
        )
        .bind(table)
        .fetch_all(&db.owner_pool)
        .await
        .unwrap();
        assert_eq!(granted, expected, "{table}");
    }
}

#[tokio::test]
async fn the_runtime_role_cannot_update_delete_or_truncate() {
    let (db, tenant) = seeded().await;
    for statement in MUTATIONS {
        let error = run_in_context(&db.app_pool, tenant, statement).await.unwrap_err().to_string();
        assert!(error.contains("permission denied"), "{statement}: {error}");
    }
    // The retention switch is a plain custom setting anyone may set; it grants nothing.
    let error = run_in_context(
        &db.app_pool,
        tenant,
        "WITH s AS (SELECT set_config('praxis.retention_purge', 'on', true)) DELETE FROM audit_entries",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("permission denied"), "{error}");
    assert_eq!(stored_seqs(&db, tenant).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn the_owner_cannot_update_delete_or_truncate_while_the_trigger_stands() {
    let (db, tenant) = seeded().await;
    for statement in MUTATIONS {
        let error = as_owner(&db, tenant, statement).await.unwrap_err().to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    // The retention switch opens DELETE on entries only: never UPDATE, TRUNCATE or checkpoints.
    for statement in
        ["UPDATE audit_entries SET resource_id = 'x'", "TRUNCATE audit_entries", "DELETE FROM audit_checkpoints"]
    {
        let switched = format!("SELECT set_config('praxis.retention_purge', 'on', true); {statement}");
        let error = as_owner_multi(&db, tenant, &switched).await.unwrap_err().to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    assert_eq!(stored_seqs(&db, tenant).await, vec![1, 2, 3]);
    assert!(PgAuditLog::new(db.app_pool.clone()).verify(tenant).await.unwrap().is_intact());
}

/// Several statements in one transaction (the setting is transaction-local).
async fn as_owner_multi(db: &TestDb, tenant: kernel::TenantId, sql: &str) -> Result<(), sqlx::Error> {
    let mut tx = store_postgres::begin(&db.owner_pool, &store_postgres::DbContext::tenant(tenant)).await.unwrap();
    for statement in sql.split("; ") {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut *tx).await?;
    }
    tx.commit().await
}

#[tokio::test]
async fn tenant_a_sees_none_of_tenant_bs_audit_rows() {
    let db = TestDb::new().await;
    let (a, b) = (seed_tenant(&db).await, seed_tenant(&db).await);
    let clock = clock();
    append_reads(&db, a, 2, &clock).await;
    append_reads(&db, b, 3, &clock).await;
    store_postgres::audit::write_checkpoint(&db.app_pool, b, None, &clock).await.unwrap();
    for table in ["audit_entries", "audit_heads", "audit_checkpoints"] {
        for pool in [&db.app_pool, &db.owner_pool] {
            let mut tx = store_postgres::begin(pool, &store_postgres::DbContext::tenant(a)).await.unwrap();
            let foreign: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE tenant_id <> '{a}'"
            )))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            assert_eq!(foreign, 0, "{table}");
            tx.rollback().await.unwrap();
        }
    }
    let log = PgAuditLog::new(db.app_pool.clone());
    let page = log.query(a, &audit::AuditFilter::default(), audit::Page::default()).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    assert!(page.entries.iter().all(|e| e.event.tenant == a));
    // Asking for B's chain in B's context works; the runtime role cannot write into B from A.
    assert_eq!(log.verify(b).await.unwrap().entries_checked, 3);
    let error = run_in_context(
        &db.app_pool,
        a,
        &format!(
            "INSERT INTO audit_entries (tenant_id, seq, prev_hash, hash, actor_kind, actor_name, action, resource_type, \
             outcome, occurred_at, detail) VALUES ('{b}', 99, decode(repeat('00', 32), 'hex'), \
             decode(repeat('00', 32), 'hex'), 'system', 'x', 'auth.login', 'session', 'success', now(), '{{}}')"
        ),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("row-level security"), "{error}");
}
