//! Configuration: defaults, then an optional TOML file, then `PRAXIS__SECTION__KEY` environment
//! variables. Unknown keys are errors (a typo must not silently fall back to a default), and every
//! error names the field it is about.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use kernel::Secret;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub environment: Environment,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub kms: KmsConfig,
    pub cors: CorsConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: String,
    /// Largest request body accepted; larger ones get 413 before they are read.
    pub body_limit_bytes: usize,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { bind: "127.0.0.1:8080".into(), body_limit_bytes: 1024 * 1024, workers: 0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// URL of the runtime role the server connects as (subject to row-level security).
    pub url: Option<Secret<String>>,
    /// URL of the owner role; used only by `praxis migrate`.
    pub owner_url: Option<Secret<String>>,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            owner_url: None,
            max_connections: 16,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: Option<Secret<String>>,
    /// Prefix of every key Praxis writes, so deployments can share a Redis.
    pub key_prefix: String,
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, key_prefix: "praxis:".into(), timeout_ms: 1_000 }
    }
}

/// Which key management service holds the key-encryption keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsBackend {
    /// A key file on local disk: development only, refused in production.
    #[default]
    Local,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KmsConfig {
    pub backend: KmsBackend,
    pub local: LocalKmsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalKmsConfig {
    pub key_file: PathBuf,
}

impl Default for LocalKmsConfig {
    fn default() -> Self {
        Self { key_file: PathBuf::from("target/praxis-dev-kms.key") }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`https://app.example.org`) allowed to call the API from a browser.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `info,sqlx=warn`.
    pub log_level: String,
    /// OTLP/HTTP collector endpoint, e.g. `http://otel-collector:4318`. Unset: no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log_format: LogFormat::Json, log_level: "info".into(), otlp_endpoint: None }
    }
}

/// A configuration that could not be read. The message names the field.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// One reason the configuration is unfit to run with, naming its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Whether a secret is present, for the start-up log line (never the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretStatus {
    pub field: &'static str,
    pub configured: bool,
    pub required: bool,
}

impl Config {
    /// Loads defaults, then `file` (when given), then `PRAXIS__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!("--config: file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(Env::prefixed("PRAXIS__").split("__")).extract().map_err(|errors| {
            let messages: Vec<String> = errors.into_iter().map(|e| describe_figment_error(&e)).collect();
            ConfigError(messages.join("; "))
        })
    }

    /// Every secret Praxis knows of, and whether it is set.
    pub fn secret_statuses(&self) -> Vec<SecretStatus> {
        vec![
            SecretStatus { field: "database.url", configured: self.database.url.is_some(), required: true },
            SecretStatus {
                field: "database.owner_url",
                configured: self.database.owner_url.is_some(),
                required: false,
            },
            SecretStatus { field: "redis.url", configured: self.redis.url.is_some(), required: true },
        ]
    }

    /// Every problem with this configuration, all at once. In production the list also holds
    /// everything that is tolerable on a developer's machine but not with real patient data.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: &'static str, message: String| problems.push(Problem { field, message });

        if self.server.bind.parse::<SocketAddr>().is_err() {
            problem("server.bind", format!("{:?} is not an address such as 127.0.0.1:8080", self.server.bind));
        }
        if self.server.body_limit_bytes == 0 {
            problem("server.body_limit_bytes", "must be greater than 0".into());
        }
        if self.database.max_connections == 0 {
            problem("database.max_connections", "must be greater than 0".into());
        }
        for status in self.secret_statuses() {
            if status.required && !status.configured {
                problem(status.field, "required secret is missing".into());
            }
        }
        for origin in &self.cors.allowed_origins {
            if origin != "*" && !is_origin(origin) {
                problem("cors.allowed_origins", format!("{origin:?} is not an origin such as https://app.example.org"));
            }
        }
        if tracing_filter_is_invalid(&self.telemetry.log_level) {
            problem("telemetry.log_level", format!("{:?} is not a valid filter directive", self.telemetry.log_level));
        }

        if self.environment == Environment::Production {
            if self.kms.backend == KmsBackend::Local {
                problem(
                    "kms.backend",
                    "the local development KMS is not allowed in production; configure a real key management service"
                        .into(),
                );
            }
            if self.cors.allowed_origins.iter().any(|o| o.trim() == "*") {
                problem(
                    "cors.allowed_origins",
                    "a wildcard (*) origin is not allowed in production; list each origin".into(),
                );
            }
            if let Some(url) = &self.database.url
                && !url_requires_tls(url.expose_secret())
            {
                problem(
                    "database.url",
                    "the database connection must require TLS in production (sslmode=verify-full, verify-ca or require)"
                        .into(),
                );
            }
        }
        problems
    }
}

fn describe_figment_error(error: &figment::Error) -> String {
    let field = if error.path.is_empty() { "(top level)".to_owned() } else { error.path.join(".") };
    match error.metadata.as_ref() {
        Some(source) => format!("{field}: {} (from {})", error.kind, source.name),
        None => format!("{field}: {}", error.kind),
    }
}

fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains('/')
        && !rest.contains('?')
        && !rest.contains('#')
        && !rest.contains('@')
}

fn url_requires_tls(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    query.split('&').any(|pair| {
        matches!(
            pair.split_once('=').map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase())),
            Some((key, value)) if (key == "sslmode" || key == "ssl-mode")
                && matches!(value.as_str(), "require" | "verify-ca" | "verify-full")
        )
    })
}

fn tracing_filter_is_invalid(directive: &str) -> bool {
    telemetry::check_filter(directive).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_requirement_reads_sslmode() {
        assert!(url_requires_tls("postgres://u@h/db?sslmode=verify-full"));
        assert!(url_requires_tls("postgres://u@h/db?application_name=x&sslmode=require"));
        assert!(!url_requires_tls("postgres://u@h/db?sslmode=prefer"));
        assert!(!url_requires_tls("postgres://u@h/db"));
    }

    #[test]
    fn origins_are_checked() {
        assert!(is_origin("https://app.example.org"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("app.example.org"));
        assert!(!is_origin("https://app.example.org/path"));
    }

    #[test]
    fn production_lists_every_problem_at_once() {
        let mut config = Config { environment: Environment::Production, ..Config::default() };
        config.cors.allowed_origins = vec!["*".into()];
        config.database.url = Some(Secret::new("postgres://app@db/praxis".into()));
        let fields: Vec<&str> = config.validate().iter().map(|p| p.field).collect();
        assert!(fields.contains(&"kms.backend"));
        assert!(fields.contains(&"cors.allowed_origins"));
        assert!(fields.contains(&"database.url"));
        assert!(fields.contains(&"redis.url"));
    }

    #[test]
    fn development_accepts_local_kms() {
        let mut config = Config::default();
        config.database.url = Some(Secret::new("postgres://app@localhost/praxis".into()));
        config.redis.url = Some(Secret::new("redis://127.0.0.1".into()));
        assert_eq!(config.validate(), vec![]);
    }
}
