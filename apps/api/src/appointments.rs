//! Appointments in the API: the booking and reminder settings, the calendar checks a booking
//! must pass, and scheduling refusals as API errors.
//!
//! # Notes
//! Booking notes and cancellation notes are sealed under the patient's DEK by
//! `app::protection`. They are scheduling notes ("bring the referral"), not clinical notes: those
//! belong in the patient's clinical record.
//!
//! # The calendar context
//! Whether a slot is bookable depends on the therapist's working hours, absences and other
//! bookings, whoever asks; a patient must not see the absences or the other bookings
//! themselves. Those reads therefore run in the practice's service context
//! ([`calendar_context`]) and return only times; what reaches the caller is a yes, or a refusal
//! whose details depend on who asks ([`SlotRefusal`]).

use crate::config::Problem;
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use kernel::{TenantId, UserId};
use scheduling::{
    Absence, AppointmentKind, BookingPolicy, ReminderChannel, ReminderPolicy, SchedulingError, Slot, fits_working_hours,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use store_postgres::{DbContext, appointments as store};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// `appointments.*`: the bounds on bookings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppointmentsConfig {
    /// Shortest appointment, in minutes.
    pub min_duration_minutes: u32,
    /// Longest appointment, in minutes (at most 1440).
    pub max_duration_minutes: u32,
    /// How far ahead an appointment may start, in days.
    pub max_lead_days: u32,
}

impl Default for AppointmentsConfig {
    fn default() -> Self {
        let policy = BookingPolicy::default();
        let minutes = |d: time::Duration| u32::try_from(d.whole_minutes()).unwrap_or(u32::MAX);
        Self {
            min_duration_minutes: minutes(policy.min_duration()),
            max_duration_minutes: minutes(policy.max_duration()),
            max_lead_days: u32::try_from(policy.max_lead_time().whole_days()).unwrap_or(u32::MAX),
        }
    }
}

impl AppointmentsConfig {
    /// The policy these settings describe.
    pub fn booking_policy(&self) -> Result<BookingPolicy, SchedulingError> {
        BookingPolicy::new(
            time::Duration::minutes(i64::from(self.min_duration_minutes)),
            time::Duration::minutes(i64::from(self.max_duration_minutes)),
            time::Duration::days(i64::from(self.max_lead_days)),
        )
    }

    /// Every problem of the section, naming the setting.
    pub fn problems(&self) -> Vec<Problem> {
        match self.booking_policy() {
            Ok(_) => Vec::new(),
            Err(error) => vec![Problem { field: policy_field(error.field()), message: error.to_string() }],
        }
    }
}

fn policy_field(field: &str) -> &'static str {
    match field {
        "min_duration" => "appointments.min_duration_minutes",
        "max_duration" => "appointments.max_duration_minutes",
        "max_lead_time" => "appointments.max_lead_days",
        "reminder_offsets" => "reminders.offsets_minutes",
        _ => "reminders.min_delay_after_booking_minutes",
    }
}

/// Which [`crate::reminders::Notifier`] delivers reminders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// Writes one log line per reminder (ids, channel, time; never the recipient or the text)
    /// and sends nothing.
    #[default]
    Log,
    /// Sends through the provider of each channel: `[reminders.whatsapp]` (Meta's Cloud API),
    /// `[reminders.sms]` (Twilio), `[reminders.email]` (an SMTP relay). Every channel listed in
    /// `reminders.channels` needs its section.
    Providers,
}

