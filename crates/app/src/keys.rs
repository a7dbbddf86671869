//! Stored data keys: creating them, and the operator's key operations over a practice
//! (`praxis keys rotate | migrate | reencrypt`).
//!
//! # Creating keys
//! [`store_patient_key`] stores a new DEK generation of a patient (practice keys are created by
//! `crate::practice_key`).
//!
//! # Rewrapping (`rotate`, `migrate`)
//! For one practice, first its practice keys (a handful of rows, one pass), then every row of
//! `patient_keys` in (patient, generation) order, a batch at a time; each key that
//! `Keyring::needs_rewrap` says is not under the primary's current KEK version is rewrapped.
//! Each batch is read in one short transaction, rewrapped outside any transaction (KMS calls can
//! take a while), and written in a second short transaction together with one audit entry for
//! the batch. An interruption loses at most the batch in flight; a re-run skips what is done,
//! because the filter is "not under the primary" and each row is updated only if it still
//! carries the KEK it was read with (compare-and-set), so no DEK is rewrapped twice, even by two
//! runs at once. No long locks: the server keeps serving.
//!
//! Audit: one `key.rotate` (rotate) or `key.wrap` (migrate) entry per batch that rewrapped or
//! failed anything, as the caller, with counts and the target KEK; never one entry per DEK. The
//! practice keys get their own entry (resource type `tenant_keys`, the purposes in the detail),
//! in the transaction that rewrites them. Practice keys do not count towards the limit: there are
//! at most a few per practice, and a practice key rotated late would keep the old KEK needed.
//! Their unwrapped material never changes, so servers holding one in memory stay correct.
//!
//! # Re-encrypting (`reencrypt`)
//! For a suspected DEK compromise: every live patient whose current DEK was created before a
//! cutoff gets a new DEK generation, its fields and appointment notes are opened under the old
//! DEK and sealed under the new one, and the old DEK is destroyed. One patient per transaction:
//! the patient row is locked, the cutoff checked again under the lock, the new DEK row inserted,
//! the data replaced and the old DEK destroyed, with the audit entry, all in that transaction.
//! So an interruption loses at most the patient in flight, and a run with the same cutoff
//! finishes the job without re-encrypting anyone twice (a finished patient's DEK is newer than
//! the cutoff). Readers see the old generation until the commit, the new one after.

use crate::practice_key::wrapped_practice_key;
use crate::protection::{SealingKey, open_fields, reseal_notes, seal_fields};
use crate::{Caller, Error, Result, Services};
use ::patients::PatientField;
use audit::{Action, Outcome};
use crypto::{KeyContext, KeyManagement, KeyPurpose, KmsError, WrappedDataKey};
use kernel::{Clock, PatientId, TenantId};
use sqlx::PgConnection;
use store_postgres::keys::{KeyCursor, PatientKeyRecord, ProbeKey};
use store_postgres::tenant_keys::{self, TenantKeyRecord};
use store_postgres::{DbContext, begin};
use time::OffsetDateTime;

/// Default rows per batch (and per transaction, and per audit entry).
pub const DEFAULT_BATCH_SIZE: u32 = 100;

/// Rows per batch of a key operation: at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSize(u32);

impl BatchSize {
    /// Refuses 0 (as the input `batch_size`): a batch of nothing would never advance.
    pub fn new(rows: u32) -> Result<Self> {
        if rows == 0 {
            return Err(Error::invalid("batch_size", "must be greater than 0"));
        }
        Ok(Self(rows))
    }

    pub fn rows(self) -> u32 {
        self.0
    }
}

/// Why keys are rewrapped; named in the audit entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewrapOperation {
    /// To the primary KEK's new version.
    Rotate,
    /// From the previous backends to the primary one.
    Migrate,
}

impl RewrapOperation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rotate => "rotate",
            Self::Migrate => "migrate",
        }
    }

    fn audit_action(self) -> Action {
        match self {
            Self::Rotate => Action::KeyRotate,
            Self::Migrate => Action::KeyWrap,
        }
    }
}

/// Keys checked, rewrapped, skipped (already under the primary, destroyed, or changed by someone
/// else since they were read) and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub checked: u64,
    pub rewrapped: u64,
    pub skipped: u64,
    pub failed: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.checked += other.checked;
        self.rewrapped += other.rewrapped;
        self.skipped += other.skipped;
        self.failed += other.failed;
    }
}

