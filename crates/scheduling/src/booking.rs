//! Slots, appointment kinds and the checks a new booking (or a move) must pass.

use crate::SchedulingError;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A half-open span of time `[start, end)` in UTC, with `end` after `start`.
///
/// Half-open like Postgres' default `tstzrange` bounds `[)`: 09:00–10:00 and 10:00–11:00 touch
/// but do not overlap, so back-to-back appointments are allowed by the exclusion constraint and
/// by every rule here alike.
///
/// A `Slot` says nothing about precision or the clock: appointments loaded from storage are
/// rebuilt with [`Slot::new`]; new bookings go through [`BookingPolicy::validate_booking`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    start: OffsetDateTime,
    end: OffsetDateTime,
}

impl Slot {
    /// A slot from two instants in any offset, normalised to UTC.
    pub fn new(start: OffsetDateTime, end: OffsetDateTime) -> Result<Slot, SchedulingError> {
        let start = to_utc(start, "start")?;
        let end = to_utc(end, "end")?;
        if end <= start {
            return Err(SchedulingError::EndNotAfterStart { field: "end" });
        }
        Ok(Slot { start, end })
    }

    /// The first instant of the slot (UTC).
    pub const fn start(&self) -> OffsetDateTime {
        self.start
    }

    /// The first instant after the slot (UTC).
    pub const fn end(&self) -> OffsetDateTime {
        self.end
    }

    /// How long the slot lasts.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// Whether the two slots share any instant.
    pub fn overlaps(&self, other: &Slot) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies entirely within this slot.
    pub fn contains(&self, other: &Slot) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// The same instant in UTC, or [`SchedulingError::OutOfRange`] at the edge of the calendar.
pub(crate) fn to_utc(instant: OffsetDateTime, field: &'static str) -> Result<OffsetDateTime, SchedulingError> {
    instant.checked_to_offset(UtcOffset::UTC).ok_or(SchedulingError::OutOfRange { field })
}

/// The start of the minute `instant` falls in.
fn floor_to_minute(instant: OffsetDateTime) -> OffsetDateTime {
    // Removing less than a minute cannot leave the calendar's range: the minute's start is in it.
    instant - Duration::new(i64::from(instant.second()), i32::try_from(instant.nanosecond()).unwrap_or(0))
}

fn is_whole_minute(instant: OffsetDateTime) -> bool {
    instant.second() == 0 && instant.nanosecond() == 0
}

/// Whether a duration is a positive whole number of minutes.
pub(crate) fn is_positive_whole_minutes(duration: Duration) -> bool {
    duration.is_positive() && duration.whole_seconds() % 60 == 0 && duration.subsec_nanoseconds() == 0
}

/// The bounds a practice puts on bookings. Built with [`BookingPolicy::new`] or `default()`, so an
/// inconsistent policy cannot exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingPolicy {
    min_duration: Duration,
    max_duration: Duration,
    max_lead_time: Duration,
}

impl Default for BookingPolicy {
    /// 5 minutes to 8 hours long, starting at most 365 days ahead.
    fn default() -> Self {
        BookingPolicy {
            min_duration: Duration::minutes(5),
            max_duration: Duration::hours(8),
            max_lead_time: Duration::days(365),
        }
    }
}

impl BookingPolicy {
    /// Longest appointment any policy may allow: working hours are ranges within one day, so
    /// anything longer could never fit them.
    pub const MAX_DURATION_LIMIT: Duration = Duration::hours(24);

    /// A policy, refusing durations that are not whole minutes, a maximum below the minimum or
    /// above [`BookingPolicy::MAX_DURATION_LIMIT`], and a non-positive lead time.
    pub fn new(
        min_duration: Duration,
        max_duration: Duration,
        max_lead_time: Duration,
    ) -> Result<BookingPolicy, SchedulingError> {
        if !is_positive_whole_minutes(min_duration) {
            return Err(SchedulingError::InvalidPolicy {
                field: "min_duration",
                reason: "must be a positive whole number of minutes",
            });
        }
        if !is_positive_whole_minutes(max_duration)
            || max_duration < min_duration
            || max_duration > Self::MAX_DURATION_LIMIT
        {
            return Err(SchedulingError::InvalidPolicy {
                field: "max_duration",
                reason: "must be whole minutes, at least min_duration and at most 24 hours",
            });
        }
        if !max_lead_time.is_positive() {
            return Err(SchedulingError::InvalidPolicy { field: "max_lead_time", reason: "must be positive" });
        }
        Ok(BookingPolicy { min_duration, max_duration, max_lead_time })
    }

