//! Reminder planning (when to remind) and the check at sending time (whether to send, and how).

use crate::SchedulingError;
use crate::booking::is_positive_whole_minutes;
use crate::status::AppointmentStatus;
use time::{Duration, OffsetDateTime};

/// Most reminders one appointment may get.
pub const MAX_REMINDERS: usize = 5;

/// Furthest ahead of an appointment a reminder may be planned.
const MAX_REMINDER_OFFSET: Duration = Duration::days(30);

/// How long before an appointment to remind the patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderPolicy {
    /// Offsets before the start, distinct, longest first.
    offsets: Vec<Duration>,
    min_delay_after_booking: Duration,
}

impl Default for ReminderPolicy {
    /// One reminder 24 hours before; none due within the hour after booking.
    fn default() -> Self {
        ReminderPolicy { offsets: vec![Duration::hours(24)], min_delay_after_booking: Duration::hours(1) }
    }
}

impl ReminderPolicy {
    /// A policy with the given offsets before the start (whole minutes, positive, at most 30
    /// days, no duplicates, at most [`MAX_REMINDERS`]; an empty list turns reminders off) and the
    /// shortest delay between a booking and its first reminder (zero or more).
    pub fn new(offsets: &[Duration], min_delay_after_booking: Duration) -> Result<ReminderPolicy, SchedulingError> {
        if offsets.len() > MAX_REMINDERS {
            return Err(SchedulingError::InvalidPolicy { field: "reminder_offsets", reason: "at most 5 reminders" });
        }
        if offsets.iter().any(|&offset| !is_positive_whole_minutes(offset) || offset > MAX_REMINDER_OFFSET) {
            return Err(SchedulingError::InvalidPolicy {
                field: "reminder_offsets",
                reason: "each offset must be whole minutes, from 1 minute to 30 days",
            });
        }
        let mut sorted = offsets.to_vec();
        sorted.sort_by(|a, b| b.cmp(a));
        if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(SchedulingError::InvalidPolicy {
                field: "reminder_offsets",
                reason: "offsets must be distinct",
            });
        }
        if min_delay_after_booking.is_negative() {
            return Err(SchedulingError::InvalidPolicy {
                field: "min_delay_after_booking",
                reason: "must not be negative",
            });
        }
        Ok(ReminderPolicy { offsets: sorted, min_delay_after_booking })
    }

    /// The offsets before the start, longest first.
    pub fn offsets(&self) -> &[Duration] {
        &self.offsets
    }

    /// Reminders due sooner than this after booking are not planned.
    pub const fn min_delay_after_booking(&self) -> Duration {
        self.min_delay_after_booking
    }
}

/// A reminder to send at `due_at`, `offset` before the appointment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlannedReminder {
    /// When to send it (UTC).
    pub due_at: OffsetDateTime,
    /// How long before the start that is (the policy entry it comes from).
    pub offset: Duration,
}

/// The reminders for an appointment starting at `start`, booked (or moved) at `now`, earliest
/// first.
///
/// Planning happens when an appointment is booked or moved; a move replans from the new start
/// and the reminders planned for the old one are skipped as `appointment_moved` when they come
/// due. Reminders whose due time has already passed at booking time are **not** sent late: the
/// booking confirmation that goes out right then already tells the patient the time, and a
/// "reminder" minutes after it is noise (and a paid WhatsApp template message). For the same
/// reason a reminder due within [`ReminderPolicy::min_delay_after_booking`] of the booking is
/// dropped too. So with the default policy an appointment booked less than 25 hours ahead gets
/// the confirmation only.
pub fn plan_reminders(start: OffsetDateTime, now: OffsetDateTime, policy: &ReminderPolicy) -> Vec<PlannedReminder> {
    let Some(earliest_due) = now.checked_add(policy.min_delay_after_booking) else {
        return Vec::new();
    };
    policy
        .offsets
        .iter()
        .filter_map(|&offset| {
            let due_at = start.checked_sub(offset)?.checked_to_offset(time::UtcOffset::UTC)?;
            (due_at >= earliest_due).then_some(PlannedReminder { due_at, offset })
        })
        .collect()
}

/// How a reminder reaches the patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReminderChannel {
    /// A WhatsApp Business template message.
    Whatsapp,
    /// A text message.
    Sms,
    /// An email.
    Email,
}

string_enum!(ReminderChannel, "channel", {
    Whatsapp => "whatsapp",
    Sms => "sms",
    Email => "email",
});

