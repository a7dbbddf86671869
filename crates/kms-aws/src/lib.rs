//! The AWS KMS adapter: `KeyManagement` on one symmetric KMS key.
//!
//! - `generate_data_key` = `GenerateDataKey` (`AES_256`): KMS makes the DEK and returns it both
//!   in plaintext and wrapped; no local randomness is involved.
//! - `wrap` = `Encrypt`, `unwrap` = `Decrypt`, `rewrap` = `ReEncrypt` (source and destination:
//!   the configured key), so during a KEK rotation the plaintext DEK never leaves KMS.
//! - Every call carries an `EncryptionContext` built from `KeyContext::pairs()`
//!   (`praxis:tenant_id`, `praxis:patient_id`, `praxis:purpose`). KMS binds the ciphertext to it,
//!   so a wrapped DEK copied to another patient fails with `InvalidCiphertext`, and CloudTrail
//!   records which tenant and patient every key use was for (ids only, no personal data).
//! - `health_check` = `DescribeKey`, and the key must be enabled and for encrypt/decrypt.
//!
//! # Key ids and versions
//!
//! `WrappedDataKey::kek_id` is the configured `key_id` exactly as written; configure the full
//! key ARN. An alias would work until it is re-pointed at another key, after which the DEKs
//! wrapped before could no longer be decrypted through it (KMS answers `IncorrectKeyException`).
//! Moving to another KMS key is a migration through a `Keyring` (old key for reading, new key
//! as primary, `rewrap` row by row), like any change of backend.
//!
//! `kek_version` and `key_info().version` are always empty. AWS rotates key material
//! transparently (automatic or on-demand rotation keeps every old backing key inside the same
//! KMS key and picks the right one from the ciphertext), so there is no version for Praxis to
//! track and nothing to rewrap after an AWS-side rotation: `Keyring::needs_rewrap` correctly
//! says no.
//!
//! # Retries and timeouts (bounded, never a panic)
//!
//! The SDK retries by itself in "standard" mode, at most `MAX_ATTEMPTS` attempts in all, with
//! exponential backoff and jitter, and only for transient errors (throttling, 5xx, connection
//! and timeout errors); a client-wide retry token bucket stops retry storms when KMS is down.
//! Each attempt is bounded by `ATTEMPT_TIMEOUT` (connecting by `CONNECT_TIMEOUT`) and the
//! whole operation, retries and backoff included, by `OPERATION_TIMEOUT`. When that is spent
//! the error surfaces as `KmsError::Unavailable`, which the API turns into a 503 and which the
//! DEK cache does not cache. No retry loop of our own sits on top of it.
//!
//! # Credentials
//!
//! `AwsKms::connect` uses the standard AWS credential chain (environment, profile files, web
//! identity / IRSA, ECS and EC2 instance roles); nothing is configured in Praxis itself and no
//! secret is in its configuration. Credentials are resolved lazily (at the first call) and
//! cached and refreshed by the SDK, so start-up does not need KMS to be reachable.
//!
//! # Least-privilege IAM policy
//!
//! The application's role needs exactly these actions on the one key, and only for encryption
//! contexts that carry all three Praxis keys. Nothing else: no `kms:CreateKey`, no
//! `kms:ScheduleKeyDeletion`, no `kms:PutKeyPolicy`, no grants. Key administration (creating the
//! key, enabling rotation, deletion for crypto-shredding a whole deployment) belongs to a
//! separate administrator role.
//!
//! ```json
//! {
//!   "Version": "2012-10-17",
//!   "Statement": [
//!     {
//!       "Sid": "PraxisDataKeys",
//!       "Effect": "Allow",
//!       "Action": [
//!         "kms:GenerateDataKey",
//!         "kms:Encrypt",
//!         "kms:Decrypt",
//!         "kms:ReEncryptFrom",
//!         "kms:ReEncryptTo"
//!       ],
//!       "Resource": "arn:aws:kms:REGION:ACCOUNT:key/KEY-ID",
//!       "Condition": {
//!         "ForAllValues:StringEquals": {
//!           "kms:EncryptionContextKeys": ["praxis:tenant_id", "praxis:patient_id", "praxis:purpose"]
//!         },
//!         "Null": {
//!           "kms:EncryptionContext:praxis:tenant_id": "false",
//!           "kms:EncryptionContext:praxis:patient_id": "false",
//!           "kms:EncryptionContext:praxis:purpose": "false"
//!         }
//!       }
//!     },
//!     {
//!       "Sid": "PraxisHealthCheck",
//!       "Effect": "Allow",
//!       "Action": "kms:DescribeKey",
//!       "Resource": "arn:aws:kms:REGION:ACCOUNT:key/KEY-ID"
//!     }
//!   ]
//! }
//! ```
//!
//! The `ForAllValues` condition allows no other context keys; the `Null` conditions require all
//! three (a `ForAllValues` condition alone would also match a request without any context).
//! `DescribeKey` takes no encryption context, so it gets its own statement. A tighter policy
//! may pin `kms:EncryptionContext:praxis:purpose` to the purposes Praxis uses: `patient-data`,
//! and for the practice keys `blind-index` and `audit-checkpoint`.
//!
//! # Limits
//!
//! The plaintext DEK passes through SDK buffers (the HTTP response body, the `Blob` of
//! `GenerateDataKey`/`Decrypt`, the request body of `Encrypt`) that are not zeroized; the copies
//! this crate owns are. `generate_data_key` and `rewrap` (the common paths) avoid `Encrypt`.

