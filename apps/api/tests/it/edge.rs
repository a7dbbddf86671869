//! The edge: security headers, request ids, problem+json and body limits on every kind of response.

use crate::support::{TestApp, assert_problem};
use actix_web::{HttpResponse, web};
use api::ApiError;

const EXPECTED_HEADERS: &[(&str, &str)] = &[
    ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

fn assert_security_headers(response: &reqwest::Response) {
    for (name, value) in EXPECTED_HEADERS {
        let actual = response.headers().get(*name).map(|v| v.to_str().unwrap());
        assert_eq!(actual, Some(*value), "header {name} on a {} response", response.status());
    }
    assert!(response.headers().get("server").is_none(), "Server header present");
    assert!(response.headers().get("x-powered-by").is_none(), "X-Powered-By header present");
    assert!(response.headers().get("x-request-id").is_some(), "X-Request-Id missing");
}

/// Routes that reach failure paths no real endpoint should reach on purpose.
fn failure_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/test/internal-error",
        web::get().to(|| async {
            Err::<HttpResponse, _>(ApiError::internal(anyhow::anyhow!("secret detail: connection to 10.1.2.3 refused")))
        }),
    )
    .route(
        "/test/echo",
        web::post().to(|body: web::Bytes| async move { HttpResponse::Ok().body(body.len().to_string()) }),
    );
}

#[actix_web::test]
async fn ok_responses_carry_the_security_headers() {
    let app = TestApp::start().await;
    let response = app.get("/health/live").await;
    assert_eq!(response.status(), 200);
    assert_security_headers(&response);
    app.stop().await;
}

#[actix_web::test]
async fn not_found_is_problem_json_with_headers() {
    let app = TestApp::start().await;
    let response = app.get("/no/such/route").await;
    assert_security_headers(&response);
    assert_problem(response, 404, "urn:praxis:problem:not-found").await;
    app.stop().await;
}

