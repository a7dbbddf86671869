//! The HashiCorp Vault adapter: `KeyManagement` on one key of the transit secrets engine.
//!
//! - `generate_data_key` = `POST /v1/{mount}/datakey/plaintext/{key}` (`bits=256`): Vault makes
//!   the DEK and returns it both in plaintext and wrapped; no local randomness is involved.
//! - `wrap` = `POST /v1/{mount}/encrypt/{key}`, `unwrap` = `POST /v1/{mount}/decrypt/{key}`,
//!   `rewrap` = `POST /v1/{mount}/rewrap/{key}` (to the latest key version), so during a KEK
//!   rotation the plaintext DEK never leaves Vault.
//! - Every call carries `context` = base64(`KeyContext::canonical_bytes()`). With a *derived*
//!   key, transit derives a per-context key from it, so a wrapped DEK copied to another patient
//!   fails to decrypt (`cipher: message authentication failed` → `InvalidCiphertext`).
//! - `health_check` = `GET /v1/{mount}/keys/{key}`: the key must exist, be derived and support
//!   encryption and decryption; its `latest_version` becomes `key_info().version`.
//!
//! # The key must be derived
//!
//! Transit silently **ignores** `context` on a key created without `derived=true`: every DEK
//! would then decrypt under any context, and the binding of DEKs to tenant and patient would be
//! gone without an error anywhere. So before its first operation (and in every `health_check`)
//! the adapter reads the key and refuses to work (`KmsError::Other`) unless `derived` is true.
//! Create the key once, as an administrator:
//!
//! ```text
//! vault secrets enable transit            # once per cluster (or: -path=<mount> transit)
//! vault write transit/keys/praxis type=aes256-gcm96 derived=true
//! vault write transit/keys/praxis/config deletion_allowed=false auto_rotate_period=8760h
//! ```
//!
//! `derived` cannot be changed after creation. Do not set `convergent_encryption` and do not
//! make the key `exportable`.
//!
//! # Key ids and versions
//!
//! `WrappedDataKey::kek_id` and `key_info().key_id` are `"{mount}/{key_name}"` (e.g.
//! `transit/praxis`). `ciphertext` is Vault's own ciphertext string as UTF-8 bytes
//! (`vault:v3:...`) and `kek_version` is its version number (`"3"`); `unwrap` refuses a wrapped
//! key whose label disagrees with its prefix. After `vault write -f transit/keys/praxis/rotate`
//! new DEKs are wrapped under the new version, old ones still unwrap, and `rewrap` moves them
//! forward; `key_info().version` is the latest version this process has seen (from the key
//! read, or from any answer), empty before the first call.
//!
//! # Authentication
//!
//! `VaultAuth::Token` sends a token given in the configuration (e.g. from Vault Agent's sink or
//! an orchestrator secret); the token's renewal is the deployment's job. `VaultAuth::AppRole`
//! logs in with `POST /v1/auth/{mount}/login` at first use, caches the token until 80% of its
//! lease has passed, and logs in again once when Vault answers 403 (an expired or revoked token
//! looks exactly like a missing permission). `namespace` (Vault Enterprise / HCP) is sent as
//! `X-Vault-Namespace` on every request, the login included.
//!
//! # Least-privilege Vault policy
//!
//! The application's token needs exactly these paths (with `mount = "transit"` and
//! `key_name = "praxis"`). `update` is what Vault requires for the POST endpoints; never grant
//! `create` on `encrypt`, which would let a typo in the key name create a new key on the fly.
//! Key creation, rotation, configuration and deletion (`transit/keys/praxis/*`) belong to an
//! administrator policy.
//!
//! ```hcl
//! path "transit/datakey/plaintext/praxis" { capabilities = ["update"] }
//! path "transit/encrypt/praxis"           { capabilities = ["update"] }
//! path "transit/decrypt/praxis"           { capabilities = ["update"] }
//! path "transit/rewrap/praxis"            { capabilities = ["update"] }
//! path "transit/keys/praxis"              { capabilities = ["read"] }
//! ```
//!
//! With AppRole, bind that policy to the role (`vault write auth/approle/role/praxis
//! token_policies=praxis-kms token_ttl=1h token_max_ttl=4h secret_id_ttl=...`); the login path
//! needs no policy.
//!
//! # Settings
//!
//! `VaultSettings` is what the application's configuration holds for this adapter (serde, unknown
//! keys refused, secrets masked when printed). `VaultSettings::problems` lists every problem of
//! them at once, each named where it sits (`crypto::SettingsPlace`); `VaultKms::new` refuses
//! a `VaultKmsConfig` by the same rules.
//!
//! # Retries and timeouts (bounded, never a panic)
//!
//! Connection errors, timeouts, 429 (rate limit quotas, `Retry-After` honoured up to a cap),
//! 412 and 5xx (sealed, standby, overloaded) are retried with exponential backoff and jitter,
//! `RetryPolicy::default()`: 3 attempts, 100 ms then 200 ms (cap 400 ms), 5 s per attempt and
//! 15 s for the whole operation. After that the error is `KmsError::Unavailable`, which the API
//! turns into a 503 and the DEK cache does not cache. 403 → `AccessDenied`; 404 and 400
//! "encryption key not found" → `KeyNotFound`; 400 "disallowed by policy (too old)"
//! (`min_decryption_version` above the wrapping version) → `KeyVersionRetired`. The API answers
//! these three with 503 too: the operator must act, the client retries later. 400 "cipher: message authentication failed" or
//! any other ciphertext complaint → `InvalidCiphertext`. Redirects (a standby node pointing at
//! the active one) are not followed, because they would carry the token elsewhere: point
//! `address` at the active node's load balancer.
//!
//! # Why reqwest and not `vaultrs`
//!
//! `vaultrs` 0.8 builds on rustls without OpenSSL, but its `rustls` feature brings aws-lc-rs,
//! a second C crypto library next to ring (the same reason `kms-aws` configures its SDK for
//! ring), and its `rustls-no-provider` feature needs a process-wide rustls provider installed
//! by someone. It also adds derive_builder and the rustify macros (287 lines of `cargo tree`
//! for vaultrs alone) and hides the HTTP status and `Retry-After` this adapter maps. Five JSON
//! endpoints are simpler to call directly: reqwest (already in the workspace) on rustls with a
//! ring provider configured for this client only.
//!
//! # Limits
//!
//! The plaintext DEK passes through buffers this crate does not own (reqwest's request and
//! response bodies, serde_json's parse) and which are not zeroized; the copies this crate owns
//! are. `generate_data_key` and `rewrap` (the common paths) never send a plaintext DEK.

