//! Liveness and readiness.

use crate::error::Problem;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// How long readiness waits for one dependency before calling it down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live)).route("/health/ready", web::get().to(ready));
}

/// Liveness probe
///
/// The process is up and serving HTTP. Checks nothing else, so an outage of Postgres does not
/// make an orchestrator restart every instance.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses(
        (status = 200, description = "The process serves HTTP", body = crate::openapi::Liveness),
        (status = "4XX", description = "A malformed request (e.g. a body over the limit)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// Readiness probe
///
/// 200 only when every dependency answers; 503 naming each one that does not. `kms` is the
/// keyring: the primary and every `kms.previous` backend must answer (an older backend that
/// cannot unwrap makes the rows it wrapped unreadable).
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Every dependency answers", body = crate::openapi::Readiness),
        (status = "4XX", description = "A malformed request (e.g. a body over the limit)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`urn:praxis:problem:not-ready`; the extra members `checks` (as in the 200 answer) and `failing` (names) say which dependencies are down", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    use crypto::KeyManagement;
    let (postgres, redis, kms) = tokio::join!(
        check(async { store_postgres::ping(&state.db).await.map_err(|e| e.to_string()) }),
        check(async { state.redis.ping().await.map_err(|e| e.to_string()) }),
        check(async { state.kms.health_check().await.map_err(|e| e.to_string()) }),
    );
    let mut checks = Map::new();
    let mut failing = Vec::new();
    for (name, outcome) in [("postgres", postgres), ("redis", redis), ("kms", kms)] {
        match outcome {
            Ok(()) => {
                checks.insert(name.into(), json!({ "status": "up" }));
            }
            Err(error) => {
                tracing::warn!(dependency = name, error = %error, "readiness check failed");
                checks.insert(name.into(), json!({ "status": "down" }));
                failing.push(name);
            }
        }
    }
    // The limiter keeps serving from its in-process fallback while Redis is away; say so.
    checks.insert(
        "rate_limiter".into(),
        json!({ "status": if state.limiter.redis_healthy() { "redis" } else { "degraded (in-process fallback)" } }),
    );
    if failing.is_empty() {
        return HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks }));
    }
    let mut extensions = Map::new();
    extensions.insert("checks".into(), Value::Object(checks));
    extensions.insert("failing".into(), json!(failing));
    Problem {
        problem_type: format!("{}not-ready", crate::error::PROBLEM_TYPE_BASE),
        title: "Not ready".into(),
        status: 503,
        detail: Some(format!("Unavailable: {}.", failing.join(", "))),
        request_id: crate::error::current_request_id().map(|id| id.to_string()),
        errors: None,
        extensions: Some(extensions),
    }
    .into_response()
}

async fn check(probe: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}
