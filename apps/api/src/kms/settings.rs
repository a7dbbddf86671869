//! `[kms]`: the selector of the key management backends. This is the one place in the API that
//! lists them; each backend's settings, the one function that checks them, and its secrets
//! belong to its adapter crate (`kms-local`, `kms-aws`, `kms-vault`, `kms-azure`), each behind
//! the cargo feature of the same name.
//!
//! As written in the configuration: `kms.backend` names the primary, whose settings are its
//! section (`[kms.vault]`); every `[[kms.previous]]` entry is tagged the same way
//! (`backend = "local"`) with its settings beside the tag.

use crypto::{SettingProblem, SettingsPlace};
use kernel::Environment;
use serde::{Deserialize, Serialize};

// Without any adapter there is nothing `kms.backend` could select: such a binary could never
// start, so it is refused when built.
#[cfg(not(any(feature = "kms-local", feature = "kms-aws", feature = "kms-vault", feature = "kms-azure")))]
compile_error!("build at least one KMS adapter (cargo features kms-local, kms-aws, kms-vault, kms-azure)");

/// The name of a key management backend: `kms.backend`, and `praxis keys migrate --to`. Known
/// whether or not this binary was built with its adapter, so that a missing one is reported by
/// name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsBackend {
    /// A key file on local disk: development only, refused in production.
    #[default]
    Local,
    /// AWS KMS, one symmetric key (`kms.aws`).
    Aws,
    /// HashiCorp Vault's transit engine, one derived key (`kms.vault`).
    Vault,
    /// Azure Key Vault (or Managed HSM), one RSA key (`kms.azure`).
    Azure,
}

impl KmsBackend {
    /// Every backend, in the order the documentation lists them.
    pub const ALL: [KmsBackend; 4] = [Self::Local, Self::Aws, Self::Vault, Self::Azure];

    /// The name used in the configuration (`kms.backend`, `praxis keys migrate --to`), which is
    /// also the name of the primary's section (`[kms.<name>]`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Aws => "aws",
            Self::Vault => "vault",
            Self::Azure => "azure",
        }
    }

    /// The cargo feature that builds this adapter in.
    pub const fn feature(self) -> &'static str {
        match self {
            Self::Local => "kms-local",
            Self::Aws => "kms-aws",
            Self::Vault => "kms-vault",
            Self::Azure => "kms-azure",
        }
    }
}

/// One backend's settings, tagged by `backend`: the type of each `[[kms.previous]]` entry, and
/// what [`KmsConfig::primary`] makes of the primary's section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum KmsSettings {
    #[cfg(feature = "kms-local")]
    Local(kms_local::LocalKmsConfig),
    #[cfg(feature = "kms-aws")]
    Aws(kms_aws::AwsKmsConfig),
    #[cfg(feature = "kms-vault")]
    Vault(kms_vault::VaultSettings),
    #[cfg(feature = "kms-azure")]
    Azure(kms_azure::AzureSettings),
}

impl KmsSettings {
    pub const fn backend(&self) -> KmsBackend {
        match self {
            #[cfg(feature = "kms-local")]
            Self::Local(_) => KmsBackend::Local,
            #[cfg(feature = "kms-aws")]
            Self::Aws(_) => KmsBackend::Aws,
            #[cfg(feature = "kms-vault")]
            Self::Vault(_) => KmsBackend::Vault,
            #[cfg(feature = "kms-azure")]
            Self::Azure(_) => KmsBackend::Azure,
        }
    }

    /// The KEK id the adapter will report (`KekInfo::key_id`), by which the keyring routes
    /// unwraps: two configured backends must not share one.
    pub fn kek_id(&self) -> String {
        match self {
            #[cfg(feature = "kms-local")]
            Self::Local(local) => local.key_id.clone(),
            #[cfg(feature = "kms-aws")]
            Self::Aws(aws) => aws.key_id.clone(),
            #[cfg(feature = "kms-vault")]
            Self::Vault(vault) => vault.key_id(),
            #[cfg(feature = "kms-azure")]
            Self::Azure(azure) => azure.key_id(),
        }
    }

    /// Every problem of these settings at `place`, by the adapter's own rules.
    fn problems(&self, place: &SettingsPlace<'_>) -> Vec<SettingProblem> {
        match self {
            #[cfg(feature = "kms-local")]
            Self::Local(local) => local.problems(place),
            #[cfg(feature = "kms-aws")]
            Self::Aws(aws) => aws.problems(place),
            #[cfg(feature = "kms-vault")]
            Self::Vault(vault) => vault.problems(place),
            #[cfg(feature = "kms-azure")]
            Self::Azure(azure) => azure.problems(place),
        }
    }

    /// The secret settings in use (path inside the section) and whether each is set.
    fn secret_settings(&self) -> Vec<(&'static str, bool)> {
        match self {
            #[cfg(feature = "kms-local")]
            Self::Local(_) => Vec::new(),
            #[cfg(feature = "kms-aws")]
            Self::Aws(_) => Vec::new(),
            #[cfg(feature = "kms-vault")]
            Self::Vault(vault) => vault.secret_settings(),
            #[cfg(feature = "kms-azure")]
            Self::Azure(azure) => azure.secret_settings(),
        }
    }
}

/// `[kms]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KmsConfig {
    /// The primary backend: wraps every new data key, and `praxis keys rotate|migrate` moves
    /// every stored data key under it. Its settings are its section below.
    pub backend: KmsBackend,
    #[cfg(feature = "kms-local")]
    pub local: kms_local::LocalKmsConfig,
    #[cfg(feature = "kms-aws")]
    pub aws: kms_aws::AwsKmsConfig,
    #[cfg(feature = "kms-vault")]
    pub vault: kms_vault::VaultSettings,
    #[cfg(feature = "kms-azure")]
    pub azure: kms_azure::AzureSettings,
    /// Older backends kept for unwrapping only, while `praxis keys migrate` moves their data
    /// keys to the primary.
    pub previous: Vec<KmsSettings>,
}