/// `reminders.*`: planning and the worker that sends them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemindersConfig {
    /// Run the reminder worker in `praxis serve` (turn off on all but a few instances if wanted;
    /// several workers never send one reminder twice).
    pub enabled: bool,
    /// Seconds between the worker's rounds.
    pub interval_secs: u64,
    /// Most reminders one worker claims per practice and round.
    pub batch_size: u32,
    /// Seconds a claimed reminder stays reserved for its worker (a worker that dies leaves it to
    /// the others after this).
    pub lease_secs: u64,
    /// Delivery attempts before a reminder is given up as failed.
    pub max_attempts: u32,
    /// Reminders per appointment, in minutes before the start.
    pub offsets_minutes: Vec<u32>,
    /// No reminder is planned due sooner than this after booking.
    pub min_delay_after_booking_minutes: u32,
    /// Channels in order of preference; the first one the patient can be reached on is used.
    pub channels: Vec<String>,
    pub notifier: NotifierKind,
    /// WhatsApp template messages through Meta's Cloud API (with `notifier = "providers"`).
    pub whatsapp: Option<notifiers::whatsapp::WhatsAppSettings>,
    /// Text messages through Twilio (with `notifier = "providers"`).
    pub sms: Option<notifiers::twilio::TwilioSettings>,
    /// Emails through an SMTP relay (with `notifier = "providers"`).
    pub email: Option<notifiers::email::SmtpSettings>,
}

impl Default for RemindersConfig {
    fn default() -> Self {
        let policy = ReminderPolicy::default();
        let minutes = |d: time::Duration| u32::try_from(d.whole_minutes()).unwrap_or(u32::MAX);
        Self {
            enabled: true,
            interval_secs: 30,
            batch_size: 50,
            lease_secs: 300,
            max_attempts: 5,
            offsets_minutes: policy.offsets().iter().map(|d| minutes(*d)).collect(),
            min_delay_after_booking_minutes: minutes(policy.min_delay_after_booking()),
            channels: ReminderChannel::ALL.iter().map(|c| c.as_str().to_owned()).collect(),
            notifier: NotifierKind::Log,
            whatsapp: None,
            sms: None,
            email: None,
        }
    }
}

impl RemindersConfig {
    /// The planning policy these settings describe.
    pub fn policy(&self) -> Result<ReminderPolicy, SchedulingError> {
        let offsets: Vec<time::Duration> =
            self.offsets_minutes.iter().map(|m| time::Duration::minutes(i64::from(*m))).collect();
        ReminderPolicy::new(&offsets, time::Duration::minutes(i64::from(self.min_delay_after_booking_minutes)))
    }

    /// The channels in order of preference (unknown names are reported by [`Self::problems`]).
    pub fn channel_preference(&self) -> Vec<ReminderChannel> {
        self.channels.iter().filter_map(|c| c.parse().ok()).collect()
    }

    /// The provider credentials of the configured channels (for the start-up line that says
    /// which secrets are set; a configured section cannot lack its required secret).
    pub fn secret_statuses(&self) -> Vec<crate::config::SecretStatus> {
        let status = |field, configured, required| crate::config::SecretStatus { field, configured, required };
        let mut statuses = Vec::new();
        if self.whatsapp.is_some() {
            statuses.push(status("reminders.whatsapp.access_token", true, true));
        }
        if self.sms.is_some() {
            statuses.push(status("reminders.sms.auth_token", true, true));
        }
        if let Some(email) = &self.email {
            statuses.push(status("reminders.email.password", email.password.is_some(), false));
        }
        statuses
    }

