//! Failures map to the right `KmsError`, in bounded time: recorded exchanges replayed.

use crate::FIXTURES;
use crate::{config, kms, patient_ctx};
use crypto::{DataKey, KeyManagement, KmsError, WrappedDataKey};
use kernel::Secret;
use kms_http::test_server::{Replay, Response, Server};
use kms_vault::{DEFAULT_APPROLE_MOUNT, RetryPolicy, VaultAuth, VaultKms};
use std::time::{Duration, Instant};

/// A wrapped key of ours with a dummy ciphertext of Vault's shape.
fn wrapped() -> WrappedDataKey {
    WrappedDataKey {
        kek_id: "transit/praxis".into(),
        kek_version: "1".into(),
        ciphertext: b"vault:v1:ZHVtbXktY2lwaGVydGV4dC1ub3QtYS1yZWFsLWtleQ==".to_vec(),
    }
}

#[tokio::test]
async fn permission_denied_is_access_denied_and_not_retried() {
    let replay = Replay::new(FIXTURES, &["read_key_derived", "datakey_403"]);
    let server = replay.serve().await;
    let err = kms(&server.url).generate_data_key(&patient_ctx()).await.unwrap_err();
    assert!(matches!(&err, KmsError::AccessDenied(m) if m.contains("permission denied")), "{err:?}");
    assert!(!err.is_retryable());
    replay.finish();

    let replay = Replay::new(FIXTURES, &["read_key_403"]);
    let server = replay.serve().await;
    assert!(matches!(kms(&server.url).health_check().await, Err(KmsError::AccessDenied(_))));
    replay.finish();
}

#[tokio::test]
async fn a_missing_key_is_key_not_found() {
    let replay = Replay::new(FIXTURES, &["read_key_404"]);
    let server = replay.serve().await;
    let err = kms(&server.url).health_check().await.unwrap_err();
    assert!(matches!(&err, KmsError::KeyNotFound(m) if m.contains("404")), "{err:?}");
    replay.finish();

    let replay = Replay::new(FIXTURES, &["read_key_derived", "decrypt_key_not_found"]);
    let server = replay.serve().await;
    let err = kms(&server.url).unwrap(&wrapped(), &patient_ctx()).await.unwrap_err();
    assert!(matches!(&err, KmsError::KeyNotFound(m) if m.contains("encryption key not found")), "{err:?}");
    replay.finish();
}

#[tokio::test]
async fn an_authentication_failure_is_invalid_ciphertext() {
    let replay = Replay::new(FIXTURES, &["read_key_derived", "decrypt_auth_failed"]);
    let server = replay.serve().await;
    assert_eq!(kms(&server.url).unwrap(&wrapped(), &patient_ctx()).await.unwrap_err(), KmsError::InvalidCiphertext);
    replay.finish();
}

#[tokio::test]
async fn a_non_derived_key_is_refused() {
    let replay = Replay::new(FIXTURES, &["read_key_not_derived"]);
    let server = replay.serve().await;
    let dek = DataKey::generate().unwrap();
    let err = kms(&server.url).wrap(&dek, &patient_ctx()).await.unwrap_err();
    assert!(matches!(&err, KmsError::Other(m) if m.contains("derived=true")), "{err:?}");
    replay.finish();
}

#[tokio::test]
async fn a_transient_503_is_retried_then_succeeds() {
    let replay = Replay::new(FIXTURES, &["read_key_derived", "encrypt_503_then_200"]);
    let server = replay.serve().await;
    let dek = DataKey::generate().unwrap();
    let wrapped = kms(&server.url).wrap(&dek, &patient_ctx()).await.unwrap();
    assert_eq!(wrapped, self::wrapped());
    replay.finish();
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after() {
    let replay = Replay::new(FIXTURES, &["read_key_derived", "decrypt_429_then_200"]);
    let server = replay.serve().await;
    let started = Instant::now();
    let dek = kms(&server.url).unwrap(&wrapped(), &patient_ctx()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    assert_eq!(dek.expose_secret(), &[0u8; 32], "the recorded dummy plaintext");
    replay.finish();
}

#[tokio::test]
async fn exhausted_retries_are_unavailable_within_bounded_time() {
    let replay = Replay::new(FIXTURES, &["read_key_derived", "encrypt_500_x3"]);
    let server = replay.serve().await;
    let dek = DataKey::generate().unwrap();
    let started = Instant::now();
    let err = kms(&server.url).wrap(&dek, &patient_ctx()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(&err, KmsError::Unavailable(m) if m.contains("500")), "{err:?}");
    assert!(err.is_retryable());
    replay.finish(); // exactly 3 attempts: all recorded exchanges played, no more
}

#[tokio::test]
async fn a_hanging_server_is_unavailable_within_the_operation_timeout() {
    let server = Server::start(|_| Response {
        delay: Some(Duration::from_secs(30)),
        ..Response::json(200, &serde_json::json!({}))
    })
    .await;
    let mut config = config(&server.url);
    config.retry = RetryPolicy {
        attempt_timeout: Duration::from_millis(200),
        operation_timeout: Duration::from_millis(500),
        initial_backoff: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    let kms = VaultKms::new(&config).unwrap();
    let started = Instant::now();
    let err = kms.health_check().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(&err, KmsError::Unavailable(_)), "{err:?}");
    assert!(server.requests().len() >= 2, "timed-out attempts are retried");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_within_bounded_time() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let kms = kms("http://127.0.0.1:1");
    let started = Instant::now();
    let err = kms.generate_data_key(&patient_ctx()).await.unwrap_err();
    assert!(matches!(&err, KmsError::Unavailable(m) if m.contains("connection")), "{err:?}");
    assert!(kms.unwrap(&wrapped(), &patient_ctx()).await.unwrap_err().is_retryable());
    assert!(kms.health_check().await.unwrap_err().is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_refused_approle_login_is_access_denied() {
    let replay = Replay::new(FIXTURES, &["approle_login_400"]);
    let server = replay.serve().await;
    let mut config = config(&server.url);
    config.auth = VaultAuth::AppRole {
        mount: DEFAULT_APPROLE_MOUNT.into(),
        role_id: "test-role-id".into(),
        secret_id: Secret::new("wrong-secret-id".into()),
    };
    let err = VaultKms::new(&config).unwrap().health_check().await.unwrap_err();
    assert!(matches!(&err, KmsError::AccessDenied(m) if m.contains("invalid role or secret ID")), "{err:?}");
    replay.finish();
}
