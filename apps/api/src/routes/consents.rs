//! Consent per purpose (crates/consent): the current state of every purpose, the append-only
//! history with its evidence, and recording a change (request, grant, withdraw, archive).
//!
//! The patient must be visible to the caller (RLS: a therapist's assigned patients, a patient
//! themself), exactly like the record. A change is decided by the pure state machine over the
//! stored history; an illegal one answers 409 `illegal-transition` with the allowed actions.
//! Two concurrent changes of one purpose are serialised by the lock on the patient row, and the
//! unique `(patient, purpose, seq)` key would refuse a second change computed from the same
//! history anyway.

use crate::auth::{Principal, with_request};
use crate::error::{ApiError, FieldError};
use crate::routes::patients::live_patient;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use audit::{Action, AuditEvent};
use consent::{
    Channel, ConsentAction, ConsentCommand, ConsentError, ConsentEvent, ConsentRecord, ConsentText, Evidence, NoteRef,
    Purpose,
};
use identity::Permission;
use kernel::PatientId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store_postgres::patients as store;
use time::OffsetDateTime;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/patients/{id}/consents", web::get().to(list_consents))
        .route("/api/v1/patients/{id}/consents", web::post().to(record_consent))
        .route("/api/v1/patients/{id}/consents/history", web::get().to(consent_history));
}

/// `POST /api/v1/patients/{id}/consents` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentChangeRequest {
    /// `data_processing`, `marketing_whatsapp`, `marketing_email`, `marketing_sms`,
    /// `appointment_reminders`, `treatment_updates` or `third_party_sharing`.
    purpose: String,
    /// `request`, `grant`, `withdraw` or `archive`.
    action: String,
    /// Only with `grant`: when the consent lapses (RFC 3339, after now).
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    /// The consent text's version label, e.g. `reminders-2026-01`.
    text_version: String,
    /// The exact consent text shown (its SHA-256 is stored, not the text); or give `text_sha256`.
    text: Option<String>,
    /// SHA-256 of the consent text, 64 hex digits.
    text_sha256: Option<String>,
    /// How the evidence was collected: `web`, `paper`, `whatsapp`, `sms`, `email` or `phone`.
    channel: String,
    /// A reference to the proof (a scanned form's id, a message id); no free text.
    evidence_ref: Option<String>,
}

/// The state of one purpose.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    purpose: &'static str,
    /// Effective now: a grant past its expiry shows as `expired`.
    state: &'static str,
    /// Whether senders may use this purpose now (`may_contact`: granted, not expired, and for
    /// marketing also `data_processing` granted).
    active: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    changed_at: Option<OffsetDateTime>,
    text_version: Option<String>,
    /// What may be done next.
    allowed_actions: Vec<&'static str>,
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::Validation { errors: vec![FieldError { field: field.into(), message: message.into() }] }
}

/// Domain refusals as API errors: input problems name their field (400), an illegal transition
/// lists the allowed actions (409), corrupt stored history is our fault (500).
fn consent_error(error: ConsentError) -> ApiError {
    match &error {
        ConsentError::IllegalTransition { from, action, allowed } => ApiError::IllegalTransition {
            detail: format!("Cannot {} a consent that is {}.", action.as_str(), from.as_str()),
            allowed: allowed.iter().map(|a| a.as_str().to_owned()).collect(),
        },
        ConsentError::TimeBeforeLastChange { .. } => {
            ApiError::Conflict { detail: "The consent changed after this request's time; retry.".into() }
        }
        e if e.is_storage_corruption() => ApiError::internal(error),
        e => invalid(e.field().unwrap_or("body"), &e.to_string()),
    }
}

/// The records of every purpose that has history, folded from `history` ((purpose, seq) order).
pub fn records_of(patient: PatientId, history: &[ConsentEvent]) -> Result<Vec<ConsentRecord>, ApiError> {
    Purpose::ALL
        .iter()
        .filter(|purpose| history.iter().any(|e| e.purpose() == **purpose))
        .map(|purpose| {
            ConsentRecord::replay(patient, *purpose, history.iter().filter(|e| e.purpose() == *purpose))
                .map_err(ApiError::internal)
        })
        .collect()
}

fn view(record: &ConsentRecord, all: &[ConsentRecord], now: OffsetDateTime) -> ConsentView {
    ConsentView {
        purpose: record.purpose().as_str(),
        state: record.effective_state(now).as_str(),
        active: consent::may_contact(all, record.purpose(), now),
        expires_at: record.expires_at(),
        changed_at: record.changed_at(),
        text_version: record.text().map(|t| t.version.as_str().to_owned()),
        allowed_actions: record.allowed_actions(now).iter().map(|a| a.as_str()).collect(),
    }
}

/// A record as JSON (the export document uses it too).
pub fn consent_json(record: &ConsentRecord, all: &[ConsentRecord], now: OffsetDateTime) -> serde_json::Value {
    serde_json::to_value(view(record, all, now)).unwrap_or_default()
}