    /// Every problem of the section, naming the setting.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(error) = self.policy() {
            problems.push(Problem { field: policy_field(error.field()), message: error.to_string() });
        }
        for name in &self.channels {
            if name.parse::<ReminderChannel>().is_err() {
                problems.push(Problem {
                    field: "reminders.channels",
                    message: format!("{name:?} is not whatsapp, sms or email"),
                });
            }
        }
        if self.channels.is_empty() {
            problems.push(Problem { field: "reminders.channels", message: "list at least one channel".into() });
        }
        if self.interval_secs == 0 {
            problems.push(Problem { field: "reminders.interval_secs", message: "must be greater than 0".into() });
        }
        if !(1..=1000).contains(&self.batch_size) {
            problems.push(Problem { field: "reminders.batch_size", message: "must be between 1 and 1000".into() });
        }
        if self.lease_secs == 0 {
            problems.push(Problem { field: "reminders.lease_secs", message: "must be greater than 0".into() });
        }
        if self.max_attempts == 0 {
            problems.push(Problem { field: "reminders.max_attempts", message: "must be at least 1".into() });
        }
        let adapter_problems = self.whatsapp.iter().flat_map(notifiers::whatsapp::WhatsAppSettings::problems);
        let adapter_problems = adapter_problems
            .chain(self.sms.iter().flat_map(notifiers::twilio::TwilioSettings::problems))
            .chain(self.email.iter().flat_map(notifiers::email::SmtpSettings::problems));
        problems.extend(adapter_problems.map(|(field, message)| Problem { field, message }));
        if self.notifier == NotifierKind::Providers {
            let minimum = 2 * notifiers::SEND_TIMEOUT.as_secs();
            if self.lease_secs < minimum {
                problems.push(Problem {
                    field: "reminders.lease_secs",
                    message: format!(
                        "must be at least {minimum} with notifier = \"providers\" (room for a send within the lease)"
                    ),
                });
            }
            for channel in self.channel_preference() {
                let configured = match channel {
                    ReminderChannel::Whatsapp => self.whatsapp.is_some(),
                    ReminderChannel::Sms => self.sms.is_some(),
                    ReminderChannel::Email => self.email.is_some(),
                };
                if !configured {
                    problems.push(Problem {
                        field: "reminders.channels",
                        message: format!(
                            "{} is listed but [reminders.{}] is not configured (configure it or leave the channel out)",
                            channel.as_str(),
                            channel.as_str()
                        ),
                    });
                }
            }
        }
        problems
    }
}

/// The configured booking policy (validated at start-up, so an error here is a bug).
pub fn booking_policy(state: &AppState) -> Result<BookingPolicy, ApiError> {
    state.config.appointments.booking_policy().map_err(ApiError::internal)
}

/// The configured reminder policy.
pub fn reminder_policy(state: &AppState) -> Result<ReminderPolicy, ApiError> {
    state.config.reminders.policy().map_err(ApiError::internal)
}

/// One field-named 400.
pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation { errors: vec![FieldError { field: field.into(), message: message.into() }] }
}

/// A scheduling refusal about the client's input, as a 400 naming the field.
pub fn invalid_input(error: &SchedulingError) -> ApiError {
    invalid(error.field(), error.to_string())
}

/// An RFC 3339 instant (any offset; kept in UTC), or a 400 naming `field`.
pub fn parse_instant(field: &str, text: &str) -> Result<OffsetDateTime, ApiError> {
    let instant = OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
        .ok_or_else(|| invalid(field, "must be an RFC 3339 date-time such as 2026-05-04T09:00:00Z"))?;
    check_instant_range(field, instant)
}

/// Instants Praxis accepts from a client: 1970 to 9000. Calendar arithmetic on them (a slot's
/// end, a day or a query window added) then stays far inside what `time` (to 9999) and
/// Postgres (from 4713 BC) can represent, so none of it can overflow into a panic or a database
/// error.
pub fn check_instant_range(field: &str, instant: OffsetDateTime) -> Result<OffsetDateTime, ApiError> {
    if (1970..=9000).contains(&instant.year()) {
        Ok(instant)
    } else {
        Err(invalid(field, "must lie between the years 1970 and 9000"))
    }
}

/// An appointment kind, or a 400 naming `kind`.
pub fn parse_kind(text: &str) -> Result<AppointmentKind, ApiError> {
    text.parse().map_err(|_| {
        let all: Vec<&str> = AppointmentKind::ALL.iter().map(|k| k.as_str()).collect();
        invalid("kind", format!("must be one of {}", all.join(", ")))
    })
}