    /// Shortest allowed appointment.
    pub const fn min_duration(&self) -> Duration {
        self.min_duration
    }

    /// Longest allowed appointment.
    pub const fn max_duration(&self) -> Duration {
        self.max_duration
    }

    /// How far ahead of `now` an appointment may start.
    pub const fn max_lead_time(&self) -> Duration {
        self.max_lead_time
    }

    /// Checks the times of a new booking, or of the new times of a moved one, and returns them as
    /// a UTC [`Slot`]. In this order, the first failure wins:
    ///
    /// 1. `start` and `end` are whole minutes. Times with seconds are **refused, not truncated**:
    ///    silently moving a booking by up to 59 seconds would store a time nobody asked for, and a
    ///    client that sends seconds has a bug worth surfacing ([`SchedulingError::NotWholeMinute`]).
    /// 2. `end` is after `start`, and the duration is within the policy's bounds.
    /// 3. `start` is not before the current minute (booking the minute that is under way is
    ///    allowed, so "now" works for a walk-in), and at most `max_lead_time` after `now`.
    ///
    /// Working hours, absences and other bookings are separate checks
    /// ([`crate::fits_working_hours`], the database's exclusion constraint).
    pub fn validate_booking(
        &self,
        start: OffsetDateTime,
        end: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Slot, SchedulingError> {
        let start = to_utc(start, "start")?;
        let end = to_utc(end, "end")?;
        if !is_whole_minute(start) {
            return Err(SchedulingError::NotWholeMinute { field: "start" });
        }
        if !is_whole_minute(end) {
            return Err(SchedulingError::NotWholeMinute { field: "end" });
        }
        let slot = Slot::new(start, end)?;
        let duration = slot.duration();
        if duration < self.min_duration {
            return Err(SchedulingError::TooShort { min_minutes: self.min_duration.whole_minutes() });
        }
        if duration > self.max_duration {
            return Err(SchedulingError::TooLong { max_minutes: self.max_duration.whole_minutes() });
        }
        if start < floor_to_minute(now) {
            return Err(SchedulingError::StartInPast);
        }
        if start - now > self.max_lead_time {
            return Err(SchedulingError::TooFarAhead { max_days: self.max_lead_time.whole_days() });
        }
        Ok(slot)
    }
}

/// What an appointment is for. A closed set: the practice's price list and forms hang off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppointmentKind {
    /// The first meeting with a new patient.
    InitialConsultation,
    /// A regular one-to-one session.
    TherapySession,
    /// A shorter check-in after a course of treatment.
    FollowUp,
    /// A session with several patients.
    GroupSession,
    /// A session held by video call.
    VideoSession,
}

