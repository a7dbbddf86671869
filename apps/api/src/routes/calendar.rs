//! The calendar appointments are booked into: each therapist's weekly working hours and
//! absences, and the free slots that follow from them and the bookings.
//!
//! `calendar.manage` (admins and receptionists for everyone, a therapist for themself) changes
//! hours and absences; changes are audited as `calendar.update`. Working hours are readable by
//! everyone of the practice. Absences are never shown to patients: availability merges them with
//! other bookings into "not free", so a patient sees where they can book and nothing about why
//! other times are taken.

use crate::appointments::{calendar_context, ensure_therapist, invalid, invalid_input, parse_instant};
use crate::auth::{Principal, with_request};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use audit::{Action, AuditEvent, Outcome};
use identity::{Permission, Scope};
use kernel::UserId;
use scheduling::{Absence, FreeSlotQuery, MAX_FREE_SLOTS, MAX_SEARCH_DAYS, Slot, TimeRange, WeeklyHours, free_slots};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store_postgres::appointments::{self as store, AbsenceRow, parse_hh_mm, parse_weekday};
use time::{Duration, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/therapists/{id}/working-hours", web::put().to(put_working_hours))
        .route("/api/v1/therapists/{id}/working-hours", web::get().to(get_working_hours))
        .route("/api/v1/therapists/{id}/absences", web::post().to(create_absence))
        .route("/api/v1/therapists/{id}/absences", web::get().to(list_absences))
        .route("/api/v1/therapists/{id}/absences/{absence_id}", web::delete().to(delete_absence))
        .route("/api/v1/therapists/{id}/availability", web::get().to(availability));
}

/// One range of working time on a weekday, in the therapist's local time.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkingRange {
    /// `monday` ... `sunday`.
    weekday: String,
    /// `HH:MM`, local time.
    start: String,
    /// `HH:MM`, local time, after `start` (a range cannot cross midnight: split it).
    end: String,
}

/// `PUT /api/v1/therapists/{id}/working-hours` body, and the answer.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkingHoursDocument {
    /// IANA time zone, e.g. `Europe/Berlin` (DST is handled per date).
    time_zone: String,
    /// At most 6 per weekday; ranges of one day may touch but not overlap. A weekday without
    /// ranges is a day off.
    ranges: Vec<WorkingRange>,
}

impl WorkingHoursDocument {
    fn of(hours: &WeeklyHours) -> Self {
        let ranges = store::WEEK
            .into_iter()
            .flat_map(|day| {
                hours.ranges(day).iter().map(move |r| WorkingRange {
                    weekday: store::weekday_name(day).to_owned(),
                    start: store::hh_mm(r.start),
                    end: store::hh_mm(r.end),
                })
            })
            .collect();
        Self { time_zone: hours.time_zone().to_owned(), ranges }
    }
}

/// `POST /api/v1/therapists/{id}/absences` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAbsenceRequest {
    /// RFC 3339.
    #[schema(format = DateTime)]
    start: String,
    /// RFC 3339, after `start`.
    #[schema(format = DateTime)]
    end: String,
}

/// An absence. There is deliberately no reason field.
#[derive(Debug, Serialize, ToSchema)]
pub struct AbsenceView {
    id: Uuid,
    therapist_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    end: OffsetDateTime,
    /// Only when created: active appointments of the therapist during the absence, to rebook.
    #[serde(skip_serializing_if = "Option::is_none")]
    overlapping_appointments: Option<Vec<Uuid>>,
}

