//! `GET /api/v1/audit` (query) and `GET /api/v1/audit/verify` (chain verification), admin only.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::query_params::QueryParams;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use audit::RecordedEntry;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/audit", web::get().to(query)).route("/api/v1/audit/verify", web::get().to(verify));
}

/// Query parameters; unknown ones are rejected so a typo is not silently ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// An action name, e.g. `auth.login`.
    #[param(inline, value_type = Option<crate::openapi::AuditAction>)]
    action: Option<String>,
    #[param(inline, value_type = Option<crate::openapi::AuditOutcome>)]
    outcome: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    /// A user id: entries whose actor is that user.
    actor_user: Option<uuid::Uuid>,
    /// RFC 3339; entries at or after.
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    /// RFC 3339; entries before.
    #[serde(default, with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
    /// `next_cursor` of the previous page (opaque).
    cursor: Option<String>,
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// One audit entry and, once sealed, its place in the hash chain.
///
/// A request records its entry in the same transaction as the change it records; the sealer
/// links it into the practice's hash chain shortly after (well under a second). Until then
/// `sealed` is false and `seq`, `hash` and `prev_hash` are null.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    /// The order entries were recorded in (ascending; gaps are normal). Listings are newest
    /// first by `id`, which sealing never changes; use it for `cursor`.
    id: u64,
    /// Whether the entry is linked into the hash chain yet.
    sealed: bool,
    /// Position in the practice's hash chain; null until sealed.
    seq: Option<u64>,
    /// SHA-256 of this entry, hex; null until sealed.
    hash: Option<String>,
    /// SHA-256 of the previous entry, hex; null until sealed.
    prev_hash: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    #[schema(value_type = crate::openapi::Actor)]
    actor: kernel::Actor,
    #[schema(value_type = crate::openapi::AuditAction, example = "auth.login")]
    action: &'static str,
    resource_type: String,
    resource_id: Option<String>,
    #[schema(value_type = crate::openapi::AuditOutcome)]
    outcome: &'static str,
    request_id: Option<String>,
    /// Action-specific details (never personal data).
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

/// A page of entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntries {
    entries: Vec<EntryView>,
    /// Pass as `cursor` for the next page (opaque); null on the last page.
    next_cursor: Option<String>,
}

/// The result of verifying the practice's chain. (Fields in key order: the body is byte-for-byte
/// what it was as a `json!` object.)
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyReport {
    entries_checked: u64,
    /// Where the chain is first broken; null when intact.
    #[schema(value_type = Option<crate::openapi::ChainBreak>)]
    first_break: Option<audit::Break>,
    /// The last entry that verified; null when none did.
    head: Option<ChainHeadView>,
    /// True when the chain has no break and no unsealed entry was altered.
    intact: bool,
    /// Entries recorded but not sealed yet (recorded during the verification, or refused by the
    /// sealer as altered); each was checked against the digest written when it was recorded.
    unsealed_entries: u64,
    /// Ids of unsealed entries whose content no longer matches that digest: edited after they
    /// were written.
    altered_unsealed_entries: Vec<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainHeadView {
    /// SHA-256, hex.
    hash: String,
    seq: u64,
}

impl From<RecordedEntry> for EntryView {
    fn from(entry: RecordedEntry) -> Self {
        let event = entry.event;
        Self {
            id: entry.id,
            sealed: entry.link.is_some(),
            seq: entry.link.map(|link| link.seq),
            hash: entry.link.map(|link| hex::encode(link.hash)),
            prev_hash: entry.link.map(|link| hex::encode(link.prev_hash)),
            occurred_at: event.occurred_at,
            actor: event.actor,
            action: event.action.as_str(),
            resource_type: event.resource_type,
            resource_id: event.resource_id,
            outcome: event.outcome.as_str(),
            request_id: event.request_id.map(|id| id.to_string()),
            detail: event.detail,
        }
    }
}

/// A listing cursor is the id of the last entry listed (as a string: cursors are opaque to
/// clients; a bare number, as sent before cursors were strings, is the same text).
fn parse_cursor(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| ApiError::Validation {
        errors: vec![crate::error::FieldError {
            field: "cursor".into(),
            message: "must be a `next_cursor` of this listing".into(),
        }],
    })
}

/// Query the audit trail
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries matching the filter, newest first", body = AuditEntries),
        (status = 400, description = "An unknown or invalid query parameter (`bad-request`, `validation-failed` with `errors[]`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither an admin nor an `audit:read` key", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn query(
    state: web::Data<AppState>,
    principal: Principal,
    params: QueryParams<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let query = app::audit_trail::AuditQuery {
        action: params.action,
        outcome: params.outcome,
        resource_type: params.resource_type,
        resource_id: params.resource_id,
        actor_user: params.actor_user.map(kernel::UserId::from_uuid),
        from: params.from,
        to: params.to,
        cursor: params.cursor.as_deref().map(parse_cursor).transpose()?,
        limit: params.limit,
    };
    let result = state.app.audit_entries(&principal.caller(), query).await?;
    let entries: Vec<EntryView> = result.entries.into_iter().map(EntryView::from).collect();
    // Through `Value` (keys in order), so the body stays byte-for-byte what it was.
    let body = serde_json::to_value(AuditEntries { entries, next_cursor: result.next_cursor.map(|id| id.to_string()) })
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(body))
}

/// Verify the audit chain
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The verification report (also when the chain is broken: see `intact`)", body = VerifyReport),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Neither an admin nor an `audit:read` key", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn verify(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    let report = state.app.verify_audit_chain(&principal.caller()).await?;
    Ok(HttpResponse::Ok().json(VerifyReport {
        entries_checked: report.entries_checked,
        first_break: report.first_break,
        head: report.head.map(|h| ChainHeadView { hash: hex::encode(h.hash), seq: h.seq }),
        intact: report.is_intact(),
        unsealed_entries: report.unsealed,
        altered_unsealed_entries: report.altered_unsealed,
    }))
}
