//! The appointment status machine.

use crate::SchedulingError;
use time::OffsetDateTime;

/// Where an appointment stands.
///
/// ```text
///   scheduled ──► confirmed ──► completed
///      │  │          │   └────► no_show
///      │  │          └────────► cancelled
///      │  └─────────────────────► cancelled
///      └── (also directly) ─────► completed | no_show
/// ```
///
/// `completed`, `cancelled` and `no_show` are final. Staying in the same status is not a
/// transition: asking to confirm a confirmed appointment is refused, so a client learns that
/// someone else already changed it (retries of the same request are the idempotency layer's job).
///
/// `scheduled -> completed` and `scheduled -> no_show` are **allowed**. `confirmed` records that
/// the patient (or the practice on their behalf) confirmed the appointment, typically by answering
/// a reminder. Many patients never answer and still come, and the classic no-show is precisely
/// the patient who never confirmed. If the outcome required a prior confirmation, staff would
/// have to click "confirmed" first to record what happened, and the record would then claim a
/// confirmation that never took place. The outcome is bounded by time instead: see
/// [`AppointmentStatus::transition_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppointmentStatus {
    /// Booked, not yet confirmed.
    Scheduled,
    /// Confirmed by the patient or the practice.
    Confirmed,
    /// Took place. Final.
    Completed,
    /// Called off by the patient or the practice. Final.
    Cancelled,
    /// The patient did not come. Final.
    NoShow,
}

string_enum!(AppointmentStatus, "status", {
    Scheduled => "scheduled",
    Confirmed => "confirmed",
    Completed => "completed",
    Cancelled => "cancelled",
    NoShow => "no_show",
});

impl AppointmentStatus {
    /// The statuses this one may change to, in a fixed order (the 409 body lists them).
    pub const fn allowed_transitions(self) -> &'static [AppointmentStatus] {
        use AppointmentStatus::{Cancelled, Completed, Confirmed, NoShow, Scheduled};
        match self {
            Scheduled => &[Confirmed, Cancelled, Completed, NoShow],
            Confirmed => &[Completed, Cancelled, NoShow],
            Completed | Cancelled | NoShow => &[],
        }
    }

    /// Whether `self -> to` is an edge of the machine.
    pub fn can_transition_to(self, to: AppointmentStatus) -> bool {
        self.allowed_transitions().contains(&to)
    }

    /// The new status, or [`SchedulingError::IllegalTransition`] listing what is allowed instead.
    pub fn transition(self, to: AppointmentStatus) -> Result<AppointmentStatus, SchedulingError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(SchedulingError::IllegalTransition { from: self, to, allowed: self.allowed_transitions().to_vec() })
        }
    }

    /// [`AppointmentStatus::transition`], plus the rule that an outcome (`completed`, `no_show`)
    /// cannot be recorded before the appointment's `start`: nobody can have failed to come, or
    /// have had the session, yet. Confirming and cancelling are allowed at any time (a
    /// cancellation may be recorded after the fact).
    pub fn transition_at(
        self,
        to: AppointmentStatus,
        start: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<AppointmentStatus, SchedulingError> {
        let next = self.transition(to)?;
        if next.is_outcome() && now < start {
            return Err(SchedulingError::OutcomeBeforeStart { to });
        }
        Ok(next)
    }

    /// Whether the appointment holds its slot: only these count for double booking (the
    /// database's exclusion constraint must use the same set).
    pub const fn is_active(self) -> bool {
        matches!(self, AppointmentStatus::Scheduled | AppointmentStatus::Confirmed)
    }

    /// Whether no further transition is possible.
    pub const fn is_final(self) -> bool {
        !self.is_active()
    }

    /// Whether this status records what happened at the appointment.
    const fn is_outcome(self) -> bool {
        matches!(self, AppointmentStatus::Completed | AppointmentStatus::NoShow)
    }
}

#[cfg(test)]
mod tests {
    use super::AppointmentStatus::{self, Cancelled, Completed, Confirmed, NoShow, Scheduled};
    use crate::SchedulingError;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use time::macros::datetime;

