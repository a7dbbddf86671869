//! Patients: create, read, list (with exact email/phone search through blind indexes), update,
//! GDPR export (Art. 15/20) and erasure by crypto-shredding (Art. 17), legal hold, and the
//! patient's own login.
//!
//! Authorization happens twice: the permission matrix first (403, audited, when the caller's
//! role or key has no access to the operation at all), then row-level security, which hides
//! rows the caller may not see: a therapist's unassigned patient or another patient's record
//! answers 404, exactly like a record that does not exist, so a denied read reveals nothing.
//! Every read of a record writes `patient.read` (who read whom) in the same transaction.

use crate::auth::{Principal, with_request};
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use app::protection::{CONTACT_FIELDS, SealingKey, email_index, open_fields, phone_index, seal_fields};
use audit::{Action, AuditEvent, AuditFilter, Page};
use identity::{Permission, Scope};
use kernel::{PatientId, Role, UserId};
use patients::{NewPatient, PatientData, PatientField, PatientPatch};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use store_postgres::patients::{self as store, PatientChange, PatientQuery, PatientRow};
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

impl PatientView {
    fn new(row: &PatientRow, data: PatientData) -> Self {
        Self {
            id: *row.id.as_uuid(),
            name: data.name,
            email: data.email,
            phone: data.phone,
            date_of_birth: data.date_of_birth.map(patients::format_date),
            address: data.address,
            assigned_therapist_id: row.assigned_therapist.map(|u| *u.as_uuid()),
            clinical_notes: data.clinical_notes,
            legal_hold: row.legal_hold,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `POST /api/v1/patients` body. Unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation of `patients::NewPatient`, which is what the handler reads
pub struct NewPatientRequest {
    /// 1 to 200 characters, one line.
    name: String,
    /// An email address, at most 254 characters; stored lower-cased.
    email: Option<String>,
    /// E.164, e.g. `+4915112345678`.
    phone: Option<String>,
    /// `YYYY-MM-DD`, not in the future, not before 1900.
    date_of_birth: Option<String>,
    /// At most 500 characters; line breaks allowed.
    address: Option<String>,
    /// An enabled therapist of the practice (admins, receptionists and API keys may assign).
    assigned_therapist_id: Option<uuid::Uuid>,
    /// At most 20,000 characters; needs `patient.write_clinical`.
    clinical_notes: Option<String>,
}

/// `PATCH /api/v1/patients/{id}` body: JSON merge patch; `null` clears a field (not `name`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation of `patients::PatientPatch`
pub struct PatientPatchRequest {
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    date_of_birth: Option<String>,
    address: Option<String>,
    /// Admins, receptionists and API keys only.
    assigned_therapist_id: Option<uuid::Uuid>,
    /// Needs `patient.write_clinical`.
    clinical_notes: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PatientListQuery {
    /// Exact email match (through the blind index; case-insensitive).
    email: Option<String>,
    /// Exact E.164 phone match (through the blind index).
    phone: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<uuid::Uuid>,
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of patients, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientPage {
    patients: Vec<PatientView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<uuid::Uuid>,
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
    email: String,
    #[schema(value_type = String, min_length = 12)]
    password: kernel::Secret<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatientAccount {
    id: uuid::Uuid,
    email: String,
    patient_id: uuid::Uuid,
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::Validation { errors: vec![FieldError { field: field.into(), message: message.into() }] }
}

fn validation(errors: patients::ValidationErrors) -> ApiError {
    ApiError::Validation {
        errors: errors.errors.into_iter().map(|e| FieldError { field: e.field, message: e.message }).collect(),
    }
}

fn patient_id(raw: &str) -> Result<PatientId, ApiError> {
    raw.parse::<uuid::Uuid>().map(PatientId::from_uuid).map_err(|_| ApiError::NotFound)
}

/// The visible, live patient `id`: 404 when invisible or absent, 410 when erased.
pub async fn live_patient(
    conn: &mut PgConnection,
    principal: &Principal,
    id: PatientId,
    for_update: bool,
) -> Result<PatientRow, ApiError> {
    let row = store::get(conn, principal.tenant, id, for_update).await?.ok_or(ApiError::NotFound)?;
    if row.erased_at.is_some() {
        return Err(ApiError::Gone);
    }
    Ok(row)
}

/// May the caller read clinical data of the patients it can see?
fn reads_clinical(principal: &Principal) -> bool {
    principal.scope(Permission::PatientReadClinical) != Scope::Denied
}

/// The fields a caller reads: clinical ones only when it may.
fn readable_fields(clinical: bool) -> &'static [PatientField] {
    if clinical { &PatientField::ALL } else { &CONTACT_FIELDS }
}

fn read_event(state: &AppState, principal: &Principal, row: &PatientRow, clinical: bool) -> AuditEvent {
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::PatientRead, "patient", &*state.clock)
            .with_resource_id(row.id.to_string())
            .with_detail(json!({ "clinical": clinical }));
    with_request(event)
}

/// Only an enabled therapist of the practice can be assigned.
async fn check_therapist(
    conn: &mut PgConnection,
    principal: &Principal,
    therapist: uuid::Uuid,
) -> Result<(), ApiError> {
    match store::enabled_user_role(conn, principal.tenant, UserId::from_uuid(therapist)).await?.as_deref() {
        Some("therapist") => Ok(()),
        _ => Err(invalid("assigned_therapist_id", "must be an enabled therapist of this practice")),
    }
}

/// Who may (re)assign a therapist: those with practice-wide patient management.
fn may_assign(principal: &Principal) -> bool {
    principal.scope(Permission::PatientCreate) == Scope::Tenant
}

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
    body: web::Json<NewPatient>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::PatientCreate, "patient").await?;
    let today = state.clock.now().date();
    let valid = body.into_inner().validate(today).map_err(validation)?;
    if valid.data.clinical_notes.is_some() {
        principal.require_audited(&state, Permission::PatientWriteClinical, "patient").await?;
    }
    let id = PatientId::from_uuid(uuid::Uuid::now_v7());
    let index_key = state.app.blind_index_key(&principal.caller()).await?;
    // The KMS call happens before the transaction opens, so no row lock waits on the network.
    let key = state.app.new_patient_dek(principal.tenant, id).await?;
    let wrapped = &key.wrapped;
    let fields = seal_fields(&key, principal.tenant, id, &valid.data, &PatientField::ALL)?;
    let now = state.clock.now();

    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    if let Some(therapist) = valid.assigned_therapist {
        check_therapist(&mut tx, &principal, therapist).await?;
    }
    store_postgres::keys::insert(
        &mut tx,
        &store_postgres::keys::NewPatientKey {
            tenant: principal.tenant,
            patient: id,
            generation: 1,
            kek_id: wrapped.kek_id.clone(),
            kek_version: wrapped.kek_version.clone(),
            wrapped_dek: wrapped.ciphertext.clone(),
            created_at: now,
        },
    )
    .await?;
    store::insert(
        &mut tx,
        &store::NewPatientRow {
            id,
            tenant: principal.tenant,
            dek_generation: 1,
            assigned_therapist: valid.assigned_therapist.map(UserId::from_uuid),
            fields,
            email_index: valid.data.email.as_deref().map(|e| email_index(&index_key, e)),
            phone_index: valid.data.phone.as_deref().map(|p| phone_index(&index_key, p)),
            created_at: now,
        },
    )
    .await?;
    let generate =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::KeyGenerate, "patient_key", &*state.clock)
            .with_resource_id(id.to_string())
            .with_detail(json!({ "generation": 1, "kek_id": wrapped.kek_id, "kek_version": wrapped.kek_version }));
    store_postgres::audit::append(&mut tx, with_request(generate)).await?;
    let fields_set: Vec<&str> =
        PatientField::ALL.iter().filter(|f| valid.data.stored_text(**f).is_some()).map(|f| f.aad_column()).collect();
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::PatientCreate, "patient", &*state.clock)
            .with_resource_id(id.to_string())
            .with_detail(json!({ "fields": fields_set }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    let row = store::get(&mut tx, principal.tenant, id, false).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;

    state.app.remember_patient_dek(principal.tenant, id, &key)?;
    let mut data = valid.data;
    if !reads_clinical(&principal) {
        data.clinical_notes = None;
    }
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/patients/{id}")))
        .json(PatientView::new(&row, data)))
}

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
    principal.require_audited(&state, Permission::PatientReadContact, "patient").await?;
    let id = patient_id(&path)?;
    let clinical = reads_clinical(&principal);
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let row = live_patient(&mut tx, &principal, id, false).await?;
    let data = state.app.open_patient_fields(&mut tx, &principal.caller(), &row, readable_fields(clinical)).await?;
    store_postgres::audit::append(&mut tx, read_event(&state, &principal, &row, clinical)).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(PatientView::new(&row, data)))
}

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
    query: web::Query<PatientListQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::PatientReadContact, "patient").await?;
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 100"));
    }
    let mut filter = PatientQuery::default();
    if query.email.is_some() || query.phone.is_some() {
        let key = state.app.blind_index_key(&principal.caller()).await?;
        if let Some(email) = &query.email {
            if email.trim().is_empty() || email.len() > patients::EMAIL_MAX_LEN {
                return Err(invalid("email", "must be an email address of at most 254 characters"));
            }
            filter.email_index = Some(email_index(&key, email));
        }
        if let Some(phone) = &query.phone {
            if !phone.starts_with('+') || phone.len() > 16 || !phone[1..].chars().all(|c| c.is_ascii_digit()) {
                return Err(invalid("phone", "must be an E.164 number such as +4915112345678"));
            }
            filter.phone_index = Some(phone_index(&key, phone));
        }
    }
    let clinical = reads_clinical(&principal);
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let mut rows =
        store::list(&mut tx, principal.tenant, filter, query.cursor.map(PatientId::from_uuid), limit + 1).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let mut patients = Vec::with_capacity(rows.len());
    for row in &rows {
        let data = state.app.open_patient_fields(&mut tx, &principal.caller(), row, readable_fields(clinical)).await?;
        patients.push(PatientView::new(row, data));
        store_postgres::audit::append(&mut tx, read_event(&state, &principal, row, clinical)).await?;
    }
    tx.commit().await?;
    let next_cursor = if more { rows.last().map(|r| *r.id.as_uuid()) } else { None };
    Ok(HttpResponse::Ok().json(PatientPage { patients, next_cursor }))
}

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
    body: web::Json<PatientPatch>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::PatientUpdateContact, "patient").await?;
    let id = patient_id(&path)?;
    let patch = body.into_inner().validate(state.clock.now().date()).map_err(validation)?;
    let changed = patch.changed_fields();
    if changed.iter().any(|f| f.is_clinical()) {
        principal.require_audited(&state, Permission::PatientWriteClinical, "patient").await?;
    }
    if !patch.assigned_therapist.is_absent() && !may_assign(&principal) {
        principal.require_audited(&state, Permission::UserManage, "patient").await?;
    }
    let index_key = if patch.email.is_absent() && patch.phone.is_absent() {
        None
    } else {
        Some(state.app.blind_index_key(&principal.caller()).await?)
    };
    let clinical = reads_clinical(&principal);

    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let row = live_patient(&mut tx, &principal, id, true).await?;
    if let Some(therapist) = patch.assigned_therapist.as_set() {
        check_therapist(&mut tx, &principal, *therapist).await?;
    }
    let key = SealingKey {
        dek: state.app.patient_dek(&mut tx, &principal.caller(), &row).await?,
        wrapped: app::protection::wrapped_of(&row)?,
        generation: row.dek_generation,
    };
    let mut new_data = PatientData { name: String::new(), ..PatientData::default() };
    patch.apply(&mut new_data);
    let sealed = seal_fields(&key, row.tenant, row.id, &new_data, &changed)?;
    let mut change = PatientChange::default();
    for field in &changed {
        change.fields.insert(*field, sealed.get(field).cloned());
    }
    if let Some(key) = &index_key {
        if !patch.email.is_absent() {
            change.email_index = Some(new_data.email.as_deref().map(|e| email_index(key, e)));
        }
        if !patch.phone.is_absent() {
            change.phone_index = Some(new_data.phone.as_deref().map(|p| phone_index(key, p)));
        }
    }
    if !patch.assigned_therapist.is_absent() {
        change.assigned_therapist = Some(patch.assigned_therapist.as_set().map(|t| UserId::from_uuid(*t)));
    }
    let now = state.clock.now();
    if !store::update(&mut tx, principal.tenant, id, &change, now).await? {
        return Err(ApiError::NotFound);
    }
    let mut names: Vec<&str> = changed.iter().map(|f| f.aad_column()).collect();
    if !patch.assigned_therapist.is_absent() {
        names.push("assigned_therapist_id");
    }
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::PatientUpdate, "patient", &*state.clock)
            .with_resource_id(id.to_string())
            .with_detail(json!({ "fields": names }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    // Answer with the stored result (this also proves it decrypts), visible to this caller.
    let row = live_patient(&mut tx, &principal, id, false).await;
    let view = match row {
        Ok(row) => {
            let data = open_fields(&key.dek, &row, readable_fields(clinical))?;
            Some(PatientView::new(&row, data))
        }
        // A therapist who unassigned... cannot (only practice-wide roles assign), but a row
        // that left the caller's view is not an error of the update itself.
        Err(ApiError::NotFound) => None,
        Err(other) => return Err(other),
    };
    tx.commit().await?;
    Ok(match view {
        Some(view) => HttpResponse::Ok().json(view),
        None => HttpResponse::NoContent().finish(),
    })
}

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
    body: web::Json<LegalHoldRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::PatientErase, "patient").await?;
    let id = patient_id(&path)?;
    let hold = body.legal_hold;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    live_patient(&mut tx, &principal, id, true).await?;
    if !store::set_legal_hold(&mut tx, principal.tenant, id, hold, state.clock.now()).await? {
        return Err(ApiError::NotFound);
    }
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::PatientLegalHold, "patient", &*state.clock)
            .with_resource_id(id.to_string())
            .with_detail(json!({ "legal_hold": hold }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

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
    principal.require_audited(&state, Permission::PatientErase, "patient").await?;
    let id = patient_id(&path)?;
    let now = state.clock.now();
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let row = live_patient(&mut tx, &principal, id, true).await?;
    if row.legal_hold {
        return Err(ApiError::LegalHold);
    }
    let destroyed = store_postgres::keys::destroy_all(&mut tx, principal.tenant, id, now).await?;
    // The message log links the patient to what they sent (digests, times): it goes too.
    store_postgres::webhooks::erase_patient_messages(&mut tx, principal.tenant, id).await?;
    if !store::tombstone(&mut tx, principal.tenant, id, now).await? {
        return Err(ApiError::NotFound);
    }
    let accounts = store::erase_linked_accounts(&mut tx, principal.tenant, id, now).await?;
    // Future appointments are cancelled, pending reminders dropped, note ciphertexts removed.
    store_postgres::appointments::erase_patient_data(&mut tx, principal.tenant, id, now).await?;
    let destroy =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::KeyDestroy, "patient_key", &*state.clock)
            .with_resource_id(id.to_string())
            .with_detail(json!({ "generations_destroyed": destroyed }));
    store_postgres::audit::append(&mut tx, with_request(destroy)).await?;
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::PatientErase, "patient", &*state.clock)
            .with_resource_id(id.to_string())
            .with_detail(json!({ "keys_destroyed": destroyed, "accounts_disabled": accounts }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    // This server forgets the DEK now; other instances hold a cached copy at most for the cache's
    // max age, and answer 410 meanwhile because they read the tombstone first.
    state.dek_cache.remove_patient(principal.tenant, id);
    Ok(HttpResponse::NoContent().finish())
}

/// The GDPR Art. 15/20 export document.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientExport {
    /// `praxis.patient-export.v1`.
    format: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    generated_at: OffsetDateTime,
    /// The whole record, clinical notes included (the right of access covers them).
    patient: PatientView,
    /// Current consent per purpose.
    #[schema(value_type = Vec<Object>)]
    consents: Vec<serde_json::Value>,
    /// Every consent change with its evidence, oldest first per purpose.
    #[schema(value_type = Vec<Object>)]
    consent_history: Vec<serde_json::Value>,
    /// Appointments, notes decrypted, each with its reminders (sent, skipped and why).
    #[schema(value_type = Vec<Object>)]
    appointments: Vec<serde_json::Value>,
    /// Inbound messages from the patient's number (WhatsApp, SMS): metadata and the text's
    /// SHA-256, never the text, oldest first.
    #[schema(value_type = Vec<Object>)]
    messages: Vec<serde_json::Value>,
    /// Audit entries about this patient: who accessed or changed their data, and when.
    audit: Vec<crate::routes::audit::EntryView>,
}

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
    principal.require_audited(&state, Permission::PatientExport, "patient").await?;
    let id = patient_id(&path)?;
    let now = state.clock.now();
    // Audit entries first (their own read-only transaction through the audit adapter), so the
    // export includes every access up to this moment.
    let audit = audit_entries_about(&state, &principal, id).await?;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let row = live_patient(&mut tx, &principal, id, false).await?;
    let data = state.app.open_patient_fields(&mut tx, &principal.caller(), &row, &PatientField::ALL).await?;
    let history = store::consent_history(&mut tx, principal.tenant, id).await?;
    let records = app::consents::records_of(id, &history)?;
    let consents = records.iter().map(|r| crate::routes::consents::consent_json(r, &records, now)).collect();
    let consent_history = history.iter().map(crate::routes::consents::event_json).collect();
    let messages = store_postgres::webhooks::messages_of_patient(&mut tx, principal.tenant, id)
        .await?
        .iter()
        .map(crate::routes::webhooks::message_json)
        .collect();
    let appointments = crate::routes::appointments::export_of_patient(&state, &mut tx, &principal, id).await?;
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::PatientExport, "patient", &*state.clock)
            .with_resource_id(id.to_string())
            .with_detail(json!({ "audit_entries": audit.len(), "consent_events": history.len() }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    let export = PatientExport {
        format: "praxis.patient-export.v1",
        generated_at: now,
        patient: PatientView::new(&row, data),
        consents,
        consent_history,
        appointments,
        messages,
        audit,
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Content-Disposition", format!("attachment; filename=\"patient-{id}.json\"")))
        .json(export))
}