mod error;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::{Region, SharedCredentialsProvider, SharedHttpClient};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, EncryptionAlgorithmSpec, KeyState, KeyUsageType};
use crypto::{DataKey, KekInfo, KeyContext, KeyManagement, KmsError, SettingProblem, SettingsPlace, WrappedDataKey};
use error::map_sdk_error;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use zeroize::Zeroizing;

pub use aws_sdk_kms::config::Credentials;

/// `KekInfo::backend` of this adapter.
pub const BACKEND: &str = "aws-kms";
/// Attempts per operation, the first one included (the SDK's standard retry mode).
pub const MAX_ATTEMPTS: u32 = 3;
/// Bound on establishing one connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one attempt (request sent, response read).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a whole operation, every attempt and backoff included. A DEK unwrap sits on the
/// request path of reading patient data, so a KMS outage must fail the request in bounded time.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Which KMS key to use and where: the adapter's settings, as the application's configuration
/// spells them (`[kms.aws]`, or a `[[kms.previous]]` entry with `backend = "aws"`). Credentials
/// are not among them: they come from the standard AWS chain (see the crate docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// The key's full ARN (recommended: an alias breaks old data keys when it is re-pointed; see
    /// the crate docs), key id or alias.
    pub key_id: String,
    /// The AWS region, e.g. "eu-central-1".
    pub region: String,
    /// An endpoint to use instead of the region's public one: a VPC endpoint, or a local mock in
    /// tests. `http://` is accepted outside production, for the latter.
    pub endpoint: Option<String>,
}

impl AwsKmsConfig {
    /// Every problem of these settings at `place`, all at once (empty when there is none).
    pub fn problems(&self, place: &SettingsPlace<'_>) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.key_id.trim().is_empty() {
            problems.push(place.missing("key_id"));
        } else if self.key_id.len() > crypto::Kek::MAX_LABEL_LEN {
            // The key id is copied into every field ciphertext header with a one-byte length.
            problems.push(place.problem("key_id", format!("longer than {} bytes", crypto::Kek::MAX_LABEL_LEN)));
        }
        if self.region.trim().is_empty() {
            problems.push(place.missing("region"));
        }
        if let Some(endpoint) = &self.endpoint {
            problems.extend(place.check_url("endpoint", endpoint));
        }
        problems
    }

    /// The adapter's own guard, for settings handed to it directly.
    fn validate(&self) -> Result<(), KmsError> {
        let problems: Vec<String> = self.problems(&SettingsPlace::direct()).iter().map(ToString::to_string).collect();
        if problems.is_empty() { Ok(()) } else { Err(KmsError::Other(problems.join("; "))) }
    }
}

