//! Key management wiring: the `[kms]` selector (`settings`), the one function that builds an
//! adapter from a backend's settings (`connect`), the `Keyring` of the primary backend plus every
//! `kms.previous` one, the traced `AuditedKms` wrapper around each adapter, and the start-up
//! self-test.
//!
//! # What is recorded where
//!
//! - Every KMS call (generate, wrap, unwrap, rewrap, health check) goes through `AuditedKms`,
//!   which opens a `tracing` span `kms` with the operation, backend, KEK id and version, and emits
//!   one event with the outcome and duration (debug on success, warn on failure). Never key
//!   material, never the wrapped bytes, never the key context's ids (they are patient ids).
//! - The audit trail gets one summary entry per practice and batch from the key operations
//!   (`praxis keys rotate|migrate`, see `crate::keys`), not one per DEK, to keep the chain small.
//!   Per-request unwraps by the API will be audited with the patients issue, per request that
//!   reads patient data; the DEK cache (`AppState::dek_cache`) bounds how often they happen.

pub mod settings;

pub use settings::{KmsBackend, KmsConfig, KmsSettings, KmsSlot};

use anyhow::{Context, bail};
use async_trait::async_trait;
use crypto::{DataKey, KekInfo, KeyContext, KeyManagement, Keyring, KmsError, WrappedDataKey};
use kernel::{PatientId, TenantId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Bound on the start-up self-test (the AWS adapter bounds one operation to 15 s by itself).
pub const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The keyring and, when the primary is the local KMS, its handle (for `praxis keys rotate`,
/// which can create a new KEK version only there).
#[derive(Clone)]
pub struct KmsHandles {
    pub keyring: Arc<Keyring>,
    pub primary_local: Option<LocalHandle>,
}

/// The local adapter, when built in (its `rotate` creates a new KEK version).
#[cfg(feature = "kms-local")]
pub type LocalHandle = Arc<kms_local::LocalKms>;
/// Without the local adapter there is never a local primary.
#[cfg(not(feature = "kms-local"))]
pub type LocalHandle = std::convert::Infallible;

impl std::fmt::Debug for KmsHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsHandles").field("keyring", &self.keyring).finish_non_exhaustive()
    }
}

/// One configured backend's adapter; the local one also by its own type, for rotation.
pub struct Connected {
    pub adapter: Arc<dyn KeyManagement>,
    pub local: Option<LocalHandle>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").field("kek", &self.adapter.key_info()).finish_non_exhaustive()
    }
}

impl Connected {
    fn adapter(adapter: Arc<dyn KeyManagement>) -> Self {
        Self { adapter, local: None }
    }
}

/// Builds the keyring from `[kms]`: the primary, then every `kms.previous` backend, each traced
/// by [`AuditedKms`]. No adapter calls its service here: the self-test does.
pub async fn build(config: &KmsConfig) -> anyhow::Result<KmsHandles> {
    require_primary(config)?;
    let mut backends = Vec::new();
    for (slot, settings) in config.all() {
        backends.push((slot, connect(&settings, slot).await?));
    }
    finish(backends)
}

/// Like [`build`], for callers without an async runtime; every backend but AWS can be built
/// this way. `AppState::from_config` (benchmarks, simple tests) uses it; `praxis serve` and
/// the key commands use [`build`].
pub fn build_sync(config: &KmsConfig) -> anyhow::Result<KmsHandles> {
    require_primary(config)?;
    let mut backends = Vec::new();
    for (slot, settings) in config.all() {
        backends.push((slot, connect_without_runtime(&settings, slot)?));
    }
    finish(backends)
}

fn require_primary(config: &KmsConfig) -> anyhow::Result<()> {
    if config.primary().is_none() {
        bail!(
            "kms.backend: this binary was built without the {} KMS adapter (cargo feature {})",
            config.backend.as_str(),
            config.backend.feature()
        );
    }
    Ok(())
}

