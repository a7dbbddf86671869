//! Metrics: OpenTelemetry instruments, exported as a Prometheus scrape page and, when an OTLP
//! endpoint is configured, pushed over OTLP/HTTP next to the traces.
//!
//! Every call site records through one function of this module (`record_*`, `observe_*`), so a
//! site is one line. Before [`install`] (or in a process that never calls it: most tests, the
//! CLI) those functions do nothing but one atomic load: the instruments live in a `OnceLock`.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists
//! (`http.server.request.duration`, `db.client.connection.*`); the others are `praxis.*`. The
//! Prometheus page writes them the Prometheus way (`http_server_request_duration_seconds`,
//! `praxis_auth_login_failures_total`).
//!
//! **Labels are bounded and carry no personal data.** Every attribute value is either a
//! `&'static str` chosen here or by the caller from a fixed set (a reason, a provider, a limiter)
//! or a route *template* (`/patients/{id}`, never the path). No patient or user id, e-mail, IP
//! address or practice id is ever a label: each would make one time series per person (a
//! metrics store keeps every series for its whole retention, and its memory grows with them),
//! and a metrics store is not access-controlled, retained or erased like the audit trail is.
//! Who and which practice is the audit trail's job: an alert says *that* something happens,
//! `GET /audit` (or `praxis audit`) says who and where.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use std::sync::OnceLock;
use std::time::Duration;

/// Bucket boundaries for durations in seconds: the OpenTelemetry HTTP semantic conventions'
/// recommendation (5 ms .. 10 s).
const DURATION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Bucket boundaries for the audit sealing lag, in seconds (a journal entry waits at most a few
/// seconds in normal operation; minutes mean the sealer is stuck).
const SEAL_LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// What to export.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Serve the Prometheus page (the caller serves [`MetricsExporter::render`] on its own port).
    pub prometheus: bool,
    /// OTLP/HTTP endpoint (e.g. `http://collector:4318`); metrics go to `/v1/metrics`.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed over OTLP.
    pub otlp_interval: Duration,
    pub service_name: String,
}

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("telemetry.otlp_endpoint: metrics exporter: {0}")]
    Otlp(String),
    #[error("telemetry.otlp_endpoint is set but this binary was built without the `otlp` feature")]
    OtlpNotBuilt,
    #[error("prometheus exporter: {0}")]
    Prometheus(String),
    #[error("metrics were already installed in this process")]
    AlreadyInstalled,
}

/// The installed meter provider; renders the Prometheus page. Dropping it flushes the OTLP
/// export (the CLI's `audit verify` relies on that to deliver its result gauge).
#[must_use = "dropping the exporter shuts the metrics export down"]
pub struct MetricsExporter {
    provider: SdkMeterProvider,
    registry: Option<prometheus::Registry>,
}

impl std::fmt::Debug for MetricsExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsExporter").field("prometheus", &self.registry.is_some()).finish_non_exhaustive()
    }
}

impl MetricsExporter {
    /// The Prometheus text exposition of every instrument (encoded by the `prometheus` crate).
    /// Empty when the Prometheus page is not configured.
    pub fn render(&self) -> Result<String, MetricsError> {
        use prometheus::Encoder as _;
        let Some(registry) = &self.registry else {
            return Ok(String::new());
        };
        let mut page = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut page)
            .map_err(|e| MetricsError::Prometheus(e.to_string()))?;
        String::from_utf8(page).map_err(|e| MetricsError::Prometheus(e.to_string()))
    }

    /// The content type of [`Self::render`]'s page.
    pub fn content_type(&self) -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

impl Drop for MetricsExporter {
    fn drop(&mut self) {
        // Nothing useful to do with a shutdown error at exit; the exporter logs its own.
        let _ = self.provider.shutdown();
    }
}

/// Installs the process's instruments. `Ok(None)` when nothing is to be exported (then every
/// `record_*` stays a no-op). Once per process.
pub fn install(config: &MetricsConfig) -> Result<Option<MetricsExporter>, MetricsError> {
    if !config.prometheus && config.otlp_endpoint.is_none() {
        return Ok(None);
    }
    if INSTRUMENTS.get().is_some() {
        return Err(MetricsError::AlreadyInstalled);
    }
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
    let mut builder = SdkMeterProvider::builder().with_resource(resource);
    let registry = if config.prometheus {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .map_err(|e| MetricsError::Prometheus(e.to_string()))?;
        builder = builder.with_reader(exporter);
        Some(registry)
    } else {
        None
    };
    if let Some(endpoint) = config.otlp_endpoint.as_deref() {
        builder = with_otlp(builder, endpoint, config.otlp_interval)?;
    }
    let provider = builder.build();
    let instruments = Instruments::new(provider.meter("praxis"));
    INSTRUMENTS.set(instruments).map_err(|_| MetricsError::AlreadyInstalled)?;
    Ok(Some(MetricsExporter { provider, registry }))
}

