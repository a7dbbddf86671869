//! `praxis keys reencrypt`: new data keys and re-encrypted data, for a suspected DEK compromise.
//!
//! `rotate` and `migrate` rewrap DEKs under another KEK; they cannot help when a DEK itself may
//! have leaked (a memory dump, a debug log). `reencrypt` gives every affected patient a new DEK
//! generation, decrypts each field under the old DEK, seals it under the new one, and destroys
//! the old DEK, so whatever leaked opens nothing any more.
//!
//! Which patients: every live patient whose current DEK was created before the *cutoff* (by
//! default, the moment the run starts; printed first). One patient per transaction: the patient
//! row is locked (`FOR UPDATE`), the cutoff is checked again under the lock, the new DEK row is
//! inserted, the fields replaced and the old DEK destroyed, all in that one transaction, which
//! also holds the audit entry. So an interrupted run loses at most the patient in flight, and
//! running again with the same `--before <cutoff>` finishes the job without re-encrypting anyone
//! twice (a finished patient's DEK is newer than the cutoff). Readers keep working throughout
//! (MVCC: they see the old generation until the commit, the new one after); writers to the one
//! patient being processed wait for its transaction only.
#![allow(clippy::print_stdout, clippy::print_stderr)] // progress and summary are the command's output

use crate::config::Config;
use anyhow::{Context, bail};
use app::protection::{SealingKey, open_fields, reseal_notes, seal_fields, wrapped_of};
use audit::{Action, AuditEvent, Outcome};
use crypto::{DataKey, KeyContext, KeyManagement, Keyring};
use kernel::{Actor, Clock, PatientId, SystemClock, TenantId};
use patients::PatientField;
use store_postgres::patients as store;
use store_postgres::{DbContext, begin};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub tenant: Option<TenantId>,
    pub batch_size: u32,
    /// Patients whose current DEK is older than this; `None` = now.
    pub before: Option<OffsetDateTime>,
    /// Stop after this many patients (run again with the same `--before` to continue).
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub practices: u64,
    pub reencrypted: u64,
    /// Erased or already done meanwhile.
    pub skipped: u64,
    pub failed: u64,
    pub limit_reached: bool,
}

/// Runs the re-encryption over one practice or all of them.
pub async fn run(config: &Config, options: Options) -> anyhow::Result<Summary> {
    if options.batch_size == 0 {
        bail!("--batch-size: must be greater than 0");
    }
    let clock = SystemClock;
    let cutoff = options.before.unwrap_or_else(|| clock.now());
    let cutoff_text = cutoff.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    eprintln!("keys reencrypt: patients whose data key was created before {cutoff_text}");
    eprintln!("keys reencrypt: to resume an interrupted run, pass --before {cutoff_text}");
    let handles = crate::kms::build(&config.kms).await?;
    crate::kms::self_test(&handles.keyring).await?;
    let (pool, tenants) = crate::operator::operator_scope(config, options.tenant).await?;
    let mut summary = Summary::default();
    'practices: for tenant in tenants {
        summary.practices += 1;
        let mut after = None;
        loop {
            let mut tx = begin(&pool, &DbContext::operator(tenant)).await?;
            let batch = store::with_dek_created_before(&mut tx, tenant, cutoff, after, options.batch_size).await?;
            tx.commit().await?;
            let Some(last) = batch.last() else { break };
            after = Some(*last);
            for patient in batch {
                if options.limit.is_some_and(|limit| summary.reencrypted >= limit) {
                    summary.limit_reached = true;
                    break 'practices;
                }
                match reencrypt_patient(&pool, &handles.keyring, &clock, tenant, patient, cutoff).await {
                    Ok(true) => summary.reencrypted += 1,
                    Ok(false) => summary.skipped += 1,
                    Err(error) => {
                        summary.failed += 1;
                        eprintln!("practice {tenant}: patient {patient} not re-encrypted: {error:#}");
                    }
                }
            }
            eprintln!(
                "practice {tenant}: {} re-encrypted, {} skipped, {} failed so far",
                summary.reencrypted, summary.skipped, summary.failed
            );
        }
    }
    println!(
        "keys reencrypt: {} practice(s), {} patient(s) re-encrypted, {} skipped, {} failed{}",
        summary.practices,
        summary.reencrypted,
        summary.skipped,
        summary.failed,
        if summary.limit_reached { " (stopped at --limit; run again with the same --before)" } else { "" }
    );
    if summary.failed > 0 {
        bail!(
            "{} patient(s) could not be re-encrypted; fix the cause and run again with --before {cutoff_text}",
            summary.failed
        );
    }
    Ok(summary)
}

