//! Consent per purpose (crates/consent): the current state of every purpose, the append-only
//! history with its evidence, and recording a change (request, grant, withdraw, archive).
//!
//! The patient must be visible to the caller (RLS: a therapist's assigned patients, a patient
//! themself), exactly like the record. The use cases are `app::consents`; an illegal change
//! answers 409 `illegal-transition` with the allowed actions.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json_body::JsonBody;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use app::consents::ConsentChange;
use consent::{ConsentEvent, ConsentRecord};
use kernel::PatientId;
use serde::{Deserialize, Serialize};
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
    #[schema(value_type = crate::openapi::ConsentPurpose)]
    purpose: String,
    #[schema(value_type = crate::openapi::ConsentAction)]
    action: String,
    /// Only with `grant`: when the consent lapses (RFC 3339, after now).
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    /// The consent text's version label, e.g. `reminders-2026-01`: 1 to 64 of `[A-Za-z0-9._:-]`.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
    text_version: String,
    /// The exact consent text shown (its SHA-256 is stored, not the text); or give `text_sha256`.
    #[schema(min_length = 1)]
    text: Option<String>,
    /// SHA-256 of the consent text, 64 hex digits (either case).
    #[schema(pattern = r"^[0-9A-Fa-f]{64}$")]
    text_sha256: Option<String>,
    /// How the evidence was collected.
    #[schema(value_type = crate::openapi::EvidenceChannel)]
    channel: String,
    /// A reference to the proof (a scanned form's id, a message id): 1 to 256 visible ASCII
    /// characters, no spaces; no free text.
    #[schema(pattern = r"^[!-~]{1,256}$")]
    evidence_ref: Option<String>,
}

/// The state of one purpose.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    #[schema(value_type = crate::openapi::ConsentPurpose)]
    purpose: &'static str,
    /// Effective now: a grant past its expiry shows as `expired`.
    #[schema(value_type = crate::openapi::ConsentState)]
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
    #[schema(value_type = Vec<crate::openapi::ConsentAction>)]
    allowed_actions: Vec<&'static str>,
}

/// One consent change with its evidence. (Fields in key order: the body is byte-for-byte what it
/// was as a `json!` object.)
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentEventView {
    #[schema(value_type = crate::openapi::ConsentAction)]
    action: &'static str,
    /// How the evidence was collected.
    #[schema(value_type = crate::openapi::EvidenceChannel)]
    channel: &'static str,
    /// The reference to the proof, if one was given.
    evidence_ref: Option<String>,
    /// Only for `grant`: when the consent lapses.
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    /// The state before the change.
    #[schema(value_type = crate::openapi::ConsentState)]
    from: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    #[schema(value_type = crate::openapi::ConsentPurpose)]
    purpose: &'static str,
    /// Who recorded the change.
    #[schema(value_type = crate::openapi::Actor)]
    recorded_by: kernel::Actor,
    /// The change's number in the purpose's history (ascending).
    seq: u64,
    /// SHA-256 of the consent text shown, 64 lower-case hex digits.
    text_sha256: String,
    /// The consent text's version label.
    text_version: String,
    /// The state after the change.
    #[schema(value_type = crate::openapi::ConsentState)]
    to: &'static str,
}

impl From<&ConsentEvent> for ConsentEventView {
    fn from(event: &ConsentEvent) -> Self {
        let evidence = event.evidence();
        Self {
            action: event.action().as_str(),
            channel: evidence.channel.as_str(),
            evidence_ref: evidence.note_ref.as_ref().map(|n| n.as_str().to_owned()),
            expires_at: event.expires_at(),
            from: event.from_state().as_str(),
            occurred_at: event.occurred_at(),
            purpose: event.purpose().as_str(),
            recorded_by: evidence.recorded_by.clone(),
            seq: event.seq(),
            text_sha256: evidence.text.sha256.to_hex(),
            text_version: evidence.text.version.as_str().to_owned(),
            to: event.to_state().as_str(),
        }
    }
}

/// The state of `record` now (the export document uses it too).
pub fn view(record: &ConsentRecord, all: &[ConsentRecord], now: OffsetDateTime) -> ConsentView {
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

fn patient_id(raw: &str) -> Result<PatientId, ApiError> {
    raw.parse::<uuid::Uuid>().map(PatientId::from_uuid).map_err(|_| ApiError::NotFound)
}

/// Current consents of a patient
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
    let records = state.app.consent_records(&principal.caller(), patient_id(&path)?).await?;
    let now = state.clock.now();
    let views: Vec<ConsentView> = records.iter().map(|r| view(r, &records, now)).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Consent history of a patient
#[utoipa::path(get, path = "/api/v1/patients/{id}/consents/history", tag = "consents",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The patient's id")),
    responses(
        (status = 200, description = "Every change with its evidence, in (purpose, seq) order", body = Vec<ConsentEventView>),
        (status = 404, description = "No such patient, or not one the caller may see", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::CommonProblems,
    ))]
async fn consent_history(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let history = state.app.consent_history(&principal.caller(), patient_id(&path)?).await?;
    let events: Vec<ConsentEventView> = history.iter().map(ConsentEventView::from).collect();
    Ok(HttpResponse::Ok().json(events))
}

/// Record a consent decision
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
    body: JsonBody<ConsentChangeRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = patient_id(&path)?;
    let body = body.into_inner();
    let change = ConsentChange {
        purpose: body.purpose,
        action: body.action,
        expires_at: body.expires_at,
        text_version: body.text_version,
        text: body.text,
        text_sha256: body.text_sha256,
        channel: body.channel,
        evidence_ref: body.evidence_ref,
    };
    let changed = state.app.change_consent(&principal.caller(), id, change).await?;
    Ok(HttpResponse::Created().json(view(&changed.record, &changed.all, state.clock.now())))
}
