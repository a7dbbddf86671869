//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations and their request/response types. Served at `GET /openapi.json`; the committed copy
//! is `docs/openapi.json`, kept identical by the `openapi` integration test.
//!
//! This module lists every route (so it depends on `routes` and `health`); the schemas those
//! routes share live in `crate::openapi`, which depends on no route, so no module cycle forms.

use crate::openapi::{
    API_KEY_SCHEME, Actor, ApiScope, BEARER_SCHEME, CSRF_SCHEME, ChainBreak, DependencyCheck, FieldError, Liveness,
    Problem, Readiness, Role, SESSION_COOKIE_SCHEME,
};
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
