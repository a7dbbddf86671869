//! The token audience from the vault's 401 challenge, and the managed identity sources against
//! the fake's endpoints (shapes from Microsoft's REST references, named in the fake).

use crate::keyvault::{
    APP_SERVICE_PATH, ARC_PATH, CLIENT_ID, FakeKeyVault, IDENTITY_HEADER, IMDS_PATH, KEY_VAULT_RESOURCE,
};
use crate::{config, patient_ctx};
use crypto::{DataKey, KeyManagement, KmsError};
use kernel::Secret;
use kms_azure::{AzureCredential, AzureKeyVault, ManagedIdentitySource};
use std::path::PathBuf;

/// A fresh directory of this test run.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kms-azure-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Wraps and unwraps one key: the token works for the vault.
async fn round_trip(kms: &AzureKeyVault) {
    let dek = DataKey::generate().unwrap();
    let wrapped = kms.wrap(&dek, &patient_ctx()).await.unwrap();
    assert_eq!(kms.unwrap(&wrapped, &patient_ctx()).await.unwrap().expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn a_challenge_naming_a_resource_the_vault_does_not_belong_to_gets_no_token() {
    // The fake at 127.0.0.1 answers, as Key Vault does, `resource="https://vault.azure.net"`:
    // to a client that reached 127.0.0.1, that is some server asking for a Key Vault token.
    // Likewise a server asking for a token to Azure Resource Manager.
    for resource in [KEY_VAULT_RESOURCE, "https://management.azure.com"] {
        let (fake, server) = FakeKeyVault::start_as(resource, None).await;
        let mut config = config(&server.url);
        config.resource = None;
        let kms = AzureKeyVault::new(&config).unwrap();
        let error = kms.wrap(&DataKey::generate().unwrap(), &patient_ctx()).await.unwrap_err();
        assert!(
            matches!(&error, KmsError::Other(m) if m.contains("refusing") && m.contains(resource) && m.contains("127.0.0.1")),
            "{error:?}"
        );
        assert!(!error.is_retryable());
        // One request, without a token and without the wrapped key; no token was requested.
        let requests = server.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        assert_eq!(requests[0].path, "/keys/praxis/wrapkey?api-version=7.4");
        assert_eq!(requests[0].header("authorization"), None);
        assert!(requests[0].body.is_empty(), "the DEK must not be sent before the vault is believed");
        assert_eq!(fake.tokens_issued(), 0);
    }
}

#[tokio::test]
async fn a_configured_resource_is_the_token_audience() {
    // A Managed HSM reached under a name of one's own: its resource, configured.
    let (fake, server) = FakeKeyVault::start_as("https://managedhsm.azure.net", None).await;
    let mut config = config(&server.url);
    config.resource = Some("https://managedhsm.azure.net".into());
    round_trip(&AzureKeyVault::new(&config).unwrap()).await;
    // The fake checked `scope=https://managedhsm.azure.net/.default`; no challenge round trip.
    let requests = server.requests();
    assert!(requests[0].path.ends_with("/oauth2/v2.0/token"), "{requests:#?}");
    assert_eq!(fake.tokens_issued(), 1);
    fake.finish();
}

fn managed_identity(
    config: &mut kms_azure::AzureKeyVaultConfig,
    client_id: Option<&str>,
    source: ManagedIdentitySource,
) {
    config.credential = AzureCredential::ManagedIdentity { client_id: client_id.map(str::to_owned), source };
}

#[tokio::test]
async fn the_instance_metadata_service_gives_the_token() {
    let (fake, server) = FakeKeyVault::start().await;
    let mut config = config(&server.url);
    managed_identity(&mut config, None, ManagedIdentitySource::Imds { endpoint: format!("{}{IMDS_PATH}", server.url) });
    round_trip(&AzureKeyVault::new(&config).unwrap()).await;
    let token = &server.requests()[0];
    assert_eq!(token.path, format!("{IMDS_PATH}?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"));
    assert_eq!(token.header("metadata"), Some("true"));
    fake.finish();
}

#[tokio::test]
async fn app_service_functions_and_container_apps_give_the_token_for_their_identity_header() {
    let (fake, server) = FakeKeyVault::start().await;
    let endpoint = format!("{}{APP_SERVICE_PATH}", server.url);
    let mut config = config(&server.url);
    let source = |header: &str| ManagedIdentitySource::AppService {
        endpoint: endpoint.clone(),
        header: Secret::new(header.into()),
    };
    // A user-assigned identity, named by client_id.
    managed_identity(&mut config, Some(CLIENT_ID), source(IDENTITY_HEADER));
    round_trip(&AzureKeyVault::new(&config).unwrap()).await;
    let token = &server.requests()[0];
    assert_eq!(
        token.path,
        format!(
            "{APP_SERVICE_PATH}?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net&client_id={CLIENT_ID}"
        )
    );
    assert_eq!(token.header("x-identity-header"), Some(IDENTITY_HEADER));
    assert_eq!(fake.tokens_issued(), 1, "expires_on (a string of epoch seconds) made the token cacheable");
    fake.finish();

    // A wrong header: the platform refuses, the adapter says the credentials were refused.
    let (_fake, server) = FakeKeyVault::start().await;
    let mut config = crate::config(&server.url);
    managed_identity(
        &mut config,
        None,
        ManagedIdentitySource::AppService {
            endpoint: format!("{}{APP_SERVICE_PATH}", server.url),
            header: Secret::new("another-header".into()),
        },
    );
    let error = AzureKeyVault::new(&config).unwrap().health_check().await.unwrap_err();
    assert!(matches!(&error, KmsError::AccessDenied(m) if m.contains("token: HTTP 401")), "{error:?}");
}

#[tokio::test]
async fn azure_arc_gives_the_token_for_the_secret_in_the_agents_key_file() {
    let (fake, server) = FakeKeyVault::start().await;
    let key_dir = temp_dir("arc-tokens");
    fake.arc_key_file(&key_dir);
    let mut config = config(&server.url);
    let endpoint = format!("{}{ARC_PATH}", server.url);
    managed_identity(&mut config, None, ManagedIdentitySource::AzureArc { endpoint: endpoint.clone(), key_dir });
    round_trip(&AzureKeyVault::new(&config).unwrap()).await;
    let requests = server.requests();
    let path = format!("{ARC_PATH}?api-version=2020-06-01&resource=https%3A%2F%2Fvault.azure.net");
    // First without a secret (answered 401 naming the key file), then with it.
    assert_eq!(requests[0].path, path);
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(requests[0].header("metadata"), Some("true"));
    assert_eq!(requests[1].path, path);
    assert!(requests[1].header("authorization").is_some_and(|a| a.starts_with("Basic ")));
    fake.finish();

    // An endpoint naming a key file outside the agent's directory is not believed: the file is
    // not read, nothing is sent.
    let (fake, server) = FakeKeyVault::start().await;
    let elsewhere = temp_dir("arc-elsewhere");
    fake.arc_key_file(&elsewhere);
    let mut config = crate::config(&server.url);
    managed_identity(
        &mut config,
        None,
        ManagedIdentitySource::AzureArc {
            endpoint: format!("{}{ARC_PATH}", server.url),
            key_dir: temp_dir("arc-agent-dir"),
        },
    );
    let error = AzureKeyVault::new(&config).unwrap().health_check().await.unwrap_err();
    assert!(
        matches!(&error, KmsError::AccessDenied(m) if m.contains("is not in the Arc agent's token directory")),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 1, "the secret was never sent");
}
