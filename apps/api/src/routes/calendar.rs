//! The calendar appointments are booked into: each therapist's weekly working hours and
//! absences, and the free slots that follow from them and the bookings.
//!
//! `calendar.manage` (admins and receptionists for everyone, a therapist for themself) changes
//! hours and absences; changes are audited as `calendar.update`. Working hours are readable by
//! everyone of the practice. Absences are never shown to patients: availability merges them with
//! other bookings into "not free", so a patient sees where they can book and nothing about why
//! other times are taken. The use cases are `app::calendar`.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json_body::JsonBody;
use crate::query_params::QueryParams;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use app::calendar::{AbsenceRow, WorkingRangeInput};
use kernel::UserId;
use scheduling::WeeklyHours;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
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
    #[schema(value_type = crate::openapi::Weekday)]
    weekday: String,
    /// `HH:MM` (24 hours), local time.
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    start: String,
    /// `HH:MM` (24 hours), local time, after `start` (a range cannot cross midnight: split it).
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    end: String,
}

/// `PUT /api/v1/therapists/{id}/working-hours` body, and the answer.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkingHoursDocument {
    /// IANA time zone, e.g. `Europe/Berlin` (DST is handled per date).
    #[schema(value_type = crate::openapi::TimeZone)]
    time_zone: String,
    /// At most 6 per weekday (so at most 42); ranges of one day may touch but not overlap. A
    /// weekday without ranges is a day off.
    #[schema(max_items = 42)]
    ranges: Vec<WorkingRange>,
}

impl WorkingHoursDocument {
    fn of(hours: &WeeklyHours) -> Self {
        let ranges = app::calendar::WEEK
            .into_iter()
            .flat_map(|day| {
                hours.ranges(day).iter().map(move |r| WorkingRange {
                    weekday: app::calendar::weekday_name(day).to_owned(),
                    start: app::calendar::hh_mm(r.start),
                    end: app::calendar::hh_mm(r.end),
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
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339; default 90 days after `from`; at most 366 days after it.
    #[param(format = DateTime)]
    to: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityQuery {
    /// RFC 3339, start of the searched range.
    #[param(format = DateTime)]
    from: String,
    /// RFC 3339, end of the searched range (at most 31 days after `from`).
    #[param(format = DateTime)]
    to: String,
    /// Length of the wanted appointment in minutes (1 to 1440); default 60.
    #[param(minimum = 1, maximum = 1440)]
    length_minutes: Option<u32>,
    /// Distance between candidate starts in minutes (1 to 1440), counted from the start of each
    /// working stretch; default 30.
    #[param(minimum = 1, maximum = 1440)]
    step_minutes: Option<u32>,
    /// At most this many slots (1 to 1000; default 200).
    #[param(minimum = 1, maximum = 1000)]
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

/// Free slots of a therapist
#[derive(Debug, Serialize, ToSchema)]
pub struct Availability {
    therapist_id: Uuid,
    /// The therapist's time zone; null when no working hours are set (then nothing is free).
    #[schema(value_type = Option<crate::openapi::TimeZone>)]
    time_zone: Option<String>,
    slots: Vec<FreeSlot>,
}

/// A path's therapist id; anything but a UUID names no therapist.
fn therapist_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse::<Uuid>().map(UserId::from_uuid).map_err(|_| ApiError::NotFound)
}

/// Set a therapist's working hours
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
    body: JsonBody<WorkingHoursDocument>,
) -> Result<HttpResponse, ApiError> {
    let therapist = therapist_id(&path)?;
    let document = body.into_inner();
    let ranges: Vec<WorkingRangeInput> = document
        .ranges
        .into_iter()
        .map(|r| WorkingRangeInput { weekday: r.weekday, start: r.start, end: r.end })
        .collect();
    let hours = state.app.put_working_hours(&principal.caller(), therapist, &document.time_zone, &ranges).await?;
    Ok(HttpResponse::Ok().json(WorkingHoursDocument::of(&hours)))
}

/// Get a therapist's working hours
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
    let hours = state.app.working_hours(&principal.caller(), therapist_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(WorkingHoursDocument::of(&hours)))
}

/// Record a therapist's absence
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
    body: JsonBody<NewAbsenceRequest>,
) -> Result<HttpResponse, ApiError> {
    let therapist = therapist_id(&path)?;
    let created = state.app.create_absence(&principal.caller(), therapist, &body.start, &body.end).await?;
    let mut view = AbsenceView::of(&created.absence);
    view.overlapping_appointments = Some(created.overlapping_appointments);
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/therapists/{therapist}/absences/{}", created.absence.id)))
        .json(view))
}

/// List a therapist's absences
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
    query: QueryParams<AbsenceListQuery>,
) -> Result<HttpResponse, ApiError> {
    let therapist = therapist_id(&path)?;
    let rows = state.app.absences(&principal.caller(), therapist, query.from.as_deref(), query.to.as_deref()).await?;
    Ok(HttpResponse::Ok().json(rows.iter().map(AbsenceView::of).collect::<Vec<_>>()))
}

/// Delete a therapist's absence
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
    let absence: Uuid = raw_absence.parse().map_err(|_| ApiError::NotFound)?;
    state.app.delete_absence(&principal.caller(), therapist, absence).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Free slots of a therapist
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
    query: QueryParams<AvailabilityQuery>,
) -> Result<HttpResponse, ApiError> {
    let therapist = therapist_id(&path)?;
    let query = query.into_inner();
    let search = app::calendar::AvailabilityQuery {
        from: query.from,
        to: query.to,
        length_minutes: query.length_minutes,
        step_minutes: query.step_minutes,
        limit: query.limit,
    };
    let found = state.app.availability(&principal.caller(), therapist, &search).await?;
    Ok(HttpResponse::Ok().json(Availability {
        therapist_id: *therapist.as_uuid(),
        time_zone: found.time_zone,
        slots: found.slots.iter().map(|s| FreeSlot { start: s.start(), end: s.end() }).collect(),
    }))
}
