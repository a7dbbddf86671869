//! The Postgres adapter of the audit trail (`audit_entries`, `audit_heads`, `audit_checkpoints`;
//! migration `20261122000002_audit.sql`).
//!
//! # Appending
//!
//! [`append`] runs inside the caller's transaction, so an entry commits or rolls back with the
//! change it records, and a failed audit write fails that change. It
//!
//! 1. locks the tenant's `audit_heads` row with `SELECT ... FOR UPDATE` (the per-tenant lock:
//!    appends of one practice are serialised, different practices never wait for each other);
//!    the first append of a practice creates the row with `INSERT ... ON CONFLICT DO NOTHING`
//!    and then locks it, so two racing first appends queue on the row instead of forking;
//! 2. calls [`::audit::next_entry`] (validation, normalisation, hashing: the pure core);
//! 3. inserts the entry and moves the head in one statement.
//!
//! The primary key `(tenant_id, seq)` is the backstop: even an append that skipped the lock
//! could not store a second entry at the same seq.
//!
//! Appends run as the runtime role under row-level security: the transaction's `app.tenant_id`
//! (set by [`crate::begin`]) must be the event's tenant, or [`append`] refuses with
//! [`AuditStoreError::TenantContext`] before touching a row.
//!
//! # Verifying
//!
//! [`PgAuditLog::verify`] loads the tenant's checkpoints (vetting their signatures when the log
//! has a [`CheckpointSigner`]), then streams `audit_entries` in seq order, [`VERIFY_BATCH`] rows at a
//! time, through the pure [`ChainVerifier`]. It never reads `audit_heads`, which the runtime role
//! may write. See [`retention`] for chains whose oldest entries were purged.

/// The entry columns in [`row::EntryRow`]'s order, as a literal for `concat!`.
macro_rules! entry_columns {
    () => {
        "tenant_id, seq, prev_hash, hash, actor_kind, actor_tenant, actor_user, actor_role, actor_name, action, \
         resource_type, resource_id, outcome, request_id, occurred_at, detail"
    };
}

mod retention;
mod row;
mod verify;

pub use retention::{PurgeReport, purge_before, write_checkpoint};
pub use verify::VERIFY_BATCH;

use crate::{DbContext, StoreError, begin};
use ::audit::{
    AuditError, AuditEvent, AuditFilter, AuditLog, AuditPage, ChainHead, ChainedEntry, CheckpointSigner, Page,
    VerificationReport, next_entry,
};
use async_trait::async_trait;
use kernel::TenantId;
use row::{ActorColumns, EntryRow};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;

