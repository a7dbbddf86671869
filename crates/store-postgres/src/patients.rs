//! Patient records and consents (migration `20261122000007_patients.sql`).
//!
//! This module stores ciphertexts and blind indexes: it never sees a personal value in clear.
//! Every function runs inside the caller's transaction, whose RLS context decides which rows
//! exist for it (a therapist sees only assigned patients, a patient only themself), and names
//! the tenant explicitly as well; except [`get_in_one_statement`], which is a transaction of its
//! own and sets the context it is given exactly as `crate::begin` would.

use crate::{DbContext, StoreError};
use consent::{ConsentEvent, ConsentEventParts, ConsentRecord};
use kernel::{PatientId, TenantId, UserId};
use patients::PatientField;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// Field ciphertexts by field; a missing field is not set.
pub type EncryptedFields = BTreeMap<PatientField, Vec<u8>>;

fn column(field: PatientField) -> String {
    format!("{}_enc", field.aad_column())
}

/// A patient row as stored, with the wrapped DEK of its current generation when one is live.
#[derive(Clone, PartialEq, Eq)]
pub struct PatientRow {
    pub id: PatientId,
    pub tenant: TenantId,
    pub dek_generation: u32,
    pub assigned_therapist: Option<UserId>,
    pub fields: EncryptedFields,
    pub legal_hold: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub erased_at: Option<OffsetDateTime>,
    /// The current DEK generation's row: `(kek_id, kek_version, wrapped DEK)`, `None` when
    /// destroyed or missing.
    pub wrapped_dek: Option<(String, String, Vec<u8>)>,
}

impl std::fmt::Debug for PatientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientRow")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("dek_generation", &self.dek_generation)
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .field("erased_at", &self.erased_at)
            .finish_non_exhaustive()
    }
}

/// A new patient: ciphertexts and blind indexes already computed.
#[derive(Clone)]
pub struct NewPatientRow {
    pub id: PatientId,
    pub tenant: TenantId,
    pub dek_generation: u32,
    pub assigned_therapist: Option<UserId>,
    pub fields: EncryptedFields,
    pub email_index: Option<[u8; 32]>,
    pub phone_index: Option<[u8; 32]>,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for NewPatientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPatientRow").field("id", &self.id).field("tenant", &self.tenant).finish_non_exhaustive()
    }
}

/// A change to a patient row. `fields`: `Some(ciphertext)` sets, `None` clears; fields not in
/// the map stay. Index and assignment: outer `None` = unchanged.
#[derive(Clone, Default)]
pub struct PatientChange {
    pub fields: BTreeMap<PatientField, Option<Vec<u8>>>,
    pub email_index: Option<Option<[u8; 32]>>,
    pub phone_index: Option<Option<[u8; 32]>>,
    pub assigned_therapist: Option<Option<UserId>>,
}

impl std::fmt::Debug for PatientChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientChange").field("fields", &self.fields.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

fn generation_param(generation: u32) -> Result<i32, StoreError> {
    i32::try_from(generation).map_err(|_| StoreError::Corrupt(format!("DEK generation {generation} is out of range")))
}

/// The columns of a [`PatientRow`]; `patient_read()` (migration 20261207000018) returns the same
/// ones, so a column added here must be added to a new version of that function too.
fn select_columns() -> String {
    let fields: Vec<String> = PatientField::ALL.iter().map(|f| format!("p.{}", column(*f))).collect();
    format!(
        "p.id, p.tenant_id, p.dek_generation, p.assigned_therapist_id, {}, p.legal_hold, p.created_at, \
         p.updated_at, p.erased_at, k.kek_id, k.kek_version, k.wrapped_dek",
        fields.join(", ")
    )
}

const FROM: &str = "patients p LEFT JOIN patient_keys k \
     ON k.tenant_id = p.tenant_id AND k.patient_id = p.id AND k.generation = p.dek_generation \
     AND k.destroyed_at IS NULL";

