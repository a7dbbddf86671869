//! `POST /webhooks/{provider}/{practice_id}` and the WhatsApp subscription handshake
//! `GET /webhooks/whatsapp/{practice_id}`.
//!
//! No authentication extractor: the provider proves itself by signing the raw body with the
//! practice's secret (the pure `webhooks` crate), before anything in the body is parsed, in
//! every environment. In order:
//!
//! 1. The endpoint: the provider must be configured for the practice named in the path
//!    (`[webhooks.tenants]`), else 404. The practice is never read from the body.
//! 2. The body, at most 256 KiB: a larger declared length is refused before a byte is read, a
//!    longer stream as soon as it passes the limit (413).
//! 3. Verification and parsing (`webhooks::receive`, called by `app::webhook_ingest` before it
//!    does anything else). A rejection answers 400 (payload) or 401
//!    (authentication) with a generic problem, and writes `webhook.rejected` to the practice's
//!    audit trail with the provider, the reason class and the source IP, at most
//!    `webhooks.rejection_audits_per_ip_per_minute` times per address and minute. Unverified
//!    requests are limited per address by the global limit, not by the practice's budget, so
//!    forged requests cannot use that budget up: before a rejection is audited, the request
//!    guard's checks (block list, global limit: `middleware::check_client`) run here.
//! 4. The provider's budget for the practice (`webhooks.rate_limits`), counted for verified
//!    deliveries only, in the same Redis round trip as the event keys' claims and the sender's
//!    block-list entry (`app::webhook_ingest`): 429 + `Retry-After` over it, 403 from a
//!    blocked address; its `X-RateLimit-*` on the answer (the global limit's on answers that
//!    never reached it). Not the global per-address limit: every practice's deliveries of a
//!    provider come from the provider's few addresses.
//! 5. De-duplication and the handlers (`app::webhook_ingest`): 200 `{"received": true,
//!    "duplicate": false}`, or `"duplicate": true` for an event processed before.
//!
//! The request guard (`middleware::guard`) leaves these routes' answers alone (they carry
//! `GuardedByRoute`); it checks the router's own answers under `/webhooks/` (404, 405) after
//! the fact, as they did no work. A blocked or over-limit address's request is therefore read
//! (at most 256 KiB) and verified (one HMAC) before it is refused; nothing is written for it.

use crate::error::{ApiError, current_request_id};
use crate::middleware::{GuardedByRoute, check_client, with_global_limit};
use crate::state::AppState;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use app::webhook_ingest::{Endpoint, MessageRow, Outcome, RawDelivery, Verdict};
use futures_util::StreamExt;
use kernel::TenantId;
use serde::Serialize;
use utoipa::ToSchema;
use webhooks::{Headers, Provider, RejectReason, WebhookError};

/// Largest webhook body accepted (issue #7); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhooks/{provider}/{practice_id}")
            .route(web::post().to(receive))
            .route(web::get().to(subscribe)),
    )
    .service(
        web::resource("/webhooks/{provider}").route(web::post().to(receive_sole)).route(web::get().to(subscribe_sole)),
    );
}

/// The answer to an accepted webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// Always true: the delivery is verified and stored (or was before).
    received: bool,
    /// True when every event in the delivery was processed before; it was not processed again.
    duplicate: bool,
}

/// The providers, by the name used in endpoint paths.
const PROVIDERS: [(&str, Provider); 5] = [
    ("stripe", Provider::Stripe),
    ("whatsapp", Provider::WhatsApp),
    ("twilio", Provider::Twilio),
    ("vapi", Provider::Vapi),
    ("standard", Provider::Standard),
];

/// The endpoint a request addresses. `practice`: the id from the path, or `None` for the path
/// without one (the sole practice configuring the provider).
fn endpoint<'s>(state: &'s AppState, provider: &str, practice: Option<&str>) -> Result<Endpoint<'s>, ApiError> {
    let provider = PROVIDERS.iter().find(|(path, _)| *path == provider).map(|(_, p)| *p).ok_or(ApiError::NotFound)?;
    let practice = match practice {
        Some(id) => Some(id.parse::<uuid::Uuid>().map(TenantId::from_uuid).map_err(|_| ApiError::NotFound)?),
        None => None,
    };
    Ok(state.app.webhook_endpoint(provider, practice)?)
}

