//! What KMS adapters check their settings with. Each adapter crate owns its settings and the one
//! function that lists their problems; this module gives them the common terms: where the
//! settings sit in the application's configuration (so that every problem names its full path,
//! whether the settings are the primary's section or an older backend's entry), which rules
//! apply (production refuses plain-http KMS endpoints), and the problem itself.

use kernel::Environment;
use std::fmt;

/// Where one adapter's settings sit, and which environment's rules apply to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsPlace<'a> {
    /// The settings' section, e.g. `kms.vault`; `None` for settings handed to the adapter
    /// directly (tools, tests), whose problems name the bare setting.
    section: Option<&'a str>,
    /// The setting that chose this backend and the value that chose it, e.g. `kms.backend` and
    /// `vault`.
    selection: Option<(&'a str, &'a str)>,
    environment: Environment,
}

impl<'a> SettingsPlace<'a> {
    /// Settings handed to the adapter directly, not read from a configuration: problems name
    /// the bare setting (`key_name`), and the development rules apply (plain http is fine for a
    /// test double).
    pub const fn direct() -> Self {
        Self { section: None, selection: None, environment: Environment::Development }
    }

    /// The settings in `section`, chosen by `selector = backend` (e.g. `kms.vault`, chosen by
    /// `kms.backend = "vault"`), checked against `environment`'s rules.
    pub const fn section(section: &'a str, selector: &'a str, backend: &'a str, environment: Environment) -> Self {
        Self { section: Some(section), selection: Some((selector, backend)), environment }
    }

    /// The full path of `setting` (a path inside the section, such as `approle.secret_id`).
    pub fn path(&self, setting: &str) -> String {
        match self.section {
            Some(section) => format!("{section}.{setting}"),
            None => setting.to_owned(),
        }
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// A problem with one setting.
    pub fn problem(&self, setting: &str, message: impl Into<String>) -> SettingProblem {
        SettingProblem { field: self.path(setting), message: message.into() }
    }

    /// Why a setting is required: `required when kms.backend = "vault"`, or plain `required`
    /// for settings handed over directly. Messages that add a hint start with it.
    pub fn required(&self) -> String {
        match self.selection {
            Some((selector, backend)) => format!("required when {selector} = {backend:?}"),
            None => "required".to_owned(),
        }
    }

    /// A required setting that is missing or empty.
    pub fn missing(&self, setting: &str) -> SettingProblem {
        self.problem(setting, self.required())
    }

    /// A problem with the choice of this backend itself (not with one of its settings),
    /// reported on the setting that chose it.
    pub fn refused(&self, message: impl Into<String>) -> SettingProblem {
        let field = self.selection.map_or_else(|| "backend".to_owned(), |(selector, _)| selector.to_owned());
        SettingProblem { field, message: message.into() }
    }

    /// What is wrong with the service URL in `setting`, if anything: not http(s), credentials,
    /// a query or a fragment in it, or plain http in production (KMS traffic carries wrapped
    /// keys, tokens and, on unwrap, plaintext data keys).
    pub fn check_url(&self, setting: &str, url: &str) -> Option<SettingProblem> {
        let url = url.trim();
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let message = match rest {
            None | Some("") => format!("{url:?} is not an http(s) URL"),
            Some(rest) if rest.contains(['?', '#', ' ', '@']) => {
                format!("{url:?} must be a plain http(s) URL (no credentials, query or fragment)")
            }
            Some(_) if self.is_production() && !url.starts_with("https://") => "must be https:// in production".into(),
            Some(_) => return None,
        };
        Some(self.problem(setting, message))
    }
}

/// One reason an adapter's settings are unfit, naming the setting by its full path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_full_path_and_why_a_setting_is_required() {
        let place =
            SettingsPlace::section("kms.previous[1]", "kms.previous[1].backend", "aws", Environment::Production);
        assert_eq!(
            place.missing("key_id").to_string(),
            "kms.previous[1].key_id: required when kms.previous[1].backend = \"aws\""
        );
        assert_eq!(place.refused("no").field, "kms.previous[1].backend");
        assert_eq!(SettingsPlace::direct().missing("key_id").to_string(), "key_id: required");
    }

    #[test]
    fn service_urls_are_plain_and_https_in_production() {
        let development = SettingsPlace::direct();
        let production = SettingsPlace::section("kms.aws", "kms.backend", "aws", Environment::Production);
        assert_eq!(development.check_url("endpoint", "http://kms.internal"), None);
        assert_eq!(production.check_url("endpoint", "https://kms.internal:443"), None);
        assert_eq!(
            production.check_url("endpoint", "http://kms.internal").map(|p| p.to_string()).as_deref(),
            Some("kms.aws.endpoint: must be https:// in production")
        );
        for bad in ["kms.internal", "https://", "https://user@kms.internal", "https://kms.internal?x=1"] {
            assert!(development.check_url("endpoint", bad).is_some(), "{bad}");
        }
    }
}
