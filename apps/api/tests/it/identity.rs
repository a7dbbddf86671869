//! Identity over HTTP: login, sessions, CSRF, roles, API keys, brute-force limits, and the same
//! isolation seen from the database as the runtime role.

use crate::support::{TestApp, assert_problem};
use api::config::Config;
use kernel::{Role, TenantId, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use store_postgres::{DbContext, begin, identity as accounts};

/// Fast argon2 for tests (production refuses these values; the login code path is the same).
pub fn fast_hashing(config: &mut Config) {
    config.auth.argon2_memory_kib = 1024;
    config.auth.argon2_iterations = 1;
}

pub const PASSWORD: &str = "violet tram elbow quiz 42";

pub struct Practice {
    pub tenant: TenantId,
    pub admin: UserId,
    pub admin_email: String,
}

/// Creates a practice and its admin directly in the database (as `praxis tenants create` does).
pub async fn create_practice(app: &TestApp, name: &str) -> Practice {
    let tenant = TenantId::new();
    let admin = UserId::new();
    let admin_email = format!("admin@{}.test", name.to_lowercase());
    let hasher =
        identity::PasswordHasher::new(identity::Argon2Params { memory_kib: 1024, iterations: 1, parallelism: 1 })
            .unwrap();
    let mut tx = begin(&app.db.app_pool, &DbContext::user(tenant, admin, Role::Admin)).await.unwrap();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(tenant.as_uuid())
        .bind(name)
        .execute(&mut *tx)
        .await
        .unwrap();
    accounts::insert_user(
        &mut tx,
        &accounts::NewUser {
            id: admin,
            tenant,
            email: admin_email.clone(),
            role: Role::Admin,
            patient: None,
            password_hash: hasher.hash(PASSWORD).unwrap(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Practice { tenant, admin, admin_email }
}

pub async fn login_response(app: &TestApp, tenant: TenantId, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({ "practice_id": tenant, "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// Logs in and returns the login body (token, csrf_token, ...).
pub async fn login(app: &TestApp, tenant: TenantId, email: &str) -> Value {
    let response = login_response(app, tenant, email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text().await);
    response.json().await.unwrap()
}

pub fn bearer(session: &Value) -> String {
    format!("Bearer {}", session["token"].as_str().unwrap())
}

async fn start() -> TestApp {
    TestApp::start_with(fast_hashing, api::server::no_extra_routes).await
}

pub async fn create_user(app: &TestApp, admin: &Value, email: &str, role: &str) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .header("authorization", bearer(admin))
        .json(&json!({ "email": email, "role": role, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
    response.json().await.unwrap()
}

#[actix_web::test]
async fn login_sets_a_host_only_strict_cookie_and_returns_a_bearer_token() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let response = login_response(&app, practice.tenant, &practice.admin_email, PASSWORD).await;
    assert_eq!(response.status(), 200);
    let cookies: Vec<String> =
        response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let session_cookie = cookies.iter().find(|c| c.starts_with("__Host-praxis_session=")).expect("session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(session_cookie.contains(attribute), "{attribute} missing: {session_cookie}");
    }
    assert!(!session_cookie.contains("Domain"), "{session_cookie}");
    let csrf_cookie = cookies.iter().find(|c| c.starts_with("__Host-praxis_csrf=")).expect("csrf cookie");
    assert!(!csrf_cookie.contains("HttpOnly"), "the page must read the CSRF token: {csrf_cookie}");
    let body: Value = response.json().await.unwrap();
    assert!(body["token"].as_str().unwrap().starts_with("prx_s_"));

    let me: Value = app
        .client
        .get(app.url("/api/v1/me"))
        .header("authorization", bearer(&body))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], practice.admin_email);
    assert_eq!(me["role"], "admin");

    // The token is stored hashed: the database never holds it.
    let stored: Vec<Vec<u8>> = {
        let mut tx =
            begin(&app.db.app_pool, &DbContext::user(practice.tenant, practice.admin, Role::Admin)).await.unwrap();
        let rows = sqlx::query_scalar("SELECT token_hash FROM sessions").fetch_all(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        rows
    };
    assert_eq!(stored.len(), 1);
    assert!(!String::from_utf8_lossy(&stored[0]).contains(body["token"].as_str().unwrap()));
    app.stop().await;
}

#[actix_web::test]
async fn unknown_email_and_wrong_password_get_the_same_answer() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let wrong_password = login_response(&app, practice.tenant, &practice.admin_email, "not the password at all").await;
    let unknown_email = login_response(&app, practice.tenant, "nobody@alpha.test", PASSWORD).await;
    let unknown_practice = login_response(&app, TenantId::new(), &practice.admin_email, PASSWORD).await;
    let mut bodies = Vec::new();
    for response in [wrong_password, unknown_email, unknown_practice] {
        let mut body = assert_problem(response, 401, "urn:praxis:problem:unauthorized").await;
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2]);
    app.stop().await;
}

#[actix_web::test]
async fn bad_login_input_is_a_clear_validation_error() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let response = login_response(&app, practice.tenant, "not-an-email", PASSWORD).await;
    let body = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
    assert_eq!(body["errors"][0]["field"], "email");

    let response = login_response(&app, practice.tenant, &practice.admin_email, &"x".repeat(2000)).await;
    let body = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
    assert_eq!(body["errors"][0]["field"], "password");

    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({ "practice_id": practice.tenant, "email": "a@b.c", "password": "x", "admin": true }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
    assert_eq!(problem["errors"][0]["field"], "admin");
    app.stop().await;
}

#[actix_web::test]
async fn logout_ends_the_session() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let session = login(&app, practice.tenant, &practice.admin_email).await;
    let response =
        app.client.post(app.url("/api/v1/auth/logout")).header("authorization", bearer(&session)).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let response =
        app.client.get(app.url("/api/v1/me")).header("authorization", bearer(&session)).send().await.unwrap();
    assert_problem(response, 401, "urn:praxis:problem:unauthorized").await;
    app.stop().await;
}

#[actix_web::test]
async fn brute_force_is_throttled_and_flagged_once() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    for attempt in 1..=5 {
        let response = login_response(&app, practice.tenant, &practice.admin_email, "wrong password here").await;
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    // The sixth is refused before the password is even checked, with the right password too.
    let response = login_response(&app, practice.tenant, &practice.admin_email, PASSWORD).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");
    for _ in 7..=12 {
        let response = login_response(&app, practice.tenant, &practice.admin_email, "wrong password here").await;
        assert_eq!(response.status(), 429);
    }
    // Twelve failed attempts in a row: exactly one suspicious-activity entry.
    let mut tx = begin(&app.db.app_pool, &DbContext::tenant(practice.tenant)).await.unwrap();
    let (suspicious, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE action = 'security.suspicious_activity'), \
                count(*) FILTER (WHERE action = 'auth.login_failed') FROM audit_entries",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(suspicious, 1);
    assert_eq!(failed, 12);
    app.stop().await;
}

#[actix_web::test]
async fn login_fails_closed_when_redis_is_unreachable() {
    let app = TestApp::start_with(
        |config| {
            fast_hashing(config);
            config.redis.url = Some(kernel::Secret::new("redis://127.0.0.1:1".into()));
            config.redis.timeout_ms = 300;
        },
        api::server::no_extra_routes,
    )
    .await;
    let practice = create_practice(&app, "Alpha").await;
    let response = login_response(&app, practice.tenant, &practice.admin_email, PASSWORD).await;
    assert_problem(response, 503, "urn:praxis:problem:service-unavailable").await;
    // Other routes keep working on the in-process limiter; readiness says it is degraded.
    let ready: Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"]["status"], "down");
    app.stop().await;
}

fn cookie_header(session: &Value, csrf: Option<&str>) -> String {
    let mut cookie = format!("__Host-praxis_session={}", session["token"].as_str().unwrap());
    if let Some(csrf) = csrf {
        cookie.push_str(&format!("; __Host-praxis_csrf={csrf}"));
    }
    cookie
}

#[actix_web::test]
async fn cookie_requests_need_the_csrf_token_and_an_allowed_origin() {
    let app = TestApp::start_with(
        |config| {
            fast_hashing(config);
            config.cors.allowed_origins = vec!["https://app.praxis.test".into()];
        },
        api::server::no_extra_routes,
    )
    .await;
    let practice = create_practice(&app, "Alpha").await;
    let session = login(&app, practice.tenant, &practice.admin_email).await;
    let csrf = session["csrf_token"].as_str().unwrap();
    let post = |cookie: String, header: Option<&str>, origin: Option<&str>| {
        let mut request = app.client.post(app.url("/api/v1/auth/logout")).header("cookie", cookie);
        if let Some(header) = header {
            request = request.header("x-csrf-token", header);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    // Safe methods need no token.
    let response =
        app.client.get(app.url("/api/v1/me")).header("cookie", cookie_header(&session, None)).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let no_token = post(cookie_header(&session, Some(csrf)), None, Some("https://app.praxis.test")).await.unwrap();
    assert_problem(no_token, 403, "urn:praxis:problem:forbidden").await;
    let wrong_token = post(
        cookie_header(&session, Some(csrf)),
        Some("forged-token-forged-token-forged-token-1234"),
        Some("https://app.praxis.test"),
    )
    .await
    .unwrap();
    assert_problem(wrong_token, 403, "urn:praxis:problem:forbidden").await;
    let foreign_origin =
        post(cookie_header(&session, Some(csrf)), Some(csrf), Some("https://evil.example")).await.unwrap();
    assert_problem(foreign_origin, 403, "urn:praxis:problem:forbidden").await;
    let no_origin = post(cookie_header(&session, Some(csrf)), Some(csrf), None).await.unwrap();
    assert_problem(no_origin, 403, "urn:praxis:problem:forbidden").await;

    let both = post(cookie_header(&session, Some(csrf)), Some(csrf), Some("https://app.praxis.test")).await.unwrap();
    assert_eq!(both.status(), 204);

    // Bearer requests are exempt: a browser never attaches them by itself.
    let other = login(&app, practice.tenant, &practice.admin_email).await;
    let response =
        app.client.post(app.url("/api/v1/auth/logout")).header("authorization", bearer(&other)).send().await.unwrap();
    assert_eq!(response.status(), 204);
    app.stop().await;
}

#[actix_web::test]
async fn roles_get_what_the_matrix_allows_and_nothing_more() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    create_user(&app, &admin, "therapist@alpha.test", "therapist").await;
    create_user(&app, &admin, "desk@alpha.test", "receptionist").await;
    let therapist = login(&app, practice.tenant, "therapist@alpha.test").await;
    let desk = login(&app, practice.tenant, "desk@alpha.test").await;

    let get =
        |path: &'static str, who: &Value| app.client.get(app.url(path)).header("authorization", bearer(who)).send();
    for (path, admin_status, staff_status) in [
        ("/api/v1/users", 200, 200),
        ("/api/v1/api-keys", 200, 403),
        ("/api/v1/audit", 200, 403),
        ("/api/v1/audit/verify", 200, 403),
    ] {
        assert_eq!(get(path, &admin).await.unwrap().status(), admin_status, "admin {path}");
        assert_eq!(get(path, &therapist).await.unwrap().status(), staff_status, "therapist {path}");
        assert_eq!(get(path, &desk).await.unwrap().status(), staff_status, "receptionist {path}");
    }
    // Only an admin creates accounts.
    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .header("authorization", bearer(&therapist))
        .json(&json!({ "email": "x@alpha.test", "role": "admin", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "urn:praxis:problem:forbidden").await;
    // The refusal is in the audit trail.
    let audit: Value = get("/api/v1/audit?action=access.denied", &admin).await.unwrap().json().await.unwrap();
    assert!(!audit["entries"].as_array().unwrap().is_empty(), "{audit}");
    app.stop().await;
}

#[actix_web::test]
async fn practice_a_admin_sees_nothing_of_practice_b() {
    let app = start().await;
    let alpha = create_practice(&app, "Alpha").await;
    let beta = create_practice(&app, "Beta").await;
    let alpha_admin = login(&app, alpha.tenant, &alpha.admin_email).await;
    let users: Value = app
        .client
        .get(app.url("/api/v1/users"))
        .header("authorization", bearer(&alpha_admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let emails: Vec<&str> = users["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, vec![alpha.admin_email.as_str()]);
    // Disabling B's admin from A: 404, as if it did not exist.
    let response = app
        .client
        .post(app.url(&format!("/api/v1/users/{}/disable", beta.admin)))
        .header("authorization", bearer(&alpha_admin))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "urn:praxis:problem:not-found").await;
    // A's session token does not open B: the tenant is part of the token.
    let audit: Value = app
        .client
        .get(app.url("/api/v1/audit"))
        .header("authorization", bearer(&alpha_admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for entry in audit["entries"].as_array().unwrap() {
        assert_ne!(entry["actor"]["tenant"], json!(beta.tenant), "{entry}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn disabling_a_user_or_changing_a_password_ends_every_session() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let created = create_user(&app, &admin, "therapist@alpha.test", "therapist").await;
    let first = login(&app, practice.tenant, "therapist@alpha.test").await;
    let second = login(&app, practice.tenant, "therapist@alpha.test").await;

    // Password change: both sessions end, the new password works.
    let response = app
        .client
        .post(app.url("/api/v1/me/password"))
        .header("authorization", bearer(&first))
        .json(&json!({ "current_password": PASSWORD, "new_password": "new marble harbour seven" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    for session in [&first, &second] {
        let response =
            app.client.get(app.url("/api/v1/me")).header("authorization", bearer(session)).send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let response = login_response(&app, practice.tenant, "therapist@alpha.test", "new marble harbour seven").await;
    assert_eq!(response.status(), 200);
    let third: Value = response.json().await.unwrap();

    // Disabling: the session ends and login is refused.
    let response = app
        .client
        .post(app.url(&format!("/api/v1/users/{}/disable", created["id"].as_str().unwrap())))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app.client.get(app.url("/api/v1/me")).header("authorization", bearer(&third)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = login_response(&app, practice.tenant, "therapist@alpha.test", "new marble harbour seven").await;
    assert_eq!(response.status(), 401);
    app.stop().await;
}

#[actix_web::test]
async fn weak_passwords_are_refused_with_the_reason() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    for weak in ["short", "Password123!", "qwertyuiop12"] {
        let response = app
            .client
            .post(app.url("/api/v1/users"))
            .header("authorization", bearer(&admin))
            .json(&json!({ "email": "t@alpha.test", "role": "therapist", "password": weak }))
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
        assert_eq!(body["errors"][0]["field"], "password", "{weak}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn api_keys_are_shown_once_scoped_attributable_and_revocable() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let create = |scopes: Value| {
        app.client
            .post(app.url("/api/v1/api-keys"))
            .header("authorization", bearer(&admin))
            .json(&json!({ "name": "billing sync", "scopes": scopes, "expires_in_days": 30 }))
            .send()
    };
    let response = create(json!(["audit:read"])).await.unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("prx_k_"));

    // The listing never shows the key again.
    let listing = app
        .client
        .get(app.url("/api/v1/api-keys"))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listing.contains(&key) && listing.contains(created["key_id"].as_str().unwrap()));

    // Scoped: audit:read reads the audit trail, but cannot manage users.
    let response = app.client.get(app.url("/api/v1/audit")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = app.client.get(app.url("/api/v1/users")).header("x-api-key", &key).send().await.unwrap();
    assert_problem(response, 403, "urn:praxis:problem:forbidden").await;

    // Attributable: the denied call above is recorded under the key's id.
    let audit: Value = app
        .client
        .get(app.url("/api/v1/audit?action=access.denied"))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["actor"]["kind"], "api_key");
    assert_eq!(audit["entries"][0]["actor"]["key_id"], created["key_id"]);

    // A forged key with the right shape, and then the revoked key, are refused.
    let mut forged = key.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let response = app.client.get(app.url("/api/v1/audit")).header("x-api-key", &forged).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/api-keys/{}", created["id"].as_str().unwrap())))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app.client.get(app.url("/api/v1/audit")).header("x-api-key", &key).send().await.unwrap();
    assert_problem(response, 401, "urn:praxis:problem:unauthorized").await;

    let response = create(json!(["root:all"])).await.unwrap();
    let body = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
    assert_eq!(body["errors"][0]["field"], "scopes");
    app.stop().await;
}

#[actix_web::test]
async fn audit_trail_records_the_session_and_verifies() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    create_user(&app, &admin, "therapist@alpha.test", "therapist").await;
    let audit: Value = app
        .client
        .get(app.url("/api/v1/audit?limit=1"))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1);
    assert_eq!(audit["entries"][0]["action"], "user.create");
    crate::contract::assert_conforms(&audit, "AuditEntries");
    // The cursor is an opaque string (the digits of an entry id, so a client that sent the
    // number before cursors were strings sends the same text).
    let cursor = audit["next_cursor"].as_str().unwrap();
    let next: Value = app
        .client
        .get(app.url(&format!("/api/v1/audit?limit=1&cursor={cursor}")))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(next["entries"][0]["action"], "auth.login", "{next}");
    let response = app
        .client
        .get(app.url("/api/v1/audit?cursor=abc"))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
    assert_eq!(problem["errors"][0]["field"], "cursor");
    let verify: Value = app
        .client
        .get(app.url("/api/v1/audit/verify"))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(verify["entries_checked"], 2);
    let response = app
        .client
        .get(app.url("/api/v1/audit?limit=500"))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
    let response = app
        .client
        .get(app.url("/api/v1/audit?actionn=x"))
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
    assert_eq!(problem["errors"], json!([{ "field": "actionn", "message": "is not a parameter of this operation" }]));
    app.stop().await;
}

#[actix_web::test]
async fn rate_limit_headers_and_one_limit_across_two_instances() {
    let first = TestApp::start_with(|c| c.rate_limits.global_per_minute = 4, api::server::no_extra_routes).await;
    // A second instance on the same database and the same Redis namespace.
    let second = first.sibling(|c| c.rate_limits.global_per_minute = 4).await;
    let response = first.get("/api/v1/me").await;
    assert_eq!(response.headers()["x-ratelimit-limit"], "4");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "3");
    assert!(response.headers()["x-ratelimit-reset"].to_str().unwrap().parse::<i64>().unwrap() > 1_700_000_000);
    assert_eq!(second.get("/api/v1/me").await.headers()["x-ratelimit-remaining"], "2");
    assert_eq!(first.get("/api/v1/me").await.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(second.get("/api/v1/me").await.headers()["x-ratelimit-remaining"], "0");
    let limited = first.get("/api/v1/me").await;
    assert!(limited.headers().get("retry-after").is_some());
    assert_problem(limited, 429, "urn:praxis:problem:rate-limited").await;
    // Health probes are not limited.
    assert_eq!(second.get("/health/live").await.status(), 200);
    second.stop().await;
    first.stop().await;
}

/// The isolation the policies give, seen directly as the runtime role with one user's settings.
#[actix_web::test]
async fn runtime_role_with_one_users_settings_sees_only_that_users_rows() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let therapist = create_user(&app, &admin, "therapist@alpha.test", "therapist").await;
    login(&app, practice.tenant, "therapist@alpha.test").await;
    let therapist_id = UserId::from_uuid(therapist["id"].as_str().unwrap().parse().unwrap());
    let as_therapist = DbContext::user(practice.tenant, therapist_id, Role::Therapist);

    let mut tx = begin(&app.db.app_pool, &as_therapist).await.unwrap();
    let sessions: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT user_id FROM sessions").fetch_all(&mut *tx).await.unwrap();
    let api_keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys").fetch_one(&mut *tx).await.unwrap();
    let users: Vec<String> = sqlx::query_scalar("SELECT role FROM users").fetch_all(&mut *tx).await.unwrap();
    let role_change = sqlx::query("UPDATE users SET role = 'admin' WHERE id = $1")
        .bind(therapist_id.as_uuid())
        .execute(&mut *tx)
        .await;
    tx.rollback().await.unwrap();
    assert_eq!(sessions, vec![*therapist_id.as_uuid()], "a therapist sees only their own sessions");
    assert_eq!(api_keys, 0, "only admins see API keys");
    assert!(users.iter().all(|r| r != "patient"), "staff never see patient accounts: {users:?}");
    assert!(role_change.is_err(), "a user cannot promote themselves");

    // A token lookup context sees exactly one session: the one it names.
    let token = identity::SessionToken::parse(admin["token"].as_str().unwrap()).unwrap();
    let mut tx =
        begin(&app.db.app_pool, &DbContext::token_lookup(practice.tenant, *token.hash().as_bytes())).await.unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(&mut *tx).await.unwrap();
    let users_visible: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!((visible, users_visible), (1, 0));
    app.stop().await;
}

/// One credential per request: a valid Bearer token with a session cookie (even a junk one), or
/// with an API key, is refused as a whole, whichever of them is valid.
#[actix_web::test]
async fn a_request_with_more_than_one_credential_kind_is_refused() {
    let app = start().await;
    let practice = create_practice(&app, "Alpha").await;
    let session = login(&app, practice.tenant, &practice.admin_email).await;
    let me = || app.client.get(app.url("/api/v1/me"));
    assert_eq!(me().header("authorization", bearer(&session)).send().await.unwrap().status(), 200);
    let response = me()
        .header("authorization", bearer(&session))
        .header("cookie", format!("{}=junk", api::auth::SESSION_COOKIE))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "urn:praxis:problem:unauthorized").await;
    let response =
        me().header("authorization", bearer(&session)).header("x-api-key", "prx_k_junk").send().await.unwrap();
    assert_problem(response, 401, "urn:praxis:problem:unauthorized").await;
    let response = me()
        .header("cookie", format!("{}={}", api::auth::SESSION_COOKIE, session["token"].as_str().unwrap()))
        .header("x-api-key", "prx_k_junk")
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "urn:praxis:problem:unauthorized").await;
    app.stop().await;
}
