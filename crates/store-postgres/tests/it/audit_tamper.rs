//! An attacker with the owner's rights (trigger disabled, see `support::tamper`) edits, deletes,
//! swaps and truncates stored entries; verification names the first affected seq and how.

use crate::support::{TestSigner, append_reads, clock, seed_tenant, stored_seqs, tamper};
use audit::{AuditLog, Break, BreakKind, ChainedEntry, next_entry};
use sqlx::PgConnection;
use std::sync::Arc;
use store_postgres::audit::write_checkpoint;
use store_postgres::{DbContext, PgAuditLog, begin};
use testkit::TestDb;

async fn first_break(log: &PgAuditLog, tenant: kernel::TenantId) -> Option<Break> {
    log.verify(tenant).await.unwrap().first_break
}

#[tokio::test]
async fn an_intact_chain_verifies_across_batches() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 7, &clock).await;
    // Batches of 3 rows: the keyset pager crosses two page boundaries.
    let log = PgAuditLog::new(db.app_pool.clone());
    let report = log.verify_chain_batched(tenant, 3).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.entries_checked, report.head.map(|h| h.seq)), (7, Some(7)));
    assert_eq!(log.verify(tenant).await.unwrap(), report);
}

#[tokio::test]
async fn an_edited_field_is_a_hash_mismatch_at_that_entry() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    append_reads(&db, tenant, 5, &clock()).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    assert_eq!(tamper(&db, tenant, "UPDATE audit_entries SET resource_id = 'patient-99' WHERE seq = 3").await, 1);
    assert_eq!(first_break(&log, tenant).await, Some(Break { seq: 3, kind: BreakKind::HashMismatch }));
}

#[tokio::test]
async fn an_edit_to_a_value_the_app_never_writes_is_still_reported_not_an_error() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    append_reads(&db, tenant, 5, &clock()).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    tamper(&db, tenant, "UPDATE audit_entries SET action = 'patient.delete' WHERE seq = 2").await;
    assert_eq!(first_break(&log, tenant).await, Some(Break { seq: 2, kind: BreakKind::HashMismatch }));
}

#[tokio::test]
async fn a_deleted_entry_is_a_sequence_gap() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    append_reads(&db, tenant, 5, &clock()).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    assert_eq!(tamper(&db, tenant, "DELETE FROM audit_entries WHERE seq = 3").await, 1);
    assert_eq!(
        first_break(&log, tenant).await,
        Some(Break { seq: 3, kind: BreakKind::SequenceGap { expected: 3, found: 4 } })
    );
}

#[tokio::test]
async fn swapped_contents_are_a_broken_link() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    append_reads(&db, tenant, 5, &clock()).await;
    let log = PgAuditLog::new(db.app_pool.clone());
    // Every column but the key moves: rows 3 and 4 keep their seq, swap everything else.
    let swapped = tamper(
        &db,
        tenant,
        "UPDATE audit_entries a SET prev_hash = b.prev_hash, hash = b.hash, actor_kind = b.actor_kind, \
             actor_tenant = b.actor_tenant, actor_user = b.actor_user, actor_role = b.actor_role, \
             actor_name = b.actor_name, action = b.action, resource_type = b.resource_type, \
             resource_id = b.resource_id, outcome = b.outcome, request_id = b.request_id, \
             occurred_at = b.occurred_at, detail = b.detail \
           FROM audit_entries b \
          WHERE b.tenant_id = a.tenant_id AND ((a.seq = 3 AND b.seq = 4) OR (a.seq = 4 AND b.seq = 3))",
    )
    .await;
    assert_eq!(swapped, 2);
    assert_eq!(first_break(&log, tenant).await, Some(Break { seq: 3, kind: BreakKind::PrevHashMismatch }));
}

#[tokio::test]
async fn a_dropped_tail_past_a_checkpoint_is_a_truncated_tail() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 5, &clock).await;
    let signer = Arc::new(TestSigner(b"kms-key-1"));
    let checkpoint = write_checkpoint(&db.app_pool, tenant, Some(signer.as_ref()), &clock).await.unwrap().unwrap();
    assert_eq!(checkpoint.seq, 5);
    assert!(checkpoint.has_valid_signature(signer.as_ref()).await.unwrap());
    let log = PgAuditLog::new(db.app_pool.clone()).with_signer(signer);
    assert!(log.verify(tenant).await.unwrap().is_intact());

    assert_eq!(tamper(&db, tenant, "DELETE FROM audit_entries WHERE seq >= 4").await, 2);
    assert_eq!(stored_seqs(&db, tenant).await, vec![1, 2, 3]);
    let report = log.verify(tenant).await.unwrap();
    assert_eq!(
        report.first_break,
        Some(Break { seq: 4, kind: BreakKind::TruncatedTail { checkpoint_seq: 5, last_seq: 3 } })
    );
    assert_eq!(report.head.map(|h| h.seq), Some(3));
}

