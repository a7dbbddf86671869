//! Appointment reminders: the [`Notifier`] port, the default [`LoggingNotifier`], and the
//! [`ReminderWorker`] that `praxis serve` runs beside the HTTP server.
//!
//! # One round of the worker ([`ReminderWorker::tick`])
//! 1. Ask which practices have due, unclaimed reminders (`reminders_due_practices`, the one
//!    cross-practice read the runtime role can make; it yields practice ids only).
//! 2. Per practice, in the practice's service context: claim a batch (`FOR UPDATE SKIP LOCKED`,
//!    then a lease of `reminders.lease_secs`), so another worker, on this instance or another,
//!    neither blocks on nor takes the same rows.
//! 3. Per reminder, decide **at sending time** ([`scheduling::decide_reminder`]): the
//!    appointment's status and start now, whether the patient was erased, which channels they
//!    can be reached on (their contact fields, decrypted here and nowhere else), and whether
//!    `consent::may_contact(.., appointment_reminders, now)` holds over the replayed consent
//!    history. A skip is recorded with its reason; a send goes through the notifier with the
//!    reminder's id as idempotency key and is recorded as sent.
//!
//! Delivery is at least once: a worker that dies between sending and recording leaves the row
//! to be claimed again after the lease, and the second send carries the same idempotency key, so
//! a provider that honours it delivers once. A failed send is retried with backoff up to
//! `reminders.max_attempts`, then recorded as `failed`. Nothing is held in a database
//! transaction while the notifier talks to the network.

use crate::appointments::calendar_context;
use crate::error::ApiError;
use crate::state::AppState;
use consent::Purpose;
use kernel::{Actor, Clock, Pii, TenantId};
use patients::PatientField;
use scheduling::{ReminderChannel, ReminderCheck, ReminderDecision, decide_reminder};
use std::sync::Arc;
use store_postgres::appointments::{self as store, ReminderRow};
use store_postgres::{DbContext, begin};

pub use notifiers::{ChannelNotifier, LoggingNotifier, Notifier, NotifyError, ReminderMessage};

