//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations and their request/response types. Served at `GET /openapi.json`; the committed copy
//! is `docs/openapi.json`, kept identical by the `openapi` integration test.
//!
//! The schemas at the end of this file describe types owned by other crates or modules (the
//! problem document of `error.rs`, kernel roles and actors, audit chain breaks) for the document
//! only; tests check they match what those types serialize.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Security scheme names, as referenced by the handlers' `security(...)`.
pub const SESSION_COOKIE_SCHEME: &str = "session_cookie";
pub const CSRF_SCHEME: &str = "csrf_token";
pub const BEARER_SCHEME: &str = "bearer";
pub const API_KEY_SCHEME: &str = "api_key";

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Praxis API",
        description = "Backend core for therapy and medical practices. Every error is RFC 9457 \
            `application/problem+json` (see docs/api-errors.md); every response carries \
            `X-Request-Id` and `X-RateLimit-*` headers.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::health::live,
        crate::health::ready,
        crate::routes::auth::login,
        crate::routes::auth::logout,
        crate::routes::auth::me,
        crate::routes::auth::change_password,
        crate::routes::users::list_users,
        crate::routes::users::create_user,
        crate::routes::users::disable_user,
        crate::routes::users::list_api_keys,
        crate::routes::users::create_api_key,
        crate::routes::users::revoke_api_key,
        crate::routes::audit::query,
        crate::routes::audit::verify,
        crate::routes::patients::create_patient,
        crate::routes::patients::list_patients,
        crate::routes::patients::get_patient,
        crate::routes::patients::update_patient,
        crate::routes::patients::erase_patient,
        crate::routes::patients::set_legal_hold,
        crate::routes::patients::export_patient,
        crate::routes::patients::create_account,
        crate::routes::consents::list_consents,
        crate::routes::consents::record_consent,
        crate::routes::consents::consent_history,
        crate::routes::webhooks::receive,
        crate::routes::webhooks::receive_sole,
        crate::routes::webhooks::subscribe,
        crate::routes::appointments::create_appointment,
        crate::routes::appointments::list_appointments,
        crate::routes::appointments::get_appointment,
        crate::routes::appointments::update_appointment,
        crate::routes::appointments::cancel_appointment,
        crate::routes::appointments::change_status,
        crate::routes::calendar::put_working_hours,
        crate::routes::calendar::get_working_hours,
        crate::routes::calendar::create_absence,
        crate::routes::calendar::list_absences,
        crate::routes::calendar::delete_absence,
        crate::routes::calendar::availability,
    ),
    components(schemas(Problem, FieldError, Role, Actor, ApiScope, ChainBreak, Liveness, Readiness, DependencyCheck)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Liveness and readiness (no authentication, no rate limit)"),
        (name = "auth", description = "Sessions and the caller's own account"),
        (name = "users", description = "Accounts of the practice"),
        (name = "api-keys", description = "API keys of the practice"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "patients", description = "Patient records (encrypted per patient), GDPR export and erasure"),
        (name = "consents", description = "Consent per purpose, with evidence and history"),
        (name = "webhooks", description = "Inbound webhooks from Stripe, WhatsApp, Twilio, Vapi and Standard Webhooks senders, verified by signature (no other authentication)"),
        (name = "appointments", description = "Bookings (no double booking, enforced by the database), status, reminders, payment state"),
        (name = "calendar", description = "Therapists' working hours, absences and free slots"),
    )
)]
pub struct ApiDoc;

/// The problem responses every authenticated operation can give, listed once.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CommonProblems {
    /// No or invalid credentials.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role or key scope does not allow this (audited as `access.denied`), or a failed CSRF check.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// Rate limit hit; see `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// A backing service (database, Redis, KMS) is unavailable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Adds the security schemes the handlers refer to.