fn finish(backends: Vec<(KmsSlot, Connected)>) -> anyhow::Result<KmsHandles> {
    let mut primary_local = None;
    let mut adapters = Vec::new();
    for (slot, connected) in backends {
        if slot == KmsSlot::Primary {
            primary_local = connected.local;
        }
        adapters.push(Arc::new(AuditedKms::new(connected.adapter)) as Arc<dyn KeyManagement>);
    }
    let mut adapters = adapters.into_iter();
    let primary = adapters.next().context("kms.backend: no backend configured")?;
    let keyring = Keyring::new(primary, adapters).map_err(|e| anyhow::anyhow!("kms.previous: {e}"))?;
    Ok(KmsHandles { keyring: Arc::new(keyring), primary_local })
}

/// The adapter `settings` describe, configured in `slot`. The AWS client needs an async runtime
/// (its credential chain is loaded asynchronously; no network call is made here, credentials
/// resolve at first use); every other adapter is built by [`connect_without_runtime`].
pub async fn connect(settings: &KmsSettings, slot: KmsSlot) -> anyhow::Result<Connected> {
    match settings {
        #[cfg(feature = "kms-aws")]
        KmsSettings::Aws(aws) => {
            let kms = kms_aws::AwsKms::connect(aws)
                .await
                .with_context(|| format!("{}: cannot set up", slot.section(settings.backend())))?;
            Ok(Connected::adapter(Arc::new(kms)))
        }
        other => connect_without_runtime(other, slot),
    }
}

/// [`connect`] for every adapter but AWS's. The primary's local key file is created on first
/// use (development); an older backend's must exist. Errors name the slot's settings.
pub fn connect_without_runtime(settings: &KmsSettings, slot: KmsSlot) -> anyhow::Result<Connected> {
    let section = slot.section(settings.backend());
    match settings {
        #[cfg(feature = "kms-local")]
        KmsSettings::Local(local) => {
            let kms = match slot {
                KmsSlot::Primary => kms_local::LocalKms::open_or_create(local),
                KmsSlot::Previous(_) => kms_local::LocalKms::open_existing(local),
            };
            let kms = Arc::new(kms.with_context(|| format!("{section}: cannot open the key file"))?);
            Ok(Connected { adapter: kms.clone(), local: Some(kms) })
        }
        #[cfg(feature = "kms-aws")]
        KmsSettings::Aws(_) => bail!("{section}: the AWS KMS client is built asynchronously; use AppState::build"),
        #[cfg(feature = "kms-vault")]
        KmsSettings::Vault(vault) => {
            // The adapter's messages name the problem, never the token.
            let kms = vault
                .adapter_config()
                .and_then(|config| kms_vault::VaultKms::new(&config))
                .map_err(|e| anyhow::anyhow!("{section}: {e}"))?;
            Ok(Connected::adapter(Arc::new(kms)))
        }
        #[cfg(feature = "kms-azure")]
        KmsSettings::Azure(azure) => {
            let config = azure
                .adapter_config(&|name| std::env::var(name).ok())
                .map_err(|e| anyhow::anyhow!("{section}: {e}"))?;
            // Which identity (and, for a managed identity, which platform endpoint) was chosen
            // from the settings and the environment: the first thing to check when tokens fail.
            tracing::info!(
                section = %section,
                credential = %config.credential.describe(),
                resource = config.resource.as_deref().unwrap_or("from the vault's challenge"),
                private_ca = config.ca_cert_pem.is_some(),
                "Azure Key Vault credential"
            );
            let kms = kms_azure::AzureKeyVault::new(&config).map_err(|e| anyhow::anyhow!("{section}: {e}"))?;
            Ok(Connected::adapter(Arc::new(kms)))
        }
    }
}