/// Every audit entry whose resource is this patient (record, key, consents), newest first.
async fn audit_entries_about(
    state: &AppState,
    principal: &Principal,
    id: PatientId,
) -> Result<Vec<crate::routes::audit::EntryView>, ApiError> {
    let filter = AuditFilter { resource_id: Some(id.to_string()), ..AuditFilter::default() };
    let mut entries = Vec::new();
    let mut cursor = None;
    loop {
        let page = Page::new(cursor, 200).map_err(ApiError::internal)?;
        let found = state.audit.query_entries(principal.tenant, &filter, page).await?;
        entries.extend(found.entries.into_iter().map(crate::routes::audit::EntryView::from));
        match found.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(entries),
        }
    }
}

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
    body: web::Json<PatientAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::UserManage, "user").await?;
    let id = patient_id(&path)?;
    let PatientAccountRequest { email, password } = body.into_inner();
    let email = email.trim().to_lowercase();
    if email.len() < 3 || email.len() > 254 || !email.contains('@') || email.chars().any(char::is_whitespace) {
        return Err(invalid("email", "must be an email address of at most 254 characters"));
    }
    identity::PasswordPolicy::default()
        .check(password.expose_secret(), &[&email])
        .map_err(|problem| invalid("password", &problem.to_string()))?;
    let hasher = state.hasher.clone();
    let hash = web::block(move || hasher.hash(password.expose_secret()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    live_patient(&mut tx, &principal, id, true).await?;
    if store_postgres::identity::find_user_by_email(&mut tx, &email).await?.is_some()
        || store::has_account(&mut tx, principal.tenant, id).await?
    {
        return Err(ApiError::Conflict { detail: "The patient has an account, or an account uses this email.".into() });
    }
    let user = store_postgres::identity::NewUser {
        id: UserId::new(),
        tenant: principal.tenant,
        email,
        role: Role::Patient,
        patient: Some(id),
        password_hash: hash,
        created_at: state.clock.now(),
    };
    store_postgres::identity::insert_user(&mut tx, &user).await?;
    let event = AuditEvent::new(principal.tenant, principal.actor.clone(), Action::UserCreate, "user", &*state.clock)
        .with_resource_id(user.id.to_string())
        .with_detail(json!({ "role": "patient", "patient_id": id.to_string() }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(PatientAccount {
        id: *user.id.as_uuid(),
        email: user.email,
        patient_id: *id.as_uuid(),
    }))
}
