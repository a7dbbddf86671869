//! Appointments: book, list, read, move, cancel, and record confirmations and outcomes.
//!
//! The use cases are `app::appointments`: the permission matrix first (`appointment.read`,
//! `appointment.manage`; 403, audited), then row-level security, under which a therapist sees
//! the appointments they conduct and a patient their own; anything else answers 404 like an
//! appointment that does not exist. Double booking is refused by the database's exclusion
//! constraint, working hours and absences before it: both answer 409 `slot-unavailable`. A
//! refused status change answers 409 `illegal-transition` with the allowed ones.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json_body::JsonBody;
use crate::query_params::QueryParams;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use app::appointments::{
    AppointmentDetails, AppointmentEdit, AppointmentFilter, AppointmentRow, NewBooking, ReminderState,
};
use kernel::{PatientId, UserId};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/appointments", web::post().to(create_appointment))
        .route("/api/v1/appointments", web::get().to(list_appointments))
        .route("/api/v1/appointments/{id}", web::get().to(get_appointment))
        .route("/api/v1/appointments/{id}", web::patch().to(update_appointment))
        .route("/api/v1/appointments/{id}/cancel", web::post().to(cancel_appointment))
        .route("/api/v1/appointments/{id}/status", web::post().to(change_status));
}

/// `POST /api/v1/appointments` body. Unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppointmentRequest {
    patient_id: Uuid,
    /// An enabled therapist of the practice (a therapist books only for themself).
    therapist_id: Uuid,
    /// RFC 3339, whole minutes, not before the current minute; stored in UTC.
    #[schema(format = DateTime)]
    start: String,
    /// RFC 3339, whole minutes, after `start`; the duration within the configured bounds.
    #[schema(format = DateTime)]
    end: String,
    #[schema(value_type = crate::openapi::AppointmentKind)]
    kind: String,
    /// Scheduling note (not clinical notes), at most 2,000 characters once trimmed, no control
    /// characters but line breaks and tabs; stored encrypted under the patient's key.
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    notes: Option<String>,
}

/// `PATCH /api/v1/appointments/{id}` body: move (`start` and/or `end`; a lone `start` keeps the
/// duration), change therapist or kind, set or clear (`null`) the notes. Unknown fields are
/// rejected; `status` and `payment_state` with a message saying where they change (the status
/// through `/status` and `/cancel`, the payment state only through verified Stripe events).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentPatch {
    #[schema(format = DateTime)]
    start: Option<String>,
    #[schema(format = DateTime)]
    end: Option<String>,
    therapist_id: Option<Uuid>,
    #[schema(value_type = Option<crate::openapi::AppointmentKind>)]
    kind: Option<String>,
    /// As in booking; `null` clears the notes.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2000, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    notes: Option<Option<String>>,
    /// Not part of the document (an unknown field to clients): read only to refuse it (400)
    /// with a message pointing at `/status` and `/cancel`.
    #[serde(default, deserialize_with = "present")]
    #[schema(ignore)]
    status: Option<Option<serde_json::Value>>,
    /// Not part of the document: read only to refuse it (400), it is set only by verified
    /// Stripe events.
    #[serde(default, deserialize_with = "present")]
    #[schema(ignore)]
    payment_state: Option<Option<serde_json::Value>>,
}

/// Absent stays `None`; present (even `null`) becomes `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `POST /api/v1/appointments/{id}/cancel` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[schema(value_type = crate::openapi::CancelReason)]
    reason: String,
    /// Optional free text, at most 2,000 characters once trimmed, no control characters but line
    /// breaks and tabs; stored encrypted under the patient's key.
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    note: Option<String>,
}

/// `POST /api/v1/appointments/{id}/status` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `confirmed`, `completed` or `no_show` (cancel with `/cancel`). Patients may only confirm.
    #[schema(value_type = crate::openapi::StatusChange)]
    status: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AppointmentListQuery {
    therapist_id: Option<Uuid>,
    patient_id: Option<Uuid>,
    /// RFC 3339: only appointments ending after this.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339: only appointments starting before this.
    #[param(format = DateTime)]
    to: Option<String>,
    /// One status.
    #[param(inline, value_type = Option<crate::openapi::AppointmentStatus>)]
    status: Option<String>,
    /// `next_cursor` of the previous page (opaque).
    cursor: Option<String>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A cancellation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancellationView {
    #[schema(value_type = crate::openapi::CancellationReason)]
    reason: &'static str,
    /// Decrypted; absent in listings; null once the patient was erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    cancelled_at: OffsetDateTime,
}

/// A planned reminder and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReminderView {
    #[serde(with = "time::serde::rfc3339")]
    due_at: OffsetDateTime,
    #[schema(value_type = crate::openapi::ReminderStatus)]
    status: &'static str,
    /// Why it was skipped; null unless `skipped`.
    #[schema(value_type = Option<crate::openapi::ReminderSkipReason>)]
    skip_reason: Option<&'static str>,
    #[schema(value_type = Option<crate::openapi::ReminderChannel>)]
    channel: Option<&'static str>,
    attempts: i32,
}

