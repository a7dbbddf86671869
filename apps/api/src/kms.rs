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

use crate::config::{AwsKmsConfig, AzureKmsConfig, BackendSettings, KmsConfig, LocalKmsConfig, VaultKmsConfig};
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

/// Builds the keyring from `[kms]`: the AWS client needs an async runtime (its credential chain
/// is loaded asynchronously; no network call is made here, credentials resolve at first use).
/// No adapter calls its service here: the self-test does.
pub async fn build(config: &KmsConfig) -> anyhow::Result<KmsHandles> {
    let mut backends: Vec<Arc<dyn KeyManagement>> = Vec::new();
    #[cfg_attr(not(feature = "kms-local"), allow(unused_mut))]
    let mut primary_local: Option<LocalHandle> = None;
    for (index, settings) in config.all().into_iter().enumerate() {
        let backend = match settings {
            BackendSettings::Local(local) => {
                let kms = open_local(local, index)?;
                #[cfg(feature = "kms-local")]
                if index == 0 {
                    primary_local = Some(kms.clone());
                }
                kms as Arc<dyn KeyManagement>
            }
            BackendSettings::Aws(aws) => connect_aws(aws, index).await?,
            BackendSettings::Vault(vault) => connect_vault(vault, index)?,
            BackendSettings::Azure(azure) => connect_azure(azure, index, &|name| std::env::var(name).ok())?,
        };
        backends.push(Arc::new(AuditedKms::new(backend)));
    }
    finish(backends, primary_local)
}