fn row_of(row: &PgRow) -> Result<PatientRow, StoreError> {
    let generation: i32 = row.try_get("dek_generation")?;
    let mut fields = EncryptedFields::new();
    for field in PatientField::ALL {
        let value: Option<Vec<u8>> = row.try_get(column(field).as_str())?;
        if let Some(value) = value {
            fields.insert(field, value);
        }
    }
    let kek_id: Option<String> = row.try_get("kek_id")?;
    let kek_version: Option<String> = row.try_get("kek_version")?;
    let wrapped: Option<Vec<u8>> = row.try_get("wrapped_dek")?;
    let therapist: Option<Uuid> = row.try_get("assigned_therapist_id")?;
    Ok(PatientRow {
        id: PatientId::from_uuid(row.try_get("id")?),
        tenant: TenantId::from_uuid(row.try_get("tenant_id")?),
        dek_generation: u32::try_from(generation)
            .map_err(|_| StoreError::Corrupt(format!("DEK generation {generation} is negative")))?,
        assigned_therapist: therapist.map(UserId::from_uuid),
        fields,
        legal_hold: row.try_get("legal_hold")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        erased_at: row.try_get("erased_at")?,
        wrapped_dek: match (kek_id, kek_version, wrapped) {
            (Some(id), Some(version), Some(w)) if !w.is_empty() => Some((id, version, w)),
            _ => None,
        },
    })
}

/// Stores a new patient (its DEK row must be inserted in the same transaction).
pub async fn insert(conn: &mut PgConnection, patient: &NewPatientRow) -> Result<(), StoreError> {
    let field_columns: Vec<String> = PatientField::ALL.iter().map(|f| column(*f)).collect();
    let placeholders: Vec<String> = (0..PatientField::ALL.len()).map(|i| format!("${}", i + 10)).collect();
    let sql = format!(
        "INSERT INTO patients (id, tenant_id, dek_generation, assigned_therapist_id, email_index, phone_index, \
         created_at, updated_at, legal_hold, {}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {})",
        field_columns.join(", "),
        placeholders.join(", ")
    );
    let mut query = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(patient.id.as_uuid())
        .bind(patient.tenant.as_uuid())
        .bind(generation_param(patient.dek_generation)?)
        .bind(patient.assigned_therapist.map(|u| *u.as_uuid()))
        .bind(patient.email_index.map(|i| i.to_vec()))
        .bind(patient.phone_index.map(|i| i.to_vec()))
        .bind(patient.created_at)
        .bind(patient.created_at)
        .bind(false);
    for field in PatientField::ALL {
        query = query.bind(patient.fields.get(&field).cloned());
    }
    query.execute(&mut *conn).await.map_err(StoreError::classify)?;
    Ok(())
}

/// One patient, if the caller's context may see it. `for_update` locks the row until the
/// transaction ends (updates, erasure).
pub async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: PatientId,
    for_update: bool,
) -> Result<Option<PatientRow>, StoreError> {
    let lock = if for_update { " FOR UPDATE OF p" } else { "" };
    let sql = format!("SELECT {} FROM {FROM} WHERE p.tenant_id = $1 AND p.id = $2{lock}", select_columns());
    let row = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    row.as_ref().map(row_of).transpose()
}

/// The patient [`get`] would return (no row lock), read under `context` in one statement that is
/// its own transaction: `patient_read()` (migration 20261207000018) sets the context as
/// `crate::begin` does, selects, and restores, and Postgres ends the implicit transaction before
/// it answers. One round trip where `begin_read_only`, `get` and the ROLLBACK take two or three,
/// for the hottest read of the API (docs/architecture.md, "Where a read's time goes").
///
/// With unnamed statements (see `crate::sql`) the statement's parse and execution are two
/// exchanges a pooler may send to two server connections, so there it runs inside a
/// [`crate::begin_read_only`] transaction.
///
/// No statement timeout can cover a statement that is its own transaction; the function sets
/// `lock_timeout` to the configured statement timeout instead (its only possible wait is for its
/// tables' share locks); inside the unnamed form's transaction the statement timeout is set too.
/// Either way the wait for a pooled connection is recorded as a transaction's begin
/// (`praxis_db_transaction_begin_duration_seconds`), so pool exhaustion shows as it did.
pub async fn get_in_one_statement(
    pool: &PgPool,
    context: &DbContext,
    tenant: TenantId,
    id: PatientId,
) -> Result<Option<PatientRow>, StoreError> {
    let [context_tenant, context_user, context_role, context_token_hash, context_login_email] =
        crate::context::context_values(context);
    let statement = crate::sql::query("SELECT * FROM patient_read($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(format!("{}ms", crate::pool::statement_timeout_ms()))
        .bind(context_tenant)
        .bind(context_user)
        .bind(context_role)
        .bind(context_token_hash)
        .bind(context_login_email)
        .bind(tenant.as_uuid())
        .bind(id.as_uuid());
    let row = if crate::sql::statements_are_unnamed() {
        // The read-only transaction every other read opens (context and statement timeout set,
        // ended without a COMMIT); the function sets the same context again inside it.
        let mut tx = crate::begin_read_only(pool, context).await?;
        let row = statement.fetch_optional(tx.conn()).await;
        tx.finish();
        row
    } else {
        let started = std::time::Instant::now();
        let acquired = pool.acquire().await.map_err(StoreError::classify);
        telemetry::metrics::record_db_begin(if acquired.is_ok() { "ok" } else { "error" }, started.elapsed());
        statement.fetch_optional(&mut *acquired?).await
    };
    row.map_err(StoreError::classify)?.as_ref().map(row_of).transpose()
}

/// Which patients a listing wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatientQuery {
    /// Only patients with this blind index of their email.
    pub email_index: Option<[u8; 32]>,
    /// Only patients with this blind index of their phone.
    pub phone_index: Option<[u8; 32]>,
    /// Only patients assigned to this therapist.
    pub therapist: Option<UserId>,
    /// Erased records are left out unless asked for.
    pub include_erased: bool,
}