/// Errors of the audit adapter. Like [`StoreError`], messages never carry query parameters.
#[derive(Debug, thiserror::Error)]
pub enum AuditStoreError {
    /// The event (or a filter, page or checkpoint) was refused by the audit domain.
    #[error(transparent)]
    Audit(#[from] AuditError),

    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The transaction's `app.tenant_id` is not the event's tenant. Row-level security would
    /// hide the tenant's head and refuse the insert anyway; this says why, up front.
    #[error("the transaction's tenant context ({found:?}) is not the audit event's tenant ({expected})")]
    TenantContext { expected: TenantId, found: Option<uuid::Uuid> },

    /// The event's tenant has no row in `tenants`.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),

    /// A stored row does not decode into an entry (a column edited outside the adapter).
    #[error("audit entry {seq} of tenant {tenant} cannot be decoded: {reason}")]
    CorruptRow { tenant: TenantId, seq: i64, reason: &'static str },

    /// A retention purge was asked for something it cannot do.
    #[error("retention purge refused: {0}")]
    InvalidPurge(&'static str),
}

impl AuditStoreError {
    fn db(error: sqlx::Error) -> Self {
        AuditStoreError::Store(StoreError::classify(error))
    }
}

/// The port speaks [`AuditError`]: domain errors pass through, everything else becomes
/// `Storage` with this error as its `source()`.
impl From<AuditStoreError> for AuditError {
    fn from(error: AuditStoreError) -> Self {
        match error {
            AuditStoreError::Audit(inner) => inner,
            other => AuditError::Storage(Box::new(other)),
        }
    }
}

/// Appends `event` to its tenant's chain inside the caller's transaction (pass `&mut *tx`).
///
/// The transaction must have been opened by [`crate::begin`] for the event's tenant. The tenant's
/// head stays locked until the transaction ends, so keep the transaction short after this call:
/// every other append of the practice waits for it.
///
/// Under `REPEATABLE READ` or `SERIALIZABLE`, a concurrent append makes this fail with a
/// serialisation error (retry the transaction) rather than fork the chain.
pub async fn append(conn: &mut PgConnection, event: AuditEvent) -> Result<ChainedEntry, AuditStoreError> {
    // Refuse an invalid event before taking the practice-wide lock.
    event.validate()?;
    let tenant = event.tenant;
    let head = lock_head(conn, tenant).await?;
    let entry = next_entry(&head, event)?;
    insert_entries(conn, tenant, std::slice::from_ref(&entry)).await?;
    telemetry::metrics::record_audit_appends(1);
    Ok(entry)
}

/// Appends `events`, in order, to their tenant's chain inside the caller's transaction: one
/// head lock and one insert for all of them, however many there are. For work that commits
/// many changes at once (a batch of webhook deliveries): the lock is taken once per batch, not
/// once per entry. Every event must belong to the transaction's tenant; an invalid one refuses
/// the whole call before the lock is taken. As [`append`] otherwise.
pub async fn append_all(
    conn: &mut PgConnection,
    events: Vec<AuditEvent>,
) -> Result<Vec<ChainedEntry>, AuditStoreError> {
    let Some(first) = events.first() else { return Ok(Vec::new()) };
    let tenant = first.tenant;
    // Refuse invalid events (and a mix of tenants) before taking the practice-wide lock.
    for event in &events {
        event.validate()?;
        if event.tenant != tenant {
            return Err(AuditStoreError::TenantContext { expected: tenant, found: Some(*event.tenant.as_uuid()) });
        }
    }
    let mut head = lock_head(conn, tenant).await?;
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        let entry = next_entry(&head, event)?;
        head = ChainHead { seq: entry.seq, hash: entry.hash };
        entries.push(entry);
    }
    insert_entries(conn, tenant, &entries).await?;
    telemetry::metrics::record_audit_appends(u64::try_from(entries.len()).unwrap_or(u64::MAX));
    Ok(entries)
}

/// Locks the tenant's head row and returns the head, creating the row on the first append.
pub(crate) async fn lock_head(conn: &mut PgConnection, tenant: TenantId) -> Result<ChainHead, AuditStoreError> {
    if let Some(head) = select_head_for_update(conn, tenant).await? {
        return Ok(head);
    }
    // No row: either the first append of this practice, or the context hides the row.
    let context: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT current_tenant_id()").fetch_one(&mut *conn).await.map_err(AuditStoreError::db)?;
    if context != Some(*tenant.as_uuid()) {
        return Err(AuditStoreError::TenantContext { expected: tenant, found: context });
    }
    // Two first appends racing: the second INSERT waits for the first transaction, then does
    // nothing, and its SELECT ... FOR UPDATE below queues on the row the first one created.
    sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant_id) DO NOTHING")
        .bind(tenant.as_uuid())
        .bind(ChainHead::GENESIS.hash.as_slice())
        .execute(&mut *conn)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                AuditStoreError::UnknownTenant(tenant)
            }
            _ => AuditStoreError::db(error),
        })?;
    select_head_for_update(conn, tenant)
        .await?
        .ok_or(AuditStoreError::TenantContext { expected: tenant, found: context })
}

