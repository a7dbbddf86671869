//! The happy paths against the stateful fake: generate, unwrap, wrap, rewrap, health, AppRole.

use crate::transit::{APPROLE_TOKEN, FakeTransit, ROLE_ID, SECRET_ID, TOKEN};
use crate::{config, kms, patient_ctx};
use base64::Engine as _;
use crypto::{DataKey, KeyContext, KeyManagement, KmsError};
use kernel::{PatientId, Secret, TenantId};
use kms_vault::{BACKEND, DEFAULT_APPROLE_MOUNT, VaultAuth, VaultKms};

#[tokio::test]
async fn generated_keys_unwrap_to_the_same_bytes() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    assert_eq!(kms.key_info().version, "", "unknown before the first call");

    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let info = kms.key_info();
    assert_eq!((info.backend, info.key_id.as_str(), info.version.as_str()), (BACKEND, "transit/praxis", "1"));
    assert_eq!(wrapped.kek_id, info.key_id);
    assert_eq!(wrapped.kek_version, "1");
    assert!(wrapped.ciphertext.starts_with(b"vault:v1:"));
    let back = kms.unwrap(&wrapped, &ctx).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());

    // The key is read once (the derived check), then each operation is one POST with the
    // token and the context, base64 of the canonical bytes.
    let requests = server.requests();
    let paths: Vec<_> = requests.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(
        paths,
        ["GET /v1/transit/keys/praxis", "POST /v1/transit/datakey/plaintext/praxis", "POST /v1/transit/decrypt/praxis"]
    );
    let context = base64::engine::general_purpose::STANDARD.encode(ctx.canonical_bytes());
    for request in &requests {
        assert_eq!(request.header("x-vault-token"), Some(TOKEN));
    }
    assert_eq!(requests[1].json(), serde_json::json!({"context": context, "bits": 256}));
    assert_eq!(requests[2].json()["context"], context);
    fake.finish();
}

#[tokio::test]
async fn a_local_key_wraps_and_unwraps_with_encrypt_and_decrypt() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    let dek = DataKey::generate().unwrap();
    let wrapped = kms.wrap(&dek, &ctx).await.unwrap();
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    let encrypt = &server.requests()[1];
    assert_eq!(encrypt.path, "/v1/transit/encrypt/praxis");
    assert_eq!(
        encrypt.json()["plaintext"],
        base64::engine::general_purpose::STANDARD.encode(dek.expose_secret()).as_str()
    );
    fake.finish();
}

#[tokio::test]
async fn another_context_does_not_unwrap() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    let (_, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let other_patient = KeyContext::patient_data(ctx.tenant, PatientId::new());
    assert_eq!(kms.unwrap(&wrapped, &other_patient).await.unwrap_err(), KmsError::InvalidCiphertext);
    let other_tenant = KeyContext::patient_data(TenantId::new(), ctx.patient);
    assert_eq!(kms.unwrap(&wrapped, &other_tenant).await.unwrap_err(), KmsError::InvalidCiphertext);
    assert_eq!(kms.rewrap(&wrapped, &other_patient).await.unwrap_err(), KmsError::InvalidCiphertext);
    fake.finish();
}

