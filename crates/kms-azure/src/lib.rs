//! The Azure Key Vault adapter: `KeyManagement` on one RSA key of a Key Vault (or Managed HSM).
//!
//! - `wrap` = `POST {vault}/keys/{name}[/{version}]/wrapkey?api-version=7.4` with
//!   `{"alg": "RSA-OAEP-256", "value": base64url(DEK)}`; the answer's `kid` names the key version
//!   that wrapped it.
//! - `unwrap` = `POST {vault}/keys/{name}/{version}/unwrapkey?api-version=7.4`, always with the
//!   version recorded at wrap time, so keys wrapped before a rotation still unwrap.
//! - `generate_data_key` is the port's default: a DEK from the local CSPRNG, then `wrap` (Key
//!   Vault has no data-key generation for RSA keys). `rewrap` is the port's default too (unwrap,
//!   then wrap under the current version): Key Vault has no re-encrypt, so during a rotation the
//!   plaintext DEK passes through this process, as it does on every read anyway.
//! - `health_check` = `GET {vault}/keys/{name}[/{version}]?api-version=7.4`: the key must be
//!   enabled, RSA, and allow `wrapKey` and `unwrapKey`.
//!
//! # The key context is not bound by Azure
//!
//! Key Vault's wrapKey takes no context and does not expose RSA-OAEP's label, so the wrapped DEK
//! is *not* bound to the `KeyContext`: a wrapped DEK copied to another patient's row would
//! unwrap. That is a deliberate, documented difference from the AWS and Vault adapters (the
//! port's contract asks for the binding; this adapter cannot give it without inventing a
//! format of its own). What still ties data to its owner:
//! - every field ciphertext's AAD binds it to tenant, table, column and row, so a field copied
//!   elsewhere fails to decrypt whatever DEK is used;
//! - the wrapped DEK lives in the row keyed by `(tenant_id, patient_id, generation)` under
//!   row-level security, and the DEK cache is keyed the same way;
//! - `unwrap` accepts only DEKs wrapped by the configured key.
//!
//! The `KeyContext` is therefore accepted and ignored. Deployments that need the KMS itself to
//! enforce the binding should use AWS KMS or Vault.
//!
//! # Key ids and versions
//!
//! `WrappedDataKey::kek_id` and `key_info().key_id` are the key's id without version,
//! `https://{vault}.vault.azure.net/keys/{name}` (or the Managed HSM's), built from the configured `vault_url`.
//! `kek_version` is the version segment of the `kid` Key Vault returns; `ciphertext` is the raw
//! RSA-OAEP-256 output (256 bytes for RSA-2048, 384 for RSA-3072). With `key_version` unset,
//! wraps use the key's current version and a rotation in Azure takes effect at once;
//! `key_info().version` is the version last seen (empty before the first call). Pin
//! `key_version` to control when new DEKs move to a new version.
//!
//! # Token audience: the vault's challenge
//!
//! Key Vault, Managed HSM and the sovereign clouds each want tokens for their own resource
//! (`https://vault.azure.net`, `https://managedhsm.azure.net`, `https://vault.azure.cn`,
//! `https://vault.usgovcloudapi.net`, ...). The adapter learns it as Azure's SDKs do: its first
//! request goes without a token and without a body, the vault answers 401 with `WWW-Authenticate:
//! Bearer authorization="...", resource="..."` (or `scope="..."`), and the resource is believed
//! only if the vault's host lies under the resource's host (`praxis.managedhsm.azure.net` under
//! `managedhsm.azure.net`): a `vault_url` pointing at a hostile server cannot obtain a token for
//! another Azure API. Every later 401 re-reads the challenge by the same rule. The tenant named
//! in the challenge is not used: the configured one is. `AzureKeyVaultConfig::resource` replaces
//! the challenge for a vault reached under a name of its own (a private DNS alias), where the
//! rule cannot hold; the operator then names the audience.
//!
//! # Credentials
//!
//! A bearer token for `{resource}/.default` from Microsoft Entra ID, cached until five minutes
//! before it expires and fetched again after a 401 (see the `token` module for the requests):
//! - `AzureCredential::WorkloadIdentity`: AKS workload identity (a federated token file, the
//!   recommended choice on Kubernetes: no secret in the configuration);
//! - `AzureCredential::ManagedIdentity`: the platform's managed identity, from the instance
//!   metadata service (VMs, scale sets), the App Service endpoint (App Service, Functions,
//!   Container Apps) or the Azure Arc agent (Arc-enabled servers): `ManagedIdentitySource`;
//! - `AzureCredential::ClientSecret`: a service principal's client secret.
//!
//! # TLS
//!
//! Mozilla's roots, plus `AzureKeyVaultConfig::ca_cert_pem` for the vault's endpoint only (a
//! private endpoint behind TLS inspection). Entra ID and the managed identity endpoints do not
//! trust that CA: they receive the credentials, and the public Entra ID endpoints have public
//! certificates.
//!
//! # Least privilege
//!
//! Use the Azure RBAC permission model on the vault and assign the application's identity the
//! built-in role **Key Vault Crypto Service Encryption User** scoped to the one key; its data
//! actions are exactly `Microsoft.KeyVault/vaults/keys/read`, `.../keys/wrap/action` and
//! `.../keys/unwrap/action`. ("Key Vault Crypto User" also works but adds encrypt, decrypt, sign,
//! verify and more.)
//!
//! ```text
//! az keyvault key create --vault-name praxis-kv --name praxis --kty RSA-HSM --size 3072 \
//!     --ops wrapKey unwrapKey
//! az role assignment create --assignee <app-object-id> \
//!     --role "Key Vault Crypto Service Encryption User" \
//!     --scope "$(az keyvault show -n praxis-kv --query id -o tsv)/keys/praxis"
//! ```
//!
//! Key creation, rotation and deletion belong to an administrator ("Key Vault Crypto Officer").
//! Enable soft delete and purge protection on the vault: a purged key shreds every DEK.
//!
//! # Settings
//!
//! `AzureSettings` is what the application's configuration holds for this adapter (serde, unknown
//! keys refused, secrets masked when printed). `AzureSettings::problems` lists every problem of
//! them at once, each named where it sits (`crypto::SettingsPlace`); `AzureKeyVault::new` refuses
//! an `AzureKeyVaultConfig` by the same rules.
//!
//! # Retries and timeouts (bounded, never a panic)
//!
//! Network errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and jitter,
//! honouring `Retry-After` up to `RetryPolicy::max_retry_after` (a longer wait ends the
//! operation at once); `RetryPolicy::default()`: 3 attempts, 100 ms then 200 ms (cap 400 ms), 5 s
//! per attempt, 15 s in all. Then the error is `KmsError::Unavailable`. 401/403 →
//! `AccessDenied` (a disabled or expired key → `KeyNotFound`), 404 → `KeyNotFound`, 400 on
//! unwrap (`BadParameter`: decryption failed) → `InvalidCiphertext`.
//!
//! # Why not the Azure SDK
//!
//! `azure_security_keyvault_keys` 1.x with `azure_identity` builds without OpenSSL, but its TLS
//! comes from reqwest's `rustls` feature, which brings aws-lc-rs, a second C crypto library next
//! to ring (the same reason `kms-aws` configures its SDK for ring); avoiding it would mean a
//! custom transport. The two crates add 353 lines of `cargo tree` for two REST calls and a
//! token request. This adapter calls the REST API with reqwest (already in the workspace) on
//! rustls with a ring provider configured for this client only.
//!
//! # Limits
//!
//! The plaintext DEK passes through buffers this crate does not own (reqwest's bodies,
//! serde_json's parse) and which are not zeroized; the copies this crate owns are.

