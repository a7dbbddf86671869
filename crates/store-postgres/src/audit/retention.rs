//! Checkpoints and the retention purge.
//!
//! # Retention design
//!
//! Audit entries are kept for a retention period and then removed, oldest first, without
//! making the rest of the chain unverifiable. [`purge_before`] is the only way to delete entries:
//!
//! * it runs as the **owner** role (the runtime role has no DELETE privilege at all), inside one
//!   transaction that holds the tenant's head lock and first seals every recorded entry, so no
//!   sealing interleaves;
//! * it first writes checkpoints (signed when a signer is given): one of the last entry it
//!   deletes (the *anchor* the oldest kept entry links to) and one of the current head (so a purge
//!   that deleted more than asked, or a later truncation, is caught);
//! * it deletes with `praxis.retention_purge = 'on'` set for the transaction only: the trigger
//!   lets a DELETE through only with that setting *and* the table owner's privileges, and never
//!   lets an UPDATE or TRUNCATE through;
//! * it appends an `audit.retention_purge` entry whose detail names where it cut
//!   (`purged_before_seq`), so the purge itself is on the record and chained.
//!
//! Verification of a purged chain starts from the anchor checkpoint, and accepts the missing
//! prefix only when the kept chain contains that `audit.retention_purge` entry: a periodic
//! checkpoint that happens to sit just before a deleted prefix does not pass for a purge.

use super::seal::seal_all_locked;
use super::{AuditStoreError, append, lock_head};
use crate::{DbContext, begin};
use ::audit::{Action, AuditEvent, ChainHead, ChainedEntry, Checkpoint, CheckpointSigner};
use kernel::{Actor, Clock, TenantId};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

/// Detail key of the `audit.retention_purge` entry: the oldest seq the purge kept.
pub(crate) const PURGED_BEFORE_SEQ_KEY: &str = "purged_before_seq";

/// Records the tenant's newest stored entry as a checkpoint, signed when `signer` is given.
/// Returns `None` for an empty chain (nothing to pin).
///
/// Pins what is stored without verifying it first; run [`super::PgAuditLog::verify_chain`]
/// before if the checkpoint should also vouch for the chain up to it. The signer (a KMS call)
/// runs outside any transaction, so appends never wait for it.
pub async fn write_checkpoint(
    pool: &PgPool,
    tenant: TenantId,
    signer: Option<&dyn CheckpointSigner>,
    clock: &dyn Clock,
) -> Result<Option<Checkpoint>, AuditStoreError> {
    let context = DbContext::tenant(tenant);
    let mut tx = begin(pool, &context).await?;
    // From the entries, not audit_heads: the head row is writable by the runtime role.
    let newest: Option<(i64, Vec<u8>)> = crate::sql::query_as(
        "SELECT seq, hash FROM audit_entries WHERE tenant_id = $1 AND seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await
    .map_err(AuditStoreError::db)?;
    tx.commit().await.map_err(AuditStoreError::db)?;
    let Some((seq, hash)) = newest else { return Ok(None) };
    let head = head_of(tenant, seq, &hash)?;
    let checkpoint = make_checkpoint(tenant, head, signer, clock).await?;
    let mut tx = begin(pool, &context).await?;
    insert_checkpoint(&mut tx, &checkpoint).await?;
    tx.commit().await.map_err(AuditStoreError::db)?;
    Ok(Some(checkpoint))
}

/// What a purge did.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeReport {
    /// Checkpoint of the last purged entry (`before_seq - 1`): the kept chain links to it.
    pub anchor: Checkpoint,
    /// Checkpoint of the head at the time of the purge.
    pub head: Checkpoint,
    /// Entries deleted.
    pub purged: u64,
    /// The `audit.retention_purge` entry recording the purge.
    pub entry: ChainedEntry,
}