string_enum!(AppointmentKind, "kind", {
    InitialConsultation => "initial_consultation",
    TherapySession => "therapy_session",
    FollowUp => "follow_up",
    GroupSession => "group_session",
    VideoSession => "video_session",
});

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-05-04 10:17:42.5 UTC);

    fn policy() -> BookingPolicy {
        BookingPolicy::default()
    }

    #[test]
    fn slots_are_normalised_to_utc() {
        let slot = Slot::new(datetime!(2026-05-04 11:00 +02:00), datetime!(2026-05-04 12:00 +02:00)).unwrap();
        assert_eq!(slot.start().offset(), UtcOffset::UTC);
        assert_eq!(slot.end().offset(), UtcOffset::UTC);
        assert_eq!(slot.start(), datetime!(2026-05-04 09:00 UTC));
        assert_eq!(slot.duration(), Duration::hours(1));
    }

    #[test]
    fn a_slot_must_end_after_it_starts() {
        let t = datetime!(2026-05-04 09:00 UTC);
        let err = Slot::new(t, t).unwrap_err();
        assert_eq!(err, SchedulingError::EndNotAfterStart { field: "end" });
        assert_eq!((err.kind(), err.field()), ("end_not_after_start", "end"));
        assert!(Slot::new(t, t - Duration::minutes(1)).is_err());
        // Same instant written in two offsets is still empty.
        assert!(Slot::new(datetime!(2026-05-04 11:00 +02:00), datetime!(2026-05-04 09:00 UTC)).is_err());
    }

    #[test]
    fn slots_are_half_open() {
        let a = Slot::new(datetime!(2026-05-04 09:00 UTC), datetime!(2026-05-04 10:00 UTC)).unwrap();
        let b = Slot::new(datetime!(2026-05-04 10:00 UTC), datetime!(2026-05-04 11:00 UTC)).unwrap();
        let c = Slot::new(datetime!(2026-05-04 09:59 UTC), datetime!(2026-05-04 10:01 UTC)).unwrap();
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
        assert!(a.overlaps(&c) && c.overlaps(&b));
        assert!(a.overlaps(&a));
        assert!(a.contains(&a));
        assert!(!a.contains(&c));
    }

    #[test]
    fn out_of_range_instants_are_refused_not_panicked_on() {
        let edge = datetime!(-9999-01-01 00:00 +01:00);
        let err = Slot::new(edge, datetime!(2026-01-01 00:00 UTC)).unwrap_err();
        assert_eq!(err, SchedulingError::OutOfRange { field: "start" });
        assert_eq!(err.kind(), "out_of_range");
    }

    #[test]
    fn a_valid_booking_passes_and_comes_back_in_utc() {
        let slot = policy()
            .validate_booking(datetime!(2026-05-05 11:00 +02:00), datetime!(2026-05-05 11:50 +02:00), NOW)
            .unwrap();
        assert_eq!(slot.start(), datetime!(2026-05-05 09:00 UTC));
        assert_eq!(slot.duration(), Duration::minutes(50));
    }

    #[test]
    fn seconds_and_fractions_are_refused_naming_the_field() {
        let p = policy();
        let err = p.validate_booking(datetime!(2026-05-05 09:00:30 UTC), datetime!(2026-05-05 10:00 UTC), NOW);
        assert_eq!(err, Err(SchedulingError::NotWholeMinute { field: "start" }));
        let err = p.validate_booking(datetime!(2026-05-05 09:00 UTC), datetime!(2026-05-05 10:00:00.001 UTC), NOW);
        assert_eq!(err, Err(SchedulingError::NotWholeMinute { field: "end" }));
        assert_eq!(SchedulingError::NotWholeMinute { field: "end" }.kind(), "not_whole_minute");
        // An offset with seconds does not make a UTC whole minute fail, or vice versa.
        let odd_offset = UtcOffset::from_hms(0, 0, 30).unwrap();
        let start = datetime!(2026-05-05 09:00:30).assume_offset(odd_offset);
        let end = datetime!(2026-05-05 10:00:30).assume_offset(odd_offset);
        assert!(p.validate_booking(start, end, NOW).is_ok());
    }

    #[test]
    fn end_must_follow_start() {
        let err = policy().validate_booking(datetime!(2026-05-05 10:00 UTC), datetime!(2026-05-05 10:00 UTC), NOW);
        assert_eq!(err, Err(SchedulingError::EndNotAfterStart { field: "end" }));
    }

    #[test]
    fn duration_bounds_are_inclusive() {
        let p = policy();
        let start = datetime!(2026-05-05 09:00 UTC);
        assert!(p.validate_booking(start, start + Duration::minutes(5), NOW).is_ok());
        assert!(p.validate_booking(start, start + Duration::hours(8), NOW).is_ok());
        let err = p.validate_booking(start, start + Duration::minutes(4), NOW).unwrap_err();
        assert_eq!(err, SchedulingError::TooShort { min_minutes: 5 });
        assert_eq!((err.kind(), err.field()), ("duration_too_short", "end"));
        let err = p.validate_booking(start, start + Duration::hours(8) + Duration::minutes(1), NOW).unwrap_err();
        assert_eq!(err, SchedulingError::TooLong { max_minutes: 480 });
        assert_eq!((err.kind(), err.field()), ("duration_too_long", "end"));
    }

    #[test]
    fn the_current_minute_may_be_booked_but_not_the_one_before() {
        let p = policy();
        let this_minute = datetime!(2026-05-04 10:17 UTC);
        assert!(p.validate_booking(this_minute, this_minute + Duration::minutes(30), NOW).is_ok());
        let before = this_minute - Duration::minutes(1);
        let err = p.validate_booking(before, before + Duration::minutes(30), NOW).unwrap_err();
        assert_eq!(err, SchedulingError::StartInPast);
        assert_eq!((err.kind(), err.field()), ("start_in_past", "start"));
    }

    #[test]
    fn the_lead_time_bound_is_inclusive() {
        let p = policy();
        let now = datetime!(2026-05-04 10:00 UTC);
        let last = now + Duration::days(365);
        assert!(p.validate_booking(last, last + Duration::hours(1), now).is_ok());
        let late = last + Duration::minutes(1);
        let err = p.validate_booking(late, late + Duration::hours(1), now).unwrap_err();
        assert_eq!(err, SchedulingError::TooFarAhead { max_days: 365 });
        assert_eq!((err.kind(), err.field()), ("start_too_far_ahead", "start"));
    }

    #[test]
    fn the_first_failing_check_wins() {
        // Seconds, in the past and too short at once: the precision problem is reported.
        let err = policy().validate_booking(datetime!(2020-01-01 09:00:01 UTC), datetime!(2020-01-01 09:01 UTC), NOW);
        assert_eq!(err, Err(SchedulingError::NotWholeMinute { field: "start" }));
    }

    #[test]
    fn a_custom_policy_applies_its_own_bounds() {
        let p = BookingPolicy::new(Duration::minutes(30), Duration::minutes(90), Duration::days(14)).unwrap();
        let start = datetime!(2026-05-05 09:00 +01:00);
        assert_eq!(
            p.validate_booking(start, start + Duration::minutes(20), NOW),
            Err(SchedulingError::TooShort { min_minutes: 30 })
        );
        assert_eq!(
            p.validate_booking(start, start + Duration::minutes(91), NOW),
            Err(SchedulingError::TooLong { max_minutes: 90 })
        );
        let far = datetime!(2026-05-20 09:00 UTC);
        assert_eq!(
            p.validate_booking(far, far + Duration::hours(1), NOW),
            Err(SchedulingError::TooFarAhead { max_days: 14 })
        );
        assert_eq!(p.min_duration(), Duration::minutes(30));
        assert_eq!(p.max_duration(), Duration::minutes(90));
        assert_eq!(p.max_lead_time(), Duration::days(14));
    }

    #[test]
    fn inconsistent_policies_cannot_be_built() {
        let m = Duration::minutes;
        let cases = [
            (BookingPolicy::new(m(0), m(60), Duration::days(1)), "min_duration"),
            (BookingPolicy::new(Duration::seconds(90), m(60), Duration::days(1)), "min_duration"),
            (BookingPolicy::new(m(60), m(30), Duration::days(1)), "max_duration"),
            (BookingPolicy::new(m(5), Duration::seconds(3630), Duration::days(1)), "max_duration"),
            (BookingPolicy::new(m(5), Duration::hours(25), Duration::days(1)), "max_duration"),
            (BookingPolicy::new(m(5), m(60), Duration::ZERO), "max_lead_time"),
        ];
        for (result, field) in cases {
            let err = result.unwrap_err();
            assert_eq!((err.kind(), err.field()), ("invalid_policy", field));
        }
        assert_eq!(BookingPolicy::new(m(5), Duration::hours(8), Duration::days(365)), Ok(BookingPolicy::default()));
    }

    #[test]
    fn kinds_have_stable_string_forms() {
        let forms: Vec<_> = AppointmentKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(forms, ["initial_consultation", "therapy_session", "follow_up", "group_session", "video_session"]);
        for &kind in AppointmentKind::ALL {
            assert_eq!(kind.as_str().parse::<AppointmentKind>(), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::json!(kind.as_str()));
            assert_eq!(serde_json::from_value::<AppointmentKind>(serde_json::json!(kind.as_str())).unwrap(), kind);
        }
        let err = "massage".parse::<AppointmentKind>().unwrap_err();
        assert_eq!((err.kind(), err.field()), ("unknown_value", "kind"));
    }

    #[test]
    fn unknown_values_echo_only_a_short_prefix() {
        let long = "x".repeat(10_000);
        match long.parse::<AppointmentKind>().unwrap_err() {
            SchedulingError::UnknownValue { value, .. } => assert_eq!(value.chars().count(), 64),
            other => panic!("unexpected {other:?}"),
        }
    }
}