    /// The machine as specified, written out independently of the implementation.
    fn spec_edges() -> BTreeSet<(AppointmentStatus, AppointmentStatus)> {
        [
            (Scheduled, Confirmed),
            (Scheduled, Cancelled),
            (Scheduled, Completed),
            (Scheduled, NoShow),
            (Confirmed, Completed),
            (Confirmed, Cancelled),
            (Confirmed, NoShow),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn every_pair_is_allowed_exactly_when_it_is_a_specified_edge() {
        let edges = spec_edges();
        for &from in AppointmentStatus::ALL {
            for &to in AppointmentStatus::ALL {
                let expected = edges.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                match from.transition(to) {
                    Ok(next) => {
                        assert!(expected, "{from} -> {to} accepted");
                        assert_eq!(next, to);
                    }
                    Err(SchedulingError::IllegalTransition { from: f, to: t, allowed }) => {
                        assert!(!expected, "{from} -> {to} refused");
                        assert_eq!((f, t), (from, to));
                        let spec_allowed: BTreeSet<_> =
                            edges.iter().filter(|(a, _)| *a == from).map(|(_, b)| *b).collect();
                        assert_eq!(allowed.iter().copied().collect::<BTreeSet<_>>(), spec_allowed);
                    }
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
        }
    }

    #[test]
    fn the_same_status_again_is_refused() {
        for &status in AppointmentStatus::ALL {
            assert!(status.transition(status).is_err(), "{status} -> {status}");
        }
    }

    #[test]
    fn final_statuses_allow_nothing_and_the_error_says_so() {
        for status in [Completed, Cancelled, NoShow] {
            assert!(status.is_final());
            assert!(status.allowed_transitions().is_empty());
            let err = status.transition(Confirmed).unwrap_err();
            assert_eq!(err, SchedulingError::IllegalTransition { from: status, to: Confirmed, allowed: vec![] });
            assert_eq!(err.kind(), "illegal_transition");
            assert_eq!(err.field(), "status");
        }
    }

    #[test]
    fn illegal_transition_lists_the_allowed_ones_in_order() {
        let err = Confirmed.transition(Scheduled).unwrap_err();
        assert_eq!(
            err,
            SchedulingError::IllegalTransition {
                from: Confirmed,
                to: Scheduled,
                allowed: vec![Completed, Cancelled, NoShow]
            }
        );
    }

    #[test]
    fn only_scheduled_and_confirmed_hold_a_slot() {
        let active: Vec<_> = AppointmentStatus::ALL.iter().copied().filter(|s| s.is_active()).collect();
        assert_eq!(active, vec![Scheduled, Confirmed]);
    }

    #[test]
    fn outcomes_are_refused_before_the_start_and_accepted_from_the_start_on() {
        let start = datetime!(2026-05-04 09:00 UTC);
        let before = datetime!(2026-05-04 08:59:59 UTC);
        for from in [Scheduled, Confirmed] {
            for to in [Completed, NoShow] {
                assert_eq!(from.transition_at(to, start, before), Err(SchedulingError::OutcomeBeforeStart { to }));
                assert_eq!(from.transition_at(to, start, start), Ok(to));
            }
        }
        let err = Scheduled.transition_at(NoShow, start, before).unwrap_err();
        assert_eq!((err.kind(), err.field()), ("outcome_before_start", "status"));
    }

    #[test]
    fn confirming_and_cancelling_are_allowed_at_any_time() {
        let start = datetime!(2026-05-04 09:00 UTC);
        for now in [datetime!(2026-01-01 00:00 UTC), datetime!(2026-12-31 00:00 UTC)] {
            assert_eq!(Scheduled.transition_at(Confirmed, start, now), Ok(Confirmed));
            assert_eq!(Scheduled.transition_at(Cancelled, start, now), Ok(Cancelled));
            assert_eq!(Confirmed.transition_at(Cancelled, start, now), Ok(Cancelled));
        }
    }

    #[test]
    fn an_illegal_transition_is_reported_before_the_timing_rule() {
        let start = datetime!(2026-05-04 09:00 UTC);
        let err = Cancelled.transition_at(Completed, start, datetime!(2026-05-01 00:00 UTC)).unwrap_err();
        assert_eq!(err.kind(), "illegal_transition");
    }

    #[test]
    fn string_forms_are_stable_and_round_trip() {
        let expected = ["scheduled", "confirmed", "completed", "cancelled", "no_show"];
        let forms: Vec<_> = AppointmentStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(forms, expected);
        for &status in AppointmentStatus::ALL {
            assert_eq!(status.as_str().parse::<AppointmentStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<AppointmentStatus>(&json).unwrap(), status);
        }
    }

    #[test]
    fn unknown_strings_are_refused_naming_the_field() {
        for text in ["", "Scheduled", "no-show", "noshow", "done"] {
            let err = text.parse::<AppointmentStatus>().unwrap_err();
            assert_eq!(err, SchedulingError::UnknownValue { field: "status", value: text.to_owned() });
            assert!(serde_json::from_str::<AppointmentStatus>(&format!("\"{text}\"")).is_err());
        }
    }

    fn any_status() -> impl Strategy<Value = AppointmentStatus> {
        prop::sample::select(AppointmentStatus::ALL.to_vec())
    }

    proptest! {
        /// From `scheduled`, any sequence of requested changes only ever moves along specified
        /// edges; everything else is refused and leaves the status unchanged.
        #[test]
        fn random_request_sequences_stay_inside_the_machine(requests in prop::collection::vec(any_status(), 0..20)) {
            let edges = spec_edges();
            let mut current = Scheduled;
            let mut path = vec![current];
            for to in requests {
                match current.transition(to) {
                    Ok(next) => {
                        prop_assert!(edges.contains(&(current, to)));
                        prop_assert_eq!(next, to);
                        current = next;
                        path.push(current);
                    }
                    Err(_) => prop_assert!(!edges.contains(&(current, to))),
                }
            }
            // The longest path is scheduled -> confirmed -> outcome, and every step is an edge.
            prop_assert!(path.len() <= 3);
            for pair in path.windows(2) {
                prop_assert!(edges.contains(&(pair[0], pair[1])));
            }
        }
    }
}
