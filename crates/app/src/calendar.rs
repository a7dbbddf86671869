//! The calendar appointments are booked into: each therapist's weekly working hours and
//! absences, the free slots that follow from them and the bookings, and the checks a booking
//! must pass.
//!
//! `calendar.manage` (admins and receptionists for everyone, a therapist for themself) changes
//! hours and absences; changes are audited as `calendar.update`. Working hours are readable by
//! everyone of the practice who may read appointments. Absences are never shown to patients:
//! availability merges them with other bookings into "not free", so a patient sees where they can
//! book and nothing about why other times are taken.
//!
//! # The calendar context
//! Whether a slot is bookable depends on the therapist's working hours, absences and other
//! bookings, whoever asks; a patient must not see the absences or the other bookings
//! themselves. Those reads therefore run in the practice's service context
//! ([`calendar_context`]) and return only times; what reaches the caller is a yes, or a refusal
//! whose details depend on who asks (see `crate::appointments`).

use crate::{Caller, Error, Result, Services};
use audit::Action;
use identity::{Permission, Scope};
use kernel::{TenantId, UserId};
use scheduling::{
    Absence, FreeSlotQuery, MAX_FREE_SLOTS, MAX_SEARCH_DAYS, SchedulingError, Slot, TimeRange, WeeklyHours, free_slots,
};
use serde_json::json;
use sqlx::PgConnection;
use store_postgres::DbContext;
use store_postgres::appointments as store;
/// The stored absence, and how the store names weekdays and times of day (`monday`, `09:00`):
/// the doors show hours in the same spelling they are accepted in.
pub use store_postgres::appointments::{AbsenceRow, WEEK, hh_mm, weekday_name};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Longest absence, and the longest range of an absence listing.
const MAX_ABSENCE_DAYS: i64 = 366;
/// The range an absence listing covers when the caller names no end.
const DEFAULT_ABSENCE_LISTING_DAYS: i64 = 90;

/// One range of working time on a weekday as a caller submits it: the weekday's name
/// (`monday` ... `sunday`) and `HH:MM` local times.
#[derive(Debug, Clone, Default)]
pub struct WorkingRangeInput {
    pub weekday: String,
    pub start: String,
    pub end: String,
}

/// A new absence and the active appointments of the therapist during it, to rebook.
#[derive(Debug, Clone)]
pub struct CreatedAbsence {
    pub absence: AbsenceRow,
    pub overlapping_appointments: Vec<Uuid>,
}

/// A search for free slots as a caller submits it: RFC 3339 bounds, minutes, a count.
#[derive(Debug, Clone, Default)]
pub struct AvailabilityQuery {
    pub from: String,
    pub to: String,
    /// Length of the wanted appointment; default 60.
    pub length_minutes: Option<u32>,
    /// Distance between candidate starts, counted from the start of each working stretch;
    /// default 30.
    pub step_minutes: Option<u32>,
    /// At most this many slots (1 to [`MAX_FREE_SLOTS`]); default 200.
    pub limit: Option<u32>,
}

/// Free slots of a therapist.
#[derive(Debug, Clone)]
pub struct Availability {
    /// The therapist's time zone; `None` when no working hours are set (then nothing is free).
    pub time_zone: Option<String>,
    pub slots: Vec<Slot>,
}

