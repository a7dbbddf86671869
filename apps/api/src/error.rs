//! The one API error type. Every error response is RFC 9457 `application/problem+json` with a
//! stable `type`, a `title`, the `status`, and the request id. A 500 says nothing of internals; its
//! cause is logged with the request id so an operator can find it.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use kernel::RequestId;
use serde::Serialize;
use std::fmt;

pub const PROBLEM_JSON: &str = "application/problem+json";

tokio::task_local! {
    /// The id of the request being handled, set by the edge middleware for the whole handler
    /// chain, so any error rendered anywhere below it carries the id.
    pub static REQUEST_ID: RequestId;
}

/// The request id of the current request, if rendering happens inside one.
pub fn current_request_id() -> Option<RequestId> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A field-level validation failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {detail}")]
    BadRequest { detail: String },
    #[error("validation failed")]
    Validation { errors: Vec<FieldError> },
    #[error("authentication required")]
    Unauthorized,
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {detail}")]
    Conflict { detail: String },
    /// A state machine refused the change (consent, appointment): 409 with the allowed ones.
    #[error("illegal transition: {detail}")]
    IllegalTransition { detail: String, allowed: Vec<String> },
    /// Erasure refused while a legal hold is set on the record.
    #[error("legal hold")]
    LegalHold,
    /// A booking does not fit the therapist's calendar (working hours, absence, another booking):
    /// 409 with a machine-readable `reason` and, when the caller may know it, the conflicting slot.
    #[error("slot unavailable: {reason}")]
    SlotUnavailable {
        reason: &'static str,
        detail: String,
        conflicting_slot: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    },
    #[error("gone")]
    Gone,
    #[error("payload too large")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("service unavailable: {detail}")]
    ServiceUnavailable { detail: String },
    /// Any other HTTP error status produced outside our handlers (by the framework).
    #[error("http error {0}")]
    Status(StatusCode),
    /// A bug or an unexpected dependency failure. The cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(cause.into())
    }

    /// Stable problem type slug. Clients may switch on it; it never changes meaning.
    pub fn slug(&self) -> Option<&'static str> {
        Some(match self {
            ApiError::BadRequest { .. } => "bad-request",
            ApiError::Validation { .. } => "validation-failed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound => "not-found",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::IllegalTransition { .. } => "illegal-transition",
            ApiError::LegalHold => "legal-hold",
            ApiError::SlotUnavailable { .. } => "slot-unavailable",
            ApiError::Gone => "gone",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::TooManyRequests { .. } => "rate-limited",
            ApiError::ServiceUnavailable { .. } => "service-unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Status(_) => return None,
        })
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "The request is malformed",
            ApiError::Validation { .. } => "The request failed validation",
            ApiError::Unauthorized => "Authentication is required",
            ApiError::Forbidden => "You may not do this",
            ApiError::NotFound => "No such resource",
            ApiError::MethodNotAllowed => "Method not allowed on this resource",
            ApiError::Conflict { .. } => "The request conflicts with the current state",
            ApiError::IllegalTransition { .. } => "This change is not allowed in the current state",
            ApiError::LegalHold => "The record is under a legal hold",
            ApiError::SlotUnavailable { .. } => "The slot cannot be booked",
            ApiError::Gone => "The resource is gone",
            ApiError::PayloadTooLarge { .. } => "The request body is too large",
            ApiError::UnsupportedMediaType => "Unsupported content type",
            ApiError::TooManyRequests { .. } => "Too many requests",
            ApiError::ServiceUnavailable { .. } => "Service temporarily unavailable",
            ApiError::Internal(_) => "Internal server error",
            ApiError::Status(status) => status.canonical_reason().unwrap_or("Error"),
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            ApiError::BadRequest { detail }
            | ApiError::Conflict { detail }
            | ApiError::ServiceUnavailable { detail }
            | ApiError::IllegalTransition { detail, .. }
            | ApiError::SlotUnavailable { detail, .. } => Some(detail.clone()),
            ApiError::LegalHold => {
                Some("Erasure is refused while a legal hold is set; an admin must lift it first.".into())
            }
            ApiError::Gone => Some("This record was erased.".into()),
            ApiError::PayloadTooLarge { limit_bytes } => Some(format!("The body must not exceed {limit_bytes} bytes.")),
            ApiError::TooManyRequests { retry_after_secs } => Some(format!("Retry after {retry_after_secs} seconds.")),
            _ => None,
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: match self.slug() {
                Some(slug) => format!("{PROBLEM_TYPE_BASE}{slug}"),
                None => "about:blank".to_owned(),
            },
            title: self.title().to_owned(),
            status: self.status_code().as_u16(),
            detail: self.detail(),
            request_id: current_request_id().map(|id| id.to_string()),
            errors: match self {
                ApiError::Validation { errors } => Some(errors.clone()),
                _ => None,
            },
            extensions: match self {
                ApiError::IllegalTransition { allowed, .. } => {
                    let mut members = serde_json::Map::new();
                    members.insert("allowed".into(), serde_json::json!(allowed));
                    Some(members)
                }
                ApiError::SlotUnavailable { reason, conflicting_slot, .. } => {
                    let mut members = serde_json::Map::new();
                    members.insert("reason".into(), serde_json::json!(reason));
                    if let Some((start, end)) = conflicting_slot {
                        let format = |t: &time::OffsetDateTime| {
                            t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
                        };
                        members.insert(
                            "conflicting_slot".into(),
                            serde_json::json!({ "start": format(start), "end": format(end) }),
                        );
                    }
                    Some(members)
                }
                _ => None,
            },
        }
    }
}

