//! Recording: inside the caller's transaction, without any practice-wide lock, refused in the
//! wrong context. (Sealing is in `audit_sealing`.)

use crate::support::{append_alone, append_reads, clock, read_event, seed_tenant, stored_seqs};
use audit::{AuditLog, ChainHead};
use futures_util::future::join_all;
use std::time::Duration;
use store_postgres::audit::{append, seal_pending};
use store_postgres::{AuditStoreError, DbContext, PgAuditLog, begin};
use testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_records_for_one_tenant_are_sealed_into_one_chain() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    let clock = clock();
    let tasks = (0..50u64).map(|i| {
        let log = log.clone();
        let event = read_event(tenant, i, &clock);
        tokio::spawn(async move { append_alone(log.pool(), event).await.unwrap() })
    });
    let mut ids: Vec<u64> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    // Recorded, not sealed: no seq yet.
    assert!(stored_seqs(&db, tenant).await.is_empty());
    let report = seal_pending(&db.app_pool, tenant).await.unwrap();
    assert_eq!((report.sealed, report.refused.len(), report.busy), (50, 0, false));
    assert_eq!(stored_seqs(&db, tenant).await, (1..=50).collect::<Vec<i64>>());
    let report = log.verify(tenant).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.entries_checked, report.head.map(|h| h.seq), report.unsealed), (50, Some(50), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_does_not_wait_for_the_chain_head_lock() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 1, &clock).await;
    // A sealer holds the practice's head (as a long sealing batch would)...
    let mut sealer = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    sqlx::query("SELECT seq FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .execute(&mut *sealer)
        .await
        .unwrap();
    // ...and requests of the practice still record and commit, concurrently.
    let records = (0..8u64).map(|i| append_alone(&db.app_pool, read_event(tenant, 10 + i, &clock)));
    let recorded = tokio::time::timeout(Duration::from_secs(10), join_all(records)).await;
    let recorded = recorded.expect("recording waited for the head lock");
    assert!(recorded.iter().all(Result::is_ok), "{recorded:?}");
    // While the head is held, another sealer skips the practice instead of queueing behind it.
    let skipped = tokio::time::timeout(Duration::from_secs(10), seal_pending(&db.app_pool, tenant)).await;
    assert!(skipped.expect("a second sealer waited for the first").unwrap().busy);
    sealer.rollback().await.unwrap();
    assert_eq!(seal_pending(&db.app_pool, tenant).await.unwrap().sealed, 8);
    assert_eq!(stored_seqs(&db, tenant).await, (1..=9).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_for_several_tenants_form_one_chain_each() {
    let db = TestDb::new().await;
    let mut tenants = Vec::new();
    for _ in 0..4 {
        tenants.push(seed_tenant(&db).await);
    }
    let log = PgAuditLog::new(db.app_pool.clone());
    let clock = clock();
    let tasks = (0..80u64).map(|i| {
        let log = log.clone();
        let tenant = tenants[(i % 4) as usize];
        let event = read_event(tenant, i, &clock);
        tokio::spawn(async move { append_alone(log.pool(), event).await.unwrap() })
    });
    for result in join_all(tasks).await {
        result.unwrap();
    }
    for tenant in tenants {
        seal_pending(&db.app_pool, tenant).await.unwrap();
        assert_eq!(stored_seqs(&db, tenant).await, (1..=20).collect::<Vec<i64>>());
        let report = log.verify(tenant).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.entries_checked, 20);
    }
}

#[tokio::test]
async fn an_entry_rolls_back_with_the_change_it_records() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 2, &clock).await;

    // The change (renaming the practice) and its audit entry, in one transaction, rolled back.
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    sqlx::query("UPDATE tenants SET name = 'Renamed'").execute(&mut *tx).await.unwrap();
    append(&mut tx, read_event(tenant, 99, &clock)).await.unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(seal_pending(&db.app_pool, tenant).await.unwrap().sealed, 0);
    assert_eq!(stored_seqs(&db, tenant).await, vec![1, 2]);
    let log = PgAuditLog::new(db.app_pool.clone());
    let report = log.verify(tenant).await.unwrap();
    assert!(report.is_intact());
    assert_eq!(report.unsealed, 0);
    // The next entry takes seq 3 and links to entry 2.
    append_alone(log.pool(), read_event(tenant, 100, &clock)).await.unwrap();
    seal_pending(&db.app_pool, tenant).await.unwrap();
    let report = log.verify(tenant).await.unwrap();
    assert!(report.is_intact());
    assert_eq!(report.head.map(|h| h.seq), Some(3));
}