impl Services {
    /// Replaces a therapist's weekly working hours (`calendar.manage`); existing bookings stay.
    /// Audited as `calendar.update`.
    pub async fn put_working_hours(
        &self,
        caller: &Caller,
        therapist: UserId,
        time_zone: &str,
        ranges: &[WorkingRangeInput],
    ) -> Result<WeeklyHours> {
        self.authorize_calendar_change(caller, therapist).await?;
        let mut parsed = Vec::with_capacity(ranges.len());
        for (index, range) in ranges.iter().enumerate() {
            let weekday = store::parse_weekday(&range.weekday)
                .ok_or_else(|| Error::invalid("ranges", format!("range {index}: weekday must be monday ... sunday")))?;
            let start = store::parse_hh_mm(&range.start)
                .ok_or_else(|| Error::invalid("ranges", format!("range {index}: start must be HH:MM")))?;
            let end = store::parse_hh_mm(&range.end)
                .ok_or_else(|| Error::invalid("ranges", format!("range {index}: end must be HH:MM")))?;
            parsed.push((weekday, TimeRange { start, end }));
        }
        let hours = WeeklyHours::new(time_zone, parsed).map_err(|e| match e.field() {
            "weekly_hours" => Error::invalid("ranges", e.to_string()),
            _ => invalid_input(&e),
        })?;
        let now = self.clock.now();
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        ensure_therapist(&mut tx, caller.tenant, therapist).await?;
        store::put_working_hours(&mut tx, caller.tenant, therapist, &hours, now).await?;
        let event = caller
            .audit_event(Action::CalendarUpdate, "working_hours", self.clock())
            .with_resource_id(therapist.to_string())
            .with_detail(json!({ "time_zone": hours.time_zone(), "ranges": store::ranges_json(&hours) }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(hours)
    }

    /// A therapist's weekly working hours (`appointment.read`); [`Error::NotFound`] when none
    /// are set. Read in the calendar context: whoever may book may know when the therapist works.
    pub async fn working_hours(&self, caller: &Caller, therapist: UserId) -> Result<WeeklyHours> {
        self.authorize(caller, Permission::AppointmentRead, "calendar").await?;
        let mut tx = store_postgres::begin(&self.db, &calendar_context(caller.tenant)).await?;
        ensure_therapist(&mut tx, caller.tenant, therapist).await?;
        let hours = store::working_hours(&mut tx, caller.tenant, therapist).await?;
        tx.commit().await?;
        hours.map(|(hours, _)| hours).ok_or(Error::NotFound)
    }

    /// Records an absence (`calendar.manage`): bookings during it are refused from now on, the
    /// existing ones are listed to rebook. Audited as `calendar.update`.
    pub async fn create_absence(
        &self,
        caller: &Caller,
        therapist: UserId,
        start: &str,
        end: &str,
    ) -> Result<CreatedAbsence> {
        self.authorize_calendar_change(caller, therapist).await?;
        let start = parse_instant("start", start)?;
        let end = parse_instant("end", end)?;
        let absence = Absence::new(start, end).map_err(|e| invalid_input(&e))?;
        if absence.as_slot().duration() > Duration::days(MAX_ABSENCE_DAYS) {
            return Err(Error::invalid("end", format!("an absence may last at most {MAX_ABSENCE_DAYS} days")));
        }
        let now = self.clock.now();
        let row = AbsenceRow { id: Uuid::now_v7(), therapist, absence, created_at: now };
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        ensure_therapist(&mut tx, caller.tenant, therapist).await?;
        store::insert_absence(&mut tx, caller.tenant, &row).await?;
        let overlapping: Vec<Uuid> = store::busy_slots(&mut tx, caller.tenant, therapist, start, end, None)
            .await?
            .iter()
            .map(|b| b.appointment)
            .collect();
        let event = caller
            .audit_event(Action::CalendarUpdate, "absence", self.clock())
            .with_resource_id(row.id.to_string())
            .with_detail(json!({
                "therapist_id": therapist.to_string(),
                "action": "create",
                "overlapping_appointments": overlapping.len(),
            }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(CreatedAbsence { absence: row, overlapping_appointments: overlapping })
    }

    /// The therapist's absences overlapping `from` (default now) to `to` (default 90 days
    /// later, at most 366), for those who manage the calendar (`calendar.manage`): never
    /// patients.
    pub async fn absences(
        &self,
        caller: &Caller,
        therapist: UserId,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<AbsenceRow>> {
        self.authorize_calendar_change(caller, therapist).await?;
        let from = match from {
            Some(text) => parse_instant("from", text)?,
            None => self.clock.now(),
        };
        let to = match to {
            Some(text) => parse_instant("to", text)?,
            None => from + Duration::days(DEFAULT_ABSENCE_LISTING_DAYS),
        };
        if to <= from {
            return Err(Error::invalid("to", "must be after from"));
        }
        if to - from > Duration::days(MAX_ABSENCE_DAYS) {
            return Err(Error::invalid("to", format!("at most {MAX_ABSENCE_DAYS} days after from")));
        }
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        ensure_therapist(&mut tx, caller.tenant, therapist).await?;
        let rows = store::absences(&mut tx, caller.tenant, therapist, from, to).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Removes an absence of the therapist (`calendar.manage`); [`Error::NotFound`] when the
    /// therapist has no such absence. Audited as `calendar.update`.
    pub async fn delete_absence(&self, caller: &Caller, therapist: UserId, absence: Uuid) -> Result<()> {
        self.authorize_calendar_change(caller, therapist).await?;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        if !store::delete_absence(&mut tx, caller.tenant, therapist, absence).await? {
            return Err(Error::NotFound);
        }
        let event = caller
            .audit_event(Action::CalendarUpdate, "absence", self.clock())
            .with_resource_id(absence.to_string())
            .with_detail(json!({ "therapist_id": therapist.to_string(), "action": "delete" }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Free slots of a therapist in a range of at most [`MAX_SEARCH_DAYS`], not before now
    /// (`appointment.read`): inside working hours, outside absences and bookings, which are not
    /// told apart.
    pub async fn availability(
        &self,
        caller: &Caller,
        therapist: UserId,
        query: &AvailabilityQuery,
    ) -> Result<Availability> {
        self.authorize(caller, Permission::AppointmentRead, "calendar").await?;
        let from = parse_instant("from", &query.from)?;
        let to = parse_instant("to", &query.to)?;
        let slot_length = minutes_param("length_minutes", query.length_minutes, 60)?;
        let step = minutes_param("step_minutes", query.step_minutes, 30)?;
        let limit = query.limit.unwrap_or(200);
        if limit == 0 || limit as usize > MAX_FREE_SLOTS {
            return Err(Error::invalid("limit", format!("must be between 1 and {MAX_FREE_SLOTS}")));
        }
        if to <= from {
            return Err(Error::invalid("to", "must be after from"));
        }
        if to - from > Duration::days(MAX_SEARCH_DAYS) {
            return Err(Error::invalid("to", format!("at most {MAX_SEARCH_DAYS} days after from")));
        }
        // Times only, read in the practice's service context whoever asks (see the module docs).
        let mut tx = store_postgres::begin(&self.db, &calendar_context(caller.tenant)).await?;
        ensure_therapist(&mut tx, caller.tenant, therapist).await?;
        let Some((hours, _)) = store::working_hours(&mut tx, caller.tenant, therapist).await? else {
            tx.commit().await?;
            return Ok(Availability { time_zone: None, slots: Vec::new() });
        };
        // Busy spans that could touch a slot: widen by a day so a stretch's grid is anchored right.
        let (wide_from, wide_to) = (from - Duration::days(1), to + Duration::days(1));
        let absences: Vec<Absence> = store::absences(&mut tx, caller.tenant, therapist, wide_from, wide_to)
            .await?
            .iter()
            .map(|a| a.absence)
            .collect();
        let booked: Vec<Slot> = store::busy_slots(&mut tx, caller.tenant, therapist, wide_from, wide_to, None)
            .await?
            .iter()
            .map(|b| b.slot)
            .collect();
        tx.commit().await?;
        let query = FreeSlotQuery { from, to, slot_length, step, now: Some(self.clock.now()), limit: limit as usize };
        // Only whole-minute starts are bookable; the grid is whole minutes from whole-minute hours.
        let slots = free_slots(&hours, &absences, &booked, &query).map_err(|e| match e.field() {
            "slot_length" => Error::invalid("length_minutes", e.to_string()),
            "step" => Error::invalid("step_minutes", e.to_string()),
            _ => invalid_input(&e),
        })?;
        Ok(Availability { time_zone: Some(hours.time_zone().to_owned()), slots })
    }

    /// `calendar.manage` for this therapist: practice-wide, or "own" for the therapist themself
    /// (refused and audited otherwise).
    async fn authorize_calendar_change(&self, caller: &Caller, therapist: UserId) -> Result<()> {
        let scope = self.authorize(caller, Permission::CalendarManage, "calendar").await?;
        if scope == Scope::Own && caller.user() != Some(therapist) {
            return Err(self.refuse_outside_own(caller, Permission::CalendarManage, "calendar").await);
        }
        Ok(())
    }
}

/// The practice's service context, for calendar reads that return only times (see the module
/// documentation). Never used to return rows to a caller.
pub fn calendar_context(tenant: TenantId) -> DbContext {
    DbContext::service(tenant)
}

/// [`Error::NotFound`] unless `therapist` is an enabled therapist of the practice (read in
/// `conn`, which must see staff: the calendar context does).
pub(crate) async fn ensure_therapist(conn: &mut PgConnection, tenant: TenantId, therapist: UserId) -> Result<()> {
    match store_postgres::patients::enabled_user_role(conn, tenant, therapist).await?.as_deref() {
        Some("therapist") => Ok(()),
        _ => Err(Error::NotFound),
    }
}

/// A scheduling refusal about the caller's input, naming the field.
pub(crate) fn invalid_input(error: &SchedulingError) -> Error {
    Error::invalid(error.field(), error.to_string())
}

/// An RFC 3339 instant (any offset; kept in UTC), or a problem naming `field`.
pub fn parse_instant(field: &str, text: &str) -> Result<OffsetDateTime> {
    let instant = OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
        .ok_or_else(|| Error::invalid(field, "must be an RFC 3339 date-time such as 2026-05-04T09:00:00Z"))?;
    check_instant_range(field, instant)
}

/// Instants Praxis accepts from a caller: 1970 to 9000. Calendar arithmetic on them (a slot's
/// end, a day or a query window added) then stays far inside what `time` (to 9999) and
/// Postgres (from 4713 BC) can represent, so none of it can overflow into a panic or a database
/// error.
pub fn check_instant_range(field: &str, instant: OffsetDateTime) -> Result<OffsetDateTime> {
    if (1970..=9000).contains(&instant.year()) {
        Ok(instant)
    } else {
        Err(Error::invalid(field, "must lie between the years 1970 and 9000"))
    }
}

/// A length in minutes, 1 to 1440, or `default` when not given.
fn minutes_param(field: &str, value: Option<u32>, default: u32) -> Result<Duration> {
    let minutes = value.unwrap_or(default);
    if !(1..=1440).contains(&minutes) {
        return Err(Error::invalid(field, "must be between 1 and 1440 minutes"));
    }
    Ok(Duration::minutes(i64::from(minutes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn instants_are_rfc_3339_kept_in_utc_and_bounded() {
        assert_eq!(parse_instant("start", "2026-05-04T11:00:00+02:00").unwrap(), datetime!(2026-05-04 09:00 UTC));
        assert!(parse_instant("start", "2026-05-04 09:00").is_err());
        assert!(parse_instant("start", "9999-01-01T00:00:00Z").is_err());
        assert!(parse_instant("start", "1969-12-31T23:59:59Z").is_err());
    }
}
