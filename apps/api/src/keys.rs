//! The door of `praxis keys rotate | migrate`: move every stored data key under the primary KEK:
//! the practice keys (`tenant_keys`: blind index, audit-checkpoint signing) and the patients'
//! DEKs. The work, its batches, compare-and-set and audit entries are the use cases
//! `app::Services::rewrap_practice_keys` and `rewrap_patient_keys` (`crates/app/src/keys.rs`);
//! this module reads the configuration, builds the keyring and the services, walks every
//! practice (or the one given with `--tenant`) and prints the progress lines (stderr) and the
//! summary (stdout).
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
//! Audit entries are recorded as the system component `keys`, acting as the operator inside
//! each practice.
#![allow(clippy::print_stdout, clippy::print_stderr)] // progress and summary are the command's output

use crate::config::{Config, KmsBackend};
use anyhow::{Context, bail};
use app::keys::{BatchSize, RewrapOperation, RewrapProgress};
use crypto::KeyManagement;
use kernel::{Actor, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// New KEK version (local KMS) unless `resume`, then rewrap to it.
    Rotate { resume: bool },
    /// Rewrap from `kms.previous` backends to the primary, which must be `to`.
    Migrate { to: KmsBackend },
}

impl Operation {
    /// What the use cases record (the target backend was checked against the configuration
    /// here, the door: the use case only knows the keyring it was given).
    fn rewrap(self) -> RewrapOperation {
        match self {
            Self::Rotate { .. } => RewrapOperation::Rotate,
            Self::Migrate { .. } => RewrapOperation::Migrate,
        }
    }

    fn name(self) -> &'static str {
        self.rewrap().name()
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
    pub practice_keys: app::keys::Counts,
    pub limit_reached: bool,
}

/// The caller of the key operations in `tenant`: the operator, recorded as the `keys` component
/// (so the trail tells key maintenance from other operator commands).
pub(crate) fn keys_caller(tenant: TenantId) -> app::Caller {
    app::Caller { actor: Actor::System { component: "keys".into() }, ..app::Caller::operator(tenant) }
}

/// Runs a key operation; prints a progress line per batch (stderr) and the summary (stdout).
/// Fails when any DEK could not be rewrapped (after doing every other one).
pub async fn run(config: &Config, operation: Operation, options: Options) -> anyhow::Result<Summary> {
    let batch_size = BatchSize::new(options.batch_size).map_err(batch_size_error)?;
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
    let services = crate::operator::services_on(config, pool, keyring, None)?;
    let mut summary = Summary::default();
    for tenant in tenants {
        summary.practices += 1;
        let caller = keys_caller(tenant);
        let mut progress = |event: RewrapProgress<'_>| print_progress(tenant, event);
        let practice_keys = services
            .rewrap_practice_keys(&caller, operation.rewrap(), &mut progress)
            .await
            .map_err(|e| crate::operator::operator_error(e, &[]))?;
        summary.practice_keys.add(practice_keys);
        let remaining = options.limit.map(|limit| limit.saturating_sub(summary.rewrapped));
        let deks = services
            .rewrap_patient_keys(&caller, operation.rewrap(), batch_size, remaining, &mut progress)
            .await
            .map_err(|e| crate::operator::operator_error(e, &[]))?;
        summary.checked += deks.counts.checked;
        summary.rewrapped += deks.counts.rewrapped;
        summary.skipped += deks.counts.skipped;
        summary.failed += deks.counts.failed;
        if deks.limit_reached {
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

/// `--batch-size 0`, refused before any KMS or database work.
pub(crate) fn batch_size_error(error: app::Error) -> anyhow::Error {
    crate::operator::operator_error(error, &[("batch_size", "--batch-size")])
}

/// One progress line of a rewrap, on stderr.
fn print_progress(tenant: TenantId, event: RewrapProgress<'_>) {
    match event {
        RewrapProgress::PracticeKeyOfUnknownPurpose { key } => {
            eprintln!("practice {tenant}: practice key {:?} has an unknown purpose; not rewrapped", key.purpose);
        }
        RewrapProgress::PracticeKeyFailed { key, error } => eprintln!(
            "practice {tenant}: practice key {} (generation {}) under {}:{} not rewrapped: {error}",
            key.purpose, key.generation, key.kek_id, key.kek_version
        ),
        RewrapProgress::PracticeKeysDone(counts) => eprintln!(
            "practice {tenant}: practice keys: {} checked, {} rewrapped, {} skipped, {} failed",
            counts.checked, counts.rewrapped, counts.skipped, counts.failed
        ),
        RewrapProgress::DekFailed { key, error } => eprintln!(
            "practice {tenant}: DEK (patient {}, generation {}) under {}:{} not rewrapped: {error}",
            key.patient, key.generation, key.kek_id, key.kek_version
        ),
        RewrapProgress::DekBatchDone { batch, counts } => eprintln!(
            "practice {tenant}: batch {batch}: {} checked, {} rewrapped, {} skipped, {} failed",
            counts.checked, counts.rewrapped, counts.skipped, counts.failed
        ),
    }
}

/// `rotate` without `--resume`: a new KEK version where the backend has versions Praxis manages.
///
/// Here in the door, not in the use case: only the local adapter has versions Praxis makes
/// (its key file), and reaching it needs the adapter's handle that the KMS wiring
/// (`crate::kms::build`) returns next to the keyring; the other backends rotate by themselves,
/// and the use cases only see the `Keyring`, which knows no adapter.
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