#[tokio::test]
async fn an_invalid_event_fails_the_append_and_leaves_nothing() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    let bad = read_event(tenant, 1, &clock).with_detail(serde_json::json!({ "email": "jane@example.org" }));
    let error = append(&mut tx, bad).await.unwrap_err();
    assert!(matches!(error, AuditStoreError::Audit(audit::AuditError::DetailPiiKey { .. })), "{error:?}");
    tx.commit().await.unwrap();
    let report = PgAuditLog::new(db.app_pool.clone()).verify(tenant).await.unwrap();
    assert_eq!((report.entries_checked, report.unsealed), (0, 0));
}

#[tokio::test]
async fn appending_in_another_tenants_context_is_refused() {
    let db = TestDb::new().await;
    let (a, b) = (seed_tenant(&db).await, seed_tenant(&db).await);
    let clock = clock();
    append_reads(&db, b, 1, &clock).await;
    for context in [DbContext::tenant(a), DbContext::anonymous()] {
        for tenant in [b, seed_tenant(&db).await] {
            let mut tx = begin(&db.app_pool, &context).await.unwrap();
            let error = append(&mut tx, read_event(tenant, 1, &clock)).await.unwrap_err();
            assert!(
                matches!(&error, AuditStoreError::TenantContext { expected, .. } if *expected == tenant),
                "{error:?}"
            );
            tx.rollback().await.unwrap();
        }
    }
    seal_pending(&db.app_pool, b).await.unwrap();
    assert_eq!(stored_seqs(&db, b).await, vec![1]);
}

#[tokio::test]
async fn an_unknown_tenant_is_refused() {
    let db = TestDb::new().await;
    let ghost = kernel::TenantId::new();
    let mut tx = begin(&db.app_pool, &DbContext::tenant(ghost)).await.unwrap();
    let error = append(&mut tx, read_event(ghost, 1, &clock())).await.unwrap_err();
    assert!(matches!(error, AuditStoreError::UnknownTenant(t) if t == ghost), "{error:?}");
}

#[tokio::test]
async fn the_head_follows_the_chain() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let entries = append_reads(&db, tenant, 3, &clock()).await;
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    let (seq, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_heads").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(ChainHead { seq: seq as u64, hash: hash.try_into().unwrap() }, entries[2].head());
    assert_eq!(entries[0].prev_hash, audit::GENESIS_HASH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_recorded_with_append_all_are_sealed_in_order_among_single_records() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    let clock = clock();
    // 10 batches of 5 racing 10 single records, with sealers running meanwhile.
    let batches = (0..10u64).map(|b| {
        let pool = db.app_pool.clone();
        let events: Vec<_> = (0..5).map(|i| read_event(tenant, 100 + b * 5 + i, &clock)).collect();
        tokio::spawn(async move {
            let mut tx = begin(&pool, &DbContext::tenant(tenant)).await.unwrap();
            let ids = store_postgres::audit::append_all(&mut tx, events).await.unwrap();
            tx.commit().await.unwrap();
            seal_pending(&pool, tenant).await.unwrap();
            ids
        })
    });
    let singles = (0..10u64).map(|i| {
        let log = log.clone();
        let event = read_event(tenant, i, &clock);
        tokio::spawn(async move { vec![append_alone(log.pool(), event).await.unwrap()] })
    });
    let mut batch_ids = Vec::new();
    for ids in join_all(batches).await {
        let ids = ids.unwrap();
        assert_eq!(ids.len(), 5);
        batch_ids.push(ids);
    }
    for ids in join_all(singles).await {
        ids.unwrap();
    }
    seal_pending(&db.app_pool, tenant).await.unwrap();
    assert_eq!(stored_seqs(&db, tenant).await, (1..=60).collect::<Vec<i64>>());
    // A batch is sealed in the order it was recorded (other records may interleave: ids are
    // drawn row by row, and the chain follows recording order).
    let chain = crate::support::sealed_chain(&db, tenant).await;
    for ids in batch_ids {
        let seqs: Vec<u64> =
            ids.iter().map(|id| chain.iter().find(|(sealed, _)| sealed == id).unwrap().1.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    }
    let report = log.verify(tenant).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries_checked, 60);
}

#[tokio::test]
async fn append_all_refuses_a_batch_spanning_two_tenants_and_writes_nothing() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let other = seed_tenant(&db).await;
    let clock = clock();
    let mut tx = begin(&db.app_pool, &DbContext::tenant(tenant)).await.unwrap();
    let mixed = vec![read_event(tenant, 1, &clock), read_event(other, 2, &clock)];
    let refused = store_postgres::audit::append_all(&mut tx, mixed).await;
    assert!(matches!(refused, Err(AuditStoreError::TenantContext { .. })), "{refused:?}");
    // An empty batch is no append at all.
    assert!(store_postgres::audit::append_all(&mut tx, Vec::new()).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    for practice in [tenant, other] {
        let report = PgAuditLog::new(db.app_pool.clone()).verify(practice).await.unwrap();
        assert_eq!((report.entries_checked, report.unsealed), (0, 0));
    }
}
