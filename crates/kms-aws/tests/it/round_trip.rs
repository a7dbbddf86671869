//! The happy paths: generate, unwrap, wrap, rewrap, health.

use crate::common::{ENDPOINT_VAR, REGION, endpoint, fresh_kms, patient_ctx};
use crypto::{DataKey, KeyManagement, KmsError};
use kms_aws::{AwsKms, AwsKmsConfig, BACKEND};

#[tokio::test]
async fn generated_keys_unwrap_to_the_same_bytes() {
    let kms = fresh_kms().await;
    let ctx = patient_ctx();
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let info = kms.key_info();
    assert_eq!(info.backend, BACKEND);
    assert_eq!(wrapped.kek_id, info.key_id);
    assert!(wrapped.kek_id.starts_with("arn:aws:kms:"), "{}", wrapped.kek_id);
    assert_eq!((wrapped.kek_version.as_str(), info.version.as_str()), ("", ""), "AWS hides key versions");
    assert!(!wrapped.ciphertext.is_empty());

    let back = kms.unwrap(&wrapped, &ctx).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    let (other, _) = kms.generate_data_key(&ctx).await.unwrap();
    assert_ne!(other.expose_secret(), dek.expose_secret(), "every call makes a new key");
}

#[tokio::test]
async fn a_local_key_wraps_and_unwraps_with_encrypt_and_decrypt() {
    let kms = fresh_kms().await;
    let ctx = patient_ctx();
    let dek = DataKey::generate().unwrap();
    let wrapped = kms.wrap(&dek, &ctx).await.unwrap();
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn rewrap_keeps_the_key_and_the_context_binding() {
    let kms = fresh_kms().await;
    let ctx = patient_ctx();
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let rewrapped = kms.rewrap(&wrapped, &ctx).await.unwrap();
    assert_eq!(rewrapped.kek_id, wrapped.kek_id);
    assert_ne!(rewrapped.ciphertext, wrapped.ciphertext, "ReEncrypt produces a new ciphertext");
    assert_eq!(kms.unwrap(&rewrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());

    let other_patient = crypto::KeyContext::patient_data(ctx.tenant, kernel::PatientId::new());
    assert_eq!(kms.rewrap(&wrapped, &other_patient).await.unwrap_err(), KmsError::InvalidCiphertext);
    assert_eq!(kms.unwrap(&rewrapped, &other_patient).await.unwrap_err(), KmsError::InvalidCiphertext);
}

#[tokio::test]
async fn health_check_passes_for_an_enabled_key_and_fails_for_a_disabled_one() {
    let kms = fresh_kms().await;
    kms.health_check().await.unwrap();

    // The bare key id: moto 5.2's DisableKey fails on an ARN (real KMS takes either).
    let arn = kms.key_info().key_id;
    let key_id = arn.rsplit('/').next().unwrap();
    kms.client().disable_key().key_id(key_id).send().await.unwrap();
    let err = kms.health_check().await.unwrap_err();
    assert!(matches!(&err, KmsError::KeyNotFound(m) if m.contains("Disabled")), "{err:?}");
}

/// Runs `standard_chain_child` in a child process whose environment holds the dummy
/// credentials: the test process sets them itself, and only there (changing this process's
/// environment would need `unsafe`, which the workspace forbids, and would race other tests).
#[test]
fn credentials_come_from_the_standard_chain() {
    let endpoint = endpoint();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "round_trip::standard_chain_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ENDPOINT_VAR, endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_KMS")
        // Nothing else from the developer's machine, and never the instance metadata service.
        .env("AWS_CONFIG_FILE", "/nonexistent/praxis-test/aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/praxis-test/aws-credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child test did not run:\n{stdout}\n{stderr}");
}

#[tokio::test]
#[ignore = "run by credentials_come_from_the_standard_chain, in a child process with env credentials"]
async fn standard_chain_child() {
    assert_eq!(
        std::env::var("AWS_EC2_METADATA_DISABLED").as_deref(),
        Ok("true"),
        "run only through credentials_come_from_the_standard_chain"
    );
    let key = fresh_kms().await.key_info().key_id;
    let config = AwsKmsConfig { key_id: key, region: REGION.to_owned(), endpoint: Some(endpoint()) };
    let kms = AwsKms::connect(&config).await.unwrap();
    let ctx = patient_ctx();
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    kms.health_check().await.unwrap();
}
