//! Sealing: linking recorded entries into the chain, by several sealers at once, surviving a
//! kill at any point, and refusing entries altered before they were sealed.

use crate::support::{append_alone, append_reads, clock, read_event, seed_tenant, stored_seqs, tamper};
use audit::{AuditFilter, AuditLog, Page};
use futures_util::future::join_all;
use sqlx::Connection;
use store_postgres::audit::{practices_to_seal, seal_pending};
use store_postgres::{DbContext, PgAuditLog, begin};
use testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealers_racing_each_other_and_the_writers_produce_one_valid_chain() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    let writers = (0..4u64).map(|w| {
        let pool = db.app_pool.clone();
        let events: Vec<_> = (0..25).map(|i| read_event(tenant, w * 100 + i, &clock)).collect();
        tokio::spawn(async move {
            for event in events {
                append_alone(&pool, event).await.unwrap();
            }
        })
    });
    // Three sealers (as three instances would run them), each sealing in a loop meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealers: Vec<_> = (0..3)
        .map(|_| {
            let pool = db.app_pool.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut sealed = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    sealed += seal_pending(&pool, tenant).await.unwrap().sealed;
                    tokio::task::yield_now().await;
                }
                sealed
            })
        })
        .collect();
    for writer in join_all(writers).await {
        writer.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sealed_by_sealers: u64 = join_all(sealers).await.into_iter().map(Result::unwrap).sum();
    let last = seal_pending(&db.app_pool, tenant).await.unwrap().sealed;
    assert_eq!(sealed_by_sealers + last, 100, "each entry sealed exactly once");
    assert_eq!(stored_seqs(&db, tenant).await, (1..=100).collect::<Vec<i64>>());
    let report = PgAuditLog::new(db.app_pool.clone()).verify(tenant).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.entries_checked, report.unsealed), (100, 0));
}

#[tokio::test]
async fn an_entry_committed_before_a_crash_is_sealed_by_the_next_sealer() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 3, &clock).await;
    // Committed, then the process died before any sealer ran: the entry is simply in the table.
    append_alone(&db.app_pool, read_event(tenant, 7, &clock)).await.unwrap();
    db.terminate_connections().await;
    // A sealer killed in the middle of a batch: it had locked the head and sealed one entry
    // (exactly the statements a sealer runs), then its connection died before COMMIT.
    let mut dying = sqlx::PgConnection::connect(&db.app_url).await.unwrap();
    let mut tx = dying.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT seq FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE audit_entries SET seq = 4, prev_hash = decode(repeat('00', 32), 'hex'), \
         hash = decode(repeat('11', 32), 'hex') WHERE tenant_id = $1 AND seq IS NULL",
    )
    .bind(tenant.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap();
    db.terminate_connections().await;
    drop(tx);
    drop(dying);

    // The next sealer (a fresh instance) finds the entry unsealed and seals it properly.
    let pool = store_postgres::connect(&db.app_url, &store_postgres::PoolOptions::default()).await.unwrap();
    assert_eq!(practices_to_seal(&pool, 10).await.unwrap(), vec![tenant]);
    assert_eq!(seal_pending(&pool, tenant).await.unwrap().sealed, 1);
    assert!(practices_to_seal(&pool, 10).await.unwrap().is_empty());
    let report = PgAuditLog::new(pool).verify(tenant).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries_checked, 4);
}

#[tokio::test]
async fn an_unsealed_entry_edited_after_it_was_recorded_is_reported_and_never_sealed() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 2, &clock).await;
    let edited = append_alone(&db.app_pool, read_event(tenant, 3, &clock)).await.unwrap();
    append_alone(&db.app_pool, read_event(tenant, 4, &clock)).await.unwrap();
    // Someone with the owner's credentials edits the entry before the sealer gets to it.
    let rows = tamper(
        &db,
        tenant,
        &format!("UPDATE audit_entries SET resource_id = 'patient-elsewhere' WHERE id = {edited} AND seq IS NULL"),
    )
    .await;
    assert_eq!(rows, 1);
    let log = PgAuditLog::new(db.app_pool.clone());
    let before = log.verify(tenant).await.unwrap();
    assert!(!before.is_intact());
    assert_eq!((before.unsealed, before.altered_unsealed.clone()), (2, vec![edited]));

    // The sealer refuses to launder the edit into the chain, and seals the rest.
    let sealed = seal_pending(&db.app_pool, tenant).await.unwrap();
    assert_eq!((sealed.sealed, sealed.refused.clone()), (1, vec![edited]));
    let after = log.verify(tenant).await.unwrap();
    assert!(after.first_break.is_none(), "{after:?}");
    assert_eq!((after.entries_checked, after.unsealed, after.altered_unsealed.clone()), (3, 1, vec![edited]));
    assert!(!after.is_intact());
}