/// What a rewrap reports while it runs, for the door to show as it happens.
#[derive(Debug)]
pub enum RewrapProgress<'a> {
    /// A practice key the KMS did not rewrap (the run goes on with the others).
    PracticeKeyFailed { key: &'a TenantKeyRecord, error: &'a KmsError },
    /// A practice key of a purpose this version does not know: left as it is.
    PracticeKeyOfUnknownPurpose { key: &'a TenantKeyRecord },
    /// The practice keys are written (reported only when something was rewrapped or failed).
    PracticeKeysDone(Counts),
    /// A patient DEK the KMS did not rewrap (the run goes on with the others).
    DekFailed { key: &'a PatientKeyRecord, error: &'a KmsError },
    /// A batch of patient DEKs is written; batches are numbered from 1.
    DekBatchDone { batch: u64, counts: Counts },
}

/// One practice's patient DEKs after a rewrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatientKeysRewrapped {
    pub counts: Counts,
    /// The run stopped at the limit; more may be left.
    pub limit_reached: bool,
}

/// One practice's patients after a re-encryption (so far, while it runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reencrypted {
    pub reencrypted: u64,
    /// Erased, or already done meanwhile.
    pub skipped: u64,
    pub failed: u64,
    /// The run stopped at the limit; more may be left.
    pub limit_reached: bool,
}

/// What a re-encryption reports while it runs, for the door to show as it happens.
#[derive(Debug)]
pub enum ReencryptProgress<'a> {
    /// A patient that could not be re-encrypted (the run goes on with the others).
    PatientFailed { patient: PatientId, error: &'a Error },
    /// A batch of patients is done; the practice's counts so far.
    BatchDone(Reencrypted),
}

/// Stores `key` as DEK generation `key.generation` of a patient, in `conn`'s transaction. The
/// key was generated by the KMS before that transaction opened (its key context names the
/// patient, not the generation), so no connection waits for the KMS.
pub async fn store_patient_key(
    conn: &mut PgConnection,
    clock: &dyn Clock,
    tenant: TenantId,
    patient: PatientId,
    key: &SealingKey,
) -> Result<()> {
    store_postgres::keys::insert(
        conn,
        &store_postgres::keys::NewPatientKey {
            tenant,
            patient,
            generation: key.generation,
            kek_id: key.wrapped.kek_id.clone(),
            kek_version: key.wrapped.kek_version.clone(),
            wrapped_dek: key.wrapped.ciphertext.clone(),
            created_at: clock.now(),
        },
    )
    .await?;
    Ok(())
}

/// The `KeyPurpose` a `tenant_keys.purpose` names (the table's CHECK admits only these).
fn practice_key_purpose(purpose: &str) -> Option<KeyPurpose> {
    [KeyPurpose::BlindIndex, KeyPurpose::AuditCheckpoint].into_iter().find(|p| p.as_str() == purpose)
}

/// The wrapped form of a stored patient DEK; `None` once destroyed (nothing left to rewrap).
fn wrapped_patient_key(row: &PatientKeyRecord) -> Option<WrappedDataKey> {
    if row.destroyed_at.is_some() {
        return None;
    }
    row.wrapped_dek.as_ref().map(|ciphertext| WrappedDataKey {
        kek_id: row.kek_id.clone(),
        kek_version: row.kek_version.clone(),
        ciphertext: ciphertext.clone(),
    })
}

/// What an audit entry of a rewrap covers.
enum AuditScope {
    /// A batch of patient DEKs (`patient_keys`), numbered from 1 per practice.
    DekBatch(u64),
    /// The practice's keys (`tenant_keys`), with the purposes rewrapped.
    PracticeKeys(Vec<String>),
}

