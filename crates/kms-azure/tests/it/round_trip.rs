//! The happy paths against the stateful fake: generate, wrap, unwrap, rotation, health, tokens.

use crate::keyvault::{ACCESS_TOKEN, FakeKeyVault};
use crate::{kms, patient_ctx};
use crypto::{DataKey, KeyManagement, KmsError};
use kms_azure::BACKEND;

#[tokio::test]
async fn generated_keys_unwrap_to_the_same_bytes() {
    let (fake, server) = FakeKeyVault::start().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    assert_eq!(kms.key_info().version, "", "unknown before the first call");
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let info = kms.key_info();
    assert_eq!(info.backend, BACKEND);
    assert_eq!(info.key_id, format!("{}/keys/praxis", server.url));
    assert_eq!(wrapped.kek_id, info.key_id);
    assert_eq!(wrapped.kek_version, fake.current_version());
    assert_eq!(info.version, fake.current_version());
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());

    let requests = server.requests();
    let paths: Vec<_> = requests.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(
        paths,
        [
            format!("POST /{}/oauth2/v2.0/token", crate::keyvault::TENANT),
            "POST /keys/praxis/wrapkey?api-version=7.4".to_owned(),
            format!("POST /keys/praxis/{}/unwrapkey?api-version=7.4", wrapped.kek_version),
        ]
    );
    assert!(requests[1..].iter().all(|r| r.header("authorization") == Some(&format!("Bearer {ACCESS_TOKEN}"))));
    assert_eq!(requests[1].json()["alg"], "RSA-OAEP-256");
    assert_eq!(fake.tokens_issued(), 1, "the token is cached");
    fake.finish();
}

#[tokio::test]
async fn keys_wrapped_before_a_rotation_still_unwrap_and_rewrap_moves_them() {
    let (fake, server) = FakeKeyVault::start().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    let dek = DataKey::generate().unwrap();
    let old = kms.wrap(&dek, &ctx).await.unwrap();
    fake.rotate();
    let new = kms.rewrap(&old, &ctx).await.unwrap();
    assert_ne!(new.kek_version, old.kek_version);
    assert_eq!(new.kek_version, fake.current_version());
    assert_eq!(kms.key_info().version, fake.current_version());
    assert_eq!(kms.unwrap(&old, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    assert_eq!(kms.unwrap(&new, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    fake.finish();
}

#[tokio::test]
async fn foreign_modified_or_relabelled_keys_do_not_unwrap() {
    let (fake, server) = FakeKeyVault::start().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    let (_, wrapped) = kms.generate_data_key(&ctx).await.unwrap();

    let mut foreign = wrapped.clone();
    foreign.kek_id = "https://other.vault.azure.net/keys/praxis".into();
    assert!(matches!(kms.unwrap(&foreign, &ctx).await, Err(KmsError::KeyNotFound(_))));
    let mut traversal = wrapped.clone();
    traversal.kek_version = "../../secrets/x".into();
    assert_eq!(kms.unwrap(&traversal, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
    let sent = server.requests().len();

    let mut tampered = wrapped.clone();
    tampered.ciphertext[20] ^= 1;
    assert_eq!(kms.unwrap(&tampered, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
    let mut unknown_version = wrapped.clone();
    unknown_version.kek_version = "0123456789abcdef0123456789abcdef".into();
    assert!(matches!(kms.unwrap(&unknown_version, &ctx).await, Err(KmsError::KeyNotFound(_))));
    assert_eq!(server.requests().len(), sent + 2);
    fake.finish();
}

#[tokio::test]
async fn the_context_is_not_bound_by_azure() {
    // Documented limit: Key Vault's wrapKey has no context, so another patient's context
    // unwraps too. The binding comes from the field AAD and the DEK row's key.
    let (fake, server) = FakeKeyVault::start().await;
    let kms = kms(&server.url);
    let (dek, wrapped) = kms.generate_data_key(&patient_ctx()).await.unwrap();
    assert_eq!(kms.unwrap(&wrapped, &patient_ctx()).await.unwrap().expose_secret(), dek.expose_secret());
    fake.finish();
}

#[tokio::test]
async fn health_check_reads_the_key() {
    let (fake, server) = FakeKeyVault::start().await;
    let kms = kms(&server.url);
    kms.health_check().await.unwrap();
    assert_eq!(kms.key_info().version, fake.current_version());
    let get = server.requests().pop().unwrap();
    assert_eq!((get.method.as_str(), get.path.as_str()), ("GET", "/keys/praxis?api-version=7.4"));
    fake.finish();
}

#[tokio::test]
async fn an_expired_token_is_replaced_once() {
    let (fake, server) = FakeKeyVault::start().await;
    let kms = kms(&server.url);
    let ctx = patient_ctx();
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    fake.expire_tokens();
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    assert_eq!(fake.tokens_issued(), 2);
    fake.finish();
}