/// `KeyManagement` on one AWS KMS key.
#[derive(Clone)]
pub struct AwsKms {
    client: Client,
    key_id: String,
}

impl AwsKms {
    /// An adapter using the standard AWS credential chain. Makes no network call.
    pub async fn connect(config: &AwsKmsConfig) -> Result<Self, KmsError> {
        let client = sdk_client(config, None).await?;
        Self::from_client(client, config.key_id.clone())
    }

    /// An adapter using the given credentials instead of the chain (tools, tests).
    pub async fn connect_with_credentials(config: &AwsKmsConfig, credentials: Credentials) -> Result<Self, KmsError> {
        let client = sdk_client(config, Some(SharedCredentialsProvider::new(credentials))).await?;
        Self::from_client(client, config.key_id.clone())
    }

    /// An adapter around a client built elsewhere (e.g. by `sdk_client`, shared with an admin
    /// tool). The client's retry and timeout settings are the caller's responsibility.
    pub fn from_client(client: Client, key_id: impl Into<String>) -> Result<Self, KmsError> {
        let key_id = key_id.into();
        if key_id.trim().is_empty() || key_id.len() > crypto::Kek::MAX_LABEL_LEN {
            return Err(KmsError::Other("AWS KMS key id must be 1..=255 bytes".to_owned()));
        }
        Ok(Self { client, key_id })
    }

    /// The SDK client, e.g. for a key administration tool or a test that creates keys.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn context(ctx: &KeyContext) -> HashMap<String, String> {
        ctx.pairs().into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn wrapped(&self, ciphertext: Option<Blob>, operation: &str) -> Result<WrappedDataKey, KmsError> {
        let ciphertext = ciphertext
            .map(Blob::into_inner)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| KmsError::Other(format!("{operation}: response has no ciphertext")))?;
        Ok(WrappedDataKey { kek_id: self.key_id.clone(), kek_version: String::new(), ciphertext })
    }

    fn check_ours(&self, wrapped: &WrappedDataKey) -> Result<(), KmsError> {
        if wrapped.kek_id != self.key_id {
            return Err(KmsError::KeyNotFound(format!("{} is not the AWS KMS key {}", wrapped.kek_id, self.key_id)));
        }
        if wrapped.ciphertext.is_empty() {
            return Err(KmsError::InvalidCiphertext);
        }
        Ok(())
    }
}

/// A KMS client for `config`: the standard credential chain unless `credentials` is given,
/// ring-based rustls, the bounded retry and timeout settings above, and `config.endpoint` for
/// KMS only (credential providers such as STS keep their own endpoints).
pub async fn sdk_client(
    config: &AwsKmsConfig,
    credentials: Option<SharedCredentialsProvider>,
) -> Result<Client, KmsError> {
    config.validate()?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .http_client(http_client())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;
    let mut kms_config = aws_sdk_kms::config::Builder::from(&shared);
    if let Some(endpoint) = &config.endpoint {
        kms_config = kms_config.endpoint_url(endpoint);
    }
    Ok(Client::from_conf(kms_config.build()))
}

/// HTTPS with rustls on ring, the one crypto library the workspace already carries. (The SDK's
/// default client brings aws-lc-rs, a second C crypto library; its `rustls` feature is the
/// legacy hyper 0.14 / rustls 0.21 stack.) Plain `http://` endpoints work too, for mocks.
fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