mod error;
mod settings;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto::{DataKey, KekInfo, KeyContext, KeyManagement, KmsError, WrappedDataKey};
use kernel::Secret;
use kms_http::Attempt;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

pub use kms_http::RetryPolicy;
use settings::is_header_value;
pub use settings::{VaultAppRoleSettings, VaultSettings};

/// `KekInfo::backend` of this adapter.
pub const BACKEND: &str = "vault-transit";
/// Where the transit engine is mounted unless configured otherwise.
pub const DEFAULT_MOUNT: &str = "transit";
/// Where the AppRole auth method is mounted unless configured otherwise.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";

/// How the adapter authenticates to Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token, sent as `X-Vault-Token`. Renewing it is the deployment's job (Vault Agent).
    Token(Secret<String>),
    /// AppRole login: `POST /v1/auth/{mount}/login` with the role id and secret id.
    AppRole { mount: String, role_id: String, secret_id: Secret<String> },
}

/// Which transit key to use, where, and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultKmsConfig {
    /// Vault's address, e.g. `https://vault.internal:8200`. `http://` is accepted here, for tests
    /// and development; [`VaultSettings::problems`] refuses it in production.
    pub address: String,
    /// The transit engine's mount path (default `transit`).
    pub mount: String,
    /// The transit key's name. The key must have been created with `derived=true`.
    pub key_name: String,
    pub auth: VaultAuth,
    /// Vault Enterprise / HCP namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Extra CA certificates (PEM) to trust besides Mozilla's roots, for a private Vault CA.
    pub ca_cert_pem: Option<String>,
    pub retry: RetryPolicy,
}