impl From<&ReminderState> for ReminderView {
    fn from(reminder: &ReminderState) -> Self {
        Self {
            due_at: reminder.due_at,
            status: reminder.status.as_str(),
            skip_reason: reminder.skip_reason.map(|r| r.as_str()),
            channel: reminder.channel.map(|c| c.as_str()),
            attempts: reminder.attempts,
        }
    }
}

/// An appointment. Times are UTC.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentView {
    id: Uuid,
    patient_id: Uuid,
    therapist_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    end: OffsetDateTime,
    #[schema(value_type = crate::openapi::AppointmentKind)]
    kind: &'static str,
    #[schema(value_type = crate::openapi::AppointmentStatus)]
    status: &'static str,
    #[schema(value_type = crate::openapi::PaymentState)]
    payment_state: &'static str,
    has_notes: bool,
    /// Decrypted; only when reading one appointment.
    #[serde(skip_serializing_if = "Option::is_none")]
    notes: Option<String>,
    cancellation: Option<CancellationView>,
    /// Only when reading one appointment.
    #[serde(skip_serializing_if = "Option::is_none")]
    reminders: Option<Vec<ReminderView>>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl AppointmentView {
    fn summary(row: &AppointmentRow) -> Self {
        Self {
            id: row.id,
            patient_id: *row.patient.as_uuid(),
            therapist_id: *row.therapist.as_uuid(),
            start: row.slot.start(),
            end: row.slot.end(),
            kind: row.kind.as_str(),
            status: row.status.as_str(),
            payment_state: row.payment_state.as_str(),
            has_notes: row.notes_enc.is_some(),
            notes: None,
            cancellation: match (row.cancel_reason, row.cancelled_at) {
                (Some(reason), Some(at)) => {
                    Some(CancellationView { reason: reason.as_str(), note: None, cancelled_at: at })
                }
                _ => None,
            },
            reminders: None,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }

    /// The whole view of one appointment: notes opened, reminders listed.
    fn of(details: &AppointmentDetails) -> Self {
        let mut view = Self::summary(&details.appointment);
        view.notes = details.notes.clone();
        if let Some(cancellation) = view.cancellation.as_mut() {
            cancellation.note = details.cancel_note.clone();
        }
        view.reminders = Some(details.reminders.iter().map(ReminderView::from).collect());
        view
    }
}

/// A page of appointments in time order.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentPage {
    appointments: Vec<AppointmentView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// An appointment of the GDPR export: everything stored, notes opened, reminders listed.
pub fn export_view(details: &AppointmentDetails) -> AppointmentView {
    AppointmentView::of(details)
}

/// A path's appointment id; anything but a UUID names no appointment.
fn appointment_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse::<Uuid>().map_err(|_| ApiError::NotFound)
}

