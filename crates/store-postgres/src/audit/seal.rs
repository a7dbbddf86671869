//! Sealing: linking recorded entries into their practice's chain (see the module docs of
//! [`super`]).

use super::row::EntryRow;
use super::{AuditStoreError, lock_head, select_head_for_update_skip_locked};
use crate::{DbContext, begin};
use ::audit::{AuditError, ChainHead, ChainedEntry, SealPlan, seal};
use kernel::TenantId;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

/// Entries sealed per transaction: one batch holds the practice's head lock for a few
/// milliseconds, and a backlog is worked off in several.
pub const SEAL_BATCH: u32 = 500;

/// What sealing one practice did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SealReport {
    /// Entries linked into the chain.
    pub sealed: u64,
    /// When each sealed entry happened (its `occurred_at`, taken before its transaction
    /// committed): with the time of sealing, an upper bound of how long it waited.
    pub sealed_occurred_at: Vec<OffsetDateTime>,
    /// Unsealed entries refused because their content no longer matches their digest
    /// (verification reports them; they stay unsealed).
    pub refused: Vec<u64>,
    /// Another sealer held the practice's head: nothing was done here, that sealer does it.
    pub busy: bool,
}

/// Practices with unsealed entries, the longest-waiting first, at most `max_practices`.
/// Runs as the runtime role in the workers' scan context ([`DbContext::practice_scan`]), through
/// the owner's `audit_practices_to_seal()`, which reveals practice ids and nothing else.
pub async fn practices_to_seal(pool: &PgPool, max_practices: u32) -> Result<Vec<TenantId>, AuditStoreError> {
    let limit = i32::try_from(max_practices.clamp(1, crate::MAX_PRACTICES_PER_SCAN)).unwrap_or(1);
    // In a transaction, like every statement of this crate (a transaction pooler may hand an
    // unnamed statement's parse and execute to different server connections otherwise).
    let mut tx = begin(pool, &DbContext::practice_scan()).await?;
    let ids: Vec<uuid::Uuid> = crate::sql::query_scalar("SELECT audit_practices_to_seal($1)")
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(AuditStoreError::db)?;
    tx.commit().await.map_err(AuditStoreError::db)?;
    Ok(ids.into_iter().map(TenantId::from_uuid).collect())
}

/// Seals every committed, unsealed entry of `tenant`, [`SEAL_BATCH`] per transaction, unless
/// another sealer is at it (then returns at once with `busy`).
pub async fn seal_pending(pool: &PgPool, tenant: TenantId) -> Result<SealReport, AuditStoreError> {
    let mut report = SealReport::default();
    loop {
        let mut tx = begin(pool, &DbContext::tenant(tenant)).await?;
        let Some(head) = try_lock_head(&mut tx, tenant).await? else {
            report.busy = true;
            return Ok(report);
        };
        let (plan, more) = seal_batch(&mut tx, tenant, head, SEAL_BATCH).await?;
        tx.commit().await.map_err(AuditStoreError::db)?;
        report.sealed += plan.sealed.len() as u64;
        report.sealed_occurred_at.extend(plan.sealed.iter().map(|(_, entry)| entry.event.occurred_at));
        report.refused.extend(plan.refused);
        if !more {
            return Ok(report);
        }
    }
}

/// Seals everything pending of `tenant` inside the caller's transaction, which must hold the
/// tenant's head lock ([`lock_head`]) and gave `head`; returns every sealed entry with its id.
/// For work that needs the chain complete before it goes on (a retention purge).
pub(crate) async fn seal_all_locked(
    conn: &mut PgConnection,
    tenant: TenantId,
    mut head: ChainHead,
) -> Result<(ChainHead, Vec<(u64, ChainedEntry)>), AuditStoreError> {
    let mut sealed = Vec::new();
    loop {
        let (plan, more) = seal_batch(conn, tenant, head, SEAL_BATCH).await?;
        head = plan.head;
        sealed.extend(plan.sealed);
        if !more {
            return Ok((head, sealed));
        }
    }
}

