//! Sending appointment reminders: one round of the reminder worker for one practice, through the
//! [`Notifier`] the door passes in. The worker (`apps/api/src/reminders.rs`) owns the schedule,
//! the notifier selection and the loop over [`Services::practices_with_due_reminders`].
//!
//! # One practice's round ([`Services::send_due_reminders`])
//! 1. Claim a batch of due reminders in the practice's service context (`FOR UPDATE SKIP
//!    LOCKED`, then a lease of [`RoundSettings::lease`]), so another worker, on this instance or
//!    another, neither blocks on nor takes the same rows.
//! 2. Per reminder, decide **at sending time** ([`scheduling::decide_reminder`]): the
//!    appointment's status and start now, whether the patient was erased, which channels they
//!    can be reached on (their contact fields, decrypted here and nowhere else), and whether
//!    `consent::may_contact(.., appointment_reminders, now)` holds over the replayed consent
//!    history. A skip is recorded with its reason; a send goes through the notifier with the
//!    reminder's id as idempotency key and is recorded as sent.
//!
//! Delivery is at least once: a worker that dies between sending and recording leaves the row
//! to be claimed again after the lease, and the second send carries the same idempotency key, so
//! a provider that honours it delivers once. A failed send is retried with backoff up to
//! [`RoundSettings::max_attempts`], then recorded as `failed`. Nothing is held in a database
//! transaction while the notifier talks to the network.

use crate::{Caller, Error, Result, Services};
use consent::Purpose;
use kernel::{Pii, TenantId};
use notifiers::{Notifier, NotifyError, ReminderMessage};
use patients::PatientField;
use scheduling::{ReminderChannel, ReminderCheck, ReminderDecision, decide_reminder};
use store_postgres::DbContext;
use store_postgres::appointments::{self as store, ReminderRow};

/// How a round claims and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundSettings {
    /// Most reminders claimed per practice and round.
    pub batch_size: u32,
    /// How long a claim keeps other workers off a reminder.
    pub lease: time::Duration,
    /// Attempts before a reminder is given up as failed.
    pub max_attempts: u32,
    /// Channels in order of preference.
    pub channels: Vec<ReminderChannel>,
}

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
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

impl std::ops::AddAssign for RoundReport {
    fn add_assign(&mut self, other: Self) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.skipped += other.skipped;
        self.retrying += other.retrying;
        self.failed += other.failed;
        self.errors += other.errors;
        self.deferred += other.deferred;
    }
}

/// What became of one claimed reminder.
enum Outcome {
    Sent,
    Skipped,
    Retrying,
    Failed,
}

impl Services {
    /// The practices with due, unclaimed reminders, at most `limit`. The one cross-practice read
    /// the runtime role can make (`reminders_due_practices()`): it yields practice ids only.
    pub async fn practices_with_due_reminders(&self, limit: u32) -> Result<Vec<TenantId>> {
        let mut tx = store_postgres::begin(&self.db, &DbContext::practice_scan()).await?;
        let practices = store::practices_with_due_reminders(&mut tx, self.clock.now(), limit).await?;
        tx.commit().await?;
        Ok(practices)
    }