/// A history entry as JSON, with its evidence.
pub fn event_json(event: &ConsentEvent) -> serde_json::Value {
    let evidence = event.evidence();
    json!({
        "purpose": event.purpose().as_str(),
        "seq": event.seq(),
        "action": event.action().as_str(),
        "from": event.from_state().as_str(),
        "to": event.to_state().as_str(),
        "occurred_at": event.occurred_at().format(&time::format_description::well_known::Rfc3339).ok(),
        "expires_at": event.expires_at().and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "text_version": evidence.text.version.as_str(),
        "text_sha256": evidence.text.sha256.to_hex(),
        "channel": evidence.channel.as_str(),
        "recorded_by": evidence.recorded_by,
        "evidence_ref": evidence.note_ref.as_ref().map(|n| n.as_str()),
    })
}

/// The consent history of a patient the caller may see (404 / 410 otherwise).
async fn visible_history(
    state: &AppState,
    principal: &Principal,
    path: &str,
) -> Result<(PatientId, Vec<ConsentEvent>), ApiError> {
    principal.require_audited(state, Permission::ConsentRead, "consent").await?;
    let id = patient_id(path)?;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    live_patient(&mut tx, principal, id, false).await?;
    let history = store::consent_history(&mut tx, principal.tenant, id).await?;
    tx.commit().await?;
    Ok((id, history))
}

fn patient_id(raw: &str) -> Result<PatientId, ApiError> {
    raw.parse::<uuid::Uuid>().map(PatientId::from_uuid).map_err(|_| ApiError::NotFound)
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/consents", tag = "consents",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    responses(
        (status = 200, description = "The effective state of every purpose with history", body = Vec<ConsentView>),
        (status = 404, description = "No such patient, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn list_consents(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (id, history) = visible_history(&state, &principal, &path).await?;
    let now = state.clock.now();
    let records = records_of(id, &history)?;
    let views: Vec<ConsentView> = records.iter().map(|r| view(r, &records, now)).collect();
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/consents/history", tag = "consents",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    responses(
        (status = 200, description = "Every change with its evidence, in (purpose, seq) order", body = Vec<Object>),
        (status = 404, description = "No such patient, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn consent_history(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, history) = visible_history(&state, &principal, &path).await?;
    let events: Vec<serde_json::Value> = history.iter().map(event_json).collect();
    Ok(HttpResponse::Ok().json(events))
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/consents", tag = "consents",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    request_body = ConsentChangeRequest,
    responses(
        (status = 201, description = "Recorded with its evidence; audited as `consent.<action>`", body = ConsentView),
        (status = 400, description = "Unknown purpose/action/channel, bad text digest or version, expiry not after now", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed from the current state (`illegal-transition`, with `allowed`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn record_consent(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<ConsentChangeRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::ConsentRecord, "consent").await?;
    let id = patient_id(&path)?;
    let body = body.into_inner();
    let purpose: Purpose = body.purpose.parse().map_err(consent_error)?;
    let action: ConsentAction = body.action.parse().map_err(consent_error)?;
    let channel: Channel = body.channel.parse().map_err(consent_error)?;
    let command = match action {
        ConsentAction::Grant => ConsentCommand::Grant { expires_at: body.expires_at },
        _ if body.expires_at.is_some() => return Err(invalid("expires_at", "only a grant can have an expiry")),
        ConsentAction::Request => ConsentCommand::Request,
        ConsentAction::Withdraw => ConsentCommand::Withdraw,
        ConsentAction::Archive => ConsentCommand::Archive,
    };
    let text = ConsentText::from_submission(&body.text_version, body.text.as_deref(), body.text_sha256.as_deref())
        .map_err(consent_error)?;
    let mut evidence = Evidence::new(text, channel, principal.actor.clone());
    if let Some(reference) = &body.evidence_ref {
        evidence = evidence.with_note_ref(NoteRef::parse(reference).map_err(consent_error)?);
    }
    let now = state.clock.now();

    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    live_patient(&mut tx, &principal, id, true).await?; // locks the patient: one change at a time
    let history = store::consent_history(&mut tx, principal.tenant, id).await?;
    let mut record = ConsentRecord::replay(id, purpose, history.iter().filter(|e| e.purpose() == purpose))
        .map_err(ApiError::internal)?;
    let event = record.apply(command, evidence, now).map_err(consent_error)?;
    store::record_consent(&mut tx, principal.tenant, &event, &record).await?;
    let audit_action = match action {
        ConsentAction::Request => Action::ConsentRequested,
        ConsentAction::Grant => Action::ConsentGranted,
        ConsentAction::Withdraw => Action::ConsentWithdrawn,
        ConsentAction::Archive => Action::ConsentArchived,
    };
    let audit_event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), audit_action, "consent", &*state.clock)
            .with_resource_id(id.to_string())
            .with_detail(json!({
                "purpose": purpose.as_str(),
                "seq": event.seq(),
                "from": event.from_state().as_str(),
                "to": event.to_state().as_str(),
                "channel": channel.as_str(),
            }));
    store_postgres::audit::append(&mut tx, with_request(audit_event)).await?;
    let mut others: Vec<ConsentRecord> =
        records_of(id, &history)?.into_iter().filter(|r| r.purpose() != purpose).collect();
    others.push(record.clone());
    tx.commit().await?;
    Ok(HttpResponse::Created().json(view(&record, &others, now)))
}
