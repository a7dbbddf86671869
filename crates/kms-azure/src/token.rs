//! Entra ID access tokens for the vault's resource, from the configured credential.
//!
//! - Client secret and workload identity: the OAuth 2.0 client credentials grant at
//!   `{authority}/{tenant}/oauth2/v2.0/token` with `scope={resource}/.default`
//!   (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
//! - Managed identity, by source:
//!   - instance metadata service (VMs, scale sets, AKS nodes): `GET
//!     http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`
//!     with `Metadata: true`
//!     (https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token);
//!   - App Service, Functions, Container Apps: `GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=...`
//!     with `X-IDENTITY-HEADER: $IDENTITY_HEADER`; the answer has `expires_on` (epoch seconds)
//!     rather than `expires_in`
//!     (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference);
//!   - Azure Arc: `GET $IDENTITY_ENDPOINT?api-version=2020-06-01&resource=...` with
//!     `Metadata: true` answers 401 with `WWW-Authenticate: Basic realm=<key file>`; the file,
//!     readable only by the agent's group, holds a secret sent back as `Authorization: Basic
//!     <secret>` (https://learn.microsoft.com/azure/azure-arc/servers/managed-identity-authentication).
//!
//! `client_id` selects a user-assigned identity (`client_id=` on IMDS and App Service; Arc has
//! only the machine's system-assigned identity).

use crate::{AzureCredential, AzureKeyVaultConfig, ManagedIdentitySource, error};
use crypto::KmsError;
use kernel::{Clock as _, Secret, SystemClock};
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// Largest Arc key file accepted (the SDKs' limit: the agent writes a short secret).
pub const ARC_KEY_FILE_MAX_BYTES: u64 = 4096;

/// A token and how long it is valid from now.
pub(crate) struct Token {
    pub token: Secret<String>,
    pub lifetime: Duration,
}

/// A failed fetch: the error, and the server's `Retry-After` if it gave one.
pub(crate) type Failure = (KmsError, Option<Duration>);

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Seconds from now: a number from Entra ID, a string from the metadata service.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    /// Epoch seconds (App Service's only expiry; a string there).
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

fn seconds(value: Option<&serde_json::Value>) -> Option<u64> {
    match value? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A token for `resource` (e.g. `https://vault.azure.net`) from `config`'s credential.
pub(crate) async fn fetch(
    http: &reqwest::Client,
    config: &AzureKeyVaultConfig,
    resource: &str,
) -> Result<Token, Failure> {
    let scope = format!("{resource}/.default");
    let request = match &config.credential {
        AzureCredential::ClientSecret { tenant_id, client_id, client_secret } => {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose_secret().as_str()),
                ("scope", scope.as_str()),
            ];
            http.post(token_url(config, tenant_id)).form(&form)
        }
        AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file } => {
            let assertion = Zeroizing::new(std::fs::read_to_string(token_file).map_err(|e| {
                (KmsError::AccessDenied(format!("token: federated token file {}: {e}", token_file.display())), None)
            })?);
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", assertion.trim()),
                ("scope", scope.as_str()),
            ];
            http.post(token_url(config, tenant_id)).form(&form)
        }
        AzureCredential::ManagedIdentity { client_id, source } => {
            let (endpoint, api_version) = match source {
                ManagedIdentitySource::Imds { endpoint } => (endpoint, "2018-02-01"),
                ManagedIdentitySource::AppService { endpoint, .. } => (endpoint, "2019-08-01"),
                ManagedIdentitySource::AzureArc { endpoint, .. } => (endpoint, "2020-06-01"),
            };
            let mut url = reqwest::Url::parse(endpoint)
                .map_err(|e| (KmsError::Other(format!("token: managed identity endpoint {endpoint:?}: {e}")), None))?;
            url.query_pairs_mut().append_pair("api-version", api_version).append_pair("resource", resource);
            if let Some(id) = client_id {
                url.query_pairs_mut().append_pair("client_id", id);
            }
            match source {
                ManagedIdentitySource::Imds { .. } => http.get(url).header("Metadata", "true"),
                ManagedIdentitySource::AppService { header, .. } => {
                    http.get(url).header("X-IDENTITY-HEADER", sensitive(header.expose_secret())?)
                }
                ManagedIdentitySource::AzureArc { key_dir, .. } => {
                    let secret = arc_secret(http, url.clone(), key_dir).await?;
                    let authorization = sensitive(&format!("Basic {}", secret.as_str()))?;
                    http.get(url).header("Metadata", "true").header(AUTHORIZATION, authorization)
                }
            }
        }
    };
    let response = request.send().await.map_err(|e| (kms_http::transport_error("token", &e), None))?;
    let status = response.status().as_u16();
    let retry_after = kms_http::retry_after(response.headers());
    let bytes =
        Zeroizing::new(response.bytes().await.map_err(|e| (kms_http::transport_error("token", &e), None))?.to_vec());
    if !(200..300).contains(&status) {
        return Err((refused(status, &bytes), retry_after));
    }
    let answer: TokenAnswer = serde_json::from_slice(&bytes)
        .map_err(|e| (KmsError::Other(format!("token: unexpected answer: {e}")), None))?;
    let lifetime = match (seconds(answer.expires_in.as_ref()), seconds(answer.expires_on.as_ref())) {
        (Some(expires_in), _) => expires_in,
        // The wall clock on purpose: expires_on is an instant on it.
        (None, Some(expires_on)) => {
            let now = u64::try_from(SystemClock.now().unix_timestamp()).unwrap_or(0);
            expires_on.saturating_sub(now)
        }
        (None, None) => 0,
    };
    Ok(Token { token: Secret::new(answer.access_token), lifetime: Duration::from_secs(lifetime) })
}