#[tokio::test]
async fn modified_or_relabelled_ciphertexts_do_not_unwrap() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    let (_, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let sent = server.requests().len();

    // Refused locally, before any request: the label disagrees with the prefix, or the bytes
    // are not a transit ciphertext at all.
    let mut relabelled = wrapped.clone();
    relabelled.kek_version = "2".into();
    assert_eq!(kms.unwrap(&relabelled, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
    for garbage in [b"".to_vec(), b"vault:v1:".to_vec(), vec![0xff; 8]] {
        let mut bad = wrapped.clone();
        bad.ciphertext = garbage;
        assert_eq!(kms.unwrap(&bad, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
    }
    let mut foreign = wrapped.clone();
    foreign.kek_id = "transit/other".into();
    assert!(matches!(kms.unwrap(&foreign, &ctx).await, Err(KmsError::KeyNotFound(_))));
    assert!(matches!(kms.rewrap(&foreign, &ctx).await, Err(KmsError::KeyNotFound(_))));
    assert_eq!(server.requests().len(), sent);

    // Refused by Vault: a flipped byte fails the GCM tag.
    let mut tampered = wrapped.clone();
    let last = tampered.ciphertext.len() - 3;
    tampered.ciphertext[last] = if tampered.ciphertext[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(kms.unwrap(&tampered, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
    fake.finish();
}

#[tokio::test]
async fn rewrap_after_rotation_bumps_the_version_and_keeps_the_key() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    let (dek, v1) = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(v1.kek_version, "1");

    fake.rotate();
    let v2 = kms.rewrap(&v1, &ctx).await.unwrap();
    assert_eq!((v2.kek_id.as_str(), v2.kek_version.as_str()), ("transit/praxis", "2"));
    assert!(v2.ciphertext.starts_with(b"vault:v2:"));
    assert_eq!(kms.key_info().version, "2");
    assert_eq!(kms.unwrap(&v2, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    assert_eq!(kms.unwrap(&v1, &ctx).await.unwrap().expose_secret(), dek.expose_secret(), "old versions still unwrap");
    let (_, fresh) = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(fresh.kek_version, "2", "new keys use the latest version");
    assert_eq!(server.requests().iter().filter(|r| r.method == "GET").count(), 1, "the key is read once");
    fake.finish();
}

#[tokio::test]
async fn health_check_reads_the_key_and_its_version() {
    let fake = FakeTransit::new(true);
    let server = fake.serve().await;
    let kms = kms(&server.url);
    kms.health_check().await.unwrap();
    assert_eq!(kms.key_info().version, "1");
    fake.rotate();
    kms.health_check().await.unwrap();
    assert_eq!(kms.key_info().version, "2");
    fake.finish();
}

#[tokio::test]
async fn a_key_without_derivation_is_refused_before_any_wrap() {
    let fake = FakeTransit::new(false);
    let server = fake.serve().await;
    let kms = kms(&server.url);
    let err = kms.health_check().await.unwrap_err();
    assert!(matches!(&err, KmsError::Other(m) if m.contains("derived=true")), "{err:?}");
    assert!(!err.is_retryable());
    let err = kms.generate_data_key(&patient_ctx()).await.unwrap_err();
    assert!(matches!(&err, KmsError::Other(m) if m.contains("derived=true")), "{err:?}");
    let dek = DataKey::generate().unwrap();
    assert!(kms.wrap(&dek, &patient_ctx()).await.is_err());
    assert!(server.requests().iter().all(|r| r.method == "GET"), "nothing was wrapped under a non-derived key");
    fake.finish();
}

#[tokio::test]
async fn approle_logs_in_once_and_again_when_the_token_is_revoked() {
    let fake = FakeTransit::new(true).with_namespace("admin/praxis");
    let server = fake.serve().await;
    let mut config = config(&server.url);
    config.namespace = Some("admin/praxis".into());
    config.auth = VaultAuth::AppRole {
        mount: DEFAULT_APPROLE_MOUNT.into(),
        role_id: ROLE_ID.into(),
        secret_id: Secret::new(SECRET_ID.into()),
    };
    let kms = VaultKms::new(&config).unwrap();
    let ctx = patient_ctx();
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    assert_eq!(fake.logins(), 1);
    let requests = server.requests();
    assert_eq!(requests[0].path, "/v1/auth/approle/login");
    assert_eq!(requests[0].header("x-vault-token"), None);
    assert!(requests[1..].iter().all(|r| r.header("x-vault-token") == Some(APPROLE_TOKEN)));
    assert!(requests.iter().all(|r| r.header("x-vault-namespace") == Some("admin/praxis")));

    // The token expires: the 403 makes the adapter log in again, once, and carry on.
    fake.revoke_tokens();
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    assert_eq!(fake.logins(), 2);
    fake.finish();
}