impl VaultKmsConfig {
    /// A configuration with the default mount, no namespace, no extra CA and the default retry
    /// policy.
    pub fn new(address: impl Into<String>, key_name: impl Into<String>, auth: VaultAuth) -> Self {
        Self {
            address: address.into(),
            mount: DEFAULT_MOUNT.to_owned(),
            key_name: key_name.into(),
            auth,
            namespace: None,
            ca_cert_pem: None,
            retry: RetryPolicy::default(),
        }
    }

    fn key_id(&self) -> String {
        format!("{}/{}", self.mount, self.key_name)
    }
}

/// A token obtained by AppRole login, and when to log in again.
struct CachedToken {
    token: Secret<String>,
    renew_at: Option<Instant>,
}

/// `KeyManagement` on one Vault transit key.
pub struct VaultKms {
    http: reqwest::Client,
    base: String,
    mount: String,
    key_name: String,
    key_id: String,
    auth: VaultAuth,
    namespace: Option<String>,
    retry: RetryPolicy,
    login: tokio::sync::Mutex<Option<CachedToken>>,
    latest_version: AtomicU64,
    key_verified: AtomicBool,
}

impl fmt::Debug for VaultKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKms")
            .field("address", &self.base)
            .field("key_id", &self.key_id)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct CiphertextData {
    ciphertext: String,
}

#[derive(Deserialize)]
struct DataKeyData {
    plaintext: String,
    ciphertext: String,
}

#[derive(Deserialize)]
struct PlaintextData {
    plaintext: String,
}

#[derive(Deserialize)]
struct KeyData {
    #[serde(rename = "type")]
    key_type: String,
    derived: bool,
    latest_version: u64,
    #[serde(default)]
    supports_encryption: Option<bool>,
    #[serde(default)]
    supports_decryption: Option<bool>,
}

#[derive(Deserialize)]
struct LoginAnswer {
    auth: LoginAuth,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
}

/// Key types whose derived keys are 256-bit AEAD keys.
const ACCEPTED_KEY_TYPES: [&str; 2] = ["aes256-gcm96", "chacha20-poly1305"];

