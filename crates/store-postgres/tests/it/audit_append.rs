//! Appending: inside the caller's transaction, serialised per tenant, refused in the wrong context.

use crate::support::{append_alone, append_reads, clock, read_event, seed_tenant, stored_seqs};
use audit::{AuditLog, ChainHead};
use futures_util::future::join_all;
use store_postgres::audit::append;
use store_postgres::{AuditStoreError, DbContext, PgAuditLog, begin};
use testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_appends_for_one_tenant_form_one_chain() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    let clock = clock();
    // All 50 race for the very first entry too: the head row does not exist yet.
    let tasks = (0..50u64).map(|i| {
        let log = log.clone();
        let event = read_event(tenant, i, &clock);
        tokio::spawn(async move { append_alone(log.pool(), event).await.unwrap().seq })
    });
    let mut seqs: Vec<u64> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(stored_seqs(&db, tenant).await, (1..=50).collect::<Vec<i64>>());
    let report = log.verify(tenant).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.entries_checked, report.head.map(|h| h.seq)), (50, Some(50)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_for_several_tenants_form_one_chain_each() {
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
    let entry = append(&mut tx, read_event(tenant, 99, &clock)).await.unwrap();
    assert_eq!(entry.seq, 3);
    tx.rollback().await.unwrap();

    assert_eq!(stored_seqs(&db, tenant).await, vec![1, 2]);
    let log = PgAuditLog::new(db.app_pool.clone());
    assert!(log.verify(tenant).await.unwrap().is_intact());
    // The head rolled back too: the next entry takes seq 3 and links to entry 2.
    let next = append_alone(log.pool(), read_event(tenant, 100, &clock)).await.unwrap();
    assert_eq!(next.seq, 3);
    let report = log.verify(tenant).await.unwrap();
    assert!(report.is_intact());
    assert_eq!(report.head, Some(next.head()));
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
    assert!(stored_seqs(&db, tenant).await.is_empty());
}

#[tokio::test]
async fn appending_in_another_tenants_context_is_refused() {
    let db = TestDb::new().await;
    let (a, b) = (seed_tenant(&db).await, seed_tenant(&db).await);
    let clock = clock();
    append_reads(&db, b, 1, &clock).await;
    for context in [DbContext::tenant(a), DbContext::anonymous()] {
        // B's head exists (hidden from A) and does not: both paths refuse the same way.
        for tenant in [b, seed_tenant(&db).await] {
            let mut tx = begin(&db.app_pool, &context).await.unwrap();
            let error = append(&mut tx, read_event(tenant, 1, &clock)).await.unwrap_err();
            assert!(
                matches!(&error, AuditStoreError::TenantContext { expected, found } if *expected == tenant && *found == context.tenant.map(|t| *t.as_uuid())),
                "{error:?}"
            );
            tx.rollback().await.unwrap();
        }
    }
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
async fn batches_appended_with_append_all_interleave_with_single_appends_into_one_chain() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    let clock = clock();
    // 10 batches of 5 racing 10 single appends, including for the very first entry.
    let batches = (0..10u64).map(|b| {
        let pool = db.app_pool.clone();
        let events: Vec<_> = (0..5).map(|i| read_event(tenant, 100 + b * 5 + i, &clock)).collect();
        tokio::spawn(async move {
            let mut tx = begin(&pool, &DbContext::tenant(tenant)).await.unwrap();
            let entries = store_postgres::audit::append_all(&mut tx, events).await.unwrap();
            tx.commit().await.unwrap();
            entries.iter().map(|e| e.seq).collect::<Vec<_>>()
        })
    });
    let singles = (0..10u64).map(|i| {
        let log = log.clone();
        let event = read_event(tenant, i, &clock);
        tokio::spawn(async move { vec![append_alone(log.pool(), event).await.unwrap().seq] })
    });
    let mut batch_seqs = Vec::new();
    for seqs in join_all(batches).await {
        let seqs = seqs.unwrap();
        // A batch takes consecutive seqs: nothing interleaves inside it.
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        batch_seqs.extend(seqs);
    }
    assert_eq!(batch_seqs.len(), 50);
    for seqs in join_all(singles).await {
        seqs.unwrap();
    }
    assert_eq!(stored_seqs(&db, tenant).await, (1..=60).collect::<Vec<i64>>());
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
    assert!(stored_seqs(&db, tenant).await.is_empty());
    assert!(stored_seqs(&db, other).await.is_empty());
}
