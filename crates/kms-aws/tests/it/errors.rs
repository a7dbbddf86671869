//! Failures map to the right `KmsError`, in bounded time.

use crate::common::{config, dummy_credentials, endpoint, fresh_kms, patient_ctx};
use crypto::{KeyContext, KeyManagement, KmsError};
use kernel::{PatientId, TenantId};
use kms_aws::{AwsKms, AwsKmsConfig, OPERATION_TIMEOUT};
use std::time::{Duration, Instant};

#[tokio::test]
async fn another_patients_context_does_not_unwrap() {
    let kms = fresh_kms().await;
    let ctx = patient_ctx();
    let (_, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let other_patient = KeyContext::patient_data(ctx.tenant, PatientId::new());
    assert_eq!(kms.unwrap(&wrapped, &other_patient).await.unwrap_err(), KmsError::InvalidCiphertext);
    let other_tenant = KeyContext::patient_data(TenantId::new(), ctx.patient);
    assert_eq!(kms.unwrap(&wrapped, &other_tenant).await.unwrap_err(), KmsError::InvalidCiphertext);
}

#[tokio::test]
async fn modified_ciphertexts_do_not_unwrap() {
    let kms = fresh_kms().await;
    let ctx = patient_ctx();
    let (_, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let mut tampered = wrapped.clone();
    let last = tampered.ciphertext.len() - 1;
    tampered.ciphertext[last] ^= 1;
    assert_eq!(kms.unwrap(&tampered, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
    let mut garbage = wrapped.clone();
    garbage.ciphertext = vec![0x42; 8];
    assert_eq!(kms.unwrap(&garbage, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
    let mut empty = wrapped;
    empty.ciphertext.clear();
    assert_eq!(kms.unwrap(&empty, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
}

#[tokio::test]
async fn a_key_wrapped_under_another_kms_key_is_refused() {
    let ours = fresh_kms().await;
    let theirs = fresh_kms().await;
    let ctx = patient_ctx();
    let (_, wrapped) = theirs.generate_data_key(&ctx).await.unwrap();
    // Routed by kek_id, it is not ours: refused before any call.
    assert!(matches!(ours.unwrap(&wrapped, &ctx).await, Err(KmsError::KeyNotFound(_))));
    assert!(matches!(ours.rewrap(&wrapped, &ctx).await, Err(KmsError::KeyNotFound(_))));
    // Relabelled as ours, KMS refuses it because Decrypt names our key. Real KMS answers
    // IncorrectKeyException (InvalidCiphertext); moto answers AccessDeniedException.
    let mut relabelled = wrapped;
    relabelled.kek_id = ours.key_info().key_id;
    let err = ours.unwrap(&relabelled, &ctx).await.unwrap_err();
    assert!(matches!(err, KmsError::InvalidCiphertext | KmsError::AccessDenied(_)), "{err:?}");
}

#[tokio::test]
async fn an_unknown_key_is_key_not_found() {
    let endpoint = endpoint();
    let missing = "arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-4000-8000-000000000000";
    let kms = AwsKms::connect_with_credentials(&config(&endpoint, missing), dummy_credentials()).await.unwrap();
    let ctx = patient_ctx();
    let err = kms.generate_data_key(&ctx).await.unwrap_err();
    assert!(matches!(&err, KmsError::KeyNotFound(m) if m.contains("NotFoundException")), "{err:?}");
    assert!(!err.is_retryable());
    assert!(matches!(kms.health_check().await, Err(KmsError::KeyNotFound(_))));
    let dek = crypto::DataKey::generate().unwrap();
    assert!(matches!(kms.wrap(&dek, &ctx).await, Err(KmsError::KeyNotFound(_))));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_within_bounded_time() {
    // Port 1 on loopback: nothing listens, the connection is refused at once, and the SDK
    // retries with backoff until its attempts run out.
    let config = AwsKmsConfig {
        key_id: "arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-4000-8000-000000000000".to_owned(),
        region: "eu-central-1".to_owned(),
        endpoint: Some("http://127.0.0.1:1".to_owned()),
    };
    let kms = AwsKms::connect_with_credentials(&config, dummy_credentials()).await.unwrap();
    let ctx = patient_ctx();
    let bound = OPERATION_TIMEOUT + Duration::from_secs(5);

    let started = Instant::now();
    let err = kms.generate_data_key(&ctx).await.unwrap_err();
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    assert!(matches!(&err, KmsError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());

    let started = Instant::now();
    let wrapped =
        crypto::WrappedDataKey { kek_id: config.key_id.clone(), kek_version: String::new(), ciphertext: vec![1; 64] };
    assert!(matches!(kms.unwrap(&wrapped, &ctx).await, Err(KmsError::Unavailable(_))));
    assert!(matches!(kms.health_check().await, Err(KmsError::Unavailable(_))));
    assert!(started.elapsed() < bound * 2, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn invalid_configuration_is_reported_whole() {
    let config = AwsKmsConfig { key_id: " ".into(), region: String::new(), endpoint: Some("127.0.0.1:1".into()) };
    let problems = config.problems(&crypto::SettingsPlace::direct());
    assert_eq!(problems.len(), 3, "{problems:?}");
    let err = AwsKms::connect(&config).await.unwrap_err();
    assert!(
        matches!(&err, KmsError::Other(m) if m.contains("key_id") && m.contains("region") && m.contains("endpoint"))
    );
    assert!(AwsKms::connect_with_credentials(&config, dummy_credentials()).await.is_err());
    assert!(
        AwsKmsConfig { key_id: "k".into(), region: "eu-central-1".into(), endpoint: None }
            .problems(&crypto::SettingsPlace::direct())
            .is_empty()
    );
}

#[tokio::test]
async fn a_signing_key_fails_the_health_check() {
    let endpoint = endpoint();
    let admin = AwsKms::connect_with_credentials(&config(&endpoint, "bootstrap"), dummy_credentials()).await.unwrap();
    let created = admin
        .client()
        .create_key()
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .send()
        .await
        .unwrap();
    let arn = created.key_metadata().and_then(|m| m.arn()).unwrap().to_owned();
    let kms = AwsKms::from_client(admin.client().clone(), arn).unwrap();
    let err = kms.health_check().await.unwrap_err();
    assert!(matches!(&err, KmsError::Other(m) if m.contains("SIGN_VERIFY")), "{err:?}");
    assert!(!err.is_retryable());
}
