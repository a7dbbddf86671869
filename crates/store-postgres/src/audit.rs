//! The Postgres adapter of the audit trail (`audit_entries`, `audit_heads`, `audit_checkpoints`;
//! migrations `20261122000002_audit.sql` and `20261204000013_audit_sealing.sql`).
//!
//! # Recording
//!
//! [`append`] runs inside the caller's transaction, so an entry commits or rolls back with the
//! change it records, and a failed audit write fails that change. It validates the event, computes
//! its content digest ([`::audit::to_record`], the pure core) and inserts it **unsealed** (no seq,
//! no hashes): one INSERT, no lock, so the audited requests of one practice never wait for each
//! other. Row-level security (the transaction's `app.tenant_id`, set by [`crate::begin`]) must
//! admit the event's tenant, or [`append`] refuses with [`AuditStoreError::TenantContext`].
//!
//! # Sealing
//!
//! [`seal_pending`] links a practice's committed, unsealed entries into its hash chain, in the
//! order they were recorded (`id`), a batch at a time: it takes the practice's `audit_heads` row
//! with `FOR UPDATE SKIP LOCKED` (only sealers take it; a second sealer skips a practice that is
//! being sealed rather than wait), computes the links with [`::audit::seal`], sets each entry's
//! seq and hashes (the only UPDATE the schema allows, once per entry) and moves the head, in one
//! transaction. Killed at any point, it either committed a batch or left it unsealed for the
//! next sealer. `praxis serve` runs it continuously ([`practices_to_seal`] says where to look);
//! the unique `(tenant_id, seq)` is the backstop should two sealers ever race past the lock.
//!
//! Entries are therefore chained in the order their transactions committed, give or take one
//! sealing batch, and listed in the order they were recorded (`id`), which sealing never changes.
//!
//! # Verifying
//!
//! [`PgAuditLog::verify`] loads the tenant's checkpoints (vetting their signatures when the log
//! has a [`CheckpointSigner`]), then streams the sealed entries in seq order, [`VERIFY_BATCH`]
//! rows at a time, through the pure [`ChainVerifier`], and finally checks every unsealed entry
//! against its digest. It never reads `audit_heads`, which the runtime role may write. See
//! [`retention`] for chains whose oldest entries were purged.

/// The entry columns in [`row::EntryRow`]'s order, as a literal for `concat!`.
macro_rules! entry_columns {
    () => {
        "tenant_id, id, seq, prev_hash, hash, digest, actor_kind, actor_tenant, actor_user, actor_role, actor_name, action, \
         resource_type, resource_id, outcome, request_id, occurred_at, detail"
    };
}

mod retention;
mod row;
mod seal;
mod verify;

pub use retention::{PurgeReport, purge_before, write_checkpoint};
pub use seal::{SEAL_BATCH, SealReport, practices_to_seal, seal_pending};
pub use verify::VERIFY_BATCH;

use crate::{DbContext, StoreError, begin};
use ::audit::{
    AuditError, AuditEvent, AuditFilter, AuditLog, AuditPage, ChainHead, CheckpointSigner, EntryToRecord, Page,
    VerificationReport, to_record,
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

    /// The transaction's `app.tenant_id` is not the event's tenant: row-level security refused
    /// the entry (or, for a sealer, hid the tenant's head).
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

/// Records `event`, unsealed, inside the caller's transaction (pass `&mut *tx`), and returns its
/// id. Takes no lock: the sealer links it into the chain after the transaction commits.
///
/// The transaction must have been opened by [`crate::begin`] for the event's tenant.
pub async fn append(conn: &mut PgConnection, event: AuditEvent) -> Result<u64, AuditStoreError> {
    let tenant = event.tenant;
    let entry = to_record(event)?;
    let ids = insert_unsealed(conn, tenant, std::slice::from_ref(&entry)).await?;
    ids.first().copied().ok_or(AuditStoreError::CorruptRow { tenant, seq: 0, reason: "insert returned no id" })
}

/// Records `events`, in order, inside the caller's transaction, in one INSERT however many there
/// are (for work that commits many changes at once, such as a batch of webhook deliveries).
/// Every event must belong to the transaction's tenant; an invalid one, or a mix of tenants,
/// refuses the whole call before anything is written. Returns their ids, in order.
pub async fn append_all(conn: &mut PgConnection, events: Vec<AuditEvent>) -> Result<Vec<u64>, AuditStoreError> {
    let Some(first) = events.first() else { return Ok(Vec::new()) };
    let tenant = first.tenant;
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        if event.tenant != tenant {
            return Err(AuditStoreError::TenantContext { expected: tenant, found: Some(*event.tenant.as_uuid()) });
        }
        entries.push(to_record(event)?);
    }
    insert_unsealed(conn, tenant, &entries).await
}