/// Start-up self-test: wraps a fresh random probe key with the primary, unwraps it through the
/// keyring and compares, then health-checks every backend (an older backend that cannot unwrap
/// makes old rows unreadable). The probe's context uses random ids that name no patient.
/// Returns the primary's KEK as the probe found it (its version included).
pub async fn self_test(keyring: &Keyring) -> anyhow::Result<KekInfo> {
    let probe = async {
        let ctx = KeyContext::patient_data(TenantId::new(), PatientId::new());
        let key = DataKey::generate().map_err(|e| KmsError::Other(e.to_string()))?;
        let wrapped = keyring.wrap(&key, &ctx).await?;
        let back = keyring.unwrap(&wrapped, &ctx).await?;
        if back.expose_secret() != key.expose_secret() {
            return Err(KmsError::Other("the probe key did not survive wrap and unwrap".into()));
        }
        keyring.health_check().await
    };
    // Vault and Azure (with `key_version` unset) learn the key's current version from their first
    // answer, so what the probe wrapped with is known only after it: read the info then.
    let before = keyring.key_info();
    match tokio::time::timeout(SELF_TEST_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(keyring.key_info()),
        Ok(Err(error)) => bail!("KMS self-test failed ({} key {}): {error}", before.backend, before.key_id),
        Err(_) => {
            bail!(
                "KMS self-test failed ({} key {}): no answer within {SELF_TEST_TIMEOUT:?}",
                before.backend,
                before.key_id
            )
        }
    }
}

/// The start-up check of `praxis serve`: the [`self_test`] round trip, then the newest stored
/// patient DEK and practice key unwrapped under their key contexts
/// (`app::Services::open_newest_stored_keys`), for every backend. A KMS that answers but does
/// not open what the database holds (a lost local key file replaced by a new one, another
/// Vault, AWS or Azure key, a retired version) refuses the start with what was found, instead
/// of a ready server that answers 500 to every patient read. A local key file created just now
/// by this start is removed again, so the next start does not find a key that opens nothing.
/// Returns the primary's KEK as the self-test found it.
pub async fn start_up_check(kms: &KmsHandles, services: &app::Services) -> anyhow::Result<KekInfo> {
    let kek = self_test(&kms.keyring).await?;
    let checked = match tokio::time::timeout(SELF_TEST_TIMEOUT, services.open_newest_stored_keys()).await {
        Ok(checked) => checked,
        Err(_) => bail!(
            "KMS self-test failed ({} key {}): no answer within {SELF_TEST_TIMEOUT:?} when unwrapping a stored key",
            kek.backend,
            kek.key_id
        ),
    };
    match checked {
        Ok(opened) => {
            for key in &opened {
                tracing::info!(
                    purpose = %key.purpose,
                    kek_id = %key.kek_id,
                    kek_version = %key.kek_version,
                    stored = key.stored,
                    "KMS self-test: the newest stored key unwraps"
                );
            }
            Ok(kek)
        }
        Err(app::keys::StoredKeysError::Failed(error)) => {
            Err(anyhow::anyhow!("KMS self-test: cannot read or record the stored keys to try: {error}"))
        }
        Err(app::keys::StoredKeysError::NotOpened(refusal)) => {
            let app::keys::StoredKeyNotOpened { key, error } = *refusal;
            let what = match key.patient {
                Some(_) => "patient key".to_owned(),
                None => format!("{} practice key", key.purpose),
            };
            let found = format!(
                "the database holds {} live {}s; the newest (practice {}, generation {}) is wrapped under KEK {} version {:?}, \
                 like {} of them",
                key.stored, what, key.tenant, key.generation, key.kek_id, key.kek_version, key.under_same_kek
            );
            if error.is_retryable() {
                bail!(
                    "KMS self-test failed ({} key {}): {found}, and the KMS did not answer when asked to unwrap it: {error}",
                    kek.backend,
                    kek.key_id
                );
            }
            let advice = match local_key_file_note(kms) {
                Some(note) => note,
                None => format!(
                    "Check that kms.{} names the key the stored keys were wrapped with (and that it, or the version, \
                     was not deleted or retired), and that kms.previous lists every backend older keys are still \
                     wrapped under.",
                    kek.backend
                ),
            };
            bail!(
                "KMS self-test failed ({} key {}): {found}, and it does not unwrap: {error}. {advice}",
                kek.backend,
                kek.key_id
            )
        }
    }
}

