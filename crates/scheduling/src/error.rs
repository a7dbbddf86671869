//! The crate's one error type. No HTTP here: the API maps each variant to a status and a
//! problem+json body, using [`SchedulingError::kind`] as the stable problem type and
//! [`SchedulingError::field`] as the input field the problem is about.

use crate::hours::Absence;
use crate::status::AppointmentStatus;
use thiserror::Error;
use time::Weekday;

/// Longest piece of rejected input an error repeats: enough to recognise a typo, not enough to
/// turn an error body or a log line into a copy of whatever a client sent.
const MAX_ECHOED_INPUT_CHARS: usize = 64;

/// Everything a scheduling rule can refuse.
///
/// Variants are grouped by the rule that raises them. [`SchedulingError::InvalidPolicy`] is a
/// configuration error (the server's settings are wrong); every other variant is about input from
/// a client and names the field concerned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchedulingError {
    // --- status machine ---
    /// The requested status change is not an edge of the status machine. `allowed` lists the
    /// statuses reachable from `from` (empty for a final status), for the 409 body.
    #[error("an appointment cannot go from {from} to {to}")]
    IllegalTransition { from: AppointmentStatus, to: AppointmentStatus, allowed: Vec<AppointmentStatus> },
    /// `completed` or `no_show` was requested before the appointment started.
    #[error("an appointment cannot be marked {to} before it starts")]
    OutcomeBeforeStart { to: AppointmentStatus },

    // --- string forms ---
    /// A string is not one of the closed set for `field` (status, kind, channel, ...).
    #[error("unknown {field} {value:?}")]
    UnknownValue { field: &'static str, value: String },

    // --- slots and booking ---
    /// The end of a slot, absence or range is not after its start.
    #[error("{field} must be after the start")]
    EndNotAfterStart { field: &'static str },
    /// A booking time has seconds or fractions of a second. Times are whole minutes.
    #[error("{field} must be a whole minute (seconds and fractions must be zero)")]
    NotWholeMinute { field: &'static str },
    /// The appointment is shorter than the policy's minimum.
    #[error("an appointment must last at least {min_minutes} minutes")]
    TooShort { min_minutes: i64 },
    /// The appointment is longer than the policy's maximum.
    #[error("an appointment may last at most {max_minutes} minutes")]
    TooLong { max_minutes: i64 },
    /// A new booking starts before the current minute.
    #[error("the start is in the past")]
    StartInPast,
    /// A new booking starts further ahead than the policy allows.
    #[error("the start is more than {max_days} days ahead")]
    TooFarAhead { max_days: i64 },
    /// A time is outside the range the calendar arithmetic supports (around years ±9999).
    #[error("{field} is outside the supported date range")]
    OutOfRange { field: &'static str },

    // --- working hours and absences ---
    /// The time zone name is not in the bundled IANA database.
    #[error("unknown time zone {name:?}")]
    UnknownTimeZone { name: String },
    /// A working-hours range does not start before it ends, or has seconds.
    #[error("a working-hours range on {weekday} must start before it ends, in whole minutes")]
    InvalidTimeRange { weekday: Weekday },
    /// Two working-hours ranges on the same day overlap.
    #[error("working-hours ranges on {weekday} overlap")]
    OverlappingTimeRanges { weekday: Weekday },
    /// More ranges on one day than allowed.
    #[error("at most {max} working-hours ranges per day ({weekday} has more)")]
    TooManyTimeRanges { weekday: Weekday, max: usize },
    /// The slot is not inside one stretch of the therapist's working hours.
    #[error("the slot is outside the therapist's working hours")]
    OutsideWorkingHours,
    /// The slot overlaps an absence of the therapist (the first one found).
    #[error("the therapist is absent during the slot")]
    DuringAbsence { absence: Absence },

    // --- availability search ---
    /// The search range is empty (`to` is not after `from`).
    #[error("the search range is empty: to must be after from")]
    EmptyRange,
    /// The search range is longer than allowed.
    #[error("the search range may span at most {max_days} days")]
    RangeTooLong { max_days: i64 },
    /// A search parameter is out of bounds; `reason` says which bound.
    #[error("{field}: {reason}")]
    InvalidParameter { field: &'static str, reason: &'static str },

    // --- configuration ---
    /// A policy (booking, reminders) was configured with values that make no sense.
    #[error("invalid policy setting {field}: {reason}")]
    InvalidPolicy { field: &'static str, reason: &'static str },
}

impl SchedulingError {
    /// A stable, machine-readable slug for this kind of problem (the problem+json `type` suffix).
    pub const fn kind(&self) -> &'static str {
        match self {
            SchedulingError::IllegalTransition { .. } => "illegal_transition",
            SchedulingError::OutcomeBeforeStart { .. } => "outcome_before_start",
            SchedulingError::UnknownValue { .. } => "unknown_value",
            SchedulingError::EndNotAfterStart { .. } => "end_not_after_start",
            SchedulingError::NotWholeMinute { .. } => "not_whole_minute",
            SchedulingError::TooShort { .. } => "duration_too_short",
            SchedulingError::TooLong { .. } => "duration_too_long",
            SchedulingError::StartInPast => "start_in_past",
            SchedulingError::TooFarAhead { .. } => "start_too_far_ahead",
            SchedulingError::OutOfRange { .. } => "out_of_range",
            SchedulingError::UnknownTimeZone { .. } => "unknown_time_zone",
            SchedulingError::InvalidTimeRange { .. } => "invalid_time_range",
            SchedulingError::OverlappingTimeRanges { .. } => "overlapping_time_ranges",
            SchedulingError::TooManyTimeRanges { .. } => "too_many_time_ranges",
            SchedulingError::OutsideWorkingHours => "outside_working_hours",
            SchedulingError::DuringAbsence { .. } => "during_absence",
            SchedulingError::EmptyRange => "empty_range",
            SchedulingError::RangeTooLong { .. } => "range_too_long",
            SchedulingError::InvalidParameter { .. } => "invalid_parameter",
            SchedulingError::InvalidPolicy { .. } => "invalid_policy",
        }
    }

    /// The input field the problem is about, as the API names it.
    pub const fn field(&self) -> &'static str {
        match self {
            SchedulingError::IllegalTransition { .. } | SchedulingError::OutcomeBeforeStart { .. } => "status",
            SchedulingError::UnknownValue { field, .. }
            | SchedulingError::EndNotAfterStart { field }
            | SchedulingError::NotWholeMinute { field }
            | SchedulingError::OutOfRange { field }
            | SchedulingError::InvalidParameter { field, .. }
            | SchedulingError::InvalidPolicy { field, .. } => field,
            SchedulingError::TooShort { .. } | SchedulingError::TooLong { .. } => "end",
            SchedulingError::StartInPast
            | SchedulingError::TooFarAhead { .. }
            | SchedulingError::OutsideWorkingHours
            | SchedulingError::DuringAbsence { .. } => "start",
            SchedulingError::UnknownTimeZone { .. } => "time_zone",
            SchedulingError::InvalidTimeRange { .. }
            | SchedulingError::OverlappingTimeRanges { .. }
            | SchedulingError::TooManyTimeRanges { .. } => "weekly_hours",
            SchedulingError::EmptyRange | SchedulingError::RangeTooLong { .. } => "to",
        }
    }

    /// An [`SchedulingError::UnknownValue`] that repeats at most a short prefix of the input.
    pub(crate) fn unknown_value(field: &'static str, value: &str) -> Self {
        SchedulingError::UnknownValue { field, value: value.chars().take(MAX_ECHOED_INPUT_CHARS).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_kind_is_a_distinct_snake_case_slug_with_a_field() {
        let absence = crate::Absence::new(
            time::macros::datetime!(2026-01-01 00:00 UTC),
            time::macros::datetime!(2026-01-02 00:00 UTC),
        )
        .unwrap();
        let all = [
            SchedulingError::IllegalTransition {
                from: AppointmentStatus::Cancelled,
                to: AppointmentStatus::Confirmed,
                allowed: vec![],
            },
            SchedulingError::OutcomeBeforeStart { to: AppointmentStatus::NoShow },
            SchedulingError::UnknownValue { field: "kind", value: "x".into() },
            SchedulingError::EndNotAfterStart { field: "end" },
            SchedulingError::NotWholeMinute { field: "start" },
            SchedulingError::TooShort { min_minutes: 5 },
            SchedulingError::TooLong { max_minutes: 480 },
            SchedulingError::StartInPast,
            SchedulingError::TooFarAhead { max_days: 365 },
            SchedulingError::OutOfRange { field: "start" },
            SchedulingError::UnknownTimeZone { name: "Mars/Base".into() },
            SchedulingError::InvalidTimeRange { weekday: Weekday::Monday },
            SchedulingError::OverlappingTimeRanges { weekday: Weekday::Monday },
            SchedulingError::TooManyTimeRanges { weekday: Weekday::Monday, max: 6 },
            SchedulingError::OutsideWorkingHours,
            SchedulingError::DuringAbsence { absence },
            SchedulingError::EmptyRange,
            SchedulingError::RangeTooLong { max_days: 31 },
            SchedulingError::InvalidParameter { field: "step", reason: "r" },
            SchedulingError::InvalidPolicy { field: "min_duration", reason: "r" },
        ];
        let kinds: BTreeSet<_> = all.iter().map(SchedulingError::kind).collect();
        assert_eq!(kinds.len(), all.len());
        for err in &all {
            let snake = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            assert!(snake(err.kind()), "{}", err.kind());
            assert!(snake(err.field()), "{}", err.field());
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn messages_read_well() {
        let err = SchedulingError::IllegalTransition {
            from: AppointmentStatus::Completed,
            to: AppointmentStatus::Scheduled,
            allowed: vec![],
        };
        assert_eq!(err.to_string(), "an appointment cannot go from completed to scheduled");
        assert_eq!(
            SchedulingError::TooShort { min_minutes: 5 }.to_string(),
            "an appointment must last at least 5 minutes"
        );
    }
}