/// Records `events`, unsealed, of any number of practices, each practice's under that practice's
/// own RLS context, and commits them before it returns: one statement and one round trip
/// (`audit_record_unsealed`, migration 20261206000017), for entries that commit with no change
/// (the group commit of reads, `app::access_log`). Returns their ids, in ascending order.
///
/// Takes the pool, not a transaction: the statement is its own (implicit) transaction, which
/// Postgres commits before it answers, so nothing is acknowledged before it is durable. With
/// unnamed statements (`database.prepared_statements = "unnamed"`, a pooler that cannot keep a
/// session) the statement's parse and execution are two exchanges a pooler may send to two
/// server connections, so there it runs inside `BEGIN` ... `COMMIT` instead.
///
/// An invalid event refuses the whole call before anything is written; a database failure
/// writes nothing (the statement is one transaction).
pub async fn record_unsealed(pool: &PgPool, events: Vec<AuditEvent>) -> Result<Vec<u64>, AuditStoreError> {
    let Some(first) = events.first() else { return Ok(Vec::new()) };
    let one_practice = events.iter().all(|event| event.tenant == first.tenant).then_some(first.tenant);
    let mut tenants = Vec::with_capacity(events.len());
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        tenants.push(*event.tenant.as_uuid());
        entries.push(to_record(event)?);
    }
    let mut columns = EntryColumns::default();
    for entry in &entries {
        columns.push(entry);
    }
    let lock_timeout = format!("{}ms", crate::pool::statement_timeout_ms());
    let statement = crate::sql::query_scalar::<i64>(
        "SELECT id FROM audit_record_unsealed($1, $2::uuid[], $3::bytea[], $4::text[], $5::uuid[], $6::uuid[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
             $14::timestamptz[], $15::jsonb[]) AS id",
    )
    .bind(&lock_timeout)
    .bind(&tenants);
    let statement = columns.bind(statement);
    let recorded = if crate::sql::statements_are_unnamed() {
        in_transaction(pool, statement).await
    } else {
        statement.fetch_all(pool).await
    };
    let ids = match recorded {
        Ok(ids) => ids,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23503") => {
            return Err(match one_practice {
                Some(tenant) => AuditStoreError::UnknownTenant(tenant),
                None => AuditStoreError::db(sqlx::Error::Database(db)),
            });
        }
        Err(error) => return Err(AuditStoreError::db(error)),
    };
    Ok(recorded_ids(ids))
}

/// The ids of entries just recorded, ascending, counted in the append metric. (An identity is
/// never negative.)
fn recorded_ids(ids: Vec<i64>) -> Vec<u64> {
    let mut ids: Vec<u64> = ids.into_iter().filter_map(|id| u64::try_from(id).ok()).collect();
    ids.sort_unstable();
    telemetry::metrics::record_audit_appends(u64::try_from(ids.len()).unwrap_or(u64::MAX));
    ids
}

/// `statement` between `BEGIN` and `COMMIT` (see [`record_unsealed`]).
async fn in_transaction(pool: &PgPool, statement: IdQuery<'_>) -> Result<Vec<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids = statement.fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(ids)
}

/// One INSERT of unsealed entries of one tenant (the columns go as arrays, `UNNEST` makes them
/// rows); their ids come back in order.
async fn insert_unsealed(
    conn: &mut PgConnection,
    tenant: TenantId,
    entries: &[EntryToRecord],
) -> Result<Vec<u64>, AuditStoreError> {
    let mut columns = EntryColumns::default();
    for entry in entries {
        columns.push(entry);
    }
    let statement = crate::sql::query_scalar::<i64>(
        "INSERT INTO audit_entries (tenant_id, digest, actor_kind, actor_tenant, actor_user, actor_role, actor_name, \
             action, resource_type, resource_id, outcome, request_id, occurred_at, detail) \
         SELECT $1, digest, actor_kind, actor_tenant, actor_user, actor_role, actor_name, action, resource_type, \
             resource_id, outcome, request_id, occurred_at, detail \
         FROM UNNEST($2::bytea[], $3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[], $14::jsonb[]) \
             WITH ORDINALITY AS entry(digest, actor_kind, actor_tenant, actor_user, actor_role, actor_name, action, \
                 resource_type, resource_id, outcome, request_id, occurred_at, detail, position) \
         ORDER BY position \
         RETURNING id",
    )
    .bind(tenant.as_uuid());
    let inserted = columns.bind(statement).fetch_all(&mut *conn).await;
    let ids = match inserted {
        Ok(ids) => ids,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23503") => {
            return Err(AuditStoreError::UnknownTenant(tenant));
        }
        // Row-level security refused the row: the transaction is for another practice (or none).
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42501") => {
            return Err(AuditStoreError::TenantContext { expected: tenant, found: None });
        }
        Err(error) => return Err(AuditStoreError::db(error)),
    };
    Ok(recorded_ids(ids))
}