#[cfg(feature = "otlp")]
fn with_otlp(
    builder: opentelemetry_sdk::metrics::MeterProviderBuilder,
    endpoint: &str,
    interval: Duration,
) -> Result<opentelemetry_sdk::metrics::MeterProviderBuilder, MetricsError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/metrics", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| MetricsError::Otlp(e.to_string()))?;
    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter).with_interval(interval).build();
    Ok(builder.with_reader(reader))
}

#[cfg(not(feature = "otlp"))]
fn with_otlp(
    _builder: opentelemetry_sdk::metrics::MeterProviderBuilder,
    _endpoint: &str,
    _interval: Duration,
) -> Result<opentelemetry_sdk::metrics::MeterProviderBuilder, MetricsError> {
    Err(MetricsError::OtlpNotBuilt)
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

fn instruments() -> Option<&'static Instruments> {
    INSTRUMENTS.get()
}

/// Whether metrics are installed: a caller with work to do before recording (reading a clock,
/// matching a route) checks this first, so metrics that are off cost nothing.
pub fn enabled() -> bool {
    INSTRUMENTS.get().is_some()
}

struct Instruments {
    meter: Meter,
    http_request_duration: Histogram<f64>,
    login_failures: Counter<u64>,
    login_lockouts: Counter<u64>,
    suspicious_activity: Counter<u64>,
    webhook_verifications: Counter<u64>,
    rate_limit_refusals: Counter<u64>,
    ip_blocklist_hits: Counter<u64>,
    http_connection_errors: Counter<u64>,
    kms_operation_duration: Histogram<f64>,
    db_begin_duration: Histogram<f64>,
    audit_appends: Counter<u64>,
    audit_seal_lag: Histogram<f64>,
    audit_verification_result: Gauge<i64>,
    reminders: Counter<u64>,
    reminder_backlog: Gauge<u64>,
}

impl Instruments {
    fn new(meter: Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter.u64_counter(name).with_unit("{event}").with_description(description).build()
        };
        Self {
            http_request_duration: seconds(
                "http.server.request.duration",
                "Duration of HTTP server requests, by route template, method and status class.",
                DURATION_BUCKETS,
            ),
            login_failures: counter("praxis.auth.login.failures", "Failed sign-ins, by reason."),
            login_lockouts: counter(
                "praxis.auth.login.lockouts",
                "Sign-ins refused because an account and address reached the login limit (once per lockout).",
            ),
            suspicious_activity: counter(
                "praxis.security.suspicious_activity",
                "security.suspicious_activity audit entries written, by subject kind.",
            ),
            webhook_verifications: counter(
                "praxis.webhook.verifications",
                "Inbound webhook deliveries, by provider and outcome (verified, forged, stale, duplicate, invalid).",
            ),
            rate_limit_refusals: counter(
                "praxis.rate_limit.refusals",
                "Requests refused by a rate limiter, by limiter.",
            ),
            ip_blocklist_hits: counter(
                "praxis.ip_blocklist.hits",
                "Requests refused because their address is blocked.",
            ),
            http_connection_errors: counter(
                "praxis.http.connection_errors",
                "Requests the HTTP framework refused before routing (malformed or oversized heads, answered \
                 400/431) and connections it lost.",
            ),
            kms_operation_duration: seconds(
                "praxis.kms.operation.duration",
                "Duration of KMS calls, by operation and outcome.",
                DURATION_BUCKETS,
            ),
            db_begin_duration: seconds(
                "praxis.db.transaction.begin.duration",
                "Time to open a transaction: waiting for a pooled connection plus the BEGIN and RLS-context round trip.",
                DURATION_BUCKETS,
            ),
            audit_appends: counter("praxis.audit.appends", "Audit entries appended."),
            audit_seal_lag: seconds(
                "praxis.audit.seal.lag",
                "Time from an audit entry's append to its sealing into the hash chain.",
                SEAL_LAG_BUCKETS,
            ),
            audit_verification_result: meter
                .i64_gauge("praxis.audit.verification.result")
                .with_description("Last audit chain verification of this process: 1 intact, 0 failed.")
                .build(),
            reminders: counter("praxis.reminders", "Appointment reminders handled, by outcome."),
            reminder_backlog: meter
                .u64_gauge("praxis.reminders.backlog")
                .with_unit("{practice}")
                .with_description("Practices with reminders due, seen by the last reminder round.")
                .build(),
            meter,
        }
    }
}

