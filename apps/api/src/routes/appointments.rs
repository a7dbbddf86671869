//! Appointments: book, list, read, move, cancel, and record confirmations and outcomes.
//!
//! Authorization happens twice, as for patients: the permission matrix first
//! (`appointment.read`, `appointment.manage`; 403, audited), then row-level security, under
//! which a therapist sees the appointments they conduct and a patient their own; anything else
//! answers 404 like an appointment that does not exist. Within "own", the API also checks that a
//! therapist books and moves appointments only for themself, and that a patient only confirms or
//! cancels (outcomes are recorded by staff).
//!
//! Double booking is refused by the database (the exclusion constraint over therapist and time
//! on active appointments): of two racing bookings for overlapping times exactly one commits,
//! the other answers 409 `slot-unavailable`. Working hours and absences are checked before
//! (`crate::appointments::check_calendar`). Every create, change and cancellation writes an
//! audit entry in its own transaction; reminders are planned, replanned and dropped in it too.

use crate::appointments::{
    self as support, Audience, SlotRefusal, check_calendar, check_instant_range, conflicting_slot, invalid,
    invalid_input, note_text, parse_instant, parse_kind,
};
use crate::auth::{Principal, with_request};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use app::protection::{AppointmentNote, SealingKey, seal_note};
use audit::{Action, AuditEvent, Outcome};
use identity::{Permission, Scope};
use kernel::{PatientId, Role, UserId};
use scheduling::{AppointmentStatus, ReminderSkipReason, SchedulingError, Slot, plan_reminders};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use store_postgres::appointments::{
    self as store, AppointmentChange, AppointmentCursor, AppointmentQuery, AppointmentRow, BookingWriteError,
    CancelReason, NewAppointment, ReminderRow,
};
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

/// How often a booking transaction is retried after losing a lock race (a deadlock Postgres
/// broke between racing inserts); the retry then meets the winner's committed row.
const MAX_ATTEMPTS: usize = 5;

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
    /// `initial_consultation`, `therapy_session`, `follow_up`, `group_session` or `video_session`.
    kind: String,
    /// Scheduling note (not clinical notes), at most 2,000 characters; stored encrypted under the
    /// patient's key.
    notes: Option<String>,
}

/// `PATCH /api/v1/appointments/{id}` body: move (`start` and/or `end`; a lone `start` keeps the
/// duration), change therapist or kind, set or clear (`null`) the notes. `status` and
/// `payment_state` are refused by name: the status changes through `/status` and `/cancel`,
/// the payment state only through verified Stripe events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentPatch {
    #[schema(format = DateTime)]
    start: Option<String>,
    #[schema(format = DateTime)]
    end: Option<String>,
    therapist_id: Option<Uuid>,
    kind: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    notes: Option<Option<String>>,
    /// Refused (400): use `POST /api/v1/appointments/{id}/status` or `/cancel`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    status: Option<Option<serde_json::Value>>,
    /// Refused (400): set only by verified Stripe events.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
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
    /// `patient_request`, `therapist_unavailable`, `practice_closed`, `no_longer_needed`,
    /// `rescheduled` or `other`.
    reason: String,
    /// Optional free text, at most 2,000 characters; stored encrypted under the patient's key.
    note: Option<String>,
}

