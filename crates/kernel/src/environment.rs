//! Where Praxis runs: the configuration's `environment`, which decides how strict its checks are.

use serde::{Deserialize, Serialize};

/// Production refuses what a developer's machine tolerates (a local key file as KMS, plain-http
/// service endpoints, a wildcard CORS origin, ...). Every section of the configuration, the
/// adapters' own settings included, is checked against the same value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}