fn token_url(config: &AzureKeyVaultConfig, tenant_id: &str) -> String {
    format!("{}/{tenant_id}/oauth2/v2.0/token", config.authority_host.trim().trim_end_matches('/'))
}

fn sensitive(value: &str) -> Result<HeaderValue, Failure> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| (KmsError::Other("token: a credential is not a valid header value".to_owned()), None))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A refusal of the token endpoint: our credentials (invalid_client, a wrong tenant, no
/// identity assigned), unless it is transient.
fn refused(status: u16, body: &[u8]) -> KmsError {
    match error::map_status("token", status, body, false) {
        KmsError::Unavailable(m) => KmsError::Unavailable(m),
        KmsError::AccessDenied(m) | KmsError::KeyNotFound(m) | KmsError::KeyVersionRetired(m) | KmsError::Other(m) => {
            KmsError::AccessDenied(m)
        }
        KmsError::InvalidCiphertext => KmsError::AccessDenied(format!("token: HTTP {status}")),
    }
}

/// Azure Arc's first step: the endpoint answers 401 naming a key file in `realm`; the file's
/// content is the secret of the second request.
async fn arc_secret(http: &reqwest::Client, url: reqwest::Url, key_dir: &Path) -> Result<Zeroizing<String>, Failure> {
    let response = http
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .map_err(|e| (kms_http::transport_error("token", &e), None))?;
    let status = response.status().as_u16();
    let retry_after = kms_http::retry_after(response.headers());
    let realm = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Basic realm="))
        .map(|realm| realm.trim().trim_matches('"').to_owned());
    let bytes = response.bytes().await.map_err(|e| (kms_http::transport_error("token", &e), None))?;
    match (status, realm) {
        (401, Some(realm)) => arc_key_file(Path::new(&realm), key_dir).map_err(|e| (e, None)),
        (401, None) => Err((
            KmsError::AccessDenied(
                "token: the Azure Arc endpoint's 401 names no key file (WWW-Authenticate: Basic realm=...)".into(),
            ),
            None,
        )),
        _ if (200..300).contains(&status) => Err((
            KmsError::Other("token: the Azure Arc endpoint answered without asking for its key file".into()),
            None,
        )),
        _ => Err((refused(status, &bytes), retry_after)),
    }
}

/// The secret in the Arc key file `path`, after the SDKs' checks: the endpoint names the file,
/// so the file must be the agent's (a `.key` file directly in `key_dir`, at most
/// `ARC_KEY_FILE_MAX_BYTES`), or a compromised endpoint could make us read any file and send
/// it away.
pub(crate) fn arc_key_file(path: &Path, key_dir: &Path) -> Result<Zeroizing<String>, KmsError> {
    let refuse = |why: &str| {
        KmsError::AccessDenied(format!(
            "token: Azure Arc key file {}: {why}",
            kms_http::truncate(&path.display().to_string(), 200)
        ))
    };
    if path.parent() != Some(key_dir) {
        return Err(refuse(&format!("is not in the Arc agent's token directory {}", key_dir.display())));
    }
    if path.extension().and_then(|e| e.to_str()) != Some("key") {
        return Err(refuse("is not a .key file"));
    }
    let metadata = std::fs::metadata(path).map_err(|e| refuse(&e.to_string()))?;
    if !metadata.is_file() {
        return Err(refuse("is not a file"));
    }
    if metadata.len() > ARC_KEY_FILE_MAX_BYTES {
        return Err(refuse(&format!("is larger than {ARC_KEY_FILE_MAX_BYTES} bytes")));
    }
    let secret = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| refuse(&e.to_string()))?);
    Ok(Zeroizing::new(secret.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_small_key_file_in_the_agents_directory_is_read() {
        let root = std::env::temp_dir().join(format!("kms-azure-arc-unit-{}", std::process::id()));
        let agent = root.join("tokens");
        let nested = agent.join("nested");
        std::fs::create_dir_all(&nested).unwrap();
        let good = agent.join("abc.key");
        std::fs::write(&good, "0123456789abcdef\n").unwrap();
        assert_eq!(arc_key_file(&good, &agent).unwrap().as_str(), "0123456789abcdef");
        // The directory given with a trailing slash is the same directory.
        assert!(arc_key_file(&good, &root.join("tokens/")).is_ok());

        let not_key = agent.join("abc.txt");
        std::fs::write(&not_key, "x").unwrap();
        let big = agent.join("big.key");
        std::fs::write(&big, vec![b'a'; 4097]).unwrap();
        let at_limit = agent.join("limit.key");
        std::fs::write(&at_limit, vec![b'a'; 4096]).unwrap();
        assert!(arc_key_file(&at_limit, &agent).is_ok());
        let deeper = nested.join("abc.key");
        std::fs::write(&deeper, "x").unwrap();
        let outside = root.join("abc.key");
        std::fs::write(&outside, "x").unwrap();
        for (path, why) in [
            (&not_key, "not a .key file"),
            (&big, "larger than 4096 bytes"),
            (&deeper, "not in the Arc agent's token directory"),
            (&outside, "not in the Arc agent's token directory"),
            (&agent.join("../tokens/abc.key"), "not in the Arc agent's token directory"),
            (&agent.join("missing.key"), "No such file"),
            (&agent.join("nested.key"), "No such file"),
        ] {
            let error = arc_key_file(path, &agent).unwrap_err();
            assert!(matches!(&error, KmsError::AccessDenied(m) if m.contains(why)), "{path:?}: {error:?}");
        }
        std::fs::create_dir_all(agent.join("dir.key")).unwrap();
        assert!(
            matches!(arc_key_file(&agent.join("dir.key"), &agent), Err(KmsError::AccessDenied(m)) if m.contains("is not a file"))
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
