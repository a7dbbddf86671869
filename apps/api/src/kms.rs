//! Key management wiring: the `Keyring` built from `[kms]` (the primary backend plus every
//! `kms.previous` one), the traced `AuditedKms` wrapper around each adapter, and the start-up
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

use crate::config::{AwsKmsConfig, KmsBackend, KmsConfig, LocalKmsConfig, PreviousKms};
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

/// One backend of the configuration: the primary or a `kms.previous` entry.
enum BackendSpec<'a> {
    Local(&'a LocalKmsConfig),
    Aws(&'a AwsKmsConfig),
}

fn specs(config: &KmsConfig) -> Vec<BackendSpec<'_>> {
    let primary = match config.backend {
        KmsBackend::Local => BackendSpec::Local(&config.local),
        KmsBackend::Aws => BackendSpec::Aws(&config.aws),
    };
    std::iter::once(primary)
        .chain(config.previous.iter().map(|previous| match previous {
            PreviousKms::Local(local) => BackendSpec::Local(local),
            PreviousKms::Aws(aws) => BackendSpec::Aws(aws),
        }))
        .collect()
}

/// Builds the keyring from `[kms]`: the AWS client needs an async runtime (its credential chain
/// is loaded asynchronously; no network call is made here, credentials resolve at first use).
pub async fn build(config: &KmsConfig) -> anyhow::Result<KmsHandles> {
    let mut backends: Vec<Arc<dyn KeyManagement>> = Vec::new();
    #[cfg_attr(not(feature = "kms-local"), allow(unused_mut))]
    let mut primary_local: Option<LocalHandle> = None;
    for (index, spec) in specs(config).into_iter().enumerate() {
        let backend = match spec {
            BackendSpec::Local(local) => {
                let kms = open_local(local, index)?;
                #[cfg(feature = "kms-local")]
                if index == 0 {
                    primary_local = Some(kms.clone());
                }
                kms as Arc<dyn KeyManagement>
            }
            BackendSpec::Aws(aws) => connect_aws(aws, index).await?,
        };
        backends.push(Arc::new(AuditedKms::new(backend)));
    }
    finish(backends, primary_local)
}

/// Like [`build`], for callers without an async runtime; only the local backend can be built
/// this way. `AppState::from_config` (benchmarks, simple tests) uses it; `praxis serve` and
/// the key commands use [`build`].
pub fn build_sync(config: &KmsConfig) -> anyhow::Result<KmsHandles> {
    let mut backends: Vec<Arc<dyn KeyManagement>> = Vec::new();
    #[cfg_attr(not(feature = "kms-local"), allow(unused_mut))]
    let mut primary_local: Option<LocalHandle> = None;
    for (index, spec) in specs(config).into_iter().enumerate() {
        let backend = match spec {
            BackendSpec::Local(local) => {
                let kms = open_local(local, index)?;
                #[cfg(feature = "kms-local")]
                if index == 0 {
                    primary_local = Some(kms.clone());
                }
                kms as Arc<dyn KeyManagement>
            }
            BackendSpec::Aws(_) => {
                bail!("{}: the AWS KMS client is built asynchronously; use AppState::build", field(index, "aws"))
            }
        };
        backends.push(Arc::new(AuditedKms::new(backend)));
    }
    finish(backends, primary_local)
}

fn finish(backends: Vec<Arc<dyn KeyManagement>>, primary_local: Option<LocalHandle>) -> anyhow::Result<KmsHandles> {
    let mut backends = backends.into_iter();
    let primary = backends.next().context("kms.backend: no backend configured")?;
    let keyring = Keyring::new(primary, backends).map_err(|e| anyhow::anyhow!("kms.previous: {e}"))?;
    Ok(KmsHandles { keyring: Arc::new(keyring), primary_local })
}

fn field(index: usize, backend: &str) -> String {
    if index == 0 {
        format!("kms.backend = {backend:?}")
    } else {
        format!("kms.previous entry {} ({backend})", index - 1)
    }
}

#[cfg(feature = "kms-local")]
fn open_local(config: &LocalKmsConfig, index: usize) -> anyhow::Result<Arc<kms_local::LocalKms>> {
    let local = kms_local::LocalKmsConfig { key_file: config.key_file.clone(), key_id: config.key_id.clone() };
    // The primary creates its key file on first use (development); an older backend must exist.
    let kms = if index == 0 {
        kms_local::LocalKms::open_or_create(&local)
    } else {
        kms_local::LocalKms::open(&local.key_file).and_then(|kms| {
            let found = kms.key_info().key_id;
            if found == local.key_id {
                Ok(kms)
            } else {
                Err(kms_local::LocalKmsError::KeyIdMismatch {
                    path: local.key_file.clone(),
                    found,
                    expected: local.key_id.clone(),
                })
            }
        })
    };
    Ok(Arc::new(kms.with_context(|| format!("{}: cannot open the key file", field(index, "local")))?))
}

#[cfg(not(feature = "kms-local"))]
fn open_local(_: &LocalKmsConfig, index: usize) -> anyhow::Result<Arc<dyn KeyManagement>> {
    bail!("{}: this binary was built without the local KMS adapter (cargo feature kms-local)", field(index, "local"))
}

#[cfg(feature = "kms-aws")]
async fn connect_aws(config: &AwsKmsConfig, index: usize) -> anyhow::Result<Arc<dyn KeyManagement>> {
    let aws = kms_aws::AwsKmsConfig {
        key_id: config.key_id.clone(),
        region: config.region.clone(),
        endpoint: config.endpoint.clone(),
    };
    let kms =
        kms_aws::AwsKms::connect(&aws).await.with_context(|| format!("{}: cannot set up", field(index, "aws")))?;
    Ok(Arc::new(kms))
}

#[cfg(not(feature = "kms-aws"))]
async fn connect_aws(_: &AwsKmsConfig, index: usize) -> anyhow::Result<Arc<dyn KeyManagement>> {
    bail!("{}: this binary was built without the AWS KMS adapter (cargo feature kms-aws)", field(index, "aws"))
}

/// Start-up self-test: wraps a fresh random probe key with the primary, unwraps it through the
/// keyring and compares, then health-checks every backend (an older backend that cannot unwrap
/// makes old rows unreadable). The probe's context uses random ids that name no patient.
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
    let info = keyring.key_info();
    match tokio::time::timeout(SELF_TEST_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(info),
        Ok(Err(error)) => bail!("KMS self-test failed ({} key {}): {error}", info.backend, info.key_id),
        Err(_) => {
            bail!("KMS self-test failed ({} key {}): no answer within {SELF_TEST_TIMEOUT:?}", info.backend, info.key_id)
        }
    }
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
