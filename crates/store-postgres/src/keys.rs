//! Wrapped per-patient data keys (`patient_keys`; migration `20261122000005_patient_keys.sql`).
//!
//! Every function takes `&mut PgConnection` and runs inside the caller's transaction, opened with
//! [`crate::begin`] for the practice (e.g. `DbContext::operator(tenant)`); row-level security
//! shows only that practice's rows, and each query also names the tenant explicitly.
//!
//! This crate stores bytes and labels only: it knows nothing of the `crypto` crate. The caller
//! turns a [`PatientKeyRecord`] into a `crypto::WrappedDataKey` and back.

use crate::StoreError;
use kernel::{PatientId, TenantId};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use time::OffsetDateTime;

/// A new DEK generation of a patient, already wrapped.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPatientKey {
    pub tenant: TenantId,
    pub patient: PatientId,
    pub generation: u32,
    pub kek_id: String,
    pub kek_version: String,
    pub wrapped_dek: Vec<u8>,
    pub created_at: OffsetDateTime,
}

/// A stored DEK generation. `wrapped_dek` is `None` once the key was destroyed.
#[derive(Clone, PartialEq, Eq)]
pub struct PatientKeyRecord {
    pub tenant: TenantId,
    pub patient: PatientId,
    pub generation: u32,
    pub kek_id: String,
    pub kek_version: String,
    pub wrapped_dek: Option<Vec<u8>>,
    pub created_at: OffsetDateTime,
    pub rewrapped_at: Option<OffsetDateTime>,
    pub destroyed_at: Option<OffsetDateTime>,
}

/// Wrapped keys are ciphertext, but there is no reason to print them either.
impl std::fmt::Debug for PatientKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientKeyRecord")
            .field("tenant", &self.tenant)
            .field("patient", &self.patient)
            .field("generation", &self.generation)
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .field("wrapped_dek_len", &self.wrapped_dek.as_ref().map(Vec::len))
            .field("destroyed_at", &self.destroyed_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NewPatientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPatientKey")
            .field("tenant", &self.tenant)
            .field("patient", &self.patient)
            .field("generation", &self.generation)
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .finish_non_exhaustive()
    }
}

/// Where a batched listing continues: after this (patient, generation), in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCursor {
    pub patient: PatientId,
    pub generation: u32,
}

const COLUMNS: &str =
    "tenant_id, patient_id, generation, kek_id, kek_version, wrapped_dek, created_at, rewrapped_at, destroyed_at";

fn generation_param(generation: u32) -> Result<i32, StoreError> {
    i32::try_from(generation).map_err(|_| StoreError::Corrupt(format!("DEK generation {generation} is out of range")))
}

fn record(row: &PgRow) -> Result<PatientKeyRecord, StoreError> {
    let generation: i32 = row.try_get("generation")?;
    let wrapped: Option<Vec<u8>> = row.try_get("wrapped_dek")?;
    Ok(PatientKeyRecord {
        tenant: TenantId::from_uuid(row.try_get("tenant_id")?),
        patient: PatientId::from_uuid(row.try_get("patient_id")?),
        generation: u32::try_from(generation)
            .map_err(|_| StoreError::Corrupt(format!("DEK generation {generation} is negative")))?,
        kek_id: row.try_get("kek_id")?,
        kek_version: row.try_get("kek_version")?,
        wrapped_dek: wrapped.filter(|w| !w.is_empty()),
        created_at: row.try_get("created_at")?,
        rewrapped_at: row.try_get("rewrapped_at")?,
        destroyed_at: row.try_get("destroyed_at")?,
    })
}

/// Stores a new DEK generation. Fails (unique violation) when that generation exists.
pub async fn insert(conn: &mut PgConnection, key: &NewPatientKey) -> Result<(), StoreError> {
    crate::sql::query(
        "INSERT INTO patient_keys (tenant_id, patient_id, generation, kek_id, kek_version, wrapped_dek, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.tenant.as_uuid())
    .bind(key.patient.as_uuid())
    .bind(generation_param(key.generation)?)
    .bind(&key.kek_id)
    .bind(&key.kek_version)
    .bind(&key.wrapped_dek)
    .bind(key.created_at)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}

/// One DEK generation of a patient.
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
    generation: u32,
) -> Result<Option<PatientKeyRecord>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM patient_keys WHERE tenant_id = $1 AND patient_id = $2 AND generation = $3");
    let row = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(patient.as_uuid())
        .bind(generation_param(generation)?)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    row.as_ref().map(record).transpose()
}

/// Up to `limit` keys of the practice (live and destroyed) after `after`, in (patient,
/// generation) order: a keyset cursor, so each batch is an index range scan however far the
/// walk has gone, and rows inserted meanwhile are never skipped before the cursor passes them.
pub async fn list_batch(
    conn: &mut PgConnection,
    tenant: TenantId,
    after: Option<KeyCursor>,
    limit: u32,
) -> Result<Vec<PatientKeyRecord>, StoreError> {
    let limit = i64::from(limit);
    let rows = match after {
        None => {
            let sql = format!(
                "SELECT {COLUMNS} FROM patient_keys WHERE tenant_id = $1 ORDER BY patient_id, generation LIMIT $2"
            );
            crate::sql::query(sqlx::AssertSqlSafe(sql)).bind(tenant.as_uuid()).bind(limit).fetch_all(&mut *conn).await
        }
        Some(cursor) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM patient_keys WHERE tenant_id = $1 AND (patient_id, generation) > ($2, $3) \
                 ORDER BY patient_id, generation LIMIT $4"
            );
            crate::sql::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_uuid())
                .bind(cursor.patient.as_uuid())
                .bind(generation_param(cursor.generation)?)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
        }
    }
    .map_err(StoreError::classify)?;
    rows.iter().map(record).collect()
}

