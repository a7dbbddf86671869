//! Logging and tracing set-up for Praxis.
//!
//! Two nets keep secrets and personal data out of logs:
//! 1. types: `kernel::Secret` and `kernel::Pii` print a mask from `Debug`/`Display`;
//! 2. this crate: every log line passes through [`RedactingWriter`], which masks the values of
//!    known sensitive keys (phone, email, password, token, ...) wherever they appear: as JSON log
//!    fields, inside JSON carried in a string field, and in `key: "value"` / `key=value` text such
//!    as a derived `Debug` of a struct that forgot to use `Pii`.

pub mod connection_errors;
pub mod metrics;
mod redact;

pub use connection_errors::ConnectionErrorLayer;
pub use redact::{REDACTED, RedactingMakeWriter, RedactingWriter, is_sensitive_key, redact_line};

use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line: for production and log pipelines.
    Json,
    /// Human-readable lines: for a developer's terminal. Redaction applies all the same.
    Pretty,
}

/// What to set up.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,sqlx=warn`.
    pub filter: String,
    /// OTLP/HTTP endpoint (e.g. `http://collector:4318`). `None` disables export entirely.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.log_level: invalid filter directive: {0}")]
    Filter(String),
    #[error("telemetry.otlp_endpoint: {0}")]
    Otlp(String),
    #[error("telemetry was already initialised in this process")]
    AlreadyInitialised,
    #[error("telemetry.otlp_endpoint is set but this binary was built without the `otlp` feature")]
    OtlpNotBuilt,
}

/// Keeps the exporter alive; flushes pending spans when dropped.
#[must_use = "dropping the guard shuts the trace exporter down"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            // Nothing useful to do with a shutdown error at exit; the exporter logs its own.
            let _ = provider.shutdown();
        }
    }
}

/// Checks a filter directive without installing anything (config validation uses this).
pub fn check_filter(directive: &str) -> Result<(), String> {
    EnvFilter::try_new(directive).map(|_| ()).map_err(|e| e.to_string())
}

/// Installs the global subscriber, writing redacted lines to stdout.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    init_with_writer(config, std::io::stdout)
}

/// Installs the global subscriber with a caller-chosen writer (tests capture output this way).
pub fn init_with_writer<W>(config: &TelemetryConfig, writer: W) -> Result<TelemetryGuard, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.filter).map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let mut layers = vec![fmt_layer(config.format, writer)];
    let (otel_layer, guard) = otel_layer(config)?;
    layers.extend(otel_layer);
    // The HTTP server's connection errors go to their own layer, counted and rate-limited,
    // never straight to the log (see `connection_errors`).
    let not_connection_errors = filter_fn(|metadata| !connection_errors::is_connection_error(metadata));
    let connection_errors = filter_fn(connection_errors::is_connection_error)
        .with_max_level_hint(tracing::level_filters::LevelFilter::ERROR);
    tracing_subscriber::registry()
        .with(layers.with_filter(filter.and(not_connection_errors)))
        .with(ConnectionErrorLayer::new(CONNECTION_ERROR_LOG_INTERVAL).with_filter(connection_errors))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(guard)
}

/// At most one log line per this interval about the HTTP server's connection errors.
pub const CONNECTION_ERROR_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The formatting layer on its own, for callers that build their own subscriber (tests).
pub fn fmt_layer<W>(format: LogFormat, writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let writer = RedactingMakeWriter::new(writer);
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer).boxed(),
    }
}

type OtelLayer = Option<Box<dyn Layer<Registry> + Send + Sync>>;

#[cfg(feature = "otlp")]
fn otel_layer(config: &TelemetryConfig) -> Result<(OtelLayer, TelemetryGuard), TelemetryError> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;

    let Some(endpoint) = config.otlp_endpoint.as_deref() else {
        return Ok((None, TelemetryGuard::default()));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("praxis");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
    Ok((Some(layer), TelemetryGuard { provider: Some(provider) }))
}

#[cfg(not(feature = "otlp"))]
fn otel_layer(config: &TelemetryConfig) -> Result<(OtelLayer, TelemetryGuard), TelemetryError> {
    match config.otlp_endpoint {
        Some(_) => Err(TelemetryError::OtlpNotBuilt),
        None => Ok((None, TelemetryGuard::default())),
    }
}
