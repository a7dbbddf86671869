//! The audit sealer door: the worker `praxis serve` runs beside the HTTP server (unless
//! `audit.sealer_enabled = false`), which links the entries requests recorded into each
//! practice's hash chain, round after round, through `app::audit_sealing`. Several instances
//! may run it at once: a practice one of them is sealing is skipped by the others.

use std::time::Duration;

/// Seals, practice by practice, every `interval`.
#[derive(Debug, Clone)]
pub struct AuditSealer {
    app: app::Services,
    interval: Duration,
    max_practices: u32,
}

impl AuditSealer {
    pub fn new(app: app::Services, config: &crate::config::audit::AuditConfig) -> Self {
        Self { app, interval: config.seal_interval(), max_practices: config.seal_max_practices }
    }

    /// Runs rounds until the runtime of `praxis serve` stops. A failed round (the database
    /// restarting, say) is logged, at most once a minute while it keeps failing, and retried
    /// at the next tick: nothing is lost, the entries wait in the table.
    pub async fn run(self) {
        tracing::info!(interval_ms = self.interval.as_millis() as u64, "audit sealer started");
        let mut last_failure_logged: Option<std::time::Instant> = None;
        loop {
            match self.app.seal_audit_trails(self.max_practices).await {
                Ok(round) => {
                    last_failure_logged = None;
                    if round.refused > 0 {
                        tracing::error!(
                            refused = round.refused,
                            "audit entries left unsealed: altered after they were recorded (see `praxis audit verify`)"
                        );
                    }
                    if let Some(max_lag) = round.lags.iter().max() {
                        tracing::debug!(
                            practices = round.practices,
                            sealed = round.sealed,
                            busy = round.busy,
                            max_lag_ms = max_lag.whole_milliseconds() as i64,
                            "audit sealing round"
                        );
                    }
                }
                Err(error) => {
                    if last_failure_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(error = format!("{error:#}"), "audit sealing round failed; retrying");
                        last_failure_logged = Some(std::time::Instant::now());
                    }
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}