/// Like [`build`], for callers without an async runtime; every backend but AWS can be built
/// this way. `AppState::from_config` (benchmarks, simple tests) uses it; `praxis serve` and
/// the key commands use [`build`].
pub fn build_sync(config: &KmsConfig) -> anyhow::Result<KmsHandles> {
    let mut backends: Vec<Arc<dyn KeyManagement>> = Vec::new();
    #[cfg_attr(not(feature = "kms-local"), allow(unused_mut))]
    let mut primary_local: Option<LocalHandle> = None;
    for (index, settings) in config.all().into_iter().enumerate() {
        let backend = match settings {
            BackendSettings::Local(local) => {
                let kms = open_local(local, index)?;
                #[cfg(feature = "kms-local")]
                if index == 0 {
                    primary_local = Some(kms.clone());
                }
                kms as Arc<dyn KeyManagement>
            }
            BackendSettings::Aws(_) => {
                bail!("{}: the AWS KMS client is built asynchronously; use AppState::build", field(index, "aws"))
            }
            BackendSettings::Vault(vault) => connect_vault(vault, index)?,
            BackendSettings::Azure(azure) => connect_azure(azure, index, &|name| std::env::var(name).ok())?,
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

#[cfg(feature = "kms-vault")]
fn connect_vault(config: &VaultKmsConfig, index: usize) -> anyhow::Result<Arc<dyn KeyManagement>> {
    let auth = match (&config.token, &config.approle) {
        (Some(token), None) => kms_vault::VaultAuth::Token(token.clone()),
        (None, Some(approle)) => kms_vault::VaultAuth::AppRole {
            mount: approle.mount.clone(),
            role_id: approle.role_id.clone(),
            secret_id: approle.secret_id.clone().unwrap_or_default(),
        },
        _ => bail!("{}: set exactly one of token and approle", field(index, "vault")),
    };
    let mut vault = kms_vault::VaultKmsConfig::new(config.address.clone(), config.key_name.clone(), auth);
    vault.mount.clone_from(&config.mount);
    vault.namespace.clone_from(&config.namespace);
    if let Some(file) = &config.ca_cert_file {
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("{}: cannot read ca_cert_file {}", field(index, "vault"), file.display()))?;
        vault.ca_cert_pem = Some(pem);
    }
    // The adapter's message names the problem, never the token.
    let kms = kms_vault::VaultKms::new(&vault).map_err(|e| anyhow::anyhow!("{}: {e}", field(index, "vault")))?;
    Ok(Arc::new(kms))
}

#[cfg(not(feature = "kms-vault"))]
fn connect_vault(_: &VaultKmsConfig, index: usize) -> anyhow::Result<Arc<dyn KeyManagement>> {
    bail!("{}: this binary was built without the Vault adapter (cargo feature kms-vault)", field(index, "vault"))
}

/// Entra ID settings the AKS workload identity webhook (and the Azure SDKs' environment
/// credential) put in the environment; used where `kms.azure` leaves them unset.
pub const AZURE_ENV: [&str; 4] =
    ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"];

#[cfg(feature = "kms-azure")]
fn connect_azure(
    config: &AzureKmsConfig,
    index: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Arc<dyn KeyManagement>> {
    let (credential, authority_host) =
        azure_credential(config, env).map_err(|e| anyhow::anyhow!("{}: {e}", field(index, "azure")))?;
    let mut azure = kms_azure::AzureKeyVaultConfig::new(config.vault_url.clone(), config.key_name.clone(), credential);
    azure.key_version.clone_from(&config.key_version);
    if let Some(host) = authority_host {
        azure.authority_host = host;
    }
    let kms = kms_azure::AzureKeyVault::new(&azure).map_err(|e| anyhow::anyhow!("{}: {e}", field(index, "azure")))?;
    Ok(Arc::new(kms))
}

#[cfg(not(feature = "kms-azure"))]
fn connect_azure(
    _: &AzureKmsConfig,
    index: usize,
    _: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Arc<dyn KeyManagement>> {
    bail!(
        "{}: this binary was built without the Azure Key Vault adapter (cargo feature kms-azure)",
        field(index, "azure")
    )
}

/// The credential `kms.azure` selects, with the `AZURE_*` environment filling unset ids, and the
/// authority host when one is configured or in the environment. `env` reads the environment
/// (a parameter, so the chain is testable).
#[cfg(feature = "kms-azure")]
pub fn azure_credential(
    config: &AzureKmsConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(kms_azure::AzureCredential, Option<String>), String> {
    use crate::config::AzureCredentialKind;
    use kms_azure::AzureCredential;
    let from_env = |value: &Option<String>, name: &str| value.clone().or_else(|| env(name).filter(|v| !v.is_empty()));
    let tenant_id = from_env(&config.tenant_id, "AZURE_TENANT_ID");
    let client_id = from_env(&config.client_id, "AZURE_CLIENT_ID");
    let token_file = config
        .token_file
        .clone()
        .or_else(|| env("AZURE_FEDERATED_TOKEN_FILE").filter(|v| !v.is_empty()).map(std::path::PathBuf::from));
    let authority_host = from_env(&config.authority_host, "AZURE_AUTHORITY_HOST");
    let kind = match config.credential {
        AzureCredentialKind::Auto if config.client_secret.is_some() => AzureCredentialKind::ClientSecret,
        AzureCredentialKind::Auto if token_file.is_some() => AzureCredentialKind::WorkloadIdentity,
        AzureCredentialKind::Auto => AzureCredentialKind::ManagedIdentity,
        explicit => explicit,
    };
    let required = |value: Option<String>, what: &str, env_name: &str| {
        value.ok_or_else(|| format!("{what} is required for this credential (kms.azure.{what} or {env_name})"))
    };
    let credential = match kind {
        AzureCredentialKind::ClientSecret => AzureCredential::ClientSecret {
            tenant_id: required(tenant_id, "tenant_id", "AZURE_TENANT_ID")?,
            client_id: required(client_id, "client_id", "AZURE_CLIENT_ID")?,
            client_secret: config.client_secret.clone().ok_or("client_secret is required for this credential")?,
        },
        AzureCredentialKind::WorkloadIdentity => AzureCredential::WorkloadIdentity {
            tenant_id: required(tenant_id, "tenant_id", "AZURE_TENANT_ID")?,
            client_id: required(client_id, "client_id", "AZURE_CLIENT_ID")?,
            token_file: token_file.ok_or(
                "token_file is required for workload identity (kms.azure.token_file or AZURE_FEDERATED_TOKEN_FILE)",
            )?,
        },
        AzureCredentialKind::ManagedIdentity | AzureCredentialKind::Auto => {
            AzureCredential::ManagedIdentity { client_id }
        }
    };
    Ok((credential, authority_host))
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

#[cfg(all(test, feature = "kms-azure"))]
mod tests {
    use super::*;
    use crate::config::AzureCredentialKind;
    use kms_azure::AzureCredential;
    use std::collections::HashMap;

    fn resolve(config: &AzureKmsConfig, env: &[(&str, &str)]) -> Result<(AzureCredential, Option<String>), String> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        azure_credential(config, &|name| env.get(name).cloned())
    }

    #[test]
    fn the_azure_credential_chain_picks_the_first_that_applies() {
        let ids = [("AZURE_TENANT_ID", "tenant-a"), ("AZURE_CLIENT_ID", "client-a")];
        // Nothing configured, no AKS environment: the managed identity.
        let (credential, authority) = resolve(&AzureKmsConfig::default(), &[]).unwrap();
        assert_eq!(credential, AzureCredential::ManagedIdentity { client_id: None });
        assert_eq!(authority, None);
        // AKS workload identity: everything from the environment the webhook sets.
        let aks = [
            ids[0],
            ids[1],
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_AUTHORITY_HOST", "https://login.example"),
        ];
        let (credential, authority) = resolve(&AzureKmsConfig::default(), &aks).unwrap();
        assert_eq!(
            credential,
            AzureCredential::WorkloadIdentity {
                tenant_id: "tenant-a".into(),
                client_id: "client-a".into(),
                token_file: "/var/run/token".into()
            }
        );
        assert_eq!(authority.as_deref(), Some("https://login.example"));
        // A configured client secret wins; configured ids win over the environment.
        let secret = kernel::Secret::new(format!("dummy-{}", uuid::Uuid::new_v4().simple()));
        let config = AzureKmsConfig {
            client_secret: Some(secret.clone()),
            client_id: Some("client-b".into()),
            ..AzureKmsConfig::default()
        };
        let (credential, _) = resolve(&config, &aks).unwrap();
        assert_eq!(
            credential,
            AzureCredential::ClientSecret {
                tenant_id: "tenant-a".into(),
                client_id: "client-b".into(),
                client_secret: secret
            }
        );
        // Named explicitly but incomplete: the error names the setting and its variable.
        let config = AzureKmsConfig { credential: AzureCredentialKind::WorkloadIdentity, ..AzureKmsConfig::default() };
        let error = resolve(&config, &[ids[1]]).unwrap_err();
        assert!(error.contains("tenant_id") && error.contains("AZURE_TENANT_ID"), "{error}");
        let error = resolve(&config, &ids).unwrap_err();
        assert!(error.contains("AZURE_FEDERATED_TOKEN_FILE"), "{error}");
    }
}