/// Deletes `tenant`'s entries with `seq < before_seq`, behind checkpoints, and records it.
///
/// `owner_pool` must connect as the tables' owner (the migration role): the runtime role cannot
/// delete audit entries, by design. `before_seq` must be at least 2 and at most the head's seq + 1,
/// and the entry at `before_seq - 1` must still exist (not purged already).
///
/// The signer runs while the tenant's head is locked (the checkpoints must pin exactly the
/// state that is then cut), so sealing of that practice waits for it (recording does not);
/// purges are rare.
pub async fn purge_before(
    owner_pool: &PgPool,
    tenant: TenantId,
    before_seq: u64,
    signer: Option<&dyn CheckpointSigner>,
    clock: &dyn Clock,
) -> Result<PurgeReport, AuditStoreError> {
    if before_seq < 2 {
        return Err(AuditStoreError::InvalidPurge("before_seq must be at least 2"));
    }
    let anchor_seq =
        i64::try_from(before_seq - 1).map_err(|_| AuditStoreError::InvalidPurge("before_seq too large"))?;
    if let Some(signer) = signer {
        // Before the head lock: setting up a signing key may append to this very chain.
        signer.prepare(tenant).await?;
    }
    let mut tx = begin(owner_pool, &DbContext::tenant(tenant)).await?;
    let head = lock_head(&mut tx, tenant).await?;
    // The checkpoints pin the chain as it is now, every recorded entry included.
    let (head, _) = seal_all_locked(&mut tx, tenant, head).await?;
    if before_seq - 1 > head.seq {
        return Err(AuditStoreError::InvalidPurge("before_seq is past the head of the chain"));
    }
    let anchor_hash: Option<Vec<u8>> =
        crate::sql::query_scalar("SELECT hash FROM audit_entries WHERE tenant_id = $1 AND seq = $2")
            .bind(tenant.as_uuid())
            .bind(anchor_seq)
            .fetch_optional(&mut *tx)
            .await
            .map_err(AuditStoreError::db)?;
    let Some(anchor_hash) = anchor_hash else {
        return Err(AuditStoreError::InvalidPurge("the entry before before_seq is already purged"));
    };
    let anchor = make_checkpoint(tenant, head_of(tenant, anchor_seq, &anchor_hash)?, signer, clock).await?;
    insert_checkpoint(&mut tx, &anchor).await?;
    let head_checkpoint = if head.seq == anchor.seq {
        anchor.clone()
    } else {
        let checkpoint = make_checkpoint(tenant, head, signer, clock).await?;
        insert_checkpoint(&mut tx, &checkpoint).await?;
        checkpoint
    };

    // Transaction-local, like the request context: it ends with this transaction.
    crate::sql::query("SELECT set_config('praxis.retention_purge', 'on', true)")
        .execute(&mut *tx)
        .await
        .map_err(AuditStoreError::db)?;
    let deleted = crate::sql::query("DELETE FROM audit_entries WHERE tenant_id = $1 AND seq <= $2")
        .bind(tenant.as_uuid())
        .bind(anchor_seq)
        .execute(&mut *tx)
        .await
        .map_err(AuditStoreError::db)?
        .rows_affected();
    crate::sql::query("SELECT set_config('praxis.retention_purge', 'off', true)")
        .execute(&mut *tx)
        .await
        .map_err(AuditStoreError::db)?;

    let event = AuditEvent::new(
        tenant,
        Actor::System { component: "audit-retention".to_owned() },
        Action::AuditRetentionPurge,
        "audit_log",
        clock,
    )
    .with_detail(json!({
        PURGED_BEFORE_SEQ_KEY: before_seq,
        "entries_deleted": deleted,
        "anchor_checkpoint_seq": anchor.seq,
    }));
    // Sealed at once, behind the lock still held: verification of the purged chain needs it.
    let id = append(&mut tx, event).await?;
    let (_, sealed) = seal_all_locked(&mut tx, tenant, head).await?;
    let entry = sealed.into_iter().find(|(sealed_id, _)| *sealed_id == id).map(|(_, entry)| entry).ok_or(
        AuditStoreError::CorruptRow { tenant, seq: 0, reason: "the retention purge's own entry was not sealed" },
    )?;
    tx.commit().await.map_err(AuditStoreError::db)?;
    Ok(PurgeReport { anchor, head: head_checkpoint, purged: deleted, entry })
}

/// `seq, head_hash, created_at, signature` of an `audit_checkpoints` row.
type CheckpointRow = (i64, Vec<u8>, time::OffsetDateTime, Option<Vec<u8>>);

/// Every checkpoint of `tenant`, in any order.
pub(crate) async fn load_checkpoints(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Vec<Checkpoint>, AuditStoreError> {
    let rows: Vec<CheckpointRow> = crate::sql::query_as(
        "SELECT seq, head_hash, created_at, signature FROM audit_checkpoints WHERE tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(AuditStoreError::db)?;
    rows.into_iter()
        .map(|(seq, hash, created_at, signature)| {
            let head = head_of(tenant, seq, &hash)?;
            Ok(Checkpoint { tenant, seq: head.seq, head_hash: head.hash, created_at, signature })
        })
        .collect()
}

async fn make_checkpoint(
    tenant: TenantId,
    head: ChainHead,
    signer: Option<&dyn CheckpointSigner>,
    clock: &dyn Clock,
) -> Result<Checkpoint, AuditStoreError> {
    let checkpoint = Checkpoint::new(tenant, head, clock)?;
    Ok(match signer {
        Some(signer) => checkpoint.sign(signer).await?,
        None => checkpoint,
    })
}

async fn insert_checkpoint(conn: &mut PgConnection, checkpoint: &Checkpoint) -> Result<(), AuditStoreError> {
    let seq = i64::try_from(checkpoint.seq).map_err(|_| ::audit::AuditError::InvalidCheckpoint)?;
    // The same seq pinned twice at the same microsecond is the same fact: keep the first.
    crate::sql::query(
        "INSERT INTO audit_checkpoints (tenant_id, seq, head_hash, created_at, signature) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(checkpoint.tenant.as_uuid())
    .bind(seq)
    .bind(checkpoint.head_hash.as_slice())
    .bind(checkpoint.created_at)
    .bind(checkpoint.signature.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(AuditStoreError::db)?;
    Ok(())
}

fn head_of(tenant: TenantId, seq: i64, hash: &[u8]) -> Result<ChainHead, AuditStoreError> {
    let corrupt = |reason| AuditStoreError::CorruptRow { tenant, seq, reason };
    Ok(ChainHead {
        seq: u64::try_from(seq).map_err(|_| corrupt("negative seq"))?,
        hash: super::row::digest(hash).ok_or_else(|| corrupt("hash is not 32 bytes"))?,
    })
}
