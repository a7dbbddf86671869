//! The adapter's settings as the application's configuration spells them (`[kms.vault]`, or a
//! `[[kms.previous]]` entry with `backend = "vault"`), the one function that lists their
//! problems, and the adapter configuration they describe.

use crate::{DEFAULT_APPROLE_MOUNT, DEFAULT_MOUNT, VaultAuth, VaultKmsConfig};
use crypto::{Kek, KmsError, SettingProblem, SettingsPlace};
use kernel::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One key of HashiCorp Vault's transit engine, created with `derived=true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultSettings {
    /// Vault's address, e.g. `https://vault.internal:8200` (the active node or its load
    /// balancer: redirects are not followed). Production requires `https://`.
    pub address: String,
    /// The transit engine's mount path.
    pub mount: String,
    /// The transit key's name.
    pub key_name: String,
    /// Token authentication (secret; e.g. `PRAXIS__KMS__VAULT__TOKEN`). Renewing it is the
    /// deployment's job (Vault Agent). Set this or `approle`, not both.
    pub token: Option<Secret<String>>,
    /// AppRole authentication: the adapter logs in and renews by itself.
    pub approle: Option<VaultAppRoleSettings>,
    /// Vault Enterprise / HCP namespace.
    pub namespace: Option<String>,
    /// PEM file with extra CA certificates to trust (a private Vault CA), besides Mozilla's.
    pub ca_cert_file: Option<PathBuf>,
}

impl Default for VaultSettings {
    fn default() -> Self {
        Self {
            address: String::new(),
            mount: DEFAULT_MOUNT.into(),
            key_name: String::new(),
            token: None,
            approle: None,
            namespace: None,
            ca_cert_file: None,
        }
    }
}

/// `approle` of [`VaultSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultAppRoleSettings {
    /// Where the AppRole auth method is mounted.
    pub mount: String,
    pub role_id: String,
    /// Secret (e.g. `PRAXIS__KMS__VAULT__APPROLE__SECRET_ID`).
    pub secret_id: Option<Secret<String>>,
}

impl Default for VaultAppRoleSettings {
    fn default() -> Self {
        Self { mount: DEFAULT_APPROLE_MOUNT.into(), role_id: String::new(), secret_id: None }
    }
}

impl VaultSettings {
    /// Every problem of these settings at `place`, all at once (empty when there is none). The
    /// adapter checks the configuration it is built with by the same rules
    /// ([`VaultKmsConfig::problems`]).
    pub fn problems(&self, place: &SettingsPlace<'_>) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.address.trim().is_empty() {
            problems.push(place.missing("address"));
        } else {
            problems.extend(place.check_url("address", &self.address));
        }
        if !is_path(&self.mount) {
            problems.push(place.problem("mount", format!("{:?} is not a Vault path such as transit", self.mount)));
        }
        if self.key_name.is_empty() {
            problems.push(place.missing("key_name"));
        } else if !is_segment(&self.key_name) {
            problems.push(place.problem("key_name", "must be letters, digits, '.', '_' or '-'"));
        }
        if self.key_id().len() > Kek::MAX_LABEL_LEN {
            // The key id is copied into every field ciphertext header with a one-byte length.
            problems
                .push(place.problem("key_name", format!("mount/key_name is longer than {} bytes", Kek::MAX_LABEL_LEN)));
        }
        match (&self.token, &self.approle) {
            (Some(_), Some(_)) => problems.push(place.problem("token", "set either token or approle, not both")),
            (None, None) => problems.push(place.problem(
                "token",
                format!("{} (or {}): how Praxis authenticates to Vault", place.required(), place.path("approle")),
            )),
            (Some(token), None) => {
                if !is_header_value(token.expose_secret()) {
                    problems.push(place.problem("token", "is empty or not a valid header value"));
                }
            }
            (None, Some(approle)) => {
                if !is_path(&approle.mount) {
                    problems.push(place.problem("approle.mount", "is not a Vault path"));
                }
                if approle.role_id.trim().is_empty() {
                    problems.push(place.missing("approle.role_id"));
                }
                if approle.secret_id.as_ref().is_none_or(|id| id.expose_secret().trim().is_empty()) {
                    problems.push(place.missing("approle.secret_id"));
                }
            }
        }
        if let Some(namespace) = &self.namespace
            && !is_path(namespace.trim_end_matches('/'))
        {
            problems.push(place.problem("namespace", format!("{namespace:?} is not a Vault namespace path")));
        }
        if let Some(file) = &self.ca_cert_file
            && file.as_os_str().is_empty()
        {
            problems.push(place.problem("ca_cert_file", "is empty"));
        }
        problems
    }

    /// The KEK id the adapter reports (`{mount}/{key_name}`), by which a keyring routes unwraps.
    pub fn key_id(&self) -> String {
        format!("{}/{}", self.mount, self.key_name)
    }

    /// The secret settings in use (path inside the section) and whether each is set.
    pub fn secret_settings(&self) -> Vec<(&'static str, bool)> {
        match &self.approle {
            None => vec![("token", self.token.is_some())],
            Some(approle) => vec![("approle.secret_id", approle.secret_id.is_some())],
        }
    }

    /// The adapter configuration these settings describe, with the default retry policy. Reads
    /// `ca_cert_file`. Errors name the setting, never a secret.
    pub fn adapter_config(&self) -> Result<VaultKmsConfig, KmsError> {
        let auth = match (&self.token, &self.approle) {
            (Some(token), None) => VaultAuth::Token(token.clone()),
            (None, Some(approle)) => VaultAuth::AppRole {
                mount: approle.mount.clone(),
                role_id: approle.role_id.clone(),
                secret_id: approle.secret_id.clone().unwrap_or_default(),
            },
            _ => return Err(KmsError::Other("set exactly one of token and approle".to_owned())),
        };
        let mut config = VaultKmsConfig::new(self.address.clone(), self.key_name.clone(), auth);
        config.mount.clone_from(&self.mount);
        config.namespace.clone_from(&self.namespace);
        if let Some(file) = &self.ca_cert_file {
            let pem = std::fs::read_to_string(file)
                .map_err(|e| KmsError::Other(format!("ca_cert_file: cannot read {}: {e}", file.display())))?;
            config.ca_cert_pem = Some(pem);
        }
        Ok(config)
    }
}