/// Book an appointment
#[utoipa::path(post, path = "/api/v1/appointments", tag = "appointments",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = []), ("api_key" = [])),
    request_body = NewAppointmentRequest,
    responses(
        (status = 201, description = "Booked (`scheduled`); reminders planned; audited as `appointment.create`", body = AppointmentView),
        (status = 400, description = "Malformed body or invalid field (`validation-failed` names it: `start`, `end`, `kind`, `notes`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient or therapist, or not one the caller may book for", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`slot-unavailable`: outside working hours, during an absence, or overlapping another booking (`reason`, and for staff `conflicting_slot`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn create_appointment(
    state: web::Data<AppState>,
    principal: Principal,
    body: JsonBody<NewAppointmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let booking = NewBooking {
        patient: PatientId::from_uuid(request.patient_id),
        therapist: UserId::from_uuid(request.therapist_id),
        start: request.start,
        end: request.end,
        kind: request.kind,
        notes: request.notes,
    };
    let booked = state.app.book_appointment(&principal.caller(), booking).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/appointments/{}", booked.appointment.id)))
        .json(AppointmentView::of(&booked)))
}

/// List appointments
#[utoipa::path(get, path = "/api/v1/appointments", tag = "appointments",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(AppointmentListQuery),
    responses(
        (status = 200, description = "Appointments the caller may see (a therapist: those they conduct; a patient: their own), in time order; notes are not decrypted here", body = AppointmentPage),
        (status = 400, description = "Unknown parameter or invalid value (named)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn list_appointments(
    state: web::Data<AppState>,
    principal: Principal,
    query: QueryParams<AppointmentListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = AppointmentFilter {
        therapist: query.therapist_id.map(UserId::from_uuid),
        patient: query.patient_id.map(PatientId::from_uuid),
        from: query.from,
        to: query.to,
        status: query.status,
        cursor: query.cursor,
        limit: query.limit,
    };
    let page = state.app.list_appointments(&principal.caller(), &filter).await?;
    Ok(HttpResponse::Ok().json(AppointmentPage {
        appointments: page.appointments.iter().map(AppointmentView::summary).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get an appointment
#[utoipa::path(get, path = "/api/v1/appointments/{id}", tag = "appointments",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "The appointment's id")),
    responses(
        (status = 200, description = "The appointment with its notes decrypted and its reminders", body = AppointmentView),
        (status = 404, description = "No such appointment, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn get_appointment(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let details = state.app.appointment(&principal.caller(), appointment_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(AppointmentView::of(&details)))
}

/// Move or edit an appointment
#[utoipa::path(patch, path = "/api/v1/appointments/{id}", tag = "appointments",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "The appointment's id")),
    request_body = AppointmentPatch,
    responses(
        (status = 200, description = "Changed; a move replans the reminders (the old ones are skipped as `appointment_moved`); audited as `appointment.update`", body = AppointmentView),
        (status = 400, description = "Malformed body, unknown or invalid field (named; `status` and `payment_state` are refused with where they change)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`slot-unavailable` for the new time, or `conflict`: the appointment is completed, cancelled or a no-show, was moved by someone else since it was read, or (a patient moving it) has started", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn update_appointment(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: JsonBody<AppointmentPatch>,
) -> Result<HttpResponse, ApiError> {
    let id = appointment_id(&path)?;
    let patch = body.into_inner();
    let edit = AppointmentEdit {
        start: patch.start,
        end: patch.end,
        therapist: patch.therapist_id.map(UserId::from_uuid),
        kind: patch.kind,
        notes: patch.notes,
        sets_status: patch.status.is_some(),
        sets_payment_state: patch.payment_state.is_some(),
    };
    let details = state.app.edit_appointment(&principal.caller(), id, edit).await?;
    Ok(HttpResponse::Ok().json(AppointmentView::of(&details)))
}

/// Cancel an appointment
#[utoipa::path(post, path = "/api/v1/appointments/{id}/cancel", tag = "appointments",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "The appointment's id")),
    request_body = CancelRequest,
    responses(
        (status = 200, description = "Cancelled; the slot is free again, pending reminders are skipped as `appointment_cancelled`; audited as `appointment.cancel`", body = AppointmentView),
        (status = 400, description = "Malformed body or invalid field (`reason`, `note`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`illegal-transition`: already completed, cancelled or a no-show (`allowed` lists what is possible); `conflict`: a patient cancelling an appointment that has started, or a concurrent change", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn cancel_appointment(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: JsonBody<CancelRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = appointment_id(&path)?;
    let request = body.into_inner();
    let details = state.app.cancel_appointment(&principal.caller(), id, &request.reason, request.note).await?;
    Ok(HttpResponse::Ok().json(AppointmentView::of(&details)))
}

/// Change an appointment's status
#[utoipa::path(post, path = "/api/v1/appointments/{id}/status", tag = "appointments",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "The appointment's id")),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "Changed; audited as `appointment.update`", body = AppointmentView),
        (status = 400, description = "Malformed body, unknown status, or `cancelled` (use `/cancel`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`illegal-transition`: not an edge of `scheduled -> confirmed -> completed | cancelled | no_show`, or an outcome before the start; `allowed` lists what is possible now", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn change_status(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: JsonBody<StatusRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = appointment_id(&path)?;
    let details = state.app.change_appointment_status(&principal.caller(), id, &body.status).await?;
    Ok(HttpResponse::Ok().json(AppointmentView::of(&details)))
}
