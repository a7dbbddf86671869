//! The edge of every request: request id, body size limit, problem+json for every error the
//! framework produces, 405 with `Allow` for a known path asked with another method, and the
//! security headers. It wraps everything else, so it also sees 404s, 405s, 413s and 500s.

use crate::error::{ApiError, PROBLEM_JSON, REQUEST_ID};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use kernel::RequestId;
use tracing::Instrument;

pub const X_REQUEST_ID: &str = "x-request-id";

/// Limits the edge enforces; registered as app data.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub body_limit_bytes: usize,
}

/// Headers set on every response. An API that serves no HTML still sets CSP and frame options:
/// if a response is ever rendered by a browser, it can load nothing and be framed by no one.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// The API's paths and the methods each one answers, registered as app data (the server builds
/// it from the OpenAPI document, which lists every route; the `openapi` test holds the document
/// to the router). The router alone answers a known path asked with an unknown method (`TRACE`,
/// `PUT` on a collection) with 404, as it matches path and method together.
#[derive(Debug, Default)]
pub struct KnownRoutes {
    paths: Vec<(actix_web::dev::ResourceDef, Vec<actix_web::http::Method>)>,
}

impl KnownRoutes {
    /// `routes`: path templates (`/api/v1/patients/{id}`) with their methods.
    pub fn new(routes: impl IntoIterator<Item = (String, Vec<actix_web::http::Method>)>) -> Self {
        Self {
            paths: routes
                .into_iter()
                .map(|(template, methods)| (actix_web::dev::ResourceDef::new(template), methods))
                .collect(),
        }
    }

    /// The `Allow` value for `path` when it is a known path that does not answer `method`;
    /// `None` for an unknown path or an allowed method. Templates overlap (`/webhooks/whatsapp`
    /// and `/webhooks/{provider}`): a path answers the methods of every template it matches.
    pub fn disallowed(&self, method: &actix_web::http::Method, path: &str) -> Option<String> {
        let mut allowed: Vec<&actix_web::http::Method> = Vec::new();
        for (template, methods) in &self.paths {
            if template.is_match(path) {
                for method in methods {
                    if !allowed.contains(&method) {
                        allowed.push(method);
                    }
                }
            }
        }
        if allowed.is_empty() || allowed.contains(&method) {
            return None;
        }
        let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
        Some(names.join(", "))
    }
}

pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .and_then(RequestId::parse_inbound)
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(request_id.clone());
    let limit = req.app_data::<web::Data<EdgeLimits>>().map(|l| l.body_limit_bytes).unwrap_or(usize::MAX);

    let span = tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.path());

    let early_rejection = match declared_length(req.headers()) {
        Err(()) => Some(ApiError::BadRequest { detail: "The Content-Length header is not a number.".into() }),
        Ok(Some(length)) if length > limit => Some(ApiError::PayloadTooLarge { limit_bytes: limit }),
        Ok(_) => None,
    };

    let mut response = match early_rejection {
        // Refused before a byte of the body is read.
        Some(error) => REQUEST_ID.sync_scope(request_id.clone(), || req.into_response(error.error_response())),
        None => match REQUEST_ID.scope(request_id.clone(), next.call(req)).instrument(span.clone()).await {
            Ok(response) => response.map_into_boxed_body(),
            // Handlers and extractors turn their errors into responses before this point; only a
            // middleware inside this one could return `Err`, and Praxis middleware returns
            // responses instead (see docs/architecture.md). Should one ever slip through, it is
            // still answered as problem+json by the framework through `ApiError`.
            Err(error) => {
                let rendered = REQUEST_ID.sync_scope(request_id.clone(), || to_api_error(&error, limit));
                return Err(rendered.into());
            }
        },
    };

    if matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
        && let Some(allow) = response
            .request()
            .app_data::<web::Data<KnownRoutes>>()
            .and_then(|known| known.disallowed(response.request().method(), response.request().match_info().as_str()))
    {
        // The router's 404 for a known path, or a 405 without `Allow` (a resource's own, or a
        // webhook endpoint's GET for a provider without a handshake): one answer for all.
        let mut replacement = REQUEST_ID.sync_scope(request_id.clone(), || ApiError::MethodNotAllowed.error_response());
        for (name, value) in response.headers().iter().filter(|(name, _)| name.as_str().starts_with("x-ratelimit-")) {
            replacement.headers_mut().insert(name.clone(), value.clone());
        }
        if let Ok(value) = HeaderValue::from_str(&allow) {
            replacement.headers_mut().insert(header::ALLOW, value);
        }
        response = response.into_response(replacement);
    }

    let is_error = response.status().is_client_error() || response.status().is_server_error();
    if is_error && !is_problem(response.headers()) {
        // A framework-made error (404 from routing, 405, 400 from a parser): same shape as ours.
        let status = response.status();
        let kept = keep_headers(response.headers());
        let mut replacement = REQUEST_ID.sync_scope(request_id.clone(), || from_status(status, limit).error_response());
        for (name, value) in kept {
            replacement.headers_mut().insert(name, value);
        }
        response = response.into_response(replacement);
    }

    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    headers.remove(header::SERVER);
    headers.remove("x-powered-by");
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        headers.insert(HeaderName::from_static(X_REQUEST_ID), value);
    }
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), "request handled"));
    Ok(response)
}

/// `Ok(None)` when absent; `Err` when present but not a number.
fn declared_length(headers: &HeaderMap) -> Result<Option<usize>, ()> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).map(Some).ok_or(()),
    }
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