mod challenge;
mod error;
mod settings;
mod token;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use crypto::{DataKey, KekInfo, KeyContext, KeyManagement, KmsError, WrappedDataKey};
use kernel::Secret;
use kms_http::Attempt;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

pub use kms_http::RetryPolicy;
pub use settings::{AzureCredentialKind, AzureSettings, ManagedIdentitySourceKind};
pub use token::ARC_KEY_FILE_MAX_BYTES;

/// `KekInfo::backend` of this adapter.
pub const BACKEND: &str = "azure-key-vault";
/// The Key Vault REST API version used.
pub const API_VERSION: &str = "7.4";
/// The wrapping algorithm.
pub const ALGORITHM: &str = "RSA-OAEP-256";
/// Entra ID's public-cloud authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service's token endpoint (managed identity on VMs).
pub const IMDS_TOKEN_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// Where the Azure Arc agent writes its key files on Linux (the only place a key file named by
/// the Arc endpoint is read from).
pub const ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";
/// Tokens are fetched again this long before they expire.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How the adapter gets a token for Key Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureCredential {
    /// A service principal's client secret (client credentials grant).
    ClientSecret { tenant_id: String, client_id: String, client_secret: Secret<String> },
    /// Workload identity federation: the federated token in `token_file` (AKS mounts it and
    /// sets `AZURE_FEDERATED_TOKEN_FILE`) is exchanged as a client assertion. Read at every
    /// token fetch, since the platform rotates it.
    WorkloadIdentity { tenant_id: String, client_id: String, token_file: PathBuf },
    /// A managed identity from `source`; `client_id` picks a user-assigned identity (unset: the
    /// system-assigned one).
    ManagedIdentity { client_id: Option<String>, source: ManagedIdentitySource },
}