/// Overwrites a stored row with `entry` (same tenant and seq), as the attacker would.
async fn overwrite(conn: &mut PgConnection, entry: &ChainedEntry) {
    sqlx::query(
        "UPDATE audit_entries SET prev_hash = $3, hash = $4, resource_id = $5, detail = $6 \
          WHERE tenant_id = $1 AND seq = $2",
    )
    .bind(entry.event.tenant.as_uuid())
    .bind(entry.seq as i64)
    .bind(entry.prev_hash.as_slice())
    .bind(entry.hash.as_slice())
    .bind(entry.event.resource_id.as_deref())
    .bind(&entry.event.detail)
    .execute(&mut *conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_rehashed_suffix_passes_the_chain_but_not_a_signed_checkpoint() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    let entries = append_reads(&db, tenant, 4, &clock).await;
    let signer = Arc::new(TestSigner(b"kms-key-1"));
    write_checkpoint(&db.app_pool, tenant, Some(signer.as_ref()), &clock).await.unwrap();
    append_reads(&db, tenant, 2, &clock).await;

    // Rewrite entry 2 (hide which patient was read) and re-hash 2..=4 so every link holds.
    let mut head = entries[0].head();
    let mut forged = Vec::new();
    for (i, original) in entries[1..].iter().enumerate() {
        let mut event = original.event.clone();
        if i == 0 {
            event.resource_id = Some("patient-0".into());
        }
        let entry = next_entry(&head, event).unwrap();
        head = entry.head();
        forged.push(entry);
    }
    let mut tx = begin(&db.owner_pool, &DbContext::tenant(tenant)).await.unwrap();
    sqlx::query("ALTER TABLE audit_entries DISABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    for entry in &forged {
        overwrite(&mut tx, entry).await;
    }
    sqlx::query("ALTER TABLE audit_entries ENABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    // The attacker also plants a checkpoint of the forged head; it carries no valid signature.
    sqlx::query(
        "INSERT INTO audit_checkpoints (tenant_id, seq, head_hash, created_at, signature) VALUES ($1, 4, $2, now(), '\\x00')",
    )
    .bind(tenant.as_uuid())
    .bind(head.hash.as_slice())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Entry 5 still links to the *original* entry 4, so the chain alone sees the splice there.
    let unsigned = PgAuditLog::new(db.app_pool.clone());
    let report = unsigned.verify(tenant).await.unwrap();
    assert!(!report.is_intact());
    // With the signer, the planted checkpoint is named as a forgery; the genuine one would pin
    // seq 4 against the rewrite as well (the forgery is reported first at the same seq).
    let log = PgAuditLog::new(db.app_pool.clone()).with_signer(signer.clone());
    assert_eq!(
        log.verify(tenant).await.unwrap().first_break,
        Some(Break { seq: 4, kind: BreakKind::CheckpointSignatureInvalid { checkpoint_seq: 4 } })
    );
    // Without the forged checkpoint, the genuine one alone catches the rewrite.
    let mut tx = begin(&db.owner_pool, &DbContext::tenant(tenant)).await.unwrap();
    sqlx::query("ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_checkpoints WHERE signature = '\\x00'").execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        log.verify(tenant).await.unwrap().first_break,
        Some(Break { seq: 4, kind: BreakKind::CheckpointMismatch { checkpoint_seq: 4 } })
    );
}

#[tokio::test]
async fn unsigned_checkpoints_are_ignored_before_signing_began_and_a_break_after() {
    let db = TestDb::new().await;
    let tenant = seed_tenant(&db).await;
    let clock = clock();
    append_reads(&db, tenant, 3, &clock).await;
    // An older release wrote unsigned checkpoints; a signing one takes over.
    write_checkpoint(&db.app_pool, tenant, None, &clock).await.unwrap();
    clock.advance(time::Duration::minutes(5));
    append_reads(&db, tenant, 2, &clock).await;
    let signer = Arc::new(TestSigner(b"kms-key-1"));
    write_checkpoint(&db.app_pool, tenant, Some(signer.as_ref()), &clock).await.unwrap();
    let log = PgAuditLog::new(db.app_pool.clone()).with_signer(signer.clone());
    let report = log.verify(tenant).await.unwrap();
    assert!(report.is_intact(), "{report:?}");

    // Someone without the key adds an unsigned checkpoint after signing began (here: of a
    // truncated head, to make deleted entries look expected). Reported at its seq.
    clock.advance(time::Duration::minutes(5));
    append_reads(&db, tenant, 2, &clock).await;
    write_checkpoint(&db.app_pool, tenant, None, &clock).await.unwrap();
    let report = log.verify(tenant).await.unwrap();
    assert_eq!(report.first_break, Some(Break { seq: 7, kind: BreakKind::CheckpointUnsigned { checkpoint_seq: 7 } }));
    assert_eq!(report.head.map(|h| h.seq), Some(6));
    // A signer with another key rejects every signature: the first signed checkpoint (seq 5)
    // is the first break, and nothing is vouched for from there on.
    let other = PgAuditLog::new(db.app_pool.clone()).with_signer(Arc::new(TestSigner(b"kms-key-2")));
    let report = other.verify(tenant).await.unwrap();
    assert_eq!(
        report.first_break,
        Some(Break { seq: 5, kind: BreakKind::CheckpointSignatureInvalid { checkpoint_seq: 5 } })
    );
}
