//! The reminder worker door: the [`Notifier`] that `reminders.notifier` selects, and the
//! [`ReminderWorker`] that `praxis serve` runs beside the HTTP server, with its schedule. A
//! round's work (claim a batch, decide each reminder at sending time, send, record the outcome)
//! is the use case in `app::reminders`; each round here asks which practices have due reminders
//! and runs that use case for each, as the system component `reminder-worker`.

use kernel::Actor;
use std::sync::Arc;

pub use app::reminders::{RoundReport, RoundSettings};
pub use notifiers::{ChannelNotifier, LoggingNotifier, Notifier, NotifyError, ReminderMessage};

/// The notifier `reminders.*` selects: the logging notifier, or the provider adapters of the
/// configured channels. Fails when an adapter cannot be built (settings are validated before).
pub fn notifier_from_config(
    config: &crate::config::appointments::RemindersConfig,
) -> Result<Arc<dyn Notifier>, String> {
    match config.notifier {
        crate::config::appointments::NotifierKind::Log => Ok(Arc::new(LoggingNotifier)),
        crate::config::appointments::NotifierKind::Providers => {
            let mut routes = ChannelNotifier::default();
            if let Some(settings) = &config.whatsapp {
                routes.whatsapp = Some(Arc::new(notifiers::whatsapp::WhatsAppCloudNotifier::new(settings.clone())?));
            }
            if let Some(settings) = &config.sms {
                routes.sms = Some(Arc::new(notifiers::twilio::TwilioSmsNotifier::new(settings.clone())?));
            }
            if let Some(settings) = &config.email {
                routes.email = Some(Arc::new(notifiers::email::SmtpNotifier::new(settings.clone())?));
            }
            Ok(Arc::new(routes))
        }
    }
}

/// The worker's settings (from `reminders.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    pub interval: std::time::Duration,
    /// Most practices served per round.
    pub max_practices: u32,
    /// How each practice's batch is claimed and retried.
    pub round: RoundSettings,
}

impl WorkerSettings {
    pub fn from_config(config: &crate::config::appointments::RemindersConfig) -> Self {
        Self {
            interval: std::time::Duration::from_secs(config.interval_secs.max(1)),
            max_practices: 100,
            round: RoundSettings {
                batch_size: config.batch_size.clamp(1, 1000),
                lease: time::Duration::seconds(i64::try_from(config.lease_secs).unwrap_or(i64::MAX).max(1)),
                max_attempts: config.max_attempts.max(1),
                channels: config.channel_preference(),
            },
        }
    }
}

/// Sends due reminders, practice by practice, through `app::reminders`.
#[derive(Debug, Clone)]
pub struct ReminderWorker {
    app: app::Services,
    notifier: Arc<dyn Notifier>,
    settings: WorkerSettings,
    actor: Actor,
}

impl ReminderWorker {
    /// A worker over `app`'s database, KMS and clock (tests build the services with a
    /// `kernel::FixedClock`).
    pub fn new(app: app::Services, notifier: Arc<dyn Notifier>, settings: WorkerSettings) -> Self {
        Self { app, notifier, settings, actor: Actor::System { component: "reminder-worker".into() } }
    }

    /// Runs rounds, `settings.interval` apart, until the runtime of `praxis serve` stops. Errors
    /// are logged, never fatal.
    pub async fn run(self) {
        tracing::info!(interval_secs = self.settings.interval.as_secs(), "reminder worker started");
        loop {
            match self.tick().await {
                Ok(report) if report.claimed > 0 => tracing::info!(
                    claimed = report.claimed,
                    sent = report.sent,
                    skipped = report.skipped,
                    retrying = report.retrying,
                    failed = report.failed,
                    errors = report.errors,
                    "reminder round"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "reminder round failed"),
            }
            tokio::time::sleep(self.settings.interval).await;
        }
    }

    /// One round: every practice with due reminders, one batch each.
    pub async fn tick(&self) -> app::Result<RoundReport> {
        let practices = self.app.practices_with_due_reminders(self.settings.max_practices).await?;
        let mut report = RoundReport::default();
        let practices_due = practices.len();
        for tenant in practices {
            let caller = app::Caller::system(tenant, self.actor.clone());
            report += self.app.send_due_reminders(&caller, &*self.notifier, &self.settings.round).await?;
        }
        app::metrics::record_reminder_round(practices_due, &report);
        Ok(report)
    }
}