/// `POST /api/v1/appointments/{id}/status` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `confirmed`, `completed` or `no_show` (cancel with `/cancel`). Patients may only confirm.
    status: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AppointmentListQuery {
    therapist_id: Option<Uuid>,
    patient_id: Option<Uuid>,
    /// RFC 3339: only appointments ending after this.
    from: Option<String>,
    /// RFC 3339: only appointments starting before this.
    to: Option<String>,
    /// One status.
    status: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A cancellation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancellationView {
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
    /// `pending`, `sent`, `skipped` or `failed`.
    status: &'static str,
    /// Why it was skipped: `no_consent`, `appointment_cancelled`, `appointment_moved`,
    /// `patient_erased`, `no_contact_channel` or `too_late`.
    skip_reason: Option<&'static str>,
    channel: Option<&'static str>,
    attempts: i32,
}

impl From<&ReminderRow> for ReminderView {
    fn from(row: &ReminderRow) -> Self {
        Self {
            due_at: row.due_at,
            status: row.status.as_str(),
            skip_reason: row.skip_reason.map(|r| r.as_str()),
            channel: row.channel.map(|c| c.as_str()),
            attempts: row.attempts,
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
    kind: &'static str,
    /// `scheduled`, `confirmed`, `completed`, `cancelled` or `no_show`.
    status: &'static str,
    /// `unpaid`, `failed`, `paid` or `refunded`; set only by verified Stripe events.
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
}

/// A page of appointments in time order.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentPage {
    appointments: Vec<AppointmentView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The whole view of one appointment: notes decrypted, reminders listed.
async fn full_view(
    state: &AppState,
    conn: &mut PgConnection,
    principal: &Principal,
    row: &AppointmentRow,
) -> Result<AppointmentView, ApiError> {
    let mut view = AppointmentView::summary(row);
    if let Some(ciphertext) = &row.notes_enc {
        view.notes =
            state.app.open_note(conn, &principal.caller(), row.id, AppointmentNote::Booking, ciphertext).await?;
    }
    if let (Some(cancellation), Some(ciphertext)) = (view.cancellation.as_mut(), &row.cancel_note_enc) {
        cancellation.note =
            state.app.open_note(conn, &principal.caller(), row.id, AppointmentNote::Cancellation, ciphertext).await?;
    }
    let reminders = store::reminders_of(conn, row.tenant, row.id).await?;
    view.reminders = Some(reminders.iter().map(ReminderView::from).collect());
    Ok(view)
}

fn appointment_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse::<Uuid>().map_err(|_| ApiError::NotFound)
}

fn audience(principal: &Principal) -> Audience {
    if principal.role == Some(Role::Patient) { Audience::Patient } else { Audience::Staff }
}

/// A 403 for an "own" caller acting outside what it owns, audited like a refused permission.
async fn deny(state: &AppState, principal: &Principal, permission: Permission) -> ApiError {
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::AccessDenied, "appointment", &*state.clock)
            .with_outcome(Outcome::Denied)
            .with_detail(json!({ "permission": permission.as_str(), "scope": "own" }));
    match crate::auth::append_audit(state, &principal.db_context(), with_request(event)).await {
        Ok(()) => ApiError::Forbidden,
        Err(error) => error,
    }
}

/// A therapist with only "own" scope may book and move only their own appointments.
async fn check_own_therapist(
    state: &AppState,
    principal: &Principal,
    scope: Scope,
    therapist: UserId,
) -> Result<(), ApiError> {
    if scope == Scope::Own && principal.role == Some(Role::Therapist) && principal.user != Some(therapist) {
        return Err(deny(state, principal, Permission::AppointmentManage).await);
    }
    Ok(())
}

/// How a transaction attempt of a booking write ended, short of success.
enum Attempt {
    Failed(ApiError),
    Overlap,
    Contention,
}

impl From<ApiError> for Attempt {
    fn from(error: ApiError) -> Self {
        Attempt::Failed(error)
    }
}

impl From<store_postgres::StoreError> for Attempt {
    fn from(error: store_postgres::StoreError) -> Self {
        Attempt::Failed(error.into())
    }
}

impl From<store_postgres::AuditStoreError> for Attempt {
    fn from(error: store_postgres::AuditStoreError) -> Self {
        Attempt::Failed(error.into())
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(error: sqlx::Error) -> Self {
        Attempt::Failed(error.into())
    }
}

impl From<BookingWriteError> for Attempt {
    fn from(error: BookingWriteError) -> Self {
        match error {
            BookingWriteError::Overlap => Attempt::Overlap,
            BookingWriteError::Contention => Attempt::Contention,
            BookingWriteError::Store(store) => Attempt::Failed(store.into()),
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has lost [`MAX_ATTEMPTS`] lock races;
/// an overlap becomes the 409 naming the conflicting slot (as far as the caller may know it).
async fn with_retries<T, F, Fut>(
    state: &AppState,
    principal: &Principal,
    therapist: UserId,
    slot: Slot,
    except: Option<Uuid>,
    mut attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    for round in 1..=MAX_ATTEMPTS {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Attempt::Failed(error)) => return Err(error),
            Err(Attempt::Contention) if round < MAX_ATTEMPTS => {
                tracing::debug!(round, "booking lost a lock race; retrying");
            }
            Err(Attempt::Contention) => {
                return Err(ApiError::ServiceUnavailable {
                    detail: "The calendar is busy with concurrent changes; try again.".into(),
                });
            }
            Err(Attempt::Overlap) => {
                let taken = conflicting_slot(state, principal.tenant, therapist, &slot, except).await?;
                return Err(SlotRefusal::Taken(taken).to_error(audience(principal)));
            }
        }
    }
    Err(ApiError::internal(anyhow::anyhow!("booking retry loop ended without an outcome")))
}

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
    body: web::Json<NewAppointmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let scope = principal.require_audited(&state, Permission::AppointmentManage, "appointment").await?;
    let request = body.into_inner();
    let now = state.clock.now();
    let start = parse_instant("start", &request.start)?;
    let end = parse_instant("end", &request.end)?;
    let kind = parse_kind(&request.kind)?;
    let notes = note_text("notes", request.notes)?;
    let slot = support::booking_policy(&state)?.validate_booking(start, end, now).map_err(|e| invalid_input(&e))?;
    let therapist = UserId::from_uuid(request.therapist_id);
    let patient = PatientId::from_uuid(request.patient_id);
    check_own_therapist(&state, &principal, scope, therapist).await?;
    if let Err(refusal) = check_calendar(&state, principal.tenant, therapist, &slot).await? {
        return Err(refusal.to_error(audience(&principal)));
    }
    let planned = plan_reminders(slot.start(), now, &support::reminder_policy(&state)?);
    let id = Uuid::now_v7();
    let state_ref = &state;
    let principal_ref = &principal;
    let notes_ref = &notes;
    let planned_ref = &planned;
    let row = with_retries(&state, &principal, therapist, slot, None, || async move {
        let state = state_ref;
        let principal = principal_ref;
        let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
        let patient_row = crate::routes::patients::live_patient(&mut tx, principal, patient, false).await?;
        let notes_enc = match notes_ref {
            Some(text) => {
                let key = SealingKey {
                    dek: state
                        .app
                        .patient_dek(&mut tx, &principal.caller(), &patient_row)
                        .await
                        .map_err(ApiError::from)?,
                    wrapped: app::protection::wrapped_of(&patient_row).map_err(ApiError::from)?,
                    generation: patient_row.dek_generation,
                };
                Some(
                    seal_note(&key, principal.tenant, patient, id, AppointmentNote::Booking, text)
                        .map_err(ApiError::from)?,
                )
            }
            None => None,
        };
        let new =
            NewAppointment { id, tenant: principal.tenant, patient, therapist, slot, kind, notes_enc, created_at: now };
        // The audit entry first: appending locks the practice's chain head until commit, so
        // racing bookings queue there instead of deadlocking on each other's exclusion checks.
        let event = AuditEvent::new(
            principal.tenant,
            principal.actor.clone(),
            Action::AppointmentCreate,
            "appointment",
            &*state.clock,
        )
        .with_resource_id(id.to_string())
        .with_detail(json!({
            "patient_id": patient.to_string(),
            "therapist_id": therapist.to_string(),
            "start": format_time(slot.start()),
            "end": format_time(slot.end()),
            "kind": kind.as_str(),
            "reminders_planned": planned_ref.len(),
        }));
        store_postgres::audit::append(&mut tx, with_request(event)).await?;
        store::insert(&mut tx, &new).await?;
        store::insert_reminders(&mut tx, principal.tenant, id, slot.start(), planned_ref, now).await?;
        let row = store::get(&mut tx, principal.tenant, id, false).await?.ok_or(ApiError::NotFound)?;
        tx.commit().await?;
        Ok(row)
    })
    .await?;
    let mut view = AppointmentView::summary(&row);
    view.notes = notes;
    view.reminders = Some(
        planned
            .iter()
            .map(|p| ReminderView {
                due_at: p.due_at,
                status: "pending",
                skip_reason: None,
                channel: None,
                attempts: 0,
            })
            .collect(),
    );
    Ok(HttpResponse::Created().insert_header(("Location", format!("/api/v1/appointments/{id}"))).json(view))
}

fn format_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn parse_cursor(raw: &str) -> Result<AppointmentCursor, ApiError> {
    let bad = || invalid("cursor", "must be a next_cursor from a previous page");
    let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
    let micros: i128 = micros.parse().map_err(|_| bad())?;
    let start =
        OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1000).ok_or_else(bad)?).map_err(|_| bad())?;
    let start = check_instant_range("cursor", start).map_err(|_| bad())?;
    Ok(AppointmentCursor { start, id: id.parse().map_err(|_| bad())? })
}