impl AbsenceView {
    fn of(row: &AbsenceRow) -> Self {
        Self {
            id: row.id,
            therapist_id: *row.therapist.as_uuid(),
            start: row.absence.start(),
            end: row.absence.end(),
            overlapping_appointments: None,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AbsenceListQuery {
    /// RFC 3339; default now.
    from: Option<String>,
    /// RFC 3339; default 90 days after `from`; at most 366 days after it.
    to: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityQuery {
    /// RFC 3339, start of the searched range.
    from: String,
    /// RFC 3339, end of the searched range (at most 31 days after `from`).
    to: String,
    /// Length of the wanted appointment in minutes; default 60.
    length_minutes: Option<u32>,
    /// Distance between candidate starts in minutes, counted from the start of each working
    /// stretch; default 30.
    step_minutes: Option<u32>,
    /// At most this many slots (1 to 1000; default 200).
    limit: Option<u32>,
}

/// A free slot.
#[derive(Debug, Serialize, ToSchema)]
pub struct FreeSlot {
    #[serde(with = "time::serde::rfc3339")]
    start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    end: OffsetDateTime,
}

/// Free slots of a therapist.
#[derive(Debug, Serialize, ToSchema)]
pub struct Availability {
    therapist_id: Uuid,
    /// The therapist's time zone; null when no working hours are set (then nothing is free).
    time_zone: Option<String>,
    slots: Vec<FreeSlot>,
}

fn therapist_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse::<Uuid>().map(UserId::from_uuid).map_err(|_| ApiError::NotFound)
}

/// `calendar.manage` for this therapist: practice-wide, or "own" for the therapist themself
/// (403, audited, otherwise).
async fn require_manage(state: &AppState, principal: &Principal, therapist: UserId) -> Result<(), ApiError> {
    let scope = principal.require_audited(state, Permission::CalendarManage, "calendar").await?;
    if scope == Scope::Own && principal.user != Some(therapist) {
        let event =
            AuditEvent::new(principal.tenant, principal.actor.clone(), Action::AccessDenied, "calendar", &*state.clock)
                .with_outcome(Outcome::Denied)
                .with_detail(json!({ "permission": Permission::CalendarManage.as_str(), "scope": "own" }));
        crate::auth::append_audit(state, &principal.db_context(), with_request(event)).await?;
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

fn calendar_event(state: &AppState, principal: &Principal, resource_type: &str, resource_id: String) -> AuditEvent {
    let event = AuditEvent::new(
        principal.tenant,
        principal.actor.clone(),
        Action::CalendarUpdate,
        resource_type,
        &*state.clock,
    )
    .with_resource_id(resource_id);
    with_request(event)
}

#[utoipa::path(put, path = "/api/v1/therapists/{id}/working-hours", tag = "calendar",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "The therapist's user id")),
    request_body = WorkingHoursDocument,
    responses(
        (status = 200, description = "Replaced (existing bookings stay); audited as `calendar.update`", body = WorkingHoursDocument),
        (status = 400, description = "Malformed body or invalid hours (`time_zone`, `ranges` named)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such therapist", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn put_working_hours(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<WorkingHoursDocument>,
) -> Result<HttpResponse, ApiError> {
    let therapist = therapist_id(&path)?;
    require_manage(&state, &principal, therapist).await?;
    let document = body.into_inner();
    let mut ranges = Vec::with_capacity(document.ranges.len());
    for (index, range) in document.ranges.iter().enumerate() {
        let weekday = parse_weekday(&range.weekday)
            .ok_or_else(|| invalid("ranges", format!("range {index}: weekday must be monday ... sunday")))?;
        let start = parse_hh_mm(&range.start)
            .ok_or_else(|| invalid("ranges", format!("range {index}: start must be HH:MM")))?;
        let end =
            parse_hh_mm(&range.end).ok_or_else(|| invalid("ranges", format!("range {index}: end must be HH:MM")))?;
        ranges.push((weekday, TimeRange { start, end }));
    }
    let hours = WeeklyHours::new(&document.time_zone, ranges).map_err(|e| match e.field() {
        "weekly_hours" => invalid("ranges", e.to_string()),
        _ => invalid_input(&e),
    })?;
    let now = state.clock.now();
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    ensure_therapist(&mut tx, principal.tenant, therapist).await?;
    store::put_working_hours(&mut tx, principal.tenant, therapist, &hours, now).await?;
    let event = calendar_event(&state, &principal, "working_hours", therapist.to_string())
        .with_detail(json!({ "time_zone": hours.time_zone(), "ranges": store::ranges_json(&hours) }));
    store_postgres::audit::append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(WorkingHoursDocument::of(&hours)))
}

#[utoipa::path(get, path = "/api/v1/therapists/{id}/working-hours", tag = "calendar",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "The therapist's user id")),
    responses(
        (status = 200, description = "The therapist's weekly hours", body = WorkingHoursDocument),
        (status = 404, description = "No such therapist, or no hours set", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn get_working_hours(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::AppointmentRead, "calendar").await?;
    let therapist = therapist_id(&path)?;
    let mut tx = store_postgres::begin(&state.db, &calendar_context(principal.tenant)).await?;
    ensure_therapist(&mut tx, principal.tenant, therapist).await?;
    let hours = store::working_hours(&mut tx, principal.tenant, therapist).await?;
    tx.commit().await?;
    let (hours, _) = hours.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(WorkingHoursDocument::of(&hours)))
}

#[utoipa::path(post, path = "/api/v1/therapists/{id}/absences", tag = "calendar",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "The therapist's user id")),
    request_body = NewAbsenceRequest,
    responses(
        (status = 201, description = "Recorded; bookings during it are refused from now on, existing ones are listed to rebook; audited as `calendar.update`", body = AbsenceView),
        (status = 400, description = "Malformed body or invalid times (named)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such therapist", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn create_absence(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<NewAbsenceRequest>,
) -> Result<HttpResponse, ApiError> {
    let therapist = therapist_id(&path)?;
    require_manage(&state, &principal, therapist).await?;
    let start = parse_instant("start", &body.start)?;
    let end = parse_instant("end", &body.end)?;
    let absence = Absence::new(start, end).map_err(|e| invalid_input(&e))?;
    if absence.as_slot().duration() > Duration::days(366) {
        return Err(invalid("end", "an absence may last at most 366 days"));
    }
    let now = state.clock.now();
    let row = AbsenceRow { id: Uuid::now_v7(), therapist, absence, created_at: now };
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    ensure_therapist(&mut tx, principal.tenant, therapist).await?;
    store::insert_absence(&mut tx, principal.tenant, &row).await?;
    let overlapping: Vec<Uuid> = store::busy_slots(&mut tx, principal.tenant, therapist, start, end, None)
        .await?
        .iter()
        .map(|b| b.appointment)
        .collect();
    let event = calendar_event(&state, &principal, "absence", row.id.to_string()).with_detail(json!({
        "therapist_id": therapist.to_string(),
        "action": "create",
        "overlapping_appointments": overlapping.len(),
    }));
    store_postgres::audit::append(&mut tx, event).await?;
    tx.commit().await?;
    let mut view = AbsenceView::of(&row);
    view.overlapping_appointments = Some(overlapping);
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/therapists/{therapist}/absences/{}", row.id)))
        .json(view))
}

#[utoipa::path(get, path = "/api/v1/therapists/{id}/absences", tag = "calendar",
    security(("session_cookie" = []), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "The therapist's user id"), AbsenceListQuery),
    responses(
        (status = 200, description = "Absences overlapping the range (staff who manage the calendar, and the therapist themself; never patients)", body = Vec<AbsenceView>),
        (status = 400, description = "Invalid range (named)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such therapist", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn list_absences(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<AbsenceListQuery>,
) -> Result<HttpResponse, ApiError> {
    let therapist = therapist_id(&path)?;
    require_manage(&state, &principal, therapist).await?;
    let from = match &query.from {
        Some(text) => parse_instant("from", text)?,
        None => state.clock.now(),
    };
    let to = match &query.to {
        Some(text) => parse_instant("to", text)?,
        None => from + Duration::days(90),
    };
    if to <= from {
        return Err(invalid("to", "must be after from"));
    }
    if to - from > Duration::days(366) {
        return Err(invalid("to", "at most 366 days after from"));
    }
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    ensure_therapist(&mut tx, principal.tenant, therapist).await?;
    let rows = store::absences(&mut tx, principal.tenant, therapist, from, to).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(rows.iter().map(AbsenceView::of).collect::<Vec<_>>()))
}

#[utoipa::path(delete, path = "/api/v1/therapists/{id}/absences/{absence_id}", tag = "calendar",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The therapist's user id"),
        ("absence_id" = Uuid, Path, description = "The absence's id"),
    ),
    responses(
        (status = 204, description = "Removed; audited as `calendar.update`"),
        (status = 404, description = "No such absence of this therapist", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn delete_absence(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (raw_therapist, raw_absence) = path.into_inner();
    let therapist = therapist_id(&raw_therapist)?;
    require_manage(&state, &principal, therapist).await?;
    let absence: Uuid = raw_absence.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    if !store::delete_absence(&mut tx, principal.tenant, therapist, absence).await? {
        return Err(ApiError::NotFound);
    }
    let event = calendar_event(&state, &principal, "absence", absence.to_string())
        .with_detail(json!({ "therapist_id": therapist.to_string(), "action": "delete" }));
    store_postgres::audit::append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

fn minutes_param(field: &str, value: Option<u32>, default: u32) -> Result<Duration, ApiError> {
    let minutes = value.unwrap_or(default);
    if !(1..=1440).contains(&minutes) {
        return Err(invalid(field, "must be between 1 and 1440 minutes"));
    }
    Ok(Duration::minutes(i64::from(minutes)))
}

#[utoipa::path(get, path = "/api/v1/therapists/{id}/availability", tag = "calendar",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "The therapist's user id"), AvailabilityQuery),
    responses(
        (status = 200, description = "Free slots in the range, not before now: inside working hours, outside absences and bookings (which are not told apart)", body = Availability),
        (status = 400, description = "Invalid range or parameter (named)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such therapist", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn availability(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<AvailabilityQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::AppointmentRead, "calendar").await?;
    let therapist = therapist_id(&path)?;
    let from = parse_instant("from", &query.from)?;
    let to = parse_instant("to", &query.to)?;
    let slot_length = minutes_param("length_minutes", query.length_minutes, 60)?;
    let step = minutes_param("step_minutes", query.step_minutes, 30)?;
    let limit = query.limit.unwrap_or(200);
    if limit == 0 || limit as usize > MAX_FREE_SLOTS {
        return Err(invalid("limit", "must be between 1 and 1000"));
    }
    if to <= from {
        return Err(invalid("to", "must be after from"));
    }
    if to - from > Duration::days(MAX_SEARCH_DAYS) {
        return Err(invalid("to", format!("at most {MAX_SEARCH_DAYS} days after from")));
    }
    // Times only, read in the practice's service context whoever asks (see the module docs).
    let mut tx = store_postgres::begin(&state.db, &calendar_context(principal.tenant)).await?;
    ensure_therapist(&mut tx, principal.tenant, therapist).await?;
    let hours = store::working_hours(&mut tx, principal.tenant, therapist).await?;
    let Some((hours, _)) = hours else {
        tx.commit().await?;
        return Ok(HttpResponse::Ok().json(Availability {
            therapist_id: *therapist.as_uuid(),
            time_zone: None,
            slots: vec![],
        }));
    };
    // Busy spans that could touch a slot: widen by a day so a stretch's grid is anchored right.
    let (wide_from, wide_to) = (from - Duration::days(1), to + Duration::days(1));
    let absences: Vec<Absence> = store::absences(&mut tx, principal.tenant, therapist, wide_from, wide_to)
        .await?
        .iter()
        .map(|a| a.absence)
        .collect();
    let booked: Vec<Slot> = store::busy_slots(&mut tx, principal.tenant, therapist, wide_from, wide_to, None)
        .await?
        .iter()
        .map(|b| b.slot)
        .collect();
    tx.commit().await?;
    let free = free_slots(
        &hours,
        &absences,
        &booked,
        &FreeSlotQuery { from, to, slot_length, step, now: Some(state.clock.now()), limit: limit as usize },
    )
    .map_err(|e| match e.field() {
        "slot_length" => invalid("length_minutes", e.to_string()),
        "step" => invalid("step_minutes", e.to_string()),
        _ => invalid_input(&e),
    })?;
    // Only whole-minute starts are bookable; the grid is whole minutes from whole-minute hours.
    let slots = free.iter().map(|s| FreeSlot { start: s.start(), end: s.end() }).collect();
    Ok(HttpResponse::Ok().json(Availability {
        therapist_id: *therapist.as_uuid(),
        time_zone: Some(hours.time_zone().to_owned()),
        slots,
    }))
}