/// The `X-RateLimit-*` values of a decision on the provider's budget for the practice.
fn limit_headers(state: &AppState, decision: &cache_redis::Decision) -> [(&'static str, String); 3] {
    let reset_at = state.clock.now().unix_timestamp() + i64::try_from(decision.reset_after_secs()).unwrap_or(0);
    [
        ("x-ratelimit-limit", decision.limit.to_string()),
        ("x-ratelimit-remaining", decision.remaining.to_string()),
        ("x-ratelimit-reset", reset_at.to_string()),
    ]
}

fn with_headers(mut response: HttpResponse, headers: &[(&'static str, String)]) -> HttpResponse {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`]: by the declared length before reading,
/// else as soon as the stream passes the limit.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge { limit_bytes: MAX_BODY_BYTES };
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest { detail: "The request body could not be read.".into() })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn headers_of(req: &HttpRequest) -> Headers {
    req.headers().iter().map(|(name, value)| (name.as_str(), value.as_bytes())).collect()
}

/// Receive a provider's webhook for a practice
#[utoipa::path(post, path = "/webhooks/{provider}/{practice_id}", tag = "webhooks",
    params(
        ("provider" = String, Path, description = "`stripe`, `whatsapp`, `twilio`, `vapi` or `standard`"),
        ("practice_id" = uuid::Uuid, Path, description = "The practice the endpoint belongs to (`webhooks.tenants`)"),
    ),
    request_body(content = String, description = "The provider's payload, at most 256 KiB, verified on its raw bytes: Stripe `Stripe-Signature`; WhatsApp `X-Hub-Signature-256`; Twilio `X-Twilio-Signature` over the configured public URL (form or JSON with `bodySHA256`); Vapi `x-signature` + `x-timestamp` (or the legacy `x-vapi-secret`); Standard Webhooks `webhook-id`, `webhook-timestamp`, `webhook-signature`",
        content_type = "application/json"),
    responses(
        (status = 200, description = "Verified and processed, or a duplicate of an event processed before (`duplicate`: true); nothing is processed twice", body = WebhookReceipt),
        (status = 400, description = "Verified, but the payload is not one Praxis accepts (audited as `webhook.rejected`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Verification failed: missing, malformed or wrong signature, or a timestamp outside the window (audited as `webhook.rejected`); no detail is given", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The source address is on the IP block list (`praxis ip block`); nothing is processed, and a verified delivery's event claim is released so a retry from elsewhere is processed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider, or not configured for this practice", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The provider's rate limit for this practice; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable; the provider should retry", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn receive(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (provider, practice) = path.into_inner();
    receive_at(&req, &state, endpoint(&state, &provider, Some(&practice))?, payload).await
}

/// Receive a provider's webhook (single-practice deployments)
#[utoipa::path(post, path = "/webhooks/{provider}", tag = "webhooks",
    params(("provider" = String, Path, description = "`stripe`, `whatsapp`, `twilio`, `vapi` or `standard`")),
    request_body(content = String, description = "As for `/webhooks/{provider}/{practice_id}`", content_type = "application/json"),
    responses(
        (status = 200, description = "As for `/webhooks/{provider}/{practice_id}`, for the one practice that configures the provider (single-practice deployments)", body = WebhookReceipt),
        (status = 400, description = "Verified, but the payload is not one Praxis accepts", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Verification failed; no detail is given", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The source address is on the IP block list", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No practice, or more than one, configures this provider: use the path with the practice id", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The provider's rate limit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn receive_sole(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    receive_at(&req, &state, endpoint(&state, &path, None)?, payload).await
}

async fn receive_at(
    req: &HttpRequest,
    state: &AppState,
    endpoint: Endpoint<'_>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    Ok(GuardedByRoute::mark(receive_verified(req, state, &endpoint, payload).await))
}

async fn receive_verified(
    req: &HttpRequest,
    state: &AppState,
    endpoint: &Endpoint<'_>,
    payload: web::Payload,
) -> HttpResponse {
    let body = match read_body(req, payload).await {
        Ok(body) => body,
        Err(error @ ApiError::PayloadTooLarge { .. }) => {
            return rejected(state, req, endpoint, RejectReason::PayloadTooLarge, error, None).await;
        }
        Err(error) => return guarded_error(state, req, error).await,
    };
    let headers = headers_of(req);
    let delivery = RawDelivery {
        headers: &headers,
        body: &body,
        path: req.uri().path(),
        query: req.query_string(),
        sender: crate::auth::client_ip(req, state),
        request_id: current_request_id(),
    };
    match state.app.receive_webhook(endpoint, delivery).await {
        Verdict::Rejected(rejection) => {
            let error = answer_for(&rejection);
            rejected(state, req, endpoint, rejection.reason(), error, None).await
        }
        Verdict::Counted { budget, result } => {
            let response = match result {
                Ok(Outcome::Duplicate) => HttpResponse::Ok().json(WebhookReceipt { received: true, duplicate: true }),
                Ok(Outcome::Processed { .. } | Outcome::Empty) => {
                    HttpResponse::Ok().json(WebhookReceipt { received: true, duplicate: false })
                }
                Err(error) => ApiError::from(error).error_response(),
            };
            with_headers(response, &limit_headers(state, &budget))
        }
    }
}

/// The answer to a request that failed before verification, once the request guard's checks
/// pass (else the guard's refusal).
async fn guarded_error(state: &AppState, req: &HttpRequest, error: ApiError) -> HttpResponse {
    match check_client(state, crate::auth::client_ip(req, state)).await {
        Ok(global) => with_global_limit(state, error.error_response(), &global),
        Err(refusal) => refusal,
    }
}

/// The generic answer to a rejection: nothing in it says which check failed.
fn answer_for(rejection: &WebhookError) -> ApiError {
    let reason = rejection.reason();
    if reason == RejectReason::PayloadTooLarge {
        ApiError::PayloadTooLarge { limit_bytes: MAX_BODY_BYTES }
    } else if reason == RejectReason::PayloadInvalid {
        ApiError::BadRequest { detail: "The webhook was not accepted.".into() }
    } else if reason.is_configuration_fault() {
        // The practice's configuration cannot verify anything (no usable secret, no public URL
        // for Twilio): the operator must fix it; a 5xx makes the provider retry until then.
        ApiError::internal(anyhow::anyhow!("webhook endpoint misconfigured: {rejection}"))
    } else {
        ApiError::Unauthorized
    }
}

/// Answers a rejected webhook and has it audited (`app::webhook_ingest`, rate-limited per
/// source IP). `checked`: the request guard's decision when its checks ran already (the
/// WhatsApp handshake checks first); otherwise they run here.
async fn rejected(
    state: &AppState,
    req: &HttpRequest,
    endpoint: &Endpoint<'_>,
    reason: RejectReason,
    answer: ApiError,
    checked: Option<cache_redis::Decision>,
) -> HttpResponse {
    let ip = crate::auth::client_ip(req, state);
    // Unverified: limited per address as any request is, before anything is written for it.
    let global = match checked {
        Some(decision) => decision,
        None => match check_client(state, ip).await {
            Ok(decision) => decision,
            Err(refusal) => return refusal,
        },
    };
    state.app.record_webhook_rejection(endpoint, reason, ip, current_request_id()).await;
    with_global_limit(state, answer.error_response(), &global)
}

/// WhatsApp subscription handshake for a practice
#[utoipa::path(get, path = "/webhooks/{provider}/{practice_id}", tag = "webhooks",
    params(
        ("provider" = String, Path, description = "`whatsapp`: the only provider with a handshake"),
        ("practice_id" = uuid::Uuid, Path, description = "The practice the endpoint belongs to"),
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query, description = "One of `webhooks.tenants.<id>.whatsapp.verify_tokens`"),
        ("hub.challenge" = String, Query, description = "Echoed back on success (1 to 128 of `[A-Za-z0-9._-]`)"),
    ),
    responses(
        (status = 200, description = "The challenge, as `text/plain`", body = String, content_type = "text/plain"),
        (status = 400, description = "Not a well-formed subscription request (audited as `webhook.rejected`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "The verify token matches none configured (audited as `webhook.rejected`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The source address is on the IP block list", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider, or not configured for this practice", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 405, description = "The provider has no handshake (every one but WhatsApp); `Allow: POST`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The WhatsApp rate limit for this practice", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn subscribe(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (provider, practice) = path.into_inner();
    subscribe_at(&req, &state, endpoint(&state, &provider, Some(&practice))?).await
}

/// WhatsApp subscription handshake (single-practice deployments)
///
/// The handshake of the sole practice configuring WhatsApp, as `/webhooks/whatsapp/{practice_id}`
/// is for a named practice. No other provider has one: they answer 405.
#[utoipa::path(get, path = "/webhooks/{provider}", tag = "webhooks",
    params(
        ("provider" = String, Path, description = "`whatsapp`: the only provider with a handshake"),
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query, description = "One of `webhooks.tenants.<id>.whatsapp.verify_tokens` of the practice configuring WhatsApp"),
        ("hub.challenge" = String, Query, description = "Echoed back on success (1 to 128 of `[A-Za-z0-9._-]`)"),
    ),
    responses(
        (status = 200, description = "The challenge, as `text/plain`", body = String, content_type = "text/plain"),
        (status = 400, description = "Not a well-formed subscription request (audited as `webhook.rejected`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "The verify token matches none configured (audited as `webhook.rejected`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The source address is on the IP block list", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider, or no practice (or more than one) configures it: use the path with the practice id", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 405, description = "The provider has no handshake (every one but WhatsApp); `Allow: POST`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The WhatsApp rate limit of the practice", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn subscribe_sole(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    subscribe_at(&req, &state, endpoint(&state, &path, None)?).await
}

async fn subscribe_at(req: &HttpRequest, state: &AppState, endpoint: Endpoint<'_>) -> Result<HttpResponse, ApiError> {
    let response = subscribe_checked(req, state, &endpoint).await.unwrap_or_else(|error| error.error_response());
    Ok(GuardedByRoute::mark(response))
}

async fn subscribe_checked(
    req: &HttpRequest,
    state: &AppState,
    endpoint: &Endpoint<'_>,
) -> Result<HttpResponse, ApiError> {
    // A handshake is rare and cheap: the request guard's checks first, as for any request.
    let global = match check_client(state, crate::auth::client_ip(req, state)).await {
        Ok(decision) => decision,
        Err(refusal) => return Ok(refusal),
    };
    if endpoint.provider != Provider::WhatsApp {
        // The path's other method is the delivery.
        let mut response = ApiError::MethodNotAllowed.error_response();
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    // Counted against the practice's WhatsApp budget once verified, as deliveries are.
    match state.app.confirm_whatsapp_subscription(endpoint, req.query_string()).await {
        Verdict::Rejected(rejection) => {
            let answer = match rejection.reason() {
                RejectReason::PayloadInvalid => {
                    ApiError::BadRequest { detail: "The subscription request was not accepted.".into() }
                }
                _ => ApiError::Unauthorized,
            };
            Ok(rejected(state, req, endpoint, rejection.reason(), answer, Some(global)).await)
        }
        Verdict::Counted { budget, result } => {
            let response = match result {
                Ok(challenge) => HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(challenge),
                Err(error) => ApiError::from(error).error_response(),
            };
            Ok(with_headers(response, &limit_headers(state, &budget)))
        }
    }
}

/// A logged inbound message as the patient's GDPR export shows it: metadata and the text's
/// digest, never the text. (Fields in key order: the body is byte-for-byte what it was as a
/// `json!` object.)
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// The channel it came in on, e.g. `whatsapp` or `sms`.
    channel: String,
    /// SHA-256 of the message text, hex; null for messages without text.
    content_sha256: Option<String>,
    id: uuid::Uuid,
    /// The provider's id of the message.
    message_id: String,
    /// The provider's message type, e.g. `text`.
    message_type: String,
    /// The provider that delivered it, e.g. `whatsapp` or `twilio`.
    provider: String,
    #[serde(with = "time::serde::rfc3339")]
    received_at: time::OffsetDateTime,
    /// When the sender says it was sent, if the provider tells.
    #[serde(with = "time::serde::rfc3339::option")]
    sent_at: Option<time::OffsetDateTime>,
    /// Whether the text was a stop keyword (which withdraws marketing consent for the channel).
    stop_keyword: bool,
}

impl From<&MessageRow> for MessageView {
    fn from(message: &MessageRow) -> Self {
        Self {
            channel: message.channel.clone(),
            content_sha256: message.content_sha256.as_deref().map(hex::encode),
            id: message.id,
            message_id: message.message_id.clone(),
            message_type: message.message_type.clone(),
            provider: message.provider.clone(),
            received_at: message.received_at,
            sent_at: message.sent_at,
            stop_keyword: message.stop_keyword,
        }
    }
}