impl VaultKms {
    /// An adapter for `config`. Makes no network call: the key is checked at the first
    /// operation, or by `health_check` (call it at start-up to fail fast).
    pub fn new(config: &VaultKmsConfig) -> Result<Self, KmsError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(KmsError::Other(problems.join("; ")));
        }
        Ok(Self {
            http: kms_http::client(&config.retry, config.ca_cert_pem.as_deref())?,
            base: config.address.trim().trim_end_matches('/').to_owned(),
            mount: config.mount.clone(),
            key_name: config.key_name.clone(),
            key_id: config.key_id(),
            auth: config.auth.clone(),
            namespace: config.namespace.clone(),
            retry: config.retry.clone(),
            login: tokio::sync::Mutex::new(None),
            latest_version: AtomicU64::new(0),
            key_verified: AtomicBool::new(false),
        })
    }

    fn context(ctx: &KeyContext) -> String {
        B64.encode(ctx.canonical_bytes())
    }

    fn path(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}/{}", self.mount, self.key_name)
    }

    /// The token for the next request, logging in first when AppRole has none (or an old one).
    async fn token(&self) -> Result<Secret<String>, (KmsError, Option<Duration>)> {
        let (mount, role_id, secret_id) = match &self.auth {
            VaultAuth::Token(token) => return Ok(token.clone()),
            VaultAuth::AppRole { mount, role_id, secret_id } => (mount, role_id, secret_id),
        };
        let mut cached = self.login.lock().await;
        if let Some(token) = cached.as_ref()
            && token.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(token.token.clone());
        }
        #[derive(serde::Serialize)]
        struct Login<'a> {
            role_id: &'a str,
            secret_id: &'a str,
        }
        let body = Zeroizing::new(
            serde_json::to_vec(&Login { role_id, secret_id: secret_id.expose_secret() })
                .map_err(|e| (KmsError::Other(format!("login: {e}")), None))?,
        );
        let url = format!("{}/v1/auth/{mount}/login", self.base);
        let mut request = self.http.post(url).header("X-Vault-Request", "true");
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        let response = request
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| (kms_http::transport_error("login", &e), None))?;
        let status = response.status().as_u16();
        let retry_after = kms_http::retry_after(response.headers());
        let bytes = Zeroizing::new(
            response.bytes().await.map_err(|e| (kms_http::transport_error("login", &e), None))?.to_vec(),
        );
        if !(200..300).contains(&status) {
            // 400 "invalid role or secret ID" and 403 alike: our credentials are refused.
            let error = match error::map_status("login", status, &bytes) {
                KmsError::Unavailable(m) => KmsError::Unavailable(m),
                KmsError::AccessDenied(m)
                | KmsError::KeyNotFound(m)
                | KmsError::KeyVersionRetired(m)
                | KmsError::Other(m) => KmsError::AccessDenied(m),
                KmsError::InvalidCiphertext => KmsError::AccessDenied(format!("login: HTTP {status}")),
            };
            return Err((error, retry_after));
        }
        let answer: LoginAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| (KmsError::Other(format!("login: unexpected answer: {e}")), None))?;
        let token = Secret::new(answer.auth.client_token);
        if !is_header_value(token.expose_secret()) {
            return Err((KmsError::Other("login: answer has no usable client_token".to_owned()), None));
        }
        // Log in again after 80% of the lease; a lease of 0 means the token does not expire.
        let renew_at = (answer.auth.lease_duration > 0)
            .then(|| Instant::now() + Duration::from_secs(answer.auth.lease_duration).mul_f64(0.8));
        *cached = Some(CachedToken { token: token.clone(), renew_at });
        Ok(token)
    }

    async fn forget_login(&self) {
        *self.login.lock().await = None;
    }

    /// One Vault call with retries; the 2xx body, or the mapped error.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let url = format!("{}/v1/{path}", self.base);
        let (url, method) = (&url, &method);
        kms_http::run(&self.retry, operation, move || async move {
            let token = match self.token().await {
                Ok(token) => token,
                Err((error, retry_after)) => return Attempt::fail(error, retry_after),
            };
            let mut token_header = match HeaderValue::from_str(token.expose_secret()) {
                Ok(value) => value,
                Err(_) => return Attempt::Done(Err(KmsError::Other("Vault token is not a header value".to_owned()))),
            };
            token_header.set_sensitive(true);
            let mut request = self
                .http
                .request(method.clone(), url)
                .header("X-Vault-Request", "true")
                .header("X-Vault-Token", token_header);
            if let Some(namespace) = &self.namespace {
                request = request.header("X-Vault-Namespace", namespace);
            }
            if let Some(body) = body {
                request = request.header(CONTENT_TYPE, "application/json").body(body.to_vec());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return Attempt::fail(kms_http::transport_error(operation, &e), None),
            };
            let status = response.status().as_u16();
            let retry_after = kms_http::retry_after(response.headers());
            let bytes = match response.bytes().await {
                Ok(bytes) => Zeroizing::new(bytes.to_vec()),
                Err(e) => return Attempt::fail(kms_http::transport_error(operation, &e), None),
            };
            if (200..300).contains(&status) {
                return Attempt::Done(Ok(bytes));
            }
            let error = error::map_status(operation, status, &bytes);
            if status == 403 && matches!(self.auth, VaultAuth::AppRole { .. }) {
                // Maybe only our token expired: log in again and retry once.
                self.forget_login().await;
                return Attempt::RetryNow(error);
            }
            Attempt::fail(error, retry_after)
        })
        .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        endpoint: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, KmsError> {
        let body = Zeroizing::new(
            serde_json::to_vec(body).map_err(|e| KmsError::Other(format!("{operation}: request: {e}")))?,
        );
        let answer = self.call(operation, Method::POST, &self.path(endpoint), Some(&body)).await?;
        parse::<Data<T>>(operation, &answer).map(|d| d.data)
    }

    /// Reads the key and checks that it can do what Praxis needs, above all that it is derived.
    async fn read_key(&self) -> Result<(), KmsError> {
        let answer = self.call("read key", Method::GET, &self.path("keys"), None).await?;
        let key = parse::<Data<KeyData>>("read key", &answer)?.data;
        self.latest_version.fetch_max(key.latest_version, Ordering::Relaxed);
        if !key.derived {
            return Err(KmsError::Other(format!(
                "transit key {} was created without derived=true, so Vault would ignore the key context; \
                 create a new key with `vault write {}/keys/NAME type=aes256-gcm96 derived=true`",
                self.key_id, self.mount
            )));
        }
        if !ACCEPTED_KEY_TYPES.contains(&key.key_type.as_str()) {
            return Err(KmsError::Other(format!(
                "transit key {} has type {}, expected aes256-gcm96",
                self.key_id,
                kms_http::truncate(&key.key_type, 40)
            )));
        }
        if key.supports_encryption == Some(false) || key.supports_decryption == Some(false) {
            return Err(KmsError::Other(format!("transit key {} does not support encryption", self.key_id)));
        }
        self.key_verified.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn ensure_key_checked(&self) -> Result<(), KmsError> {
        if self.key_verified.load(Ordering::Relaxed) { Ok(()) } else { self.read_key().await }
    }

    /// Vault's ciphertext as a `WrappedDataKey`, labelled with its version.
    fn wrapped(&self, ciphertext: String, operation: &str) -> Result<WrappedDataKey, KmsError> {
        let version = ciphertext_version(&ciphertext)
            .ok_or_else(|| KmsError::Other(format!("{operation}: answer is not a transit ciphertext")))?;
        self.latest_version.fetch_max(version, Ordering::Relaxed);
        Ok(WrappedDataKey {
            kek_id: self.key_id.clone(),
            kek_version: version.to_string(),
            ciphertext: ciphertext.into_bytes(),
        })
    }

    /// The ciphertext string of a wrapped key of ours.
    fn ciphertext_of<'a>(&self, wrapped: &'a WrappedDataKey) -> Result<&'a str, KmsError> {
        if wrapped.kek_id != self.key_id {
            return Err(KmsError::KeyNotFound(format!(
                "{} is not the Vault transit key {}",
                wrapped.kek_id, self.key_id
            )));
        }
        let ciphertext = std::str::from_utf8(&wrapped.ciphertext).map_err(|_| KmsError::InvalidCiphertext)?;
        match ciphertext_version(ciphertext) {
            Some(version) if version.to_string() == wrapped.kek_version => Ok(ciphertext),
            _ => Err(KmsError::InvalidCiphertext),
        }
    }
}

