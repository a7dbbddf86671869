//! Streaming verification of a stored chain: checkpoints first, then the sealed entries in seq
//! order, in batches, through the pure verifier; then each unsealed entry against its digest.

use super::AuditStoreError;
use super::retention::{PURGED_BEFORE_SEQ_KEY, load_checkpoints};
use super::row::EntryRow;
use crate::{DbContext, begin};
use ::audit::{
    Action, Break, BreakKind, ChainVerifier, ChainedEntry, CheckpointSigner, VerificationReport, vet_checkpoints,
};
use kernel::TenantId;
use sqlx::PgPool;

/// Rows fetched per round trip while verifying: large enough that the round trips do not
/// dominate, small enough to keep memory flat for chains of millions of entries.
pub const VERIFY_BATCH: u32 = 1000;

const SELECT_UNSEALED_BATCH: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM audit_entries WHERE tenant_id = $1 AND seq IS NULL AND id > $2 ORDER BY id LIMIT $3"
);

const SELECT_BATCH: &str =
    concat!("SELECT ", entry_columns!(), " FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");

/// Verifies `tenant`'s chain. With a `signer`, only checkpoints it accepts are trusted, and a
/// checkpoint it rejects (a bad signature, or none where one was due) is reported as a break at
/// its seq ([`::audit::vet_checkpoints`]).
///
/// Runs in one read-committed transaction. That is consistent enough: entries are only ever
/// added at the tail (which a keyset page past the last seen seq simply reads or misses) or
/// purged at the head, behind the head lock, before the first entry this reads.
pub(crate) async fn verify_tenant(
    pool: &PgPool,
    tenant: TenantId,
    signer: Option<&dyn CheckpointSigner>,
    batch: u32,
) -> Result<VerificationReport, AuditStoreError> {
    // The checkpoints are read, and vetted, before the entries' transaction opens: vetting asks
    // the signer, which reads its keys in a transaction of its own. Holding one connection while
    // waiting for another starves a pool (or a transaction pooler's few server connections)
    // whose every connection is held by a request waiting for a second one. Read committed gives
    // each statement its own snapshot anyway, so one transaction would not read them together.
    let stored = {
        let mut tx = begin(pool, &DbContext::tenant(tenant)).await?;
        let stored = load_checkpoints(&mut tx, tenant).await?;
        tx.commit().await.map_err(AuditStoreError::db)?;
        stored
    };
    let vetted = vet_checkpoints(tenant, stored, signer).await?;
    let mut tx = begin(pool, &DbContext::tenant(tenant)).await?;
    for ignored in &vetted.ignored {
        tracing::warn!(
            tenant = %ignored.tenant,
            seq = ignored.seq,
            "audit checkpoint ignored: unsigned, from before the practice's checkpoints were signed"
        );
    }
    let checkpoints = vetted.trusted;

    let first_seq: Option<i64> = crate::sql::query_scalar("SELECT min(seq) FROM audit_entries WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(AuditStoreError::db)?;
    let first_seq = first_seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(1);
    // A purged chain starts after a (trusted) checkpoint of the last purged entry.
    let anchor = (first_seq > 1).then(|| checkpoints.iter().find(|c| c.seq == first_seq - 1)).flatten().cloned();
    let mut verifier = match &anchor {
        None => ChainVerifier::new(tenant, &checkpoints)?,
        Some(anchor) => ChainVerifier::resume(tenant, anchor, &checkpoints)?,
    }
    .with_rejected_checkpoints(vetted.rejected);

    let mut corroborated = false;
    let mut after: i64 = 0;
    'pages: loop {
        let rows: Vec<EntryRow> = crate::sql::query_as(SELECT_BATCH)
            .bind(tenant.as_uuid())
            .bind(after)
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await
            .map_err(AuditStoreError::db)?;
        let Some(last) = rows.last() else { break };
        after = last.seq.unwrap_or(i64::MAX);
        let full_page = rows.len() == batch as usize;
        for row in rows {
            let entry = row.into_entry_for_verification();
            if !verifier.push(&entry) {
                break 'pages;
            }
            if let Some(anchor) = &anchor {
                corroborated |= records_purge_before(&entry, anchor.seq + 1);
            }
        }
        if !full_page {
            break;
        }
    }
    let (unsealed, altered_unsealed) = check_unsealed(&mut tx, tenant, batch).await?;
    tx.commit().await.map_err(AuditStoreError::db)?;

    let mut report = verifier.finish();
    report.unsealed = unsealed;
    report.altered_unsealed = altered_unsealed;
    // A checkpoint at the seq before the oldest entry proves nothing on its own: a periodic
    // checkpoint would make a deleted prefix look purged. The purge also appends an entry saying
    // where it cut, inside the verified chain; without it the missing prefix is a gap at seq 1.
    if let Some(anchor) = &anchor
        && report.is_intact()
        && !corroborated
    {
        let found = anchor.seq + 1;
        report.head = None;
        report.first_break = Some(Break { seq: 1, kind: BreakKind::SequenceGap { expected: 1, found } });
    }
    Ok(report)
}

/// Counts the entries not sealed yet and checks each against the digest written when it was
/// recorded; returns the count and the ids of those that no longer match.
async fn check_unsealed(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    batch: u32,
) -> Result<(u64, Vec<u64>), AuditStoreError> {
    let mut count = 0;
    let mut altered = Vec::new();
    let mut after: i64 = 0;
    loop {
        let rows: Vec<EntryRow> = crate::sql::query_as(SELECT_UNSEALED_BATCH)
            .bind(tenant.as_uuid())
            .bind(after)
            .bind(i64::from(batch))
            .fetch_all(&mut *conn)
            .await
            .map_err(AuditStoreError::db)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let full_page = rows.len() == batch as usize;
        for row in rows {
            count += 1;
            match row.into_pending() {
                Ok(entry) if entry.is_unaltered() => {}
                Ok(entry) => altered.push(entry.id),
                Err(id) => altered.push(id),
            }
        }
        if !full_page {
            break;
        }
    }
    Ok((count, altered))
}

fn records_purge_before(entry: &ChainedEntry, first_kept: u64) -> bool {
    entry.event.action == Action::AuditRetentionPurge
        && entry.event.detail.get(PURGED_BEFORE_SEQ_KEY).and_then(serde_json::Value::as_u64) == Some(first_kept)
}
