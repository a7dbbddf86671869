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
    pub auth: AuthConfig,
    pub rate_limits: RateLimitConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A session ends after this long without a request.
    pub session_idle_timeout_secs: u64,
    /// A session ends this long after login, active or not.
    pub session_absolute_timeout_secs: u64,
    /// argon2id cost; the defaults are OWASP's minimum (19 MiB, 2 passes, 1 lane).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    pub trusted_proxies: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let argon2 = identity::Argon2Params::default();
        Self {
            session_idle_timeout_secs: 30 * 60,
            session_absolute_timeout_secs: 12 * 60 * 60,
            argon2_memory_kib: argon2.memory_kib,
            argon2_iterations: argon2.iterations,
            argon2_parallelism: argon2.parallelism,
            trusted_proxies: Vec::new(),
        }
    }
}

impl AuthConfig {
    pub fn argon2(&self) -> identity::Argon2Params {
        identity::Argon2Params {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }

    pub fn session_policy(&self) -> identity::SessionPolicy {
        identity::SessionPolicy {
            idle_timeout: time::Duration::seconds(i64::try_from(self.session_idle_timeout_secs).unwrap_or(i64::MAX)),
            absolute_timeout: time::Duration::seconds(
                i64::try_from(self.session_absolute_timeout_secs).unwrap_or(i64::MAX),
            ),
            ..identity::SessionPolicy::default()
        }
    }

    /// The parsed proxy list; invalid entries are reported by `Config::validate`.
    pub fn trusted_proxy_cidrs(&self) -> Vec<identity::Cidr> {
        self.trusted_proxies.iter().filter_map(|c| c.parse().ok()).collect()
    }
}

/// Request budgets per window (see docs/security.md). Each is `max` requests per `window_secs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Per client IP, every route.
    pub global_per_minute: u32,
    /// Per signed-in user or API key.
    pub user_per_minute: u32,
    /// Failed logins per account and IP before login is refused for the rest of the window.
    pub login_failures: u32,
    pub login_window_secs: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let defaults = identity::RateLimits::default();
        Self {
            global_per_minute: defaults.global.max,
            user_per_minute: defaults.user.max,
            login_failures: defaults.login.max,
            login_window_secs: defaults.login.window.as_secs(),
        }
    }
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

/// Which key management service holds the key-encryption keys. Each adapter is behind a cargo
/// feature of the same name (`kms-local`, `kms-aws`), all in the default build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsBackend {
    /// A key file on local disk: development only, refused in production.
    #[default]
    Local,
    /// AWS KMS, one symmetric key (`kms.aws`).
    Aws,
}

