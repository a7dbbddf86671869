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
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
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
    // Praxis is self-hosted: there is no one host to name. The API is at the root of wherever an
    // operator deploys it, so the server is the one that served this document.
    servers((url = "/", description = "The Praxis instance that serves this document")),
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
        crate::routes::webhooks::subscribe_sole,
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
        serve,
    ),
    components(schemas(Problem, FieldError, Role, Actor, ApiScope, ChainBreak, Liveness, Readiness, DependencyCheck)),
    modifiers(&SecuritySchemes, &Conventions),
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
        (name = "openapi", description = "This document"),
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

/// What the edge and the error handling do for every operation, documented once here instead of
/// in every handler's annotation:
/// - an operation that names no security scheme is public: `security: []` says so explicitly
///   (the `openapi` test pins which operations those are);
/// - every response carries `X-Request-Id` (the edge middleware sets it);
/// - 429 and 503 answers carry `Retry-After` (`error.rs`);
/// - an operation that takes a JSON body answers 415 to a body of another media type (the JSON
///   extractor's content-type check, answered by `server.rs` as `unsupported-media-type`).
#[derive(Debug)]
pub struct Conventions;

const REQUEST_ID_HEADER: &str = "X-Request-Id";
const RETRY_AFTER_HEADER: &str = "Retry-After";

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.headers.insert(
            REQUEST_ID_HEADER.into(),
            RefOr::T(header(
                Type::String,
                "The request's id: the client's own `X-Request-Id` when it sent a well-formed one, else a new \
                 one. Logged with the request and repeated as `request_id` in problem documents.",
            )),
        );
        components
            .headers
            .insert(RETRY_AFTER_HEADER.into(), RefOr::T(header(Type::Integer, "Seconds to wait before trying again.")));
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                if operation.security.is_none() {
                    operation.security = Some(Vec::new());
                }
                let takes_json = operation.request_body.as_ref().is_some_and(|body| match body {
                    RefOr::T(body) => body.content.contains_key("application/json"),
                    RefOr::Ref(_) => false,
                });
                let responses = &mut operation.responses.responses;
                if takes_json && !responses.contains_key("415") {
                    responses.insert(
                        "415".into(),
                        RefOr::T(
                            ResponseBuilder::new()
                                .description("The body is not `application/json`")
                                .content(
                                    crate::error::PROBLEM_JSON,
                                    ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                                )
                                .build(),
                        ),
                    );
                }
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else { continue };
                    response
                        .headers
                        .insert(REQUEST_ID_HEADER.into(), RefOr::Ref(Ref::new("#/components/headers/X-Request-Id")));
                    if status == "429" || status == "503" {
                        response.headers.insert(
                            RETRY_AFTER_HEADER.into(),
                            RefOr::Ref(Ref::new("#/components/headers/Retry-After")),
                        );
                    }
                }
            }
        }
    }
}

fn header(schema_type: Type, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(schema_type)))
        .description(Some(description))
        .build()
}

/// The operations of a path, with their methods.
fn operations(item: &PathItem) -> [(actix_web::http::Method, Option<&Operation>); 8] {
    use actix_web::http::Method;
    [
        (Method::GET, item.get.as_ref()),
        (Method::PUT, item.put.as_ref()),
        (Method::POST, item.post.as_ref()),
        (Method::DELETE, item.delete.as_ref()),
        (Method::OPTIONS, item.options.as_ref()),
        (Method::HEAD, item.head.as_ref()),
        (Method::PATCH, item.patch.as_ref()),
        (Method::TRACE, item.trace.as_ref()),
    ]
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Every documented path template with the methods it answers: the router's table, as the
/// edge needs it to answer an undocumented method on a known path with 405 and `Allow`.
pub fn routes() -> Vec<(String, Vec<actix_web::http::Method>)> {
    ApiDoc::openapi()
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let methods =
                operations(item).into_iter().filter_map(|(method, operation)| operation.map(|_| method)).collect();
            (path.clone(), methods)
        })
        .collect()
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

/// This OpenAPI document
///
/// Public, like the API's description should be.
#[utoipa::path(get, path = "/openapi.json", tag = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", body = Object, content_type = "application/json"),
        (status = "4XX", description = "A malformed request (e.g. a body over the limit)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn serve() -> HttpResponse {
    match document() {
        Ok(text) => HttpResponse::Ok().content_type("application/json").body(text),
        Err(error) => actix_web::ResponseError::error_response(&crate::error::ApiError::internal(error)),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(serve));
}
