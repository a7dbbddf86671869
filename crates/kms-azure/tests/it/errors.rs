//! Failures map to the right `KmsError`, in bounded time: recorded exchanges replayed.

use crate::FIXTURES;
use crate::{config, kms, patient_ctx};
use crypto::{DataKey, KeyManagement, KmsError, WrappedDataKey};
use kms_azure::{AzureKeyVault, RetryPolicy};
use kms_http::test_server::{Replay, Response, Server};
use std::time::{Duration, Instant};

const VERSION: &str = "0123456789abcdef0123456789abcdef";

fn wrapped(url: &str) -> WrappedDataKey {
    WrappedDataKey { kek_id: format!("{url}/keys/praxis"), kek_version: VERSION.into(), ciphertext: vec![0x42; 256] }
}

#[tokio::test]
async fn forbidden_is_access_denied_and_not_retried() {
    let replay = Replay::new(FIXTURES, &["token_ok", "wrap_403"]);
    let server = replay.serve().await;
    let dek = DataKey::generate().unwrap();
    let err = kms(&server.url).wrap(&dek, &patient_ctx()).await.unwrap_err();
    assert!(matches!(&err, KmsError::AccessDenied(m) if m.contains("Forbidden")), "{err:?}");
    assert!(!err.is_retryable());
    replay.finish();
}

#[tokio::test]
async fn refused_client_credentials_are_access_denied() {
    let replay = Replay::new(FIXTURES, &["token_401_invalid_client"]);
    let server = replay.serve().await;
    let err = kms(&server.url).health_check().await.unwrap_err();
    assert!(matches!(&err, KmsError::AccessDenied(m) if m.contains("AADSTS7000215")), "{err:?}");
    replay.finish();
}

#[tokio::test]
async fn a_missing_key_version_is_key_not_found() {
    let replay = Replay::new(FIXTURES, &["token_ok", "unwrap_404"]);
    let server = replay.serve().await;
    let err = kms(&server.url).unwrap(&wrapped(&server.url), &patient_ctx()).await.unwrap_err();
    assert!(matches!(&err, KmsError::KeyNotFound(m) if m.contains("KeyNotFound")), "{err:?}");
    replay.finish();
}

#[tokio::test]
async fn a_bad_parameter_on_unwrap_is_invalid_ciphertext() {
    let replay = Replay::new(FIXTURES, &["token_ok", "unwrap_400"]);
    let server = replay.serve().await;
    let err = kms(&server.url).unwrap(&wrapped(&server.url), &patient_ctx()).await.unwrap_err();
    assert_eq!(err, KmsError::InvalidCiphertext);
    replay.finish();
}

#[tokio::test]
async fn a_disabled_key_fails_the_health_check() {
    let replay = Replay::new(FIXTURES, &["token_ok", "get_key_disabled"]);
    let server = replay.serve().await;
    let err = kms(&server.url).health_check().await.unwrap_err();
    assert!(matches!(&err, KmsError::KeyNotFound(m) if m.contains("disabled")), "{err:?}");
    replay.finish();
}

#[tokio::test]
async fn a_transient_503_is_retried_then_succeeds() {
    let replay = Replay::new(FIXTURES, &["token_ok", "wrap_503_then_200"]);
    let server = replay.serve().await;
    let dek = DataKey::generate().unwrap();
    let wrapped = kms(&server.url).wrap(&dek, &patient_ctx()).await.unwrap();
    assert_eq!(wrapped, self::wrapped(&server.url));
    replay.finish();
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after() {
    let replay = Replay::new(FIXTURES, &["token_ok", "wrap_429_then_200"]);
    let server = replay.serve().await;
    let dek = DataKey::generate().unwrap();
    let started = Instant::now();
    let wrapped = kms(&server.url).wrap(&dek, &patient_ctx()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    assert_eq!(wrapped.kek_version, VERSION);
    replay.finish();
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_unavailable_at_once() {
    let replay = Replay::new(FIXTURES, &["token_ok", "wrap_429_long"]);
    let server = replay.serve().await;
    let dek = DataKey::generate().unwrap();
    let started = Instant::now();
    let err = kms(&server.url).wrap(&dek, &patient_ctx()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(&err, KmsError::Unavailable(m) if m.contains("Throttled")), "{err:?}");
    replay.finish();
}

#[tokio::test]
async fn exhausted_retries_are_unavailable_within_bounded_time() {
    let replay = Replay::new(FIXTURES, &["token_ok", "wrap_500_x3"]);
    let server = replay.serve().await;
    let dek = DataKey::generate().unwrap();
    let started = Instant::now();
    let err = kms(&server.url).wrap(&dek, &patient_ctx()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(&err, KmsError::Unavailable(m) if m.contains("500")), "{err:?}");
    replay.finish(); // exactly 3 attempts, one token
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
    let kms = AzureKeyVault::new(&config).unwrap();
    let started = Instant::now();
    let err = kms.health_check().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(&err, KmsError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_within_bounded_time() {
    let kms = kms("http://127.0.0.1:1");
    let started = Instant::now();
    let err = kms.generate_data_key(&patient_ctx()).await.unwrap_err();
    assert!(matches!(&err, KmsError::Unavailable(m) if m.contains("connection")), "{err:?}");
    assert!(kms.unwrap(&wrapped("http://127.0.0.1:1"), &patient_ctx()).await.unwrap_err().is_retryable());
    assert!(kms.health_check().await.unwrap_err().is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