    /// One round for the caller's practice: claims a batch of due reminders, decides each at
    /// sending time, sends through `notifier` and records the outcome (see the module
    /// documentation). The caller is the system's own work (`Caller::system`), recorded as the
    /// actor of the key unwraps the contact fields need. A reminder that fails for an internal
    /// reason is logged, counted in [`RoundReport::errors`] and left to be claimed again after
    /// the lease; only a failed claim fails the round.
    pub async fn send_due_reminders(
        &self,
        caller: &Caller,
        notifier: &dyn Notifier,
        settings: &RoundSettings,
    ) -> Result<RoundReport> {
        let now = self.clock.now();
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let claimed =
            store::claim_due_reminders(&mut tx, caller.tenant, now, now + settings.lease, settings.batch_size).await?;
        tx.commit().await?;
        let mut report = RoundReport { claimed: claimed.len(), ..RoundReport::default() };
        // A reminder whose lease ran out may be claimed by another worker, and neither Meta nor
        // Twilio take an idempotency key: stop taking reminders of this batch once a send could
        // outlast the lease. The rest are claimed again after it.
        let claimed_at = std::time::Instant::now();
        let budget = settings.lease.unsigned_abs().saturating_sub(notifiers::SEND_TIMEOUT);
        for reminder in claimed {
            if claimed_at.elapsed() >= budget {
                report.deferred += 1;
                continue;
            }
            match self.send_reminder(caller, notifier, settings, &reminder).await {
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
        Ok(report)
    }

    /// Decides one claimed reminder, sends it if it is to go out, and records the outcome.
    async fn send_reminder(
        &self,
        caller: &Caller,
        notifier: &dyn Notifier,
        settings: &RoundSettings,
        reminder: &ReminderRow,
    ) -> Result<Outcome> {
        let tenant = caller.tenant;
        let now = self.clock.now();
        // Decided in one transaction (with the patient's DEK unwrapped outside it when not
        // cached); `None` when the reminder was skipped.
        let decided = self
            .with_patient_keys::<_, Error, _, _>(|keys| async move {
                let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
                let appointment = store::get(&mut tx, tenant, reminder.appointment, false)
                    .await?
                    .ok_or_else(|| Error::internal(anyhow::anyhow!("reminder {} has no appointment", reminder.id)))?;
                let patient = store_postgres::patients::get(&mut tx, tenant, appointment.patient, false)
                    .await?
                    .ok_or_else(|| Error::internal(anyhow::anyhow!("appointment {} has no patient", appointment.id)))?;
                let erased = patient.erased_at.is_some() || patient.wrapped_dek.is_none();
                let mut addresses: Vec<(ReminderChannel, String)> = Vec::new();
                let mut consented: &[ReminderChannel] = &[];
                if !erased {
                    let contact = self
                        .open_patient_fields(
                            &mut tx,
                            caller,
                            &keys,
                            &patient,
                            &[PatientField::Phone, PatientField::Email],
                        )
                        .await?;
                    for channel in &settings.channels {
                        let address = match channel {
                            ReminderChannel::Whatsapp | ReminderChannel::Sms => contact.phone.clone(),
                            ReminderChannel::Email => contact.email.clone(),
                        };
                        if let Some(address) = address {
                            addresses.push((*channel, address));
                        }
                    }
                    let history = store_postgres::patients::consent_history(&mut tx, tenant, patient.id).await?;
                    let records = crate::consents::records_of(patient.id, &history)?;
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
                        return Ok(None);
                    }
                    ReminderDecision::Send(channel) => channel,
                };
                let time_zone = store::working_hours(&mut tx, tenant, appointment.therapist)
                    .await?
                    .map(|(h, _)| h.time_zone().to_owned());
                // Commit (the audit of a key unwrap) before talking to the network.
                tx.commit().await?;
                Ok(Some((appointment, addresses, channel, time_zone)))
            })
            .await?;
        let Some((appointment, addresses, channel, time_zone)) = decided else {
            return Ok(Outcome::Skipped);
        };
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
        let result = notifier.send(&message).await;
        let now = self.clock.now();
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let outcome = match result {
            Ok(()) => {
                store::mark_reminder_sent(&mut tx, tenant, reminder.id, channel, now).await?;
                Outcome::Sent
            }
            Err(error) => {
                let attempts = u32::try_from(reminder.attempts).unwrap_or(u32::MAX);
                let give_up = matches!(error, NotifyError::Permanent { .. }) || attempts >= settings.max_attempts;
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

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let minutes: Vec<i64> = (1..=9).map(|a| backoff(a).whole_minutes()).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn reports_add_up_field_by_field() {
        let mut total = RoundReport { claimed: 2, sent: 1, deferred: 1, ..RoundReport::default() };
        total += RoundReport { claimed: 3, skipped: 1, retrying: 1, failed: 1, errors: 0, ..RoundReport::default() };
        assert_eq!(
            total,
            RoundReport { claimed: 5, sent: 1, skipped: 1, retrying: 1, failed: 1, errors: 0, deferred: 1 }
        );
    }
}