#[derive(Debug)]
pub struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SESSION_COOKIE_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "Session token set by `POST /api/v1/auth/login` (`__Host-`, Secure, HttpOnly, SameSite=Strict). \
                 State-changing requests authenticated by this cookie also need `csrf_token` and an allowed `Origin`.",
            ))),
        );
        components.add_security_scheme(
            CSRF_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The value of the `__Host-praxis_csrf` cookie (also returned by login as `csrf_token`); \
                 required together with `session_cookie` on POST, PUT, PATCH and DELETE.",
            ))),
        );
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The session token from `POST /api/v1/auth/login` as `Authorization: Bearer`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "An API key of the practice (service-to-service); what it may do is limited by its scopes.",
            ))),
        );
    }
}

/// The OpenAPI document as pretty-printed JSON with a trailing newline: keys in a stable order, so
/// the committed `docs/openapi.json` can be compared byte for byte.
pub fn document() -> Result<String, serde_json::Error> {
    // Through `serde_json::Value`: its maps are ordered by key.
    let value = serde_json::to_value(ApiDoc::openapi())?;
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    Ok(text)
}

/// `GET /openapi.json`: the document above. Public, like the API's description should be.
pub async fn serve() -> HttpResponse {
    match document() {
        Ok(text) => HttpResponse::Ok().content_type("application/json").body(text),
        Err(error) => actix_web::ResponseError::error_response(&crate::error::ApiError::internal(error)),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(serve));
}

// ---------------------------------------------------------------------------------------------
// Schemas of types owned elsewhere (documentation mirrors).

/// RFC 9457 problem details (`application/problem+json`), as rendered by `error.rs`. `type` is
/// stable (`urn:praxis:problem:<slug>` or `about:blank`); see docs/api-errors.md. Some problems
/// add members of their own (readiness adds `checks` and `failing`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(example = "urn:praxis:problem:not-found")]
    pub problem_type: String,
    #[schema(example = "No such resource")]
    pub title: String,
    #[schema(example = 404)]
    pub status: u16,
    /// Present when it helps the client; never says anything internal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request's `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Field-level problems, for `urn:praxis:problem:validation-failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// A field-level validation failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    #[schema(example = "email")]
    pub field: String,
    #[schema(example = "must be an email address of at most 254 characters")]
    pub message: String,
}

/// A user's role within one practice (`kernel::Role`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Therapist,
    Receptionist,
    Patient,
}

/// Who performed an action (`kernel::Actor`), tagged by `kind`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A signed-in user acting within a practice.
    User { tenant: uuid::Uuid, user: uuid::Uuid, role: Role },
    /// A service calling with an API key (the key's id, never the key).
    ApiKey { tenant: uuid::Uuid, key_id: String },
    /// Praxis itself: migrations, scheduled jobs, operator CLI commands.
    System { component: String },
    /// A verified inbound webhook from a provider.
    Webhook { provider: String },
}

/// A scope an API key may hold (`identity::ApiScope`).
#[derive(Debug, Serialize, ToSchema)]
pub enum ApiScope {
    #[serde(rename = "patients:read")]
    PatientsRead,
    #[serde(rename = "patients:write")]
    PatientsWrite,
    #[serde(rename = "consents:read")]
    ConsentsRead,
    #[serde(rename = "consents:write")]
    ConsentsWrite,
    #[serde(rename = "appointments:read")]
    AppointmentsRead,
    #[serde(rename = "appointments:write")]
    AppointmentsWrite,
    #[serde(rename = "audit:read")]
    AuditRead,
}

/// The first place an audit chain is broken (`audit::Break`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainBreak {
    /// The first affected sequence number (for a gap the first missing one; for a truncated tail
    /// the first one after the end of the chain).
    pub seq: u64,
    pub kind: ChainBreakKind,
}

/// How the chain is broken; the numbers present depend on `kind`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainBreakKind {
    pub kind: ChainBreakName,
    /// `sequence_gap`, `out_of_order`: the seq expected next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// `sequence_gap`, `out_of_order`: the seq found instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<u64>,
    /// `checkpoint_mismatch`, `truncated_tail`, `checkpoint_signature_invalid`,
    /// `checkpoint_unsigned`: the checkpoint's seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<u64>,
    /// `truncated_tail`: the last seq of the chain (0 when empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