fn cursor_of(row: &AppointmentRow) -> String {
    format!("{}_{}", row.slot.start().unix_timestamp_nanos() / 1000, row.id)
}

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
    query: web::Query<AppointmentListQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::AppointmentRead, "appointment").await?;
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 100"));
    }
    let filter = AppointmentQuery {
        therapist: query.therapist_id.map(UserId::from_uuid),
        patient: query.patient_id.map(PatientId::from_uuid),
        from: query.from.as_deref().map(|t| parse_instant("from", t)).transpose()?,
        to: query.to.as_deref().map(|t| parse_instant("to", t)).transpose()?,
        status: query
            .status
            .as_deref()
            .map(|s| s.parse::<AppointmentStatus>().map_err(|e| invalid_input(&e)))
            .transpose()?,
    };
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && to <= from
    {
        return Err(invalid("to", "must be after from"));
    }
    let after = query.cursor.as_deref().map(parse_cursor).transpose()?;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let rows = store::list(&mut tx, principal.tenant, &filter, after, limit).await?;
    tx.commit().await?;
    let next_cursor = (rows.len() == limit as usize).then(|| rows.last().map(cursor_of)).flatten();
    Ok(HttpResponse::Ok()
        .json(AppointmentPage { appointments: rows.iter().map(AppointmentView::summary).collect(), next_cursor }))
}

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
    principal.require_audited(&state, Permission::AppointmentRead, "appointment").await?;
    let id = appointment_id(&path)?;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let row = store::get(&mut tx, principal.tenant, id, false).await?.ok_or(ApiError::NotFound)?;
    let view = full_view(&state, &mut tx, &principal, &row).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(view))
}