/// `Retry-After` of a 503 `service-unavailable`, in seconds.
pub const SERVICE_UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;

/// Prefix of every problem `type` Praxis defines; see docs/api-errors.md.
pub const PROBLEM_TYPE_BASE: &str = "urn:praxis:problem:";

/// RFC 9457 problem details.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// Further members specific to one problem (e.g. readiness checks).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Problem {
    pub fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)))
            .body(body)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.title)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::Validation { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. }
            | ApiError::IllegalTransition { .. }
            | ApiError::LegalHold
            | ApiError::SlotUnavailable { .. } => StatusCode::CONFLICT,
            ApiError::Gone => StatusCode::GONE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Status(status) => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            let request_id = current_request_id().map(|id| id.to_string()).unwrap_or_default();
            tracing::error!(request_id = %request_id, error = format!("{cause:#}"), "internal error");
        }
        let mut response = self.problem().into_response();
        let retry_after_secs = match self {
            ApiError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
            // A dependency is down or a transaction lost a race: the client should come back, and
            // soon (a restarting database or a failover takes seconds), not hammer it at once.
            ApiError::ServiceUnavailable { .. } => Some(SERVICE_UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// The one place a use case's error becomes an HTTP answer.
impl From<app::Error> for ApiError {
    fn from(error: app::Error) -> Self {
        match error {
            app::Error::Invalid(problems) => ApiError::Validation {
                errors: problems.into_iter().map(|p| FieldError { field: p.field, message: p.message }).collect(),
            },
            app::Error::Unauthenticated => ApiError::Unauthorized,
            app::Error::Forbidden => ApiError::Forbidden,
            app::Error::NotFound => ApiError::NotFound,
            app::Error::Gone => ApiError::Gone,
            app::Error::LegalHold => ApiError::LegalHold,
            app::Error::Conflict(detail) => ApiError::Conflict { detail },
            app::Error::IllegalTransition { detail, allowed } => ApiError::IllegalTransition { detail, allowed },
            app::Error::RateLimited { retry_after_secs } => ApiError::TooManyRequests { retry_after_secs },
            app::Error::SlotUnavailable { reason, detail, conflicting_slot } => ApiError::SlotUnavailable {
                reason,
                detail,
                conflicting_slot: conflicting_slot.map(|slot| (slot.start(), slot.end())),
            },
            app::Error::Unavailable(detail) => ApiError::ServiceUnavailable { detail },
            app::Error::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<store_postgres::StoreError> for ApiError {
    fn from(error: store_postgres::StoreError) -> Self {
        match error {
            store_postgres::StoreError::Unavailable(_) => {
                tracing::warn!(error = %error, "database unavailable");
                ApiError::ServiceUnavailable { detail: "A backing service is unavailable; try again shortly.".into() }
            }
            store_postgres::StoreError::Contention(_) => {
                tracing::warn!(error = %error, "transaction lost a race with a concurrent one");
                ApiError::ServiceUnavailable {
                    detail: "The request collided with a concurrent change and was undone whole; try again.".into(),
                }
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<store_postgres::AuditStoreError> for ApiError {
    fn from(error: store_postgres::AuditStoreError) -> Self {
        match error {
            store_postgres::AuditStoreError::Store(store) => store.into(),
            // The checkpoint signer's KMS (or its key store) is down: verification cannot answer
            // now, and must not guess.
            store_postgres::AuditStoreError::Audit(audit::AuditError::Signer(cause))
                if cause
                    .downcast_ref::<app::checkpoint_signer::SignerError>()
                    .is_some_and(app::checkpoint_signer::SignerError::is_retryable) =>
            {
                tracing::warn!(error = %cause, "checkpoint signer unavailable");
                ApiError::ServiceUnavailable { detail: "A backing service is unavailable; try again shortly.".into() }
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        store_postgres::StoreError::classify(error).into()
    }
}
