//! `praxis keys rotate | migrate`: move every stored data key under the primary KEK: the
//! practice keys (`tenant_keys`: blind index, audit-checkpoint signing) and the patients' DEKs.
//!
//! Both walk every practice (or the one given with `--tenant`). For each, first its practice
//! keys (a handful of rows, one pass), then every row of `patient_keys` in (patient, generation)
//! order, `--batch-size` rows at a time; each key that `Keyring::needs_rewrap` says is not under
//! the primary's current KEK version is rewrapped:
//!
//! - `rotate`: with the local KMS, first adds a new KEK version to the key file (its
//!   `LocalKms::rotate`), then rewraps. AWS KMS rotates key material inside the same KMS key
//!   (automatic yearly rotation, or `RotateKeyOnDemand`) and picks the right backing key from
//!   the ciphertext, so there is no Praxis-visible version and nothing to rewrap: `rotate` with
//!   AWS only rewraps what is not under the configured key (normally nothing).
//!   `--resume` skips the new version and only finishes an interrupted rotation.
//! - `migrate --to <backend>`: the new backend is `kms.backend`, the old one is in
//!   `kms.previous`; each DEK is unwrapped by the old backend and wrapped by the new one.
//!
//! Resumable and idempotent: each batch is read in one short transaction, rewrapped outside
//! any transaction (KMS calls can take a while), and written in a second short transaction
//! together with one audit entry for the batch. An interruption loses at most the batch in
//! flight; a re-run skips what is done, because the filter is "not under the primary" and each
//! row is updated only if it still carries the KEK it was read with (compare-and-set), so no
//! DEK is rewrapped twice, even by two runs at once. No long locks: the server keeps serving.
//!
//! Audit: one `key.rotate` (rotate) or `key.wrap` (migrate) entry per practice and batch that
//! rewrapped or failed anything, actor `System { component: "keys" }`, with counts and the
//! target KEK; never one entry per DEK. The practice keys get their own entry (resource type
//! `tenant_keys`, the purposes in the detail), in the transaction that rewrites them.
//!
//! Practice keys are rewrapped like DEKs (same compare-and-set, outside any transaction) but do
//! not count towards `--limit`: there are at most a few per practice, and a practice's key
//! rotated late would keep the old KEK needed. The unwrapped key material never changes, so
//! servers holding a practice key in memory (the checkpoint signer) stay correct.
//!
//! Not here yet: `reencrypt` (a new DEK generation per patient with its field data re-encrypted
//! under it) needs the patient data, which arrives with the patients issue.
#![allow(clippy::print_stdout, clippy::print_stderr)] // progress and summary are the command's output

use crate::config::{Config, KmsBackend};
use anyhow::{Context, bail};
use crypto::{KeyContext, KeyManagement, KeyPurpose, Keyring, WrappedDataKey};
use kernel::{Actor, Clock, PatientId, SystemClock, TenantId};
use std::sync::Arc;
use store_postgres::keys::{self as store, KeyCursor, PatientKeyRecord};
use store_postgres::{DbContext, begin};

/// Default rows per batch (and per transaction, and per audit entry).
pub const DEFAULT_BATCH_SIZE: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// New KEK version (local KMS) unless `resume`, then rewrap to it.
    Rotate { resume: bool },
    /// Rewrap from `kms.previous` backends to the primary, which must be `to`.
    Migrate { to: KmsBackend },
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::Rotate { .. } => "rotate",
            Self::Migrate { .. } => "migrate",
        }
    }

    fn audit_action(self) -> audit::Action {
        match self {
            Self::Rotate { .. } => audit::Action::KeyRotate,
            Self::Migrate { .. } => audit::Action::KeyWrap,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub tenant: Option<TenantId>,
    pub batch_size: u32,
    /// Stop after this many rewraps (spreading a large migration over several runs).
    pub limit: Option<u64>,
}

/// What a run did, for the closing line. `checked` .. `failed` count patient DEKs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub practices: u64,
    pub checked: u64,
    pub rewrapped: u64,
    pub skipped: u64,
    pub failed: u64,
    /// The practice keys (`tenant_keys`).
    pub practice_keys: Counts,
    pub limit_reached: bool,
}