#[tokio::test]
async fn listings_cover_unsealed_entries_in_a_stable_order_and_say_which_are_sealed() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 2, &clock).await;
    append_alone(&db.app_pool, read_event(tenant, 3, &clock)).await.unwrap();
    let log = PgAuditLog::new(db.app_pool.clone());
    let page = |log: PgAuditLog| async move {
        log.query_entries(tenant, &AuditFilter::default(), Page::new(None, 10).unwrap()).await.unwrap().entries
    };
    let before = page(log.clone()).await;
    assert_eq!(before.iter().map(|e| e.is_sealed()).collect::<Vec<_>>(), [false, true, true]);
    seal_pending(&db.app_pool, tenant).await.unwrap();
    let after = page(log.clone()).await;
    assert!(after.iter().all(|e| e.is_sealed()));
    // Sealing changes no entry's place in the listing (newest recorded first) nor its content.
    let ids = |entries: &[audit::RecordedEntry]| entries.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(&before), ids(&after));
    assert!(before.iter().zip(&after).all(|(b, a)| b.event == a.event));
    assert_eq!(after[0].link.map(|l| l.seq), Some(3));
}

#[tokio::test]
async fn the_runtime_role_can_seal_an_entry_once_and_change_nothing_else() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 1, &clock).await;
    append_alone(&db.app_pool, read_event(tenant, 2, &clock)).await.unwrap();
    let runtime = |sql: &'static str| {
        let pool = db.app_pool.clone();
        async move { crate::support::run_in_context(&pool, tenant, sql).await }
    };
    // The content of an unsealed entry is as fixed as a sealed one's: no UPDATE privilege on it.
    for sql in [
        "UPDATE audit_entries SET outcome = 'failure' WHERE seq IS NULL",
        "UPDATE audit_entries SET digest = NULL WHERE seq IS NULL",
        "DELETE FROM audit_entries WHERE seq IS NULL",
    ] {
        let error = runtime(sql).await.unwrap_err();
        assert_eq!(error.as_database_error().and_then(|e| e.code()).as_deref(), Some("42501"), "{sql}: {error}");
    }
    // A sealed entry cannot be re-sealed, not even with its own values.
    let error = runtime("UPDATE audit_entries SET seq = seq, hash = hash WHERE seq IS NOT NULL").await.unwrap_err();
    assert_eq!(error.as_database_error().and_then(|e| e.code()).as_deref(), Some("42501"), "{error}");
    // The owner fares no better: not with a plain edit, not with an edit dressed as a seal, not by
    // re-sealing a sealed entry.
    for sql in [
        "UPDATE audit_entries SET outcome = 'failure' WHERE seq IS NULL",
        "UPDATE audit_entries SET seq = 7, prev_hash = decode(repeat('00', 32), 'hex'), \
         hash = decode(repeat('00', 32), 'hex'), outcome = 'failure' WHERE seq IS NULL",
        "UPDATE audit_entries SET seq = 7, prev_hash = decode(repeat('00', 32), 'hex'), \
         hash = decode(repeat('00', 32), 'hex'), detail = '{}'::jsonb WHERE seq IS NULL",
        "UPDATE audit_entries SET seq = seq + 10 WHERE seq IS NOT NULL",
    ] {
        let error = crate::support::as_owner(&db, tenant, sql).await.unwrap_err();
        assert_eq!(error.as_database_error().and_then(|e| e.code()).as_deref(), Some("42501"), "{sql}: {error}");
    }
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    let unsealed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_entries WHERE seq IS NULL").fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(unsealed, 1);
    assert!(PgAuditLog::new(db.app_pool.clone()).verify(tenant).await.unwrap().is_intact());
}

/// The columns of `audit_entries`, other than the three seal columns, that the
/// `audit_entries_seal_once` trigger's WHEN condition does not compare between OLD and NEW. A
/// column missing there could be changed by an UPDATE that also seals the entry (migration
/// 20261205000016 says why the condition lists the columns).
async fn columns_missing_from_seal_condition(db: &TestDb) -> Vec<String> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = 'audit_entries'::regclass \
         AND attnum > 0 AND NOT attisdropped AND attname NOT IN ('seq', 'prev_hash', 'hash') ORDER BY attnum",
    )
    .fetch_all(&db.owner_pool)
    .await
    .unwrap();
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger \
         WHERE tgrelid = 'audit_entries'::regclass AND tgname = 'audit_entries_seal_once'",
    )
    .fetch_one(&db.owner_pool)
    .await
    .unwrap();
    let named = |prefix: &str| -> std::collections::BTreeSet<String> {
        definition
            .match_indices(prefix)
            .map(|(at, _)| {
                definition[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .collect()
    };
    let (old, new) = (named("old."), named("new."));
    columns.into_iter().filter(|column| !(old.contains(column) && new.contains(column))).collect()
}

#[tokio::test]
async fn the_seal_once_condition_names_every_other_column() {
    let db = TestDb::new().await;
    assert_eq!(columns_missing_from_seal_condition(&db).await, Vec::<String>::new());
    // A column added without extending the condition is found (this database is thrown away).
    sqlx::query("ALTER TABLE audit_entries ADD COLUMN reviewed_by text").execute(&db.owner_pool).await.unwrap();
    assert_eq!(columns_missing_from_seal_condition(&db).await, ["reviewed_by"]);
}