/// `N` of a `vault:vN:...` ciphertext.
fn ciphertext_version(ciphertext: &str) -> Option<u64> {
    let (version, rest) = ciphertext.strip_prefix("vault:v")?.split_once(':')?;
    if rest.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version.parse().ok().filter(|v| *v > 0)
}

fn parse<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, KmsError> {
    // serde_json's message names the field, never echoes the value.
    serde_json::from_slice(body).map_err(|e| KmsError::Other(format!("{operation}: unexpected answer: {e}")))
}

/// A base64 plaintext from Vault as a DEK; `bad` is the error when it is not 32 bytes.
fn data_key(plaintext: String, bad: impl Fn() -> KmsError) -> Result<DataKey, KmsError> {
    let plaintext = Zeroizing::new(plaintext);
    let bytes = Zeroizing::new(B64.decode(plaintext.as_bytes()).map_err(|_| bad())?);
    DataKey::from_bytes(&bytes).map_err(|_| bad())
}

#[derive(serde::Serialize)]
struct ContextOnly<'a> {
    context: &'a str,
    bits: u16,
}

#[derive(serde::Serialize)]
struct PlaintextRequest<'a> {
    plaintext: &'a str,
    context: &'a str,
}

#[derive(serde::Serialize)]
struct CiphertextRequest<'a> {
    ciphertext: &'a str,
    context: &'a str,
}

