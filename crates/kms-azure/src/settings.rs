//! The adapter's settings as the application's configuration spells them (`[kms.azure]`, or a
//! `[[kms.previous]]` entry with `backend = "azure"`), the one function that lists their
//! problems, and the adapter configuration they describe (with the Entra ID credential chain).

use crate::{AzureCredential, AzureKeyVaultConfig, is_name};
use crypto::{Kek, SettingProblem, SettingsPlace};
use kernel::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One RSA key of an Azure Key Vault (or Managed HSM), and how to get a token for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureSettings {
    /// The vault's URL, e.g. `https://praxis-kv.vault.azure.net`. Production requires
    /// `https://`.
    pub vault_url: String,
    /// The key's name (letters, digits, `-`).
    pub key_name: String,
    /// Wrap under this key version instead of the key's current one.
    pub key_version: Option<String>,
    /// How the adapter gets its Entra ID token (see [`AzureCredentialKind`]).
    pub credential: AzureCredentialKind,
    /// The Entra ID tenant (directory) id; default `AZURE_TENANT_ID` (set by AKS workload
    /// identity).
    pub tenant_id: Option<String>,
    /// The application (client) id; default `AZURE_CLIENT_ID`. With a managed identity: the
    /// user-assigned identity to use (unset: the system-assigned one).
    pub client_id: Option<String>,
    /// Secret of a service principal (`credential = "client_secret"`; e.g.
    /// `PRAXIS__KMS__AZURE__CLIENT_SECRET`).
    pub client_secret: Option<Secret<String>>,
    /// The federated token file of workload identity; default `AZURE_FEDERATED_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// The Entra ID authority; default `AZURE_AUTHORITY_HOST`, else the public cloud's.
    /// Production requires `https://`.
    pub authority_host: Option<String>,
}

/// How the adapter gets its token: a chain in `auto`, or one source named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AzureCredentialKind {
    /// The first that applies: a service principal when `client_secret` is set; workload
    /// identity when a federated token file is configured or `AZURE_FEDERATED_TOKEN_FILE` is
    /// set (AKS); otherwise the managed identity of the VM or node.
    #[default]
    Auto,
    /// AKS workload identity: the federated token file exchanged for a token, no secret held.
    WorkloadIdentity,
    /// The instance metadata service (VMs, VM scale sets).
    ManagedIdentity,
    /// A service principal's client secret.
    ClientSecret,
}

