//! Tests of the Azure Key Vault adapter against a local fake: no Azure runs here.
//!
//! - `round_trip`: a stateful fake of Key Vault and the token endpoint
//!   (`kms_http::test_server::azure_key_vault`, shared with the application's tests), so wrapped
//!   keys unwrap to the same DEK and rotation changes versions.
//! - `errors`: recorded exchanges (`tests/fixtures/*.json`, shapes and error bodies from the
//!   REST reference named in each file) replayed by `kms_http::test_server::Replay`, which also
//!   checks that every request matches the recorded one (path, query, bearer token, JSON or form
//!   fields).
//! - `identity`: the token audience from the vault's challenge, and the managed identity
//!   sources (metadata service, App Service, Azure Arc) against the fake's endpoints.
//! - `tls`: a vault behind a TLS front whose certificate a private CA issued (`ca_cert_pem`).

// Test code: a failed unwrap is a failed test with a clear message. clippy's
// allow-unwrap-in-tests does not cover helper functions outside #[test] in an integration test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod errors;
mod identity;
mod round_trip;
mod tls;

use crypto::KeyContext;
use kernel::{PatientId, Secret, TenantId};
use kms_azure::{AzureCredential, AzureKeyVault, AzureKeyVaultConfig, RetryPolicy};
pub use kms_http::test_server::azure_key_vault as keyvault;
use std::time::Duration;

pub fn patient_ctx() -> KeyContext {
    KeyContext::patient_data(TenantId::new(), PatientId::new())
}

/// The vault and the authority are both the fake server. The fake runs at 127.0.0.1, which no
/// Key Vault challenge can vouch for (`identity` tests that), so the resource is configured,
/// as for a vault reached under a name of one's own.
pub fn config(url: &str) -> AzureKeyVaultConfig {
    let credential = AzureCredential::ClientSecret {
        tenant_id: keyvault::TENANT.into(),
        client_id: keyvault::CLIENT_ID.into(),
        client_secret: Secret::new(keyvault::CLIENT_SECRET.into()),
    };
    let mut config = AzureKeyVaultConfig::new(url, "praxis", credential);
    config.authority_host = url.to_owned();
    config.resource = Some(keyvault::KEY_VAULT_RESOURCE.to_owned());
    // Short backoff so the retry tests run fast; the attempt counts are the defaults.
    config.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
        ..RetryPolicy::default()
    };
    config
}

pub fn kms(url: &str) -> AzureKeyVault {
    AzureKeyVault::new(&config(url)).unwrap()
}

/// The recorded exchanges of this crate's error tests.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
