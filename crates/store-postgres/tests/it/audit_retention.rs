//! The retention purge: checkpoints first, owner-only DELETE, a recorded purge, and a chain
//! that still verifies from the anchor; a prefix deleted any other way does not.

use crate::support::{TestSigner, append_reads, clock, seed_tenant, stored_seqs, tamper};
use audit::{Action, AuditFilter, AuditLog, Break, BreakKind, Page};
use std::sync::Arc;
use store_postgres::audit::{purge_before, write_checkpoint};
use store_postgres::{AuditStoreError, PgAuditLog};
use testkit::TestDb;

#[tokio::test]
async fn a_purge_keeps_the_rest_of_the_chain_verifiable() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    let entries = append_reads(&db, tenant, 10, &clock).await;
    let signer = Arc::new(TestSigner(b"kms-key-1"));
    // An older checkpoint inside the purged range must not confuse verification.
    write_checkpoint(&db.app_pool, tenant, Some(signer.as_ref()), &clock).await.unwrap();

    let report = purge_before(&db.owner_pool, tenant, 6, Some(signer.as_ref()), &clock).await.unwrap();
    assert_eq!(report.purged, 5);
    assert_eq!((report.anchor.seq, report.anchor.head_hash), (5, entries[4].hash));
    assert_eq!((report.head.seq, report.head.head_hash), (10, entries[9].hash));
    assert!(report.anchor.has_valid_signature(signer.as_ref()).await.unwrap());
    assert_eq!((report.entry.seq, report.entry.event.action), (11, Action::AuditRetentionPurge));
    assert_eq!(stored_seqs(&db, tenant).await, (6..=11).collect::<Vec<i64>>());

    for log in [PgAuditLog::new(db.app_pool.clone()), PgAuditLog::new(db.app_pool.clone()).with_signer(signer.clone())]
    {
        let verified = log.verify(tenant).await.unwrap();
        assert!(verified.is_intact(), "{verified:?}");
        assert_eq!((verified.entries_checked, verified.head), (6, Some(report.entry.head())));
    }
    // Appends continue the chain; a second purge cuts further.
    let log = PgAuditLog::new(db.app_pool.clone()).with_signer(signer.clone());
    append_reads(&db, tenant, 2, &clock).await;
    purge_before(&db.owner_pool, tenant, 12, Some(signer.as_ref()), &clock).await.unwrap();
    let verified = log.verify(tenant).await.unwrap();
    assert!(verified.is_intact(), "{verified:?}");
    assert_eq!(verified.head.map(|h| h.seq), Some(14));
    let page = log.query(tenant, &AuditFilter::default(), Page::default()).await.unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.link.map(|l| l.seq)).collect::<Vec<_>>(),
        vec![Some(14), Some(13), Some(12)]
    );

    // A later checkpoint still catches a dropped tail of the purged chain.
    write_checkpoint(&db.app_pool, tenant, Some(signer.as_ref()), &clock).await.unwrap();
    tamper(&db, tenant, "DELETE FROM audit_entries WHERE seq = 14").await;
    assert_eq!(
        log.verify(tenant).await.unwrap().first_break,
        Some(Break { seq: 14, kind: BreakKind::TruncatedTail { checkpoint_seq: 14, last_seq: 13 } })
    );
}

#[tokio::test]
async fn a_prefix_deleted_outside_the_purge_is_a_gap_even_behind_a_checkpoint() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 3, &clock).await;
    write_checkpoint(&db.app_pool, tenant, None, &clock).await.unwrap();
    append_reads(&db, tenant, 3, &clock).await;
    // A checkpoint sits at seq 3, exactly where a purge would have left its anchor.
    tamper(&db, tenant, "DELETE FROM audit_entries WHERE seq <= 3").await;
    let report = PgAuditLog::new(db.app_pool.clone()).verify(tenant).await.unwrap();
    assert_eq!(report.first_break, Some(Break { seq: 1, kind: BreakKind::SequenceGap { expected: 1, found: 4 } }));
    assert_eq!(report.head, None);
}

#[tokio::test]
async fn the_purge_is_the_owners_and_refuses_nonsense() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 4, &clock).await;
    // The runtime role has no DELETE on audit_entries: the purge fails and leaves everything.
    let error = purge_before(&db.app_pool, tenant, 3, None, &clock).await.unwrap_err();
    assert!(error.to_string().contains("permission denied"), "{error}");
    assert_eq!(stored_seqs(&db, tenant).await, vec![1, 2, 3, 4]);
    for before in [0, 1, 6] {
        let error = purge_before(&db.owner_pool, tenant, before, None, &clock).await.unwrap_err();
        assert!(matches!(error, AuditStoreError::InvalidPurge(_)), "{before}: {error:?}");
    }
    // Purging everything is allowed: the anchor is the head, the purge entry starts the rest.
    let report = purge_before(&db.owner_pool, tenant, 5, None, &clock).await.unwrap();
    assert_eq!((report.purged, report.anchor.seq, report.head.seq), (4, 4, 4));
    assert_eq!(stored_seqs(&db, tenant).await, vec![5]);
    assert!(PgAuditLog::new(db.app_pool.clone()).verify(tenant).await.unwrap().is_intact());
    // Already purged.
    let error = purge_before(&db.owner_pool, tenant, 3, None, &clock).await.unwrap_err();
    assert!(matches!(error, AuditStoreError::InvalidPurge(_)), "{error:?}");
}
