//! Wrapped practice-wide keys (`tenant_keys`; migration `20261122000006_tenant_keys.sql`): the
//! blind-index key and the audit-checkpoint signing key of each practice.
//!
//! Like [`crate::keys`], this module stores bytes and labels only; the caller turns a
//! [`TenantKeyRecord`] into a `crypto::WrappedDataKey` and back. Every function runs inside the
//! caller's transaction (RLS shows only the practice's rows) and names the tenant explicitly.

use crate::StoreError;
use kernel::TenantId;
use sqlx::{PgConnection, Row, postgres::PgRow};
use time::OffsetDateTime;

/// A stored practice key (always live: practice keys are never destroyed, only rewrapped).
#[derive(Clone, PartialEq, Eq)]
pub struct TenantKeyRecord {
    pub tenant: TenantId,
    /// The `crypto::KeyPurpose` string, e.g. `blind-index`.
    pub purpose: String,
    pub generation: u32,
    pub kek_id: String,
    pub kek_version: String,
    pub wrapped_key: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub rewrapped_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for TenantKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKeyRecord")
            .field("tenant", &self.tenant)
            .field("purpose", &self.purpose)
            .field("generation", &self.generation)
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "tenant_id, purpose, generation, kek_id, kek_version, wrapped_key, created_at, rewrapped_at";

fn generation_param(generation: u32) -> Result<i32, StoreError> {
    i32::try_from(generation).map_err(|_| StoreError::Corrupt(format!("key generation {generation} is out of range")))
}

fn record(row: &PgRow) -> Result<TenantKeyRecord, StoreError> {
    let generation: i32 = row.try_get("generation")?;
    Ok(TenantKeyRecord {
        tenant: TenantId::from_uuid(row.try_get("tenant_id")?),
        purpose: row.try_get("purpose")?,
        generation: u32::try_from(generation)
            .map_err(|_| StoreError::Corrupt(format!("key generation {generation} is negative")))?,
        kek_id: row.try_get("kek_id")?,
        kek_version: row.try_get("kek_version")?,
        wrapped_key: row.try_get("wrapped_key")?,
        created_at: row.try_get("created_at")?,
        rewrapped_at: row.try_get("rewrapped_at")?,
    })
}

/// The newest generation of the practice's key for `purpose`, if one exists.
pub async fn current(
    conn: &mut PgConnection,
    tenant: TenantId,
    purpose: &str,
) -> Result<Option<TenantKeyRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tenant_keys WHERE tenant_id = $1 AND purpose = $2 ORDER BY generation DESC LIMIT 1"
    );
    let row = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(purpose)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    row.as_ref().map(record).transpose()
}

/// Stores generation 1 of a key unless one exists already (two servers creating the first key
/// at once: one wins, the other's insert does nothing). Returns the stored row, the winner's.
#[allow(clippy::too_many_arguments)] // one flat statement; a struct would only rename the arguments
pub async fn insert_first(
    conn: &mut PgConnection,
    tenant: TenantId,
    purpose: &str,
    kek_id: &str,
    kek_version: &str,
    wrapped_key: &[u8],
    now: OffsetDateTime,
) -> Result<TenantKeyRecord, StoreError> {
    crate::sql::query(
        "INSERT INTO tenant_keys (tenant_id, purpose, generation, kek_id, kek_version, wrapped_key, created_at) \
         VALUES ($1, $2, 1, $3, $4, $5, $6) ON CONFLICT (tenant_id, purpose, generation) DO NOTHING",
    )
    .bind(tenant.as_uuid())
    .bind(purpose)
    .bind(kek_id)
    .bind(kek_version)
    .bind(wrapped_key)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    current(conn, tenant, purpose)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("tenant key {purpose} missing right after insert")))
}

/// Every key of the practice, in (purpose, generation) order (few rows: one per purpose).
pub async fn list(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<TenantKeyRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM tenant_keys WHERE tenant_id = $1 ORDER BY purpose, generation");
    let rows = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    rows.iter().map(record).collect()
}

/// Replaces the wrapping of a key if it is still wrapped by the expected KEK (compare-and-set, as
/// [`crate::keys::update_wrapped`]). Returns whether the row was updated.
#[allow(clippy::too_many_arguments)] // one flat statement; a struct would only rename the arguments
pub async fn update_wrapped(
    conn: &mut PgConnection,
    tenant: TenantId,
    purpose: &str,
    generation: u32,
    (expected_kek_id, expected_kek_version): (&str, &str),
    (kek_id, kek_version, wrapped_key): (&str, &str, &[u8]),
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE tenant_keys SET kek_id = $6, kek_version = $7, wrapped_key = $8, rewrapped_at = $9 \
         WHERE tenant_id = $1 AND purpose = $2 AND generation = $3 AND kek_id = $4 AND kek_version = $5",
    )
    .bind(tenant.as_uuid())
    .bind(purpose)
    .bind(generation_param(generation)?)
    .bind(expected_kek_id)
    .bind(expected_kek_version)
    .bind(kek_id)
    .bind(kek_version)
    .bind(wrapped_key)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}
