//! The door of `praxis keys reencrypt`: new data keys and re-encrypted data, for a suspected
//! DEK compromise.
//!
//! `rotate` and `migrate` rewrap DEKs under another KEK; they cannot help when a DEK itself may
//! have leaked (a memory dump, a debug log). `reencrypt` gives every affected patient a new DEK
//! generation with the patient's fields and appointment notes sealed under it, and destroys the
//! old DEK, so whatever leaked opens nothing any more. The work, one patient per transaction, is
//! the use case `app::Services::reencrypt_patient_data` (`crates/app/src/keys.rs`); this module
//! picks the cutoff (by default, the moment the run starts; printed first, so an interrupted run
//! can be resumed with `--before <cutoff>`), walks every practice (or the one given with
//! `--tenant`) and prints the progress lines (stderr) and the summary (stdout).
#![allow(clippy::print_stdout, clippy::print_stderr)] // progress and summary are the command's output

use crate::config::Config;
use anyhow::bail;
use app::keys::{BatchSize, ReencryptProgress};
use kernel::{Clock, SystemClock, TenantId};
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
    let batch_size = BatchSize::new(options.batch_size).map_err(crate::keys::batch_size_error)?;
    let cutoff = options.before.unwrap_or_else(|| SystemClock.now());
    let cutoff_text = cutoff.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    eprintln!("keys reencrypt: patients whose data key was created before {cutoff_text}");
    eprintln!("keys reencrypt: to resume an interrupted run, pass --before {cutoff_text}");
    let handles = crate::kms::build(&config.kms).await?;
    crate::kms::self_test(&handles.keyring).await?;
    let (pool, tenants) = crate::operator::operator_scope(config, options.tenant).await?;
    let services = crate::operator::services_on(config, pool, handles.keyring, None)?;
    let mut summary = Summary::default();
    for tenant in tenants {
        summary.practices += 1;
        let before = summary;
        let mut progress = |event: ReencryptProgress<'_>| match event {
            ReencryptProgress::PatientFailed { patient, error } => {
                eprintln!("practice {tenant}: patient {patient} not re-encrypted: {error:#}");
            }
            ReencryptProgress::BatchDone(so_far) => eprintln!(
                "practice {tenant}: {} re-encrypted, {} skipped, {} failed so far",
                before.reencrypted + so_far.reencrypted,
                before.skipped + so_far.skipped,
                before.failed + so_far.failed
            ),
        };
        let remaining = options.limit.map(|limit| limit.saturating_sub(summary.reencrypted));
        let done = services
            .reencrypt_patient_data(&crate::keys::keys_caller(tenant), cutoff, batch_size, remaining, &mut progress)
            .await
            .map_err(|e| crate::operator::operator_error(e, &[]))?;
        summary.reencrypted += done.reencrypted;
        summary.skipped += done.skipped;
        summary.failed += done.failed;
        if done.limit_reached {
            summary.limit_reached = true;
            break;
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