/// The HTTP status class label (`2xx` .. `5xx`): bounded, and what alerts and dashboards group by.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The method label, bounded as the HTTP semantic conventions ask: a method the API does not
/// know is `_OTHER`.
fn known_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "_OTHER",
    }
}

/// One connection-level error of the HTTP server (a request it could not parse, answered 400 or
/// 431 by the framework, or a connection lost mid-request).
pub fn record_http_connection_error() {
    let Some(m) = instruments() else { return };
    m.http_connection_errors.add(1, &[]);
}

/// One served HTTP request. `route` is the matched route *template* (`None`: no route matched,
/// recorded as `unmatched` so scanners cannot create series).
pub fn record_http_request(route: Option<&str>, method: &str, status: u16, duration: Duration) {
    let Some(m) = instruments() else { return };
    let route = route.map_or_else(|| "unmatched".into(), |route| opentelemetry::Value::from(route.to_owned()));
    m.http_request_duration.record(
        duration.as_secs_f64(),
        &[
            KeyValue::new("http.route", route),
            KeyValue::new("http.request.method", known_method(method)),
            KeyValue::new("http.response.status_class", status_class(status)),
        ],
    );
}

/// A failed sign-in; `reason` is the use case's reason slug (`invalid_credentials`, `rate_limited`).
pub fn record_login_failure(reason: &'static str) {
    let Some(m) = instruments() else { return };
    m.login_failures.add(1, &[KeyValue::new("reason", reason)]);
}

/// The failure that made an account and address reach the login limit.
pub fn record_login_lockout() {
    let Some(m) = instruments() else { return };
    m.login_lockouts.add(1, &[]);
}

/// A `security.suspicious_activity` entry; `subject` is its kind (`account`, `source_ip`).
pub fn record_suspicious_activity(subject: &'static str) {
    let Some(m) = instruments() else { return };
    m.suspicious_activity.add(1, &[KeyValue::new("subject", subject)]);
}

/// An inbound webhook delivery: `provider` is the provider's slug, `outcome` one of `verified`,
/// `forged`, `stale`, `duplicate`, `invalid`.
pub fn record_webhook_verification(provider: &'static str, outcome: &'static str) {
    let Some(m) = instruments() else { return };
    m.webhook_verifications.add(1, &[KeyValue::new("provider", provider), KeyValue::new("outcome", outcome)]);
}

/// A request refused by the limiter `limiter` (`global`, `user`, `login`, `webhook`, ...).
pub fn record_rate_limit_refusal(limiter: &'static str) {
    let Some(m) = instruments() else { return };
    m.rate_limit_refusals.add(1, &[KeyValue::new("limiter", limiter)]);
}

/// A request refused because its address is on the block list.
pub fn record_ip_blocklist_hit() {
    let Some(m) = instruments() else { return };
    m.ip_blocklist_hits.add(1, &[]);
}

/// One KMS call: `operation` (`wrap`, `unwrap`, ...) and `outcome` (`ok`, or the failure's kind).
pub fn record_kms_operation(operation: &'static str, outcome: &'static str, duration: Duration) {
    let Some(m) = instruments() else { return };
    m.kms_operation_duration
        .record(duration.as_secs_f64(), &[KeyValue::new("operation", operation), KeyValue::new("outcome", outcome)]);
}

/// Opening one transaction: the wait for a pooled connection plus the `BEGIN` + RLS context
/// round trip. It grows when the pool is exhausted (requests wait) and when Postgres answers
/// slowly, the two things an operator looks for first; `outcome` is `ok` or `error`.
pub fn record_db_begin(outcome: &'static str, duration: Duration) {
    let Some(m) = instruments() else { return };
    m.db_begin_duration.record(duration.as_secs_f64(), &[KeyValue::new("outcome", outcome)]);
}

/// `count` audit entries appended.
pub fn record_audit_appends(count: u64) {
    let Some(m) = instruments() else { return };
    m.audit_appends.add(count, &[]);
}

