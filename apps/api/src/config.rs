//! Configuration: defaults, then an optional TOML file, then `PRAXIS__SECTION__KEY` environment
//! variables. Unknown keys are errors (a typo must not silently fall back to a default), and every
//! error names the field it is about.

pub mod appointments;
pub mod audit;
pub mod webhooks;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use kernel::Secret;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `[kms]`: its selector lives with the key management wiring, each backend's settings in its
/// adapter crate.
pub use crate::kms::{KmsBackend, KmsConfig};
/// `environment`: shared with the adapters, whose settings are checked against the same rules.
pub use kernel::Environment;

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
    pub webhooks: webhooks::WebhooksConfig,
    pub appointments: crate::config::appointments::AppointmentsConfig,
    pub reminders: crate::config::appointments::RemindersConfig,
    pub audit: crate::config::audit::AuditConfig,
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
    /// How long an instance answers a session token or API key it verified from memory instead
    /// of the database (revocations still apply at once, see docs/security.md); 0 turns the
    /// cache off. At most 60,000 (revocation markers live 120 s).
    pub principal_cache_ttl_ms: u64,
    /// How many verified principals an instance keeps at most.
    pub principal_cache_capacity: usize,
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
            principal_cache_ttl_ms: 10_000,
            principal_cache_capacity: 10_000,
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

    /// This instance's cache of verified principals, as configured.
    pub fn principal_cache(&self) -> app::principal_cache::PrincipalCache {
        let ttl =
            std::time::Duration::from_millis(self.principal_cache_ttl_ms).min(app::sessions::PRINCIPAL_CACHE_TTL_MAX);
        app::principal_cache::PrincipalCache::new(ttl, self.principal_cache_capacity)
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

impl RateLimitConfig {
    /// The login limit: `login_failures` failed logins per account and IP per window.
    pub fn login_limit(&self) -> identity::Limit {
        identity::Limit { max: self.login_failures, window: std::time::Duration::from_secs(self.login_window_secs) }
    }
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
    /// `cached` (named statements kept on each connection: direct Postgres, or PgBouncer 1.21+
    /// with `max_prepared_statements`) or `unnamed` (any transaction pooler; a second round
    /// trip per query). See docs/deployment.md.
    pub prepared_statements: PreparedStatementsSetting,
}

/// `database.prepared_statements`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreparedStatementsSetting {
    #[default]
    Cached,
    Unnamed,
}

impl DatabaseConfig {
    /// The runtime role's pool settings.
    pub fn pool_options(&self) -> store_postgres::PoolOptions {
        store_postgres::PoolOptions {
            max_connections: self.max_connections,
            acquire_timeout: std::time::Duration::from_millis(self.acquire_timeout_ms),
            statement_timeout: std::time::Duration::from_millis(self.statement_timeout_ms),
            prepared_statements: match self.prepared_statements {
                PreparedStatementsSetting::Cached => store_postgres::PreparedStatements::Cached,
                PreparedStatementsSetting::Unnamed => store_postgres::PreparedStatements::Unnamed,
            },
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            owner_url: None,
            max_connections: 16,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            prepared_statements: PreparedStatementsSetting::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or, over TLS, `rediss://`.
    pub url: Option<Secret<String>>,
    /// Prefix of every key Praxis writes, so deployments can share a Redis.
    pub key_prefix: String,
    pub timeout_ms: u64,
    /// PEM file of the private CA that issued a `rediss://` server's certificate; unset, the
    /// platform's trust store is used.
    pub ca_cert_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, key_prefix: "praxis:".into(), timeout_ms: 1_000, ca_cert_file: None }
    }
}