/// Why a due reminder was not sent (recorded with it, so the practice can see why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReminderSkipReason {
    /// The patient has not consented to reminders on any channel we could reach them by.
    NoConsent,
    /// The appointment was cancelled.
    AppointmentCancelled,
    /// The appointment moved after this reminder was planned; the move planned new ones.
    AppointmentMoved,
    /// The patient's personal data was erased.
    PatientErased,
    /// There is no phone number or email address to send to.
    NoContactChannel,
    /// The reminder came due only after the appointment started or had its outcome recorded
    /// (for example after the worker was down): a reminder then is useless.
    TooLate,
}

string_enum!(ReminderSkipReason, "skip_reason", {
    NoConsent => "no_consent",
    AppointmentCancelled => "appointment_cancelled",
    AppointmentMoved => "appointment_moved",
    PatientErased => "patient_erased",
    NoContactChannel => "no_contact_channel",
    TooLate => "too_late",
});

impl ReminderSkipReason {
    /// The stable slug (same as [`ReminderSkipReason::as_str`]).
    pub const fn slug(self) -> &'static str {
        self.as_str()
    }
}

/// What the reminder worker knows when a planned reminder comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReminderCheck<'a> {
    /// The appointment's status now.
    pub status: AppointmentStatus,
    /// The start the reminder was planned for.
    pub planned_start: OffsetDateTime,
    /// The appointment's start now.
    pub current_start: OffsetDateTime,
    /// The clock's now.
    pub now: OffsetDateTime,
    /// Whether the patient's personal data has been erased.
    pub patient_erased: bool,
    /// Channels the patient has contact details for, most preferred first.
    pub reachable: &'a [ReminderChannel],
    /// Channels the patient consented to reminders on.
    pub consented: &'a [ReminderChannel],
}

/// Send on a channel, or skip for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderDecision {
    /// Send the reminder on this channel.
    Send(ReminderChannel),
    /// Do not send it; record why.
    Skip(ReminderSkipReason),
}

