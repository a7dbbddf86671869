//! The HTTP framework's connection errors reach the log through `init`'s subscriber as one
//! rate-limited WARN line, never as ERROR lines, while every other event passes as configured.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use telemetry::{LogFormat, TelemetryConfig};

/// Collects every line written.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn connection_errors_become_one_warn_line_and_other_events_pass() {
    let lines = Lines::default();
    let config = TelemetryConfig {
        format: LogFormat::Json,
        filter: "info".into(),
        otlp_endpoint: None,
        service_name: "praxis-test".into(),
    };
    let _guard = telemetry::init_with_writer(&config, lines.clone()).unwrap();
    for _ in 0..20 {
        tracing::error!(target: "actix_http::h1::dispatcher", "stream error: request parse error: invalid Header provided");
    }
    tracing::error!(target: "api::error", "a real error of the application");
    tracing::info!(target: "api::server", "an info line");
    let output = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let events: Vec<serde_json::Value> = output.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let targets: Vec<&str> = events.iter().map(|e| e["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["praxis::http::connection_errors", "api::error", "api::server"], "{output}");
    assert_eq!(events[0]["level"], "WARN");
    assert_eq!(events[0]["connection_errors"], 1);
    assert!(events[0]["last_error"].as_str().unwrap().contains("invalid Header provided"), "{output}");
}