/// Up to `limit` patients visible to the caller with ids after `after`, oldest first (ids are
/// UUIDv7, so id order is creation order): keyset pagination on the `(tenant_id, id)` index.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    query: PatientQuery,
    after: Option<PatientId>,
    limit: u32,
) -> Result<Vec<PatientRow>, StoreError> {
    let sql = format!(
        "SELECT {} FROM {FROM} WHERE p.tenant_id = $1 \
           AND ($2::uuid IS NULL OR p.id > $2) \
           AND ($3::bytea IS NULL OR p.email_index = $3) \
           AND ($4::bytea IS NULL OR p.phone_index = $4) \
           AND ($5::uuid IS NULL OR p.assigned_therapist_id = $5) \
           AND ($6 OR p.erased_at IS NULL) \
         ORDER BY p.id LIMIT $7",
        select_columns()
    );
    let rows = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(after.map(|a| *a.as_uuid()))
        .bind(query.email_index.map(|i| i.to_vec()))
        .bind(query.phone_index.map(|i| i.to_vec()))
        .bind(query.therapist.map(|t| *t.as_uuid()))
        .bind(query.include_erased)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    rows.iter().map(row_of).collect()
}

/// Applies `change` to a live patient. Returns false when no visible live row matched.
pub async fn update(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: PatientId,
    change: &PatientChange,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    // Column names come from PatientField (a closed set), values are all bound.
    let mut sets = vec!["updated_at = $3".to_owned()];
    let mut next = 4;
    for field in change.fields.keys() {
        sets.push(format!("{} = ${next}", column(*field)));
        next += 1;
    }
    for (name, present) in [
        ("email_index", change.email_index.is_some()),
        ("phone_index", change.phone_index.is_some()),
        ("assigned_therapist_id", change.assigned_therapist.is_some()),
    ] {
        if present {
            sets.push(format!("{name} = ${next}"));
            next += 1;
        }
    }
    let sql = format!("UPDATE patients SET {} WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL", sets.join(", "));
    let mut query = crate::sql::query(sqlx::AssertSqlSafe(sql)).bind(tenant.as_uuid()).bind(id.as_uuid()).bind(now);
    for value in change.fields.values() {
        query = query.bind(value.clone());
    }
    if let Some(index) = change.email_index {
        query = query.bind(index.map(|i| i.to_vec()));
    }
    if let Some(index) = change.phone_index {
        query = query.bind(index.map(|i| i.to_vec()));
    }
    if let Some(therapist) = change.assigned_therapist {
        query = query.bind(therapist.map(|t| *t.as_uuid()));
    }
    let result = query.execute(&mut *conn).await.map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Moves a live patient to a new DEK generation: every field column is replaced by `fields`
/// (sealed under the new DEK; absent fields become NULL). Returns false when no live row matched.
pub async fn rekey(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: PatientId,
    generation: u32,
    fields: &EncryptedFields,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let sets: Vec<String> =
        PatientField::ALL.iter().enumerate().map(|(i, f)| format!("{} = ${}", column(*f), i + 5)).collect();
    let sql = format!(
        "UPDATE patients SET dek_generation = $3, updated_at = $4, {} \
         WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
        sets.join(", ")
    );
    let mut query = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(generation_param(generation)?)
        .bind(now);
    for field in PatientField::ALL {
        query = query.bind(fields.get(&field).cloned());
    }
    let result = query.execute(&mut *conn).await.map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Live patients of the practice whose current DEK was created before `cutoff`, after `after`
/// in id order, at most `limit`: the work list of `praxis keys reencrypt`.
pub async fn with_dek_created_before(
    conn: &mut PgConnection,
    tenant: TenantId,
    cutoff: OffsetDateTime,
    after: Option<PatientId>,
    limit: u32,
) -> Result<Vec<PatientId>, StoreError> {
    let ids: Vec<Uuid> = crate::sql::query_scalar(
        "SELECT p.id FROM patients p JOIN patient_keys k \
           ON k.tenant_id = p.tenant_id AND k.patient_id = p.id AND k.generation = p.dek_generation \
         WHERE p.tenant_id = $1 AND p.erased_at IS NULL AND k.created_at < $2 AND ($3::uuid IS NULL OR p.id > $3) \
         ORDER BY p.id LIMIT $4",
    )
    .bind(tenant.as_uuid())
    .bind(cutoff)
    .bind(after.map(|a| *a.as_uuid()))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(ids.into_iter().map(PatientId::from_uuid).collect())
}

/// Sets or lifts the legal hold of a live patient (the trigger allows admins only).
pub async fn set_legal_hold(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: PatientId,
    hold: bool,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = crate::sql::query(
        "UPDATE patients SET legal_hold = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(hold)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Tombstones a patient: empties every ciphertext and blind index and the therapist link, sets
/// `erased_at`. The caller destroys the DEKs in the same transaction. The trigger refuses it
/// while a legal hold is set.
pub async fn tombstone(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: PatientId,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let cleared: Vec<String> = PatientField::ALL.iter().map(|f| format!("{} = NULL", column(*f))).collect();
    let sql = format!(
        "UPDATE patients SET {}, email_index = NULL, phone_index = NULL, assigned_therapist_id = NULL, \
         erased_at = $3, updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
        cleared.join(", ")
    );
    let result = crate::sql::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    Ok(result.rows_affected() == 1)
}

/// Whether a login is linked to this patient.
pub async fn has_account(conn: &mut PgConnection, tenant: TenantId, patient: PatientId) -> Result<bool, StoreError> {
    let found: Option<i32> = crate::sql::query_scalar("SELECT 1 FROM users WHERE tenant_id = $1 AND patient_id = $2")
        .bind(tenant.as_uuid())
        .bind(patient.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    Ok(found.is_some())
}

/// On erasure: the patient's login keeps its id (the audit trail names it) but loses its email
/// (personal data, stored in clear for login) and password, is disabled, and its sessions end.
/// Returns how many accounts were affected (0 or 1).
pub async fn erase_linked_accounts(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    crate::sql::query(
        "UPDATE sessions SET revoked_at = $3 WHERE tenant_id = $1 AND revoked_at IS NULL \
           AND user_id IN (SELECT id FROM users WHERE tenant_id = $1 AND patient_id = $2)",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    let result = crate::sql::query(
        "UPDATE users SET email = 'erased-' || id::text || '@erased.invalid', password_hash = '!erased', \
                disabled_at = coalesce(disabled_at, $3) \
         WHERE tenant_id = $1 AND patient_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(result.rows_affected())
}

/// The role of a user of the practice, if visible and enabled (assignment checks: only a
/// therapist can be assigned).
pub async fn enabled_user_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Option<String>, StoreError> {
    let row = crate::sql::query("SELECT role FROM users WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL")
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
    row.map(|r| r.try_get::<String, _>("role")).transpose().map_err(StoreError::from)
}

fn consent_event_of(row: &PgRow) -> Result<ConsentEvent, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("consent_events: {what}"));
    let digest: Vec<u8> = row.try_get("text_sha256")?;
    let text = consent::ConsentText::new(
        consent::TextVersion::parse(&row.try_get::<String, _>("text_version")?).map_err(|_| corrupt("text_version"))?,
        consent::TextDigest::from_hex(&hex_of(&digest)).map_err(|_| corrupt("text_sha256"))?,
    );
    let recorded_by: kernel::Actor =
        serde_json::from_value(row.try_get("recorded_by")?).map_err(|_| corrupt("recorded_by"))?;
    let note_ref: Option<String> = row.try_get("evidence_ref")?;
    let seq: i64 = row.try_get("seq")?;
    let parts = ConsentEventParts {
        patient: PatientId::from_uuid(row.try_get("patient_id")?),
        purpose: row.try_get::<String, _>("purpose")?.parse().map_err(|_| corrupt("purpose"))?,
        seq: u64::try_from(seq).map_err(|_| corrupt("seq"))?,
        action: row.try_get::<String, _>("action")?.parse().map_err(|_| corrupt("action"))?,
        from: row.try_get::<String, _>("state_before")?.parse().map_err(|_| corrupt("state_before"))?,
        to: row.try_get::<String, _>("state_after")?.parse().map_err(|_| corrupt("state_after"))?,
        occurred_at: row.try_get("recorded_at")?,
        expires_at: row.try_get("expires_at")?,
        evidence: consent::Evidence {
            text,
            channel: row.try_get::<String, _>("channel")?.parse().map_err(|_| corrupt("channel"))?,
            recorded_by,
            note_ref: note_ref.map(|n| consent::NoteRef::parse(&n)).transpose().map_err(|_| corrupt("evidence_ref"))?,
        },
    };
    ConsentEvent::try_from(parts).map_err(|e| corrupt(&e.to_string()))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The whole consent history of a patient, every purpose, in (purpose, seq) order.
pub async fn consent_history(
    conn: &mut PgConnection,
    tenant: TenantId,
    patient: PatientId,
) -> Result<Vec<ConsentEvent>, StoreError> {
    let rows = crate::sql::query(
        "SELECT patient_id, purpose, seq, action, state_before, state_after, text_version, text_sha256, \
                channel, recorded_by, recorded_at, expires_at, evidence_ref \
         FROM consent_events WHERE tenant_id = $1 AND patient_id = $2 ORDER BY purpose, seq",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    rows.iter().map(consent_event_of).collect()
}

/// Appends a consent event and stores the record it led to as the purpose's current state.
/// Two changes computed from the same history collide on the `(patient, purpose, seq)` key: the
/// second fails with a unique violation, never overwriting the first.
pub async fn record_consent(
    conn: &mut PgConnection,
    tenant: TenantId,
    event: &ConsentEvent,
    record: &ConsentRecord,
) -> Result<(), StoreError> {
    let seq = i64::try_from(event.seq()).map_err(|_| StoreError::Corrupt("consent seq out of range".into()))?;
    let evidence = event.evidence();
    let recorded_by = serde_json::to_value(&evidence.recorded_by)
        .map_err(|e| StoreError::Corrupt(format!("consent actor not encodable: {e}")))?;
    crate::sql::query(
        "INSERT INTO consent_events (id, tenant_id, patient_id, purpose, seq, action, state_before, state_after, \
            text_version, text_sha256, channel, recorded_by, recorded_at, expires_at, evidence_ref) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.as_uuid())
    .bind(event.patient().as_uuid())
    .bind(event.purpose().as_str())
    .bind(seq)
    .bind(event.action().as_str())
    .bind(event.from_state().as_str())
    .bind(event.to_state().as_str())
    .bind(evidence.text.version.as_str())
    .bind(evidence.text.sha256.as_bytes().to_vec())
    .bind(evidence.channel.as_str())
    .bind(recorded_by)
    .bind(event.occurred_at())
    .bind(event.expires_at())
    .bind(evidence.note_ref.as_ref().map(|n| n.as_str().to_owned()))
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    crate::sql::query(
        "INSERT INTO consents (tenant_id, patient_id, purpose, state, version, expires_at, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, patient_id, purpose) DO UPDATE \
         SET state = EXCLUDED.state, version = EXCLUDED.version, expires_at = EXCLUDED.expires_at, \
             changed_at = EXCLUDED.changed_at",
    )
    .bind(tenant.as_uuid())
    .bind(record.patient().as_uuid())
    .bind(record.purpose().as_str())
    .bind(record.recorded_state().as_str())
    .bind(seq)
    .bind(record.expires_at())
    .bind(event.occurred_at())
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}