impl AzureSettings {
    /// Every problem of these settings at `place`, all at once (empty when there is none). The
    /// adapter checks the configuration it is built with by the same rules
    /// ([`AzureKeyVaultConfig::problems`]).
    pub fn problems(&self, place: &SettingsPlace<'_>) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.vault_url.trim().is_empty() {
            problems.push(place.missing("vault_url"));
        } else {
            problems.extend(place.check_url("vault_url", &self.vault_url));
        }
        if self.key_name.is_empty() {
            problems.push(place.missing("key_name"));
        } else if !is_name(&self.key_name, true) {
            problems.push(place.problem("key_name", "must be letters, digits and '-'"));
        }
        if let Some(version) = &self.key_version
            && !is_name(version, false)
        {
            problems.push(place.problem("key_version", "must be letters and digits"));
        }
        if self.key_id().len() > Kek::MAX_LABEL_LEN {
            // The key id is copied into every field ciphertext header with a one-byte length.
            problems.push(
                place.problem(
                    "key_name",
                    format!("vault_url/keys/key_name is longer than {} bytes", Kek::MAX_LABEL_LEN),
                ),
            );
        }
        if let Some(host) = &self.authority_host {
            problems.extend(place.check_url("authority_host", host));
        }
        for (setting, value) in [("tenant_id", &self.tenant_id), ("client_id", &self.client_id)] {
            if let Some(value) = value
                && !is_id(value)
            {
                problems.push(place.problem(setting, format!("{value:?} is not an id")));
            }
        }
        let has_secret = self.client_secret.as_ref().is_some_and(|s| !s.expose_secret().trim().is_empty());
        match self.credential {
            AzureCredentialKind::ClientSecret => {
                if !has_secret {
                    problems.push(place.problem(
                        "client_secret",
                        format!("required when {} = \"client_secret\"", place.path("credential")),
                    ));
                }
                if self.tenant_id.is_none() || self.client_id.is_none() {
                    problems
                        .push(place.problem("tenant_id", "tenant_id and client_id are required with a client secret"));
                }
            }
            AzureCredentialKind::WorkloadIdentity | AzureCredentialKind::ManagedIdentity if has_secret => {
                problems
                    .push(place.problem("client_secret", "is set but the credential is not client_secret; remove it"));
            }
            AzureCredentialKind::WorkloadIdentity
            | AzureCredentialKind::ManagedIdentity
            | AzureCredentialKind::Auto => {}
        }
        if let Some(file) = &self.token_file
            && file.as_os_str().is_empty()
        {
            problems.push(place.problem("token_file", "is empty"));
        }
        problems
    }

    /// The KEK id the adapter reports (`{vault_url}/keys/{key_name}`), by which a keyring routes
    /// unwraps.
    pub fn key_id(&self) -> String {
        format!("{}/keys/{}", self.vault_url.trim().trim_end_matches('/'), self.key_name)
    }

    /// The secret settings in use (path inside the section) and whether each is set.
    pub fn secret_settings(&self) -> Vec<(&'static str, bool)> {
        if self.client_secret.is_some() { vec![("client_secret", true)] } else { Vec::new() }
    }

    /// The adapter configuration these settings describe, with the default retry policy: the
    /// credential `credential` selects, unset ids, token file and authority filled from the
    /// `AZURE_*` variables that `env` reads (AKS workload identity sets them; a parameter so
    /// that the chain is testable). Errors name the missing setting and its variable.
    pub fn adapter_config(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<AzureKeyVaultConfig, String> {
        let from_env =
            |value: &Option<String>, name: &str| value.clone().or_else(|| env(name).filter(|v| !v.is_empty()));
        let tenant_id = from_env(&self.tenant_id, "AZURE_TENANT_ID");
        let client_id = from_env(&self.client_id, "AZURE_CLIENT_ID");
        let token_file = self
            .token_file
            .clone()
            .or_else(|| env("AZURE_FEDERATED_TOKEN_FILE").filter(|v| !v.is_empty()).map(PathBuf::from));
        let authority_host = from_env(&self.authority_host, "AZURE_AUTHORITY_HOST");
        let kind = match self.credential {
            AzureCredentialKind::Auto if self.client_secret.is_some() => AzureCredentialKind::ClientSecret,
            AzureCredentialKind::Auto if token_file.is_some() => AzureCredentialKind::WorkloadIdentity,
            AzureCredentialKind::Auto => AzureCredentialKind::ManagedIdentity,
            explicit => explicit,
        };
        let required = |value: Option<String>, setting: &str, variable: &str| {
            value.ok_or_else(|| format!("{setting} is required for this credential ({setting} or {variable})"))
        };
        let credential = match kind {
            AzureCredentialKind::ClientSecret => AzureCredential::ClientSecret {
                tenant_id: required(tenant_id, "tenant_id", "AZURE_TENANT_ID")?,
                client_id: required(client_id, "client_id", "AZURE_CLIENT_ID")?,
                client_secret: self.client_secret.clone().ok_or("client_secret is required for this credential")?,
            },
            AzureCredentialKind::WorkloadIdentity => AzureCredential::WorkloadIdentity {
                tenant_id: required(tenant_id, "tenant_id", "AZURE_TENANT_ID")?,
                client_id: required(client_id, "client_id", "AZURE_CLIENT_ID")?,
                token_file: token_file
                    .ok_or("token_file is required for workload identity (token_file or AZURE_FEDERATED_TOKEN_FILE)")?,
            },
            AzureCredentialKind::ManagedIdentity | AzureCredentialKind::Auto => {
                AzureCredential::ManagedIdentity { client_id }
            }
        };
        let mut config = AzureKeyVaultConfig::new(self.vault_url.clone(), self.key_name.clone(), credential);
        config.key_version.clone_from(&self.key_version);
        if let Some(host) = authority_host {
            config.authority_host = host;
        }
        Ok(config)
    }
}

impl AzureKeyVaultConfig {
    /// Every problem with this configuration (empty when there is none): the rules of
    /// [`AzureSettings::problems`] for settings handed over directly, and the retry policy's.
    pub fn problems(&self) -> Vec<String> {
        let mut settings = AzureSettings {
            vault_url: self.vault_url.clone(),
            key_name: self.key_name.clone(),
            key_version: self.key_version.clone(),
            authority_host: Some(self.authority_host.clone()),
            ..AzureSettings::default()
        };
        match &self.credential {
            AzureCredential::ClientSecret { tenant_id, client_id, client_secret } => {
                settings.credential = AzureCredentialKind::ClientSecret;
                settings.tenant_id = Some(tenant_id.clone());
                settings.client_id = Some(client_id.clone());
                settings.client_secret = Some(client_secret.clone());
            }
            AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file } => {
                settings.credential = AzureCredentialKind::WorkloadIdentity;
                settings.tenant_id = Some(tenant_id.clone());
                settings.client_id = Some(client_id.clone());
                settings.token_file = Some(token_file.clone());
            }
            AzureCredential::ManagedIdentity { client_id } => {
                settings.credential = AzureCredentialKind::ManagedIdentity;
                settings.client_id.clone_from(client_id);
            }
        }
        let mut problems: Vec<String> =
            settings.problems(&SettingsPlace::direct()).iter().map(ToString::to_string).collect();
        problems.extend(self.retry.problems("retry"));
        problems
    }
}