/// Locks the tenant's head row and returns the head, waiting for any other holder; creates the
/// row on the practice's first sealing. Taken by sealers, checkpoints and the retention purge;
/// never by a request recording an entry.
pub(crate) async fn lock_head(conn: &mut PgConnection, tenant: TenantId) -> Result<ChainHead, AuditStoreError> {
    if let Some(head) = select_head_for_update(conn, tenant).await? {
        return Ok(head);
    }
    // No row: either the first sealing of this practice, or the context hides the row.
    let context: Option<uuid::Uuid> = crate::sql::query_scalar("SELECT current_tenant_id()")
        .fetch_one(&mut *conn)
        .await
        .map_err(AuditStoreError::db)?;
    if context != Some(*tenant.as_uuid()) {
        return Err(AuditStoreError::TenantContext { expected: tenant, found: context });
    }
    // Two first sealings racing: the second INSERT waits for the first transaction, then does
    // nothing, and its SELECT ... FOR UPDATE below queues on the row the first one created.
    crate::sql::query(
        "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.as_uuid())
    .bind(ChainHead::GENESIS.hash.as_slice())
    .execute(&mut *conn)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => AuditStoreError::UnknownTenant(tenant),
        _ => AuditStoreError::db(error),
    })?;
    select_head_for_update(conn, tenant)
        .await?
        .ok_or(AuditStoreError::TenantContext { expected: tenant, found: context })
}

pub(crate) async fn select_head_for_update(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<ChainHead>, AuditStoreError> {
    let row: Option<HeadRow> =
        crate::sql::query_as("SELECT seq, hash, current_tenant_id() FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(AuditStoreError::db)?;
    row.map(|row| head_of_row(tenant, row)).transpose()
}

/// Like [`select_head_for_update`], but `None` also when another transaction holds the row.
pub(crate) async fn select_head_for_update_skip_locked(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<ChainHead>, AuditStoreError> {
    let row: Option<HeadRow> = crate::sql::query_as(
        "SELECT seq, hash, current_tenant_id() FROM audit_heads WHERE tenant_id = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(AuditStoreError::db)?;
    row.map(|row| head_of_row(tenant, row)).transpose()
}

/// `seq, hash, current_tenant_id()` of an `audit_heads` row.
type HeadRow = (i64, Vec<u8>, Option<uuid::Uuid>);

fn head_of_row(tenant: TenantId, (seq, hash, context): HeadRow) -> Result<ChainHead, AuditStoreError> {
    // RLS already guarantees this for the runtime role and the owner; a role that bypasses RLS
    // (a superuser) gets the same rule.
    if context != Some(*tenant.as_uuid()) {
        return Err(AuditStoreError::TenantContext { expected: tenant, found: context });
    }
    let corrupt = |reason| AuditStoreError::CorruptRow { tenant, seq, reason };
    Ok(ChainHead {
        seq: u64::try_from(seq).map_err(|_| corrupt("negative head seq"))?,
        hash: hash.try_into().map_err(|_| corrupt("head hash is not 32 bytes"))?,
    })
}

/// Entries spread over one array per column, for [`insert_unsealed`].
#[derive(Default)]
struct EntryColumns<'a> {
    digest: Vec<&'a [u8]>,
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

/// A statement that returns entry ids.
type IdQuery<'q> = sqlx::query::QueryScalar<'q, sqlx::Postgres, i64, sqlx::postgres::PgArguments>;

impl<'a> EntryColumns<'a> {
    /// Binds the thirteen column arrays, in the table's order, after what `query` bound already.
    fn bind<'q>(&'q self, query: IdQuery<'q>) -> IdQuery<'q> {
        query
            .bind(&self.digest)
            .bind(&self.actor_kind)
            .bind(&self.actor_tenant)
            .bind(&self.actor_user)
            .bind(&self.actor_role)
            .bind(&self.actor_name)
            .bind(&self.action)
            .bind(&self.resource_type)
            .bind(&self.resource_id)
            .bind(&self.outcome)
            .bind(&self.request_id)
            .bind(&self.occurred_at)
            .bind(&self.detail)
    }

    fn push(&mut self, entry: &'a EntryToRecord) {
        let event = &entry.event;
        let actor = ActorColumns::of(&event.actor);
        self.digest.push(entry.digest.as_slice());
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

    /// Entries matching `filter`, sealed or not, newest recorded first, one bounded page at a
    /// time.
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
        // (tenant_id, id) key drives the scan backwards; the filters are checked on the way.
        let rows: Vec<EntryRow> = crate::sql::query_as(QUERY_ENTRIES)
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
        let entries = rows.into_iter().map(EntryRow::into_recorded).collect::<Result<Vec<_>, _>>()?;
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
        AND ($2::bigint IS NULL OR id < $2) \
        AND ($3::text IS NULL OR (actor_kind = $3 \
             AND actor_tenant IS NOT DISTINCT FROM $4::uuid AND actor_user IS NOT DISTINCT FROM $5::uuid \
             AND actor_role IS NOT DISTINCT FROM $6::text AND actor_name IS NOT DISTINCT FROM $7::text)) \
        AND ($8::text IS NULL OR action = $8) \
        AND ($9::text IS NULL OR outcome = $9) \
        AND ($10::text IS NULL OR resource_type = $10) \
        AND ($11::text IS NULL OR resource_id = $11) \
        AND ($12::timestamptz IS NULL OR occurred_at >= $12) \
        AND ($13::timestamptz IS NULL OR occurred_at < $13) \
      ORDER BY id DESC \
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
