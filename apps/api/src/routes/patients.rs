//! Patients: create, read, list (with exact email/phone search through blind indexes), update,
//! GDPR export (Art. 15/20) and erasure by crypto-shredding (Art. 17), legal hold, and the
//! patient's own login.
//!
//! Authorization happens twice: the permission matrix first (403, audited, when the caller's
//! role or key has no access to the operation at all), then row-level security, which hides
//! rows the caller may not see: a therapist's unassigned patient or another patient's record
//! answers 404, exactly like a record that does not exist, so a denied read reveals nothing.
//! Every read of a record writes `patient.read` (who read whom) in the same transaction.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json_body::JsonBody;
use crate::query_params::QueryParams;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use app::patients::{NewPatientAccount, Patient, PatientSearch};
use kernel::PatientId;
use patients::{NewPatient, PatientPatch};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/patients", web::post().to(create_patient))
        .route("/api/v1/patients", web::get().to(list_patients))
        .route("/api/v1/patients/{id}", web::get().to(get_patient))
        .route("/api/v1/patients/{id}", web::patch().to(update_patient))
        .route("/api/v1/patients/{id}", web::delete().to(erase_patient))
        .route("/api/v1/patients/{id}/legal-hold", web::put().to(set_legal_hold))
        .route("/api/v1/patients/{id}/export", web::get().to(export_patient))
        .route("/api/v1/patients/{id}/account", web::post().to(create_account));
}