#[async_trait]
impl KeyManagement for AwsKms {
    async fn generate_data_key(&self, ctx: &KeyContext) -> Result<(DataKey, WrappedDataKey), KmsError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(Self::context(ctx)))
            .send()
            .await
            .map_err(|e| map_sdk_error("GenerateDataKey", e))?;
        let plaintext = Zeroizing::new(
            out.plaintext
                .map(Blob::into_inner)
                .ok_or_else(|| KmsError::Other("GenerateDataKey: response has no plaintext".to_owned()))?,
        );
        let key = DataKey::from_bytes(&plaintext)
            .map_err(|_| KmsError::Other("GenerateDataKey: plaintext is not a 32-byte key".to_owned()))?;
        Ok((key, self.wrapped(out.ciphertext_blob, "GenerateDataKey")?))
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key.expose_secret().to_vec()))
            .set_encryption_context(Some(Self::context(ctx)))
            .send()
            .await
            .map_err(|e| map_sdk_error("Encrypt", e))?;
        self.wrapped(out.ciphertext_blob, "Encrypt")
    }

    async fn unwrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError> {
        self.check_ours(wrapped)?;
        // KeyId is optional for symmetric keys, but naming it makes KMS refuse a ciphertext of
        // any other key instead of decrypting with whatever key the blob points to.
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .set_encryption_context(Some(Self::context(ctx)))
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .send()
            .await
            .map_err(|e| map_sdk_error("Decrypt", e))?;
        let plaintext = Zeroizing::new(
            out.plaintext
                .map(Blob::into_inner)
                .ok_or_else(|| KmsError::Other("Decrypt: response has no plaintext".to_owned()))?,
        );
        // Not 32 bytes: something else was encrypted under our key with this context.
        DataKey::from_bytes(&plaintext).map_err(|_| KmsError::InvalidCiphertext)
    }

    async fn rewrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        self.check_ours(wrapped)?;
        let context = Self::context(ctx);
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .source_key_id(&self.key_id)
            .set_source_encryption_context(Some(context.clone()))
            .destination_key_id(&self.key_id)
            .set_destination_encryption_context(Some(context))
            .send()
            .await
            .map_err(|e| map_sdk_error("ReEncrypt", e))?;
        self.wrapped(out.ciphertext_blob, "ReEncrypt")
    }

    fn key_info(&self) -> KekInfo {
        KekInfo { backend: BACKEND, key_id: self.key_id.clone(), version: String::new() }
    }

    async fn health_check(&self) -> Result<(), KmsError> {
        let out = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| map_sdk_error("DescribeKey", e))?;
        let metadata =
            out.key_metadata.ok_or_else(|| KmsError::Other("DescribeKey: response has no key metadata".to_owned()))?;
        match metadata.key_state() {
            Some(KeyState::Enabled) => {}
            state => {
                let state = state.map_or("unknown", KeyState::as_str);
                return Err(KmsError::KeyNotFound(format!("{}: key state is {state}", self.key_id)));
            }
        }
        // AWS always reports the usage; a mock may leave it out, which is no reason to fail.
        if let Some(usage) = metadata.key_usage()
            && *usage != KeyUsageType::EncryptDecrypt
        {
            return Err(KmsError::Other(format!(
                "{}: key usage is {}, not ENCRYPT_DECRYPT",
                self.key_id,
                usage.as_str()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::Environment;

    #[test]
    fn settings_problems_name_each_setting_at_its_place() {
        let place = SettingsPlace::section("kms.aws", "kms.backend", "aws", Environment::Production);
        let settings = AwsKmsConfig {
            key_id: "arn:aws:kms:eu-central-1:111122223333:key/k".into(),
            region: "eu-central-1".into(),
            endpoint: Some("https://vpce.kms.eu-central-1.vpce.amazonaws.com".into()),
        };
        assert_eq!(settings.problems(&place), vec![]);
        let bad = AwsKmsConfig { key_id: "k".repeat(256), endpoint: Some("http://kms.internal".into()), ..settings };
        let found: Vec<String> = bad.problems(&place).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            ["kms.aws.key_id: longer than 255 bytes", "kms.aws.endpoint: must be https:// in production"]
        );
        let found: Vec<String> = AwsKmsConfig::default().problems(&place).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "kms.aws.key_id: required when kms.backend = \"aws\"",
                "kms.aws.region: required when kms.backend = \"aws\""
            ]
        );
    }
}