async fn select_head_for_update(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<ChainHead>, AuditStoreError> {
    let row: Option<(i64, Vec<u8>, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT seq, hash, current_tenant_id() FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(AuditStoreError::db)?;
    let Some((seq, hash, context)) = row else { return Ok(None) };
    // RLS already guarantees this for the runtime role and the owner; a role that bypasses RLS
    // (a superuser) gets the same rule.
    if context != Some(*tenant.as_uuid()) {
        return Err(AuditStoreError::TenantContext { expected: tenant, found: context });
    }
    let corrupt = |reason| AuditStoreError::CorruptRow { tenant, seq, reason };
    Ok(Some(ChainHead {
        seq: u64::try_from(seq).map_err(|_| corrupt("negative head seq"))?,
        hash: hash.try_into().map_err(|_| corrupt("head hash is not 32 bytes"))?,
    }))
}

/// Inserts consecutive entries of one tenant and moves the head to the last, in one round trip
/// (the columns go as arrays, `UNNEST` makes them rows).
async fn insert_entries(
    conn: &mut PgConnection,
    tenant: TenantId,
    entries: &[ChainedEntry],
) -> Result<(), AuditStoreError> {
    let Some(last) = entries.last() else { return Ok(()) };
    let last_seq = i64::try_from(last.seq).map_err(|_| AuditError::SequenceOverflow)?;
    let mut columns = EntryColumns::default();
    for entry in entries {
        columns.push(entry)?;
    }
    let moved = sqlx::query(
        "WITH entry AS ( \
             INSERT INTO audit_entries (tenant_id, seq, prev_hash, hash, actor_kind, actor_tenant, actor_user, \
                 actor_role, actor_name, action, resource_type, resource_id, outcome, request_id, occurred_at, detail) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bytea[], $4::bytea[], $5::text[], $6::uuid[], $7::uuid[], \
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
                 $15::timestamptz[], $16::jsonb[]) \
             RETURNING seq, hash) \
         UPDATE audit_heads h SET seq = entry.seq, hash = entry.hash FROM entry \
         WHERE h.tenant_id = $1 AND entry.seq = $17",
    )
    .bind(tenant.as_uuid())
    .bind(&columns.seq)
    .bind(&columns.prev_hash)
    .bind(&columns.hash)
    .bind(&columns.actor_kind)
    .bind(&columns.actor_tenant)
    .bind(&columns.actor_user)
    .bind(&columns.actor_role)
    .bind(&columns.actor_name)
    .bind(&columns.action)
    .bind(&columns.resource_type)
    .bind(&columns.resource_id)
    .bind(&columns.outcome)
    .bind(&columns.request_id)
    .bind(&columns.occurred_at)
    .bind(&columns.detail)
    .bind(last_seq)
    .execute(&mut *conn)
    .await
    .map_err(AuditStoreError::db)?;
    if moved.rows_affected() != 1 {
        // The head row vanished under our lock: only possible if someone bypassed the schema.
        return Err(AuditStoreError::CorruptRow {
            tenant,
            seq: last_seq,
            reason: "chain head row missing during append",
        });
    }
    Ok(())
}

/// Entries spread over one array per column, for [`insert_entries`].
#[derive(Default)]
struct EntryColumns<'a> {
    seq: Vec<i64>,
    prev_hash: Vec<&'a [u8]>,
    hash: Vec<&'a [u8]>,
    actor_kind: Vec<&'static str>,
    actor_tenant: Vec<Option<uuid::Uuid>>,
    actor_user: Vec<Option<uuid::Uuid>>,
    actor_role: Vec<Option<&'static str>>,
    actor_name: Vec<Option<&'a str>>,
    action: Vec<&'static str>,
    resource_type: Vec<&'a str>,
    resource_id: Vec<Option<&'a str>>,
    outcome: Vec<&'static str>,
    request_id: Vec<Option<&'a str>>,
    occurred_at: Vec<time::OffsetDateTime>,
    detail: Vec<&'a serde_json::Value>,
}

impl<'a> EntryColumns<'a> {
    fn push(&mut self, entry: &'a ChainedEntry) -> Result<(), AuditStoreError> {
        let event = &entry.event;
        let actor = ActorColumns::of(&event.actor);
        self.seq.push(i64::try_from(entry.seq).map_err(|_| AuditError::SequenceOverflow)?);
        self.prev_hash.push(entry.prev_hash.as_slice());
        self.hash.push(entry.hash.as_slice());
        self.actor_kind.push(actor.kind);
        self.actor_tenant.push(actor.tenant);
        self.actor_user.push(actor.user);
        self.actor_role.push(actor.role);
        self.actor_name.push(actor.name);
        self.action.push(event.action.as_str());
        self.resource_type.push(&event.resource_type);
        self.resource_id.push(event.resource_id.as_deref());
        self.outcome.push(event.outcome.as_str());
        self.request_id.push(event.request_id.as_ref().map(|id| id.as_str()));
        self.occurred_at.push(event.occurred_at);
        self.detail.push(&event.detail);
        Ok(())
    }
}

/// The [`AuditLog`] port over Postgres.
///
/// Use the runtime role's pool. Entries are appended with [`append`] inside the transaction of
/// the change they record; this type reads and verifies.
#[derive(Debug, Clone)]
pub struct PgAuditLog {
    pool: PgPool,
    signer: Option<Arc<dyn CheckpointSigner>>,
}