impl VaultKmsConfig {
    /// Every problem with this configuration (empty when there is none): the rules of
    /// [`VaultSettings::problems`] for settings handed over directly, and the retry policy's.
    pub fn problems(&self) -> Vec<String> {
        let (token, approle) = match &self.auth {
            VaultAuth::Token(token) => (Some(token.clone()), None),
            VaultAuth::AppRole { mount, role_id, secret_id } => (
                None,
                Some(VaultAppRoleSettings {
                    mount: mount.clone(),
                    role_id: role_id.clone(),
                    secret_id: Some(secret_id.clone()),
                }),
            ),
        };
        let settings = VaultSettings {
            address: self.address.clone(),
            mount: self.mount.clone(),
            key_name: self.key_name.clone(),
            token,
            approle,
            namespace: self.namespace.clone(),
            ca_cert_file: None,
        };
        let mut problems: Vec<String> =
            settings.problems(&SettingsPlace::direct()).iter().map(ToString::to_string).collect();
        problems.extend(self.retry.problems("retry"));
        problems
    }
}

pub(crate) fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn is_path(s: &str) -> bool {
    !s.is_empty() && s.split('/').all(is_segment)
}

pub(crate) fn is_header_value(s: &str) -> bool {
    !s.trim().is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::Environment;

    fn place(environment: Environment) -> SettingsPlace<'static> {
        SettingsPlace::section("kms.vault", "kms.backend", "vault", environment)
    }

    fn messages(settings: &VaultSettings, environment: Environment) -> Vec<String> {
        settings.problems(&place(environment)).iter().map(ToString::to_string).collect()
    }

    fn token_settings() -> VaultSettings {
        VaultSettings {
            address: "https://vault.internal:8200".into(),
            key_name: "praxis".into(),
            token: Some(Secret::new("test-token".into())),
            ..VaultSettings::default()
        }
    }

    #[test]
    fn settings_problems_name_each_setting() {
        assert_eq!(messages(&token_settings(), Environment::Production), Vec::<String>::new());
        let found = messages(&VaultSettings::default(), Environment::Development);
        assert_eq!(
            found,
            [
                "kms.vault.address: required when kms.backend = \"vault\"",
                "kms.vault.key_name: required when kms.backend = \"vault\"",
                "kms.vault.token: required when kms.backend = \"vault\" (or kms.vault.approle): how Praxis authenticates to Vault",
            ]
        );

        let mut bad = token_settings();
        bad.address = "http://vault.internal:8200".into();
        bad.mount = "transit/../sys".into();
        bad.key_name = "a/b".into();
        bad.approle = Some(VaultAppRoleSettings::default());
        bad.namespace = Some("a b".into());
        bad.ca_cert_file = Some(PathBuf::new());
        let found = messages(&bad, Environment::Production);
        assert_eq!(
            found,
            [
                "kms.vault.address: must be https:// in production",
                "kms.vault.mount: \"transit/../sys\" is not a Vault path such as transit",
                "kms.vault.key_name: must be letters, digits, '.', '_' or '-'",
                "kms.vault.token: set either token or approle, not both",
                "kms.vault.namespace: \"a b\" is not a Vault namespace path",
                "kms.vault.ca_cert_file: is empty",
            ]
        );

        bad.token = None;
        let found = messages(&bad, Environment::Development);
        assert!(found.contains(&"kms.vault.approle.role_id: required when kms.backend = \"vault\"".to_owned()));
        assert!(found.contains(&"kms.vault.approle.secret_id: required when kms.backend = \"vault\"".to_owned()));
    }

    #[test]
    fn settings_describe_the_adapter_configuration_and_their_secrets() {
        let settings = token_settings();
        assert_eq!(settings.key_id(), "transit/praxis");
        assert_eq!(settings.secret_settings(), [("token", true)]);
        let config = settings.adapter_config().unwrap();
        assert_eq!(config.auth, VaultAuth::Token(Secret::new("test-token".into())));
        assert!(config.problems().is_empty(), "{:?}", config.problems());

        let approle = VaultSettings {
            token: None,
            approle: Some(VaultAppRoleSettings { role_id: "praxis".into(), ..VaultAppRoleSettings::default() }),
            ..token_settings()
        };
        assert_eq!(approle.secret_settings(), [("approle.secret_id", false)]);
        let missing_ca = VaultSettings { ca_cert_file: Some("/nonexistent/vault-ca.pem".into()), ..token_settings() };
        let error = missing_ca.adapter_config().unwrap_err().to_string();
        assert!(error.contains("ca_cert_file: cannot read /nonexistent/vault-ca.pem"), "{error}");
    }
}