/// The kinds of chain break (`audit::BreakKind`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChainBreakName {
    HashMismatch,
    PrevHashMismatch,
    SequenceGap,
    OutOfOrder,
    ForeignTenant,
    CheckpointMismatch,
    TruncatedTail,
    /// A stored checkpoint's signature does not verify with the practice's KMS-held key.
    CheckpointSignatureInvalid,
    /// A checkpoint taken after the practice's checkpoints began to be signed has no signature.
    CheckpointUnsigned,
}

/// `GET /health/live`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "live")]
    pub status: String,
}

/// `GET /health/ready` when every dependency answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: String,
    /// One entry per dependency (`postgres`, `redis`, `kms`) and `rate_limiter`.
    pub checks: std::collections::BTreeMap<String, DependencyCheck>,
}

/// The state of one dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyCheck {
    /// `up` or `down`; for `rate_limiter`, `redis` or `degraded (in-process fallback)`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn role_mirror_matches_kernel() {
        let mirror = [Role::Admin, Role::Therapist, Role::Receptionist, Role::Patient];
        for (role, mirror) in kernel::Role::ALL.into_iter().zip(mirror) {
            assert_eq!(serde_json::to_value(role).unwrap(), serde_json::to_value(mirror).unwrap());
        }
    }

    #[test]
    fn api_scope_mirror_matches_identity() {
        use ApiScope as M;
        let mirror = [
            M::PatientsRead,
            M::PatientsWrite,
            M::ConsentsRead,
            M::ConsentsWrite,
            M::AppointmentsRead,
            M::AppointmentsWrite,
            M::AuditRead,
        ];
        assert_eq!(identity::ApiScope::ALL.len(), mirror.len());
        for (scope, mirror) in identity::ApiScope::ALL.into_iter().zip(mirror) {
            assert_eq!(serde_json::to_value(scope).unwrap(), serde_json::to_value(mirror).unwrap());
        }
    }

    #[test]
    fn actor_mirror_matches_kernel() {
        let tenant = kernel::TenantId::new();
        let user = kernel::UserId::new();
        let real = kernel::Actor::User { tenant, user, role: kernel::Role::Admin };
        let mirror = Actor::User { tenant: *tenant.as_uuid(), user: *user.as_uuid(), role: Role::Admin };
        assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
    }

    #[test]
    fn problem_mirror_matches_error_rs() {
        let real = crate::ApiError::Validation {
            errors: vec![crate::error::FieldError { field: "f".into(), message: "m".into() }],
        }
        .problem();
        let mirror = Problem {
            problem_type: real.problem_type.clone(),
            title: real.title.clone(),
            status: real.status,
            detail: None,
            request_id: None,
            errors: Some(vec![FieldError { field: "f".into(), message: "m".into() }]),
        };
        assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
    }

    #[test]
    fn break_mirror_matches_audit() {
        let real = audit::Break { seq: 7, kind: audit::BreakKind::SequenceGap { expected: 7, found: 9 } };
        let mirror = ChainBreak {
            seq: 7,
            kind: ChainBreakKind {
                kind: ChainBreakName::SequenceGap,
                expected: Some(7),
                found: Some(9),
                checkpoint_seq: None,
                last_seq: None,
            },
        };
        assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
        let real = audit::Break { seq: 4, kind: audit::BreakKind::CheckpointSignatureInvalid { checkpoint_seq: 4 } };
        let mirror = ChainBreak {
            seq: 4,
            kind: ChainBreakKind {
                kind: ChainBreakName::CheckpointSignatureInvalid,
                expected: None,
                found: None,
                checkpoint_seq: Some(4),
                last_seq: None,
            },
        };
        assert_eq!(serde_json::to_value(real).unwrap(), serde_json::to_value(mirror).unwrap());
    }
}