/// Where a managed identity's token comes from: each Azure hosting platform has its own
/// endpoint (see the `token` module for the requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedIdentitySource {
    /// The instance metadata service of VMs, VM scale sets and AKS nodes
    /// (`IMDS_TOKEN_ENDPOINT`).
    Imds { endpoint: String },
    /// App Service, Azure Functions and Container Apps: `IDENTITY_ENDPOINT`, authenticated
    /// with the `IDENTITY_HEADER` secret the platform sets.
    AppService { endpoint: String, header: Secret<String> },
    /// An Azure Arc-enabled server: `IDENTITY_ENDPOINT`, and the key file the agent writes in
    /// `key_dir` (`ARC_KEY_DIR` on Linux) to prove the caller runs on the machine.
    AzureArc { endpoint: String, key_dir: PathBuf },
}

impl AzureCredential {
    /// What the start-up log says about the credential: its kind, ids and endpoint, never a
    /// secret.
    pub fn describe(&self) -> String {
        match self {
            Self::ClientSecret { tenant_id, client_id, .. } => {
                format!("service principal {client_id} (client secret) in tenant {tenant_id}")
            }
            Self::WorkloadIdentity { tenant_id, client_id, token_file } => format!(
                "workload identity {client_id} in tenant {tenant_id} (federated token file {})",
                token_file.display()
            ),
            Self::ManagedIdentity { client_id, source } => {
                let identity = client_id.as_ref().map_or_else(
                    || "system-assigned managed identity".to_owned(),
                    |id| format!("user-assigned managed identity {id}"),
                );
                let source = match source {
                    ManagedIdentitySource::Imds { endpoint } => format!("instance metadata service {endpoint}"),
                    ManagedIdentitySource::AppService { endpoint, .. } => {
                        format!("App Service / Functions / Container Apps endpoint {endpoint}")
                    }
                    ManagedIdentitySource::AzureArc { endpoint, key_dir } => {
                        format!("Azure Arc endpoint {endpoint}, key files in {}", key_dir.display())
                    }
                };
                format!("{identity} from the {source}")
            }
        }
    }
}

/// Which key to use, where, and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureKeyVaultConfig {
    /// The vault's URL, e.g. `https://praxis-kv.vault.azure.net` (or a Managed HSM's,
    /// `https://praxis-hsm.managedhsm.azure.net`). `http://` is accepted here, for tests;
    /// [`AzureSettings::problems`] refuses it in production.
    pub vault_url: String,
    /// The key's name. An RSA key (2048 bits or more) with `wrapKey` and `unwrapKey` allowed.
    pub key_name: String,
    /// Wrap under this version rather than the key's current one.
    pub key_version: Option<String>,
    pub credential: AzureCredential,
    /// The Entra ID authority (default `DEFAULT_AUTHORITY_HOST`; sovereign clouds differ).
    pub authority_host: String,
    /// The token's audience, e.g. `https://vault.azure.net`. Unset (the normal case): learnt
    /// from the vault's 401 challenge and believed only for a vault whose host lies under it
    /// (see the crate documentation). Set it when the vault is reached under a name of your own.
    pub resource: Option<String>,
    /// A private CA (PEM) trusted for the vault's endpoint in addition to the public roots.
    pub ca_cert_pem: Option<String>,
    pub retry: RetryPolicy,
}

