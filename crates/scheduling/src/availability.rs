//! Free slots: where a new appointment of a given length could go.

use crate::SchedulingError;
use crate::booking::{Slot, is_positive_whole_minutes};
pub use crate::hours::MAX_SEARCH_DAYS;
use crate::hours::{Absence, WeeklyHours, check_range};
use time::{Duration, OffsetDateTime};

/// Most slots one search may return; page by searching again from after the last one.
pub const MAX_FREE_SLOTS: usize = 1000;

/// Longest slot length and step a search accepts.
const MAX_SEARCH_DURATION: Duration = Duration::hours(24);

/// What to search for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSlotQuery {
    /// Start of the searched range (inclusive).
    pub from: OffsetDateTime,
    /// End of the searched range (exclusive): a slot ends by this instant.
    pub to: OffsetDateTime,
    /// Length of the wanted appointment, in whole minutes.
    pub slot_length: Duration,
    /// Distance between candidate starts, in whole minutes, counted from the start of each
    /// stretch of working time (so a day starting at 09:00 with a 30 minute step offers 09:00,
    /// 09:30, ... whatever `from` is).
    pub step: Duration,
    /// When set, no slot starts before this instant (pass the clock's now to hide the past).
    pub now: Option<OffsetDateTime>,
    /// Most slots to return, 1 to [`MAX_FREE_SLOTS`].
    pub limit: usize,
}

/// The free slots of `query.slot_length` in `[query.from, query.to)`, sorted by start, at most
/// `query.limit` of them.
///
/// A slot is free when it lies inside one stretch of working time ([`WeeklyHours`], across DST
/// as that type documents), overlaps no absence and no booked slot, starts at or after `now`
/// when given, and sits on the stretch's step grid. `booked` should hold the slots of the
/// therapist's active appointments ([`crate::AppointmentStatus::is_active`]); slots of different
/// lengths overlap each other when `step` is shorter than `slot_length`, as alternatives do.
///
/// The range may span at most [`MAX_SEARCH_DAYS`] days.
pub fn free_slots(
    hours: &WeeklyHours,
    absences: &[Absence],
    booked: &[Slot],
    query: &FreeSlotQuery,
) -> Result<Vec<Slot>, SchedulingError> {
    check_range(query.from, query.to)?;
    check_search_duration(query.slot_length, "slot_length")?;
    check_search_duration(query.step, "step")?;
    if query.limit == 0 || query.limit > MAX_FREE_SLOTS {
        return Err(SchedulingError::InvalidParameter { field: "limit", reason: "must be between 1 and 1000" });
    }

    let busy = merged_busy_times(absences, booked);
    let step = query.step.whole_nanoseconds();
    let mut free = Vec::new();
    for stretch in hours.intervals_overlapping(query.from, query.to)? {
        let anchor = stretch.start();
        let mut earliest = query.from.max(anchor);
        if let Some(now) = query.now {
            earliest = earliest.max(now);
        }
        let latest_end = stretch.end().min(query.to);
        let mut start = first_grid_point_at_or_after(anchor, earliest, step)?;
        loop {
            let end = start.checked_add(query.slot_length).ok_or(SchedulingError::OutOfRange { field: "to" })?;
            if end > latest_end {
                break;
            }
            // The first busy time that ends after `start` is the only one that can overlap.
            let index = busy.partition_point(|&(_, busy_end)| busy_end <= start);
            match busy.get(index) {
                Some(&(busy_start, busy_end)) if busy_start < end => {
                    start = first_grid_point_at_or_after(anchor, busy_end, step)?;
                }
                _ => {
                    free.push(Slot::new(start, end)?);
                    if free.len() == query.limit {
                        return Ok(free);
                    }
                    start = start.checked_add(query.step).ok_or(SchedulingError::OutOfRange { field: "to" })?;
                }
            }
        }
    }
    Ok(free)
}

fn check_search_duration(duration: Duration, field: &'static str) -> Result<(), SchedulingError> {
    if is_positive_whole_minutes(duration) && duration <= MAX_SEARCH_DURATION {
        Ok(())
    } else {
        Err(SchedulingError::InvalidParameter { field, reason: "must be whole minutes, from 1 minute to 24 hours" })
    }
}

/// Absences and bookings as one sorted list of disjoint `[start, end)` spans, so that "ends
/// after t" is monotone along the list and a binary search finds the one span to check.
fn merged_busy_times(absences: &[Absence], booked: &[Slot]) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let mut spans: Vec<_> = absences
        .iter()
        .map(Absence::as_slot)
        .chain(booked.iter().copied())
        .map(|slot| (slot.start(), slot.end()))
        .collect();
    spans.sort();
    let mut merged: Vec<(OffsetDateTime, OffsetDateTime)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The first instant `anchor + k * step` (k ≥ 0) that is not before `at`.