/// A final appointment cannot be changed: 409 naming its status.
fn refuse_final(row: &AppointmentRow) -> ApiError {
    ApiError::Conflict { detail: format!("A {} appointment cannot be changed.", row.status) }
}

#[utoipa::path(patch, path = "/api/v1/appointments/{id}", tag = "appointments",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "The appointment's id")),
    request_body = AppointmentPatch,
    responses(
        (status = 200, description = "Changed; a move replans the reminders (the old ones are skipped as `appointment_moved`); audited as `appointment.update`", body = AppointmentView),
        (status = 400, description = "Malformed body, invalid field, or `status`/`payment_state` given (named)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`slot-unavailable` for the new time, or `conflict`: the appointment is completed, cancelled or a no-show, was moved by someone else since it was read, or (a patient moving it) has started", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn update_appointment(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<AppointmentPatch>,
) -> Result<HttpResponse, ApiError> {
    let scope = principal.require_audited(&state, Permission::AppointmentManage, "appointment").await?;
    let id = appointment_id(&path)?;
    let patch = body.into_inner();
    if patch.payment_state.is_some() {
        return Err(invalid("payment_state", "is set only by verified payment events, never by a client"));
    }
    if patch.status.is_some() {
        return Err(invalid("status", "changes through POST /api/v1/appointments/{id}/status or /cancel"));
    }
    if patch.start.is_none()
        && patch.end.is_none()
        && patch.therapist_id.is_none()
        && patch.kind.is_none()
        && patch.notes.is_none()
    {
        return Err(invalid("body", "nothing to change"));
    }
    let new_start = patch.start.as_deref().map(|t| parse_instant("start", t)).transpose()?;
    let new_end = patch.end.as_deref().map(|t| parse_instant("end", t)).transpose()?;
    let new_kind = patch.kind.as_deref().map(parse_kind).transpose()?;
    let new_notes = patch.notes.map(|n| note_text("notes", n)).transpose()?;
    let now = state.clock.now();

    // Read the appointment as it is, to work out the new slot and check the calendar first.
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let current = store::get(&mut tx, principal.tenant, id, false).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    if current.status.is_final() {
        return Err(refuse_final(&current));
    }
    let therapist = patch.therapist_id.map(UserId::from_uuid).unwrap_or(current.therapist);
    check_own_therapist(&state, &principal, scope, therapist).await?;
    let moved = new_start.is_some() || new_end.is_some();
    let slot = if moved {
        let start = new_start.unwrap_or(current.slot.start());
        let end = new_end.unwrap_or_else(|| start + current.slot.duration());
        support::booking_policy(&state)?.validate_booking(start, end, now).map_err(|e| invalid_input(&e))?
    } else {
        current.slot
    };
    let rebook = moved || therapist != current.therapist;
    if rebook && let Err(refusal) = check_calendar(&state, principal.tenant, therapist, &slot).await? {
        return Err(refusal.to_error(audience(&principal)));
    }
    let planned = if slot.start() != current.slot.start() {
        Some(plan_reminders(slot.start(), now, &support::reminder_policy(&state)?))
    } else {
        None
    };
    let mut changed: Vec<&str> = Vec::new();
    if slot.start() != current.slot.start() {
        changed.push("start");
    }
    if slot.end() != current.slot.end() {
        changed.push("end");
    }
    if therapist != current.therapist {
        changed.push("therapist_id");
    }
    if new_kind.is_some_and(|k| k != current.kind) {
        changed.push("kind");
    }
    if new_notes.is_some() {
        changed.push("notes");
    }
    let (state_ref, principal_ref, planned_ref, notes_ref, changed_ref, current_ref, moved_ref) =
        (&state, &principal, &planned, &new_notes, &changed, &current, rebook);
    let view = with_retries(&state, &principal, therapist, slot, Some(id), || async move {
        let (state, principal) = (state_ref, principal_ref);
        let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
        let row = store::get(&mut tx, principal.tenant, id, true).await?.ok_or(ApiError::NotFound)?;
        if row.status.is_final() {
            return Err(Attempt::Failed(refuse_final(&row)));
        }
        // The slot and therapist written below were worked out from `current`, read before
        // this lock: had someone moved the appointment in between, writing them would silently
        // undo that move (and leave its reminders stale).
        if moved_ref {
            refuse_patient_after_start(principal, &row, now).map_err(Attempt::Failed)?;
        }
        if row.slot != current_ref.slot || row.therapist != current_ref.therapist {
            return Err(Attempt::Failed(ApiError::Conflict {
                detail: "The appointment was changed by someone else meanwhile; read it again and retry.".into(),
            }));
        }
        let notes_enc = match notes_ref {
            None => row.notes_enc.clone(),
            Some(None) => None,
            Some(Some(text)) => {
                let key = state
                    .app
                    .sealing_key(&mut tx, &principal.caller(), row.patient)
                    .await
                    .map_err(ApiError::from)?
                    .ok_or(ApiError::Gone)?;
                Some(
                    seal_note(&key, principal.tenant, row.patient, id, AppointmentNote::Booking, text)
                        .map_err(ApiError::from)?,
                )
            }
        };
        let change = AppointmentChange { therapist, slot, kind: new_kind.unwrap_or(row.kind), notes_enc };
        // The audit entry first (it locks the practice's chain head), as for a new booking.
        let event = AuditEvent::new(
            principal.tenant,
            principal.actor.clone(),
            Action::AppointmentUpdate,
            "appointment",
            &*state.clock,
        )
        .with_resource_id(id.to_string())
        .with_detail(json!({
            "fields": changed_ref,
            "start": format_time(slot.start()),
            "end": format_time(slot.end()),
            "therapist_id": therapist.to_string(),
            "reminders_replanned": planned_ref.as_ref().map(Vec::len),
        }));
        store_postgres::audit::append(&mut tx, with_request(event)).await?;
        if !store::reschedule(&mut tx, principal.tenant, id, &change, now).await? {
            return Err(Attempt::Failed(ApiError::NotFound));
        }
        if let Some(planned) = planned_ref {
            store::skip_pending_reminders(&mut tx, principal.tenant, id, ReminderSkipReason::AppointmentMoved, now)
                .await?;
            store::insert_reminders(&mut tx, principal.tenant, id, slot.start(), planned, now).await?;
        }
        let row = store::get(&mut tx, principal.tenant, id, false).await?.ok_or(ApiError::NotFound)?;
        let view = full_view(state, &mut tx, principal, &row).await?;
        tx.commit().await?;
        Ok(view)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

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
    body: web::Json<CancelRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::AppointmentManage, "appointment").await?;
    let id = appointment_id(&path)?;
    let request = body.into_inner();
    let reason = CancelReason::parse(&request.reason).filter(|r| *r != CancelReason::PatientErased).ok_or_else(|| {
        invalid(
            "reason",
            "must be one of patient_request, therapist_unavailable, practice_closed, no_longer_needed, rescheduled, other",
        )
    })?;
    let note = note_text("note", request.note)?;
    let now = state.clock.now();
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let row = store::get(&mut tx, principal.tenant, id, true).await?.ok_or(ApiError::NotFound)?;
    row.status
        .transition_at(AppointmentStatus::Cancelled, row.slot.start(), now)
        .map_err(|e| transition_error(&e, &row, now))?;
    refuse_patient_after_start(&principal, &row, now)?;
    let note_enc = match &note {
        Some(text) => {
            let key = state.app.sealing_key(&mut tx, &principal.caller(), row.patient).await?.ok_or(ApiError::Gone)?;
            Some(seal_note(&key, principal.tenant, row.patient, id, AppointmentNote::Cancellation, text)?)
        }
        None => None,
    };
    if !store::cancel(&mut tx, principal.tenant, id, row.status, reason, note_enc.as_deref(), now).await? {
        return Err(ApiError::Conflict { detail: "The appointment changed meanwhile; read it and retry.".into() });
    }
    let skipped =
        store::skip_pending_reminders(&mut tx, principal.tenant, id, ReminderSkipReason::AppointmentCancelled, now)
            .await?;
    let event = AuditEvent::new(
        principal.tenant,
        principal.actor.clone(),
        Action::AppointmentCancel,
        "appointment",
        &*state.clock,
    )
    .with_resource_id(id.to_string())
    .with_detail(json!({
        "reason": reason.as_str(),
        "from": row.status.as_str(),
        "reason_detailed": note.is_some(),
        "reminders_skipped": skipped,
    }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    let row = store::get(&mut tx, principal.tenant, id, false).await?.ok_or(ApiError::NotFound)?;
    let view = full_view(&state, &mut tx, &principal, &row).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(view))
}

/// A patient may cancel or move an appointment only before it starts: afterwards only the
/// practice records what happened (completed, no-show), and a patient's late cancellation
/// must not erase a no-show.
fn refuse_patient_after_start(
    principal: &Principal,
    row: &AppointmentRow,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    if principal.role == Some(Role::Patient) && now >= row.slot.start() {
        return Err(ApiError::Conflict {
            detail: "The appointment has started; please contact the practice to change it.".into(),
        });
    }
    Ok(())
}

/// A refused status change as a 409 listing what is allowed from the current status at `now`.
fn transition_error(error: &SchedulingError, row: &AppointmentRow, now: OffsetDateTime) -> ApiError {
    match error {
        SchedulingError::IllegalTransition { from, to, allowed } => ApiError::IllegalTransition {
            detail: format!("An appointment cannot go from {from} to {to}."),
            allowed: allowed.iter().map(|s| s.as_str().to_owned()).collect(),
        },
        SchedulingError::OutcomeBeforeStart { to } => ApiError::IllegalTransition {
            detail: format!("An appointment cannot be marked {to} before it starts."),
            allowed: row
                .status
                .allowed_transitions()
                .iter()
                .filter(|s| row.status.transition_at(**s, row.slot.start(), now).is_ok())
                .map(|s| s.as_str().to_owned())
                .collect(),
        },
        other => invalid_input(other),
    }
}

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
    body: web::Json<StatusRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::AppointmentManage, "appointment").await?;
    let id = appointment_id(&path)?;
    let to: AppointmentStatus = body.status.parse().map_err(|e| invalid_input(&e))?;
    if to == AppointmentStatus::Cancelled {
        return Err(invalid("status", "cancel with POST /api/v1/appointments/{id}/cancel and a reason"));
    }
    if principal.role == Some(Role::Patient) && to != AppointmentStatus::Confirmed {
        return Err(deny(&state, &principal, Permission::AppointmentManage).await);
    }
    let now = state.clock.now();
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let row = store::get(&mut tx, principal.tenant, id, true).await?.ok_or(ApiError::NotFound)?;
    row.status.transition_at(to, row.slot.start(), now).map_err(|e| transition_error(&e, &row, now))?;
    if !store::set_status(&mut tx, principal.tenant, id, row.status, to, now).await? {
        return Err(ApiError::Conflict { detail: "The appointment changed meanwhile; read it and retry.".into() });
    }
    let event = AuditEvent::new(
        principal.tenant,
        principal.actor.clone(),
        Action::AppointmentUpdate,
        "appointment",
        &*state.clock,
    )
    .with_resource_id(id.to_string())
    .with_detail(json!({ "fields": ["status"], "from": row.status.as_str(), "to": to.as_str() }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    let row = store::get(&mut tx, principal.tenant, id, false).await?.ok_or(ApiError::NotFound)?;
    let view = full_view(&state, &mut tx, &principal, &row).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The patient's appointments for the GDPR export: everything stored, notes decrypted with the
/// patient's keys, and each appointment's reminders (when and on which channel the patient was
/// contacted, or why not).
pub async fn export_of_patient(
    state: &AppState,
    conn: &mut PgConnection,
    principal: &Principal,
    patient: PatientId,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let rows = store::of_patient(conn, principal.tenant, patient).await?;
    let mut documents = Vec::with_capacity(rows.len());
    for row in &rows {
        let view = full_view(state, conn, principal, row).await?;
        documents.push(serde_json::to_value(view).map_err(ApiError::internal)?);
    }
    Ok(documents)
}