/// Replaces the wrapping of a live key, but only if it is still wrapped by `expected_kek_id` /
/// `expected_kek_version` (compare-and-set): two concurrent rotations never both rewrite a row,
/// and a key destroyed meanwhile stays destroyed. Returns whether the row was updated.
#[allow(clippy::too_many_arguments)] // one flat statement; a struct would only rename the arguments
pub async fn update_wrapped(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
    generation: u32,
    (expected_kek_id, expected_kek_version): (&str, &str),
    (kek_id, kek_version, wrapped_dek): (&str, &str, &[u8]),
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE patient_keys SET kek_id = $6, kek_version = $7, wrapped_dek = $8, rewrapped_at = $9 \
         WHERE tenant_id = $1 AND patient_id = $2 AND generation = $3 \
           AND kek_id = $4 AND kek_version = $5 AND destroyed_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(generation_param(generation)?)
    .bind(expected_kek_id)
    .bind(expected_kek_version)
    .bind(kek_id)
    .bind(kek_version)
    .bind(wrapped_dek)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Crypto-shredding: empties every DEK generation of a patient and marks it destroyed. Returns
/// how many live keys were destroyed. After this commits, no ciphertext sealed under these DEKs
/// can be decrypted again, wherever it was copied (the DEK existed nowhere else in clear except
/// in server memory caches, which the caller clears).
pub async fn destroy_all(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    let result = crate::sql::query(
        "UPDATE patient_keys SET wrapped_dek = NULL, destroyed_at = $3 \
         WHERE tenant_id = $1 AND patient_id = $2 AND destroyed_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected())
}

/// Crypto-shredding of one generation (`praxis keys reencrypt`, once the patient's data is
/// sealed under a newer one): empties that DEK and marks it destroyed. Returns whether a live
/// key was destroyed.
pub async fn destroy(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
    generation: u32,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE patient_keys SET wrapped_dek = NULL, destroyed_at = $4 \
         WHERE tenant_id = $1 AND patient_id = $2 AND generation = $3 AND destroyed_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(generation_param(generation)?)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// The newest stored key of one kind, for the start-up check of the KMS ([`probe_keys`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ProbeKey {
    /// `patient-data` for a patient DEK, else the practice key's purpose (`tenant_keys.purpose`).
    pub purpose: String,
    pub tenant: TenantId,
    /// The patient of a patient DEK; `None` for a practice key.
    pub patient: Option<PatientId>,
    pub generation: u32,
    pub kek_id: String,
    pub kek_version: String,
    pub wrapped: Vec<u8>,
    /// Live keys of its table under the same KEK id and version, itself included.
    pub under_same_kek: u64,
    /// Live keys of its table.
    pub stored: u64,
}

impl std::fmt::Debug for ProbeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeKey")
            .field("purpose", &self.purpose)
            .field("generation", &self.generation)
            .field("kek_id", &self.kek_id)
            .field("kek_version", &self.kek_version)
            .field("under_same_kek", &self.under_same_kek)
            .field("stored", &self.stored)
            .finish_non_exhaustive()
    }
}

/// The newest live patient DEK and the newest practice key of the whole database (none on an
/// empty one), through the owner's `kms_probe_keys()` (migration
/// `20261205000015_kms_probe_keys.sql`), so the runtime role can run the check outside any
/// practice's context: in the workers' scan context ([`crate::DbContext::practice_scan`]), the
/// only one the function answers.
pub async fn probe_keys(pool: &PgPool) -> Result<Vec<ProbeKey>, StoreError> {
    let mut tx = crate::begin(pool, &crate::DbContext::practice_scan()).await?;
    let rows = crate::sql::query("SELECT * FROM kms_probe_keys()").fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let count = |row: &PgRow, column: &str| -> Result<u64, StoreError> {
        let value: i64 = row.try_get(column)?;
        u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative key count {value}")))
    };
    rows.iter()
        .map(|row| {
            let generation: i32 = row.try_get("probe_generation")?;
            let patient: Option<uuid::Uuid> = row.try_get("probe_patient")?;
            Ok(ProbeKey {
                purpose: row.try_get("purpose")?,
                tenant: TenantId::from_uuid(row.try_get("probe_tenant")?),
                patient: patient.map(PatientId::from_uuid),
                generation: u32::try_from(generation)
                    .map_err(|_| StoreError::Corrupt(format!("key generation {generation} is negative")))?,
                kek_id: row.try_get("probe_kek_id")?,
                kek_version: row.try_get("probe_kek_version")?,
                wrapped: row.try_get("wrapped")?,
                under_same_kek: count(row, "under_same_kek")?,
                stored: count(row, "stored")?,
            })
        })
        .collect()
}
