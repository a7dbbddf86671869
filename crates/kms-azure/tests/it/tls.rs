//! A vault behind TLS whose certificate a private CA issued (a private endpoint behind TLS
//! inspection): trusted with `ca_cert_pem`, refused without it, naming the certificate problem.
//! Each run makes its own CA and a certificate for `localhost` (`testkit::tls`).

use crate::keyvault::FakeKeyVault;
use crate::{config, patient_ctx};
use crypto::{DataKey, KeyManagement, KmsError};
use kms_azure::AzureKeyVault;
use kms_http::test_server::tls_front;

#[tokio::test]
async fn a_private_ca_is_trusted_for_the_vault_only_when_configured() {
    let dir = std::env::temp_dir().join(format!("kms-azure-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    testkit::tls::make_certificates(&dir);
    let (fake, server) = FakeKeyVault::start().await;
    let port = tls_front::start(&dir.join("server.pem"), &dir.join("server.key"), &server.url);
    let vault_url = format!("https://localhost:{port}");
    fake.set_public_url(&vault_url);
    // The vault behind TLS, Entra ID (the fake's token endpoint) over plain http.
    let mut config = config(&vault_url);
    config.authority_host.clone_from(&server.url);

    // Without the CA: refused at once, naming the certificate problem and the setting.
    let error = AzureKeyVault::new(&config).unwrap().health_check().await.unwrap_err();
    assert!(!error.is_retryable(), "{error:?}");
    assert!(
        matches!(&error, KmsError::Other(m) if m.contains("certificate is not trusted") && m.contains("ca_cert_file")),
        "{error:?}"
    );

    // With it: the vault is trusted.
    config.ca_cert_pem = Some(std::fs::read_to_string(dir.join("ca.pem")).unwrap());
    let kms = AzureKeyVault::new(&config).unwrap();
    kms.health_check().await.unwrap();
    let dek = DataKey::generate().unwrap();
    let wrapped = kms.wrap(&dek, &patient_ctx()).await.unwrap();
    assert_eq!(wrapped.kek_id, format!("{vault_url}/keys/praxis"));
    assert_eq!(kms.unwrap(&wrapped, &patient_ctx()).await.unwrap().expose_secret(), dek.expose_secret());
    fake.finish();
}
