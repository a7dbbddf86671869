//! Readiness answers 200 only when Postgres and Redis answer, and names what is down.

use crate::support::{TestApp, assert_problem};
use kernel::Secret;

#[actix_web::test]
async fn ready_when_postgres_and_redis_answer() {
    let app = TestApp::start().await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "up");
    app.stop().await;
}

#[actix_web::test]
async fn not_ready_when_redis_is_unreachable() {
    // Port 1 on loopback: nothing listens there.
    let app = TestApp::start_with(
        |c| c.redis.url = Some(Secret::new("redis://127.0.0.1:1".into())),
        api::server::no_extra_routes,
    )
    .await;
    let response = app.get("/health/ready").await;
    let body = assert_problem(response, 503, "urn:praxis:problem:not-ready").await;
    assert_eq!(body["failing"], serde_json::json!(["redis"]));
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    // Liveness is unaffected: the process is fine.
    assert_eq!(app.get("/health/live").await.status(), 200);
    app.stop().await;
}

#[actix_web::test]
async fn not_ready_when_postgres_is_unreachable() {
    let app = TestApp::start_with(
        |c| {
            c.database.url = Some(Secret::new("postgres://praxis_test_app@127.0.0.1:1/nowhere".into()));
            c.database.acquire_timeout_ms = 500;
        },
        api::server::no_extra_routes,
    )
    .await;
    let response = app.get("/health/ready").await;
    let body = assert_problem(response, 503, "urn:praxis:problem:not-ready").await;
    assert_eq!(body["failing"], serde_json::json!(["postgres"]));
    assert_eq!(body["checks"]["redis"]["status"], "up");
    // The body says what is down, not why: no connection strings or driver errors.
    assert!(!body.to_string().contains("127.0.0.1:1"), "{body}");
    app.stop().await;
}