impl Services {
    /// Rewraps the caller's practice keys (`tenant_keys`) that are not under the primary KEK's
    /// current version; see the module documentation.
    pub async fn rewrap_practice_keys(
        &self,
        caller: &Caller,
        operation: RewrapOperation,
        progress: &mut dyn FnMut(RewrapProgress<'_>),
    ) -> Result<Counts> {
        let tenant = caller.tenant;
        let mut tx = begin(&self.db, &caller.db_context()).await?;
        let rows = tenant_keys::list(&mut tx, tenant).await?;
        tx.commit().await?;
        let mut counts = Counts::default();
        let mut done = Vec::new();
        for row in &rows {
            counts.checked += 1;
            let wrapped = wrapped_practice_key(row);
            if !self.keyring.needs_rewrap(&wrapped) {
                counts.skipped += 1;
                continue;
            }
            let Some(purpose) = practice_key_purpose(&row.purpose) else {
                counts.failed += 1;
                progress(RewrapProgress::PracticeKeyOfUnknownPurpose { key: row });
                continue;
            };
            match self.keyring.rewrap(&wrapped, &KeyContext::tenant_key(tenant, purpose)).await {
                Ok(new) => done.push((row, wrapped, new)),
                Err(error) => {
                    counts.failed += 1;
                    progress(RewrapProgress::PracticeKeyFailed { key: row, error: &error });
                }
            }
        }
        if done.is_empty() && counts.failed == 0 {
            return Ok(counts);
        }
        let mut tx = begin(&self.db, &caller.db_context()).await?;
        let now = self.clock.now();
        let mut purposes = Vec::new();
        for (row, old, new) in &done {
            let updated = tenant_keys::update_wrapped(
                &mut tx,
                tenant,
                &row.purpose,
                row.generation,
                (old.kek_id.as_str(), old.kek_version.as_str()),
                (new.kek_id.as_str(), new.kek_version.as_str(), new.ciphertext.as_slice()),
                now,
            )
            .await?;
            if updated {
                counts.rewrapped += 1;
                purposes.push(row.purpose.clone());
            } else {
                counts.skipped += 1;
            }
        }
        if counts.rewrapped > 0 || counts.failed > 0 {
            self.append_rewrap_audit(&mut tx, caller, operation, AuditScope::PracticeKeys(purposes), &counts).await?;
        }
        tx.commit().await?;
        progress(RewrapProgress::PracticeKeysDone(counts));
        Ok(counts)
    }

    /// Rewraps the caller's practice's patient DEKs that are not under the primary KEK's current
    /// version, batch by batch; stops after `limit` rewraps when one is given. See the module
    /// documentation.
    pub async fn rewrap_patient_keys(
        &self,
        caller: &Caller,
        operation: RewrapOperation,
        batch_size: BatchSize,
        limit: Option<u64>,
        progress: &mut dyn FnMut(RewrapProgress<'_>),
    ) -> Result<PatientKeysRewrapped> {
        let tenant = caller.tenant;
        let mut outcome = PatientKeysRewrapped::default();
        let mut cursor: Option<KeyCursor> = None;
        let mut batch_no = 0u64;
        loop {
            let mut tx = begin(&self.db, &caller.db_context()).await?;
            let rows = store_postgres::keys::list_batch(&mut tx, tenant, cursor, batch_size.rows()).await?;
            tx.commit().await?;
            let Some(last) = rows.last() else {
                return Ok(outcome);
            };
            cursor = Some(KeyCursor { patient: last.patient, generation: last.generation });
            batch_no += 1;

            let mut batch = Counts::default();
            let mut done = Vec::new();
            for row in &rows {
                batch.checked += 1;
                let Some(wrapped) = wrapped_patient_key(row) else {
                    batch.skipped += 1;
                    continue;
                };
                if !self.keyring.needs_rewrap(&wrapped) {
                    batch.skipped += 1;
                    continue;
                }
                if limit.is_some_and(|limit| {
                    outcome.counts.rewrapped + u64::try_from(done.len()).unwrap_or(u64::MAX) >= limit
                }) {
                    outcome.limit_reached = true;
                    break;
                }
                match self.keyring.rewrap(&wrapped, &KeyContext::patient_data(tenant, row.patient)).await {
                    Ok(new) => done.push((row, wrapped, new)),
                    Err(error) => {
                        batch.failed += 1;
                        progress(RewrapProgress::DekFailed { key: row, error: &error });
                    }
                }
            }

            let mut tx = begin(&self.db, &caller.db_context()).await?;
            let now = self.clock.now();
            for (row, old, new) in &done {
                let updated = store_postgres::keys::update_wrapped(
                    &mut tx,
                    tenant,
                    row.patient,
                    row.generation,
                    (old.kek_id.as_str(), old.kek_version.as_str()),
                    (new.kek_id.as_str(), new.kek_version.as_str(), new.ciphertext.as_slice()),
                    now,
                )
                .await?;
                // Not updated: rewrapped or destroyed by someone else since we read it.
                if updated {
                    batch.rewrapped += 1;
                } else {
                    batch.skipped += 1;
                }
            }
            if batch.rewrapped > 0 || batch.failed > 0 {
                self.append_rewrap_audit(&mut tx, caller, operation, AuditScope::DekBatch(batch_no), &batch).await?;
            }
            tx.commit().await?;
            outcome.counts.add(batch);
            progress(RewrapProgress::DekBatchDone { batch: batch_no, counts: batch });
            if outcome.limit_reached {
                return Ok(outcome);
            }
        }
    }

    async fn append_rewrap_audit(
        &self,
        conn: &mut PgConnection,
        caller: &Caller,
        operation: RewrapOperation,
        scope: AuditScope,
        counts: &Counts,
    ) -> Result<()> {
        let target = self.keyring.key_info();
        let outcome = if counts.failed > 0 { Outcome::Failure } else { Outcome::Success };
        let mut detail = serde_json::json!({
            "operation": operation.name(),
            "checked": counts.checked,
            "rewrapped": counts.rewrapped,
            "failed": counts.failed,
            "kek_backend": target.backend,
            "kek_id": target.key_id,
            "kek_version": target.version,
        });
        let resource_type = match scope {
            AuditScope::DekBatch(batch_no) => {
                detail["batch"] = batch_no.into();
                "patient_keys"
            }
            AuditScope::PracticeKeys(purposes) => {
                detail["purposes"] = purposes.into();
                "tenant_keys"
            }
        };
        let event = caller
            .audit_event(operation.audit_action(), resource_type, self.clock())
            .with_outcome(outcome)
            .with_detail(detail);
        store_postgres::audit::append(conn, event).await?;
        Ok(())
    }

    /// Re-encrypts, under new DEKs, every patient of the caller's practice whose current DEK was
    /// created before `cutoff`, destroying the old DEKs; stops after `limit` patients when one
    /// is given. See the module documentation.
    pub async fn reencrypt_patient_data(
        &self,
        caller: &Caller,
        cutoff: OffsetDateTime,
        batch_size: BatchSize,
        limit: Option<u64>,
        progress: &mut dyn FnMut(ReencryptProgress<'_>),
    ) -> Result<Reencrypted> {
        let tenant = caller.tenant;
        let mut outcome = Reencrypted::default();
        let mut after = None;
        loop {
            let mut tx = begin(&self.db, &caller.db_context()).await?;
            let batch =
                store_postgres::patients::with_dek_created_before(&mut tx, tenant, cutoff, after, batch_size.rows())
                    .await?;
            tx.commit().await?;
            let Some(last) = batch.last() else { return Ok(outcome) };
            after = Some(*last);
            for patient in batch {
                if limit.is_some_and(|limit| outcome.reencrypted >= limit) {
                    outcome.limit_reached = true;
                    return Ok(outcome);
                }
                match self.reencrypt_patient(caller, patient, cutoff).await {
                    Ok(true) => outcome.reencrypted += 1,
                    Ok(false) => outcome.skipped += 1,
                    Err(error) => {
                        outcome.failed += 1;
                        progress(ReencryptProgress::PatientFailed { patient, error: &error });
                    }
                }
            }
            progress(ReencryptProgress::BatchDone(outcome));
        }
    }

    /// One patient, in one transaction. Returns false when there was nothing (left) to do.
    async fn reencrypt_patient(&self, caller: &Caller, patient: PatientId, cutoff: OffsetDateTime) -> Result<bool> {
        let tenant = caller.tenant;
        // The new DEK comes from the KMS before the transaction opens, and the old one is
        // unwrapped with no transaction open (`with_patient_keys`): no row lock waits on the KMS.
        let fresh = &self.new_patient_dek(tenant, patient).await?;
        self.with_patient_keys(|keys| async move {
            let mut tx = begin(&self.db, &caller.db_context()).await?;
            let Some(row) = store_postgres::patients::get(&mut tx, tenant, patient, true).await? else {
                return Ok(false);
            };
            if row.erased_at.is_some() {
                return Ok(false);
            }
            let old_key = store_postgres::keys::get(&mut tx, tenant, patient, row.dek_generation)
                .await?
                .ok_or_else(|| Error::internal(anyhow::anyhow!("the patient's current data key row is missing")))?;
            if old_key.created_at >= cutoff {
                return Ok(false); // done by an earlier (interrupted) run with the same cutoff
            }
            let old_dek = self.patient_dek(&mut tx, caller, &keys, &row).await?;
            let data = open_fields(&old_dek, &row, &PatientField::ALL)?;
            let generation = row
                .dek_generation
                .checked_add(1)
                .ok_or_else(|| Error::internal(anyhow::anyhow!("DEK generation overflow")))?;
            let new_key = SealingKey { generation, ..fresh.clone() };
            store_patient_key(&mut tx, self.clock(), tenant, patient, &new_key).await?;
            let fields = seal_fields(&new_key, tenant, patient, &data, &PatientField::ALL)?;
            let now = self.clock.now();
            if !store_postgres::patients::rekey(&mut tx, tenant, patient, generation, &fields, now).await? {
                return Ok(false);
            }
            // Appointment notes are sealed under the patient's DEK too: they move to the new one.
            reseal_notes(&mut tx, tenant, patient, &old_dek, row.dek_generation, &new_key).await?;
            // The old generation is destroyed: data sealed under the suspect key is gone from the
            // row, and the key itself can no longer be unwrapped from this database.
            store_postgres::keys::destroy(&mut tx, tenant, patient, row.dek_generation, now).await?;
            let event = caller
                .audit_event(Action::KeyRotate, "patient_key", self.clock())
                .with_resource_id(patient.to_string())
                .with_outcome(Outcome::Success)
                .with_detail(serde_json::json!({
                    "operation": "reencrypt",
                    "old_generation": row.dek_generation,
                    "new_generation": generation,
                    "kek_id": new_key.wrapped.kek_id,
                }));
            store_postgres::audit::append(&mut tx, event).await?;
            // Servers cache DEKs by (patient, generation): the new generation is a cache miss for
            // them, so no cache needs flushing.
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}

/// A stored key the configured KMS did not open at start-up ([`Services::open_newest_stored_keys`]).
#[derive(Debug)]
pub struct StoredKeyNotOpened {
    /// The key tried: the newest of its kind, with how many keys share its KEK.
    pub key: ProbeKey,
    pub error: KmsError,
}

/// Why the start-up check of the stored keys failed.
#[derive(Debug, thiserror::Error)]
pub enum StoredKeysError {
    /// The KMS answered, and does not open what the database holds (a wrong or new key file,
    /// another KMS key, a retired version): serving would fail every patient read.
    #[error("the stored {} key (generation {}, under {}:{}) does not unwrap: {}", .0.key.purpose, .0.key.generation, .0.key.kek_id, .0.key.kek_version, .0.error)]
    NotOpened(Box<StoredKeyNotOpened>),
    /// The database could not be read, or the unwrap not recorded.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl Services {
    /// The start-up check that the configured KMS opens what the database holds: unwraps the
    /// newest live patient DEK and the newest practice key of the whole database, each under
    /// its own key context (the newest is the best guess of what the current KEK must open).
    /// Each unwrap is recorded as `key.unwrap` by the `kms-self-test` component in the key's
    /// practice. Returns the keys opened (none on an empty database).
    pub async fn open_newest_stored_keys(&self) -> std::result::Result<Vec<ProbeKey>, StoredKeysError> {
        let keys = store_postgres::keys::probe_keys(&self.db).await.map_err(Error::from)?;
        for key in &keys {
            let (context, resource_type, resource_id) = match key.patient {
                Some(patient) => (KeyContext::patient_data(key.tenant, patient), "patient_key", patient.to_string()),
                None => {
                    let purpose = practice_key_purpose(&key.purpose).ok_or_else(|| {
                        Error::internal(anyhow::anyhow!("practice key of unknown purpose {:?}", key.purpose))
                    })?;
                    (KeyContext::tenant_key(key.tenant, purpose), "tenant_key", key.purpose.clone())
                }
            };
            let wrapped = WrappedDataKey {
                kek_id: key.kek_id.clone(),
                kek_version: key.kek_version.clone(),
                ciphertext: key.wrapped.clone(),
            };
            if let Err(error) = self.keyring.unwrap(&wrapped, &context).await {
                return Err(StoredKeysError::NotOpened(Box::new(StoredKeyNotOpened { key: key.clone(), error })));
            }
            let caller = Caller::system(key.tenant, kernel::Actor::System { component: "kms-self-test".into() });
            let event = caller
                .audit_event(Action::KeyUnwrap, resource_type, self.clock())
                .with_resource_id(resource_id)
                .with_detail(serde_json::json!({
                    "generation": key.generation,
                    "kek_id": key.kek_id,
                    "kek_version": key.kek_version,
                }));
            self.record_self_test_unwrap(key.tenant, event).await?;
        }
        Ok(keys)
    }

    async fn record_self_test_unwrap(&self, tenant: TenantId, event: audit::AuditEvent) -> Result<()> {
        let mut tx = begin(&self.db, &DbContext::tenant(tenant)).await?;
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }
}