/// A note as given: trimmed, empty means none, at most [`MAX_NOTE_CHARS`] characters.
pub fn note_text(field: &str, note: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(note) = note else {
        return Ok(None);
    };
    let trimmed = note.trim();
    if trimmed.chars().count() > MAX_NOTE_CHARS {
        return Err(invalid(field, format!("at most {MAX_NOTE_CHARS} characters")));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

// --- calendar checks ------------------------------------------------------------------------------

/// The practice's service context, for calendar reads that return only times (see the module
/// documentation). Never used to return rows to a caller.
pub fn calendar_context(tenant: TenantId) -> DbContext {
    DbContext::service(tenant)
}

/// 404 unless `therapist` is an enabled therapist of the practice (read in `conn`, which must
/// see staff: the calendar context does).
pub async fn ensure_therapist(conn: &mut PgConnection, tenant: TenantId, therapist: UserId) -> Result<(), ApiError> {
    match store_postgres::patients::enabled_user_role(conn, tenant, therapist).await?.as_deref() {
        Some("therapist") => Ok(()),
        _ => Err(ApiError::NotFound),
    }
}

/// How much a refused booking may tell the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Staff and API keys: the absence or the conflicting booking, with its times.
    Staff,
    /// Patients: only that the time is taken. Absences and others' bookings look alike and carry
    /// no times (the availability endpoint shows what is free).
    Patient,
}

/// A slot that cannot be booked, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    NoWorkingHours,
    OutsideWorkingHours,
    Absent(Absence),
    Taken(Option<Slot>),
}

impl SlotRefusal {
    /// The 409 for `audience`.
    pub fn to_error(self, audience: Audience) -> ApiError {
        let unavailable = |reason: &'static str, detail: String, slot: Option<Slot>| ApiError::SlotUnavailable {
            reason,
            detail,
            conflicting_slot: slot.map(|s| (s.start(), s.end())),
        };
        let taken_for_patient = || {
            unavailable(
                "slot_taken",
                "The therapist is not available at this time; GET /api/v1/therapists/{id}/availability lists free slots."
                    .into(),
                None,
            )
        };
        match (self, audience) {
            (SlotRefusal::NoWorkingHours, _) => unavailable(
                "no_working_hours",
                "The therapist has no working hours set, so nothing can be booked yet.".into(),
                None,
            ),
            (SlotRefusal::OutsideWorkingHours, _) => unavailable(
                "outside_working_hours",
                "The slot is not within one stretch of the therapist's working hours.".into(),
                None,
            ),
            (SlotRefusal::Absent(_) | SlotRefusal::Taken(_), Audience::Patient) => taken_for_patient(),
            (SlotRefusal::Absent(absence), Audience::Staff) => unavailable(
                "therapist_absent",
                "The therapist is away during the slot.".into(),
                Some(absence.as_slot()),
            ),
            (SlotRefusal::Taken(slot), Audience::Staff) => unavailable(
                "slot_taken",
                "The therapist already has an appointment overlapping this slot.".into(),
                slot,
            ),
        }
    }
}

/// Whether `slot` fits the therapist's working hours and absences (other bookings are the
/// exclusion constraint's job). Runs in the calendar context; 404 for an unknown therapist.
pub async fn check_calendar(
    state: &AppState,
    tenant: TenantId,
    therapist: UserId,
    slot: &Slot,
) -> Result<Result<(), SlotRefusal>, ApiError> {
    let mut tx = store_postgres::begin(&state.db, &calendar_context(tenant)).await?;
    ensure_therapist(&mut tx, tenant, therapist).await?;
    let Some((hours, _)) = store::working_hours(&mut tx, tenant, therapist).await? else {
        return Ok(Err(SlotRefusal::NoWorkingHours));
    };
    let absences: Vec<Absence> = store::absences(&mut tx, tenant, therapist, slot.start(), slot.end())
        .await?
        .iter()
        .map(|a| a.absence)
        .collect();
    tx.commit().await?;
    Ok(match fits_working_hours(&hours, &absences, slot) {
        Ok(()) => Ok(()),
        Err(SchedulingError::DuringAbsence { absence }) => Err(SlotRefusal::Absent(absence)),
        Err(SchedulingError::OutsideWorkingHours) => Err(SlotRefusal::OutsideWorkingHours),
        Err(other) => return Err(invalid_input(&other)),
    })
}