/// The head, locked, or `None` when another transaction holds it. Creates the head row of a
/// practice's first sealing.
async fn try_lock_head(conn: &mut PgConnection, tenant: TenantId) -> Result<Option<ChainHead>, AuditStoreError> {
    if let Some(head) = select_head_for_update_skip_locked(conn, tenant).await? {
        return Ok(Some(head));
    }
    let exists: bool = crate::sql::query_scalar("SELECT EXISTS (SELECT 1 FROM audit_heads WHERE tenant_id = $1)")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(AuditStoreError::db)?;
    if exists {
        return Ok(None);
    }
    lock_head(conn, tenant).await.map(Some)
}

/// One batch: reads up to `limit` unsealed entries in recording order, links them after `head`
/// and stores the links and the new head. Returns the plan and whether more may be pending.
async fn seal_batch(
    conn: &mut PgConnection,
    tenant: TenantId,
    head: ChainHead,
    limit: u32,
) -> Result<(SealPlan, bool), AuditStoreError> {
    let rows: Vec<EntryRow> = crate::sql::query_as(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM audit_entries WHERE tenant_id = $1 AND seq IS NULL ORDER BY id LIMIT $2"
    ))
    .bind(tenant.as_uuid())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(AuditStoreError::db)?;
    let more = rows.len() == limit as usize;
    let mut pending = Vec::with_capacity(rows.len());
    let mut undecodable = Vec::new();
    for row in rows {
        match row.into_pending() {
            Ok(entry) => pending.push(entry),
            Err(id) => undecodable.push(id),
        }
    }
    let mut plan = seal(head, pending)?;
    plan.refused.extend(undecodable);
    plan.refused.sort_unstable();
    for id in &plan.refused {
        tracing::error!(
            tenant = %tenant,
            entry_id = id,
            "audit entry not sealed: its content no longer matches the digest recorded with it (edited after it was written); audit verification reports it"
        );
    }
    store_links(conn, tenant, &plan).await?;
    // Refused entries stay pending: a batch of nothing but refused ones must not loop forever.
    Ok((plan.clone(), more && !plan.sealed.is_empty()))
}

/// Sets the seq and hashes of every entry of `plan` and moves the head, in two statements.
async fn store_links(conn: &mut PgConnection, tenant: TenantId, plan: &SealPlan) -> Result<(), AuditStoreError> {
    if plan.sealed.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(plan.sealed.len());
    let mut seqs = Vec::with_capacity(plan.sealed.len());
    let mut prev_hashes = Vec::with_capacity(plan.sealed.len());
    let mut hashes = Vec::with_capacity(plan.sealed.len());
    for (id, entry) in &plan.sealed {
        ids.push(i64::try_from(*id).map_err(|_| AuditError::SequenceOverflow)?);
        seqs.push(i64::try_from(entry.seq).map_err(|_| AuditError::SequenceOverflow)?);
        prev_hashes.push(entry.prev_hash.as_slice());
        hashes.push(entry.hash.as_slice());
    }
    let updated = crate::sql::query(
        "UPDATE audit_entries e SET seq = link.seq, prev_hash = link.prev_hash, hash = link.hash \
         FROM UNNEST($2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[]) AS link(id, seq, prev_hash, hash) \
         WHERE e.tenant_id = $1 AND e.id = link.id AND e.seq IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(&ids)
    .bind(&seqs)
    .bind(&prev_hashes)
    .bind(&hashes)
    .execute(&mut *conn)
    .await
    .map_err(AuditStoreError::db)?
    .rows_affected();
    let head_seq = i64::try_from(plan.head.seq).map_err(|_| AuditError::SequenceOverflow)?;
    let moved = crate::sql::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .bind(head_seq)
        .bind(plan.head.hash.as_slice())
        .execute(&mut *conn)
        .await
        .map_err(AuditStoreError::db)?
        .rows_affected();
    if updated != ids.len() as u64 || moved != 1 {
        // Under the head lock nobody else seals this practice: only a bypassed schema gets here.
        return Err(AuditStoreError::CorruptRow {
            tenant,
            seq: head_seq,
            reason: "entries or the chain head changed under the sealer's lock",
        });
    }
    Ok(())
}