impl AzureKeyVaultConfig {
    /// A configuration with the public-cloud authority, the key's current version, the
    /// resource from the vault's challenge, the public roots and the default retry policy.
    pub fn new(vault_url: impl Into<String>, key_name: impl Into<String>, credential: AzureCredential) -> Self {
        Self {
            vault_url: vault_url.into(),
            key_name: key_name.into(),
            key_version: None,
            credential,
            authority_host: DEFAULT_AUTHORITY_HOST.to_owned(),
            resource: None,
            ca_cert_pem: None,
            retry: RetryPolicy::default(),
        }
    }

    fn vault_base(&self) -> String {
        self.vault_url.trim().trim_end_matches('/').to_owned()
    }

    fn key_id(&self) -> String {
        format!("{}/keys/{}", self.vault_base(), self.key_name)
    }
}

/// Key names: letters, digits, '-'; versions (and ids): letters and digits (and '-').
fn is_name(s: &str, dashes: bool) -> bool {
    !s.is_empty() && s.len() <= 127 && s.bytes().all(|b| b.is_ascii_alphanumeric() || (dashes && b == b'-'))
}

struct CachedToken {
    /// The resource it was issued for.
    resource: String,
    token: Secret<String>,
    refresh_at: Instant,
}

/// `KeyManagement` on one Azure Key Vault key.
pub struct AzureKeyVault {
    /// For the vault: the public roots and `ca_cert_pem`.
    vault_http: reqwest::Client,
    /// For Entra ID and the managed identity endpoints: the public roots only (a private CA
    /// for the vault's endpoint is not trusted with the credentials).
    token_http: reqwest::Client,
    config: AzureKeyVaultConfig,
    base: String,
    /// The host of `vault_url`, which a challenge's resource must be a parent of.
    vault_host: String,
    key_id: String,
    /// The token audience: configured, or learnt from the vault's challenge.
    resource: RwLock<Option<String>>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    latest_version: RwLock<String>,
}

impl fmt::Debug for AzureKeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVault").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyOperationResult {
    kid: String,
    value: String,
}

#[derive(Deserialize)]
struct KeyBundle {
    key: JsonWebKey,
    #[serde(default)]
    attributes: Option<KeyAttributes>,
}

#[derive(Deserialize)]
struct JsonWebKey {
    kid: String,
    kty: String,
    #[serde(default)]
    key_ops: Vec<String>,
}

#[derive(Deserialize)]
struct KeyAttributes {
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(serde::Serialize)]
struct KeyOperation<'a> {
    alg: &'a str,
    value: &'a str,
}