/// One patient, in one transaction. Returns false when there was nothing (left) to do.
async fn reencrypt_patient(
    pool: &sqlx::PgPool,
    keyring: &Keyring,
    clock: &dyn Clock,
    tenant: TenantId,
    patient: PatientId,
    cutoff: OffsetDateTime,
) -> anyhow::Result<bool> {
    let mut tx = begin(pool, &DbContext::operator(tenant)).await?;
    let Some(row) = store::get(&mut tx, tenant, patient, true).await? else { return Ok(false) };
    if row.erased_at.is_some() {
        return Ok(false);
    }
    let old_key = store_postgres::keys::get(&mut tx, tenant, patient, row.dek_generation)
        .await?
        .context("the patient's current data key row is missing")?;
    if old_key.created_at >= cutoff {
        return Ok(false); // done by an earlier (interrupted) run with the same cutoff
    }
    let ctx = KeyContext::patient_data(tenant, patient);
    let old_wrapped = wrapped_of(&row).map_err(|e| anyhow::anyhow!("{e}"))?;
    let old_dek: DataKey = keyring.unwrap(&old_wrapped, &ctx).await.context("unwrapping the old data key")?;
    let data = open_fields(&old_dek, &row, &PatientField::ALL)
        .map_err(|e| anyhow::anyhow!("decrypting under the old key: {e}"))?;
    let generation = row.dek_generation.checked_add(1).context("DEK generation overflow")?;
    let (new_dek, new_wrapped) = keyring.generate_data_key(&ctx).await.context("generating the new data key")?;
    let new_key = SealingKey { dek: std::sync::Arc::new(new_dek), wrapped: new_wrapped.clone(), generation };
    let fields = seal_fields(&new_key, tenant, patient, &data, &PatientField::ALL)
        .map_err(|e| anyhow::anyhow!("sealing under the new key: {e}"))?;
    let now = clock.now();
    store_postgres::keys::insert(
        &mut tx,
        &store_postgres::keys::NewPatientKey {
            tenant,
            patient,
            generation,
            kek_id: new_wrapped.kek_id.clone(),
            kek_version: new_wrapped.kek_version.clone(),
            wrapped_dek: new_wrapped.ciphertext.clone(),
            created_at: now,
        },
    )
    .await?;
    if !store::rekey(&mut tx, tenant, patient, generation, &fields, now).await? {
        return Ok(false);
    }
    // Appointment notes are sealed under the patient's DEK too: they move to the new one.
    reseal_notes(&mut tx, tenant, patient, &old_dek, row.dek_generation, &new_key)
        .await
        .map_err(|e| anyhow::anyhow!("re-sealing appointment notes: {e}"))?;
    // The old generation is destroyed: data sealed under the suspect key is gone from the row,
    // and the key itself can no longer be unwrapped from this database.
    sqlx::query(
        "UPDATE patient_keys SET wrapped_dek = NULL, destroyed_at = $4 \
         WHERE tenant_id = $1 AND patient_id = $2 AND generation = $3 AND destroyed_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(patient.as_uuid())
    .bind(i32::try_from(row.dek_generation)?)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let event =
        AuditEvent::new(tenant, Actor::System { component: "keys".into() }, Action::KeyRotate, "patient_key", clock)
            .with_resource_id(patient.to_string())
            .with_outcome(Outcome::Success)
            .with_detail(serde_json::json!({
                "operation": "reencrypt",
                "old_generation": row.dek_generation,
                "new_generation": generation,
                "kek_id": new_wrapped.kek_id,
            }));
    store_postgres::audit::append(&mut tx, event).await.map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    // Servers cache DEKs by (patient, generation): the new generation is a cache miss for them,
    // so no cache needs flushing.
    tx.commit().await?;
    Ok(true)
}