/// The first active booking of the therapist overlapping `slot` (after an exclusion violation,
/// to name the conflicting slot), read in the calendar context.
pub async fn conflicting_slot(
    state: &AppState,
    tenant: TenantId,
    therapist: UserId,
    slot: &Slot,
    except: Option<Uuid>,
) -> Result<Option<Slot>, ApiError> {
    let mut tx = store_postgres::begin(&state.db, &calendar_context(tenant)).await?;
    let busy = store::busy_slots(&mut tx, tenant, therapist, slot.start(), slot.end(), except).await?;
    tx.commit().await?;
    Ok(busy.first().map(|b| b.slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_scheduling_crates_policies() {
        assert_eq!(AppointmentsConfig::default().booking_policy().unwrap(), BookingPolicy::default());
        assert_eq!(RemindersConfig::default().policy().unwrap(), ReminderPolicy::default());
        assert!(AppointmentsConfig::default().problems().is_empty());
        assert!(RemindersConfig::default().problems().is_empty());
        assert_eq!(
            RemindersConfig::default().channel_preference(),
            [ReminderChannel::Whatsapp, ReminderChannel::Sms, ReminderChannel::Email]
        );
    }

    #[test]
    fn every_bad_setting_is_named() {
        let appointments =
            AppointmentsConfig { min_duration_minutes: 60, max_duration_minutes: 30, ..AppointmentsConfig::default() };
        let fields: Vec<&str> = appointments.problems().iter().map(|p| p.field).collect();
        assert_eq!(fields, ["appointments.max_duration_minutes"]);
        let reminders = RemindersConfig {
            offsets_minutes: vec![60, 60],
            channels: vec!["fax".into()],
            interval_secs: 0,
            batch_size: 0,
            lease_secs: 0,
            max_attempts: 0,
            ..RemindersConfig::default()
        };
        let fields: Vec<&str> = reminders.problems().iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "reminders.offsets_minutes",
                "reminders.channels",
                "reminders.interval_secs",
                "reminders.batch_size",
                "reminders.lease_secs",
                "reminders.max_attempts"
            ]
        );
    }

    #[test]
    fn notes_are_trimmed_bounded_and_single_purpose() {
        assert_eq!(
            note_text("notes", Some("  Bring the referral \n".into())).unwrap().as_deref(),
            Some("Bring the referral")
        );
        assert_eq!(note_text("notes", Some("   ".into())).unwrap(), None);
        assert_eq!(note_text("notes", None).unwrap(), None);
        assert!(note_text("notes", Some("x".repeat(MAX_NOTE_CHARS + 1))).is_err());
        assert!(note_text("notes", Some("line one\nline two\ttab".into())).is_ok());
        assert!(note_text("notes", Some("escape \u{1b}[31m".into())).is_err());
    }

    #[test]
    fn patients_never_learn_absences_or_other_bookings() {
        let absence =
            Absence::new(time::macros::datetime!(2026-05-04 00:00 UTC), time::macros::datetime!(2026-05-05 00:00 UTC))
                .unwrap();
        let taken =
            Slot::new(time::macros::datetime!(2026-05-04 09:00 UTC), time::macros::datetime!(2026-05-04 10:00 UTC))
                .unwrap();
        for refusal in [SlotRefusal::Absent(absence), SlotRefusal::Taken(Some(taken))] {
            let problem = refusal.to_error(Audience::Patient).problem();
            let body = serde_json::to_string(&problem).unwrap();
            assert!(body.contains("\"reason\":\"slot_taken\""), "{body}");
            assert!(!body.contains("2026-05-04"), "{body}");
            let staff = serde_json::to_string(&refusal.to_error(Audience::Staff).problem()).unwrap();
            assert!(staff.contains("2026-05-04T"), "{staff}");
        }
    }
}