impl KmsBackend {
    /// The name used in the configuration (`kms.backend`, `praxis keys migrate --to`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Aws => "aws",
        }
    }

    /// The cargo feature that builds this adapter in.
    pub const fn feature(self) -> &'static str {
        match self {
            Self::Local => "kms-local",
            Self::Aws => "kms-aws",
        }
    }

    /// Whether this binary was built with the adapter.
    pub const fn is_built_in(self) -> bool {
        match self {
            Self::Local => cfg!(feature = "kms-local"),
            Self::Aws => cfg!(feature = "kms-aws"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KmsConfig {
    /// The primary backend: wraps every new data key, and `praxis keys rotate|migrate` moves
    /// every stored data key under it.
    pub backend: KmsBackend,
    pub local: LocalKmsConfig,
    pub aws: AwsKmsConfig,
    /// Older backends kept for unwrapping only, while `praxis keys migrate` moves their data
    /// keys to the primary. Each entry is tagged like the primary, e.g. in TOML
    /// `[[kms.previous]]` with `backend = "local"` and `key_file = "..."`.
    pub previous: Vec<PreviousKms>,
}

/// One backend in `kms.previous`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum PreviousKms {
    Local(LocalKmsConfig),
    Aws(AwsKmsConfig),
}

impl PreviousKms {
    pub const fn backend(&self) -> KmsBackend {
        match self {
            Self::Local(_) => KmsBackend::Local,
            Self::Aws(_) => KmsBackend::Aws,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalKmsConfig {
    pub key_file: PathBuf,
    /// The KEK id recorded in the key file; two local backends in one keyring (a migration
    /// from one key file to another) need different ids.
    pub key_id: String,
}

impl Default for LocalKmsConfig {
    fn default() -> Self {
        Self { key_file: PathBuf::from("target/praxis-dev-kms.key"), key_id: "local".into() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// The KMS key's full ARN (an alias breaks old data keys when it is re-pointed).
    pub key_id: String,
    /// e.g. `eu-central-1`.
    pub region: String,
    /// A VPC endpoint, or a mock in tests; unset = the region's public endpoint. Credentials
    /// come from the standard AWS chain, never from this file.
    pub endpoint: Option<String>,
}

impl KmsConfig {
    /// Every problem of the KMS section (the primary and each previous backend).
    fn problems(&self, environment: Environment) -> Vec<Problem> {
        let mut problems = Vec::new();
        check_backend(&mut problems, None, self.backend, &self.local, &self.aws, environment);
        for (index, previous) in self.previous.iter().enumerate() {
            let (local, aws) = match previous {
                PreviousKms::Local(local) => (local.clone(), AwsKmsConfig::default()),
                PreviousKms::Aws(aws) => (LocalKmsConfig::default(), aws.clone()),
            };
            check_backend(&mut problems, Some(index), previous.backend(), &local, &aws, environment);
            if previous.backend() == self.backend && self.same_key(previous) {
                problems.push(Problem {
                    field: "kms.previous",
                    message: format!("entry {index}: has the primary's key id; list only older backends"),
                });
            }
        }
        problems
    }

    fn same_key(&self, previous: &PreviousKms) -> bool {
        match previous {
            PreviousKms::Local(local) => local.key_id == self.local.key_id,
            PreviousKms::Aws(aws) => aws.key_id == self.aws.key_id,
        }
    }
}

/// Checks one backend's settings. For the primary (`entry` = None) each problem names its exact
/// setting (`kms.aws.key_id: required when kms.backend = "aws"`); for `kms.previous` entries the
/// field is `kms.previous` and the message names the entry and its setting.
fn check_backend(
    problems: &mut Vec<Problem>,
    entry: Option<usize>,
    backend: KmsBackend,
    local: &LocalKmsConfig,
    aws: &AwsKmsConfig,
    environment: Environment,
) {
    let name = backend.as_str();
    let mut problem = |primary_field: &'static str, setting: &str, message: String| {
        problems.push(match entry {
            None => Problem { field: primary_field, message },
            Some(index) => Problem {
                field: "kms.previous",
                message: format!("entry {index} (backend = {name:?}): {setting}{message}"),
            },
        });
    };
    let when = match entry {
        None => format!("required when kms.backend = {name:?}"),
        Some(_) => "required".to_owned(),
    };
    if !backend.is_built_in() {
        problem(
            "kms.backend",
            "",
            format!(
                "{name:?}: this binary was built without the {name} KMS adapter (cargo feature {})",
                backend.feature()
            ),
        );
    }
    match backend {
        KmsBackend::Local => {
            if local.key_file.as_os_str().is_empty() {
                problem("kms.local.key_file", "key_file: ", when.clone());
            }
            if local.key_id.trim().is_empty() || local.key_id.len() > 255 {
                problem("kms.local.key_id", "key_id: ", "must be 1 to 255 bytes".into());
            }
            if environment == Environment::Production {
                problem(
                    "kms.backend",
                    "",
                    "the local development KMS is not allowed in production; configure a real key management service"
                        .into(),
                );
            }
        }
        KmsBackend::Aws => {
            if aws.key_id.trim().is_empty() {
                problem("kms.aws.key_id", "key_id: ", when.clone());
            } else if aws.key_id.len() > 255 {
                problem("kms.aws.key_id", "key_id: ", "longer than 255 bytes".into());
            }
            if aws.region.trim().is_empty() {
                problem("kms.aws.region", "region: ", when.clone());
            }
            if let Some(endpoint) = &aws.endpoint {
                let https = endpoint.starts_with("https://");
                if !https && !endpoint.starts_with("http://") {
                    problem("kms.aws.endpoint", "endpoint: ", format!("{endpoint:?} is not an http(s) URL"));
                } else if !https && environment == Environment::Production {
                    problem("kms.aws.endpoint", "endpoint: ", "must be https:// in production".into());
                }
            }
        }
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
        for proxy in &self.auth.trusted_proxies {
            if proxy.parse::<identity::Cidr>().is_err() {
                problem("auth.trusted_proxies", format!("{proxy:?} is not a CIDR such as 10.0.0.0/8"));
            }
        }
        if identity::PasswordHasher::new(self.auth.argon2()).is_err() {
            problem("auth.argon2_memory_kib", "the argon2 parameters are out of range".into());
        }
        if self.auth.session_idle_timeout_secs == 0 || self.auth.session_absolute_timeout_secs == 0 {
            problem("auth.session_idle_timeout_secs", "session timeouts must be greater than 0".into());
        }
        if self.rate_limits.login_failures == 0 || self.rate_limits.login_window_secs == 0 {
            problem("rate_limits.login_failures", "login limits must be greater than 0".into());
        }
        // Production refusals of the KMS section (the local KMS anywhere, plain-http endpoints)
        // are in `KmsConfig::problems` too.
        for kms_problem in self.kms.problems(self.environment) {
            problem(kms_problem.field, kms_problem.message);
        }
        if tracing_filter_is_invalid(&self.telemetry.log_level) {
            problem("telemetry.log_level", format!("{:?} is not a valid filter directive", self.telemetry.log_level));
        }

        if self.environment == Environment::Production {
            if !self.auth.argon2().meets_owasp_minimum() {
                problem(
                    "auth.argon2_memory_kib",
                    "argon2 parameters below the OWASP minimum are not allowed in production".into(),
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
    fn aws_backend_names_each_missing_field() {
        let mut config = Config::default();
        config.database.url = Some(Secret::new("postgres://app@localhost/praxis".into()));
        config.redis.url = Some(Secret::new("redis://127.0.0.1".into()));
        config.kms.backend = KmsBackend::Aws;
        let messages: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
        assert!(messages.contains(&"kms.aws.key_id: required when kms.backend = \"aws\"".to_owned()), "{messages:?}");
        assert!(messages.contains(&"kms.aws.region: required when kms.backend = \"aws\"".to_owned()), "{messages:?}");
        config.kms.aws = AwsKmsConfig {
            key_id: "arn:aws:kms:eu-central-1:1:key/k".into(),
            region: "eu-central-1".into(),
            endpoint: Some("http://kms.internal".into()),
        };
        assert_eq!(config.validate(), vec![]);
        config.environment = Environment::Production;
        config.database.url = Some(Secret::new("postgres://app@db/praxis?sslmode=verify-full".into()));
        let messages: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
        assert_eq!(messages, vec!["kms.aws.endpoint: must be https:// in production".to_owned()]);
    }

    #[test]
    fn previous_backends_are_tagged_and_checked() {
        let toml = "[kms]\nbackend = \"aws\"\n[kms.aws]\nkey_id = \"k\"\nregion = \"r\"\n\
                    [[kms.previous]]\nbackend = \"local\"\nkey_file = \"old.key\"\n\
                    [[kms.previous]]\nbackend = \"aws\"\nregion = \"r\"\n";
        let config: Config = Figment::new().merge(Toml::string(toml)).extract().unwrap();
        assert_eq!(config.kms.previous.len(), 2);
        assert!(matches!(&config.kms.previous[0], PreviousKms::Local(l) if l.key_file == Path::new("old.key")));
        let messages: Vec<String> =
            config.kms.problems(Environment::Production).iter().map(ToString::to_string).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("kms.previous: entry 0 (backend = \"local\"): the local development KMS")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m == "kms.previous: entry 1 (backend = \"aws\"): key_id: required"),
            "{messages:?}"
        );
    }

    #[test]
    fn development_accepts_local_kms() {
        let mut config = Config::default();
        config.database.url = Some(Secret::new("postgres://app@localhost/praxis".into()));
        config.redis.url = Some(Secret::new("redis://127.0.0.1".into()));
        assert_eq!(config.validate(), vec![]);
    }
}