/// For a local primary: what its key file has to do with a refusal, after removing the file
/// when this very start created it (none was there), so a restart does not take a key that
/// opens nothing for the right one.
#[cfg(feature = "kms-local")]
fn local_key_file_note(kms: &KmsHandles) -> Option<String> {
    let local = kms.primary_local.as_ref()?;
    let path = local.path().display();
    let restore = "Restore the key file the stored keys were wrapped with (from its backup) to kms.local.key_file, \
                   or, on a development database you mean to discard, drop the database and migrate it afresh.";
    if !local.created_the_file() {
        return Some(format!("The key file {path} does not open them. {restore}"));
    }
    let removed = match std::fs::remove_file(local.path()) {
        Ok(()) => "and was removed again".to_owned(),
        Err(error) => format!("and could not be removed again ({error}): remove it"),
    };
    Some(format!("The key file {path} did not exist: a new key was created just now, {removed}. {restore}"))
}

/// Without the local adapter there is no key file to speak of.
#[cfg(not(feature = "kms-local"))]
fn local_key_file_note(_: &KmsHandles) -> Option<String> {
    None
}

/// A `KeyManagement` that traces every call of the adapter inside it: a `kms` span with the
/// operation, backend, KEK id and version, and one event with the outcome and duration. Key
/// material, wrapped bytes and the key context (patient ids) are never recorded.
pub struct AuditedKms {
    inner: Arc<dyn KeyManagement>,
}

impl AuditedKms {
    pub fn new(inner: Arc<dyn KeyManagement>) -> Self {
        Self { inner }
    }

    async fn traced<T>(
        &self,
        operation: &'static str,
        kek_id: &str,
        kek_version: &str,
        call: impl std::future::Future<Output = Result<T, KmsError>>,
    ) -> Result<T, KmsError> {
        let backend = self.inner.key_info().backend;
        let span = tracing::info_span!("kms", operation, backend, kek_id, kek_version);
        async move {
            let started = Instant::now();
            let outcome = call.await;
            telemetry::metrics::record_kms_operation(operation, kms_outcome(&outcome), started.elapsed());
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match &outcome {
                Ok(_) => tracing::debug!(outcome = "success", elapsed_ms, "kms call"),
                Err(error) => tracing::warn!(
                    outcome = "failure",
                    retryable = error.is_retryable(),
                    error = %error,
                    elapsed_ms,
                    "kms call failed"
                ),
            }
            outcome
        }
        .instrument(span)
        .await
    }
}

impl std::fmt::Debug for AuditedKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditedKms").field("kek", &self.inner.key_info()).finish()
    }
}

#[async_trait]
impl KeyManagement for AuditedKms {
    async fn generate_data_key(&self, ctx: &KeyContext) -> Result<(DataKey, WrappedDataKey), KmsError> {
        let info = self.inner.key_info();
        self.traced("generate_data_key", &info.key_id, &info.version, self.inner.generate_data_key(ctx)).await
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        let info = self.inner.key_info();
        self.traced("wrap", &info.key_id, &info.version, self.inner.wrap(key, ctx)).await
    }

    async fn unwrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError> {
        self.traced("unwrap", &wrapped.kek_id, &wrapped.kek_version, self.inner.unwrap(wrapped, ctx)).await
    }

    async fn rewrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        self.traced("rewrap", &wrapped.kek_id, &wrapped.kek_version, self.inner.rewrap(wrapped, ctx)).await
    }

    fn key_info(&self) -> KekInfo {
        self.inner.key_info()
    }

    async fn health_check(&self) -> Result<(), KmsError> {
        let info = self.inner.key_info();
        self.traced("health_check", &info.key_id, &info.version, self.inner.health_check()).await
    }
}

/// The outcome label of a KMS call: `ok` or the kind of failure (never its message).
fn kms_outcome<T>(outcome: &Result<T, KmsError>) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(KmsError::Unavailable(_)) => "unavailable",
        Err(KmsError::AccessDenied(_)) => "access_denied",
        Err(KmsError::KeyNotFound(_)) => "key_not_found",
        Err(KmsError::KeyVersionRetired(_)) => "key_version_retired",
        Err(KmsError::InvalidCiphertext) => "invalid_ciphertext",
        Err(KmsError::Other(_)) => "other",
    }
}
