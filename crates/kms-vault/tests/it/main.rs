//! Tests of the Vault transit adapter against local fakes and against a real server.
//!
//! - `round_trip`: a stateful fake of the transit engine (`kms_http::test_server::vault_transit`,
//!   shared with the application's tests) that really encrypts, so wrapped keys unwrap to the
//!   same DEK, contexts bind, and rotation bumps versions.
//! - `errors`: recorded exchanges (`tests/fixtures/*.json`, shapes and error bodies from the
//!   Vault API reference named in each file) replayed by `kms_http::test_server::Replay`, which
//!   also checks that every request matches the recorded one (path, token header, JSON fields).
//! - `openbao`: a real Vault-compatible server (OpenBao in dev mode, started by `cargo xtask
//!   test`): derived keys, rotation and rewrap, AppRole past its token TTL, sealing, refusals.

// Test code: a failed unwrap is a failed test with a clear message. clippy's
// allow-unwrap-in-tests does not cover helper functions outside #[test] in an integration test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod errors;
mod openbao;
mod round_trip;

use crypto::KeyContext;
use kernel::{PatientId, Secret, TenantId};
pub use kms_http::test_server::vault_transit as transit;
use kms_vault::{RetryPolicy, VaultAuth, VaultKms, VaultKmsConfig};
use std::time::Duration;

pub fn patient_ctx() -> KeyContext {
    KeyContext::patient_data(TenantId::new(), PatientId::new())
}

pub fn config(url: &str) -> VaultKmsConfig {
    let mut config = VaultKmsConfig::new(url, "praxis", VaultAuth::Token(Secret::new(transit::TOKEN.to_owned())));
    // Short backoff so the retry tests run fast; the attempt counts are the defaults.
    config.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
        ..RetryPolicy::default()
    };
    config
}

pub fn kms(url: &str) -> VaultKms {
    VaultKms::new(&config(url)).unwrap()
}

/// The recorded exchanges of this crate's error tests.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