impl RedisConfig {
    /// The store for this configuration, with `timeout` bounding each operation. Reads
    /// `ca_cert_file` now; errors name the field.
    pub fn store(&self, timeout: std::time::Duration) -> anyhow::Result<cache_redis::RedisStore> {
        use anyhow::Context as _;
        let url = self.url.as_ref().context("redis.url: required secret is missing")?;
        let store = match &self.ca_cert_file {
            None => cache_redis::RedisStore::new(url.expose_secret(), &self.key_prefix, timeout),
            Some(file) => {
                let ca_pem = std::fs::read(file)
                    .with_context(|| format!("redis.ca_cert_file: cannot read {}", file.display()))?;
                cache_redis::RedisStore::with_ca(url.expose_secret(), ca_pem, &self.key_prefix, timeout)
            }
        };
        store.map_err(|error| anyhow::anyhow!("redis.url: {error}"))
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
    /// OTLP/HTTP collector endpoint, e.g. `http://otel-collector:4318`. Unset: no export. Traces
    /// and metrics both go there.
    pub otlp_endpoint: Option<String>,
    /// Where the Prometheus page (`GET /metrics`) listens: its own address, never the API's port
    /// (the page is for the monitoring network, not the public). Empty: no page.
    pub metrics_bind: String,
}

impl TelemetryConfig {
    /// The Prometheus page's address, `None` when switched off (`metrics_bind = ""`).
    pub fn metrics_bind(&self) -> Option<&str> {
        Some(self.metrics_bind.trim()).filter(|bind| !bind.is_empty())
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp_endpoint: None,
            // 9464: the port OpenTelemetry's Prometheus exporters use by convention.
            metrics_bind: "127.0.0.1:9464".into(),
        }
    }
}

/// A configuration that could not be read. The message names the field.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// One reason the configuration is unfit to run with, naming its field. Most sections name
/// fixed paths (`&'static str`); `Config::validate` lists them all with paths as `String`s,
/// because a KMS backend's settings sit in `[kms.<backend>]` or in a `[[kms.previous]]` entry,
/// so their paths are built at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem<Field = &'static str> {
    pub field: Field,
    pub message: String,
}

impl<Field: std::fmt::Display> std::fmt::Display for Problem<Field> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl From<Problem> for Problem<String> {
    fn from(problem: Problem) -> Self {
        Self { field: problem.field.to_owned(), message: problem.message }
    }
}

/// Whether a secret is present, for the start-up log line (never the value). Its path is fixed
/// or, for a KMS backend's secret, built at run time (see [`Problem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretStatus<Field = &'static str> {
    pub field: Field,
    pub configured: bool,
    pub required: bool,
}

impl From<SecretStatus> for SecretStatus<String> {
    fn from(status: SecretStatus) -> Self {
        Self { field: status.field.to_owned(), configured: status.configured, required: status.required }
    }
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
    pub fn secret_statuses(&self) -> Vec<SecretStatus<String>> {
        let stores = [
            SecretStatus { field: "database.url", configured: self.database.url.is_some(), required: true },
            SecretStatus {
                field: "database.owner_url",
                configured: self.database.owner_url.is_some(),
                required: false,
            },
            SecretStatus { field: "redis.url", configured: self.redis.url.is_some(), required: true },
        ];
        let kms = self.kms.secret_statuses().into_iter().map(|(field, configured)| SecretStatus {
            field,
            configured,
            required: false,
        });
        stores
            .into_iter()
            .map(SecretStatus::into)
            .chain(kms)
            .chain(self.reminders.secret_statuses().into_iter().map(SecretStatus::into))
            .collect()
    }

    /// Every problem with this configuration, all at once. In production the list also holds
    /// everything that is tolerable on a developer's machine but not with real patient data.
    pub fn validate(&self) -> Vec<Problem<String>> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| problems.push(Problem { field: field.to_owned(), message });