impl AzureKeyVault {
    /// An adapter for `config`. Makes no network call; call `health_check` at start-up to fail
    /// fast.
    pub fn new(config: &AzureKeyVaultConfig) -> Result<Self, KmsError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(KmsError::Other(problems.join("; ")));
        }
        let latest = config.key_version.clone().unwrap_or_default();
        let vault_host = reqwest::Url::parse(config.vault_base().as_str())
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .ok_or_else(|| KmsError::Other(format!("vault_url {:?} names no host", config.vault_url)))?;
        Ok(Self {
            vault_http: kms_http::client(&config.retry, config.ca_cert_pem.as_deref())?,
            token_http: kms_http::client(&config.retry, None)?,
            base: config.vault_base(),
            vault_host,
            key_id: config.key_id(),
            resource: RwLock::new(config.resource.as_ref().map(|r| r.trim().trim_end_matches('/').to_owned())),
            config: config.clone(),
            token: tokio::sync::Mutex::new(None),
            latest_version: RwLock::new(latest),
        })
    }

    /// A bearer token for `resource`, from the cache or fetched now.
    async fn bearer(&self, resource: &str) -> Result<Secret<String>, token::Failure> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && token.resource == resource
            && Instant::now() < token.refresh_at
        {
            return Ok(token.token.clone());
        }
        let fetched = token::fetch(&self.token_http, &self.config, resource).await?;
        let refresh_at = Instant::now() + fetched.lifetime.saturating_sub(TOKEN_REFRESH_MARGIN);
        *cached = Some(CachedToken { resource: resource.to_owned(), token: fetched.token.clone(), refresh_at });
        Ok(fetched.token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    fn known_resource(&self) -> Option<String> {
        match self.resource.read() {
            Ok(resource) => resource.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Believes the resource of a vault's `WWW-Authenticate` challenge if the vault's host lies
    /// under it, and uses it from now on.
    fn learn_resource(&self, challenge: &str) -> Result<String, KmsError> {
        let resource = challenge::challenge_resource(challenge).ok_or_else(|| {
            KmsError::Other(format!(
                "the vault's 401 carries no Bearer challenge naming a resource: {}",
                kms_http::truncate(challenge, 200)
            ))
        })?;
        challenge::verify_resource(&self.vault_host, &resource).map_err(KmsError::Other)?;
        if let Ok(mut known) = self.resource.write() {
            *known = Some(resource.clone());
        }
        Ok(resource)
    }

    /// The resource the vault asks tokens for: `request` sent without a token (and without a
    /// body: nothing is disclosed before the vault has said who it is), answered with a 401
    /// challenge, as Azure's SDKs do.
    async fn discover_resource(&self, request: reqwest::RequestBuilder) -> Result<String, token::Failure> {
        let response = request.send().await.map_err(|e| (kms_http::transport_error("challenge", &e), None))?;
        let status = response.status().as_u16();
        let retry_after = kms_http::retry_after(response.headers());
        let challenge = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.bytes().await.map_err(|e| (kms_http::transport_error("challenge", &e), None))?;
        match (status, challenge) {
            (401, Some(challenge)) => self.learn_resource(&challenge).map_err(|e| (e, None)),
            (401, None) => {
                Err((KmsError::Other("challenge: the vault's 401 has no WWW-Authenticate".to_owned()), None))
            }
            _ if (200..300).contains(&status) => Err((
                KmsError::Other(format!("challenge: the vault answered HTTP {status} to a request without a token")),
                None,
            )),
            _ => Err((error::map_status("challenge", status, &body, false), retry_after)),
        }
    }

    /// One Key Vault call with retries; the 2xx body, or the mapped error.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        unwrapping: bool,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let url = format!("{}/{path}?api-version={API_VERSION}", self.base);
        let (url, method) = (&url, &method);
        kms_http::run(&self.config.retry, operation, move || async move {
            let resource = match self.known_resource() {
                Some(resource) => resource,
                None => match self.discover_resource(self.vault_http.request(method.clone(), url)).await {
                    Ok(resource) => resource,
                    Err((error, retry_after)) => return Attempt::fail(error, retry_after),
                },
            };
            let token = match self.bearer(&resource).await {
                Ok(token) => token,
                Err((error, retry_after)) => return Attempt::fail(error, retry_after),
            };
            let mut authorization = match HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())) {
                Ok(value) => value,
                Err(_) => return Attempt::Done(Err(KmsError::Other("access token is not a header value".to_owned()))),
            };
            authorization.set_sensitive(true);
            let mut request = self.vault_http.request(method.clone(), url).header(AUTHORIZATION, authorization);
            if let Some(body) = body {
                request = request.header(CONTENT_TYPE, "application/json").body(body.to_vec());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return Attempt::fail(kms_http::transport_error(operation, &e), None),
            };
            let status = response.status().as_u16();
            let retry_after = kms_http::retry_after(response.headers());
            let challenge = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let bytes = match response.bytes().await {
                Ok(bytes) => Zeroizing::new(bytes.to_vec()),
                Err(e) => return Attempt::fail(kms_http::transport_error(operation, &e), None),
            };
            if (200..300).contains(&status) {
                return Attempt::Done(Ok(bytes));
            }
            let error = error::map_status(operation, status, &bytes, unwrapping);
            if status == 401 {
                // The token expired or was revoked early, or the vault now names another
                // resource (checked like the first time, unless the resource is configured):
                // fetch a new token and retry once.
                if self.config.resource.is_none()
                    && let Some(challenge) = challenge
                    && let Err(refused) = self.learn_resource(&challenge)
                {
                    return Attempt::Done(Err(refused));
                }
                self.forget_token().await;
                return Attempt::RetryNow(error);
            }
            Attempt::fail(error, retry_after)
        })
        .await
    }

    /// The version segment of a `kid` of our key.
    fn version_of(&self, kid: &str, operation: &str) -> Result<String, KmsError> {
        let version = kid
            .get(..self.key_id.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(&self.key_id))
            .and_then(|_| kid[self.key_id.len()..].strip_prefix('/'))
            .filter(|v| is_name(v, false))
            .ok_or_else(|| {
                KmsError::Other(format!("{operation}: answer names another key: {}", kms_http::truncate(kid, 200)))
            })?;
        if let Ok(mut latest) = self.latest_version.write()
            && self.config.key_version.is_none()
        {
            version.clone_into(&mut latest);
        }
        Ok(version.to_owned())
    }

    fn key_path(&self, version: Option<&str>) -> String {
        match version {
            Some(version) => format!("keys/{}/{version}", self.config.key_name),
            None => format!("keys/{}", self.config.key_name),
        }
    }
}