impl PgAuditLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, signer: None }
    }

    /// Verification relies only on checkpoints that carry a signature `signer` accepts, because
    /// anyone who can write the table could have forged the others; a checkpoint with a rejected
    /// signature, or unsigned although signing had begun, is reported as a break
    /// ([`::audit::vet_checkpoints`]); older unsigned ones are ignored (and logged).
    pub fn with_signer(mut self, signer: Arc<dyn CheckpointSigner>) -> Self {
        self.signer = Some(signer);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The checkpoint signer, when one is configured.
    pub fn signer(&self) -> Option<&dyn CheckpointSigner> {
        self.signer.as_deref()
    }

    /// Entries matching `filter`, newest first, one bounded page at a time.
    pub async fn query_entries(
        &self,
        tenant: TenantId,
        filter: &AuditFilter,
        page: Page,
    ) -> Result<AuditPage, AuditStoreError> {
        filter.validate()?;
        let actor = filter.actor.as_ref().map(ActorColumns::of);
        let cursor = page.cursor().map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        let mut tx = begin(&self.pool, &DbContext::tenant(tenant)).await?;
        // One static statement with optional parameters: no SQL is built from input. The
        // (tenant_id, seq) key drives the scan backwards; the filters are checked on the way.
        let rows: Vec<EntryRow> = sqlx::query_as(QUERY_ENTRIES)
            .bind(tenant.as_uuid())
            .bind(cursor)
            .bind(actor.as_ref().map(|a| a.kind))
            .bind(actor.as_ref().and_then(|a| a.tenant))
            .bind(actor.as_ref().and_then(|a| a.user))
            .bind(actor.as_ref().and_then(|a| a.role))
            .bind(actor.as_ref().and_then(|a| a.name))
            .bind(filter.action.map(|a| a.as_str()))
            .bind(filter.outcome.map(|o| o.as_str()))
            .bind(filter.resource_type.as_deref())
            .bind(filter.resource_id.as_deref())
            .bind(filter.from)
            .bind(filter.to)
            .bind(i64::from(page.limit()) + 1)
            .fetch_all(&mut *tx)
            .await
            .map_err(AuditStoreError::db)?;
        tx.commit().await.map_err(AuditStoreError::db)?;
        let entries = rows.into_iter().map(EntryRow::into_entry).collect::<Result<Vec<_>, _>>()?;
        Ok(AuditPage::from_overfetch(entries, page))
    }

    /// Verifies `tenant`'s chain against its (trusted) checkpoints.
    pub async fn verify_chain(&self, tenant: TenantId) -> Result<VerificationReport, AuditStoreError> {
        self.verify_chain_batched(tenant, VERIFY_BATCH).await
    }

    /// [`PgAuditLog::verify_chain`] reading `batch` rows per round trip (at least 1).
    pub async fn verify_chain_batched(
        &self,
        tenant: TenantId,
        batch: u32,
    ) -> Result<VerificationReport, AuditStoreError> {
        verify::verify_tenant(&self.pool, tenant, self.signer.as_deref(), batch.max(1)).await
    }
}

/// The page query. `$3 IS NULL` switches the actor match off; otherwise every actor column must
/// match, NULLs included, so `System { component: "x" }` never matches another kind named "x".
const QUERY_ENTRIES: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM audit_entries \
      WHERE tenant_id = $1 \
        AND ($2::bigint IS NULL OR seq < $2) \
        AND ($3::text IS NULL OR (actor_kind = $3 \
             AND actor_tenant IS NOT DISTINCT FROM $4::uuid AND actor_user IS NOT DISTINCT FROM $5::uuid \
             AND actor_role IS NOT DISTINCT FROM $6::text AND actor_name IS NOT DISTINCT FROM $7::text)) \
        AND ($8::text IS NULL OR action = $8) \
        AND ($9::text IS NULL OR outcome = $9) \
        AND ($10::text IS NULL OR resource_type = $10) \
        AND ($11::text IS NULL OR resource_id = $11) \
        AND ($12::timestamptz IS NULL OR occurred_at >= $12) \
        AND ($13::timestamptz IS NULL OR occurred_at < $13) \
      ORDER BY seq DESC \
      LIMIT $14"
);

#[async_trait]
impl AuditLog for PgAuditLog {
    async fn query(&self, tenant: TenantId, filter: &AuditFilter, page: Page) -> Result<AuditPage, AuditError> {
        Ok(self.query_entries(tenant, filter, page).await?)
    }

    async fn verify(&self, tenant: TenantId) -> Result<VerificationReport, AuditError> {
        Ok(self.verify_chain(tenant).await?)
    }
}