/// Keys checked, rewrapped, skipped (already under the primary, or changed by someone else
/// since they were read) and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub checked: u64,
    pub rewrapped: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// Runs a key operation; prints a progress line per batch (stderr) and the summary (stdout).
/// Fails when any DEK could not be rewrapped (after doing every other one).
pub async fn run(config: &Config, operation: Operation, options: Options) -> anyhow::Result<Summary> {
    if options.batch_size == 0 {
        bail!("--batch-size: must be greater than 0");
    }
    let handles = crate::kms::build(&config.kms).await?;
    let keyring = handles.keyring.clone();
    match operation {
        Operation::Migrate { to } => {
            if config.kms.backend != to {
                bail!(
                    "--to {}: the primary is kms.backend = {:?}; make the new backend the primary (kms.backend) and list the old one in kms.previous",
                    to.as_str(),
                    config.kms.backend.as_str()
                );
            }
            if config.kms.previous.is_empty() {
                eprintln!(
                    "keys migrate: kms.previous is empty, so only DEKs already readable by the primary can be handled"
                );
            }
        }
        Operation::Rotate { resume: true } => {}
        Operation::Rotate { resume: false } => new_kek_version(&handles)?,
    }
    let primary = crate::kms::self_test(&keyring).await?;
    eprintln!(
        "keys {}: target KEK {} (backend {}, version {:?})",
        operation.name(),
        primary.key_id,
        primary.backend,
        primary.version
    );

    let (pool, tenants) = crate::operator::operator_scope(config, options.tenant).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut summary = Summary::default();
    for tenant in tenants {
        summary.practices += 1;
        let practice_keys = rewrap_practice_keys(&pool, &keyring, clock.as_ref(), tenant, operation).await?;
        summary.practice_keys.checked += practice_keys.checked;
        summary.practice_keys.rewrapped += practice_keys.rewrapped;
        summary.practice_keys.skipped += practice_keys.skipped;
        summary.practice_keys.failed += practice_keys.failed;
        if rewrap_practice(&pool, &keyring, clock.as_ref(), tenant, operation, options, &mut summary).await? {
            summary.limit_reached = true;
            break;
        }
    }
    let practice_keys = summary.practice_keys;
    println!(
        "keys {}: {} practice(s), {} DEK(s) checked, {} rewrapped, {} skipped, {} failed; \
         {} practice key(s) checked, {} rewrapped, {} skipped, {} failed{}",
        operation.name(),
        summary.practices,
        summary.checked,
        summary.rewrapped,
        summary.skipped,
        summary.failed,
        practice_keys.checked,
        practice_keys.rewrapped,
        practice_keys.skipped,
        practice_keys.failed,
        if summary.limit_reached { " (stopped at --limit; run again to continue)" } else { "" }
    );
    let failed = summary.failed + practice_keys.failed;
    if failed > 0 {
        bail!(
            "{failed} key(s) could not be rewrapped (see the lines above); fix the cause and run `praxis keys {}` again{}",
            operation.name(),
            if matches!(operation, Operation::Rotate { .. }) { " with --resume" } else { "" }
        );
    }
    Ok(summary)
}

/// The `KeyPurpose` a `tenant_keys.purpose` names (the table's CHECK admits only these).
fn practice_key_purpose(purpose: &str) -> Option<KeyPurpose> {
    [KeyPurpose::BlindIndex, KeyPurpose::AuditCheckpoint].into_iter().find(|p| p.as_str() == purpose)
}