        if self.server.bind.parse::<SocketAddr>().is_err() {
            problem("server.bind", format!("{:?} is not an address such as 127.0.0.1:8080", self.server.bind));
        }
        if self.server.body_limit_bytes == 0 {
            problem("server.body_limit_bytes", "must be greater than 0".into());
        }
        if self.database.max_connections == 0 {
            problem("database.max_connections", "must be greater than 0".into());
        }
        if let Some(file) = &self.redis.ca_cert_file {
            if file.as_os_str().is_empty() {
                problem("redis.ca_cert_file", "is empty".into());
            } else if self.redis.url.as_ref().is_some_and(|url| !url.expose_secret().starts_with("rediss://")) {
                problem("redis.ca_cert_file", "a CA certificate needs a rediss:// (TLS) redis.url".into());
            }
        }
        for status in self.secret_statuses() {
            if status.required && !status.configured {
                problem(&status.field, "required secret is missing".into());
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
        if std::time::Duration::from_millis(self.auth.principal_cache_ttl_ms) > app::sessions::PRINCIPAL_CACHE_TTL_MAX {
            problem(
                "auth.principal_cache_ttl_ms",
                "must be at most 60000: revocation markers must outlive every cached principal".into(),
            );
        }
        if self.rate_limits.login_failures == 0 || self.rate_limits.login_window_secs == 0 {
            problem("rate_limits.login_failures", "login limits must be greater than 0".into());
        }
        // Production refusals of the KMS section (the local KMS anywhere, plain-http endpoints)
        // come from the adapters' rules, through `KmsConfig::problems`.
        for kms_problem in self.kms.problems(self.environment) {
            problem(&kms_problem.field, kms_problem.message);
        }
        for webhook_problem in self.webhooks.problems(self.environment) {
            problem(webhook_problem.field, webhook_problem.message);
        }
        for section_problem in
            self.appointments.problems().into_iter().chain(self.reminders.problems()).chain(self.audit.problems())
        {
            problem(section_problem.field, section_problem.message);
        }
        if let Some(bind) = self.telemetry.metrics_bind() {
            match bind.parse::<SocketAddr>() {
                Err(_) => problem(
                    "telemetry.metrics_bind",
                    format!("{bind:?} is not an address such as 127.0.0.1:9464 (or \"\" for no metrics page)"),
                ),
                Ok(metrics) if self.server.bind.parse::<SocketAddr>().is_ok_and(|api| api.port() == metrics.port()) => {
                    problem(
                        "telemetry.metrics_bind",
                        "must not use the API's port (server.bind): the metrics page is not for the public".into(),
                    )
                }
                Ok(_) => {}
            }
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
    use crate::kms::KmsSettings;

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
        let problems = config.validate();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
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
        config.kms.aws = kms_aws::AwsKmsConfig {
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
        assert!(matches!(&config.kms.previous[0], KmsSettings::Local(l) if l.key_file == Path::new("old.key")));
        let messages: Vec<String> =
            config.kms.problems(Environment::Production).iter().map(ToString::to_string).collect();
        assert!(
            messages.iter().any(|m| m.starts_with("kms.previous[0].backend: the local development KMS")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m == "kms.previous[1].key_id: required when kms.previous[1].backend = \"aws\""),
            "{messages:?}"
        );
    }

    /// A configuration that is valid apart from the KMS section.
    fn with_stores() -> Config {
        let mut config = Config::default();
        config.database.url = Some(Secret::new("postgres://app@localhost/praxis".into()));
        config.redis.url = Some(Secret::new("redis://127.0.0.1".into()));
        config
    }

    fn messages(config: &Config) -> Vec<String> {
        config.validate().iter().map(ToString::to_string).collect()
    }

    /// A dummy credential made at run time (nothing secret-looking is committed).
    fn dummy_secret() -> Secret<String> {
        Secret::new(format!("dummy-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn vault_backend_names_each_field() {
        let mut config = with_stores();
        config.kms.backend = KmsBackend::Vault;
        let found = messages(&config);
        for expected in [
            "kms.vault.address: required when kms.backend = \"vault\"",
            "kms.vault.key_name: required when kms.backend = \"vault\"",
            "kms.vault.token: required when kms.backend = \"vault\" (or kms.vault.approle): how Praxis authenticates to Vault",
        ] {
            assert!(found.contains(&expected.to_owned()), "{expected:?} not in {found:?}");
        }
        config.kms.vault.address = "http://vault.internal:8200".into();
        config.kms.vault.key_name = "praxis".into();
        config.kms.vault.token = Some(dummy_secret());
        assert_eq!(messages(&config), Vec::<String>::new());

        config.kms.vault.mount = "transit/../sys".into();
        config.kms.vault.approle =
            Some(kms_vault::VaultAppRoleSettings { role_id: String::new(), secret_id: None, ..Default::default() });
        let found = messages(&config);
        assert!(found.iter().any(|m| m.starts_with("kms.vault.mount: ")), "{found:?}");
        assert!(found.contains(&"kms.vault.token: set either token or approle, not both".to_owned()), "{found:?}");
        config.kms.vault.mount = "transit".into();
        config.kms.vault.token = None;
        let found = messages(&config);
        assert!(found.contains(&"kms.vault.approle.role_id: required when kms.backend = \"vault\"".into()));
        assert!(found.contains(&"kms.vault.approle.secret_id: required when kms.backend = \"vault\"".into()));

        // Production: plain http to Vault is refused (tokens and data keys would cross it).
        config.kms.vault.approle = None;
        config.kms.vault.token = Some(dummy_secret());
        config.environment = Environment::Production;
        config.database.url = Some(Secret::new("postgres://app@db/praxis?sslmode=verify-full".into()));
        assert_eq!(messages(&config), vec!["kms.vault.address: must be https:// in production".to_owned()]);
        config.kms.vault.address = "https://vault.internal:8200".into();
        assert_eq!(messages(&config), Vec::<String>::new());
    }

    #[test]
    fn azure_backend_names_each_field() {
        let mut config = with_stores();
        config.kms.backend = KmsBackend::Azure;
        let found = messages(&config);
        assert!(found.contains(&"kms.azure.vault_url: required when kms.backend = \"azure\"".into()), "{found:?}");
        assert!(found.contains(&"kms.azure.key_name: required when kms.backend = \"azure\"".into()), "{found:?}");
        // Managed identity (the chain's last resort) needs nothing more.
        config.kms.azure.vault_url = "https://praxis-kv.vault.azure.net".into();
        config.kms.azure.key_name = "praxis".into();
        assert_eq!(messages(&config), Vec::<String>::new());

        config.kms.azure.credential = kms_azure::AzureCredentialKind::ClientSecret;
        config.kms.azure.key_version = Some("not/a-version".into());
        let found = messages(&config);
        for expected in [
            "kms.azure.client_secret: required when kms.azure.credential = \"client_secret\"",
            "kms.azure.tenant_id: tenant_id and client_id are required with a client secret",
            "kms.azure.key_version: must be letters and digits",
        ] {
            assert!(found.contains(&expected.to_owned()), "{expected:?} not in {found:?}");
        }
        config.kms.azure.key_version = None;
        config.kms.azure.tenant_id = Some("00000000-0000-0000-0000-00000000000a".into());
        config.kms.azure.client_id = Some("00000000-0000-0000-0000-00000000000b".into());
        config.kms.azure.client_secret = Some(dummy_secret());
        assert_eq!(messages(&config), Vec::<String>::new());

        config.environment = Environment::Production;
        config.database.url = Some(Secret::new("postgres://app@db/praxis?sslmode=verify-full".into()));
        config.kms.azure.vault_url = "http://praxis-kv.vault.azure.net".into();
        config.kms.azure.authority_host = Some("http://login.example".into());
        assert_eq!(
            messages(&config),
            vec![
                "kms.azure.vault_url: must be https:// in production".to_owned(),
                "kms.azure.authority_host: must be https:// in production".to_owned(),
            ]
        );
    }

    #[test]
    fn vault_and_azure_previous_entries_are_parsed_and_checked() {
        let toml = "[kms]\nbackend = \"azure\"\n[kms.azure]\nvault_url = \"https://kv.vault.azure.net\"\nkey_name = \"praxis\"\n\
                    [[kms.previous]]\nbackend = \"vault\"\naddress = \"https://vault:8200\"\nkey_name = \"praxis\"\n\
                    [kms.previous.approle]\nrole_id = \"praxis\"\n\
                    [[kms.previous]]\nbackend = \"vault\"\naddress = \"https://other:8200\"\nkey_name = \"praxis\"\n";
        let config: Config = Figment::new().merge(Toml::string(toml)).extract().unwrap();
        let KmsSettings::Vault(vault) = &config.kms.previous[0] else { panic!("{:?}", config.kms.previous) };
        assert_eq!((vault.mount.as_str(), vault.approle.as_ref().unwrap().mount.as_str()), ("transit", "approle"));
        let found: Vec<String> =
            config.kms.problems(Environment::Development).iter().map(ToString::to_string).collect();
        assert!(
            found.contains(
                &"kms.previous[0].approle.secret_id: required when kms.previous[0].backend = \"vault\"".to_owned()
            ),
            "{found:?}"
        );
        // Two Vaults with the same mount and key name would share a KEK id: the keyring could not
        // tell their wrapped keys apart.
        assert!(found.iter().any(|m| m.starts_with("kms.previous[1]: has the key id \"transit/praxis\"")), "{found:?}");
        assert!(found.iter().any(|m| m.starts_with("kms.previous[1].token: required")), "{found:?}");
    }

    #[test]
    fn kms_secrets_are_masked_and_only_their_presence_is_reported() {
        let mut config = with_stores();
        config.kms.backend = KmsBackend::Vault;
        let token = dummy_secret();
        config.kms.vault.token = Some(token.clone());
        let client_secret = dummy_secret();
        config.kms.previous.push(KmsSettings::Azure(kms_azure::AzureSettings {
            client_secret: Some(client_secret.clone()),
            ..Default::default()
        }));
        let printed = format!("{}\n{config:?}", toml::to_string_pretty(&config).unwrap());
        for secret in [&token, &client_secret] {
            assert!(!printed.contains(secret.expose_secret().as_str()), "{printed}");
        }
        assert!(printed.contains(kernel::secret::MASK));
        let statuses = config.secret_statuses();
        let statuses: Vec<(&str, bool)> = statuses.iter().map(|s| (s.field.as_str(), s.configured)).collect();
        assert!(statuses.contains(&("kms.vault.token", true)), "{statuses:?}");
        assert!(statuses.contains(&("kms.previous[0].client_secret", true)), "{statuses:?}");
    }

    #[test]
    fn a_redis_ca_certificate_needs_a_tls_url_and_a_readable_file() {
        let mut config = Config::default();
        config.database.url = Some(Secret::new("postgres://app@localhost/praxis".into()));
        config.redis.url = Some(Secret::new("redis://cache.internal:6379".into()));
        config.redis.ca_cert_file = Some(PathBuf::from("/etc/praxis/redis-ca.pem"));
        let problems = config.validate();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["redis.ca_cert_file"]);
        config.redis.url = Some(Secret::new("rediss://cache.internal:6380".into()));
        assert_eq!(config.validate(), vec![]);
        config.redis.ca_cert_file = Some(PathBuf::new());
        assert_eq!(config.validate().iter().map(|p| p.field.as_str()).collect::<Vec<_>>(), ["redis.ca_cert_file"]);

        let missing = std::env::temp_dir().join(format!("praxis-no-such-ca-{}.pem", uuid::Uuid::new_v4()));
        config.redis.ca_cert_file = Some(missing);
        let error = config.redis.store(std::time::Duration::from_secs(1)).unwrap_err().to_string();
        assert!(error.starts_with("redis.ca_cert_file: cannot read"), "{error}");
    }

    #[test]
    fn development_accepts_local_kms() {
        let mut config = Config::default();
        config.database.url = Some(Secret::new("postgres://app@localhost/praxis".into()));
        config.redis.url = Some(Secret::new("redis://127.0.0.1".into()));
        assert_eq!(config.validate(), vec![]);
    }
}