fn first_grid_point_at_or_after(
    anchor: OffsetDateTime,
    at: OffsetDateTime,
    step_nanos: i128,
) -> Result<OffsetDateTime, SchedulingError> {
    let behind = (at - anchor).whole_nanoseconds();
    if behind <= 0 {
        return Ok(anchor);
    }
    let steps = (behind + step_nanos - 1) / step_nanos;
    let offset = i64::try_from(steps * step_nanos).map_err(|_| SchedulingError::OutOfRange { field: "to" })?;
    anchor.checked_add(Duration::nanoseconds(offset)).ok_or(SchedulingError::OutOfRange { field: "to" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fits_working_hours;
    use crate::hours::TimeRange;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use time::macros::{datetime, time};
    use time::{Time, Weekday};

    fn berlin(ranges: &[(Weekday, Time, Time)]) -> WeeklyHours {
        WeeklyHours::new("Europe/Berlin", ranges.iter().map(|&(d, start, end)| (d, TimeRange { start, end }))).unwrap()
    }

    fn query(from: OffsetDateTime, to: OffsetDateTime, length_minutes: i64, step_minutes: i64) -> FreeSlotQuery {
        FreeSlotQuery {
            from,
            to,
            slot_length: Duration::minutes(length_minutes),
            step: Duration::minutes(step_minutes),
            now: None,
            limit: MAX_FREE_SLOTS,
        }
    }

    fn starts(slots: &[Slot]) -> Vec<OffsetDateTime> {
        slots.iter().map(Slot::start).collect()
    }

    fn slot(start: OffsetDateTime, end: OffsetDateTime) -> Slot {
        Slot::new(start, end).unwrap()
    }

    // Monday 12 January 2026, CET: 09:00-12:00 local is 08:00-11:00 UTC.
    const MONDAY: OffsetDateTime = datetime!(2026-01-12 00:00 UTC);
    const TUESDAY: OffsetDateTime = datetime!(2026-01-13 00:00 UTC);

    fn morning() -> WeeklyHours {
        berlin(&[(Weekday::Monday, time!(9:00), time!(12:00))])
    }

    #[test]
    fn slots_follow_the_step_grid_from_the_start_of_work() {
        let hours = morning();
        let hourly = free_slots(&hours, &[], &[], &query(MONDAY, TUESDAY, 60, 60)).unwrap();
        assert_eq!(
            starts(&hourly),
            [datetime!(2026-01-12 08:00 UTC), datetime!(2026-01-12 09:00 UTC), datetime!(2026-01-12 10:00 UTC)]
        );
        assert!(hourly.iter().all(|s| s.duration() == Duration::hours(1)));
        let half_hourly = free_slots(&hours, &[], &[], &query(MONDAY, TUESDAY, 60, 30)).unwrap();
        assert_eq!(half_hourly.len(), 5);
        assert_eq!(half_hourly.last().unwrap().end(), datetime!(2026-01-12 11:00 UTC));
    }

    #[test]
    fn a_window_starting_mid_morning_keeps_the_grid() {
        let hours = morning();
        let slots = free_slots(&hours, &[], &[], &query(datetime!(2026-01-12 08:10:20 UTC), TUESDAY, 60, 30)).unwrap();
        assert_eq!(starts(&slots)[0], datetime!(2026-01-12 08:30 UTC));
    }

    #[test]
    fn slots_end_by_the_end_of_the_window() {
        let hours = morning();
        let slots = free_slots(&hours, &[], &[], &query(MONDAY, datetime!(2026-01-12 10:30 UTC), 60, 30)).unwrap();
        // 09:30-10:30 ends exactly at `to`, which is allowed (half-open); 10:00 would not fit.
        assert_eq!(
            starts(&slots),
            [
                datetime!(2026-01-12 08:00 UTC),
                datetime!(2026-01-12 08:30 UTC),
                datetime!(2026-01-12 09:00 UTC),
                datetime!(2026-01-12 09:30 UTC),
            ]
        );
    }

    #[test]
    fn booked_slots_and_absences_are_skipped() {
        let hours = morning();
        let booked = [slot(datetime!(2026-01-12 09:00 UTC), datetime!(2026-01-12 09:45 UTC))];
        let slots = free_slots(&hours, &[], &booked, &query(MONDAY, TUESDAY, 60, 30)).unwrap();
        // 08:00 ends as the booking starts; the next grid point clear of it is 10:00.
        assert_eq!(starts(&slots), [datetime!(2026-01-12 08:00 UTC), datetime!(2026-01-12 10:00 UTC)]);

        let absence = Absence::new(datetime!(2026-01-12 07:00 UTC), datetime!(2026-01-12 08:30 UTC)).unwrap();
        let slots = free_slots(&hours, &[absence], &booked, &query(MONDAY, TUESDAY, 30, 30)).unwrap();
        assert_eq!(
            starts(&slots),
            [datetime!(2026-01-12 08:30 UTC), datetime!(2026-01-12 10:00 UTC), datetime!(2026-01-12 10:30 UTC)]
        );
    }

    #[test]
    fn the_past_is_skipped_when_now_is_given() {
        let hours = morning();
        let mut q = query(MONDAY, TUESDAY, 60, 60);
        q.now = Some(datetime!(2026-01-12 08:00:01 UTC));
        assert_eq!(
            starts(&free_slots(&hours, &[], &[], &q).unwrap()),
            [datetime!(2026-01-12 09:00 UTC), datetime!(2026-01-12 10:00 UTC)]
        );
        q.now = Some(datetime!(2026-01-12 08:00 UTC));
        assert_eq!(free_slots(&hours, &[], &[], &q).unwrap().len(), 3);
        q.now = Some(datetime!(2026-02-01 00:00 UTC));
        assert!(free_slots(&hours, &[], &[], &q).unwrap().is_empty());
    }

    #[test]
    fn the_answer_is_cut_at_the_limit() {
        let hours = morning();
        let mut q = query(MONDAY, MONDAY + Duration::days(31), 5, 5);
        let all = free_slots(&hours, &[], &[], &q).unwrap();
        // Five Mondays, 36 five-minute slots each.
        assert_eq!(all.len(), 5 * 36);
        q.limit = 40;
        let first = free_slots(&hours, &[], &[], &q).unwrap();
        assert_eq!(first, all[..40]);
        // Paging: search again from the end of the last slot returned.
        q.from = first.last().unwrap().end();
        q.limit = MAX_FREE_SLOTS;
        assert_eq!(free_slots(&hours, &[], &[], &q).unwrap(), all[40..]);
    }

    #[test]
    fn the_output_never_exceeds_the_hard_maximum() {
        let all_week: Vec<_> = (0..7u8).map(|n| (Weekday::Monday.nth_next(n), time!(0:00), time!(23:59))).collect();
        let hours = berlin(&all_week);
        let slots = free_slots(&hours, &[], &[], &query(MONDAY, MONDAY + Duration::days(31), 1, 1)).unwrap();
        assert_eq!(slots.len(), MAX_FREE_SLOTS);
    }

    #[test]
    fn search_parameters_are_bounded() {
        let hours = morning();
        let check = |q: FreeSlotQuery| free_slots(&hours, &[], &[], &q).unwrap_err();
        let base = query(MONDAY, TUESDAY, 60, 30);

        assert_eq!(check(FreeSlotQuery { to: MONDAY, ..base }), SchedulingError::EmptyRange);
        assert_eq!(check(FreeSlotQuery { to: MONDAY - Duration::hours(1), ..base }), SchedulingError::EmptyRange);
        let too_long = check(FreeSlotQuery { to: MONDAY + Duration::days(31) + Duration::minutes(1), ..base });
        assert_eq!(too_long, SchedulingError::RangeTooLong { max_days: 31 });
        assert_eq!((too_long.kind(), too_long.field()), ("range_too_long", "to"));
        assert!(free_slots(&hours, &[], &[], &FreeSlotQuery { to: MONDAY + Duration::days(31), ..base }).is_ok());

        for bad in
            [Duration::ZERO, Duration::minutes(-30), Duration::seconds(90), Duration::hours(24) + Duration::minutes(1)]
        {
            let err = check(FreeSlotQuery { slot_length: bad, ..base });
            assert_eq!((err.kind(), err.field()), ("invalid_parameter", "slot_length"), "{bad}");
            let err = check(FreeSlotQuery { step: bad, ..base });
            assert_eq!((err.kind(), err.field()), ("invalid_parameter", "step"), "{bad}");
        }
        for bad in [0, MAX_FREE_SLOTS + 1] {
            let err = check(FreeSlotQuery { limit: bad, ..base });
            assert_eq!((err.kind(), err.field()), ("invalid_parameter", "limit"));
        }
    }

    #[test]
    fn hourly_slots_on_the_berlin_dst_sundays() {
        let hours = berlin(&[(Weekday::Sunday, time!(1:00), time!(4:00))]);
        let on = |from, to| starts(&free_slots(&hours, &[], &[], &query(from, to, 60, 60)).unwrap());
        // An ordinary Sunday: 01:00, 02:00, 03:00 CET.
        assert_eq!(
            on(datetime!(2026-03-21 12:00 UTC), datetime!(2026-03-22 12:00 UTC)),
            [datetime!(2026-03-22 00:00 UTC), datetime!(2026-03-22 01:00 UTC), datetime!(2026-03-22 02:00 UTC)]
        );
        // Spring forward: 01:00 CET, then 03:00 CEST; 02:00 does not exist.
        assert_eq!(
            on(datetime!(2026-03-28 12:00 UTC), datetime!(2026-03-29 12:00 UTC)),
            [datetime!(2026-03-29 00:00 UTC), datetime!(2026-03-29 01:00 UTC)]
        );
        // Fall back: 01:00 and 02:00 CEST, then 02:00 and 03:00 CET.
        assert_eq!(
            on(datetime!(2026-10-24 12:00 UTC), datetime!(2026-10-25 12:00 UTC)),
            [
                datetime!(2026-10-24 23:00 UTC),
                datetime!(2026-10-25 00:00 UTC),
                datetime!(2026-10-25 01:00 UTC),
                datetime!(2026-10-25 02:00 UTC),
            ]
        );
    }

    #[test]
    fn a_working_week_across_the_spring_change_keeps_local_times() {
        let weekdays: Vec<_> = (0..5u8).map(|n| (Weekday::Monday.nth_next(n), time!(9:00), time!(10:00))).collect();
        let hours = berlin(&weekdays);
        let slots = free_slots(
            &hours,
            &[],
            &[],
            &query(datetime!(2026-03-26 00:00 UTC), datetime!(2026-04-01 00:00 UTC), 60, 60),
        )
        .unwrap();
        // Thursday and Friday at 09:00 CET, Monday to Tuesday at 09:00 CEST.
        assert_eq!(
            starts(&slots),
            [
                datetime!(2026-03-26 08:00 UTC),
                datetime!(2026-03-27 08:00 UTC),
                datetime!(2026-03-30 07:00 UTC),
                datetime!(2026-03-31 07:00 UTC),
            ]
        );
    }

    // --- properties ---

    const ZONES: [&str; 5] = ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata", "Australia/Lord_Howe"];

    /// Days around DST changes in the zones above (Berlin, New York, Lord Howe's half hour) and
    /// two ordinary ones.
    const BASES: [OffsetDateTime; 7] = [
        datetime!(2026-03-27 00:00 UTC),
        datetime!(2026-10-23 00:00 UTC),
        datetime!(2026-03-06 00:00 UTC),
        datetime!(2026-10-30 00:00 UTC),
        datetime!(2026-04-03 00:00 UTC),
        datetime!(2026-01-05 00:00 UTC),
        datetime!(2026-07-06 00:00 UTC),
    ];

    fn minute_of_day(minute: u16) -> Time {
        Time::from_hms(u8::try_from(minute / 60).unwrap(), u8::try_from(minute % 60).unwrap(), 0).unwrap()
    }

    /// Random weekly hours: per day sorted distinct minute marks paired into ranges, either
    /// separate (a, b), (c, d) or touching (a, b), (b, c).
    fn weekly_hours(marks_per_day: std::ops::Range<usize>) -> impl Strategy<Value = WeeklyHours> {
        let day = (prop::collection::btree_set(0u16..1440, marks_per_day), any::<bool>());
        (prop::sample::select(ZONES.to_vec()), prop::array::uniform7(day)).prop_map(|(zone, days)| {
            let mut ranges = Vec::new();
            for (index, (marks, touching)) in days.into_iter().enumerate() {
                let marks: Vec<u16> = marks.into_iter().collect();
                let pairs: Vec<(u16, u16)> = if touching {
                    marks.windows(2).map(|w| (w[0], w[1])).take(crate::MAX_RANGES_PER_DAY).collect()
                } else {
                    marks.chunks_exact(2).map(|c| (c[0], c[1])).collect()
                };
                let weekday = Weekday::Monday.nth_next(u8::try_from(index).unwrap());
                ranges.extend(
                    pairs
                        .into_iter()
                        .map(|(s, e)| (weekday, TimeRange { start: minute_of_day(s), end: minute_of_day(e) })),
                );
            }
            WeeklyHours::new(zone, ranges).unwrap()
        })
    }

    /// Spans placed relative to the window, in per mille of its length (so they land in it
    /// whatever its length): (start, length in minutes), from a fifth of the window before it
    /// to its end.
    fn spans(max: usize) -> impl Strategy<Value = Vec<(i32, i64)>> {
        prop::collection::vec((-200i32..1000, 1i64..180), 0..=max)
    }

    fn place(from: OffsetDateTime, window: Duration, spans: &[(i32, i64)]) -> Vec<Slot> {
        spans
            .iter()
            .map(|&(per_mille, length)| {
                let start = from + window * per_mille / 1000;
                slot(start, start + Duration::minutes(length))
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    struct Case {
        hours: WeeklyHours,
        absences: Vec<Absence>,
        booked: Vec<Slot>,
        query: FreeSlotQuery,
    }

    fn case(
        marks_per_day: std::ops::Range<usize>,
        window_minutes: std::ops::RangeInclusive<i64>,
        step_minutes: std::ops::RangeInclusive<i64>,
        max_busy: usize,
    ) -> impl Strategy<Value = Case> {
        (
            weekly_hours(marks_per_day),
            prop::sample::select(BASES.to_vec()),
            0i64..(3 * 1440 * 60),
            window_minutes,
            5i64..=120,
            step_minutes,
            spans(max_busy / 2),
            spans(max_busy),
            prop::option::of(-100i32..1000),
        )
            .prop_map(|(hours, base, from_seconds, window, length, step, absences, booked, now_per_mille)| {
                let from = base + Duration::seconds(from_seconds);
                let window = Duration::minutes(window);
                let absences = place(from, window, &absences)
                    .into_iter()
                    .map(|s| Absence::new(s.start(), s.end()).unwrap())
                    .collect();
                let booked = place(from, window, &booked);
                let query = FreeSlotQuery {
                    from,
                    to: from + window,
                    slot_length: Duration::minutes(length),
                    step: Duration::minutes(step),
                    // Not a whole second, to show `now` needs no rounding.
                    now: now_per_mille.map(|p| from + window * p / 1000 + Duration::milliseconds(1500)),
                    limit: MAX_FREE_SLOTS,
                };
                Case { hours, absences, booked, query }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every slot offered is bookable: inside [from, to), not in the past, of the asked
        /// length, inside working hours, clear of absences and bookings; and the list is sorted.
        #[test]
        fn offered_slots_are_really_free(c in case(0..8, 1..=4 * 1440, 1..=90, 16)) {
            let slots = free_slots(&c.hours, &c.absences, &c.booked, &c.query).unwrap();
            prop_assert!(slots.len() <= c.query.limit);
            for pair in slots.windows(2) {
                prop_assert!(pair[0].start() < pair[1].start());
            }
            for s in &slots {
                prop_assert!(c.query.from <= s.start() && s.end() <= c.query.to, "{s:?} outside the window");
                prop_assert_eq!(s.duration(), c.query.slot_length);
                if let Some(now) = c.query.now {
                    prop_assert!(s.start() >= now, "{s:?} is in the past");
                }
                prop_assert!(c.booked.iter().all(|b| !b.overlaps(s)), "{s:?} overlaps a booking");
                prop_assert!(c.absences.iter().all(|a| !a.as_slot().overlaps(s)), "{s:?} overlaps an absence");
                prop_assert_eq!(fits_working_hours(&c.hours, &c.absences, s), Ok(()));
            }
        }

        /// With a one-minute step, no free whole-minute start is missed: the answer is exactly
        /// the set of starts that pass the independent checks.
        #[test]
        fn no_free_minute_is_missed(c in case(4..9, 60..=12 * 60, 1..=1, 3)) {
            let offered: BTreeSet<OffsetDateTime> =
                free_slots(&c.hours, &c.absences, &c.booked, &c.query).unwrap().iter().map(Slot::start).collect();
            let earliest = c.query.now.map_or(c.query.from, |now| now.max(c.query.from));
            // The first whole minute at or after `earliest`.
            let mut start = earliest.replace_second(0).unwrap().replace_nanosecond(0).unwrap();
            if start < earliest {
                start += Duration::minutes(1);
            }
            let mut expected = BTreeSet::new();
            while start + c.query.slot_length <= c.query.to {
                let candidate = slot(start, start + c.query.slot_length);
                if fits_working_hours(&c.hours, &c.absences, &candidate).is_ok()
                    && c.booked.iter().all(|b| !b.overlaps(&candidate))
                {
                    expected.insert(start);
                }
                start += Duration::minutes(1);
            }
            prop_assert_eq!(offered, expected);
        }
    }
}