/// One practice's keys in `tenant_keys`: read in one transaction, rewrapped outside any, written
/// (compare-and-set on the KEK they were read with) with one audit entry in a second.
async fn rewrap_practice_keys(
    pool: &sqlx::PgPool,
    keyring: &Keyring,
    clock: &dyn Clock,
    tenant: TenantId,
    operation: Operation,
) -> anyhow::Result<Counts> {
    let context = DbContext::operator(tenant);
    let mut tx = begin(pool, &context).await?;
    let rows = store_postgres::tenant_keys::list(&mut tx, tenant).await?;
    tx.commit().await?;
    let mut counts = Counts::default();
    let mut done = Vec::new();
    for row in &rows {
        counts.checked += 1;
        let wrapped = WrappedDataKey {
            kek_id: row.kek_id.clone(),
            kek_version: row.kek_version.clone(),
            ciphertext: row.wrapped_key.clone(),
        };
        if !keyring.needs_rewrap(&wrapped) {
            counts.skipped += 1;
            continue;
        }
        let Some(purpose) = practice_key_purpose(&row.purpose) else {
            counts.failed += 1;
            eprintln!("practice {tenant}: practice key {:?} has an unknown purpose; not rewrapped", row.purpose);
            continue;
        };
        match keyring.rewrap(&wrapped, &KeyContext::tenant_key(tenant, purpose)).await {
            Ok(new) => done.push((row, wrapped, new)),
            Err(error) => {
                counts.failed += 1;
                eprintln!(
                    "practice {tenant}: practice key {} (generation {}) under {}:{} not rewrapped: {error}",
                    row.purpose, row.generation, row.kek_id, row.kek_version
                );
            }
        }
    }
    if done.is_empty() && counts.failed == 0 {
        return Ok(counts);
    }
    let mut tx = begin(pool, &context).await?;
    let now = clock.now();
    let mut purposes = Vec::new();
    for (row, old, new) in &done {
        let updated = store_postgres::tenant_keys::update_wrapped(
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
        let batch = Summary {
            checked: counts.checked,
            rewrapped: counts.rewrapped,
            failed: counts.failed,
            ..Summary::default()
        };
        append_audit(&mut tx, keyring, clock, tenant, operation, AuditScope::PracticeKeys(purposes), &batch).await?;
    }
    tx.commit().await?;
    eprintln!(
        "practice {tenant}: practice keys: {} checked, {} rewrapped, {} skipped, {} failed",
        counts.checked, counts.rewrapped, counts.skipped, counts.failed
    );
    Ok(counts)
}

/// `rotate` without `--resume`: a new KEK version where the backend has versions Praxis manages.
fn new_kek_version(handles: &crate::kms::KmsHandles) -> anyhow::Result<()> {
    #[cfg(feature = "kms-local")]
    if let Some(local) = &handles.primary_local {
        let info = local.rotate().context("kms.local.key_file: cannot rotate the key file")?;
        eprintln!(
            "keys rotate: new local KEK version {} (restart servers sharing the key file to wrap with it)",
            info.version
        );
        return Ok(());
    }
    let info = handles.keyring.key_info();
    eprintln!(
        "keys rotate: the {} backend rotates its key material itself (AWS KMS: automatic or on-demand rotation; Vault: transit/keys/<key>/rotate; Azure: az keyvault key rotate); rewrapping what is not under the current version of {}",
        info.backend, info.key_id
    );
    Ok(())
}

/// One practice, batch by batch. Returns true when `--limit` stopped the run.
async fn rewrap_practice(
    pool: &sqlx::PgPool,
    keyring: &Keyring,
    clock: &dyn Clock,
    tenant: TenantId,
    operation: Operation,
    options: Options,
    summary: &mut Summary,
) -> anyhow::Result<bool> {
    let context = DbContext::operator(tenant);
    let mut cursor: Option<KeyCursor> = None;
    let mut batch_no = 0u64;
    loop {
        let mut tx = begin(pool, &context).await?;
        let rows = store::list_batch(&mut tx, tenant, cursor, options.batch_size).await?;
        tx.commit().await?;
        let Some(last) = rows.last() else {
            return Ok(false);
        };
        cursor = Some(KeyCursor { patient: last.patient, generation: last.generation });
        batch_no += 1;

        let mut batch = Summary::default();
        let mut done = Vec::new();
        let mut limit_reached = false;
        for row in &rows {
            batch.checked += 1;
            let Some(wrapped) = wrapped_of(row) else {
                batch.skipped += 1; // destroyed: nothing left to rewrap
                continue;
            };
            if !keyring.needs_rewrap(&wrapped) {
                batch.skipped += 1;
                continue;
            }
            if options
                .limit
                .is_some_and(|limit| summary.rewrapped + u64::try_from(done.len()).unwrap_or(u64::MAX) >= limit)
            {
                limit_reached = true;
                break;
            }
            let ctx = KeyContext::patient_data(tenant, row.patient);
            match keyring.rewrap(&wrapped, &ctx).await {
                Ok(new) => done.push((row, wrapped, new)),
                Err(error) => {
                    batch.failed += 1;
                    eprintln!(
                        "practice {tenant}: DEK (patient {}, generation {}) under {}:{} not rewrapped: {error}",
                        row.patient, row.generation, row.kek_id, row.kek_version
                    );
                }
            }
        }

        let mut tx = begin(pool, &context).await?;
        let now = clock.now();
        for (row, old, new) in &done {
            let updated = store::update_wrapped(
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
            if updated { batch.rewrapped += 1 } else { batch.skipped += 1 }
        }
        if batch.rewrapped > 0 || batch.failed > 0 {
            append_audit(&mut tx, keyring, clock, tenant, operation, AuditScope::DekBatch(batch_no), &batch).await?;
        }
        tx.commit().await?;

        summary.checked += batch.checked;
        summary.rewrapped += batch.rewrapped;
        summary.skipped += batch.skipped;
        summary.failed += batch.failed;
        eprintln!(
            "practice {tenant}: batch {batch_no}: {} checked, {} rewrapped, {} skipped, {} failed",
            batch.checked, batch.rewrapped, batch.skipped, batch.failed
        );
        if limit_reached {
            return Ok(true);
        }
    }
}

fn wrapped_of(row: &PatientKeyRecord) -> Option<WrappedDataKey> {
    if row.destroyed_at.is_some() {
        return None;
    }
    row.wrapped_dek.as_ref().map(|ciphertext| WrappedDataKey {
        kek_id: row.kek_id.clone(),
        kek_version: row.kek_version.clone(),
        ciphertext: ciphertext.clone(),
    })
}

/// What an audit entry of a key operation covers.
enum AuditScope {
    /// A batch of patient DEKs (`patient_keys`), numbered from 1 per practice.
    DekBatch(u64),
    /// The practice's keys (`tenant_keys`), with the purposes rewrapped.
    PracticeKeys(Vec<String>),
}

async fn append_audit(
    conn: &mut sqlx::PgConnection,
    keyring: &Keyring,
    clock: &dyn Clock,
    tenant: TenantId,
    operation: Operation,
    scope: AuditScope,
    batch: &Summary,
) -> anyhow::Result<()> {
    let target = keyring.key_info();
    let outcome = if batch.failed > 0 { audit::Outcome::Failure } else { audit::Outcome::Success };
    let mut detail = serde_json::json!({
        "operation": operation.name(),
        "checked": batch.checked,
        "rewrapped": batch.rewrapped,
        "failed": batch.failed,
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
    let event = audit::AuditEvent::new(
        tenant,
        Actor::System { component: "keys".into() },
        operation.audit_action(),
        resource_type,
        clock,
    )
    .with_outcome(outcome)
    .with_detail(detail);
    store_postgres::audit::append(conn, event).await.map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    Ok(())
}

/// Stores a new DEK generation for a patient, wrapped by the keyring's primary (tests and, with
/// the patients issue, patient creation). Returns the DEK's wrapped form.
pub async fn create_patient_key(
    conn: &mut sqlx::PgConnection,
    keyring: &Keyring,
    clock: &dyn Clock,
    tenant: TenantId,
    patient: PatientId,
    generation: u32,
) -> anyhow::Result<(crypto::DataKey, WrappedDataKey)> {
    let (key, wrapped) = keyring.generate_data_key(&KeyContext::patient_data(tenant, patient)).await?;
    store::insert(
        conn,
        &store::NewPatientKey {
            tenant,
            patient,
            generation,
            kek_id: wrapped.kek_id.clone(),
            kek_version: wrapped.kek_version.clone(),
            wrapped_dek: wrapped.ciphertext.clone(),
            created_at: clock.now(),
        },
    )
    .await?;
    Ok((key, wrapped))
}