/// Headers of a framework error response worth keeping when its body is replaced.
fn keep_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE]
        .into_iter()
        .filter_map(|name| headers.get(&name).map(|value| (name, value.clone())))
        .collect()
}

fn to_api_error(error: &actix_web::Error, limit: usize) -> ApiError {
    let status = error.as_response_error().status_code();
    if status.is_server_error() {
        tracing::error!(error = %error, "error escaped to the edge middleware");
    }
    from_status(status, limit)
}

fn from_status(status: StatusCode, limit: usize) -> ApiError {
    match status {
        StatusCode::BAD_REQUEST => ApiError::BadRequest { detail: "The request could not be read.".into() },
        StatusCode::NOT_FOUND => ApiError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit_bytes: limit },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::INTERNAL_SERVER_ERROR => ApiError::internal(anyhow::anyhow!("framework produced a 500")),
        other => ApiError::Status(other),
    }
}

/// Marks a response of a route that applied the request guard's checks itself: [`guard`] leaves
/// it as it is. The webhook routes do (see `crate::routes::webhooks`): a provider's verified
/// delivery is checked against the block list in the same Redis round trip as its event claims,
/// and is limited by the practice's budget for the provider rather than per address, since all
/// of a provider's deliveries, for every practice of a deployment, come from a few addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedByRoute;

impl GuardedByRoute {
    /// `response`, marked as checked by its route.
    pub fn mark(mut response: actix_web::HttpResponse) -> actix_web::HttpResponse {
        response.extensions_mut().insert(Self);
        response
    }
}

/// Inside the edge: the IP block list (403) and the global per-IP rate limit (429), with the
/// `X-RateLimit-*` headers on every answer. Health probes are exempt: a load balancer polls them.
///
/// Under `/webhooks/` the route runs first and applies the checks itself (its responses carry
/// [`GuardedByRoute`]); an answer without the mark did no work (the router's 404 or 405), and is
/// checked here afterwards, as any other request is before.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<crate::state::AppState>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    // The path as the router matches it (percent-escapes decoded): `/%77ebhooks/...` is routed
    // to the webhooks, so it must be guarded as they are.
    let path = req.match_info().as_str().to_owned();
    if path.starts_with("/health/") {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let ip = crate::auth::client_ip(req.request(), &state);
    if path == "/webhooks" || path.starts_with("/webhooks/") {
        let response = next.call(req).await?.map_into_boxed_body();
        if response.response().extensions().contains::<GuardedByRoute>() {
            return Ok(response);
        }
        let (request, response) = response.into_parts();
        let response = match check_client(&state, ip).await {
            Ok(decision) => with_global_limit(&state, response, &decision),
            Err(refusal) => refusal,
        };
        return Ok(ServiceResponse::new(request, GuardedByRoute::mark(response)));
    }
    match check_client(&state, ip).await {
        Ok(decision) => {
            let response = next.call(req).await?.map_into_boxed_body();
            let (request, response) = response.into_parts();
            Ok(ServiceResponse::new(request, with_global_limit(&state, response, &decision)))
        }
        Err(refusal) => Ok(req.into_response(refusal)),
    }
}

/// The request guard's checks of a client address: its decision on the global limit, or the
/// answer that refuses the request (403 blocked, 429 over the limit, with the limit's headers).
///
/// The block list and the shared limit live in Redis and are asked in one round trip. While the
/// limiter knows Redis is down, neither is asked (each request would otherwise wait out the Redis
/// timeout): serving stays up on the in-process limiter, the block list fails open, and readiness
/// reports the outage.
pub async fn check_client(
    state: &crate::state::AppState,
    ip: std::net::IpAddr,
) -> Result<cache_redis::Decision, actix_web::HttpResponse> {
    let limit = cache_redis::Limit::new(state.config.rate_limits.global_per_minute, std::time::Duration::from_secs(60));
    let check = state.limiter.check_ip(&state.blocklist, ip, "global", limit).await;
    match check.blocked {
        Some(true) => {
            telemetry::metrics::record_ip_blocklist_hit();
            return Err(ApiError::Forbidden.error_response());
        }
        Some(false) => {}
        // Redis answered the limit but refused the block-list lookup.
        None if check.backend == cache_redis::Backend::Redis => tracing::warn!("ip block list unavailable"),
        // Redis is unavailable; the limiter logged the outage once.
        None => {}
    }
    let decision = check.decision;
    if decision.allowed {
        return Ok(decision);
    }
    telemetry::metrics::record_rate_limit_refusal("global");
    let retry_after_secs = decision.retry_after_secs().unwrap_or(1);
    Err(with_global_limit(state, ApiError::TooManyRequests { retry_after_secs }.error_response(), &decision))
}

/// `response` with the global limit's `X-RateLimit-*` headers, unless it carries a route's own
/// (the webhook providers' budgets): the limit that applies to the route is the one reported.
pub fn with_global_limit(
    state: &crate::state::AppState,
    mut response: actix_web::HttpResponse,
    decision: &cache_redis::Decision,
) -> actix_web::HttpResponse {
    let headers = response.headers_mut();
    if headers.contains_key("x-ratelimit-limit") {
        return response;
    }
    let reset_at = state.clock.now().unix_timestamp() + i64::try_from(decision.reset_after_secs()).unwrap_or(0);
    let global = [
        ("x-ratelimit-limit", decision.limit.to_string()),
        ("x-ratelimit-remaining", decision.remaining.to_string()),
        ("x-ratelimit-reset", reset_at.to_string()),
    ];
    for (name, value) in global {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}