#[async_trait]
impl KeyManagement for AzureKeyVault {
    async fn wrap(&self, key: &DataKey, _ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        let value = Zeroizing::new(B64URL.encode(key.expose_secret()));
        let body = Zeroizing::new(
            serde_json::to_vec(&KeyOperation { alg: ALGORITHM, value: &value })
                .map_err(|e| KmsError::Other(format!("wrapKey: request: {e}")))?,
        );
        let path = format!("{}/wrapkey", self.key_path(self.config.key_version.as_deref()));
        let answer = self.call("wrapKey", Method::POST, &path, Some(&body), false).await?;
        let result: KeyOperationResult = parse("wrapKey", &answer)?;
        let kek_version = self.version_of(&result.kid, "wrapKey")?;
        let ciphertext = B64URL
            .decode(result.value.trim_end_matches('='))
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| KmsError::Other("wrapKey: answer value is not base64url".to_owned()))?;
        Ok(WrappedDataKey { kek_id: self.key_id.clone(), kek_version, ciphertext })
    }

    async fn unwrap(&self, wrapped: &WrappedDataKey, _ctx: &KeyContext) -> Result<DataKey, KmsError> {
        if wrapped.kek_id != self.key_id {
            return Err(KmsError::KeyNotFound(format!("{} is not the Azure key {}", wrapped.kek_id, self.key_id)));
        }
        if !is_name(&wrapped.kek_version, false) || wrapped.ciphertext.is_empty() {
            return Err(KmsError::InvalidCiphertext);
        }
        let value = B64URL.encode(&wrapped.ciphertext);
        let body = serde_json::to_vec(&KeyOperation { alg: ALGORITHM, value: &value })
            .map_err(|e| KmsError::Other(format!("unwrapKey: request: {e}")))?;
        let path = format!("{}/unwrapkey", self.key_path(Some(&wrapped.kek_version)));
        let answer = self.call("unwrapKey", Method::POST, &path, Some(&body), true).await?;
        let result: KeyOperationResult = parse("unwrapKey", &answer)?;
        let value = Zeroizing::new(result.value);
        let plaintext =
            Zeroizing::new(B64URL.decode(value.trim_end_matches('=')).map_err(|_| KmsError::InvalidCiphertext)?);
        // Not 32 bytes: something else was wrapped under our key.
        DataKey::from_bytes(&plaintext).map_err(|_| KmsError::InvalidCiphertext)
    }

    fn key_info(&self) -> KekInfo {
        let version = match self.latest_version.read() {
            Ok(version) => version.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        KekInfo { backend: BACKEND, key_id: self.key_id.clone(), version }
    }

    async fn health_check(&self) -> Result<(), KmsError> {
        let path = self.key_path(self.config.key_version.as_deref());
        let answer = self.call("getKey", Method::GET, &path, None, false).await?;
        let bundle: KeyBundle = parse("getKey", &answer)?;
        self.version_of(&bundle.key.kid, "getKey")?;
        if bundle.attributes.and_then(|a| a.enabled) == Some(false) {
            return Err(KmsError::KeyNotFound(format!("{}: key is disabled", self.key_id)));
        }
        if !matches!(bundle.key.kty.as_str(), "RSA" | "RSA-HSM") {
            return Err(KmsError::Other(format!(
                "{}: key type is {}, not RSA",
                self.key_id,
                kms_http::truncate(&bundle.key.kty, 20)
            )));
        }
        for op in ["wrapKey", "unwrapKey"] {
            if !bundle.key.key_ops.iter().any(|o| o == op) {
                return Err(KmsError::Other(format!("{}: key does not allow {op}", self.key_id)));
            }
        }
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, KmsError> {
    serde_json::from_slice(body).map_err(|e| KmsError::Other(format!("{operation}: unexpected answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AzureKeyVaultConfig {
        AzureKeyVaultConfig::new(
            "https://praxis-kv.vault.azure.net/",
            "praxis",
            AzureCredential::ClientSecret {
                tenant_id: "00000000-0000-0000-0000-000000000000".into(),
                client_id: "11111111-1111-1111-1111-111111111111".into(),
                client_secret: Secret::new("test-secret".into()),
            },
        )
    }

    #[test]
    fn a_good_configuration_has_no_problems() {
        assert!(config().problems().is_empty(), "{:?}", config().problems());
        assert_eq!(config().key_id(), "https://praxis-kv.vault.azure.net/keys/praxis");
        let mut mi = config();
        mi.credential = AzureCredential::ManagedIdentity {
            client_id: None,
            source: ManagedIdentitySource::Imds { endpoint: IMDS_TOKEN_ENDPOINT.into() },
        };
        mi.key_version = Some("0123456789abcdef0123456789abcdef".into());
        assert!(mi.problems().is_empty());
        let printed = format!("{:?}", config());
        assert!(!printed.contains("test-secret"), "{printed}");
    }

    #[test]
    fn every_problem_is_reported() {
        let config = AzureKeyVaultConfig {
            vault_url: "praxis-kv".into(),
            key_name: "a/b".into(),
            key_version: Some("../x".into()),
            credential: AzureCredential::ClientSecret {
                tenant_id: "a/b".into(),
                client_id: String::new(),
                client_secret: Secret::new(String::new()),
            },
            authority_host: "login".into(),
            resource: Some("https://vault.azure.net/keys".into()),
            ca_cert_pem: Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into()),
            retry: RetryPolicy { max_attempts: 0, ..Default::default() },
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 10, "{problems:#?}");
        assert!(problems.iter().any(|p| p.starts_with("resource: must be a service URL")), "{problems:#?}");
        assert!(problems.iter().any(|p| p.starts_with("ca_cert_pem: holds no PEM certificate")), "{problems:#?}");
        assert!(AzureKeyVault::new(&config).is_err());
    }

    #[test]
    fn the_credential_is_described_without_its_secret() {
        let described = config().credential.describe();
        assert!(described.contains("11111111-1111-1111-1111-111111111111"), "{described}");
        assert!(!described.contains("test-secret"), "{described}");
        let app_service = AzureCredential::ManagedIdentity {
            client_id: None,
            source: ManagedIdentitySource::AppService {
                endpoint: "http://localhost:42356/msi/token".into(),
                header: Secret::new("test-identity-header".into()),
            },
        };
        assert_eq!(
            app_service.describe(),
            "system-assigned managed identity from the App Service / Functions / Container Apps endpoint \
             http://localhost:42356/msi/token"
        );
    }

    #[test]
    fn versions_come_from_our_kid_only() {
        let kms = AzureKeyVault::new(&config()).unwrap();
        assert_eq!(kms.version_of("https://praxis-kv.vault.azure.net/keys/praxis/abc123", "x").unwrap(), "abc123");
        assert_eq!(kms.key_info().version, "abc123");
        assert_eq!(kms.version_of("https://PRAXIS-KV.vault.azure.net/keys/praxis/Abc1", "x").unwrap(), "Abc1");
        for bad in [
            "https://praxis-kv.vault.azure.net/keys/praxis",
            "https://praxis-kv.vault.azure.net/keys/praxis/",
            "https://praxis-kv.vault.azure.net/keys/praxis2/abc",
            "https://evil.vault.azure.net/keys/praxis/abc",
            "https://praxis-kv.vault.azure.net/keys/praxis/a/b",
            "",
        ] {
            assert!(kms.version_of(bad, "x").is_err(), "{bad}");
        }
    }
}