/// Which configured backend: the primary, or the `kms.previous` entry at an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsSlot {
    Primary,
    Previous(usize),
}

impl KmsSlot {
    /// The path of the slot's settings: `kms.vault`, or `kms.previous[1]`.
    pub fn section(self, backend: KmsBackend) -> String {
        match self {
            Self::Primary => format!("kms.{}", backend.as_str()),
            Self::Previous(index) => format!("kms.previous[{index}]"),
        }
    }

    /// The path of the setting that chose the slot's backend.
    pub fn selector(self) -> String {
        match self {
            Self::Primary => "kms.backend".to_owned(),
            Self::Previous(index) => format!("kms.previous[{index}].backend"),
        }
    }
}

impl KmsConfig {
    /// The primary's settings; `None` when this binary was built without its adapter.
    pub fn primary(&self) -> Option<KmsSettings> {
        let sections: &[KmsSettings] = &[
            #[cfg(feature = "kms-local")]
            KmsSettings::Local(self.local.clone()),
            #[cfg(feature = "kms-aws")]
            KmsSettings::Aws(self.aws.clone()),
            #[cfg(feature = "kms-vault")]
            KmsSettings::Vault(self.vault.clone()),
            #[cfg(feature = "kms-azure")]
            KmsSettings::Azure(self.azure.clone()),
        ];
        sections.iter().find(|section| section.backend() == self.backend).cloned()
    }

    /// The primary (when built in), then every `kms.previous` entry, each with its slot.
    pub fn all(&self) -> Vec<(KmsSlot, KmsSettings)> {
        let previous = self.previous.iter().enumerate().map(|(index, entry)| (KmsSlot::Previous(index), entry.clone()));
        self.primary().map(|primary| (KmsSlot::Primary, primary)).into_iter().chain(previous).collect()
    }

    /// Every problem of the section, all at once, with full paths: each backend's by its
    /// adapter's rules under `environment`, a primary this binary cannot build, and two backends
    /// that would report the same key id.
    pub fn problems(&self, environment: Environment) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.primary().is_none() {
            let name = self.backend.as_str();
            problems.push(SettingProblem {
                field: KmsSlot::Primary.selector(),
                message: format!(
                    "{name:?}: this binary was built without the {name} KMS adapter (cargo feature {})",
                    self.backend.feature()
                ),
            });
        }
        let mut seen: Vec<(KmsSlot, String)> = Vec::new();
        for (slot, settings) in self.all() {
            let (section, selector) = (slot.section(settings.backend()), slot.selector());
            let place = SettingsPlace::section(&section, &selector, settings.backend().as_str(), environment);
            problems.extend(settings.problems(&place));
            let kek = settings.kek_id();
            match seen.iter().find(|(_, earlier)| *earlier == kek) {
                Some((KmsSlot::Primary, _)) => problems.push(SettingProblem {
                    field: section,
                    message: "has the primary's key id; list only older backends".to_owned(),
                }),
                Some((KmsSlot::Previous(_), _)) => problems.push(SettingProblem {
                    field: section,
                    message: format!("has the key id {kek:?} of an earlier entry; list each backend once"),
                }),
                None => {}
            }
            seen.push((slot, kek));
        }
        problems
    }

    /// The secret settings of the configured backends (full path) and whether each is set.
    pub fn secret_statuses(&self) -> Vec<(String, bool)> {
        let mut statuses = Vec::new();
        for (slot, settings) in self.all() {
            let section = slot.section(settings.backend());
            for (setting, configured) in settings.secret_settings() {
                statuses.push((format!("{section}.{setting}"), configured));
            }
        }
        statuses
    }
}

#[cfg(all(test, feature = "kms-local", feature = "kms-aws", feature = "kms-vault", feature = "kms-azure"))]
mod tests {
    use super::*;

    fn messages(config: &KmsConfig, environment: Environment) -> Vec<String> {
        config.problems(environment).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn problems_in_two_backends_are_listed_together_with_full_paths() {
        let mut config = KmsConfig { backend: KmsBackend::Vault, ..KmsConfig::default() };
        config.vault.address = "https://vault.internal:8200".into();
        config.vault.key_name = "praxis/x".into();
        config.vault.token = Some(kernel::Secret::new("test-token".into()));
        config
            .previous
            .push(KmsSettings::Aws(kms_aws::AwsKmsConfig { region: "eu-central-1".into(), ..Default::default() }));
        assert_eq!(
            messages(&config, Environment::Development),
            [
                "kms.vault.key_name: must be letters, digits, '.', '_' or '-'",
                "kms.previous[0].key_id: required when kms.previous[0].backend = \"aws\"",
            ]
        );
    }

    #[test]
    fn two_backends_with_one_key_id_are_refused() {
        let mut config = KmsConfig::default();
        config.previous.push(KmsSettings::Local(kms_local::LocalKmsConfig::new("old.key")));
        config.previous.push(KmsSettings::Local(kms_local::LocalKmsConfig {
            key_file: "older.key".into(),
            key_id: "older".into(),
        }));
        config.previous.push(KmsSettings::Local(kms_local::LocalKmsConfig {
            key_file: "oldest.key".into(),
            key_id: "older".into(),
        }));
        assert_eq!(
            messages(&config, Environment::Development),
            [
                "kms.previous[0]: has the primary's key id; list only older backends",
                "kms.previous[2]: has the key id \"older\" of an earlier entry; list each backend once",
            ]
        );
    }
}