/// The notifier `reminders.*` selects: the logging notifier, or the provider adapters of the
/// configured channels. Fails when an adapter cannot be built (settings are validated before).
pub fn notifier_from_config(config: &crate::appointments::RemindersConfig) -> Result<Arc<dyn Notifier>, String> {
    match config.notifier {
        crate::appointments::NotifierKind::Log => Ok(Arc::new(LoggingNotifier)),
        crate::appointments::NotifierKind::Providers => {
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
    pub batch_size: u32,
    pub lease: time::Duration,
    pub max_attempts: u32,
    /// Channels in order of preference.
    pub channels: Vec<ReminderChannel>,
    /// Most practices served per round.
    pub max_practices: u32,
}

impl WorkerSettings {
    pub fn from_config(config: &crate::appointments::RemindersConfig) -> Self {
        Self {
            interval: std::time::Duration::from_secs(config.interval_secs.max(1)),
            batch_size: config.batch_size.clamp(1, 1000),
            lease: time::Duration::seconds(i64::try_from(config.lease_secs).unwrap_or(i64::MAX).max(1)),
            max_attempts: config.max_attempts.max(1),
            channels: config.channel_preference(),
            max_practices: 100,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub claimed: usize,
    pub sent: usize,
    pub skipped: usize,
    /// Failed attempts that will be retried.
    pub retrying: usize,
    /// Reminders given up as failed.
    pub failed: usize,
    /// Reminders left alone because of an internal error (logged; retried after the lease).
    pub errors: usize,
    /// Claimed reminders not attempted because too little of the batch's lease was left for a
    /// send (see [`notifiers::SEND_TIMEOUT`]); claimed again once the lease has run out.
    pub deferred: usize,
}

enum Outcome {
    Sent,
    Skipped,
    Retrying,
    Failed,
}

/// Sends due reminders; see the module documentation.
#[derive(Debug, Clone)]
pub struct ReminderWorker {
    state: AppState,
    notifier: Arc<dyn Notifier>,
    settings: WorkerSettings,
    actor: Actor,
}

impl ReminderWorker {
    /// A worker over `state`'s database and KMS, reading the time from `clock` (tests pass a
    /// `kernel::FixedClock`).
    pub fn new(state: AppState, clock: Arc<dyn Clock>, notifier: Arc<dyn Notifier>, settings: WorkerSettings) -> Self {
        let state = AppState { clock, ..state };
        Self { state, notifier, settings, actor: Actor::System { component: "reminder-worker".into() } }
    }

    /// Runs rounds forever, `settings.interval` apart. Errors are logged, never fatal.
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
    pub async fn tick(&self) -> anyhow::Result<TickReport> {
        let now = self.state.clock.now();
        let mut tx = begin(&self.state.db, &DbContext::anonymous()).await?;
        let practices = store::practices_with_due_reminders(&mut tx, now, self.settings.max_practices).await?;
        tx.commit().await?;
        let mut report = TickReport::default();
        for tenant in practices {
            let mut tx = begin(&self.state.db, &calendar_context(tenant)).await?;
            let claimed =
                store::claim_due_reminders(&mut tx, tenant, now, now + self.settings.lease, self.settings.batch_size)
                    .await?;
            tx.commit().await?;
            report.claimed += claimed.len();
            // A reminder whose lease ran out may be claimed by another worker, and neither Meta
            // nor Twilio take an idempotency key: stop taking reminders of this batch once a
            // send could outlast the lease. The rest are claimed again after it.
            let claimed_at = std::time::Instant::now();
            let budget = self.settings.lease.unsigned_abs().saturating_sub(notifiers::SEND_TIMEOUT);
            for reminder in claimed {
                if claimed_at.elapsed() >= budget {
                    report.deferred += 1;
                    continue;
                }
                match self.process(tenant, &reminder).await {
                    Ok(Outcome::Sent) => report.sent += 1,
                    Ok(Outcome::Skipped) => report.skipped += 1,
                    Ok(Outcome::Retrying) => report.retrying += 1,
                    Ok(Outcome::Failed) => report.failed += 1,
                    Err(error) => {
                        report.errors += 1;
                        tracing::warn!(reminder_id = %reminder.id, error = %error, "reminder not processed");
                    }
                }
            }
        }
        Ok(report)
    }

    async fn process(&self, tenant: TenantId, reminder: &ReminderRow) -> Result<Outcome, ApiError> {
        let state = &self.state;
        let now = state.clock.now();
        let mut tx = begin(&state.db, &calendar_context(tenant)).await?;
        let appointment = store::get(&mut tx, tenant, reminder.appointment, false)
            .await?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("reminder {} has no appointment", reminder.id)))?;
        let patient = store_postgres::patients::get(&mut tx, tenant, appointment.patient, false)
            .await?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("appointment {} has no patient", appointment.id)))?;
        let erased = patient.erased_at.is_some() || patient.wrapped_dek.is_none();
        let mut addresses: Vec<(ReminderChannel, String)> = Vec::new();
        let mut consented: &[ReminderChannel] = &[];
        if !erased {
            let caller = app::Caller::system(tenant, self.actor.clone());
            let contact = state
                .app
                .open_patient_fields(&mut tx, &caller, &patient, &[PatientField::Phone, PatientField::Email])
                .await?;
            for channel in &self.settings.channels {
                let address = match channel {
                    ReminderChannel::Whatsapp | ReminderChannel::Sms => contact.phone.clone(),
                    ReminderChannel::Email => contact.email.clone(),
                };
                if let Some(address) = address {
                    addresses.push((*channel, address));
                }
            }
            let history = store_postgres::patients::consent_history(&mut tx, tenant, patient.id).await?;
            let records = app::consents::records_of(patient.id, &history)?;
            // Consent is per purpose, not per channel: a grant covers every channel.
            if consent::may_contact(&records, Purpose::AppointmentReminders, now) {
                consented = ReminderChannel::ALL;
            }
        }
        let reachable: Vec<ReminderChannel> = addresses.iter().map(|(c, _)| *c).collect();
        let decision = decide_reminder(&ReminderCheck {
            status: appointment.status,
            planned_start: reminder.planned_start,
            current_start: appointment.slot.start(),
            now,
            patient_erased: erased,
            reachable: &reachable,
            consented,
        });
        let channel = match decision {
            ReminderDecision::Skip(reason) => {
                store::mark_reminder_skipped(&mut tx, tenant, reminder.id, reason, now).await?;
                tx.commit().await?;
                return Ok(Outcome::Skipped);
            }
            ReminderDecision::Send(channel) => channel,
        };
        let time_zone =
            store::working_hours(&mut tx, tenant, appointment.therapist).await?.map(|(h, _)| h.time_zone().to_owned());
        // Commit (the audit of a key unwrap) before talking to the network.
        tx.commit().await?;
        let to = addresses.into_iter().find(|(c, _)| *c == channel).map(|(_, a)| a).unwrap_or_default();
        let message = ReminderMessage {
            reminder_id: reminder.id,
            tenant,
            appointment_id: appointment.id,
            channel,
            to: Pii::new(to),
            appointment_start: appointment.slot.start(),
            time_zone,
        };
        let result = self.notifier.send(&message).await;
        let now = state.clock.now();
        let mut tx = begin(&state.db, &calendar_context(tenant)).await?;
        let outcome = match result {
            Ok(()) => {
                store::mark_reminder_sent(&mut tx, tenant, reminder.id, channel, now).await?;
                Outcome::Sent
            }
            Err(error) => {
                let attempts = u32::try_from(reminder.attempts).unwrap_or(u32::MAX);
                let give_up = matches!(error, NotifyError::Permanent { .. }) || attempts >= self.settings.max_attempts;
                let retry_at = (!give_up).then(|| now + backoff(attempts));
                tracing::warn!(reminder_id = %reminder.id, code = error.code(), attempts, give_up, "reminder delivery failed");
                store::mark_reminder_attempt_failed(&mut tx, tenant, reminder.id, error.code(), retry_at, now).await?;
                if give_up { Outcome::Failed } else { Outcome::Retrying }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Wait before the next attempt after `attempts` tries: 1, 2, 4, ... minutes, at most an hour.
fn backoff(attempts: u32) -> time::Duration {
    let minutes = 1_i64 << attempts.saturating_sub(1).min(6);
    time::Duration::minutes(minutes.min(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;
    use uuid::Uuid;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let minutes: Vec<i64> = (1..=9).map(|a| backoff(a).whole_minutes()).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn the_idempotency_key_is_stable_per_reminder() {
        let message = ReminderMessage {
            reminder_id: Uuid::from_u128(7),
            tenant: TenantId::new(),
            appointment_id: Uuid::from_u128(8),
            channel: ReminderChannel::Sms,
            to: Pii::new("+4915100000000".into()),
            appointment_start: OffsetDateTime::UNIX_EPOCH,
            time_zone: None,
        };
        assert_eq!(message.idempotency_key(), message.clone().idempotency_key());
        assert!(message.idempotency_key().ends_with(&Uuid::from_u128(7).to_string()));
        assert!(!format!("{message:?}").contains("4915100000000"), "the recipient must not print");
    }
}