/// Decides a due reminder. The first matching rule wins:
///
/// 1. `patient_erased`: nothing about the patient may be used any more.
/// 2. `appointment_cancelled`: the status is `cancelled`.
/// 3. `appointment_moved`: the start differs from the one planned for (a reminder with the old
///    time would mislead; the move planned its own).
/// 4. `too_late`: the appointment has started, or has an outcome (`completed`, `no_show`).
/// 5. The first reachable channel the patient consented to is used; `no_contact_channel` when
///    nothing is reachable, `no_consent` when something is but without consent.
pub fn decide_reminder(check: &ReminderCheck<'_>) -> ReminderDecision {
    use ReminderDecision::{Send, Skip};
    if check.patient_erased {
        return Skip(ReminderSkipReason::PatientErased);
    }
    if check.status == AppointmentStatus::Cancelled {
        return Skip(ReminderSkipReason::AppointmentCancelled);
    }
    if check.current_start != check.planned_start {
        return Skip(ReminderSkipReason::AppointmentMoved);
    }
    if !check.status.is_active() || check.now >= check.current_start {
        return Skip(ReminderSkipReason::TooLate);
    }
    if check.reachable.is_empty() {
        return Skip(ReminderSkipReason::NoContactChannel);
    }
    match check.reachable.iter().find(|channel| check.consented.contains(channel)) {
        Some(&channel) => Send(channel),
        None => Skip(ReminderSkipReason::NoConsent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const START: OffsetDateTime = datetime!(2026-05-08 09:00 UTC);

    fn h(hours: i64) -> Duration {
        Duration::hours(hours)
    }

    #[test]
    fn by_default_one_reminder_a_day_before() {
        let policy = ReminderPolicy::default();
        assert_eq!(policy.offsets(), &[h(24)]);
        assert_eq!(policy.min_delay_after_booking(), h(1));
        let planned = plan_reminders(START, START - Duration::days(3), &policy);
        assert_eq!(planned, [PlannedReminder { due_at: datetime!(2026-05-07 09:00 UTC), offset: h(24) }]);
    }

    #[test]
    fn a_reminder_already_due_at_booking_is_dropped_not_sent_at_once() {
        let policy = ReminderPolicy::default();
        assert!(plan_reminders(START, START - h(10), &policy).is_empty());
        assert!(plan_reminders(START, START - h(24), &policy).is_empty());
        // Appointments in the past get nothing either.
        assert!(plan_reminders(START, START + h(1), &policy).is_empty());
    }

    #[test]
    fn a_reminder_due_within_the_hour_after_booking_is_dropped() {
        let policy = ReminderPolicy::default();
        // Booked 24h30m ahead: the reminder would go out 30 minutes after the confirmation.
        assert!(plan_reminders(START, START - h(24) - Duration::minutes(30), &policy).is_empty());
        // Booked exactly 25 hours ahead: due exactly one hour after booking, kept.
        assert_eq!(plan_reminders(START, START - h(25), &policy).len(), 1);
        // Without the delay, anything not yet due is kept.
        let eager = ReminderPolicy::new(&[h(24)], Duration::ZERO).unwrap();
        let planned = plan_reminders(START, START - h(24) - Duration::minutes(1), &eager);
        assert_eq!(planned, [PlannedReminder { due_at: START - h(24), offset: h(24) }]);
        assert!(plan_reminders(START, START - h(24) + Duration::nanoseconds(1), &eager).is_empty());
    }

    #[test]
    fn several_offsets_are_planned_earliest_first_and_dropped_one_by_one() {
        let policy = ReminderPolicy::new(&[h(2), h(48), h(24)], h(1)).unwrap();
        assert_eq!(policy.offsets(), &[h(48), h(24), h(2)]);
        let due: Vec<_> = plan_reminders(START, START - Duration::days(7), &policy).iter().map(|r| r.due_at).collect();
        assert_eq!(due, [START - h(48), START - h(24), START - h(2)]);
        // Booked 30 hours ahead: the 48 hour reminder is gone, the others remain.
        let offsets: Vec<_> = plan_reminders(START, START - h(30), &policy).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [h(24), h(2)]);
    }

    #[test]
    fn due_times_are_utc() {
        let start = datetime!(2026-05-08 11:00 +02:00);
        let planned = plan_reminders(start, datetime!(2026-05-01 00:00 UTC), &ReminderPolicy::default());
        assert_eq!(planned[0].due_at, datetime!(2026-05-07 09:00 UTC));
        assert_eq!(planned[0].due_at.offset(), time::UtcOffset::UTC);
    }

    #[test]
    fn an_empty_policy_turns_reminders_off() {
        let off = ReminderPolicy::new(&[], Duration::ZERO).unwrap();
        assert!(plan_reminders(START, START - Duration::days(30), &off).is_empty());
    }

    #[test]
    fn bad_policies_are_refused() {
        let cases = [
            (ReminderPolicy::new(&[h(1), h(2), h(3), h(4), h(5), h(6)], h(1)), "reminder_offsets"),
            (ReminderPolicy::new(&[Duration::ZERO], h(1)), "reminder_offsets"),
            (ReminderPolicy::new(&[h(-1)], h(1)), "reminder_offsets"),
            (ReminderPolicy::new(&[Duration::seconds(90)], h(1)), "reminder_offsets"),
            (ReminderPolicy::new(&[Duration::days(31)], h(1)), "reminder_offsets"),
            (ReminderPolicy::new(&[h(24), h(24)], h(1)), "reminder_offsets"),
            (ReminderPolicy::new(&[h(24)], Duration::minutes(-1)), "min_delay_after_booking"),
        ];
        for (result, field) in cases {
            let err = result.unwrap_err();
            assert_eq!((err.kind(), err.field()), ("invalid_policy", field));
        }
        assert!(ReminderPolicy::new(&[h(1), h(2), h(3), h(4), Duration::days(30)], Duration::ZERO).is_ok());
    }

    #[test]
    fn channels_and_skip_reasons_have_stable_slugs() {
        let channels: Vec<_> = ReminderChannel::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(channels, ["whatsapp", "sms", "email"]);
        let reasons: Vec<_> = ReminderSkipReason::ALL.iter().map(|r| r.slug()).collect();
        assert_eq!(
            reasons,
            [
                "no_consent",
                "appointment_cancelled",
                "appointment_moved",
                "patient_erased",
                "no_contact_channel",
                "too_late"
            ]
        );
        for &channel in ReminderChannel::ALL {
            assert_eq!(channel.as_str().parse::<ReminderChannel>(), Ok(channel));
            assert_eq!(serde_json::to_value(channel).unwrap(), serde_json::json!(channel.as_str()));
        }
        for &reason in ReminderSkipReason::ALL {
            assert_eq!(reason.slug().parse::<ReminderSkipReason>(), Ok(reason));
            assert_eq!(serde_json::from_value::<ReminderSkipReason>(serde_json::json!(reason.slug())).unwrap(), reason);
        }
        assert_eq!("WhatsApp".parse::<ReminderChannel>().unwrap_err().field(), "channel");
        assert_eq!("spam".parse::<ReminderSkipReason>().unwrap_err().field(), "skip_reason");
    }

    const BOTH: &[ReminderChannel] = &[ReminderChannel::Whatsapp, ReminderChannel::Email];

    fn due() -> ReminderCheck<'static> {
        ReminderCheck {
            status: AppointmentStatus::Scheduled,
            planned_start: START,
            current_start: START,
            now: START - h(24),
            patient_erased: false,
            reachable: BOTH,
            consented: BOTH,
        }
    }

    #[test]
    fn a_due_reminder_goes_out_on_the_preferred_consented_channel() {
        assert_eq!(decide_reminder(&due()), ReminderDecision::Send(ReminderChannel::Whatsapp));
        let confirmed = ReminderCheck { status: AppointmentStatus::Confirmed, ..due() };
        assert_eq!(decide_reminder(&confirmed), ReminderDecision::Send(ReminderChannel::Whatsapp));
        // No WhatsApp consent: fall back to email.
        let email_only = ReminderCheck { consented: &[ReminderChannel::Email, ReminderChannel::Sms], ..due() };
        assert_eq!(decide_reminder(&email_only), ReminderDecision::Send(ReminderChannel::Email));
    }

    #[test]
    fn each_skip_reason_has_its_rule() {
        use ReminderDecision::Skip;
        let erased = ReminderCheck { patient_erased: true, ..due() };
        assert_eq!(decide_reminder(&erased), Skip(ReminderSkipReason::PatientErased));
        let cancelled = ReminderCheck { status: AppointmentStatus::Cancelled, ..due() };
        assert_eq!(decide_reminder(&cancelled), Skip(ReminderSkipReason::AppointmentCancelled));
        let moved = ReminderCheck { current_start: START + h(2), ..due() };
        assert_eq!(decide_reminder(&moved), Skip(ReminderSkipReason::AppointmentMoved));
        let started = ReminderCheck { now: START, ..due() };
        assert_eq!(decide_reminder(&started), Skip(ReminderSkipReason::TooLate));
        let completed = ReminderCheck { status: AppointmentStatus::Completed, ..due() };
        assert_eq!(decide_reminder(&completed), Skip(ReminderSkipReason::TooLate));
        let unreachable = ReminderCheck { reachable: &[], ..due() };
        assert_eq!(decide_reminder(&unreachable), Skip(ReminderSkipReason::NoContactChannel));
        let no_consent = ReminderCheck { consented: &[ReminderChannel::Sms], ..due() };
        assert_eq!(decide_reminder(&no_consent), Skip(ReminderSkipReason::NoConsent));
    }

    #[test]
    fn skip_reasons_take_precedence_in_the_documented_order() {
        use ReminderDecision::Skip;
        let everything_wrong = ReminderCheck {
            status: AppointmentStatus::Cancelled,
            planned_start: START,
            current_start: START + h(1),
            now: START + h(2),
            patient_erased: true,
            reachable: &[],
            consented: &[],
        };
        assert_eq!(decide_reminder(&everything_wrong), Skip(ReminderSkipReason::PatientErased));
        let c = ReminderCheck { patient_erased: false, ..everything_wrong };
        assert_eq!(decide_reminder(&c), Skip(ReminderSkipReason::AppointmentCancelled));
        let c = ReminderCheck { status: AppointmentStatus::Scheduled, ..c };
        assert_eq!(decide_reminder(&c), Skip(ReminderSkipReason::AppointmentMoved));
        let c = ReminderCheck { current_start: START, ..c };
        assert_eq!(decide_reminder(&c), Skip(ReminderSkipReason::TooLate));
        let c = ReminderCheck { now: START - h(1), ..c };
        assert_eq!(decide_reminder(&c), Skip(ReminderSkipReason::NoContactChannel));
        let c = ReminderCheck { reachable: &[ReminderChannel::Sms], ..c };
        assert_eq!(decide_reminder(&c), Skip(ReminderSkipReason::NoConsent));
    }
}
