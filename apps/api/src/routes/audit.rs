//! `GET /api/v1/audit` (query) and `GET /api/v1/audit/verify` (chain verification), admin only.

use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use audit::{Action, AuditFilter, ChainedEntry, Outcome, Page};
use identity::Permission;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/audit", web::get().to(query)).route("/api/v1/audit/verify", web::get().to(verify));
}

/// Query parameters; unknown ones are rejected so a typo is not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    action: Option<String>,
    outcome: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    /// A user id: entries whose actor is that user.
    actor_user: Option<uuid::Uuid>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
    cursor: Option<u64>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct EntryView {
    seq: u64,
    hash: String,
    prev_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    actor: kernel::Actor,
    action: &'static str,
    resource_type: String,
    resource_id: Option<String>,
    outcome: &'static str,
    request_id: Option<String>,
    detail: serde_json::Value,
}

impl From<ChainedEntry> for EntryView {
    fn from(entry: ChainedEntry) -> Self {
        let event = entry.event;
        Self {
            seq: entry.seq,
            hash: hex::encode(entry.hash),
            prev_hash: hex::encode(entry.prev_hash),
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

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::Validation { errors: vec![FieldError { field: field.into(), message: message.into() }] }
}

async fn query(
    state: web::Data<AppState>,
    principal: Principal,
    params: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::AuditRead)?;
    let params = params.into_inner();
    let filter = AuditFilter {
        actor: params.actor_user.map(|user| kernel::Actor::User {
            tenant: principal.tenant,
            user: kernel::UserId::from_uuid(user),
            role: kernel::Role::Admin,
        }),
        action: params
            .action
            .as_deref()
            .map(str::parse::<Action>)
            .transpose()
            .map_err(|_| invalid("action", "unknown action"))?,
        outcome: params
            .outcome
            .as_deref()
            .map(str::parse::<Outcome>)
            .transpose()
            .map_err(|_| invalid("outcome", "expected success, failure or denied"))?,
        resource_type: params.resource_type,
        resource_id: params.resource_id,
        from: params.from,
        to: params.to,
    };
    if filter.validate().is_err() {
        return Err(invalid("from", "must be before `to`"));
    }
    let page = Page::new(params.cursor, params.limit.unwrap_or(Page::DEFAULT_LIMIT))
        .map_err(|_| invalid("limit", "must be between 1 and 200"))?;
    // An actor is stored with the role it acted in, and a user's role can change over time: an
    // `actor_user` filter asks for each role and merges the newest-first pages.
    let result = match &filter.actor {
        Some(kernel::Actor::User { user, .. }) => {
            let limit = page.limit() as usize;
            let mut entries = Vec::new();
            for role in kernel::Role::ALL {
                let actor = kernel::Actor::User { tenant: principal.tenant, user: *user, role };
                let by_role = AuditFilter { actor: Some(actor), ..filter.clone() };
                let part = state.audit.query_entries(principal.tenant, &by_role, page).await.map_err(ApiError::from)?;
                entries.extend(part.entries);
            }
            entries.sort_by_key(|entry| std::cmp::Reverse(entry.seq));
            entries.truncate(limit);
            let next_cursor = if entries.len() == limit { entries.last().map(|e| e.seq) } else { None };
            audit::AuditPage { entries, next_cursor }
        }
        _ => state.audit.query_entries(principal.tenant, &filter, page).await.map_err(ApiError::from)?,
    };
    let entries: Vec<EntryView> = result.entries.into_iter().map(EntryView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "entries": entries, "next_cursor": result.next_cursor })))
}

async fn verify(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::AuditVerify)?;
    let report = state.audit.verify_chain(principal.tenant).await.map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(json!({
        "intact": report.first_break.is_none(),
        "entries_checked": report.entries_checked,
        "head": report.head.map(|h| json!({ "seq": h.seq, "hash": hex::encode(h.hash) })),
        "first_break": report.first_break,
    })))
}