#[async_trait]
impl KeyManagement for VaultKms {
    async fn generate_data_key(&self, ctx: &KeyContext) -> Result<(DataKey, WrappedDataKey), KmsError> {
        self.ensure_key_checked().await?;
        let context = Self::context(ctx);
        let data: DataKeyData =
            self.post("datakey", "datakey/plaintext", &ContextOnly { context: &context, bits: 256 }).await?;
        let key = data_key(data.plaintext, || KmsError::Other("datakey: plaintext is not a 32-byte key".to_owned()))?;
        Ok((key, self.wrapped(data.ciphertext, "datakey")?))
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        self.ensure_key_checked().await?;
        let context = Self::context(ctx);
        let plaintext = Zeroizing::new(B64.encode(key.expose_secret()));
        let data: CiphertextData =
            self.post("encrypt", "encrypt", &PlaintextRequest { plaintext: &plaintext, context: &context }).await?;
        self.wrapped(data.ciphertext, "encrypt")
    }

    async fn unwrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError> {
        let ciphertext = self.ciphertext_of(wrapped)?;
        self.ensure_key_checked().await?;
        let context = Self::context(ctx);
        let data: PlaintextData =
            self.post("decrypt", "decrypt", &CiphertextRequest { ciphertext, context: &context }).await?;
        // Not 32 bytes: something else was encrypted under our key with this context.
        data_key(data.plaintext, || KmsError::InvalidCiphertext)
    }

    async fn rewrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        let ciphertext = self.ciphertext_of(wrapped)?;
        self.ensure_key_checked().await?;
        let context = Self::context(ctx);
        let data: CiphertextData =
            self.post("rewrap", "rewrap", &CiphertextRequest { ciphertext, context: &context }).await?;
        self.wrapped(data.ciphertext, "rewrap")
    }

    fn key_info(&self) -> KekInfo {
        let version = self.latest_version.load(Ordering::Relaxed);
        KekInfo {
            backend: BACKEND,
            key_id: self.key_id.clone(),
            version: if version == 0 { String::new() } else { version.to_string() },
        }
    }

    async fn health_check(&self) -> Result<(), KmsError> {
        self.read_key().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VaultKmsConfig {
        VaultKmsConfig::new("https://vault.example:8200", "praxis", VaultAuth::Token(Secret::new("test-token".into())))
    }

    #[test]
    fn ciphertext_versions_parse() {
        assert_eq!(ciphertext_version("vault:v1:abc"), Some(1));
        assert_eq!(ciphertext_version("vault:v12:abc"), Some(12));
        for bad in ["vault:v0:abc", "vault:v1:", "vault:vx:abc", "vault:v:abc", "v1:abc", "", "vault:v-1:a"] {
            assert_eq!(ciphertext_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_good_configuration_has_no_problems() {
        assert!(config().problems().is_empty());
        let mut approle = config();
        approle.auth = VaultAuth::AppRole {
            mount: DEFAULT_APPROLE_MOUNT.into(),
            role_id: "role".into(),
            secret_id: Secret::new("secret".into()),
        };
        approle.namespace = Some("admin/praxis/".into());
        approle.mount = "kms/transit".into();
        assert!(approle.problems().is_empty(), "{:?}", approle.problems());
        assert_eq!(approle.key_id(), "kms/transit/praxis");
    }

    #[test]
    fn every_problem_is_reported() {
        let config = VaultKmsConfig {
            address: "vault:8200".into(),
            mount: "../sys".into(),
            key_name: "a/b".into(),
            auth: VaultAuth::Token(Secret::new(" ".into())),
            namespace: Some("a b".into()),
            ca_cert_pem: None,
            retry: RetryPolicy { max_attempts: 0, ..Default::default() },
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(VaultKms::new(&config).is_err());
        let printed = format!("{:?}", VaultAuth::Token(Secret::new("s3cr3t".into())));
        assert!(!printed.contains("s3cr3t"));
    }
}