/// A patient record as the caller may see it. `clinical_notes` is present only for callers who
/// may read clinical data (never for receptionists or API keys).
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientView {
    id: uuid::Uuid,
    name: String,
    email: Option<String>,
    /// E.164.
    phone: Option<String>,
    /// `YYYY-MM-DD`.
    #[schema(format = Date)]
    date_of_birth: Option<String>,
    address: Option<String>,
    assigned_therapist_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clinical_notes: Option<String>,
    legal_hold: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Patient> for PatientView {
    fn from(patient: Patient) -> Self {
        let data = patient.data;
        Self {
            id: *patient.id.as_uuid(),
            name: data.name,
            email: data.email,
            phone: data.phone,
            date_of_birth: data.date_of_birth.map(patients::format_date),
            address: data.address,
            assigned_therapist_id: patient.assigned_therapist.map(|u| *u.as_uuid()),
            clinical_notes: data.clinical_notes,
            legal_hold: patient.legal_hold,
            created_at: patient.created_at,
            updated_at: patient.updated_at,
        }
    }
}

/// `POST /api/v1/patients` body. Unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[expect(dead_code, reason = "documentation of `patients::NewPatient`, which is what the handler reads")]
pub struct NewPatientRequest {
    /// 1 to 200 characters, one line (no control characters), not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: String,
    /// An email address, at most 254 characters; stored lower-cased.
    #[schema(max_length = 254)]
    email: Option<String>,
    /// E.164, e.g. `+4915112345678`.
    #[schema(pattern = r"^\+[1-9][0-9]{6,14}$")]
    phone: Option<String>,
    /// `YYYY-MM-DD`, not in the future, not before 1900.
    #[schema(format = Date)]
    date_of_birth: Option<String>,
    /// 1 to 500 characters; line breaks and tabs allowed, no other control characters.
    #[schema(min_length = 1, max_length = 500, pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    address: Option<String>,
    /// An enabled therapist of the practice (admins, receptionists and API keys may assign).
    assigned_therapist_id: Option<uuid::Uuid>,
    /// 1 to 20,000 characters, as `address`; needs `patient.write_clinical`.
    #[schema(
        min_length = 1,
        max_length = 20000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    clinical_notes: Option<String>,
}

/// `PATCH /api/v1/patients/{id}` body: JSON merge patch; `null` clears a field (not `name`).
#[derive(Debug, Deserialize, ToSchema)]
#[expect(dead_code, reason = "documentation of `patients::PatientPatch`, which is what the handler reads")]
pub struct PatientPatchRequest {
    /// As in `NewPatientRequest`; cannot be cleared.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: Option<String>,
    #[schema(max_length = 254)]
    email: Option<String>,
    #[schema(pattern = r"^\+[1-9][0-9]{6,14}$")]
    phone: Option<String>,
    #[schema(format = Date)]
    date_of_birth: Option<String>,
    #[schema(min_length = 1, max_length = 500, pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    address: Option<String>,
    /// Admins, receptionists and API keys only.
    assigned_therapist_id: Option<uuid::Uuid>,
    /// Needs `patient.write_clinical`.
    #[schema(
        min_length = 1,
        max_length = 20000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    clinical_notes: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PatientListQuery {
    /// Exact email match (through the blind index; case-insensitive).
    #[param(max_length = 254)]
    email: Option<String>,
    /// Exact E.164 phone match (through the blind index).
    #[param(pattern = r"^\+[1-9][0-9]{6,14}$")]
    phone: Option<String>,
    /// `next_cursor` of the previous page (opaque).
    cursor: Option<String>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of patients, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientPage {
    patients: Vec<PatientView>,
    /// Pass as `cursor` for the next page (opaque); null on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHoldRequest {
    /// True sets the hold (erasure is refused while set); false lifts it.
    legal_hold: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientAccountRequest {
    /// At most 254 characters; stored lower-cased.
    #[schema(max_length = 254)]
    email: String,
    /// At least 12 characters and at most 1,024 bytes (UTF-8), checked against the password
    /// policy (common passwords, the account's email).
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 1024)]
    password: kernel::Secret<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatientAccount {
    id: uuid::Uuid,
    email: String,
    patient_id: uuid::Uuid,
}

/// A listing cursor is the last listed patient's id; anything else was not a `next_cursor`.
fn parse_cursor(raw: &str) -> Result<PatientId, ApiError> {
    raw.parse::<uuid::Uuid>().map(PatientId::from_uuid).map_err(|_| ApiError::Validation {
        errors: vec![crate::error::FieldError {
            field: "cursor".into(),
            message: "must be a `next_cursor` of this listing".into(),
        }],
    })
}

/// A path id that is no UUID names no patient: 404, like an unknown one.
fn patient_id(raw: &str) -> Result<PatientId, ApiError> {
    raw.parse::<uuid::Uuid>().map(PatientId::from_uuid).map_err(|_| ApiError::NotFound)
}

/// Create a patient
#[utoipa::path(post, path = "/api/v1/patients", tag = "patients",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = []), ("api_key" = [])),
    request_body = NewPatientRequest,
    responses(
        (status = 201, description = "Created; every personal field stored encrypted under the patient's new DEK", body = PatientView),
        (status = 400, description = "Malformed body, unknown field, or invalid fields (`validation-failed` names each)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn create_patient(
    state: web::Data<AppState>,
    principal: Principal,
    body: JsonBody<NewPatient>,
) -> Result<HttpResponse, ApiError> {
    let patient = state.app.create_patient(&principal.caller(), body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/patients/{}", patient.id)))
        .json(PatientView::from(patient)))
}

/// Get a patient
#[utoipa::path(get, path = "/api/v1/patients/{id}", tag = "patients",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    responses(
        (status = 200, description = "The record, decrypted, minus what the caller may not see; audited as `patient.read`", body = PatientView),
        (status = 404, description = "No such patient, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn get_patient(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let patient = state.app.read_patient(&principal.caller(), patient_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(PatientView::from(patient)))
}

/// List patients
#[utoipa::path(get, path = "/api/v1/patients", tag = "patients",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(PatientListQuery),
    responses(
        (status = 200, description = "Patients the caller may see (a therapist: assigned ones; a patient: themself); each one returned is audited as `patient.read`", body = PatientPage),
        (status = 400, description = "Unknown parameter, bad limit, or an invalid email/phone", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn list_patients(
    state: web::Data<AppState>,
    principal: Principal,
    query: QueryParams<PatientListQuery>,
) -> Result<HttpResponse, ApiError> {
    let PatientListQuery { email, phone, cursor, limit } = query.into_inner();
    let cursor = cursor.as_deref().map(parse_cursor).transpose()?;
    let search = PatientSearch { email, phone, cursor, limit };
    let list = state.app.list_patients(&principal.caller(), search).await?;
    Ok(HttpResponse::Ok().json(PatientPage {
        patients: list.patients.into_iter().map(PatientView::from).collect(),
        next_cursor: list.next_cursor.map(|id| id.as_uuid().to_string()),
    }))
}

/// Update a patient
#[utoipa::path(patch, path = "/api/v1/patients/{id}", tag = "patients",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    request_body = PatientPatchRequest,
    responses(
        (status = 200, description = "Updated; audited as `patient.update` with the changed field names", body = PatientView),
        (status = 400, description = "Malformed body, unknown field, empty patch, or invalid fields", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn update_patient(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: JsonBody<PatientPatch>,
) -> Result<HttpResponse, ApiError> {
    let id = patient_id(&path)?;
    Ok(match state.app.update_patient(&principal.caller(), id, body.into_inner()).await? {
        Some(patient) => HttpResponse::Ok().json(PatientView::from(patient)),
        None => HttpResponse::NoContent().finish(),
    })
}

/// Set or lift a legal hold
#[utoipa::path(put, path = "/api/v1/patients/{id}/legal-hold", tag = "patients",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    request_body = LegalHoldRequest,
    responses(
        (status = 204, description = "Set or lifted; audited as `patient.legal_hold`"),
        (status = 400, description = "Malformed body", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn set_legal_hold(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: JsonBody<LegalHoldRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = patient_id(&path)?;
    if body.legal_hold {
        state.app.set_legal_hold(&principal.caller(), id).await?;
    } else {
        state.app.lift_legal_hold(&principal.caller(), id).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Erase a patient (GDPR Art. 17)
#[utoipa::path(delete, path = "/api/v1/patients/{id}", tag = "patients",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    responses(
        (status = 204, description = "Erased: the patient's DEKs are destroyed (every ciphertext of theirs, wherever copied, is now undecryptable), the record is a tombstone, their login is disabled and scrubbed; audited as `patient.erase`"),
        (status = 404, description = "No such patient", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A legal hold is set (`legal-hold`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Already erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn erase_patient(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.app.erase_patient(&principal.caller(), patient_id(&path)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The GDPR Art. 15/20 export document.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientExport {
    /// `praxis.patient-export.v1`.
    #[schema(value_type = String, pattern = r"^praxis\.patient-export\.v1$")]
    format: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    generated_at: OffsetDateTime,
    /// The whole record, clinical notes included (the right of access covers them).
    patient: PatientView,
    /// Current consent per purpose.
    consents: Vec<crate::routes::consents::ConsentView>,
    /// Every consent change with its evidence, oldest first per purpose.
    consent_history: Vec<crate::routes::consents::ConsentEventView>,
    /// Appointments, notes decrypted, each with its reminders (sent, skipped and why).
    appointments: Vec<crate::routes::appointments::AppointmentView>,
    /// Inbound messages from the patient's number (WhatsApp, SMS): metadata and the text's
    /// SHA-256, never the text, oldest first.
    messages: Vec<crate::routes::webhooks::MessageView>,
    /// Audit entries about this patient: who accessed or changed their data, and when.
    audit: Vec<crate::routes::audit::EntryView>,
}

/// Export a patient's data (GDPR Art. 15/20)
#[utoipa::path(get, path = "/api/v1/patients/{id}/export", tag = "patients",
    security(("session_cookie" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    responses(
        (status = 200, description = "Everything Praxis holds on the patient, decrypted; audited as `patient.export`", body = PatientExport),
        (status = 404, description = "No such patient, or not the caller themself", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn export_patient(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = patient_id(&path)?;
    let export = state.app.export_patient(&principal.caller(), id).await?;
    let now = export.generated_at;
    let export = PatientExport {
        format: "praxis.patient-export.v1",
        generated_at: now,
        consents: export
            .consents
            .iter()
            .map(|record| crate::routes::consents::view(record, &export.consents, now))
            .collect(),
        consent_history: export.consent_history.iter().map(crate::routes::consents::ConsentEventView::from).collect(),
        appointments: export.appointments.iter().map(crate::routes::appointments::export_view).collect(),
        messages: export.messages.iter().map(crate::routes::webhooks::MessageView::from).collect(),
        audit: export.access_log.into_iter().map(crate::routes::audit::EntryView::from).collect(),
        patient: PatientView::from(export.patient),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Content-Disposition", format!("attachment; filename=\"patient-{id}.json\"")))
        .json(export))
}

/// Give a patient a login account
#[utoipa::path(post, path = "/api/v1/patients/{id}/account", tag = "patients",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    request_body = PatientAccountRequest,
    responses(
        (status = 201, description = "A login for the patient, linked to their record (role `patient`: sees only their own data)", body = PatientAccount),
        (status = 400, description = "Invalid email or password", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The patient has an account, or the email is taken", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn create_account(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: JsonBody<PatientAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = patient_id(&path)?;
    let PatientAccountRequest { email, password } = body.into_inner();
    let user = state.app.create_patient_account(&principal.caller(), id, NewPatientAccount { email, password }).await?;
    Ok(HttpResponse::Created().json(PatientAccount {
        id: *user.id.as_uuid(),
        email: user.email,
        patient_id: *id.as_uuid(),
    }))
}