/// A known path asked with a method it does not answer: 405 naming the methods it does (RFC 9110
/// 15.5.6), as problem+json; the router alone would say 404.
#[actix_web::test]
async fn another_method_on_a_known_path_is_405_with_allow() {
    let app = TestApp::start().await;
    let patient = format!("/api/v1/patients/{}", uuid::Uuid::new_v4());
    for (method, path, allow) in [
        ("DELETE", "/health/live", "GET"),
        ("TRACE", "/api/v1/patients", "GET, POST"),
        ("PUT", patient.as_str(), "GET, DELETE, PATCH"),
        ("OPTIONS", "/openapi.json", "GET"),
        // A resource of its own (`web::resource` with two routes) answers 405 without `Allow`.
        ("TRACE", "/webhooks/stripe", "GET, POST"),
        ("DELETE", "/webhooks/whatsapp/00000000-0000-4000-8000-000000000000", "GET, POST"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app.client.request(method.clone(), app.url(path)).send().await.unwrap();
        assert_security_headers(&response);
        assert_eq!(response.headers().get("allow").map(|v| v.to_str().unwrap()), Some(allow), "{method} {path}");
        assert_problem(response, 405, "urn:praxis:problem:method-not-allowed").await;
    }
    // An allowed method keeps its own answer, and an unknown path is still not found.
    assert_eq!(app.get(&patient).await.status(), 401);
    let response = app.client.request(reqwest::Method::TRACE, app.url("/no/such/route")).send().await.unwrap();
    assert_problem(response, 404, "urn:praxis:problem:not-found").await;
    app.stop().await;
}

#[actix_web::test]
async fn oversized_body_is_refused_by_its_declared_length() {
    let app = TestApp::start_with(|c| c.server.body_limit_bytes = 1024, failure_routes).await;
    let response = app.client.post(app.url("/test/echo")).body(vec![b'x'; 4096]).send().await.unwrap();
    assert_security_headers(&response);
    let body = assert_problem(response, 413, "urn:praxis:problem:payload-too-large").await;
    assert!(body["detail"].as_str().unwrap().contains("1024"));

    // Also on routes that do not exist: the limit applies before routing.
    let response = app.client.post(app.url("/health/live")).body(vec![b'x'; 4096]).send().await.unwrap();
    assert_problem(response, 413, "urn:praxis:problem:payload-too-large").await;

    // Within the limit it passes.
    let response = app.client.post(app.url("/test/echo")).body(vec![b'x'; 512]).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[actix_web::test]
async fn oversized_chunked_body_is_cut_off_at_the_limit() {
    let app = TestApp::start_with(|c| c.server.body_limit_bytes = 1024, failure_routes).await;
    // A streamed body has no Content-Length: the extractor stops reading at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|_| Ok(vec![b'y'; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = app.client.post(app.url("/test/echo")).body(body).send().await.unwrap();
    assert_security_headers(&response);
    assert_problem(response, 413, "urn:praxis:problem:payload-too-large").await;
    app.stop().await;
}

#[actix_web::test]
async fn internal_errors_reveal_nothing() {
    let app = TestApp::start_with(|_| {}, failure_routes).await;
    let response = app.get("/test/internal-error").await;
    assert_security_headers(&response);
    let body = assert_problem(response, 500, "urn:praxis:problem:internal").await;
    let text = body.to_string();
    assert!(!text.contains("10.1.2.3") && !text.contains("secret detail"), "{text}");
    assert!(body.get("detail").is_none(), "{text}");
    app.stop().await;
}

#[actix_web::test]
async fn well_formed_request_ids_are_echoed_and_others_replaced() {
    let app = TestApp::start().await;
    let response =
        app.client.get(app.url("/health/live")).header("x-request-id", "trace-abc_123.4").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc_123.4");

    let hostile = "a\"b<script>";
    let response = app.client.get(app.url("/health/live")).header("x-request-id", hostile).send().await.unwrap();
    let echoed = response.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(echoed, hostile);
    assert!(uuid::Uuid::parse_str(echoed).is_ok(), "generated id {echoed} is not a uuid");

    let response = app.get("/health/live").await;
    assert!(uuid::Uuid::parse_str(response.headers()["x-request-id"].to_str().unwrap()).is_ok());

    // The problem body names the same id as the header.
    let response = app.client.get(app.url("/missing")).header("x-request-id", "corr-42").send().await.unwrap();
    let body = assert_problem(response, 404, "urn:praxis:problem:not-found").await;
    assert_eq!(body["request_id"], "corr-42");
    app.stop().await;
}

#[actix_web::test]
async fn malformed_content_length_is_a_bad_request() {
    let app = TestApp::start().await;
    // reqwest will not send a bogus Content-Length, so speak HTTP/1.1 by hand.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    app.stop().await;
}

/// Sends `request` on a fresh connection and returns the status line of the answer (empty when
/// the server closed without answering).
async fn raw_status_line(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may close as soon as it has read enough to refuse: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).lines().next().unwrap_or_default().to_owned()
}

/// Requests the HTTP framework refuses before any Praxis code runs (control bytes in a header,
/// 1,000 headers, a 100 KB URL, both Content-Length and Transfer-Encoding) are answered 400/431,
/// and the real `praxis serve` logs no ERROR for them: one WARN line at most per interval, with the
/// count, so no client can flood the error log.
#[actix_web::test]
async fn malformed_requests_are_refused_and_logged_at_most_once_per_interval() {
    let app = TestApp::start().await;
    let log_path = std::env::temp_dir().join(format!("praxis-edge-{}.log", uuid::Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).unwrap();
    let (mut child, base) = crate::support::serve_binary(&app, |command| {
        command.env("PRAXIS__TELEMETRY__LOG_LEVEL", "info").stdout(log.try_clone().unwrap()).stderr(log);
    })
    .await;
    let addr = base.trim_start_matches("http://").to_owned();

    let many_headers: String = (0..1000).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let long_url = "a".repeat(100 * 1024);
    // The framework answers a head it cannot parse 400, and one over its limits 400 or 431
    // (which depends on where the parser stops).
    let malformed: Vec<(Vec<u8>, &[&str])> = vec![
        (b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n".to_vec(), &["400"]),
        (format!("GET /health/live HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(), &["400", "431"]),
        (format!("GET /{long_url} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(), &["400", "431"]),
        (
            b"POST /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            &["400"],
        ),
    ];
    // Several rounds: a flood, as far as the log is concerned.
    for _ in 0..5 {
        for (request, statuses) in &malformed {
            let line = raw_status_line(&addr, request).await;
            let answered = line.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).unwrap_or_default();
            assert!(statuses.contains(&answered), "expected one of {statuses:?}, got {line:?}");
        }
    }
    // The server is still serving.
    assert_eq!(app.client.get(format!("http://{addr}/health/live")).send().await.unwrap().status(), 200);
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let output = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).ok();
    let lines: Vec<serde_json::Value> = output.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "malformed requests logged at ERROR: {errors:?}");
    let summaries: Vec<_> = lines.iter().filter(|l| l["target"] == "praxis::http::connection_errors").collect();
    // 20 refusals within one interval: the first one is reported at once, the rest are held.
    assert_eq!(summaries.len(), 1, "{output}");
    assert_eq!(summaries[0]["level"], "WARN");
    assert_eq!(summaries[0]["connection_errors"], 1);
    app.stop().await;
}