/// **Sealing lag** (for the audit journal's sealer): how long an entry waited between its append
/// to the journal and its sealing into the hash chain. Call once per sealed entry (or once per
/// batch with the oldest entry's lag). Exported as `praxis.audit.seal.lag`
/// (`praxis_audit_seal_lag_seconds` in Prometheus).
pub fn record_audit_seal_lag(lag: Duration) {
    let Some(m) = instruments() else { return };
    m.audit_seal_lag.record(lag.as_secs_f64(), &[]);
}

/// The result of an audit chain verification run of this process (every practice checked).
pub fn record_audit_verification(intact: bool) {
    let Some(m) = instruments() else { return };
    m.audit_verification_result.record(i64::from(intact), &[]);
}

/// `count` reminders with `outcome` (`sent`, `failed`, `skipped`).
pub fn record_reminders(outcome: &'static str, count: u64) {
    let Some(m) = instruments() else { return };
    m.reminders.add(count, &[KeyValue::new("outcome", outcome)]);
}

/// Practices with reminders due at the start of a reminder round.
pub fn record_reminder_backlog(practices: u64) {
    let Some(m) = instruments() else { return };
    m.reminder_backlog.record(practices, &[]);
}

/// Postgres pool usage, read at each collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub used: u64,
    pub idle: u64,
    pub max: u64,
}

/// Registers the pool gauges `db.client.connection.count` (by state `used`/`idle`) and
/// `db.client.connection.max`, read from `usage` at each collection. Once per pool.
pub fn observe_db_pool(usage: impl Fn() -> PoolUsage + Send + Sync + 'static) {
    let Some(m) = instruments() else { return };
    let usage = std::sync::Arc::new(usage);
    let read = usage.clone();
    let pool = KeyValue::new("db.client.connection.pool.name", "main");
    let (used_labels, idle_labels) = (
        [pool.clone(), KeyValue::new("db.client.connection.state", "used")],
        [pool.clone(), KeyValue::new("db.client.connection.state", "idle")],
    );
    m.meter
        .u64_observable_gauge("db.client.connection.count")
        .with_unit("{connection}")
        .with_description("Postgres connections in the pool, by state.")
        .with_callback(move |observer| {
            let now = read();
            observer.observe(now.used, &used_labels);
            observer.observe(now.idle, &idle_labels);
        })
        .build();
    m.meter
        .u64_observable_gauge("db.client.connection.max")
        .with_unit("{connection}")
        .with_description("The most Postgres connections the pool may open.")
        .with_callback(move |observer| observer.observe(usage().max, std::slice::from_ref(&pool)))
        .build();
}

/// Registers `praxis.dek_cache.lookups` (by `result`: `hit`, `miss`), read from `hits_and_misses`
/// (the cache's own counters) at each collection: nothing is added to the cache's hot path.
pub fn observe_dek_cache(hits_and_misses: impl Fn() -> (u64, u64) + Send + Sync + 'static) {
    let Some(m) = instruments() else { return };
    m.meter
        .u64_observable_counter("praxis.dek_cache.lookups")
        .with_unit("{lookup}")
        .with_description("Data-key cache lookups, by result (every miss is one KMS unwrap).")
        .with_callback(move |observer| {
            let (hits, misses) = hits_and_misses();
            observer.observe(hits, &[KeyValue::new("result", "hit")]);
            observer.observe(misses, &[KeyValue::new("result", "miss")]);
        })
        .build();
}

/// Registers `praxis.rate_limit.redis_fallback` (1 while the rate limiter runs on its in-process
/// fallback because Redis is unreachable, else 0), read from `active` at each collection.
pub fn observe_redis_fallback(active: impl Fn() -> bool + Send + Sync + 'static) {
    let Some(m) = instruments() else { return };
    m.meter
        .u64_observable_gauge("praxis.rate_limit.redis_fallback")
        .with_description("1 while rate limits are enforced per process because Redis is unreachable.")
        .with_callback(move |observer| observer.observe(u64::from(active()), &[]))
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_and_methods_are_bounded() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(999), "5xx");
        assert_eq!(known_method("GET"), "GET");
        assert_eq!(known_method("BREW"), "_OTHER");
    }

    #[test]
    fn recording_before_install_is_a_no_op() {
        // No provider in this test process: nothing to panic on, nothing recorded.
        record_http_request(Some("/health/live"), "GET", 200, Duration::from_millis(1));
        record_login_failure("invalid_credentials");
        observe_redis_fallback(|| true);
        assert!(instruments().is_none());
    }
}