/// A tenant or client id: a GUID, or a tenant's domain name.
fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 127 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::Environment;
    use std::collections::HashMap;

    fn messages(settings: &AzureSettings, environment: Environment) -> Vec<String> {
        let place = SettingsPlace::section("kms.azure", "kms.backend", "azure", environment);
        settings.problems(&place).iter().map(ToString::to_string).collect()
    }

    fn key() -> AzureSettings {
        AzureSettings {
            vault_url: "https://praxis-kv.vault.azure.net".into(),
            key_name: "praxis".into(),
            ..AzureSettings::default()
        }
    }

    #[test]
    fn settings_problems_name_each_setting() {
        // Managed identity (the chain's last resort) needs nothing more.
        assert_eq!(messages(&key(), Environment::Production), Vec::<String>::new());
        assert_eq!(
            messages(&AzureSettings::default(), Environment::Development),
            [
                "kms.azure.vault_url: required when kms.backend = \"azure\"",
                "kms.azure.key_name: required when kms.backend = \"azure\"",
            ]
        );
        let bad = AzureSettings {
            vault_url: "http://praxis-kv.vault.azure.net".into(),
            key_name: "a/b".into(),
            key_version: Some("not/a-version".into()),
            credential: AzureCredentialKind::ClientSecret,
            client_id: Some("a b".into()),
            authority_host: Some("http://login.example".into()),
            token_file: Some(PathBuf::new()),
            ..AzureSettings::default()
        };
        assert_eq!(
            messages(&bad, Environment::Production),
            [
                "kms.azure.vault_url: must be https:// in production",
                "kms.azure.key_name: must be letters, digits and '-'",
                "kms.azure.key_version: must be letters and digits",
                "kms.azure.authority_host: must be https:// in production",
                "kms.azure.client_id: \"a b\" is not an id",
                "kms.azure.client_secret: required when kms.azure.credential = \"client_secret\"",
                "kms.azure.tenant_id: tenant_id and client_id are required with a client secret",
                "kms.azure.token_file: is empty",
            ]
        );
        let stray_secret = AzureSettings {
            credential: AzureCredentialKind::ManagedIdentity,
            client_secret: Some(Secret::new("test-secret".into())),
            ..key()
        };
        assert_eq!(
            messages(&stray_secret, Environment::Development),
            ["kms.azure.client_secret: is set but the credential is not client_secret; remove it"]
        );
        assert_eq!(stray_secret.secret_settings(), [("client_secret", true)]);
        assert_eq!(key().secret_settings(), []);
    }

    fn resolve(settings: &AzureSettings, env: &[(&str, &str)]) -> Result<(AzureCredential, String), String> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        settings.adapter_config(&|name| env.get(name).cloned()).map(|config| (config.credential, config.authority_host))
    }

    #[test]
    fn the_credential_chain_picks_the_first_that_applies() {
        let ids = [("AZURE_TENANT_ID", "tenant-a"), ("AZURE_CLIENT_ID", "client-a")];
        // Nothing configured, no AKS environment: the managed identity.
        let (credential, authority) = resolve(&key(), &[]).unwrap();
        assert_eq!(credential, AzureCredential::ManagedIdentity { client_id: None });
        assert_eq!(authority, crate::DEFAULT_AUTHORITY_HOST);
        // AKS workload identity: everything from the environment the webhook sets.
        let aks = [
            ids[0],
            ids[1],
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_AUTHORITY_HOST", "https://login.example"),
        ];
        let (credential, authority) = resolve(&key(), &aks).unwrap();
        assert_eq!(
            credential,
            AzureCredential::WorkloadIdentity {
                tenant_id: "tenant-a".into(),
                client_id: "client-a".into(),
                token_file: "/var/run/token".into()
            }
        );
        assert_eq!(authority, "https://login.example");
        // A configured client secret wins; configured ids win over the environment.
        let secret = Secret::new("test-secret".to_owned());
        let settings =
            AzureSettings { client_secret: Some(secret.clone()), client_id: Some("client-b".into()), ..key() };
        let (credential, _) = resolve(&settings, &aks).unwrap();
        assert_eq!(
            credential,
            AzureCredential::ClientSecret {
                tenant_id: "tenant-a".into(),
                client_id: "client-b".into(),
                client_secret: secret
            }
        );
        // Named explicitly but incomplete: the error names the setting and its variable.
        let settings = AzureSettings { credential: AzureCredentialKind::WorkloadIdentity, ..key() };
        let error = resolve(&settings, &[ids[1]]).unwrap_err();
        assert!(error.contains("tenant_id") && error.contains("AZURE_TENANT_ID"), "{error}");
        let error = resolve(&settings, &ids).unwrap_err();
        assert!(error.contains("AZURE_FEDERATED_TOKEN_FILE"), "{error}");
    }
}
